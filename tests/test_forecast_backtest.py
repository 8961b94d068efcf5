"""The trained network in the rolling-origin backtest: no look-ahead, carried state, seasons,
``metrics.json``'s ``test.horizons`` and the one-line errors of its settings."""

import json
import math

import numpy as np
import pandas
import pytest
import torch

import bayesrnn
from bayesrnn.app.backtest_plan import infer_season
from bayesrnn.app.forecast_backtest import RunForecaster, recorded_covariates, run_corpus
from bayesrnn.app.run_draws import QUANTILES_PER_DRAW, transformed_draws
from bayesrnn.app.run_forecast import SeriesScaling
from bayesrnn.app.setup import seed_everything
from bayesrnn.evaluation.backtest import backtest_paths
from bayesrnn.evaluation.forecast_paths import PathSampler, sample_paths
from tests.cli_helpers import cli

pytest.importorskip("statsmodels", reason="the timeseries extra (statsmodels) is not installed")

ROWS = 120  # monthly: 84 train, 18 valid, 18 test rows
HORIZON = 4
METRICS = ("crps", "mae", "rmse", "mase", "msis", "coverage_50", "coverage_90")


def monthly_csv(path):
    rng = np.random.default_rng(0)
    t = np.arange(ROWS)
    units = 50 + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 2, ROWS)
    price = 1 + (t % 5) / 10
    dates = pandas.date_range("2000-01-01", periods=ROWS, freq="MS").strftime("%Y-%m-%d")
    frame = pandas.DataFrame({"month": dates, "units": units.round(3), "price": price})
    frame.to_csv(path, index=False)
    return frame


