"""Per-horizon scores of several forecasters in one figure: how skill decays with lead time.

Built like :mod:`bayesrnn.evaluation.forecast_plots`: drawn into the caller's two axes or a new
``matplotlib.figure.Figure`` (pyplot untouched), seaborn's style only inside the call, and with
``path`` an atomic write in the format of its suffix. Bad input is a ValueError.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bayesrnn.evaluation.plots import _STYLE, _axes_pair, _check_path_or_none, _finish

__all__ = ["plot_horizon_scores"]


def _curve(scores: object, name: str, key: str) -> np.ndarray:
    """One method's per-horizon values of ``key`` as a finite 1-D array."""
    if not isinstance(scores, Mapping) or key not in scores:
        raise ValueError(f"scores[{name!r}] must be a mapping with a per-horizon {key!r} list")
    try:
        values = np.asarray(scores[key], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"scores[{name!r}][{key!r}] must be numbers: {error}") from None
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"scores[{name!r}][{key!r}] must be a non-empty list of finite numbers")
    return values


def plot_horizon_scores(
    scores: Mapping[str, Mapping[str, object]],
    path: str | os.PathLike[str] | None = None,
    *,
    level: float = 0.9,
    title: str | None = None,
    ax: Sequence[Axes] | None = None,
) -> Figure:
    """CRPS (left) and the coverage of the central ``level`` interval (right) against the lead
    time h = 1 … H, one line per forecaster.

    ``scores``: ``{name: metrics}``, each as :func:`~bayesrnn.evaluation.horizon_metrics`
    returns them (``crps`` and ``coverage_<100·level>`` lists of H values, H the same for all).
    The first forecaster is drawn thickest (the model among its baselines); the dashed line on
    the right is the nominal coverage. ``ax``: a pair of axes to draw into.
    """
    target = _check_path_or_none(path)
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must map at least one forecaster's name to its metrics")
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    coverage_key = f"coverage_{round(100 * level)}"
    curves = {}
    for name, metrics in scores.items():
        if not isinstance(name, str):
            raise ValueError(f"forecaster names must be strings, got {name!r}")
        curves[name] = (_curve(metrics, name, "crps"), _curve(metrics, name, coverage_key))
    lengths = {name: crps.size for name, (crps, _) in curves.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"every forecaster needs the same number of horizons, got {lengths}")
    steps = np.arange(1, next(iter(lengths.values())) + 1)

    with sns.axes_style(_STYLE):
        if ax is None:
            figure = Figure(figsize=(10.0, 4.0), layout="constrained")
            left, right = figure.subplots(1, 2)
        else:
            pair = list(ax.ravel()) if isinstance(ax, np.ndarray) else ax  # figure.subplots(1, 2)
            left, right = _axes_pair(pair, "CRPS and coverage")
            figure = left.get_figure(root=True)
        palette = sns.color_palette(n_colors=max(10, len(curves)))
        for index, (name, (crps, coverage)) in enumerate(curves.items()):
            style = {"color": palette[index], "marker": "o", "markersize": 3, "label": name}
            style["linewidth"] = 2.5 if index == 0 else 1.2
            left.plot(steps, crps, **style)
            right.plot(steps, coverage, **style)
        right.axhline(level, linestyle="--", color="0.3", label=f"nominal {level:g}")
        left.set(xlabel="lead time h (steps)", ylabel="CRPS (data units; lower is better)")
        right.set(
            xlabel="lead time h (steps)",
            ylabel=f"coverage of the central {level:.0%} interval",
            ylim=(0.0, 1.02),
        )
        for axes in (left, right):
            axes.set_xticks(steps if steps.size <= 12 else steps[:: math.ceil(steps.size / 12)])
        left.legend(loc="best", fontsize="small")
        if title is not None:
            figure.suptitle(title)
    return _finish(figure, target)
