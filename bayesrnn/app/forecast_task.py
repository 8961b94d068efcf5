"""The forecasting task of a run: one-step-ahead predictive distributions of a real series,
scored in the data's units against the persistence and climatology baselines."""

from __future__ import annotations

import torch

from bayesrnn.app.forecast_backtest import MODEL_NAME, horizon_backtest
from bayesrnn.app.run_dir import RunDir
from bayesrnn.app.setup import Log, Setup, seed_everything
from bayesrnn.data.series import SeriesCorpus
from bayesrnn.evaluation.forecast import baselines, forecast_metrics, predict_series
from bayesrnn.evaluation.forecast_units import data_unit_metrics
from bayesrnn.models.regressor import Forecast

__all__ = ["evaluate_forecaster", "forecast_range", "in_units"]

LEVELS = (0.5, 0.9)


def forecast_range(corpus: SeriesCorpus, split: str) -> tuple[torch.Tensor, int]:
    """The rows a split's forecasts read (everything before it is warm-up history) and the
    row where the split begins."""
    sizes = corpus.sizes()
    start = sizes["train"] if split == "valid" else corpus.test_start
    end = start + sizes[split]
    return corpus.full()[:end], start


def in_units(forecast: Forecast, corpus: SeriesCorpus) -> Forecast:
    """Scaled forecasts of the target columns back in the data's units (untransformed targets
    only: after a transform the forecast in data units is no longer Gaussian or Student-t)."""
    if corpus.transform.kind != "none":
        raise ValueError(
            f"the targets were modelled after a {corpus.transform.kind} transform: score them "
            "with bayesrnn.evaluation.forecast_units.data_unit_metrics(draws, observed, "
            "corpus.target_units)"
        )
    d = forecast.loc.shape[-1]
    mean = corpus.mean[:d].to(forecast.loc)
    scale = corpus.scale[:d].to(forecast.loc)
    return Forecast(forecast.loc * scale + mean, forecast.scale * scale, forecast.df)


def _scores(draws: Forecast, observed: torch.Tensor, corpus: SeriesCorpus) -> dict:
    """Scores in the data's units: exact for an untransformed target, through the change of
    variables (back-transformed quantiles and samples, NLL with the Jacobian) otherwise."""
    if corpus.transform.kind == "none":
        forecast = in_units(draws, corpus)
        return forecast_metrics(forecast, observed.to(forecast.loc), levels=LEVELS)
    return data_unit_metrics(draws.map(torch.Tensor.double), observed, corpus.target_units)


def _units_note(corpus: SeriesCorpus) -> str:
    kind = corpus.transform.kind
    if kind == "none":
        return "the data's (scaled back from the training mean and standard deviation)"
    return (
        f"the data's (the model saw the standardised {kind} of the targets; its forecasts are "
        "back-transformed and the NLL carries the Jacobian)"
    )


def _public(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not isinstance(v, torch.Tensor)}


def evaluate_forecaster(s: Setup, run: RunDir, log: Log) -> dict:
    """Posterior-mean and MC forecasts of the evaluation split, their scores (CRPS, NLL, RMSE,
    MAE, central-interval coverage and width, PIT histogram) and the baselines' scores; the
    multi-step backtest of the network and the classical baselines (``horizons``)."""
    from bayesrnn.evaluation.forecast_plots import (
        plot_forecast_fan,
        plot_interval_reliability,
        plot_pit_histogram,
    )
    from bayesrnn.evaluation.horizon_plots import plot_horizon_scores

    ev, corpus = s.config.evaluation, s.corpus
    d = corpus.targets
    rows, start = forecast_range(corpus, ev.split)
    seed_everything(s.config.trainer.seed + 1)
    log(
        f"forecasting {ev.split} ({rows.shape[0] - start} steps, history {start}): posterior "
        f"mean, MC with {ev.mc_samples} samples"
    )
    mean = predict_series(s.model, s.guide, rows, start, None)
    mc = predict_series(s.model, s.guide, rows, start, ev.mc_samples)
    observed = corpus.observed(start, rows.shape[0])
    previous = corpus.observed(start - 1, rows.shape[0] - 1)
    train = corpus.observed(0, corpus.sizes()["train"])
    scores_mean = _scores(mean, observed, corpus)
    scores_mc = _scores(mc, observed, corpus)
    naive = baselines(train, observed, previous, levels=LEVELS)
    times = corpus.full_times()
    plot_forecast_fan(
        mc,
        rows[start:, :d],
        run / "forecast.png",
        times=times[start : rows.shape[0]],
        history=rows[:start, 0][-4 * observed.shape[0] :],
        history_times=times[:start][-4 * observed.shape[0] :],
        levels=LEVELS,
        transform=lambda values: corpus.unscale(values, 0),
        title=f"{corpus.name}: one-step-ahead forecasts of {ev.split} (MC, data units)",
    )
    plot_pit_histogram(scores_mc["pit"], run / "pit.png", title="PIT of the MC forecast")
    plot_interval_reliability(
        {
            "bayesrnn (MC)": scores_mc["pit"],
            **{name: scores["pit"] for name, scores in naive.items()},
        },
        run / "intervals.png",
    )
    horizons = horizon_backtest(s.model, s.guide, corpus, s.config, log=log)
    files = ["forecast.png", "pit.png", "intervals.png"]
    if "methods" in horizons:
        plot_horizon_scores(
            horizons["methods"],
            run / "horizons.png",
            title=(
                f"{corpus.name}: {horizons['horizon']}-step forecasts from "
                f"{horizons['origins']} origins of {ev.split} ({MODEL_NAME} and baselines, "
                "data units)"
            ),
        )
        files.append("horizons.png")
    metrics = {
        key: scores_mc[key] for key in ("crps", "nll", "rmse", "mae", "coverage_50", "coverage_90")
    }
    metrics |= {
        "steps": int(observed.shape[0]),
        "mc_samples": ev.mc_samples,
        "units": _units_note(corpus),
        "scaling": corpus.target_units.to_dict(),
        "posterior_mean": _public(scores_mean),
        "mc": _public(scores_mc),
        "baselines": {name: _public(scores) for name, scores in naive.items()},
        "horizons": horizons,
    }
    return {ev.split: metrics, "plots": files}