def run_args(csv, out, *extra):
    return [
        "run", "--task", "forecast", "--data", str(csv), "--out", str(out), "--quiet",
        "--epochs", "1", "--samples", "2",
        "--set", "data.target=units", "--set", "data.covariates=[price]",
        "--set", "data.time=month", "--set", "model.hidden_size=3",
        "--set", "evaluation.export=false", "--set", f"evaluation.horizon={HORIZON}",
        "--set", "evaluation.backtest_samples=20", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def monthly(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backtest")
    csv = folder / "sales.csv"
    frame = monthly_csv(csv)
    out = folder / "run"
    assert bayesrnn.app.cli.main(run_args(csv, out)) == 0
    return out, frame, csv


def test_metrics_hold_every_horizon_for_the_network_and_the_baselines(monthly):
    out, frame, _ = monthly
    horizons = json.loads((out / "metrics.json").read_text())["test"]["horizons"]
    start = 84 + 18
    assert horizons["horizon"] == HORIZON and horizons["stride"] == 1
    assert horizons["origin_rows"] == list(range(start, ROWS - HORIZON + 1))
    assert horizons["origins"] == ROWS - HORIZON + 1 - start
    assert horizons["first_origin_time"] == "2008-07-01"
    assert horizons["season"] == 12 and "monthly" in horizons["season_source"]
    methods = horizons["methods"]
    # auto: every classical baseline but ARIMA, whose seasonal fits are slow
    assert list(methods) == ["bayesrnn", "persistence", "seasonal_naive", "climatology", "ets"]
    assert "with season 12 its fits take" in horizons["baseline_errors"]["arima"]
    for name, scores in methods.items():
        for key in METRICS:
            assert len(scores[key]) == HORIZON and all(map(math.isfinite, scores[key])), (name, key)
        assert all(0 <= c <= 1 for c in scores["coverage_50"] + scores["coverage_90"])
    assert sorted(horizons["ranking"]["h1"]) == sorted(methods)
    crps_h1 = {name: scores["crps"][0] for name, scores in methods.items()}
    assert horizons["ranking"]["h1"] == sorted(crps_h1, key=crps_h1.get)
    # persistence's median is the last value: its MAE at h is mean |y_{t+h-1} - y_{t-1}|,
    # its MASE that over the mean |y_s - y_{s-1}| of each origin's own history
    y = frame["units"].to_numpy()
    origins = np.array(horizons["origin_rows"])
    for h in range(1, HORIZON + 1):
        errors = np.abs(y[origins + h - 1] - y[origins - 1])
        scales = np.array([np.abs(np.diff(y[:t])).mean() for t in origins])
        assert methods["persistence"]["mae"][h - 1] == pytest.approx(errors.mean(), rel=1e-9)
        assert methods["persistence"]["mase"][h - 1] == pytest.approx((errors / scales).mean())
    assert (out / "horizons.png").stat().st_size > 0


def test_the_summary_ranks_the_network_and_names_the_season(monthly, capsys):
    out, _, _ = monthly
    code, stdout, err = cli(capsys, "evaluate", "--out", str(out), "--quiet")
    assert code == 0, err
    text = stdout + err
    assert "season 12 (inferred: monthly dates" in text
    assert "rank among bayesrnn, persistence, seasonal_naive, climatology, ets: h=1 " in text
    assert "baseline arima: left out: with season 12" in text
    assert f"mean over h=1..{HORIZON} " in text
    assert (out / "eval-2" / "horizons.png").is_file()


def _forecaster(run, corpus, seed=7):
    scaling = SeriesScaling.of_corpus(corpus)
    covariates = recorded_covariates(corpus, scaling)
    return RunForecaster(run.model, run.guide, scaling, 16, covariates, seed)


def test_the_network_never_sees_the_rows_after_an_origin(monthly):
    out, _, _ = monthly
    run = bayesrnn.load_run(out)
    corpus = run_corpus(run)
    series = corpus.observed(0, ROWS)
    start = corpus.test_start
    origins, clean, _ = backtest_paths(series, _forecaster(run, corpus), start, HORIZON)
    assert clean.shape == (len(origins), 16, HORIZON, 1)
    for index in (0, 3, len(origins) - 1):
        origin = origins[index]
        poisoned = series[: origin + HORIZON].clone()
        poisoned[origin:] = 1e6  # every value from the origin on
        _, paths, _ = backtest_paths(poisoned, _forecaster(run, corpus), start, HORIZON)
        torch.testing.assert_close(paths[index], clean[index], rtol=0, atol=0)
    assert not torch.equal(clean[0], clean[1])  # the origins' paths differ
    # and the paths do follow the history they are given: a changed last value moves them
    origin = origins[0]
    changed = series[:origin].clone()
    changed[-1] += 50.0
    seed_everything(0)
    moved = _forecaster(run, corpus)(changed, HORIZON)
    assert (moved.mean(0) - clean[0].mean(0)).abs().min() > 1.0


@pytest.mark.parametrize(
    ("guide", "extra"),
    [
        ("mean_field", None),  # one weight draw per path
        ("none", ["--set", "model.prior=none"]),  # shared weights: a batch of sequences
        ("gal", ["--set", "guide.dropout_hidden=0.5"]),  # masks held from origin to origin
    ],
)
def test_a_carried_state_gives_the_paths_of_the_whole_history(monthly, tmp_path, guide, extra):
    _, _, csv = monthly
    if extra is None:
        run = bayesrnn.load_run(monthly[0])
    else:
        out = tmp_path / guide
        args = run_args(csv, out, "--set", f"guide.name={guide}", *extra)
        assert bayesrnn.app.cli.main(["train", *args[1:]]) == 0
        run = bayesrnn.load_run(out)
    corpus = run_corpus(run)
    rows = corpus.full()  # targets, their lag columns, covariates
    covariates = recorded_covariates(corpus, SeriesScaling.of_corpus(corpus))
    carried, fresh = PathSampler(run.model, run.guide, 8), PathSampler(run.model, run.guide, 8)
    seed_everything(3)
    carried(rows[:90], 3, covariates[90:93])
    seed_everything(3)  # the same weight draws as the carried sampler's
    fresh(rows[:100], 3, covariates[100:103])
    seed_everything(11)
    incremental = carried(rows[:100], 3, covariates[100:103])  # reads rows 90 … 99 only
    seed_everything(11)
    whole = fresh(rows[:100], 3, covariates[100:103])
    torch.testing.assert_close(incremental, whole, rtol=1e-5, atol=1e-5)
    if guide == "none":  # one weight set: sample_paths draws the same paths
        seed_everything(11)
        direct = sample_paths(run.model, run.guide, rows[:100], 3, 8, covariates[100:103])
        torch.testing.assert_close(direct, whole, rtol=1e-5, atol=1e-5)


def test_covariates_must_cover_the_horizon(monthly):
    run = bayesrnn.load_run(monthly[0])
    corpus = run_corpus(run)
    forecaster = RunForecaster(
        run.model, run.guide, SeriesScaling.of_corpus(corpus), 4, corpus.full()[:100, 1:]
    )
    with pytest.raises(ValueError, match="known for 100 rows; a forecast of 4 steps after row 98"):
        forecaster(corpus.observed(0, 98), 4)


def test_trained_run_backtest_takes_its_own_settings(monthly):
    run = bayesrnn.load_run(monthly[0])
    result = run.backtest(
        2, stride=5, num_samples=8, baselines=["climatology", "arima"], split="valid", season=1
    )
    assert list(result["methods"]) == ["bayesrnn", "climatology", "arima"]
    assert result["season"] == 1 and result["season_source"] == "1 (data.season)"
    assert result["origin_rows"] == [84, 89, 94, 99] and result["horizon"] == 2
    assert result["methods"]["bayesrnn"]["samples"] == 8
    with pytest.raises(ValueError, match=r"evaluation\.horizon=40 is longer than the test split"):
        run.backtest(40)


@pytest.mark.parametrize(
    ("freq", "season", "word"),
    [("W-SUN", 52, "weekly"), ("MS", 12, "monthly"), ("ME", 12, "monthly"),
     ("QS-JAN", 4, "quarterly"), ("D", 7, "daily")],
)  # fmt: skip
def test_the_season_follows_the_dates(freq, season, word):
    times = pandas.date_range("2001-01-01", periods=30, freq=freq).to_numpy()
    got, source = infer_season(times)
    assert got == season and word in source


def test_numbers_irregular_dates_and_other_frequencies_have_no_season():
    assert infer_season(np.arange(1700, 1800))[0] == 1  # years as numbers
    irregular = np.array(["2001-01-01", "2001-01-03", "2001-01-09", "2001-02-01"], "datetime64[D]")
    assert infer_season(irregular) == (1, "none (the dates are not evenly spaced)")
    yearly = pandas.date_range("1901-01-01", periods=30, freq="YS").to_numpy()
    assert infer_season(yearly)[0] == 1
    hourly = pandas.date_range("2001-01-01", periods=30, freq="h").to_numpy()
    assert infer_season(hourly)[0] == 1


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("evaluation.horizon=0", "evaluation.horizon must be a positive integer, got 0"),
        ("evaluation.horizon=19", "evaluation.horizon=19 is longer than the test split (18 rows)"),
        ("evaluation.backtest_stride=0", "evaluation.backtest_stride must be a positive integer"),
        ("evaluation.baselines=[arima,prophet]", "evaluation.baselines must be one of auto, "),
        ("evaluation.baselines=[auto,ets]", "evaluation.baselines=auto stands alone"),
        ("data.season=60", "data.season=60 is longer than half the 102 rows before the test"),
    ],
)
def test_bad_backtest_settings_are_one_line_errors(monthly, tmp_path, capsys, setting, fragment):
    _, _, csv = monthly
    out = tmp_path / "run"
    code, _, err = cli(capsys, *run_args(csv, out, "--set", setting))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert fragment in err
    assert not out.exists()


