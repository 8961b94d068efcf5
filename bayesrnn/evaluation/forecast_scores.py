r"""Scaled scores of multi-step forecasts (MASE, MSIS) and per-horizon metrics of sample paths.

MASE and MSIS are the M4 competition's definitions (Makridakis et al. 2020, "The M4
Competition"), which GluonTS's ``Evaluator`` also uses. Both divide by the in-sample
seasonal-naive mean absolute error of the history the forecast was made from,

    scale = 1/(T − m) Σ_{t=m+1..T} |y_t − y_{t−m}|      (season m; m = 1 is the naive step),

so a MASE of 1 is as good, out of sample, as the seasonal naive method was in sample, and
scores of series on different scales can be averaged:

    MASE = mean_h |ŷ_h − y_h| / scale
    MSIS = mean_h [(U_h − L_h) + (2/α)(L_h − y_h)·1{y_h < L_h}
                   + (2/α)(y_h − U_h)·1{y_h > U_h}] / scale

with L, U the bounds of the central 1 − α interval (α = 0.05: a 95% interval).

:func:`horizon_metrics` scores sample paths (origins, S, H[, targets]) per lead time h: CRPS
from the samples (Pyro's ``crps_empirical``), MAE of the sample median and RMSE of the sample
mean (as ``pyro.contrib.forecast``'s ``eval_mae`` / ``eval_rmse``), MASE of the median, MSIS of
the sample α/2 and 1 − α/2 quantiles, and the coverage of the central 50% and 90% sample
intervals. Sample quantiles are ``torch.quantile``'s (linear interpolation between order
statistics).
"""

from __future__ import annotations

import numpy as np
import torch
from pyro.ops.stats import crps_empirical
from torch import Tensor

__all__ = ["horizon_metrics", "mase", "msis", "seasonal_error"]


def _values(value: object, name: str) -> Tensor:
    """``value`` as a float64 tensor of finite real values, or a one-line ValueError."""
    if isinstance(value, np.ndarray | list | tuple | float | int) and not isinstance(value, bool):
        try:
            value = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must hold real numbers: {error}") from error
    if not isinstance(value, Tensor) or not (value.is_floating_point() or value.dtype.is_signed):
        raise ValueError(f"{name} must be an array of real numbers, got {type(value).__name__}")
    value = value.detach().double().cpu()
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return value


def _season(season: object) -> int:
    if isinstance(season, bool) or not isinstance(season, int | np.integer) or season < 1:
        raise ValueError(f"season must be an integer >= 1 (1: no season), got {season!r}")
    return int(season)


def seasonal_error(insample: object, season: int = 1) -> Tensor:
    """The in-sample seasonal-naive MAE, mean |y_t − y_{t−m}|, of a history (T,) or (T, D):
    a scalar, or one value per column (D,). The history needs more than ``season`` values and
    must not repeat itself exactly (a zero scale)."""
    history = _values(insample, "insample")
    season = _season(season)
    if history.dim() not in (1, 2) or history.shape[0] <= season:
        raise ValueError(
            f"insample must be (T,) or (T, D) with T > season = {season}, "
            f"got shape {tuple(history.shape)}"
        )
    scale = (history[season:] - history[:-season]).abs().mean(0)
    if not bool((scale > 0).all()):
        raise ValueError(
            f"insample repeats itself with period {season}: the seasonal-naive error is 0, "
            "so scaled scores are undefined"
        )
    return scale


