"""NUTS on bayesrnn models: a closed-form posterior recovered, the recorded sample statistics
checked against the model's own density, the size limit, and the replaying guide.

The conjugate case: a Bayesian linear read-out of a *fixed* RNN. The hidden states h_t of a
torch LSTM with fixed weights are features; the read-out w (H weights and a bias) has prior
N(0, s²I) and y_t ~ N(w·[h_t, 1], σ²), so the posterior is Gaussian with precision
Λ = ΦᵀΦ/σ² + I/s² and mean Λ⁻¹Φᵀy/σ² (Φ the stacked features).
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

from bayesrnn.inference.guides import SampledPosterior, make_guide
from bayesrnn.inference.mcmc import (
    STAT_NAMES,
    check_nuts_size,
    nuts_weight_count,
    run_nuts,
)
from bayesrnn.models import GaussianPrior, SequenceRegressor, bayesianize
from bayesrnn.models.bayesian import weight_sites

NOISE, PRIOR, HIDDEN = 0.3, 1.0, 3


class FixedRNNReadout(PyroModule):
    """y_t ~ N(readout(h_t), σ²), h_t from an LSTM whose weights are fixed (not sites)."""

    def __init__(self) -> None:
        super().__init__()
        self.readout = nn.Linear(HIDDEN, 1)
        bayesianize(self, GaussianPrior(PRIOR))

    def forward(self, features, targets):
        mean = self.readout(features).squeeze(-1)
        with pyro.plate("steps", features.shape[0], dim=-1):
            pyro.sample("obs", dist.Normal(mean, NOISE), obs=targets)
        return mean


def _features(steps: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    lstm = nn.LSTM(1, HIDDEN)
    inputs = torch.randn(steps, 1, 1, generator=generator)
    with torch.no_grad():
        h = lstm(inputs)[0][:, 0]  # (steps, H), fixed
    h = (h - h.mean(0)) / h.std(0)  # standardised: a well-conditioned posterior, short trees
    w = torch.tensor([1.0, -2.0, 0.5])
    y = h @ w + 0.2 + NOISE * torch.randn(steps, generator=generator)
    return h, y


def _exact_posterior(h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    phi = torch.cat([h, torch.ones(h.shape[0], 1)], 1).double()
    precision = phi.T @ phi / NOISE**2 + torch.eye(HIDDEN + 1, dtype=torch.float64) / PRIOR**2
    covariance = torch.linalg.inv(precision)
    return covariance @ phi.T @ y.double() / NOISE**2, covariance


@pytest.fixture(scope="module")
def conjugate_run():
    h, y = _features()
    pyro.set_rng_seed(0)
    model = FixedRNNReadout()
    result = run_nuts(model, (h, y), num_chains=2, num_samples=150, warmup_steps=60, progress=False)
    return model, h, y, result


def _flat_draws(result) -> torch.Tensor:
    weight = result.samples["readout.weight"].reshape(-1, HIDDEN)
    bias = result.samples["readout.bias"].reshape(-1, 1)
    return torch.cat([weight, bias], 1).double()


def test_nuts_recovers_the_conjugate_posterior_mean_and_variance(conjugate_run):
    _, h, y, result = conjugate_run
    exact_mean, exact_cov = _exact_posterior(h, y)
    draws = _flat_draws(result)
    sd = exact_cov.diagonal().sqrt()
    # NUTS draws of a Gaussian are near independent; allow an ESS of a third of the 300 draws
    mc_error = sd / math.sqrt(draws.shape[0] / 3)
    assert torch.all((draws.mean(0) - exact_mean).abs() < 4 * mc_error), (
        draws.mean(0),
        exact_mean,
    )
    ratio = draws.var(0) / exact_cov.diagonal()
    assert torch.all((ratio > 0.7) & (ratio < 1.4)), ratio
    assert result.samples["readout.weight"].shape == (2, 150, 1, HIDDEN)


def test_recorded_lp_is_the_log_joint_of_each_draw(conjugate_run):
    _, h, y, result = conjugate_run
    draws = _flat_draws(result)[:5]  # chain 0, draws 0..4
    for n, theta in enumerate(draws):
        w, b = theta[:HIDDEN], theta[HIDDEN]
        mean = h.double() @ w + b
        log_lik = torch.distributions.Normal(mean, NOISE).log_prob(y.double()).sum()
        log_prior = torch.distributions.Normal(0.0, PRIOR).log_prob(theta).sum()
        assert float(result.stats["lp"][0, n]) == pytest.approx(
            float(log_lik + log_prior), abs=1e-3
        )


def test_recorded_statistics_have_a_chain_dim_and_sensible_values(conjugate_run):
    *_, result = conjugate_run
    assert set(result.stats) == set(STAT_NAMES)
    for values in result.stats.values():
        assert values.shape == (2, 150) and torch.isfinite(values).all()
    depth, accept = result.stats["tree_depth"], result.stats["acceptance_rate"]
    assert depth.min() >= 1 and depth.max() <= 10 and depth.eq(depth.round()).all()
    assert accept.min() >= 0 and accept.max() <= 1 and 0.6 < float(accept.mean()) < 1.0
    assert set(result.stats["diverging"].unique().tolist()) <= {0.0, 1.0}
    step = result.stats["step_size"]
    assert (step == step[:, :1]).all()  # adapted in warm-up, fixed afterwards
    # energy of iteration n = kinetic + potential energy of the state it starts from, draw n−1
    # (−lp), and the kinetic energy is non-negative
    energy, lp = result.stats["energy"], result.stats["lp"]
    assert (energy[:, 1:] >= -lp[:, :-1] - 1e-6).all()
    assert (energy[:, 1:] < -lp[:, :-1] + 50).all()  # a kinetic energy of ~H+1 = 4 dims


def test_models_beyond_the_limit_are_refused_with_their_weight_count():
    model = SequenceRegressor(1, 4, prior=GaussianPrior(1.0))
    assert nuts_weight_count(model) == 4 * 4 * 1 + 4 * 4 * 4 + 2 * 16 + 2 * 4 + 2
    assert check_nuts_size(model) == 122
    with pytest.raises(ValueError, match="has 122 weights; NUTS is offered up to 100"):
        check_nuts_size(model, limit=100)


def test_sampled_posterior_replays_the_stored_draws():
    model = SequenceRegressor(1, 2, prior=GaussianPrior(1.0))
    guide = make_guide("nuts", model, num_chains=2, num_samples=3)
    assert isinstance(guide, SampledPosterior)
    with pytest.raises(RuntimeError, match="no draws"):
        guide()
    samples = {site: torch.randn(2, 3, *v.shape) for site, v in weight_sites(model).items()}
    stats = {name: torch.arange(6.0).reshape(2, 3) for name in STAT_NAMES}
    guide.store(samples, stats)
    site = "decoder.bias"
    with guide.replay():
        seen = [guide()[site] for _ in range(6)]
    expected = [samples[site][c, n] for c in range(2) for n in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))
    stored = samples[site].reshape(6, -1)
    for _ in range(10):  # outside replay: one of the stored draws, whole
        draw = guide()[site]
        assert any(torch.equal(draw, row) for row in stored)
    assert torch.allclose(guide.median()[site], stored.mean(0))
    with pytest.raises(ValueError, match="expected"):
        guide.store({**samples, site: torch.zeros(1, 3, 2)}, stats)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [({"num_chains": 0}, "num_chains"), ({"num_samples": True}, "num_samples"),
     ({"thin": 2}, "unknown option")],
)  # fmt: skip
def test_sampled_posterior_rejects_bad_options(options, fragment):
    model = SequenceRegressor(1, 2, prior=GaussianPrior(1.0))
    with pytest.raises(ValueError, match=fragment):
        make_guide("nuts", model, **options)


RHO = 0.998  # a narrow ridge: a diagonal metric needs ~sqrt((1+ρ)/(1-ρ)) ≈ 32 steps across


def _ridge_model():
    covariance = torch.tensor([[1.0, RHO], [RHO, 1.0]])
    pyro.sample("x", dist.MultivariateNormal(torch.zeros(2), covariance))


def test_a_dense_mass_matrix_learns_the_correlation_and_shortens_the_trees():
    pyro.set_rng_seed(1)
    result = run_nuts(
        _ridge_model,
        (),
        num_chains=1,
        num_samples=50,
        warmup_steps=100,
        full_mass=True,
        initial_params={"x": torch.zeros(1, 2)},
        progress=False,
    )
    draws = result.samples["x"].reshape(-1, 2).double()
    assert 0.99 < float(torch.corrcoef(draws.T)[0, 1]) < 0.9999
    # whitened by the dense metric the target is round: trees of one or two doublings. A
    # diagonal metric cannot undo the correlation (measured: mean depth 4.5 with full_mass off,
    # at 150 warm-up steps + 100 draws)
    depth = float(result.stats["tree_depth"].mean())
    assert depth < 2.8, depth
