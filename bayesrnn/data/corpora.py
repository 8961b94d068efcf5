"""Language-modelling corpora: Penn Treebank (word and character level) and any plain text.

Every corpus is three 1-D ``LongTensor`` token streams with one ``<eos>`` closing each line, and a
vocabulary built from the training split only, so valid/test never leak into the id space.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import Tensor

from bayesrnn.data.checksums import DataError, DataNotFoundError, verify_sha256
from bayesrnn.data.input_files import read_input_bytes
from bayesrnn.data.streams import check_token_ids
from bayesrnn.data.tokenizers import SPACE_SYMBOL, char_tokens, split_lines, word_tokens
from bayesrnn.data.vocab import EOS, UNK, Vocabulary

__all__ = [
    "SPACE_SYMBOL",
    "LanguageCorpus",
    "char_tokens",
    "load_ptb",
    "load_text",
    "split_lines",
    "word_tokens",
]

Level = Literal["word", "char"]
SPLITS = ("train", "valid", "test")

_PTB_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "word": ("ptb", tuple(f"ptb.{split}.txt" for split in SPLITS)),
    "char": ("ptb_char", tuple(f"ptb.char.{split}.txt" for split in SPLITS)),
}


@dataclass(frozen=True, eq=False)
class LanguageCorpus:
    """Train/valid/test token streams plus the vocabulary that encodes them."""

    train: Tensor
    valid: Tensor
    test: Tensor
    vocab: Vocabulary
    name: str
    level: Level
    tokenizer: str = "whitespace"  # a key of bayesrnn.data.tokenizers.TOKENIZERS

    def __post_init__(self) -> None:
        _check_level(self.level)
        for split in SPLITS:
            stream = getattr(self, split)
            if not isinstance(stream, Tensor) or stream.dim() != 1:
                raise ValueError(f"LanguageCorpus.{split} must be a 1-D tensor")
            check_token_ids(stream, len(self.vocab), name=f"LanguageCorpus.{split}")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, name: str) -> Tensor:
        """The stream called ``name`` ("train", "valid" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        """Token counts per split (``<eos>`` included), for logs and reports."""
        return {split: int(getattr(self, split).numel()) for split in SPLITS}

    @classmethod
    def from_token_lines(
        cls,
        name: str,
        level: Level,
        train: Iterable[Sequence[str]],
        valid: Iterable[Sequence[str]],
        test: Iterable[Sequence[str]],
        *,
        max_vocab: int | None = None,
        min_count: int = 1,
        unk_token: str | None = UNK,
        tokenizer: str = "whitespace",
    ) -> LanguageCorpus:
        """Close every line with ``<eos>``, build the vocabulary from ``train``, encode all."""
        streams = [_flatten(lines) for lines in (train, valid, test)]
        try:
            vocab = Vocabulary.build(
                streams[0], max_size=max_vocab, min_count=min_count, unk_token=unk_token
            )
        except ValueError as error:
            raise DataError(f"{name}: {error}") from error
        tensors = [vocab.encode(stream) for stream in streams]
        return cls(*tensors, vocab=vocab, name=name, level=level, tokenizer=tokenizer)


# --- tokenisation -------------------------------------------------------------------------------


def _flatten(lines: Iterable[Sequence[str]]) -> list[str]:
    tokens: list[str] = []
    for line in lines:
        tokens.extend(line)
        tokens.append(EOS)
    return tokens


def _check_level(level: str) -> None:
    if level not in ("word", "char"):
        raise ValueError(f'level must be "word" or "char", got {level!r}')


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    # decoded whole, without newline translation: "\r" is ours to interpret.
    if path.is_dir():
        raise DataError(f"{path} is a folder where a text file was expected")
    data = read_input_bytes(path, "data file")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not {encoding} text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}); convert it to {encoding} first"
        ) from None


# --- Penn Treebank ------------------------------------------------------------------------------


def _find_ptb_folder(root: Path, level: str) -> Path:
    subdir, names = _PTB_FILES[level]
    candidates = (root / subdir, root)
    for folder in candidates:
        if all((folder / name).is_file() for name in names):
            return folder
    missing = [str(root / subdir / name) for name in names if not (root / subdir / name).is_file()]
    raise DataNotFoundError(
        f"Penn Treebank ({level} level) not found: missing {', '.join(missing)} "
        f"(also looked directly in {root}). Download it with "
        f"bayesrnn.data.download_ptb({str(root)!r}, level={level!r}), "
        f"or copy Mikolov's {', '.join(names)} into {root / subdir}."
    )