def test_a_transformed_runs_predictive_is_in_the_data_units(monthly, tmp_path):
    _, frame, csv = monthly
    out = tmp_path / "log"
    extra = ("--set", "data.transform=log", "--set", "evaluation.baselines=[]")
    assert bayesrnn.app.cli.main(run_args(csv, out, *extra)) == 0
    predictive = bayesrnn.run_predictive(out)
    assert predictive.num_samples == 2 and predictive.samples_per_draw == QUANTILES_PER_DRAW
    assert predictive.draws.shape == (2 * QUANTILES_PER_DRAW, 18, 1)
    expected = torch.tensor(frame["units"].to_numpy()[-18:], dtype=torch.float64)[:, None]
    assert torch.equal(predictive.observed, expected)  # as read, not a float32 round trip
    test = json.loads((out / "metrics.json").read_text())["test"]
    scores = predictive.scores()
    assert scores["crps"] == pytest.approx(test["crps"], rel=0.05)  # both in the data's units
    assert math.isnan(scores["nll"])


def test_transformed_draws_are_each_draws_quantiles_mapped_back():
    from scipy.stats import norm

    from bayesrnn.data.transforms import SeriesTransform, TargetUnits
    from bayesrnn.models import Forecast

    loc = torch.tensor([[[0.5], [-1.0]], [[0.0], [2.0]]], dtype=torch.float64)  # (S=2, N=2, 1)
    scale = torch.tensor([[[1.0], [0.5]], [[2.0], [0.1]]], dtype=torch.float64)
    units = TargetUnits(SeriesTransform("log"), torch.tensor([3.0]), torch.tensor([0.25]))
    samples = transformed_draws(Forecast(loc, scale), units, per_draw=5)
    assert samples.shape == (10, 2, 1)
    z = norm.ppf((np.arange(5) + 0.5) / 5)
    for s in range(2):
        for n in range(2):
            model_units = loc[s, n, 0].item() + scale[s, n, 0].item() * z
            np.testing.assert_allclose(
                samples[5 * s : 5 * s + 5, n, 0].numpy(), np.exp(model_units * 0.25 + 3.0)
            )


