r"""Rolling-origin backtests: forecast H steps from many origins, each from its past only.

The protocol of ``pyro.contrib.forecast.backtest``: origins t = start, start + stride, … while
t + H ≤ N; at each the forecaster gets a copy of the history ``series[:t]`` (rows strictly
before t) and returns S sample paths of rows t … t + H − 1, scored against what happened.
Unlike Pyro's ``backtest`` the forecaster is not trained here: any callable
``(history, horizon) -> paths`` of shape (S, H) or (S, H, D) plugs in (the classical forecasters
of :mod:`bayesrnn.evaluation.classical`, or a trained model's path sampler), fitted beforehand
on data before ``start``. MASE and MSIS of each origin are scaled by that origin's own history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from bayesrnn.evaluation.forecast_scores import horizon_metrics

__all__ = ["Forecaster", "backtest_paths", "rolling_origin"]

Forecaster = Callable[[Tensor, int], Tensor]


def _int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _as_series(series: object) -> Tensor:
    if isinstance(series, np.ndarray | list | tuple):
        try:
            series = torch.as_tensor(np.asarray(series, dtype=np.float64))
        except (TypeError, ValueError) as error:
            raise ValueError(f"series must hold real numbers: {error}") from error
    if (
        not isinstance(series, Tensor)
        or not series.is_floating_point()
        or series.dim() not in (1, 2)
    ):
        got = tuple(series.shape) if isinstance(series, Tensor) else type(series).__name__
        raise ValueError(f"series must be a real (N,) or (N, D) array, got {got}")
    if not bool(torch.isfinite(series).all()):
        raise ValueError("series contains non-finite values (nan or inf)")
    return series.detach().double().cpu()


def backtest_paths(
    series: object, forecaster: Forecaster, start: int, horizon: int, stride: int = 1
) -> tuple[list[int], Tensor, Tensor]:
    """The forecasts of a rolling-origin backtest: ``(origins, paths, observed)`` with
    ``paths`` (O, S, H[, D]) and ``observed`` (O, H[, D]), origins as row indices."""
    series = _as_series(series)
    total = series.shape[0]
    horizon, stride = _int(horizon, "horizon", 1), _int(stride, "stride", 1)
    start = _int(start, "start", 1)
    if start + horizon > total:
        raise ValueError(
            f"start + horizon must not exceed the series length {total} (the first origin "
            f"needs H = {horizon} rows after it), got start = {start}"
        )
    origins = list(range(start, total - horizon + 1, stride))
    expected_tail = (horizon, *series.shape[1:])
    all_paths = []
    for origin in origins:
        paths = forecaster(series[:origin].clone(), horizon)
        if not isinstance(paths, Tensor):
            paths = torch.as_tensor(np.asarray(paths, dtype=np.float64))
        if paths.dim() != len(expected_tail) + 1 or tuple(paths.shape[1:]) != expected_tail:
            raise ValueError(
                f"the forecaster must return paths (S, {', '.join(map(str, expected_tail))}) "
                f"at origin {origin}, got {tuple(paths.shape)}"
            )
        if all_paths and paths.shape[0] != all_paths[0].shape[0]:
            raise ValueError("the forecaster must return the same number of paths at every origin")
        if not bool(torch.isfinite(paths).all()):
            raise ValueError(f"the forecaster returned non-finite paths at origin {origin}")
        all_paths.append(paths.detach().double().cpu())
    observed = torch.stack([series[t : t + horizon] for t in origins])
    return origins, torch.stack(all_paths), observed


def rolling_origin(
    series: object,
    forecaster: Forecaster | Mapping[str, Forecaster],
    start: int,
    horizon: int,
    stride: int = 1,
    *,
    season: int = 1,
) -> dict[str, object]:
    """Per-horizon scores (:func:`~bayesrnn.evaluation.forecast_scores.horizon_metrics`) of
    one forecaster, or of each of a mapping ``{name: forecaster}`` (then ``{name: scores}``).

    ``series`` (N,) or (N, D); origins from ``start`` every ``stride`` rows while a whole
    horizon of ``horizon`` rows follows. ``season`` scales MASE and MSIS (1: the naive step).
    Each score dict also lists its ``origin_rows``.
    """
    if isinstance(forecaster, Mapping):
        if not forecaster:
            raise ValueError("forecaster mapping is empty")
        return {
            str(name): rolling_origin(series, f, start, horizon, stride, season=season)
            for name, f in forecaster.items()
        }
    if not callable(forecaster):
        raise ValueError(f"forecaster must be callable, got {type(forecaster).__name__}")
    series = _as_series(series)
    origins, paths, observed = backtest_paths(series, forecaster, start, horizon, stride)
    histories = [series[:t] for t in origins]
    metrics = horizon_metrics(paths, observed, histories, season)
    metrics["origin_rows"] = origins
    return metrics
