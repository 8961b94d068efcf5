import shutil
from pathlib import Path

import pytest
import torch

from bayesrnn.data.checksums import ChecksumError, DataNotFoundError
from bayesrnn.data.polarity import (
    ClassificationCorpus,
    classification_batches,
    load_polarity,
    pad_batch,
)
from bayesrnn.data.vocab import PAD, UNK

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found: {SHARED_DATA} (real rt-polarity files needed)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> ClassificationCorpus:
    return load_polarity(shared_data)


def _all(corpus: ClassificationCorpus) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.cat(
        [corpus.train.source_index, corpus.valid.source_index, corpus.test.source_index]
    )
    labels = torch.cat([corpus.train.labels, corpus.valid.labels, corpus.test.labels])
    return index, labels


def test_counts_and_labels(corpus: ClassificationCorpus):
    assert corpus.sizes() == {"train": 8_530, "valid": 1_066, "test": 1_066}
    index, labels = _all(corpus)
    assert torch.equal(index.sort().values, torch.arange(10_662))  # disjoint, complete
    assert int(labels.sum()) == 5_331 and int((labels == 0).sum()) == 5_331
    # Source order is neg (0..5330) then pos: labels follow the source index.
    assert torch.equal(labels, (index >= 5_331).long())
    assert corpus.label_names == ("neg", "pos") and corpus.n_classes == 2


def test_nel_byte_neither_splits_lines_nor_vanishes(shared_data: Path):
    raw = (shared_data / "rt-polarity" / "rt-polarity.pos").read_bytes()
    assert b"\x85" in raw
    assert len(raw.decode("latin-1").splitlines()) > 5_331  # the trap the loader avoids
    full = load_polarity(shared_data, valid_fraction=0, test_fraction=0)
    assert len(full.train) == 10_662
    assert "…" in "".join(full.vocab.itos)
    assert len(full.vocab) == 21_425 + 2  # distinct whitespace tokens, plus <pad>, <unk>


def test_split_is_seeded(shared_data: Path, corpus: ClassificationCorpus):
    again = load_polarity(shared_data, seed=0)
    assert torch.equal(again.test.source_index, corpus.test.source_index)
    assert all(
        torch.equal(a, b)
        for a, b in zip(again.train.sequences, corpus.train.sequences, strict=True)
    )
    other = load_polarity(shared_data, seed=1)
    assert not torch.equal(other.test.source_index, corpus.test.source_index)


def test_vocabulary_from_train_only(corpus: ClassificationCorpus):
    assert corpus.vocab.itos[:2] == [PAD, UNK] and corpus.vocab.eos_id is None
    train_ids = torch.cat(corpus.train.sequences)
    assert int((train_ids == corpus.vocab.unk_id).sum()) == 0
    assert int((train_ids == 0).sum()) == 0  # <pad> never occurs in data
    assert int((torch.cat(corpus.test.sequences) == corpus.vocab.unk_id).sum()) > 0


def test_checksum_and_missing(shared_data: Path, tmp_path: Path):
    with pytest.raises(DataNotFoundError, match="download_polarity"):
        load_polarity(tmp_path)
    shutil.copy(shared_data / "rt-polarity" / "rt-polarity.neg", tmp_path / "rt-polarity.neg")
    (tmp_path / "rt-polarity.pos").write_bytes(b"good fun .\n")
    with pytest.raises(ChecksumError, match=r"rt-polarity\.pos"):
        load_polarity(tmp_path)
    small = load_polarity(tmp_path, verify=False, valid_fraction=0, test_fraction=0)
    assert len(small.train) == 5_332


def test_pad_batch():
    seqs = [torch.tensor([5, 6, 7]), torch.tensor([8]), torch.tensor([9, 10])]
    padded, lengths = pad_batch(seqs, pad_id=0)
    assert padded.shape == (3, 3) and lengths.tolist() == [3, 1, 2]
    assert padded.t().tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    batch_first, _ = pad_batch(seqs, pad_id=-1, batch_first=True)
    assert batch_first.tolist() == [[5, 6, 7], [8, -1, -1], [9, 10, -1]]
    with pytest.raises(ValueError, match="at least one"):
        pad_batch([])
    with pytest.raises(ValueError, match="1-D"):
        pad_batch([torch.zeros(2, 2, dtype=torch.long)])


def test_classification_batches():
    seqs = [torch.full((i + 1,), i) for i in range(7)]
    labels = torch.arange(7) % 2
    batches = list(classification_batches(seqs, labels, batch_size=3, shuffle=False))
    assert [b[0].shape for b in batches] == [(3, 3), (6, 3), (7, 1)]
    tokens, lengths, batch_labels = batches[1]
    assert lengths.tolist() == [4, 5, 6] and batch_labels.tolist() == [1, 0, 1]
    assert tokens[:, 0].tolist() == [3, 3, 3, 3, 0, 0]
    assert len(list(classification_batches(seqs, labels, 3, drop_last=True))) == 2

    def epoch(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        out = classification_batches(seqs, labels, 2, shuffle=True, generator=gen)
        return [int(t[0, i]) for t, lengths, _ in out for i in range(t.shape[1])]

    assert epoch(3) == epoch(3) and sorted(epoch(3)) == list(range(7))
    with pytest.raises(ValueError, match="batch_size"):
        classification_batches(seqs, labels, 0)
    with pytest.raises(ValueError, match="labels"):
        classification_batches(seqs, labels[:3], 2)
