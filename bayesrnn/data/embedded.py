"""A default corpus of real English that ships with Python, so a first run needs no download.

The source is the standard library's ``pydoc_data.topics.topics``: the help texts behind
``help("assert")`` and friends, ~79 topics of language-reference prose with code examples.
"""

from __future__ import annotations

import hashlib
import re

from bayesrnn.data.corpora import LanguageCorpus, Level, _check_level
from bayesrnn.data.tokenizers import PYDOC_TOKEN, SPACE_SYMBOL, char_tokens

__all__ = ["embedded_split_text", "embedded_topic_paragraphs", "load_embedded_corpus"]

# reST heading underlines ("*****", "=====") and table borders ("+----+----+") are layout.
_RULE_CHARS = frozenset("*=-~^+|# ")
_BLANK_LINES = re.compile(r"\n\s*\n")
_HELD_OUT_FRACTION = 0.05


def _topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError as err:  # some distributions strip pydoc_data out of the stdlib
        raise RuntimeError(
            "the embedded corpus needs the standard library's pydoc_data module, which this "
            "Python lacks; use load_text() or load_ptb() instead"
        ) from err
    return dict(topics)


def _is_rule(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 3 and set(stripped) <= _RULE_CHARS


def embedded_topic_paragraphs() -> dict[str, list[str]]:
    """Normalised paragraphs per topic: lower-cased, rule rows dropped, whitespace collapsed.

    One paragraph (a block between blank lines; code examples included) becomes one line, so
    ``<eos>`` marks paragraph ends.
    """
    out: dict[str, list[str]] = {}
    for name, text in sorted(_topics().items()):
        kept = "\n".join(line for line in text.lower().split("\n") if not _is_rule(line))
        paragraphs = (" ".join(block.split()) for block in _BLANK_LINES.split(kept))
        out[name] = [p for p in paragraphs if p]
    return out


def _assign_topics(sizes: dict[str, int]) -> dict[str, str]:
    """Topic -> split. Walk topics in sha256-of-name order (stable, unrelated to content) and give
    each to test, else valid, while it fits in that split's 5% token budget; the rest is train.
    Sizes are word-token counts, so word and char corpora hold out the same topics."""
    budget = _HELD_OUT_FRACTION * sum(sizes.values())
    room = {"test": budget, "valid": budget}
    assignment = {}
    for name in sorted(sizes, key=lambda n: hashlib.sha256(n.encode()).hexdigest()):
        split = next((s for s in ("test", "valid") if sizes[name] <= room[s]), "train")
        if split != "train":
            room[split] -= sizes[name]
        assignment[name] = split
    return assignment


def load_embedded_corpus(
    level: Level = "word", max_vocab: int | None = 10_000, *, space_symbol: str = SPACE_SYMBOL
) -> LanguageCorpus:
    """The offline default corpus from ``pydoc_data.topics`` (real text, no download).

    Normalisation: lower-case; drop layout rows (reST heading underlines, table borders);
    one line per paragraph; word level tokenises with ``\\w+|[^\\w\\s]`` (identifiers whole,
    each punctuation mark alone); char level spells out the collapsed paragraph with spaces as
    ``space_symbol``. Whole topics go to train/valid/test (~90/5/5 of tokens, see
    ``_assign_topics``) so held-out text is on unseen subjects. The vocabulary comes from
    train, capped at ``max_vocab`` ids with ``<unk>``.

    Sizes depend on the Python version's help texts. Measured on CPython 3.12.1: word level
    94,373 / 5,173 / 5,245 tokens with ``<eos>`` (2,737 paragraphs in all), vocabulary 3,617
    (the 10,000 cap does not bite); char level 392,511 / 21,140 / 21,791 symbols, vocabulary 78.
    """
    _check_level(level)
    paragraphs = embedded_topic_paragraphs()
    words = {name: [PYDOC_TOKEN.findall(p) for p in paras] for name, paras in paragraphs.items()}
    assignment = _assign_topics({name: sum(map(len, lines)) for name, lines in words.items()})
    if level == "word":
        lines_of = words
    else:
        lines_of = {
            name: [char_tokens(p, space_symbol) for p in paras]
            for name, paras in paragraphs.items()
        }
    splits: dict[str, list[list[str]]] = {"train": [], "valid": [], "test": []}
    for name in sorted(lines_of):
        splits[assignment[name]].extend(lines_of[name])
    return LanguageCorpus.from_token_lines(
        f"pydoc-topics-{level}",
        level,
        splits["train"],
        splits["valid"],
        splits["test"],
        max_vocab=max_vocab,
        tokenizer=f"pydoc-{'words' if level == 'word' else 'characters'}"
        if space_symbol == SPACE_SYMBOL
        else "custom",
    )


def embedded_split_text(split: str) -> str:
    """The paragraphs of one split of the embedded corpus as text, one per line.

    What ``load_run(path).score_text`` reads back into the split's exact token stream (the
    ``pydoc-words`` / ``pydoc-characters`` tokenizers), e.g. to score a run's own test text.
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    paragraphs = embedded_topic_paragraphs()
    sizes = {
        name: sum(len(PYDOC_TOKEN.findall(p)) for p in paras) for name, paras in paragraphs.items()
    }
    assignment = _assign_topics(sizes)
    return "".join(
        p + "\n"
        for name in sorted(paragraphs)
        if assignment[name] == split
        for p in paragraphs[name]
    )
