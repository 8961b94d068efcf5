"""The expected scale-mixture KL against adaptive quadrature of the integral and of its
derivatives, and against sampling."""

import math
import statistics
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate
from torch.distributions import kl_divergence

from bayesrnn.inference import MeanFieldGuide, SharpenedGuide, window_terms
from bayesrnn.inference.estimators.distributions import ExpectedKLNormal, ReparamNormal
from bayesrnn.inference.estimators.mixture_kl import expected_mixture_log_density
from bayesrnn.models import LanguageModel, ScaleMixtureNormal, ScaleMixturePrior, brnn_ptb_prior

PI, S1, S2 = 0.25, math.exp(-1.0), math.exp(-7.0)

# (μ, σ): a typical posterior (σ ≫ the spike), high SNR, a weight inside the spike with σ
# narrower than it, σ comparable to the spike, σ far below it, and q straddling the spike's edge.
CASES = [(0.0, 0.05), (0.05, 0.05), (0.2, 0.05), (5e-4, 3e-4), (0.01, 2e-3), (-0.03, 1e-3),
         (1e-4, 1e-5), (1.0, 0.1), (2.8 * S2, S2)]  # fmt: skip


# Where the spike's log-density falls below the wide component's: log p has its sharpest bend.
EDGE = S2 * math.sqrt(2 * math.log((1 - PI) * S1 / (PI * S2)))


def _log_components(x: float) -> tuple[float, float]:
    wide = math.log(PI) - math.log(S1) - 0.5 * (x / S1) ** 2 - 0.5 * math.log(2 * math.pi)
    narrow = math.log(1 - PI) - math.log(S2) - 0.5 * (x / S2) ** 2 - 0.5 * math.log(2 * math.pi)
    return wide, narrow


def _log_density(x: float) -> float:
    wide, narrow = _log_components(x)
    top = max(wide, narrow)
    return top + math.log1p(math.exp(min(wide, narrow) - top))


def _score(x: float) -> float:
    """d log p/dx = −x Σ_i r_i(x)/σ_i², r_i the components' responsibilities."""
    wide, narrow = _log_components(x)
    lead = narrow - wide  # r_wide = 1/(1 + e^lead), without overflow
    r_wide = 1 / (1 + math.exp(lead)) if lead < 0 else math.exp(-lead) / (1 + math.exp(-lead))
    return -x * (r_wide / S1**2 + (1 - r_wide) / S2**2)


def _reference(mu: float, sigma: float) -> tuple[float, float, float]:
    """E_{N(μ,σ²)}[log p(x)] and its μ and σ derivatives, E[p'/p] and E[ε p'/p] (x = μ + σε),
    by adaptive quadrature, split at the spike's edges."""

    def q(x):
        return math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))

    lo, hi = mu - 13 * sigma, mu + 13 * sigma
    points = [p for p in (-EDGE, 0.0, EDGE, mu) if lo < p < hi]
    options = {"points": points, "limit": 400, "epsabs": 1e-12, "epsrel": 1e-12}
    with warnings.catch_warnings():  # "roundoff detected" where the answer is near 0
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        value = integrate.quad(lambda x: q(x) * _log_density(x), lo, hi, **options)[0]
        d_loc = integrate.quad(lambda x: q(x) * _score(x), lo, hi, **options)[0]
        d_scale = integrate.quad(lambda x: q(x) * _score(x) * (x - mu) / sigma, lo, hi, **options)
    return value, d_loc, d_scale[0]


def _computed(mu, sigma, order=8, dtype=torch.float64):
    """Per-weight values and gradients of expected_mixture_log_density."""
    loc = torch.tensor(mu, dtype=dtype).reshape(-1).requires_grad_(True)
    scale = torch.tensor(sigma, dtype=dtype).reshape(-1).requires_grad_(True)
    values = torch.stack(
        [
            expected_mixture_log_density(loc[i : i + 1], scale[i : i + 1], PI, S1, S2, order)
            for i in range(loc.numel())
        ]
    )
    d_loc, d_scale = torch.autograd.grad(values.sum(), (loc, scale))
    return values.detach(), d_loc, d_scale


# The stated accuracy (module docstring, README): per weight, 1e-5 nats and 2e-5/σ2 in each
# gradient (whose largest size is about 2.8/σ2).
VALUE_TOLERANCE, GRADIENT_TOLERANCE = 1e-5, 2e-5 / S2


@pytest.mark.parametrize("order", [8, 16])
def test_values_and_gradients_match_the_integral_and_its_derivatives(order):
    """The gradients against the true integral's derivatives (not the computed function's)."""
    mu, sigma = zip(*CASES, strict=True)
    value, d_loc, d_scale = _computed(mu, sigma, order)
    for i, case in enumerate(CASES):
        want = _reference(*case)
        assert value[i].item() == pytest.approx(want[0], abs=VALUE_TOLERANCE), case
        assert d_loc[i].item() == pytest.approx(want[1], abs=GRADIENT_TOLERANCE, rel=1e-6), case
        assert d_scale[i].item() == pytest.approx(want[2], abs=GRADIENT_TOLERANCE, rel=1e-6), case


