"""The ELBO terms of the fitted-scale priors against independent computations."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from scipy.optimize import minimize_scalar
from torch.distributions import Normal, kl_divergence

from bayesrnn.inference import make_guide, window_terms
from bayesrnn.inference.guides.mean_field import MIN_SCALE, inverse_softplus
from bayesrnn.models import (
    HierarchicalGaussianPrior,
    LearnedGaussianPrior,
    SequenceRegressor,
    learned_prior_scales,
)
from bayesrnn.models.learned_priors import (
    InverseGammaScale,
    LearnedScaleNormal,
    ScaledZeroMeanNormal,
)


def tiny(prior):
    return SequenceRegressor(1, 3, prior=prior, deterministic=())


def data():
    torch.manual_seed(1)
    return torch.randn(6, 2, 1), torch.randn(6, 2, 1)


def spread_out(guide):
    """Different μ and σ per site, so each site's optimum differs."""
    torch.manual_seed(2)
    with torch.no_grad():
        for i, site in enumerate(guide.site_names):
            guide.loc[site].normal_(0.0, 0.3 * (i + 1))
            sigma = torch.empty_like(guide.loc[site]).uniform_(0.05, 0.4)
            guide.rho[site].copy_(inverse_softplus(sigma - MIN_SCALE))


def fixed_scale_kl(loc, sigma, s: float) -> float:
    """Σ KL[N(μ, σ²) ‖ N(0, s²)] by torch's own Normal–Normal formula, in float64."""
    q = Normal(loc.detach().double(), sigma.detach().double())
    return float(kl_divergence(q, Normal(0.0, torch.tensor(s, dtype=torch.float64))).sum())


def test_the_learned_scale_and_kl_are_the_numerical_optimum_over_s():
    model = tiny(LearnedGaussianPrior())
    guide = make_guide("mean_field", model)
    spread_out(guide)
    terms = window_terms(model, guide, *data())
    total = 0.0
    for site in guide.site_names:
        loc, sigma = guide.loc[site], guide.scale(site)
        best = minimize_scalar(
            lambda log_s, loc=loc, sigma=sigma: fixed_scale_kl(loc, sigma, math.exp(log_s)),
            bounds=(-8.0, 4.0),
            method="bounded",
            options={"xatol": 1e-9},
        )
        assert learned_prior_scales(model)[site] == pytest.approx(math.exp(best.x), rel=1e-4)
        total += best.fun
    assert float(terms.kl.detach()) == pytest.approx(total, rel=1e-5)


def test_the_learned_kl_of_a_collapsed_posterior_is_zero_not_rounding_noise():
    """q = the prior on 3M float32 weights: the KL is 0 exactly and ≥ 0 once σ spreads."""
    n = 3_000_000
    log_scale = torch.zeros(())
    sigma = torch.full((n,), 0.0731)
    collapsed = kl_divergence(Normal(torch.zeros(n), sigma), LearnedScaleNormal(log_scale, (n,)))
    assert collapsed.dtype == torch.float32
    assert abs(float(collapsed)) < 1e-3  # float32 sums left 2.5 nats here
    torch.manual_seed(0)
    spread = sigma * torch.empty(n).uniform_(0.999, 1.001)
    kl = float(kl_divergence(Normal(torch.zeros(n), spread), LearnedScaleNormal(log_scale, (n,))))
    exact = 0.5 * n * math.log(float(spread.double().square().mean())) - float(
        spread.double().log().sum()
    )
    assert exact > 0
    assert kl == pytest.approx(exact, rel=1e-4)


def test_the_learned_kl_gradient_is_the_fixed_scale_gradient_at_the_optimum():
    """Envelope theorem: s* moving with q adds nothing to the gradient."""
    model = tiny(LearnedGaussianPrior())
    guide = make_guide("mean_field", model)
    spread_out(guide)
    site = "rnn.weight_hh_l0"
    p = LearnedScaleNormal(torch.tensor(0.0), guide.loc[site].shape)
    kl_divergence(guide.distribution(site).base_dist, p).backward()
    learned = (guide.loc[site].grad.clone(), guide.rho[site].grad.clone())
    s_star = float(p.log_scale.exp())
    guide.zero_grad()
    q = Normal(guide.loc[site], guide.scale(site))
    kl_divergence(q, Normal(0.0, torch.tensor(s_star))).sum().backward()
    assert torch.allclose(learned[0], guide.loc[site].grad, atol=1e-6)
    assert torch.allclose(learned[1], guide.rho[site].grad, atol=1e-6)


def test_the_sharpened_guide_gets_the_learned_kl_of_its_q_phi():
    model = tiny(LearnedGaussianPrior())
    guide = make_guide("sharpened", model)
    x, y = data()
    terms = window_terms(model, guide, x, y)
    closed = sum(
        fixed_scale_kl(guide.loc[s], guide.scale(s), learned_prior_scales(model)[s])
        for s in guide.site_names
    )
    kl = float(terms.kl.detach())
    assert math.isfinite(kl) and kl > closed  # + ‖η⊙g‖²/2σ0²
    for s in guide.site_names:
        energy = guide.loc[s].square().mean() + guide.scale(s).square().mean()
        assert learned_prior_scales(model)[s] == pytest.approx(
            float(energy.detach().sqrt()), rel=1e-5
        )


