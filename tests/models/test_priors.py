"""Priors: the scale mixture against hand-computed densities, shapes of the site distributions."""

import math

import pytest
import torch

from bayesrnn.models import GaussianPrior, ScaleMixtureNormal, ScaleMixturePrior


def _normal_pdf(x, sigma):
    return math.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


@pytest.mark.parametrize("x", [0.0, 0.1, -0.5, 2.0])
def test_scale_mixture_log_prob_matches_hand_computation(x):
    pi, s1, s2 = 0.25, math.exp(-1), math.exp(-7)
    expected = math.log(pi * _normal_pdf(x, s1) + (1 - pi) * _normal_pdf(x, s2))
    d = ScaleMixtureNormal(torch.tensor(pi, dtype=torch.float64), s1, s2)
    got = d.log_prob(torch.tensor(x, dtype=torch.float64)).item()
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_scale_mixture_worked_value():
    # π=0.5, σ1=1, σ2=2 at x=1: 0.5·0.2419707 + 0.5·0.1760327 = 0.2090017; log = −1.5653...
    d = ScaleMixtureNormal(torch.tensor(0.5, dtype=torch.float64), 1.0, 2.0)
    assert d.log_prob(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(
        math.log(0.5 * 0.24197072451914337 + 0.5 * 0.17603266338214976), rel=1e-12
    )


def test_scale_mixture_shapes_and_moments():
    prior = ScaleMixturePrior(pi=0.25, sigma1=1.0, sigma2=0.1)
    d = prior.distribution(torch.Size([3, 4]), torch.device("cpu"), torch.float32)
    assert d.batch_shape == torch.Size([]) and d.event_shape == torch.Size([3, 4])
    assert d.log_prob(torch.zeros(3, 4)).shape == torch.Size([])
    assert d.sample().shape == torch.Size([3, 4])
    assert d.sample((2,)).shape == torch.Size([2, 3, 4])
    samples = ScaleMixtureNormal(torch.tensor(0.25), 1.0, 0.1).sample((200_000,))
    assert samples.var().item() == pytest.approx(0.25 * 1.0 + 0.75 * 0.01, rel=0.03)
    assert prior.stddev == pytest.approx(math.sqrt(0.25 + 0.75 * 0.01))


def test_gaussian_prior_distribution():
    d = GaussianPrior(0.5).distribution(torch.Size([2]), torch.device("cpu"), torch.float64)
    x = torch.tensor([0.3, -0.2], dtype=torch.float64)
    expected = sum(math.log(_normal_pdf(v, 0.5)) for v in (0.3, -0.2))
    assert d.log_prob(x).item() == pytest.approx(expected, rel=1e-12)
    assert GaussianPrior(0.5).length_scale == 2.0


@pytest.mark.parametrize("kwargs", [{"pi": 0.0}, {"pi": 1.0}, {"sigma1": 0.0}, {"sigma2": -1.0}])
def test_bad_mixture_hyperparameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ScaleMixturePrior(**kwargs)


def test_bad_gaussian_scale():
    with pytest.raises(ValueError, match="scale"):
        GaussianPrior(0.0)


def test_fused_mixture_sum_and_gradient_match_autograd_of_the_density():
    from bayesrnn.models.priors import mixture_log_density, mixture_log_density_sum

    x = (torch.randn(5000, dtype=torch.float64) * 0.3).requires_grad_(True)
    pi, s1, s2 = 0.25, math.exp(-1), math.exp(-7)
    params = [torch.tensor(v, dtype=torch.float64) for v in (pi, s1, s2)]
    expected = mixture_log_density(x, *params).sum()
    (expected_grad,) = torch.autograd.grad(expected, x)
    got = mixture_log_density_sum(x, pi, s1, s2)
    (got_grad,) = torch.autograd.grad(got, x)
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-8)


def test_fused_mixture_sum_in_float32_matches_float64_where_exp_underflows():
    """The exp floor (e^-60) changes nothing float32 can hold, from |x| ~ 0 to far in the tails."""
    from bayesrnn.models.priors import mixture_log_density_sum

    pi, s1, s2 = 0.25, math.exp(-1), math.exp(-7)
    # the components cross near |x| ~ 4e-3; |x| = 0.05 already puts exp's argument below -87
    x64 = torch.cat([torch.linspace(-0.05, 0.05, 2001), torch.tensor([0.3, -1.5, 4.0])])
    x64 = x64.double().requires_grad_(True)
    x32 = x64.detach().float().requires_grad_(True)
    a1 = math.log(pi) - math.log(s1) - 0.5 * math.log(2 * math.pi)
    a2 = math.log1p(-pi) - math.log(s2) - 0.5 * math.log(2 * math.pi)
    exact = torch.logaddexp(a1 - x64**2 / (2 * s1**2), a2 - x64**2 / (2 * s2**2)).sum()
    (exact_grad,) = torch.autograd.grad(exact, x64)
    got = mixture_log_density_sum(x32, pi, s1, s2)
    (got_grad,) = torch.autograd.grad(got, x32)
    assert float(got.detach()) == pytest.approx(float(exact.detach()), rel=1e-5)
    torch.testing.assert_close(got_grad.double(), exact_grad, rtol=1e-4, atol=1e-3)
