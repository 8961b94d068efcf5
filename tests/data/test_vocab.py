import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bayesrnn.data.vocab import EOS, PAD, UNK, Vocabulary


def test_reserved_first_then_frequency_then_token():
    vocab = Vocabulary.build(["b", "a", "c", "a", "b", "a", "d"])
    assert vocab.itos == [UNK, EOS, "a", "b", "c", "d"]
    assert (vocab.unk_id, vocab.eos_id, vocab.pad_id) == (0, 1, None)


def test_build_is_independent_of_input_order():
    tokens = ["x", "y", "z", "y", "z", "z", "w"]
    assert Vocabulary.build(tokens).itos == Vocabulary.build(reversed(tokens)).itos


def test_reserved_tokens_in_the_data_are_not_duplicated():
    vocab = Vocabulary.build(["<unk>", "a", "<eos>", "a"])
    assert vocab.itos == [UNK, EOS, "a"]


def test_max_size_counts_reserved_and_min_count_cuts():
    tokens = ["a", "a", "a", "b", "b", "c"]
    assert Vocabulary.build(tokens, max_size=3).itos == [UNK, EOS, "a"]
    assert Vocabulary.build(tokens, min_count=2).itos == [UNK, EOS, "a", "b"]


def test_unknown_tokens_map_to_unk():
    vocab = Vocabulary.build(["a", "b"])
    assert vocab.encode(["a", "zzz", "b"]).tolist() == [
        vocab.token_to_id("a"),
        0,
        vocab.token_to_id("b"),
    ]


def test_encode_decode_round_trip():
    vocab = Vocabulary.build(["the", "cat", "sat", "on", "the", "mat"])
    sentence = ["the", "mat", "sat", EOS]
    ids = vocab.encode(sentence)
    assert ids.dtype == torch.long and ids.dim() == 1
    assert vocab.decode(ids) == sentence
    assert vocab.decode(ids.tolist()) == sentence


def test_without_unk_unknown_tokens_raise():
    vocab = Vocabulary.build(["a", "b"], unk_token=None)
    assert vocab.unk_id is None and len(vocab) == 3
    with pytest.raises(ValueError, match="'q'"):
        vocab.encode(["a", "q"])
    with pytest.raises(ValueError, match="no unk_token"):
        Vocabulary.build(["a", "a", "b"], unk_token=None, min_count=2)


def test_pad_token_takes_id_zero():
    vocab = Vocabulary.build(["a", "b"], pad_token=PAD, eos_token=None)
    assert vocab.itos[:2] == [PAD, UNK] and vocab.pad_id == 0 and vocab.eos_id is None


def test_to_dict_is_json_safe_and_round_trips():
    vocab = Vocabulary.build(["x", "y", "y", "z"], pad_token=PAD)
    state = json.loads(json.dumps(vocab.to_dict()))
    again = Vocabulary.from_dict(state)
    assert again == vocab and again.itos == vocab.itos and again.pad_id == vocab.pad_id


def test_bad_inputs_raise_value_errors():
    vocab = Vocabulary.build(["a"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.decode([5])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.decode(torch.tensor([-1]))
    with pytest.raises(ValueError, match="not one str"):
        vocab.encode("a")
    with pytest.raises(ValueError, match="integer"):
        vocab.decode(torch.tensor([0.0]))
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(["a", "a"], unk_token=None, eos_token=None)
    with pytest.raises(ValueError, match="unk_token"):
        Vocabulary(["a"])
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build(["a"], max_size=1)
    with pytest.raises(ValueError, match="itos"):
        Vocabulary.from_dict({"tokens": []})


@given(st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=50))
def test_round_trip_property(tokens):
    vocab = Vocabulary.build(tokens)
    decoded = vocab.decode(vocab.encode(tokens))
    assert decoded == [t if t in vocab else UNK for t in tokens]
    assert all(t in vocab for t in tokens)
