"""Sentence polarity v1.0 (Pang & Lee 2005, "MR"): the sentiment task of Gal & Ghahramani (2016).

Also the padding and batching helpers that any variable-length classification data needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from bayesrnn.data.checksums import DataNotFoundError, verify_sha256
from bayesrnn.data.input_files import read_input_bytes
from bayesrnn.data.tokenizers import split_lines, word_tokens
from bayesrnn.data.vocab import PAD, UNK, Vocabulary

__all__ = [
    "ClassificationCorpus",
    "ClassificationSplit",
    "classification_batches",
    "load_polarity",
    "pad_batch",
]

_POLARITY_FILES = (("rt-polarity.neg", 0), ("rt-polarity.pos", 1))


@dataclass(frozen=True, eq=False)
class ClassificationSplit:
    """Token sequences, their labels, and each example's index in the source (neg then pos)."""

    sequences: list[Tensor]
    labels: Tensor
    source_index: Tensor

    def __post_init__(self) -> None:
        if not len(self.sequences) == self.labels.numel() == self.source_index.numel():
            raise ValueError("sequences, labels and source_index must have the same length")

    def __len__(self) -> int:
        return len(self.sequences)


@dataclass(frozen=True, eq=False)
class ClassificationCorpus:
    """Train/valid/test splits and the vocabulary (built from train) that encodes them."""

    train: ClassificationSplit
    valid: ClassificationSplit
    test: ClassificationSplit
    vocab: Vocabulary
    name: str
    label_names: tuple[str, ...]
    tokenizer: str = "whitespace"  # a key of bayesrnn.data.tokenizers.TOKENIZERS

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def _find_polarity_folder(root: Path) -> Path:
    for folder in (root / "rt-polarity", root):
        if all((folder / name).is_file() for name, _ in _POLARITY_FILES):
            return folder
    raise DataNotFoundError(
        f"sentence polarity data not found: expected rt-polarity.pos and rt-polarity.neg in "
        f"{root / 'rt-polarity'} (or directly in {root}). Download it with "
        f"bayesrnn.data.download_polarity({str(root)!r})."
    )


def _read_snippets(path: Path) -> list[list[str]]:
    # cp1252, and "\n" only: 0x85 is "…" here, and as latin-1 NEL it would split lines.
    text = read_input_bytes(path, "data file").decode("cp1252")
    return [word_tokens(line) for line in split_lines(text)]


def load_polarity(
    root: str | Path,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_vocab: int | None = None,
    *,
    verify: bool = True,
) -> ClassificationCorpus:
    """Rotten Tomatoes snippets labelled 1 = positive, 0 = negative (5,331 each, 10,662 in all).

    Reads ``root/rt-polarity/rt-polarity.{pos,neg}`` (or ``root`` pointing at that folder),
    checks the pinned sha256 when ``verify``, decodes cp1252 and splits on ``\\n`` only. Examples
    (neg first, then pos) are shuffled with ``torch.randperm`` under a ``torch.Generator`` seeded
    with ``seed``; the last ``round(n*test_fraction)`` go to test, the ``round(n*valid_fraction)``
    before them to valid. The defaults give 8,530 / 1,066 / 1,066; the same seed always gives
    the same split. The vocabulary comes from train: ``<pad>`` = 0 (what :func:`pad_batch` pads
    with), ``<unk>`` = 1, then words by frequency, at most ``max_vocab`` ids in all.
    """
    for label, fraction in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {fraction}")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError("valid_fraction + test_fraction must be < 1 to leave training examples")
    folder = _find_polarity_folder(Path(root).expanduser())
    texts: list[list[str]] = []
    labels: list[int] = []
    for name, label in _POLARITY_FILES:
        path = folder / name
        if verify:
            verify_sha256(path)
        snippets = _read_snippets(path)
        texts.extend(snippets)
        labels.extend([label] * len(snippets))

    n = len(texts)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    n_test = round(n * test_fraction)
    n_valid = round(n * valid_fraction)
    n_train = n - n_valid - n_test
    parts = {
        "train": order[:n_train],
        "valid": order[n_train : n_train + n_valid],
        "test": order[n_train + n_valid :],
    }
    vocab = Vocabulary.build(
        (token for i in parts["train"].tolist() for token in texts[i]),
        max_size=max_vocab,
        unk_token=UNK,
        eos_token=None,
        pad_token=PAD,
    )
    all_labels = torch.tensor(labels, dtype=torch.long)

    def make(index: Tensor) -> ClassificationSplit:
        return ClassificationSplit(
            [vocab.encode(texts[i]) for i in index.tolist()], all_labels[index], index.clone()
        )

    return ClassificationCorpus(
        make(parts["train"]),
        make(parts["valid"]),
        make(parts["test"]),
        vocab=vocab,
        name="rt-polarity",
        label_names=("neg", "pos"),
    )


def pad_batch(
    sequences: Sequence[Tensor], pad_id: int = 0, batch_first: bool = False
) -> tuple[Tensor, Tensor]:
    """Stack 1-D sequences into one ``LongTensor`` padded with ``pad_id`` and their lengths.

    Time-major ``(T, B)`` by default, like the RNNs and ``pack_padded_sequence``; the lengths let
    the model read each sequence's last real step instead of a pad.
    """
    if len(sequences) == 0:
        raise ValueError("pad_batch needs at least one sequence")
    for i, seq in enumerate(sequences):
        if not isinstance(seq, Tensor) or seq.dim() != 1:
            raise ValueError(f"sequence {i} must be a 1-D tensor")
    lengths = torch.tensor([seq.numel() for seq in sequences], dtype=torch.long)
    padded = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        padded[row, : seq.numel()] = seq
    return (padded if batch_first else padded.t().contiguous()), lengths


def classification_batches(
    sequences: Sequence[Tensor],
    labels: Tensor,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    *,
    pad_id: int = 0,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Yield ``(tokens (T, B), lengths (B,), labels (B,))`` minibatches, time-major.

    With ``shuffle`` the order is ``torch.randperm`` under ``generator``, so a seeded generator
    replays the same epochs. The last smaller batch is kept unless ``drop_last``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(sequences) != labels.numel():
        raise ValueError(f"{len(sequences)} sequences but {labels.numel()} labels")
    # Checked above, eagerly; the generator below only starts on the first next().
    return _batches(sequences, labels, batch_size, shuffle, generator, pad_id, drop_last)


def _batches(
    sequences: Sequence[Tensor],
    labels: Tensor,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    pad_id: int,
    drop_last: bool,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    n = len(sequences)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        tokens, lengths = pad_batch([sequences[i] for i in index.tolist()], pad_id=pad_id)
        yield tokens, lengths, labels[index]
