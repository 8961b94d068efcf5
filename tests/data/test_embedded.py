import socket

import pytest
import torch

from bayesrnn.data.embedded import embedded_topic_paragraphs, load_embedded_corpus
from bayesrnn.data.vocab import EOS, UNK


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedded corpus must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def word_corpus():
    return load_embedded_corpus("word")


def test_word_corpus_is_real_and_large_enough(word_corpus):
    sizes = word_corpus.sizes()
    # Measured on CPython 3.12.1: 94,373 / 5,173 / 5,245 tokens, 3,617 types. The bounds leave
    # room for other 3.12 releases' help texts.
    assert sizes["train"] > 80_000
    assert 2_000 < sizes["valid"] < 0.08 * sum(sizes.values())
    assert 2_000 < sizes["test"] < 0.08 * sum(sizes.values())
    assert 2_000 < len(word_corpus.vocab) <= 10_000
    assert word_corpus.vocab.itos[:2] == [UNK, EOS]
    text = word_corpus.vocab.decode(word_corpus.train[:2000])
    for word in ("the", "statement", "object", "is"):
        assert word in text
    assert all(t == t.lower() for t in word_corpus.vocab.itos)


def test_deterministic(word_corpus):
    again = load_embedded_corpus("word")
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(again, split), getattr(word_corpus, split))
    assert again.vocab == word_corpus.vocab


def test_held_out_text_is_mostly_known(word_corpus):
    unk = word_corpus.vocab.unk_id
    assert float((word_corpus.valid == unk).float().mean()) < 0.05
    assert int((word_corpus.train == unk).sum()) == 0  # no cap reached at 10,000


def test_max_vocab_caps_and_maps_rest_to_unk():
    small = load_embedded_corpus("word", max_vocab=500)
    assert len(small.vocab) == 500
    assert int((small.train == small.vocab.unk_id).sum()) > 0


def test_char_level():
    corpus = load_embedded_corpus("char")
    assert corpus.level == "char"
    assert corpus.sizes()["train"] > 300_000
    assert 40 < len(corpus.vocab) < 200
    assert all(len(t) == 1 for t in corpus.vocab.itos[2:])


def test_paragraphs_drop_layout_rows():
    paragraphs = embedded_topic_paragraphs()
    assert len(paragraphs) > 50
    assert paragraphs["assert"][0] == 'the "assert" statement'
    flat = [p for paras in paragraphs.values() for p in paras]
    assert not any(set(p) <= set("*=-~^+|# ") for p in flat)
    assert all(p == " ".join(p.split()) and p for p in flat)