def load_ptb(root: str | Path, level: Level = "word", verify: bool = True) -> LanguageCorpus:
    """Mikolov's Penn Treebank split, the standard RNN language-modelling benchmark.

    Reads ``root/ptb/ptb.{train,valid,test}.txt`` (word) or ``root/ptb_char/ptb.char.*.txt``
    (char); ``root`` may also be the folder holding the files. ``verify`` checks the pinned
    sha256 first (:class:`ChecksumError` on mismatch), so results are comparable with papers.

    Word level: ``line.split()`` plus ``<eos>`` per line gives 929,589 / 73,760 / 82,430 tokens
    and the standard 10,000-word vocabulary (the data already contains ``<unk>``).
    Char level: the files' space-separated symbols plus ``<eos>`` per line give
    5,017,482 / 393,042 / 442,423 tokens and 50 symbols. The char vocabulary has no ``<unk>``
    (every valid/test symbol occurs in train), so an unseen symbol raises ``ValueError``.
    """
    _check_level(level)
    folder = _find_ptb_folder(Path(root).expanduser(), level)
    names = _PTB_FILES[level][1]
    paths = [folder / name for name in names]
    if verify:
        for path in paths:
            verify_sha256(path)
    # Both levels are already tokenised: whitespace-separated words or symbols.
    lines = [[word_tokens(line) for line in split_lines(_read_text(p))] for p in paths]
    return LanguageCorpus.from_token_lines(
        f"ptb-{level}",
        level,
        *lines,
        unk_token=UNK if level == "word" else None,
        # new text for a char-level run may be the files' symbols or plain words to spell out
        tokenizer="whitespace" if level == "word" else "ptb-characters",
    )


# --- any plain text -----------------------------------------------------------------------------


def _find_split_files(folder: Path) -> list[Path]:
    found = []
    for split in SPLITS:
        matches = sorted(
            p
            for pattern in (f"{split}.txt", f"*.{split}.txt", f"*.{split}.tokens")
            for p in folder.glob(pattern)
            if p.is_file()
        )
        if len(matches) != 1:
            what = "no file" if not matches else f"several files ({[m.name for m in matches]})"
            raise DataNotFoundError(
                f"{folder} is a folder, so it needs exactly one {split} file "
                f"({split}.txt, *.{split}.txt or *.{split}.tokens); found {what}"
            )
        found.append(matches[0])
    return found


def _held_out_count(n_lines: int, fraction: float) -> int:
    return 0 if fraction == 0 else max(1, round(n_lines * fraction))


def load_text(
    path: str | Path,
    level: Level = "word",
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
    max_vocab: int | None = None,
    min_count: int = 1,
    *,
    encoding: str = "utf-8",
    space_symbol: str = SPACE_SYMBOL,
) -> LanguageCorpus:
    """A corpus from your own text, tokenised like PTB (whitespace words or characters).

    ``path`` is a text file or a folder with one train, valid and test file each (``train.txt``,
    ``*.train.txt`` or WikiText's ``*.train.tokens``). A single file is split by lines into
    contiguous blocks: train first, then the last ``valid_fraction + test_fraction`` of lines
    as valid then test (contiguous keeps documents whole; nothing random, so it is repeatable).
    Blank lines are skipped. Each line ends in ``<eos>``; the vocabulary comes from train only
    (``max_vocab`` counts the ``<unk>``/``<eos>`` ids), and other tokens become ``<unk>``.
    Character level spells each line out with whitespace runs shown as ``space_symbol``.
    """
    _check_level(level)
    for label, fraction in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {fraction}")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError("valid_fraction + test_fraction must be < 1 to leave training lines")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"text corpus not found: {path} (pass a text file or a folder)")

    def tokenise(text: str) -> list[list[str]]:
        lines = (line for line in split_lines(text) if line.strip())
        if level == "word":
            return [word_tokens(line) for line in lines]
        return [char_tokens(line, space_symbol) for line in lines]

    if path.is_dir():
        train, valid, test = (tokenise(_read_text(p, encoding)) for p in _find_split_files(path))
    else:
        lines = tokenise(_read_text(path, encoding))
        n_valid = _held_out_count(len(lines), valid_fraction)
        n_test = _held_out_count(len(lines), test_fraction)
        n_train = len(lines) - n_valid - n_test
        if n_train < 1:
            raise DataError(
                f"{path} has {len(lines)} non-blank lines: too few to split into "
                f"train/valid/test with fractions {valid_fraction}/{test_fraction}"
            )
        train = lines[:n_train]
        valid = lines[n_train : n_train + n_valid]
        test = lines[n_train + n_valid :]
    if not train:
        raise DataError(f"{path}: the training split has no non-blank lines")
    if level == "char" and space_symbol != SPACE_SYMBOL:
        tokenizer = "custom"  # not one a saved run can replay
    else:
        tokenizer = "whitespace" if level == "word" else "characters"
    return LanguageCorpus.from_token_lines(
        path.stem if path.is_file() else path.name,
        level,
        train,
        valid,
        test,
        max_vocab=max_vocab,
        min_count=min_count,
        tokenizer=tokenizer,
    )
