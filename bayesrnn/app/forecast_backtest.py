"""The trained network in a rolling-origin backtest, scored beside the classical baselines.

At every origin t of the evaluation split the network gets the series' rows before t only: it
runs them to warm up its state and draws ancestral sample paths of the next H rows
(:func:`bayesrnn.evaluation.sample_paths`); the baselines get the same rows. All are scored by
one :func:`bayesrnn.evaluation.backtest.rolling_origin` over the same origins, in the data's
units, so the per-horizon CRPS, MAE, RMSE, MASE, MSIS and coverages compare directly.

A run with covariates reads their recorded values at the forecast steps (a forecast
conditional on them, as ``bayesrnn forecast --covariates`` is); the baselines ignore them.
The baselines are fitted once on the rows before the split (their order or trend chosen on
its last part, the validation split for a test backtest) and filtered forward, never refitted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from bayesrnn.app.backtest_plan import BacktestPlan, backtest_plan
from bayesrnn.app.config import RunConfig
from bayesrnn.app.config_evaluation import CLASSICAL_BASELINES
from bayesrnn.app.run_dir import JobError
from bayesrnn.app.run_forecast import SeriesScaling
from bayesrnn.app.setup import load_data, seed_everything
from bayesrnn.data.series import SeriesCorpus
from bayesrnn.evaluation.backtest import rolling_origin
from bayesrnn.evaluation.classical import (
    ARIMA,
    ETS,
    Climatology,
    GaussianForecaster,
    Persistence,
    SeasonalNaive,
)
from bayesrnn.evaluation.forecast_paths import PathSampler

__all__ = [
    "MODEL_NAME",
    "RunForecaster",
    "baseline_forecasters",
    "chosen_baselines",
    "horizon_backtest",
    "recorded_covariates",
    "run_corpus",
]

logger = logging.getLogger(__name__)

MODEL_NAME = "bayesrnn"
SCALING_SEASON = 1  # MASE and MSIS divide by the naive one-step error (M4's yearly, weekly)
_SELECTION_SHARE = 0.8  # without a validation split, the trend is chosen on the last 20%
# Seasonal ARIMA fits are slow: its 18 orders took 17 s on 84 monthly rows with season 12 and
# ~30 s each on co2's weekly rows with season 52, against 2 s in all without a season (sunspots)
AUTO_ARIMA_SEASON = 1


def recorded_covariates(corpus, scaling: SeriesScaling, end: int | None = None) -> Tensor | None:
    """The covariate columns of the corpus's first ``end`` rows (model units), None without
    any. The rows hold the targets, their lag columns, then the covariates: the paths rebuild
    the lags from their own values, so only the covariates are read as recorded."""
    full = corpus.full()[:end]
    first = corpus.targets * (1 + len(scaling.lags))
    return full[:, first:] if full.shape[1] > first else None


class RunForecaster:
    """A trained forecaster as a backtest forecaster: ``(history, horizon) -> paths``.

    ``history`` (T, D) holds the target values in the data's units; the model reads them
    scaled with the run's own training statistics (``scaling``), with the covariate rows
    ``covariates[:T]`` (model units, the corpus's layout) beside them, and the paths read
    ``covariates[T:T + H]`` at the forecast steps. Returns (S, H, D) in the data's units.
    A :class:`~bayesrnn.evaluation.forecast_paths.PathSampler` draws the S weight sets once and
    carries each path's state from origin to origin, reading only the rows a history adds to
    the last one. Each call reseeds torch from ``seed + T`` first.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        guide: object,
        scaling: SeriesScaling,
        num_samples: int,
        covariates: Tensor | None = None,
        seed: int = 0,
    ) -> None:
        self.model, self.guide, self.scaling = model, guide, scaling
        members = getattr(guide, "members", None)
        if isinstance(members, int) and members > 1:  # an ensemble: each member equally often
            num_samples = members * math.ceil(num_samples / members)
        self.num_samples = num_samples
        self.covariates = covariates
        self.seed = seed
        self.sampler = PathSampler(model, guide, num_samples)

    def __call__(self, history: Tensor, horizon: int) -> Tensor:
        targets = history if history.dim() == 2 else history.unsqueeze(-1)
        length = targets.shape[0]
        rows = self.scaling.rows(targets.double())  # scaled, with the lag columns
        future = None
        if self.covariates is not None:
            known = self.covariates.shape[0]
            if length + horizon > known:
                raise ValueError(
                    f"the covariates are known for {known} rows; a forecast of {horizon} steps "
                    f"after row {length} needs them up to row {length + horizon}"
                )
            rows = torch.cat([rows, self.covariates[:length].double()], -1)
            future = self.covariates[length : length + horizon].float()
        seed_everything(self.seed + length)
        paths = self.sampler(rows.float(), horizon, covariates=future)
        paths = self.scaling.raw(paths.cpu())
        return paths if history.dim() == 2 else paths[..., 0]


