"""How each corpus turns text into token lines, by name, so a saved run can tokenise new text.

A run records its corpus's tokenizer (``vocab.json``); :func:`tokenize_text` then reads any text
the way the training data was read, which ``load_run(...).score_text`` needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "SPACE_SYMBOL",
    "TOKENIZERS",
    "char_tokens",
    "ptb_char_tokens",
    "split_lines",
    "tokenize_text",
    "word_tokens",
]

SPACE_SYMBOL = "_"  # word boundary at character level, as in Mikolov's ptb.char files
# Words (letters, digits, underscores: identifiers such as __init__ stay whole), or any single
# other non-space character (punctuation becomes its own token): the embedded corpus's words.
PYDOC_TOKEN = re.compile(r"\w+|[^\w\s]")


def split_lines(text: str) -> list[str]:
    """Split on ``\\n`` only; drop the whitespace-only tail after the final newline.

    Only ``\\n`` counts: ``str.splitlines`` also breaks on NEL/U+2028 and would inflate line
    counts. The tail rule makes ``"a\\n"`` and the ptb.char files' ``"...\\n "`` end cleanly.
    """
    lines = text.split("\n")
    if lines and not lines[-1].strip():
        lines.pop()
    return lines


def word_tokens(line: str) -> list[str]:
    """Whitespace tokens of a line (PTB is already tokenised)."""
    return line.split()


def char_tokens(line: str, space_symbol: str = SPACE_SYMBOL) -> list[str]:
    """Characters of a line, with each whitespace run shown as one ``space_symbol``.

    With the default ``_`` a literal underscore in the text shares the boundary symbol, as in
    Mikolov's ptb.char files; pass another symbol (e.g. ``"▁"``) where underscores matter.
    """
    return list(space_symbol.join(line.split()))


def ptb_char_tokens(line: str) -> list[str]:
    """A line as Mikolov's ptb.char symbols, whichever form it comes in.

    A line already spelled out (every whitespace token one character, and ``_`` among them
    or only one token) is read as it is, so the ptb.char files read back unchanged; any other
    line (PTB's word form, or other tokenised text) is spelled out with ``_`` between words,
    which is how the ptb.char files were made from the word-level ones.
    """
    tokens = line.split()
    if all(len(t) == 1 for t in tokens) and (len(tokens) <= 1 or SPACE_SYMBOL in tokens):
        return tokens
    return char_tokens(line)


def _pydoc_words(line: str) -> list[str]:
    return PYDOC_TOKEN.findall(line.lower())


def _pydoc_characters(line: str) -> list[str]:
    return char_tokens(" ".join(line.lower().split()))


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "whitespace": word_tokens,  # PTB word level, plain text at word level
    "ptb-characters": ptb_char_tokens,  # PTB character level: symbol lines or plain text
    "characters": char_tokens,  # plain text at character level
    "pydoc-words": _pydoc_words,  # the embedded corpus, word level
    "pydoc-characters": _pydoc_characters,  # the embedded corpus, character level
}


def tokenize_text(text: str, tokenizer: str) -> list[list[str]]:
    """Token lines of ``text``, one per non-blank ``\\n`` line, as the named tokenizer reads it."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; known: {', '.join(TOKENIZERS)}")
    split = TOKENIZERS[tokenizer]
    return [split(line) for line in split_lines(text) if line.strip()]
