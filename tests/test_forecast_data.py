"""Forecasting data: target transforms and their Jacobian, covariates known in advance, a time
column, several targets, windows fitted to a short series, and the export in data units."""

import json
import math

import numpy as np
import pytest
import scipy.stats
import torch

from bayesrnn.app.config_files import resolve_config
from bayesrnn.app.setup import fit_windows, load_data
from bayesrnn.data import DataError
from bayesrnn.data.series import load_csv_series, split_series
from bayesrnn.data.transforms import SeriesTransform, TargetUnits
from bayesrnn.evaluation.forecast import forecast_metrics, mixture_cdf
from bayesrnn.evaluation.forecast_units import data_unit_log_density, data_unit_metrics
from bayesrnn.models.regressor import Forecast
from tests.cli_helpers import cli

pytest.importorskip("pandas", reason="reading CSV series needs pandas (the timeseries extra)")


def _positive(n: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(3.0, 2.0, n) + 0.5


# --- transforms ----------------------------------------------------------------------------------


def test_box_cox_fits_lambda_on_the_train_split_as_scipy_does():
    raw = _positive()
    corpus = split_series(raw, ["y"], transform="boxcox")
    train = raw[: corpus.sizes()["train"]]
    lam = scipy.stats.boxcox_normmax(train, method="mle")
    assert corpus.transform.lmbda == pytest.approx((lam,), rel=1e-9)
    g = scipy.stats.boxcox(raw, lam)  # scipy's transform of every row with the train λ
    z = (g - g[: len(train)].mean()) / g[: len(train)].std()
    np.testing.assert_allclose(corpus.full()[:, 0].numpy(), z, atol=1e-5)
    np.testing.assert_allclose(corpus.unscale(corpus.full()[:, 0]).numpy(), raw, rtol=1e-5)


@pytest.mark.parametrize(("kind", "g"), [("log", np.log), ("sqrt", np.sqrt)])
def test_log_and_sqrt_scale_the_transformed_train_values(kind, g):
    raw = _positive()
    corpus = split_series(raw, ["y"], transform=kind)
    n = corpus.sizes()["train"]
    assert float(corpus.mean[0]) == pytest.approx(g(raw[:n]).mean())
    assert float(corpus.scale[0]) == pytest.approx(g(raw[:n]).std())
    np.testing.assert_allclose(corpus.unscale(corpus.full()[:, 0]).numpy(), raw, rtol=1e-5)
    with pytest.raises(ValueError, match="no single value in the data's units"):
        corpus.unscale_spread(1.0, 0)


def _units(kind: str) -> TargetUnits:
    transform = SeriesTransform(kind, (0.3,) if kind == "boxcox" else None)
    return TargetUnits(transform, torch.tensor([1.2]).double(), torch.tensor([0.7]).double())


@pytest.mark.parametrize("kind", ["none", "log", "sqrt", "boxcox"])
@pytest.mark.parametrize("likelihood", ["gaussian", "student_t"])
def test_the_data_unit_density_is_the_derivative_of_the_data_unit_cdf(kind, likelihood):
    """log p(x) with the Jacobian against a central difference of the mixture CDF at z(x)."""
    units = _units(kind)
    draws = Forecast(
        torch.tensor([[[0.1]], [[-0.4]], [[0.3]]], dtype=torch.float64).expand(3, 5, 1),
        torch.tensor([[[0.9]], [[0.5]], [[1.3]]], dtype=torch.float64).expand(3, 5, 1),
        None if likelihood == "gaussian" else torch.full((3, 5, 1), 4.0, dtype=torch.float64),
    )
    x = units.to_data(torch.linspace(-1.5, 1.5, 5, dtype=torch.float64).unsqueeze(1))
    h = 1e-6 * x
    numeric = (
        mixture_cdf(draws, units.to_model(x + h)) - mixture_cdf(draws, units.to_model(x - h))
    ) / (2 * h)
    analytic = data_unit_log_density(draws, x, units)
    np.testing.assert_allclose(analytic.numpy(), numeric.log().numpy(), atol=1e-5)


def test_without_a_transform_the_data_unit_scores_are_the_linear_ones():
    units = TargetUnits(SeriesTransform(), torch.tensor([10.0]), torch.tensor([3.0]))
    torch.manual_seed(0)
    draws = Forecast(torch.randn(4, 30, 1), 0.5 + torch.rand(4, 30, 1))
    z = torch.randn(30, 1)
    x = z * 3.0 + 10.0
    linear = forecast_metrics(Forecast(draws.loc * 3 + 10, draws.scale * 3), x)
    mapped = data_unit_metrics(draws, x.double(), units, samples=20000)
    for key in ("nll", "mae", "coverage_50", "coverage_90", "width_50", "width_90"):
        assert mapped[key] == pytest.approx(linear[key], rel=1e-4), key
    assert mapped["crps"] == pytest.approx(linear["crps"], rel=0.03)  # sampled against exact
    assert mapped["rmse"] == pytest.approx(linear["rmse"], rel=0.03)


def test_pit_and_coverage_survive_the_transform_and_the_nll_gains_the_jacobian():
    units = _units("log")
    torch.manual_seed(1)
    draws = Forecast(torch.randn(3, 40, 1).double(), (0.5 + torch.rand(3, 40, 1)).double())
    x = units.to_data(torch.randn(40, 1).double())
    model_space = forecast_metrics(draws, units.to_model(x))
    data_space = data_unit_metrics(draws, x, units)
    torch.testing.assert_close(data_space["pit"], model_space["pit"])
    assert data_space["coverage_90"] == model_space["coverage_90"]
    # −log p(x) = −log p(z) − log dz/dx, with dz/dx = 1/(0.7·x): + mean log x + log 0.7
    expected = model_space["nll"] + float(x.log().mean()) + math.log(0.7)
    assert data_space["nll"] == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize(
    ("kind", "values", "fragment"),
    [
        ("log", [3.0, 2.0, 0.0, 4.0] * 5, "column 'y' has 5 value(s) ≤ 0 (first 0 at row 2)"),
        ("boxcox", [3.0, -1.0] * 10, "has 10 value(s) ≤ 0 (first -1 at row 1)"),
        ("sqrt", [3.0, 0.0, -2.0] * 7, "has 7 value(s) below 0 (first -2 at row 2)"),
    ],
)
def test_values_outside_the_transforms_domain_are_a_one_line_data_error(kind, values, fragment):
    with pytest.raises(DataError) as caught:
        split_series(values, ["y"], transform=kind)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert f"data.transform={kind}" in str(caught.value)


def test_sqrt_accepts_zeros():
    corpus = split_series([0.0, 1.0, 4.0, 9.0] * 5, ["y"], transform="sqrt")
    assert corpus.transform.kind == "sqrt"


# --- covariates known in advance, times, several targets ---------------------------------------


def _csv(tmp_path, rows: int = 100):
    import pandas

    t = np.arange(rows)
    promo = (t % 5 == 0).astype(float)
    price = 10.0 + (t % 3)
    sales = 20.0 + 15.0 * promo + np.sin(t / 3.0) + 0.1 * t
    frame = pandas.DataFrame(
        {
            "date": pandas.date_range("2024-01-01", periods=rows).strftime("%Y-%m-%d"),
            "sales": sales,
            "price": price,
            "promo": promo,
        }
    )
    path = tmp_path / "sales.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_a_covariate_known_in_advance_enters_at_the_row_it_applies_to(tmp_path):
    path, frame = _csv(tmp_path, 40)
    corpus = load_csv_series(
        path, "sales", ["price"], future_covariates=["promo"], time="date", transform="log"
    )
    assert corpus.columns == ("sales", "price", "promo") and corpus.future_columns == ("promo",)
    raw = np.column_stack([corpus.unscale(corpus.full()[:, c], c).numpy() for c in range(3)])
    np.testing.assert_allclose(raw[:, 0], frame["sales"], rtol=1e-5)
    np.testing.assert_allclose(raw[:, 1], frame["price"], rtol=1e-5)  # lagged: row t's own
    np.testing.assert_allclose(raw[:-1, 2], frame["promo"][1:], atol=1e-6)  # row t + 1's value
    assert raw[-1, 2] == pytest.approx(frame["promo"].iloc[-1], abs=1e-6)  # last: its own
    assert corpus.full_times()[0] == np.datetime64("2024-01-01")


def test_several_targets_are_comma_separated(tmp_path):
    path, _ = _csv(tmp_path, 40)
    config = resolve_config(
        None,
        None,
        [f"data.source={path}", "data.target=sales,price", "data.future_covariates=promo"],
        {"task": "forecast"},
    )
    corpus = load_data(config)
    assert corpus.targets == 2 and corpus.target_columns == ("sales", "price")


# --- windows fitted to a short series -----------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "batch", "bptt"),
    [(300, 4, 20), (100, 3, 20), (40, 1, 20), (14, 1, 8)],  # train: 210, 70, 28, 9 rows
)
def test_the_forecast_preset_fits_batch_and_window_to_the_train_split(rows, batch, bptt):
    corpus = split_series(np.arange(float(rows)), ["y"])
    config = resolve_config(None, None, [], {"task": "forecast"})
    fitted = fit_windows(config, corpus).trainer
    assert (fitted.batch_size, fitted.bptt) == (batch, bptt)
    train = corpus.sizes()["train"]
    assert train // fitted.batch_size >= fitted.bptt + 1
    chosen = resolve_config(None, None, ["trainer.bptt=30"], {"task": "forecast"})
    assert fit_windows(chosen, corpus) is chosen  # a window set by hand is the user's


