"""Entropy decomposition and MC predictive against closed forms."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesrnn.evaluation.uncertainty import (
    expected_entropy,
    mixture_log_probs,
    mutual_information,
    predictive_entropy,
    uncertainty_decomposition,
)

LOG2 = math.log(2.0)


def test_mixture_averages_probabilities_not_log_probs() -> None:
    # Two samples give the observed token probability 0.9 and 0.1.
    # Predictive: log((0.9 + 0.1) / 2) = log 0.5; mean of logs: (log 0.9 + log 0.1) / 2 = log 0.3.
    sample = torch.log(torch.tensor([0.9, 0.1], dtype=torch.float64))
    assert float(mixture_log_probs(sample)) == pytest.approx(math.log(0.5))
    assert float(sample.mean()) == pytest.approx(math.log(0.3))
    assert float(mixture_log_probs(sample)) > float(sample.mean()) + 0.5


def test_mixture_matches_log_mean_exp_along_any_dim() -> None:
    x = torch.log_softmax(torch.randn(4, 5, 7, generator=torch.Generator().manual_seed(1)), -1)
    naive = x.exp().mean(dim=1).log()
    assert torch.allclose(mixture_log_probs(x, dim=1), naive, atol=1e-6)
    assert torch.allclose(mixture_log_probs(x, dim=-2), naive, atol=1e-6)
    assert mixture_log_probs(x.numpy(), dim=0).shape == (5, 7)


def test_mixture_is_stable_where_exp_underflows() -> None:
    x = torch.tensor([-1000.0, -1000.0 + math.log(3.0)], dtype=torch.float64)
    # log((e^-1000 + 3 e^-1000) / 2) = -1000 + log 2; the naive form gives -inf.
    assert float(mixture_log_probs(x)) == pytest.approx(-1000.0 + LOG2)
    assert torch.isinf(x.exp().mean().log())


def test_mixture_of_one_sample_is_identity() -> None:
    x = torch.log(torch.tensor([[0.2, 0.8]]))
    assert torch.allclose(mixture_log_probs(x), x[0])


def test_uniform_has_entropy_log_k_and_no_mutual_information() -> None:
    k = 7
    x = torch.full((5, 3, k), -math.log(k), dtype=torch.float64)
    log_k = torch.full((3,), math.log(k), dtype=torch.float64)
    assert torch.allclose(predictive_entropy(x), log_k)
    assert torch.allclose(expected_entropy(x), log_k)
    assert torch.allclose(mutual_information(x), torch.zeros_like(log_k), atol=1e-12)


def test_entropy_by_hand() -> None:
    # H([1/2, 1/4, 1/4]) = 1/2 log 2 + 2 * 1/4 log 4 = 1.5 log 2
    x = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
    assert float(predictive_entropy(x)) == pytest.approx(1.5 * LOG2)


def test_agreeing_samples_have_zero_mutual_information() -> None:
    dist = torch.log_softmax(torch.randn(4, 6, generator=torch.Generator().manual_seed(2)), -1)
    x = dist.expand(8, 4, 6)
    assert torch.allclose(mutual_information(x), torch.zeros(4), atol=1e-6)
    assert torch.allclose(predictive_entropy(x), expected_entropy(x), atol=1e-6)


def test_opposite_one_hot_samples_have_mutual_information_log_2() -> None:
    # Samples [1, 0] and [0, 1]: each sample has entropy 0 (0 log 0 = 0), their average
    # [1/2, 1/2] has entropy log 2, so all uncertainty is epistemic.
    x = torch.log(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    assert torch.isneginf(x).any()
    assert float(predictive_entropy(x)) == pytest.approx(LOG2)
    assert float(expected_entropy(x)) == 0.0
    assert float(mutual_information(x)) == pytest.approx(LOG2)


def test_entropy_gradient_is_finite_with_zero_probabilities() -> None:
    x = torch.log(torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)).requires_grad_()
    expected_entropy(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_decomposition_by_hand_with_mask() -> None:
    # S=2, T=2, B=2, K=2. Sequence 0: token 0 opposite one-hot samples (H=log 2, E=0, MI=log 2),
    # token 1 both samples uniform (H=E=log 2, MI=0). Sequence 1: token 0 both one-hot on
    # class 0 (all zero), token 1 is padding with arbitrary but valid values.
    one_hot_a = [1.0, 0.0]
    one_hot_b = [0.0, 1.0]
    uniform = [0.5, 0.5]
    probs = torch.tensor(
        [
            [[one_hot_a, one_hot_a], [uniform, one_hot_a]],  # sample 0: [t][b][k]
            [[one_hot_b, one_hot_a], [uniform, one_hot_b]],  # sample 1
        ],
        dtype=torch.float64,
    )
    mask = torch.tensor([[True, True], [True, False]])
    result = uncertainty_decomposition(probs.log(), mask)
    assert result.predictive_entropy.shape == (2, 2)
    assert result.predictive_entropy[:, 0].tolist() == pytest.approx([LOG2, LOG2])
    assert result.expected_entropy[:, 0].tolist() == pytest.approx([0.0, LOG2])
    assert result.mutual_information[:, 0].tolist() == pytest.approx([LOG2, 0.0])
    assert result.sequence_predictive_entropy.tolist() == pytest.approx([LOG2, 0.0])
    assert result.sequence_expected_entropy.tolist() == pytest.approx([LOG2 / 2, 0.0])
    assert result.sequence_mutual_information.tolist() == pytest.approx([LOG2 / 2, 0.0])
    # Without the mask the padded token (samples disagree: MI = log 2) enters sequence 1.
    unmasked = uncertainty_decomposition(probs.log())
    assert unmasked.sequence_mutual_information.tolist() == pytest.approx([LOG2 / 2, LOG2 / 2])


def test_decomposition_matches_the_separate_functions() -> None:
    x = torch.log_softmax(torch.randn(5, 4, 3, 6, generator=torch.Generator().manual_seed(3)), -1)
    result = uncertainty_decomposition(x)
    assert torch.allclose(result.predictive_entropy, predictive_entropy(x))
    assert torch.allclose(result.expected_entropy, expected_entropy(x))
    assert torch.allclose(result.mutual_information, mutual_information(x))
    assert torch.allclose(result.sequence_predictive_entropy, predictive_entropy(x).mean(0))


@pytest.mark.parametrize(
    ("value", "argument"),
    [
        (torch.zeros(0, 3), "sample_log_probs"),  # S = 0
        (torch.log(torch.tensor([0.5, 0.5])), "sample_log_probs"),  # no sample dim
        (torch.log(torch.tensor([[0.5, 0.6]])), "sample_log_probs"),  # not normalised
        (torch.tensor([[math.nan, 0.0]]), "sample_log_probs"),
        (torch.tensor([[math.inf, 0.0]]), "sample_log_probs"),
    ],
)
def test_bad_sample_log_probs_raise(value: torch.Tensor, argument: str) -> None:
    for function in (predictive_entropy, expected_entropy, mutual_information):
        with pytest.raises(ValueError, match=argument):
            function(value)


def test_bad_mixture_and_decomposition_inputs_raise() -> None:
    with pytest.raises(ValueError, match="sample_log_probs"):
        mixture_log_probs(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="sample_log_probs"):
        mixture_log_probs(np.array([math.nan]))
    with pytest.raises(ValueError, match="dim"):
        mixture_log_probs(torch.zeros(2, 3), dim=2)
    x = torch.full((2, 3, 4, 5), -math.log(5))
    with pytest.raises(ValueError, match="sample_log_probs"):
        uncertainty_decomposition(x[0])
    with pytest.raises(ValueError, match="mask"):
        uncertainty_decomposition(x, torch.ones(3, 4))
    with pytest.raises(ValueError, match="mask"):
        uncertainty_decomposition(x, torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        uncertainty_decomposition(x, torch.zeros(3, 4, dtype=torch.bool))


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 5),
    st.integers(1, 8),
    st.floats(0.1, 30.0),
    st.integers(0, 2**31 - 1),
)
def test_decomposition_bounds(s: int, n: int, k: int, sharpness: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = sharpness * torch.randn(s, n, k, generator=gen, dtype=torch.float64)
    x = torch.log_softmax(logits, -1)
    total, aleatoric, epistemic = predictive_entropy(x), expected_entropy(x), mutual_information(x)
    assert (aleatoric >= -1e-12).all()
    assert (total <= math.log(k) + 1e-9).all()
    assert torch.allclose(total, aleatoric + epistemic, atol=1e-9)
    # Epistemic uncertainty cannot exceed log S (MI between the sample index and the class).
    assert (epistemic <= math.log(s) + 1e-9).all()


def test_categorical_entropy_counts_zero_probability_words_as_zero() -> None:
    from bayesrnn.evaluation.uncertainty import categorical_entropy

    # rows: (1/2, 1/2, 0) has entropy log 2 exactly; (0.2, 0.3, 0.5) by hand
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    got = categorical_entropy(probs.log())
    by_hand = -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))
    assert got[0].item() == pytest.approx(math.log(2), rel=1e-12)
    assert got[1].item() == pytest.approx(by_hand, rel=1e-12)
