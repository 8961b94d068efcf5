"""ArviZ export of a forecaster: groups, densities against scipy, LOO-PIT, netCDF round trip."""

import math

import arviz_stats
import numpy as np
import pytest
import scipy.stats
import torch
import xarray as xr

from bayesrnn.evaluation.arviz_forecast import export_forecaster
from bayesrnn.evaluation.forecast import predict_series
from bayesrnn.inference import TBPTTTrainer, TrainerConfig, make_guide
from bayesrnn.models import GaussianPrior, SequenceRegressor

DRAWS = 30


def _series(n=160):
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(n, dtype=torch.float32)
    y = torch.sin(2 * math.pi * t / 20) + 0.2 * torch.randn(n, generator=generator)
    return torch.stack([y, torch.cos(2 * math.pi * t / 20)], -1)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    series = _series()
    model = SequenceRegressor(2, 8, prior=GaussianPrior(1.0))
    guide = make_guide("mean_field", model, init_scale=0.01)
    history = TBPTTTrainer(
        model,
        guide,
        series[:120],
        None,
        TrainerConfig(batch_size=4, bptt=10, epochs=3, lr=0.01, optimizer="adam", progress=False),
    ).fit()
    return model, guide, series, history


def test_groups_shapes_and_loo_pit(trained, tmp_path):
    model, guide, series, history = trained
    tree = export_forecaster(model, guide, series, 120, DRAWS, target_names=["y"], history=history)
    groups = set(tree.children)
    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data"} <= groups
    assert {"sample_stats", "optimization"} <= groups
    assert tree.posterior_predictive["obs"].shape == (1, DRAWS, 40)  # one target: no target dim
    assert tree.log_likelihood["obs"].dims == ("chain", "draw", "step")
    np.testing.assert_array_equal(tree.observed_data["obs"].coords["step"], np.arange(120, 160))
    np.testing.assert_allclose(tree.observed_data["obs"].values, series[120:, 0].numpy())
    assert set(tree.posterior.data_vars) == {"rnn__bias_ih_l0", "rnn__bias_hh_l0", "decoder__bias"}
    assert tree.posterior["rnn__bias_ih_l0"].dims == ("chain", "draw", "gate", "unit")
    assert list(tree.posterior["gate"].values) == ["i", "f", "g", "o"]
    # decoder = Linear(hidden, 2·D): the D locations, then the D scales
    assert list(tree.posterior["decoder__bias"].coords["output"].values) == ["loc_y", "scale_y"]
    stats = tree.sample_stats
    assert set(stats.data_vars) == {"log_q", "log_prior", "kl"}  # no log_p (see arviz_export)
    np.testing.assert_allclose(stats["kl"], stats["log_q"] - stats["log_prior"])
    assert np.isfinite(tree.posterior_predictive["obs"]).all()
    pit = arviz_stats.loo_pit(tree)
    values = np.asarray(pit["obs"])
    assert values.shape == (40,)
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    path = tmp_path / "forecast.nc"
    tree.to_netcdf(path, engine="h5netcdf")
    back = xr.open_datatree(path, engine="h5netcdf")
    np.testing.assert_allclose(back.log_likelihood["obs"].values, tree.log_likelihood["obs"])
    assert back.attrs["model"] == "SequenceRegressor" and back.attrs["start"] == 120


def test_densities_and_predictive_samples_follow_the_forecast(trained):
    """With q collapsed to its mean (σ = 2e-5) every draw is the posterior-mean network: its
    log-likelihood is scipy's normal log-density at the predicted (loc, scale), and its
    predictive samples standardised by them are N(0, 1)."""
    model, _, series, _ = trained
    guide = make_guide("mean_field", model, init_scale=2e-5)
    mean = predict_series(model, guide, series, 100)  # (1, 60, 1)
    loc, scale = mean.loc[0, :, 0].double().numpy(), mean.scale[0, :, 0].double().numpy()
    tree = export_forecaster(model, guide, series, 100, DRAWS)
    expected = scipy.stats.norm.logpdf(series[100:, 0].double().numpy(), loc, scale)
    log_lik = tree.log_likelihood["obs"].values[0]
    np.testing.assert_allclose(log_lik, np.broadcast_to(expected, log_lik.shape), atol=1e-3)
    z = (tree.posterior_predictive["obs"].values[0] - loc) / scale
    assert scipy.stats.kstest(z.ravel(), "norm").pvalue > 0.001


def test_gal_and_student_t_export_without_densities(tmp_path):
    torch.manual_seed(1)
    series = _series(60)
    model = SequenceRegressor(2, 6, likelihood="student_t")
    guide = make_guide("gal", model, input=0.2, hidden=0.2, output=0.2)
    tree = export_forecaster(model, guide, series, 40, 5)
    assert "sample_stats" not in tree.children  # Bernoulli mixture: no density
    pp = tree.posterior_predictive["obs"].values
    assert pp.shape == (1, 5, 20)
    assert not np.allclose(pp[0, 0], pp[0, 1])
    assert tree.attrs["likelihood"] == "student_t"
    assert tree.attrs["df"] == pytest.approx([10.0])
    tree.to_netcdf(tmp_path / "gal.nc", engine="h5netcdf")


def test_bad_input_is_a_value_error(trained):
    model, guide, series, _ = trained
    with pytest.raises(ValueError, match="num_samples"):
        export_forecaster(model, guide, series, 120, 0)
    with pytest.raises(ValueError, match="start"):
        export_forecaster(model, guide, series, 160, 3)
    with pytest.raises(ValueError, match="series"):
        export_forecaster(model, guide, series[:, :1], 100, 3)
    with pytest.raises(ValueError, match="target_names"):
        export_forecaster(model, guide, series, 100, 3, target_names=["a", "b"])
    with pytest.raises(ValueError, match="sites"):
        export_forecaster(model, guide, series, 100, 3, sites=["rnn.nothing"])
