import shutil
from pathlib import Path

import pytest
import torch

from bayesrnn.data.checksums import ChecksumError, DataNotFoundError
from bayesrnn.data.corpora import LanguageCorpus, load_ptb, load_text, split_lines
from bayesrnn.data.vocab import EOS, UNK

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found: {SHARED_DATA} (real PTB files needed)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def ptb_word(shared_data: Path) -> LanguageCorpus:
    return load_ptb(shared_data, "word")


def test_ptb_word_counts_and_vocabulary(ptb_word: LanguageCorpus):
    assert ptb_word.sizes() == {"train": 929_589, "valid": 73_760, "test": 82_430}
    assert len(ptb_word.vocab) == 10_000
    assert ptb_word.vocab.unk_id is not None and ptb_word.vocab.eos_id is not None
    assert ptb_word.level == "word" and ptb_word.name == "ptb-word"
    eos = ptb_word.vocab.eos_id
    assert [int((getattr(ptb_word, s) == eos).sum()) for s in ("train", "valid", "test")] == [
        42_068,
        3_370,
        3_761,
    ]
    # PTB ships its own <unk>: 45,020 occurrences in train, and no other token maps to it.
    assert int((ptb_word.train == ptb_word.vocab.unk_id).sum()) == 45_020
    for stream in (ptb_word.train, ptb_word.valid, ptb_word.test):
        assert stream.dtype == torch.long and stream.dim() == 1


def test_ptb_word_first_sentence(ptb_word: LanguageCorpus, shared_data: Path):
    first = (shared_data / "ptb" / "ptb.valid.txt").read_text().split("\n")[0].split()
    assert ptb_word.vocab.decode(ptb_word.valid[: len(first) + 1]) == [*first, EOS]


def test_ptb_char_counts_and_vocabulary(shared_data: Path):
    corpus = load_ptb(shared_data, "char")
    assert corpus.sizes() == {"train": 5_017_482, "valid": 393_042, "test": 442_423}
    assert len(corpus.vocab) == 50 and corpus.vocab.unk_id is None
    assert "_" in corpus.vocab and EOS in corpus.vocab


def test_ptb_root_may_be_the_folder_itself(shared_data: Path, ptb_word: LanguageCorpus):
    direct = load_ptb(shared_data / "ptb", verify=False)
    assert torch.equal(direct.test, ptb_word.test) and direct.vocab == ptb_word.vocab


def test_ptb_checksum_mismatch_names_file_and_hashes(shared_data: Path, tmp_path: Path):
    folder = tmp_path / "ptb"
    folder.mkdir()
    for name in ("ptb.train.txt", "ptb.valid.txt"):
        shutil.copy(shared_data / "ptb" / name, folder / name)
    (folder / "ptb.test.txt").write_text(" a tampered line \n")
    with pytest.raises(ChecksumError) as info:
        load_ptb(tmp_path)
    message = str(info.value)
    assert "ptb.test.txt" in message
    assert "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0" in message
    assert isinstance(info.value, ValueError)
    # verify=False accepts it; the unseen word becomes <unk>.
    corpus = load_ptb(tmp_path, verify=False)
    assert corpus.vocab.decode(corpus.test) == ["a", UNK, "line", EOS]


def test_ptb_missing_says_where_and_how(tmp_path: Path):
    with pytest.raises(DataNotFoundError, match="download_ptb") as info:
        load_ptb(tmp_path / "nowhere", "char")
    assert "ptb.char.train.txt" in str(info.value) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(ValueError, match="level"):
        load_ptb(tmp_path, "byte")


def test_split_lines_handles_ptb_char_tail_and_nel():
    assert split_lines("a b\nc\n") == ["a b", "c"]
    assert split_lines("a _ b \n c \n ") == ["a _ b ", " c "]
    assert split_lines("x\x85y\nz") == ["x\x85y", "z"]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_text_single_file_split_is_contiguous(tmp_path: Path):
    lines = [f"w{i} common" for i in range(20)]
    path = _write(tmp_path / "tiny.txt", [*lines[:10], "   ", *lines[10:]])
    corpus = load_text(path, valid_fraction=0.1, test_fraction=0.1)
    assert corpus.name == "tiny" and corpus.level == "word"
    decode = corpus.vocab.decode
    assert decode(corpus.train)[:3] == ["w0", "common", EOS]
    assert decode(corpus.valid) == [UNK, "common", EOS, UNK, "common", EOS]  # w16, w17 unseen
    assert corpus.sizes() == {"train": 48, "valid": 6, "test": 6}  # blank line skipped
    again = load_text(path, valid_fraction=0.1, test_fraction=0.1)
    assert torch.equal(again.train, corpus.train) and again.vocab == corpus.vocab


def test_load_text_folder_and_vocab_limits(tmp_path: Path):
    _write(tmp_path / "corpus.train.txt", ["a a a b b c", "a b"])
    _write(tmp_path / "corpus.valid.txt", ["a d"])
    _write(tmp_path / "corpus.test.txt", ["c"])
    corpus = load_text(tmp_path, max_vocab=4)
    assert corpus.vocab.itos == [UNK, EOS, "a", "b"]
    assert corpus.vocab.decode(corpus.valid) == ["a", UNK, EOS]
    assert corpus.vocab.decode(corpus.test) == [UNK, EOS]
    assert load_text(tmp_path, min_count=4).vocab.itos == [UNK, EOS, "a"]


def test_load_text_char_level(tmp_path: Path):
    path = _write(tmp_path / "c.txt", ["ab  c", "ba", "ca"])
    corpus = load_text(path, level="char", valid_fraction=0.3, test_fraction=0.3)
    assert corpus.vocab.decode(corpus.train) == ["a", "b", "_", "c", EOS]
    assert corpus.vocab.decode(corpus.test) == ["c", "a", EOS]


def test_load_text_bad_inputs(tmp_path: Path):
    path = _write(tmp_path / "one.txt", ["only line"])
    with pytest.raises(ValueError, match="too few"):
        load_text(path)
    with pytest.raises(ValueError, match="valid_fraction"):
        load_text(path, valid_fraction=1.5)
    with pytest.raises(ValueError, match="< 1"):
        load_text(path, valid_fraction=0.5, test_fraction=0.5)
    with pytest.raises(DataNotFoundError, match=r"missing\.txt"):
        load_text(tmp_path / "missing.txt")
    empty_folder = tmp_path / "folder"
    empty_folder.mkdir()
    with pytest.raises(DataNotFoundError, match="train"):
        load_text(empty_folder)
    assert load_text(path, valid_fraction=0, test_fraction=0).sizes()["valid"] == 0
