import pytest
import torch

from bayesrnn.data.streams import batchify, check_token_ids, reverse_stream


def test_batchify_hand_example():
    # 11 tokens into 3 sequences: 3 steps each, tokens 9 and 10 dropped.
    out = batchify(torch.arange(11), 3)
    expected = torch.tensor([[0, 3, 6], [1, 4, 7], [2, 5, 8]])
    assert out.shape == (3, 3) and out.dtype == torch.long
    assert torch.equal(out, expected)
    assert out.is_contiguous()


def test_batchify_columns_are_contiguous_chunks():
    stream = torch.randint(0, 50, (1003,))
    out = batchify(stream, 10)
    assert out.shape == (100, 10)
    for j in range(10):
        assert torch.equal(out[:, j], stream[j * 100 : (j + 1) * 100])


def test_batchify_one_sequence_keeps_everything():
    assert torch.equal(batchify(torch.tensor([4, 5, 6]), 1), torch.tensor([[4], [5], [6]]))


@pytest.mark.parametrize(
    ("stream", "n", "match"),
    [
        (torch.arange(3), 4, "fewer than n_sequences"),
        (torch.arange(6).view(2, 3), 2, "1-D"),
        (torch.tensor([1, -1, 2]), 1, "negative"),
        (torch.arange(4.0), 2, "integer"),
        (torch.arange(4), 0, "positive int"),
        ([1, 2, 3], 1, "torch.Tensor"),
    ],
)
def test_batchify_rejects_bad_input(stream, n, match):
    with pytest.raises(ValueError, match=match):
        batchify(stream, n)


def test_reverse_stream():
    assert reverse_stream(torch.tensor([1, 2, 3, 4])).tolist() == [4, 3, 2, 1]
    with pytest.raises(ValueError, match="1-D"):
        reverse_stream(torch.zeros(2, 2, dtype=torch.long))


def test_check_token_ids_names_the_argument():
    check_token_ids(torch.tensor([0, 4]), 5, name="train")
    check_token_ids(torch.tensor([], dtype=torch.long), 5)
    with pytest.raises(ValueError, match=r"valid holds token ids in \[0, 5\]"):
        check_token_ids(torch.tensor([0, 5]), 5, name="valid")
    with pytest.raises(ValueError, match="test"):
        check_token_ids(torch.tensor([-2]), 5, name="test")
    with pytest.raises(ValueError, match="vocab_size"):
        check_token_ids(torch.tensor([0]), 0)
