"""``bayesrnn run --task forecast``: a real series through the whole pipeline, and its faults."""

import json
import math

import pytest
import torch

from bayesrnn.app.cli import main
from tests.cli_helpers import cli

pytest.importorskip("statsmodels", reason="the timeseries extra (statsmodels) is not installed")

QUICK = ["--quiet", "--epochs", "3", "--samples", "5", "--set", "evaluation.export_samples=4"]


@pytest.fixture(scope="module")
def sunspots_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("forecast") / "sun"
    assert main(["run", "--task", "forecast", "--data", "sunspots", "--out", str(out), *QUICK]) == 0
    return out


def test_a_forecast_run_writes_scores_baselines_plots_and_posterior(sunspots_run):
    metrics = json.loads((sunspots_run / "metrics.json").read_text())
    test = metrics["test"]
    for key in ("crps", "nll", "rmse", "coverage_50", "coverage_90"):
        assert math.isfinite(test[key]), key
    assert 0.0 <= test["coverage_50"] <= test["coverage_90"] <= 1.0
    for name in ("persistence", "climatology"):
        assert math.isfinite(test["baselines"][name]["crps"])
    assert test["steps"] == metrics["data"]["sizes"]["test"]
    names = {p.name for p in sunspots_run.iterdir()}
    assert {"forecast.png", "pit.png", "intervals.png", "elbo.png", "posterior.nc"} <= names
    assert {"vocab.json", "config.toml", "checkpoint.pt"} <= names


def test_the_posterior_file_has_a_continuous_posterior_predictive(sunspots_run):
    xr = pytest.importorskip("xarray")
    tree = xr.open_datatree(sunspots_run / "posterior.nc", engine="h5netcdf")
    try:
        assert {"posterior", "posterior_predictive", "observed_data"} <= set(tree.children)
        assert tree["posterior_predictive"]["obs"].dtype.kind == "f"
    finally:
        tree.close()


def test_a_forecast_run_can_be_evaluated_again_and_loaded(sunspots_run, capsys):
    import bayesrnn

    code, _, err = cli(capsys, "evaluate", "--out", str(sunspots_run), "--quiet")
    assert code == 0, err
    assert (sunspots_run / "eval-2" / "metrics.json").is_file()
    run = bayesrnn.load_run(sunspots_run)
    assert run.config.task == "forecast" and run.vocabulary is None
    with pytest.raises(bayesrnn.app.run_dir.JobError, match="forecast run"):
        run.score_text("1 2 3")


@pytest.mark.parametrize(
    ("rows", "extra", "fragment"),
    [
        ("day,units\n1,3\n2,\n3,5\n", ["--set", "data.target=units"], "missing or non-finite"),
        ("day,units\n1,3\n2,4\n", ["--set", "data.target=nope"], "no column"),
        ("day,units\n" + "".join(f"{i},{i % 7}\n" for i in range(40)),
         ["--set", "data.target=units", "--set", "trainer.bptt=30"],
         "the train split has 28 rows: as trainer.batch_size=4 parallel sequences that is 7 "
         "steps each, fewer than the 31 that a trainer.bptt=30-step window needs"),
        ("day,units\n1,3\n", [], "data.target=COLUMN"),
    ],
)  # fmt: skip
def test_bad_series_are_one_line_errors(rows, extra, fragment, tmp_path, capsys):
    csv = tmp_path / "series.csv"
    csv.write_text(rows)
    out = tmp_path / "run"
    argv = ["run", "--task", "forecast", "--data", str(csv), "--out", str(out), "--quiet", *extra]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert fragment in err
    assert not out.exists()


def test_a_csv_with_a_covariate(tmp_path, capsys):
    import math as m

    rows = ["week,units,price"] + [
        f"{i},{10 + 5 * m.sin(i / 5) + (i % 3)},{1 + (i % 7) / 10}" for i in range(240)
    ]
    csv = tmp_path / "sales.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "sales"
    code, _, err = cli(
        capsys, "run", "--task", "forecast", "--data", str(csv), "--out", str(out),
        "--set", "data.target=units", "--set", "data.covariates=[price]", *QUICK,
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    # the preset's data.lags=auto: lags 2, 3 and the 3-row season of i % 3 (m, m + 1 = 3, 4)
    lags = ["units_lag2", "units_lag3", "units_lag4"]
    assert metrics["data"]["columns"] == ["units", *lags, "price"]
    assert metrics["data"]["targets"] == 1
    assert math.isfinite(metrics["test"]["crps"])


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--set", "data.lags=1,2"], "data.lags: every lag must lie in [2, 10000]"),
        (["--set", "data.lags=2,2"], "data.lags: lags must be distinct"),
        (["--set", "data.lags=[216]"], "lag 216 reaches back past the 216 training rows"),
        (["--task", "lm", "--data", "embedded", "--set", "data.lags=2,3"], "need --task forecast"),
    ],
)
def test_bad_lags_are_one_line_errors(extra, fragment, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--task", "forecast", "--data", "sunspots", "--out", str(out), *QUICK, *extra]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert fragment in err
    assert not out.exists()


def test_a_run_with_lags_forecasts_from_any_history_as_from_its_own(tmp_path):
    """The run's stored scaling rebuilds the lag columns of a history given in the data's
    units exactly as the corpus built them for training."""
    import bayesrnn

    out = tmp_path / "lagged"
    argv = ["run", "--task", "forecast", "--data", "sunspots", "--out", str(out), *QUICK,
            "--set", "data.lags=auto", "--set", "model.hidden_size=4",
            "--set", "data.transform=sqrt", "--set", "evaluation.export=false"]  # fmt: skip
    assert main(argv) == 0
    run = bayesrnn.load_run(out)
    assert run.series.lags == (2, 3, 11, 12) and run.series.covariates == ()  # read off data
    assert run.series.columns[:3] == ("SUNACTIVITY", "SUNACTIVITY_lag2", "SUNACTIVITY_lag3")
    assert run.model.lags == (2, 3, 11, 12) and run.model.input_size == 5
    own = run.forecast(horizon=4, num_samples=50)
    from bayesrnn.data.series import load_statsmodels_series

    corpus = load_statsmodels_series("sunspots")
    given = run.forecast(horizon=4, num_samples=50, history=corpus.observed(0, 309))
    assert own.paths.shape == (50, 4, 1)
    torch.testing.assert_close(own.paths, given.paths)
    assert float(own.paths.min()) >= 0  # √ back-transformed: the data's units