def test_a_100_row_csv_trains_with_the_defaults_and_exports_in_data_units(tmp_path, capsys):
    import arviz_plots
    import arviz_stats
    import matplotlib
    import xarray as xr

    matplotlib.use("Agg")
    path, frame = _csv(tmp_path)
    out = tmp_path / "run"
    argv = [
        "run", "--task", "forecast", "--data", str(path), "--out", str(out),
        "--set", "data.target=sales", "--set", "data.covariates=price",
        "--set", "data.future_covariates=promo", "--set", "data.time=date",
        "--set", "data.transform=log", "--epochs", "3", "--samples", "10",
        "--set", "evaluation.export_samples=30",
    ]  # fmt: skip
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    assert "the train split has 70 rows" in err and "trainer.batch_size=3" in err
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["steps"] == 15 and test["scaling"]["kind"] == "log"
    series = json.loads((out / "vocab.json").read_text())["series"]
    assert series["transform"] == {"kind": "log", "lambda": None}
    assert series["future_covariates"] == ["promo"]
    tree = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")
    try:
        observed = tree.observed_data["obs"]
        assert observed.dims == ("step",)  # one target: no singleton dim
        np.testing.assert_allclose(observed.values, frame["sales"][85:], rtol=1e-5)
        assert observed.coords["time"].values[0] == np.datetime64("2024-03-26")
        assert tree.attrs["scaling_kind"] == "log"
        log_lik = tree.log_likelihood["obs"].values[0]  # (draws, steps), data units
        mixture = np.log(np.exp(log_lik).mean(0))
        # metrics.json's NLL (50 other draws) and the export's agree, both in data units
        assert -mixture.mean() == pytest.approx(test["nll"], abs=0.25)
        arviz_stats.loo_pit(tree)
        arviz_stats.loo_metrics(tree)
        arviz_plots.plot_ppc_pit(tree)
        arviz_plots.plot_ppc_interval(tree)
    finally:
        tree.close()


def test_log_of_a_series_with_a_zero_exits_2_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "counts.csv"
    path.write_text("n\n" + "".join(f"{i % 6}\n" for i in range(60)))
    out = tmp_path / "run"
    argv = ["run", "--task", "forecast", "--data", str(path), "--out", str(out), "--quiet"]
    code, _, err = cli(capsys, *argv, "--set", "data.target=n", "--set", "data.transform=log")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "column 'n' has 10 value(s) ≤ 0 (first 0 at row 0)" in err
    assert not out.exists()
