"""The ArviZ export of NUTS draws: chains kept, sampler statistics, prior groups, and every
ArviZ diagnostic and plot NUTS runs are read with; predictive r-hat against hand-made chains."""

import math

import numpy as np
import pyro
import pytest
import torch
import xarray as xr

from bayesrnn.evaluation.arviz_forecast import export_forecaster
from bayesrnn.evaluation.arviz_mcmc import (
    RHAT_LIMIT,
    PriorDraws,
    mcmc_datatree,
    predictive_convergence,
    rhat_shares,
    split_chains,
)
from bayesrnn.inference.guides import SampledPosterior
from bayesrnn.inference.mcmc import STAT_NAMES, run_nuts
from bayesrnn.models import GaussianPrior, SequenceRegressor

CHAINS, DRAWS, START = 2, 8, 30


@pytest.fixture(scope="module")
def exported() -> tuple[xr.DataTree, np.ndarray]:
    pyro.set_rng_seed(0)
    t = torch.arange(40.0)
    series = torch.sin(t / 3).unsqueeze(1)  # (N, 1)
    model = SequenceRegressor(1, 2, prior=GaussianPrior(1.0))
    train = series[:START]
    result = run_nuts(
        model,
        (train[:-1].unsqueeze(1), train[1:].unsqueeze(1)),
        num_chains=CHAINS,
        num_samples=DRAWS,
        warmup_steps=6,
        max_tree_depth=4,
        progress=False,
    )
    guide = SampledPosterior(model, num_chains=CHAINS, num_samples=DRAWS)
    guide.store(result.samples, result.stats)

    def export(g, n):
        return export_forecaster(model, g, series, START, num_samples=n, split="test")

    tree = mcmc_datatree(export, guide, prior=PriorDraws(model), prior_samples=5)
    return tree, guide.draws("decoder.bias").numpy()


@pytest.fixture(scope="module")
def tree(exported) -> xr.DataTree:
    return exported[0]


def test_groups_keep_the_chains(tree):
    assert {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "observed_data",
        "sample_stats",
        "prior",
        "prior_predictive",
    } <= set(tree.children)
    for group in ("posterior", "posterior_predictive", "log_likelihood", "sample_stats"):
        sizes = tree[group].sizes
        assert (sizes["chain"], sizes["draw"]) == (CHAINS, DRAWS), group
    assert tree["log_likelihood"]["obs"].dims == ("chain", "draw", "step")  # one target
    assert tree["prior"].sizes["draw"] == 5
    assert set(tree["posterior"].data_vars) == set(tree["prior"].data_vars)
    assert set(tree["sample_stats"].data_vars) == set(STAT_NAMES)
    assert tree["sample_stats"]["diverging"].dtype == bool


def test_draws_are_the_stored_draws_in_chain_order(exported):
    tree, stored = exported
    # the decoder bias of chain c, draw n in the export equals the sampler's draw (c, n)
    values = tree["posterior"]["decoder__bias"].values
    assert values.shape == (CHAINS, DRAWS, 2)
    np.testing.assert_array_equal(values, stored)
    assert not np.allclose(values[0], values[1])  # chains differ


def test_arviz_stats_diagnostics_run_and_are_finite(tree):
    azs = pytest.importorskip("arviz_stats")
    for fn in (azs.rhat, azs.ess, azs.mcse):
        result = fn(tree)
        for var in result.data_vars.values():
            assert np.isfinite(var.values).all(), fn.__name__
    bfmi = azs.bfmi(tree)
    values = bfmi["energy"].values if hasattr(bfmi, "data_vars") else np.asarray(bfmi)
    assert values.shape == (CHAINS,) and np.isfinite(values).all() and (values > 0).all()


@pytest.mark.parametrize("plot", ["plot_trace", "plot_rank", "plot_energy", "plot_prior_posterior"])
def test_arviz_plots_draw(tree, plot):
    azp = pytest.importorskip("arviz_plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    collection = getattr(azp, plot)(tree, backend="matplotlib")
    assert collection is not None
    plt.close("all")


def test_the_tree_round_trips_through_netcdf(tree, tmp_path):
    path = tmp_path / "posterior.nc"
    tree.to_netcdf(path, engine="h5netcdf")
    back = xr.open_datatree(path, engine="h5netcdf")
    try:
        assert back["sample_stats"]["tree_depth"].shape == (CHAINS, DRAWS)
        np.testing.assert_allclose(
            back["sample_stats"]["lp"].values, tree["sample_stats"]["lp"].values
        )
    finally:
        back.close()


def test_split_chains_reshapes_chain_major():
    values = np.arange(12.0).reshape(1, 6, 2)
    dataset = xr.Dataset(
        {"x": (("chain", "draw", "k"), values)},
        coords={"chain": [0], "draw": np.arange(6), "k": ["a", "b"]},
    )
    out = split_chains(dataset, 3)
    assert out["x"].shape == (3, 2, 2)
    np.testing.assert_array_equal(out["x"].values[1, 0], [4.0, 5.0])  # draw 2 of the flat run
    assert list(out["k"].values) == ["a", "b"]
    with pytest.raises(ValueError, match="cannot split"):
        split_chains(dataset, 4)


def test_predictive_rhat_flags_chains_that_disagree():
    rng = np.random.default_rng(0)
    agree = rng.normal(size=(4, 500, 3))
    shifted = agree + np.array([0.0, 0.0, 0.0, 3.0])[:, None, None]  # chain 3 elsewhere
    good = predictive_convergence({"log_likelihood": agree}, divergences=0, draws=2000)
    bad = predictive_convergence({"log_likelihood": shifted}, divergences=0, draws=2000)
    assert good["rhat_max_predictive"] < RHAT_LIMIT and good["warning"] is None
    assert good["ess_min_predictive"] > 1000  # independent draws: ESS near 2,000
    assert bad["rhat_max_predictive"] > 1.2 and "r-hat" in bad["warning"]


def test_rhat_shares_count_observations_at_or_below_each_threshold():
    rhats = np.array([1.0, 1.02, 1.07, 1.3, np.nan])  # NaN: a constant quantity, left out
    assert rhat_shares(rhats) == {"1.01": 0.25, "1.05": 0.5, "1.1": 0.75}
    assert rhat_shares(np.array([np.nan])) == {"1.01": None, "1.05": None, "1.1": None}


def test_the_shares_say_how_many_predictions_the_chains_disagree_on():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 500, 4))
    values[3, :, 0] += 3.0  # one chain elsewhere on one of four observations
    result = predictive_convergence({"log_likelihood": values}, divergences=0, draws=2000)
    assert result["rhat_share_predictive"] == {"1.01": 0.75, "1.05": 0.75, "1.1": 0.75}
    quantity = result["predictive_quantities"]["log_likelihood"]
    assert quantity["rhat_share"] == result["rhat_share_predictive"]
    assert quantity["rhat_max"] == result["rhat_max_predictive"] > 1.2
    assert 1.0 <= result["rhat_median_predictive"] < RHAT_LIMIT
    assert "on 25% of the predictions" in result["warning"]


def test_divergences_alone_raise_the_warning_and_constants_are_skipped():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(2, 200, 2))
    values[..., 1] = 7.0  # constant: r-hat undefined, left out
    result = predictive_convergence({"mean": values}, divergences=3, draws=400)
    assert math.isfinite(result["rhat_max_predictive"])
    assert "3 divergent" in result["warning"]