class _PerColumn:
    """Univariate forecasters side by side: column j of the paths is forecaster j's."""

    def __init__(self, forecasters: list[GaussianForecaster]) -> None:
        self.forecasters = forecasters

    def __call__(self, history: Tensor, horizon: int) -> Tensor:
        columns = [f(history[:, j], horizon) for j, f in enumerate(self.forecasters)]
        return torch.stack(columns, -1)

    def describe(self) -> str:
        return "; ".join(f.describe() for f in self.forecasters)


_BUILDERS: dict[str, Callable[[np.ndarray, np.ndarray, int, int], GaussianForecaster]] = {
    "persistence": lambda train, valid, season, s: Persistence(np.r_[train, valid], s),
    "seasonal_naive": lambda train, valid, season, s: SeasonalNaive(np.r_[train, valid], season, s),
    "climatology": lambda train, valid, season, s: Climatology(np.r_[train, valid], s),
    "ets": lambda train, valid, season, s: ETS.select(train, valid, season, num_samples=s),
    "arima": lambda train, valid, season, s: ARIMA.select(train, valid, season, num_samples=s),
}


def chosen_baselines(names: tuple[str, ...], season: int) -> tuple[tuple[str, ...], dict]:
    """The baselines ``evaluation.baselines`` names (``("auto",)``: every classical one, ARIMA
    only without a season) and notes on any that ``auto`` left out."""
    if tuple(names) != ("auto",):
        return tuple(names), {}
    if season > AUTO_ARIMA_SEASON:
        note = (
            f"left out: with season {season} its fits take minutes; name it in "
            "evaluation.baselines to include it"
        )
        return tuple(n for n in CLASSICAL_BASELINES if n != "arima"), {"arima": note}
    return CLASSICAL_BASELINES, {}


def baseline_forecasters(
    names: tuple[str, ...], fit: Tensor, selection: int, season: int, num_samples: int
) -> tuple[dict[str, object], dict[str, str]]:
    """The named classical forecasters fitted on ``fit`` (T, D) (one per target column), ETS's
    trend and ARIMA's order chosen on its rows from ``selection`` on; and, for any that could
    not be fitted, why. Seasonal naive is left out with season 1, where it is persistence."""
    forecasters: dict[str, object] = {}
    errors: dict[str, str] = {}
    values = fit.detach().double().cpu().numpy()
    for name in names:
        if name == "seasonal_naive" and season == 1:
            errors[name] = "left out: with season 1 it is persistence"
            continue
        began = time.perf_counter()
        try:
            columns = [
                _BUILDERS[name](values[:selection, j], values[selection:, j], season, num_samples)
                for j in range(values.shape[1])
            ]
        except ValueError as error:
            errors[name] = " ".join(str(error).split())
            continue
        forecasters[name] = _PerColumn(columns)
        logger.debug("fitted %s in %.1f s", name, time.perf_counter() - began)
    return forecasters, errors


def _ranking(methods: Mapping[str, Mapping[str, list[float]]]) -> dict[str, list[str]]:
    """Method names from the lowest CRPS to the highest, at h = 1 and averaged over h."""
    return {
        "h1": sorted(methods, key=lambda m: methods[m]["crps"][0]),
        "mean": sorted(methods, key=lambda m: float(np.mean(methods[m]["crps"]))),
    }