def _same_shape(named: dict[str, Tensor]) -> None:
    shapes = {name: tuple(t.shape) for name, t in named.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shapes must match: {shapes}")


def _check_scale_columns(values: Tensor, scale: Tensor) -> None:
    if scale.dim() == 1 and (values.dim() == 0 or values.shape[-1] != scale.shape[0]):
        raise ValueError(
            f"insample has {scale.shape[0]} columns; the last dimension of the forecasts must "
            f"match, got shape {tuple(values.shape)}"
        )


def mase(forecast: object, observed: object, insample: object, season: int = 1) -> float:
    """Mean absolute scaled error of point forecasts (H,) or (H, D) of ``observed`` (same shape),
    scaled by the :func:`seasonal_error` of ``insample``, the history before the forecast."""
    forecast, observed = _values(forecast, "forecast"), _values(observed, "observed")
    _same_shape({"forecast": forecast, "observed": observed})
    scale = seasonal_error(insample, season)
    _check_scale_columns(forecast, scale)
    return float(((forecast - observed).abs() / scale).mean())


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    return float(alpha)


def _interval_score(lower: Tensor, upper: Tensor, observed: Tensor, alpha: float) -> Tensor:
    below = (lower - observed).clamp(min=0)
    above = (observed - upper).clamp(min=0)
    return (upper - lower) + (2 / alpha) * (below + above)


def msis(
    lower: object,
    upper: object,
    observed: object,
    insample: object,
    season: int = 1,
    alpha: float = 0.05,
) -> float:
    """Mean scaled interval score of central 1 − α intervals [lower, upper] (H,) or (H, D):
    width plus 2/α times each miss, scaled by the :func:`seasonal_error` of ``insample``."""
    lower, upper = _values(lower, "lower"), _values(upper, "upper")
    observed = _values(observed, "observed")
    _same_shape({"lower": lower, "upper": upper, "observed": observed})
    alpha = _check_alpha(alpha)
    if bool((lower > upper).any()):
        raise ValueError("lower must not exceed upper")
    scale = seasonal_error(insample, season)
    _check_scale_columns(observed, scale)
    return float((_interval_score(lower, upper, observed, alpha) / scale).mean())


def _origin_scales(insample: object, origins: int, season: int) -> Tensor:
    """One seasonal error per origin, (origins,) or (origins, D): from one shared history or a
    sequence of per-origin histories."""
    if (
        isinstance(insample, list | tuple)
        and insample
        and all(isinstance(h, Tensor | np.ndarray) for h in insample)
    ):
        if len(insample) != origins:
            raise ValueError(
                f"insample must be one history or one per origin ({origins}), "
                f"got {len(insample)} histories"
            )
        return torch.stack([seasonal_error(h, season) for h in insample])
    scale = seasonal_error(insample, season)
    return scale.expand(origins, *scale.shape)


def horizon_metrics(
    paths: object,
    observed: object,
    insample: object,
    season: int = 1,
    *,
    alpha: float = 0.05,
) -> dict[str, object]:
    """Scores of sample paths per lead time h = 1 … H, averaged over origins (and targets).

    ``paths`` (O, S, H) or (O, S, H, D): S sample paths from each of O forecast origins;
    ``observed`` (O, H) or (O, H, D): what happened; ``insample``: the history that scales MASE
    and MSIS, one array (T,) / (T, D) for every origin or a sequence of O histories (the
    rolling-origin protocol: each origin's own past). Returns ``horizon`` [1 … H], ``origins``,
    ``samples`` and, per metric, a list of H floats: ``crps``, ``mae``, ``rmse``, ``mase``,
    ``msis`` (at ``alpha``), ``coverage_50``, ``coverage_90``.
    """
    paths, observed = _values(paths, "paths"), _values(observed, "observed")
    if paths.dim() not in (3, 4) or paths.shape[1] < 1 or paths.shape[2] < 1:
        raise ValueError(
            f"paths must be (origins, S, H) or (origins, S, H, targets), got {tuple(paths.shape)}"
        )
    expected = (paths.shape[0], *paths.shape[2:])
    if tuple(observed.shape) != expected:
        raise ValueError(
            f"observed must be (origins, H[, targets]) = {expected} like paths, "
            f"got {tuple(observed.shape)}"
        )
    season, alpha = _season(season), _check_alpha(alpha)
    origins = paths.shape[0]
    scale = _origin_scales(insample, origins, season)
    if paths.dim() == 4 and (scale.dim() != 2 or scale.shape[1] != paths.shape[3]):
        raise ValueError(f"insample must have {paths.shape[3]} columns like the paths' targets")
    if paths.dim() == 3 and scale.dim() != 1:
        raise ValueError("insample has columns but the paths have no targets dimension")
    scale = scale.unsqueeze(1)  # (O, 1[, D]): broadcast over horizons

    probs = torch.tensor([0.5, alpha / 2, 1 - alpha / 2, 0.25, 0.75, 0.05, 0.95], dtype=paths.dtype)
    q = torch.quantile(paths, probs, dim=1)  # (7, O, H[, D])
    median = q[0]
    samples_first = paths.transpose(0, 1)  # (S, O, H[, D]) for crps_empirical

    def per_horizon(values: Tensor) -> list[float]:
        """Mean over origins and targets, one float per horizon."""
        flat = values.transpose(0, 1).reshape(values.shape[1], -1)
        return [float(v) for v in flat.mean(1)]

    def inside(low: Tensor, high: Tensor) -> Tensor:
        return ((observed >= low) & (observed <= high)).double()

    squared = (paths.mean(1) - observed) ** 2
    return {
        "horizon": list(range(1, paths.shape[2] + 1)),
        "origins": origins,
        "samples": int(paths.shape[1]),
        "crps": per_horizon(crps_empirical(samples_first, observed)),
        "mae": per_horizon((median - observed).abs()),
        "rmse": [v**0.5 for v in per_horizon(squared)],
        "mase": per_horizon((median - observed).abs() / scale),
        "msis": per_horizon(_interval_score(q[1], q[2], observed, alpha) / scale),
        "coverage_50": per_horizon(inside(q[3], q[4])),
        "coverage_90": per_horizon(inside(q[5], q[6])),
    }
