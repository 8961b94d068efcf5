"""Lagged target values as input features (the lags of DeepAR / GluonTS's ``lags_seq``).

A forecaster reads row t to forecast row t + 1, so the row's own target value is lag 1 of the
value forecast. Lag ℓ ≥ 2 adds y_{t+1−ℓ} to row t: lags 2 … p give an autoregression of order
p, and a seasonal lag m (say 11 years for sunspots, 52 weeks for co2) gives the value one season
before the step forecast, which a small recurrent network does not carry across a whole season
of steps by itself. The lag columns of row t hold values from rows before t, so a lag adds no
look-ahead; rows too early to have a lag (t + 1 − ℓ < 0) repeat the series' first value.

Lag columns sit right after the target columns (for each lag, one column per target), in the
targets' scaled units; a sample path builds them from its own earlier values
(:func:`bayesrnn.evaluation.sample_paths`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "AUTO",
    "MAX_LAG",
    "auto_lags",
    "check_lags",
    "insert_lags",
    "lag_columns",
    "lag_names",
    "seasonal_lag",
    "with_lags",
]

MAX_LAG = 10_000
AUTO = "auto"
SHORT_LAGS = (2, 3)
MIN_SEASONAL_ACF = 0.2  # below this the changes show no season worth a lag
NEAR_TOP = 0.95  # the shortest lag whose autocorrelation is this close to the highest


def seasonal_lag(values: np.ndarray) -> int | None:
    """The season m of a series, read off the autocorrelation of its first differences up to
    lag N/4: past the first lag where it turns negative (short-range smoothness is no season),
    the shortest lag within 5% of the highest (so a season wins over its multiples); None
    when none reaches 0.2. Sunspots' training years give 11 (the solar cycle), co2's weeks 53,
    elnino's months 12."""
    changes = np.diff(np.asarray(values, dtype=np.float64))
    changes = changes - changes.mean()
    energy = float(np.dot(changes, changes))
    top = changes.shape[0] // 4
    if top < 2 or energy == 0:
        return None
    lags = np.arange(1, top + 1)
    acf = np.array([np.dot(changes[:-k], changes[k:]) / energy for k in lags])
    negative = np.flatnonzero(acf < 0)
    if negative.size == 0:
        return None
    lags, acf = lags[negative[0] :], acf[negative[0] :]
    best = float(acf.max())
    if best < MIN_SEASONAL_ACF:
        return None
    return int(lags[np.flatnonzero(acf >= NEAR_TOP * best)[0]])


def auto_lags(train: np.ndarray) -> tuple[int, ...]:
    """The lags ``data.lags="auto"`` reads, from the training values (N, D) of the targets:
    lags 2 and 3 (a short autoregression), and m and m + 1 for the season m of the first
    target (:func:`seasonal_lag`): with the last value they give last season's change. Only
    lags shorter than the training split are kept."""
    train = np.asarray(train, dtype=np.float64)
    season = seasonal_lag(train[:, 0] if train.ndim == 2 else train)
    seasonal = () if season is None else (season, season + 1)
    return tuple(lag for lag in sorted({*SHORT_LAGS, *seasonal}) if lag < train.shape[0])


def check_lags(lags: object, allow_auto: bool = False) -> tuple[int, ...] | str:
    """The lags as a tuple of distinct integers in [2, MAX_LAG], in the order given (or
    ``"auto"`` where ``allow_auto``)."""
    if allow_auto and lags == AUTO:
        return AUTO
    if isinstance(lags, int | str) or not isinstance(lags, Sequence):
        also = f' or "{AUTO}"' if allow_auto else ""
        raise ValueError(f"lags must be a list of integers >= 2{also}, got {lags!r}")
    values = tuple(lags)
    for lag in values:
        if isinstance(lag, bool) or not isinstance(lag, int | np.integer):
            raise ValueError(f"every lag must be an integer, got {lag!r}")
        if not 2 <= lag <= MAX_LAG:
            raise ValueError(
                f"every lag must lie in [2, {MAX_LAG}] (lag 1, the last value, is always read), "
                f"got {lag}"
            )
    if len(set(values)) != len(values):
        raise ValueError(f"lags must be distinct, got {list(values)}")
    return tuple(int(v) for v in values)


def lag_columns(targets: Tensor, lags: Sequence[int]) -> Tensor:
    """The lag columns of ``targets`` (N, D): (N, D·len(lags)), lag by lag, where row t of lag
    ℓ's block is ``targets[t + 1 − ℓ]`` (``targets[0]`` before the series begins)."""
    lags = check_lags(lags)
    if targets.dim() != 2:
        raise ValueError(f"targets must be (N, D), got shape {tuple(targets.shape)}")
    rows = targets.shape[0]
    blocks = []
    for lag in lags:
        index = (torch.arange(rows, device=targets.device) + 1 - lag).clamp(min=0)
        blocks.append(targets[index])
    if not blocks:
        return targets.new_zeros(rows, 0)
    return torch.cat(blocks, -1)


def lag_names(columns: Sequence[str], lags: Sequence[int]) -> tuple[str, ...]:
    """Names of the lag columns of target ``columns``: ``<column>_lag<ℓ>``."""
    return tuple(f"{column}_lag{lag}" for lag in lags for column in columns)


def insert_lags(rows: Tensor, targets: int, lags: Sequence[int]) -> Tensor:
    """``rows`` (N, F) with the lag columns of their first ``targets`` columns inserted right
    after them: (N, F + targets·len(lags))."""
    lagged = lag_columns(rows[:, :targets], lags)
    return torch.cat([rows[:, :targets], lagged, rows[:, targets:]], -1)


def with_lags(corpus, lags: Sequence[int] | str):
    """A :class:`~bayesrnn.data.series.SeriesCorpus` whose rows carry the lag columns of its
    targets (built over the whole series in time order, so the first valid and test rows read
    the last train and valid values, as the one-step forecasts do); ``"auto"``: the lags of
    :func:`auto_lags` on the training split."""
    if check_lags(lags, allow_auto=True) == AUTO:
        lags = auto_lags(corpus.train[:, : corpus.targets].double().numpy())
    lags = check_lags(lags)
    if not lags:
        return corpus
    if corpus.lags:
        raise ValueError(f"the corpus already has lag columns {list(corpus.lags)}")
    d = corpus.targets
    full = insert_lags(corpus.full(), d, lags)
    sizes = corpus.sizes()
    train, valid, test = torch.split(full, [sizes["train"], sizes["valid"], sizes["test"]])
    repeat = len(lags)
    return dataclasses.replace(
        corpus,
        train=train.contiguous(),
        valid=valid.contiguous(),
        test=test.contiguous(),
        columns=(*corpus.columns[:d], *lag_names(corpus.columns[:d], lags), *corpus.columns[d:]),
        mean=torch.cat([corpus.mean[:d], corpus.mean[:d].repeat(repeat), corpus.mean[d:]]),
        scale=torch.cat([corpus.scale[:d], corpus.scale[:d].repeat(repeat), corpus.scale[d:]]),
        lags=lags,
    )