def test_autonormal_learns_the_scale_by_gradient_under_pyros_own_elbo():
    model = tiny(LearnedGaussianPrior())
    guide = AutoNormal(model)
    loss = Trace_ELBO().differentiable_loss(model, guide, *data())
    loss.backward()
    grad = model.get_parameter("rnn.weight_hh_l0_prior_log_scale").grad
    assert grad is not None and float(grad) != 0.0


def kl_lognormal_inverse_gamma_mc(m, tau, a, b, draws=400_000):
    """E_q[log q(s) − log p(s)] with p from torch's InverseGamma over s² (Jacobian 2s)."""
    torch.manual_seed(3)
    q = torch.distributions.LogNormal(torch.tensor(m, dtype=torch.float64), tau)
    s = q.sample((draws,))
    variance = torch.distributions.InverseGamma(
        torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    )
    values = q.log_prob(s) - (variance.log_prob(s.square()) + torch.log(2 * s))
    return float(values.mean()), float(values.std() / math.sqrt(draws))


@pytest.mark.parametrize(("m", "tau", "a", "b"), [(0.0, 0.1, 1.0, 1.0), (-1.2, 0.4, 2.5, 0.3)])
def test_the_scale_kl_matches_monte_carlo(m, tau, a, b):
    q = pyro.distributions.LogNormal(torch.tensor(m), torch.tensor(tau))
    p = InverseGammaScale(torch.tensor(a), torch.tensor(b))
    mean, error = kl_lognormal_inverse_gamma_mc(m, tau, a, b)
    assert float(kl_divergence(q, p)) == pytest.approx(mean, abs=5 * error + 1e-4)


def test_the_weight_term_averaged_over_q_s_is_its_closed_form():
    """E_q(s) KL[q(w) ‖ N(0, s²)] = n·m + ½e^(−2m+2τ²)·Σ(μ² + σ²) − Σ log σ − n/2."""
    model = tiny(HierarchicalGaussianPrior())
    guide = make_guide("mean_field", model)
    spread_out(guide)
    weight, scale_site = "rnn.weight_hh_l0", "rnn.weight_hh_l0_prior_scale"
    with torch.no_grad():
        guide.scale_loc[scale_site].fill_(-0.7)
        guide.scale_rho[scale_site].fill_(float(inverse_softplus(torch.tensor(0.3 - MIN_SCALE))))
    m, tau = -0.7, 0.3
    loc, sigma = guide.loc[weight].detach(), guide.scale(weight).detach()
    n = loc.numel()
    closed = (
        n * m
        + 0.5 * math.exp(-2 * m + 2 * tau**2) * float((loc.square() + sigma.square()).sum())
        - float(sigma.log().sum())
        - n / 2
    )
    torch.manual_seed(4)
    q_w = guide.distribution(weight).base_dist
    with torch.no_grad():
        draws = guide.scale_distribution(scale_site).sample((5000,))
        values = torch.stack(
            [kl_divergence(q_w, ScaledZeroMeanNormal(s, loc.shape)) for s in draws]
        )
    error = float(values.std()) / math.sqrt(len(values))
    assert float(values.mean()) == pytest.approx(closed, abs=4 * error)


def test_the_hierarchical_window_kl_is_the_sum_of_the_closed_forms():
    """With τ → 0 the drawn s is e^m: the window's KL is Σ KL_w(e^m) + Σ KL[q(s) ‖ p(s)]."""
    a, b = 1.5, 0.8
    model = tiny(HierarchicalGaussianPrior(a, b))
    guide = make_guide("mean_field", model)
    spread_out(guide)
    tiny_tau = float(inverse_softplus(torch.tensor(1e-4)))
    expected = 0.0
    with torch.no_grad():
        for i, (scale_site, weight) in enumerate(guide.scale_sites.items()):
            m = -1.0 + 0.3 * i
            guide.scale_loc[scale_site].fill_(m)
            guide.scale_rho[scale_site].fill_(tiny_tau)
            tau = float(guide.scale_distribution(scale_site).scale)
            expected += fixed_scale_kl(guide.loc[weight], guide.scale(weight), math.exp(m))
            expected += (
                2 * a * m
                + b * math.exp(2 * tau**2 - 2 * m)
                - math.log(tau)
                - 0.5
                - 0.5 * math.log(2 * math.pi)
                - a * math.log(b)
                + math.lgamma(a)
                - math.log(2)
            )
    terms = window_terms(model, guide, *data())
    assert float(terms.kl.detach()) == pytest.approx(expected, rel=1e-3)


def test_the_hierarchical_scales_get_gradients_and_autonormal_covers_them():
    model = tiny(HierarchicalGaussianPrior())
    guide = make_guide("mean_field", model)
    window_terms(model, guide, *data()).loss.backward()
    for site in guide.scale_sites:
        assert guide.scale_loc[site].grad is not None and guide.scale_rho[site].grad is not None
    auto = AutoNormal(model)
    terms = window_terms(model, auto, *data())
    assert math.isfinite(float(terms.kl.detach()))
    trace = poutine.trace(auto).get_trace(*data())
    assert float(trace.nodes["rnn.weight_hh_l0_prior_scale"]["value"].detach()) > 0


@pytest.mark.parametrize("prior", [LearnedGaussianPrior(), HierarchicalGaussianPrior()])
def test_gal_refuses_fitted_scales(prior):
    with pytest.raises(ValueError, match="fixed prior scale"):
        make_guide("gal", tiny(prior), hidden=0.2)