def horizon_backtest(
    model: torch.nn.Module,
    guide: object,
    corpus,
    config: RunConfig,
    plan: BacktestPlan | None = None,
    log: Callable[[str], None] = logger.info,
) -> dict[str, object]:
    """The network's and the baselines' per-horizon scores over the rolling origins of
    ``config.evaluation.split`` (``plan``: :func:`backtest_plan`'s, by default).

    Returns ``horizon``, ``stride``, ``origins``, ``origin_rows``, ``season`` and
    ``season_source``, ``scaling_season``, ``methods`` (``{name: metrics}``, the network first
    as ``"bayesrnn"``, each with per-horizon lists ``crps``, ``mae``, ``rmse``, ``mase``,
    ``msis``, ``coverage_50``, ``coverage_90``; baselines with ``fitted``), ``ranking`` (names by
    CRPS at h = 1 and averaged over h) and ``baseline_errors`` (baselines left out, and why);
    only ``error`` when the network's own paths could not be scored (non-finite values).
    """
    ev = config.evaluation
    plan = plan or backtest_plan(config, corpus)
    series = corpus.observed(0, plan.end)  # (N, D) targets in the data's units
    scaling = SeriesScaling.of_corpus(corpus)
    covariates = recorded_covariates(corpus, scaling, plan.end)
    selection = (
        corpus.sizes()["train"]
        if ev.split == "test"
        else max(3, round(_SELECTION_SHARE * plan.start))
    )
    began = time.perf_counter()
    names, notes = chosen_baselines(ev.baselines, plan.season)
    baselines, errors = baseline_forecasters(
        names, series[: plan.start], selection, plan.season, ev.backtest_samples
    )
    errors = notes | errors
    fitted = time.perf_counter()
    network = RunForecaster(
        model,
        guide,
        scaling,
        ev.backtest_samples,
        covariates,
        seed=config.trainer.seed + 2,
    )
    forecasters = {MODEL_NAME: network, **baselines}
    log(
        f"backtest: {len(plan.origins)} origins of {ev.split}, {plan.horizon} steps each, "
        f"every {plan.stride} row(s); {network.num_samples} paths; season {plan.season}; "
        f"{', '.join(forecasters)}"
    )
    methods = {}
    for name, forecaster in forecasters.items():
        try:
            methods[name] = rolling_origin(
                series, forecaster, plan.start, plan.horizon, plan.stride, season=SCALING_SEASON
            )
        except ValueError as error:  # e.g. non-finite paths: that forecaster is left out
            why = " ".join(str(error).split())
            if name == MODEL_NAME:  # the run's other results stand; this one says why not
                log(f"backtest failed: {why}")
                return {"error": f"the network's paths could not be scored: {why}"}
            errors[name] = f"failed in the backtest: {why}"
            baselines.pop(name)
    log(
        f"backtest took {time.perf_counter() - fitted:.1f} s (baselines fitted in "
        f"{fitted - began:.1f} s)"
    )
    for name, forecaster in baselines.items():
        methods[name]["fitted"] = forecaster.describe()
    origin_rows = methods[MODEL_NAME]["origin_rows"]
    for metrics in methods.values():
        for key in ("origin_rows", "origins", "horizon"):
            metrics.pop(key)
    times = corpus.full_times()
    return {
        "horizon": plan.horizon,
        "stride": plan.stride,
        "origins": len(origin_rows),
        "origin_rows": origin_rows,
        "first_origin_time": _plain(times[origin_rows[0]]),
        "season": plan.season,
        "season_source": plan.season_source,
        "scaling_season": SCALING_SEASON,
        "methods": methods,
        "ranking": _ranking(methods),
        "baseline_errors": errors,
    }


def _plain(value: object) -> object:
    """A time as JSON has it: a number, or an ISO date string."""
    if isinstance(value, np.datetime64):
        return str(value.astype("datetime64[D]"))
    return value.item() if isinstance(value, np.generic) else value


def run_corpus(run) -> SeriesCorpus:
    """A trained run's series, read again, checked to be the one it was trained on."""
    corpus = load_data(run.config)
    scaling: SeriesScaling = run.series
    if tuple(corpus.columns) != scaling.columns or not torch.allclose(
        corpus.mean.double(), scaling.mean, rtol=1e-6, atol=0
    ):
        raise JobError(
            f"the data {run.config.data.source!r} now differs from the series {run.path} was "
            "trained on (other columns or training statistics)"
        )
    return corpus
