"""Where a forecasting run's multi-step backtest looks: horizon, origins and season.

Settled from the configuration and the loaded series before anything is trained or written,
so a horizon the evaluation split cannot hold is a one-line error up front, not after training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bayesrnn.app.config import ConfigError, RunConfig

__all__ = ["MAX_ORIGINS", "BacktestPlan", "backtest_plan", "infer_season"]

MAX_ORIGINS = 50  # the automatic stride keeps the backtest to about this many origins
DEFAULT_HORIZON = 10  # steps, for a series without a season
# pandas frequency codes (before any "-anchor") and the season their data usually has
_SEASONS = {
    **dict.fromkeys(("W",), (52, "weekly")),
    **dict.fromkeys(("M", "MS", "ME", "BM", "BMS", "BME"), (12, "monthly")),
    **dict.fromkeys(("Q", "QS", "QE", "BQ", "BQS", "BQE"), (4, "quarterly")),
    **dict.fromkeys(("D",), (7, "daily")),
}


def infer_season(times: object) -> tuple[int, str]:
    """The season of rows at ``times`` and where it came from: 52 for weekly dates, 12 for
    monthly, 4 for quarterly, 7 for daily; 1 for numbers, irregular or other dates."""
    times = np.asarray(times)
    if times.dtype.kind != "M" or times.ndim != 1 or times.shape[0] < 3:
        return 1, "none (the times are not dates of a regular frequency)"
    import pandas

    frequency = pandas.infer_freq(pandas.DatetimeIndex(times[-min(times.shape[0], 200) :]))
    if frequency is None:
        return 1, "none (the dates are not evenly spaced)"
    known = _SEASONS.get(frequency.split("-")[0])
    if known is not None:
        season, name = known
        return season, f"{season} (inferred: {name} dates, frequency {frequency})"
    return 1, f"none (dates of frequency {frequency}: no season inferred)"


@dataclass(frozen=True)
class BacktestPlan:
    """Origins ``start``, ``start + stride``, … while a whole ``horizon`` follows before
    ``end`` (the evaluation split's last row + 1); ``season`` and how it was chosen."""

    horizon: int
    stride: int
    start: int
    end: int
    season: int
    season_source: str

    @property
    def origins(self) -> list[int]:
        return list(range(self.start, self.end - self.horizon + 1, self.stride))


def backtest_plan(config: RunConfig, corpus) -> BacktestPlan:
    """The backtest of ``config.evaluation.split`` of ``corpus`` (a SeriesCorpus), or a
    ConfigError saying which setting the data cannot satisfy."""
    ev = config.evaluation
    sizes = corpus.sizes()
    start = sizes["train"] if ev.split == "valid" else corpus.test_start
    rows = sizes[ev.split]
    if config.data.season is not None:
        season, source = config.data.season, f"{config.data.season} (data.season)"
        seasonal = {"auto", "seasonal_naive", "ets", "arima"} & set(ev.baselines)
        if seasonal and season > start // 2:
            raise ConfigError(
                f"data.season={season} is longer than half the {start} rows before the "
                f"{ev.split} split: the seasonal baselines need two seasons to fit; lower it"
            )
    else:
        season, source = infer_season(corpus.full_times())
        if season > start // 2:
            source = f"none (the inferred {season} is over half the {start} rows before the split)"
            season = 1
    if ev.horizon is not None and ev.horizon > rows:
        raise ConfigError(
            f"evaluation.horizon={ev.horizon} is longer than the {ev.split} split ({rows} "
            f"rows): the backtest needs a whole horizon after its first origin; lower "
            "evaluation.horizon"
        )
    horizon = ev.horizon or min(rows, season if season > 1 else DEFAULT_HORIZON)
    stride = ev.backtest_stride or max(1, math.ceil((rows - horizon + 1) / MAX_ORIGINS))
    return BacktestPlan(horizon, stride, start, start + rows, season, source)
