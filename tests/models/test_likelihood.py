"""TokenCategorical: the fused cross-entropy log-probability against torch's Categorical."""

import pytest
import torch
from pyro.distributions import Categorical

from bayesrnn.models.likelihood import TokenCategorical


def test_log_prob_and_gradient_equal_categoricals():
    torch.manual_seed(0)
    raw = (torch.randn(7, 3, 11) * 4).requires_grad_(True)
    targets = torch.randint(0, 11, (7, 3))
    fused = TokenCategorical(raw).log_prob(targets)
    reference = Categorical(logits=raw).log_prob(targets)
    torch.testing.assert_close(fused, reference)
    (g_fused,) = torch.autograd.grad(fused.sum(), raw)
    (g_ref,) = torch.autograd.grad(reference.sum(), raw)
    torch.testing.assert_close(g_fused, g_ref)


def test_hand_computed_value():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    expected = 1.0 - torch.log(torch.tensor(1.0 + 2.718281828459045 + 7.38905609893065))
    assert float(TokenCategorical(logits).log_prob(torch.tensor([1]))) == pytest.approx(
        float(expected), rel=1e-6
    )


def test_normalised_logits_probs_and_sampling_behave_like_categorical():
    raw = torch.tensor([[3.0, 1.0, -2.0], [0.0, 0.0, 0.0]])
    fused, reference = TokenCategorical(raw), Categorical(logits=raw)
    torch.testing.assert_close(fused.logits, reference.logits)
    torch.testing.assert_close(fused.probs, reference.probs)
    assert fused.sample((5,)).shape == (5, 2)
    torch.testing.assert_close(fused.entropy(), reference.entropy())


def test_expand_and_broadcast_values_fall_back_to_the_general_path():
    raw = torch.randn(1, 5)
    expanded = TokenCategorical(raw).expand((4,))
    assert isinstance(expanded, TokenCategorical) and expanded.batch_shape == (4,)
    values = torch.tensor([0, 1, 2, 4])
    torch.testing.assert_close(expanded.log_prob(values), Categorical(logits=raw).log_prob(values))
    # a value shape other than the batch shape broadcasts like Categorical's
    values = torch.tensor([[0], [3]])
    torch.testing.assert_close(
        TokenCategorical(raw[0]).log_prob(values), Categorical(logits=raw[0]).log_prob(values)
    )


def test_out_of_range_values_are_rejected_when_validating():
    with pytest.raises(ValueError):
        TokenCategorical(torch.zeros(2, 3), validate_args=True).log_prob(torch.tensor([0, 3]))


def test_scalar_logits_are_refused():
    with pytest.raises(ValueError, match="at least one dimension"):
        TokenCategorical(torch.tensor(1.0))