def test_each_target_column_gets_its_own_baseline():
    from bayesrnn.app.forecast_backtest import baseline_forecasters
    from bayesrnn.evaluation.classical import Persistence

    fit = torch.tensor([[1.0, 10.0], [3.0, 40.0], [2.0, 20.0], [5.0, 70.0]], dtype=torch.float64)
    forecasters, errors = baseline_forecasters(
        ("persistence", "seasonal_naive"), fit, 3, season=1, num_samples=5
    )
    assert errors == {"seasonal_naive": "left out: with season 1 it is persistence"}
    paths = forecasters["persistence"](fit, 2)
    assert paths.shape == (5, 2, 2)
    for column in range(2):
        expected = Persistence(fit[:, column], num_samples=5)(fit[:, column], 2)
        torch.testing.assert_close(paths[..., column], expected)


def test_evaluate_refuses_a_horizon_longer_than_the_split_before_writing(monthly, capsys):
    out, _, _ = monthly
    before = sorted(p.name for p in out.iterdir())
    argv = ("evaluate", "--out", str(out), "--quiet", "--set", "evaluation.horizon=19")
    code, _, err = cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "evaluation.horizon=19 is longer than the test split (18 rows)" in err
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_forecaster_failing_in_the_backtest_is_reported_not_fatal(monthly, monkeypatch):
    from bayesrnn.app.summary import summarise
    from bayesrnn.evaluation.classical import Climatology

    run = bayesrnn.load_run(monthly[0])

    def broken(self, history, horizon):
        raise ValueError("no climate\nhere")

    monkeypatch.setattr(Climatology, "predict", broken)
    result = run.backtest(2, stride=6, num_samples=4, baselines=["persistence", "climatology"])
    assert list(result["methods"]) == ["bayesrnn", "persistence"]
    assert result["baseline_errors"] == {"climatology": "failed in the backtest: no climate here"}

    def infinite(self, history, horizon):
        return torch.full((4, horizon, 1), math.inf)

    monkeypatch.setattr(RunForecaster, "__call__", infinite)
    result = run.backtest(2, stride=6, num_samples=4, baselines=["persistence"])
    assert list(result) == ["error"] and "non-finite paths" in result["error"]
    metrics = {"test": {"baselines": {"persistence": {"crps": 1.0}, "climatology": {"crps": 2.0}},
                        "steps": 3, "mc_samples": 2, "crps": 1.0, "nll": 1.0, "rmse": 1.0,
                        "coverage_50": 0.5, "coverage_90": 0.9, "horizons": result}}  # fmt: skip
    assert "  backtest: the network's paths could not be scored: " in summarise(metrics, "out")
