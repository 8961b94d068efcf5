"""The expected scale-mixture KL against numerical integrals, finite differences and sampling."""

import math
import statistics

import pytest
import torch
from scipy import integrate
from torch.distributions import kl_divergence

from bayesrnn.inference import MeanFieldGuide, SharpenedGuide, window_terms
from bayesrnn.inference.distributions import ExpectedKLNormal, ReparamNormal
from bayesrnn.inference.mixture_kl import expected_mixture_log_density
from bayesrnn.models import LanguageModel, ScaleMixtureNormal, ScaleMixturePrior, brnn_ptb_prior

PI, S1, S2 = 0.25, math.exp(-1.0), math.exp(-7.0)

# (μ, σ): a typical posterior (σ ≫ the spike), high SNR, a weight inside the spike with σ
# narrower than it, σ comparable to the spike, and σ far below it.
CASES = [(0.0, 0.05), (0.05, 0.05), (0.2, 0.05), (5e-4, 3e-4), (0.01, 2e-3), (-0.03, 1e-3),
         (1e-4, 1e-5), (1.0, 0.1)]  # fmt: skip


def _mixture_density(x: float) -> float:
    n = lambda s: math.exp(-0.5 * (x / s) ** 2) / (s * math.sqrt(2 * math.pi))  # noqa: E731
    return PI * n(S1) + (1 - PI) * n(S2)


def _reference(mu: float, sigma: float) -> float:
    """E_{N(μ,σ²)}[log p(x)] by adaptive quadrature, split at the spike's edges."""

    def integrand(x):
        q = math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        return q * math.log(_mixture_density(x))

    lo, hi = mu - 14 * sigma, mu + 14 * sigma
    points = [p for p in (-10 * S2, -3 * S2, 0.0, 3 * S2, 10 * S2, mu) if lo < p < hi]
    value, _ = integrate.quad(
        integrand, lo, hi, points=points, limit=800, epsabs=1e-13, epsrel=1e-13
    )
    return value


@pytest.mark.parametrize("mu, sigma", CASES)
def test_expected_log_density_matches_a_high_accuracy_integral(mu, sigma):
    loc = torch.tensor([mu], dtype=torch.float64)
    scale = torch.tensor([sigma], dtype=torch.float64)
    reference = _reference(mu, sigma)
    got16 = expected_mixture_log_density(loc, scale, PI, S1, S2, order=16).item()
    got8 = expected_mixture_log_density(loc, scale, PI, S1, S2, order=8).item()
    assert got16 == pytest.approx(reference, abs=1e-4)
    assert got8 == pytest.approx(reference, abs=1e-3)  # the default order