def _dense_grid() -> list[tuple[float, float]]:
    """σ from s/20 to 40 s (s ≈ σ2) and, per σ, μ from 0 to where P = e^{−50}, both signs,
    plus the points where 8-node Gauss–Hermite alone was worst (μ = 2.8 s, σ = s and σ = 3.3 s)."""
    points = [(2.8 * S2, S2), (0.0, 3.3 * S2), (-2.8 * S2, S2)]
    for sigma in np.geomspace(0.05, 40, 29):
        reach = math.sqrt(100 * (sigma**2 + 1))
        for i, fraction in enumerate(np.linspace(0, 1, 15)):
            points.append(((-1) ** i * fraction * reach * S2, sigma * S2))
    return points


def test_dense_grid_meets_the_stated_accuracy():
    """Values and both gradients over σ around the spike's width, where quadrature is needed."""
    grid = _dense_grid()
    mu, sigma = zip(*grid, strict=True)
    value, d_loc, d_scale = _computed(mu, sigma)
    want = torch.tensor([_reference(*point) for point in grid], dtype=torch.float64)
    worst = [
        float((value - want[:, 0]).abs().max()),
        float((d_loc - want[:, 1]).abs().max()),
        float((d_scale - want[:, 2]).abs().max()),
    ]
    assert worst[0] < VALUE_TOLERANCE and max(worst[1:]) < GRADIENT_TOLERANCE, worst


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
    from bayesrnn.inference.estimators import mixture_kl as mk

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

    from bayesrnn.inference.estimators import mixture_kl as mk

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


def test_float32_far_means_and_tiny_scales_have_finite_correct_gradients():
    """Far out the bump term is e^{−μ²/(2(σ²+s²))} ≈ 0; what is left is the wide component's
    closed form, which float32 must reproduce (no 0·inf from the series' powers of μ)."""
    points = [(m, sd) for m in (100.0, -100.0, 1e3, -1e4, 1e5) for sd in (1e-5, 1e-4)]
    points += [(-3e4, 0.018), (0.5, 1e-5), (-0.05, 1e-4), (3e-3, 1e-5), (2.8 * S2, S2)]
    mu, sigma = zip(*points, strict=True)
    value32, d_loc32, d_scale32 = _computed(mu, sigma, dtype=torch.float32)
    value64, d_loc64, d_scale64 = _computed(mu, sigma, dtype=torch.float64)
    pairs = ((value32, value64, 1e-6), (d_loc32, d_loc64, 1e-3), (d_scale32, d_scale64, 1e-3))
    for got, want, atol in pairs:  # atol: float32 rounding in gradients of size up to ~3/σ2
        assert torch.isfinite(got).all(), got
        torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=atol)
    far = slice(0, -2)  # the last two are inside the spike's reach, as a control
    loc = torch.tensor(mu[far], dtype=torch.float64)
    scale = torch.tensor(sigma[far], dtype=torch.float64)
    torch.testing.assert_close(d_loc64[far], -loc / S1**2)  # the wide component's alone
    torch.testing.assert_close(d_scale64[far], -scale / S1**2)


@pytest.mark.parametrize("spelling", ["off", "OFF", " Off ", "0", "false", "no", "set off"])
def test_compile_off_keeps_the_series_eager(monkeypatch, spelling):
    """Every spelling the package reads as "off" (bayesrnn.inference.estimators.compiled) stops the
    compiled series; under "auto" the same call compiles (the check can see a compile)."""
    from bayesrnn.inference.estimators import mixture_kl as mk
    from bayesrnn.inference.estimators.compiled import compile_mode_set

    compiled = []

    def recording_compile(fn, **options):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(mk.torch, "compile", recording_compile)
    monkeypatch.setattr(mk, "_compiled", {})
    monkeypatch.setattr(mk, "COMPILE_MIN_WEIGHTS", 8)
    loc, scale = torch.linspace(-0.1, 0.1, 16), torch.full((16,), 0.05)
    monkeypatch.setenv("BAYESRNN_COMPILE", "auto")
    with compile_mode_set("auto"):
        expected_mixture_log_density(loc, scale, PI, S1, S2)
    assert len(compiled) == 1  # the control: "auto" compiles a site of this size
    monkeypatch.setattr(mk, "_compiled", {})
    if spelling == "set off":
        with compile_mode_set("off"):
            expected_mixture_log_density(loc, scale, PI, S1, S2)
    else:
        monkeypatch.setenv("BAYESRNN_COMPILE", spelling)
        expected_mixture_log_density(loc, scale, PI, S1, S2)
    assert len(compiled) == 1
