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

__all__ = ["MAX_LAG", "check_lags", "insert_lags", "lag_columns", "lag_names", "with_lags"]

MAX_LAG = 10_000


def check_lags(lags: object) -> tuple[int, ...]:
    """The lags as a tuple of distinct integers in [2, MAX_LAG], in the order given."""
    if isinstance(lags, int | str) or not isinstance(lags, Sequence):
        raise ValueError(f"lags must be a list of integers >= 2, got {lags!r}")
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


def with_lags(corpus, lags: Sequence[int]):
    """A :class:`~bayesrnn.data.series.SeriesCorpus` whose rows carry the lag columns of its
    targets (built over the whole series in time order, so the first valid and test rows read
    the last train and valid values, as the one-step forecasts do)."""
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