def test_gradients_match_finite_differences():
    loc = torch.tensor([m for m, _ in CASES], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([s for _, s in CASES], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda m, s: expected_mixture_log_density(m, s, PI, S1, S2, order=8),
        (loc, scale),
        eps=1e-7,
        atol=1e-5,
        rtol=1e-4,
    )


def test_gradient_matches_the_exact_integral_derivative():
    """d/dμ of the reference integral by central differences, against the estimator's."""
    mu, sigma, h = 0.04, 0.05, 1e-5
    fd = (_reference(mu + h, sigma) - _reference(mu - h, sigma)) / (2 * h)
    loc = torch.tensor([mu], dtype=torch.float64, requires_grad=True)
    expected_mixture_log_density(
        loc, torch.tensor([sigma], dtype=torch.float64), PI, S1, S2, 16
    ).backward()
    assert loc.grad.item() == pytest.approx(fd, rel=1e-3)


def test_equal_widths_reduce_to_one_gaussian():
    loc, scale = torch.tensor([0.3, -0.1]), torch.tensor([0.2, 0.05])
    got = expected_mixture_log_density(loc, scale, 0.4, 0.5, 0.5)
    closed = (-math.log(0.5) - 0.5 * math.log(2 * math.pi) - (loc**2 + scale**2) / 0.5).sum()
    assert got.item() == pytest.approx(closed.item(), rel=1e-6)


def test_expected_kl_is_the_mean_of_the_one_sample_estimate():
    torch.manual_seed(0)
    loc = torch.randn(2000, dtype=torch.float64) * 0.05
    scale = torch.rand(2000, dtype=torch.float64) * 0.05 + 0.01
    prior = ScaleMixtureNormal(torch.tensor(PI, dtype=torch.float64), S1, S2).expand((2000,))
    expected = kl_divergence(ExpectedKLNormal(loc, scale), prior).item()
    sampled = []
    for _ in range(400):
        q = ReparamNormal(loc, scale)
        q.rsample()
        sampled.append(kl_divergence(q, prior).item())
    error = statistics.stdev(sampled) / math.sqrt(len(sampled))
    assert abs(statistics.mean(sampled) - expected) < 4 * error


def test_grouped_mixture_kl_is_jensens_bound_and_tight_for_real_rows():
    torch.manual_seed(0)
    model = LanguageModel(
        30, 8, 8, num_layers=1, prior=brnn_ptb_prior(), deterministic=["decoder.bias"]
    )
    bound = MeanFieldGuide(model, kl="expected")
    sample = MeanFieldGuide(model, kl="sample")
    sample.load_state_dict(bound.state_dict())
    tokens = torch.randint(0, 30, (5, 2))
    kl_bound = float(window_terms(model, bound, tokens, tokens).kl.detach())
    draws = [float(window_terms(model, sample, tokens, tokens).kl.detach()) for _ in range(300)]
    error = statistics.stdev(draws) / math.sqrt(len(draws))
    assert kl_bound >= statistics.mean(draws) - 4 * error  # an upper bound of the KL ...
    assert kl_bound == pytest.approx(statistics.mean(draws), abs=4 * error + 0.5)  # ... and tight


def test_expected_kl_is_deterministic_and_its_gradient_is_small():
    """At initialisation the one-sample KL gradient is dominated by weights in the spike."""
    torch.manual_seed(0)
    model = LanguageModel(
        200, 16, 32, num_layers=1, prior=ScaleMixturePrior(), deterministic=["decoder.bias"]
    )
    tokens = torch.randint(0, 200, (5, 2))
    norms = {}
    for kl in ("expected", "sample"):
        guide = MeanFieldGuide(model, kl=kl)
        torch.manual_seed(1)
        guide.load_state_dict(MeanFieldGuide(model).state_dict())
        grads = []
        for _ in range(2):
            terms = window_terms(model, guide, tokens, tokens)
            params = list(guide.parameters())
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(terms.kl, params)]))
        norms[kl] = [float(g.norm()) for g in grads]
        if kl == "expected":
            torch.testing.assert_close(grads[0], grads[1])
    assert max(norms["expected"]) * 10 < min(norms["sample"])


def test_bad_estimator_settings_are_value_errors():
    model = LanguageModel(10, 4, 4, prior=ScaleMixturePrior())
    with pytest.raises(ValueError, match="quadrature_order"):
        MeanFieldGuide(model, quadrature_order=0)
    with pytest.raises(ValueError, match="quadrature_order"):
        SharpenedGuide(model, quadrature_order=-2)
    with pytest.raises(ValueError, match="kl must be one of"):
        MeanFieldGuide(model, kl="analytic")
    with pytest.raises(ValueError, match="quadrature_order"):
        expected_mixture_log_density(torch.zeros(1), torch.ones(1), PI, S1, S2, order=0)


def test_series_matches_high_order_quadrature_where_it_is_used():
    from bayesrnn.inference import mixture_kl as mk

    big_a = (1 - PI) * S1 / (PI * S2)
    s = 1 / math.sqrt(1 / S2**2 - 1 / S1**2)
    torch.manual_seed(0)
    scale = torch.exp(torch.empty(4000, dtype=torch.float64).uniform_(math.log(3 * s), 0.0))
    loc = torch.randn(4000, dtype=torch.float64) * scale * 3
    value, grad_loc, grad_scale, hard = mk._bump_series(
        loc, scale, mk.series_coefficients(big_a), s
    )
    keep = ~hard
    assert int(keep.sum()) > 2000  # the series covers most of this range
    exact = mk._bump_chunk(loc[keep], scale[keep], big_a, s, 64, True)
    for got, want in zip((value[keep], grad_loc[keep], grad_scale[keep]), exact, strict=True):
        torch.testing.assert_close(got, want, rtol=5e-4, atol=1e-9)


def test_fused_series_equals_the_eager_kernel(monkeypatch):
    """Large sites run the series as one compiled kernel; it must give the eager numbers."""
    import warnings

    from bayesrnn.inference import mixture_kl as mk

    torch.manual_seed(0)
    loc = (torch.randn(5000) * 0.08).requires_grad_(True)
    scale = (torch.rand(5000) * 0.05 + 1e-3).requires_grad_(True)
    eager = expected_mixture_log_density(loc, scale, PI, S1, S2)
    eager_grads = torch.autograd.grad(eager, (loc, scale))
    monkeypatch.setattr(mk, "COMPILE_MIN_WEIGHTS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent fall-back to eager
        fused = expected_mixture_log_density(loc, scale, PI, S1, S2)
    fused_grads = torch.autograd.grad(fused, (loc, scale))
    assert not mk._compiled.get("failed")
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-3)
    for got, want in zip(fused_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
