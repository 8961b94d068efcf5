"""Figures for probabilistic forecasts: fan chart, PIT histogram, interval reliability.

Built like :mod:`bayesrnn.evaluation.plots`: drawn into the caller's ``ax=`` or a new
``matplotlib.figure.Figure`` (pyplot untouched), seaborn's style only inside each call, and with
``path`` an atomic write in the format of its suffix (temporary file, then ``os.replace``); each
function returns the figure. Bad input is a ValueError.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bayesrnn.evaluation.forecast import as_draws, interval_coverage, mixture_quantiles
from bayesrnn.evaluation.plots import (
    _STYLE,
    _check_path_or_none,
    _finish,
    _single_axes,
    _to_array,
)
from bayesrnn.models.regressor import Forecast

__all__ = ["plot_forecast_fan", "plot_interval_reliability", "plot_pit_histogram"]

RELIABILITY_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _times(times: object, length: int, name: str) -> np.ndarray:
    """Row times: numbers or dates (numpy datetime64), one per value; row numbers if None."""
    if times is None:
        return np.arange(length)
    if isinstance(times, torch.Tensor):
        times = times.detach().cpu().numpy()
    array = np.asarray(times)
    if array.ndim != 1 or array.shape[0] != length:
        raise ValueError(f"{name} must have one entry per value ({length}), got {array.shape}")
    if array.dtype.kind not in "iufM":
        raise ValueError(f"{name} must be numbers or datetime64, got dtype {array.dtype}")
    return array


def _column(values: object, name: str, column: int) -> np.ndarray:
    """One column of (N,) or (N, D) values as a finite 1-D array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric, got {type(values)!r}") from error
    if array.ndim == 2:
        if not -array.shape[1] <= column < array.shape[1]:
            raise ValueError(f"column {column} is out of range for {name} of {array.shape[1]}")
        array = array[:, column]
    return _to_array(array, name)


def plot_forecast_fan(
    draws: Forecast | Sequence[Forecast],
    observed: object,
    path: str | os.PathLike[str] | None = None,
    *,
    times: object = None,
    history: object = None,
    history_times: object = None,
    column: int = 0,
    levels: Sequence[float] = (0.5, 0.9),
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Fan chart over the forecast range: the observed series, the predictive median and the
    central bands of the S-draw mixture (50% and 90% by default, by exact mixture quantiles).

    ``draws`` (S, N, D) and ``observed`` (N,) or (N, D) are the forecasts and values of N steps;
    ``history`` (and ``history_times``) are earlier values drawn before them for context.
    ``column`` picks the output plotted. ``transform`` maps values to the units shown (e.g.
    ``corpus.unscale``); it must be increasing, so that quantiles map to quantiles. Drawn into
    ``ax`` when given, written to ``path`` when given; returns the figure.
    """
    target = _check_path_or_none(path)
    stacked = as_draws(draws)
    if not -stacked.shape[2] <= column < stacked.shape[2]:
        raise ValueError(f"column {column} is out of range for {stacked.shape[2]} outputs")
    steps = stacked.shape[1]
    values = _column(observed, "observed", column)
    if values.shape[0] != steps:
        raise ValueError(f"observed has {values.shape[0]} steps, the draws {steps}")
    levels = sorted({float(level) for level in levels}, reverse=True)
    if not levels or not all(0 < level < 1 for level in levels):
        raise ValueError(f"levels must lie in (0, 1), got {levels!r}")
    stamps = _times(times, steps, "times")
    probs = [0.5, *(p for level in levels for p in ((1 - level) / 2, (1 + level) / 2))]
    quantiles = mixture_quantiles(stacked[:, :, column : column + 1 or None], probs)[..., 0]

    def shown(array) -> np.ndarray:
        tensor = torch.as_tensor(np.asarray(array, dtype=np.float64))
        out = tensor if transform is None else transform(tensor)
        return np.asarray(torch.as_tensor(out, dtype=torch.float64).cpu().numpy())

    quantiles = shown(quantiles.cpu().numpy())
    values = shown(values)
    past = past_stamps = None
    if history is not None:
        past = shown(_column(history, "history", column))
        past_stamps = _times(history_times, past.shape[0], "history_times")
    colours = sns.color_palette()

    with sns.axes_style(_STYLE):
        figure, axes = _single_axes(ax, (8.0, 4.0))
        for i, level in enumerate(levels):
            low, high = quantiles[1 + 2 * i], quantiles[2 + 2 * i]
            alpha = 0.2 + 0.3 * i / max(1, len(levels) - 1)
            axes.fill_between(
                stamps,
                low,
                high,
                color=colours[0],
                alpha=alpha,
                linewidth=0,
                label=f"{100 * level:g}% interval",
            )
        axes.plot(stamps, quantiles[0], color=colours[0], label="predictive median")
        if past is not None:
            axes.plot(past_stamps, past, color="0.45", linewidth=1.0, label="history")
        axes.plot(
            stamps,
            values,
            color=colours[3],
            linewidth=1.0,
            marker=".",
            markersize=3,
            label="observed",
        )
        axes.set(xlabel="time", ylabel="value")
        axes.legend(loc="best", fontsize="small")
        heading = f"one-step forecasts, {stacked.shape[0]} draw(s)"
        axes.set_title(heading if title is None else f"{title}\n{heading}")
    return _finish(figure, target)


def _pit_values(pit: object, name: str = "pit") -> np.ndarray:
    array = _to_array(pit, name, flatten=True)
    if (array < 0).any() or (array > 1).any():
        raise ValueError(f"{name} values must lie in [0, 1]")
    return array


def plot_pit_histogram(
    pit: object,
    path: str | os.PathLike[str] | None = None,
    *,
    bins: int = 10,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Density histogram of PIT values with the uniform density of a calibrated forecaster and
    its ±2 standard-error band per bin (binomial counts). Drawn into ``ax`` when given, written
    to ``path`` when given; returns the figure."""
    target = _check_path_or_none(path)
    values = _pit_values(pit)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer ≥ 2, got {bins!r}")
    n = values.size
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    density = counts * bins / n
    band = 2 * math.sqrt((1 / bins) * (1 - 1 / bins) / n) * bins  # 2 SE of a bin's density
    colours = sns.color_palette()

    with sns.axes_style(_STYLE):
        figure, axes = _single_axes(ax, (5.0, 4.0))
        axes.axhspan(1 - band, 1 + band, color="0.5", alpha=0.2, label="uniform ± 2 SE", zorder=0)
        axes.bar(
            edges[:-1],
            density,
            width=1 / bins,
            align="edge",
            color=colours[0],
            alpha=0.85,
            edgecolor="white",
            label=f"PIT ({n} values)",
        )
        axes.axhline(1.0, color="0.3", linestyle="--")
        axes.set(xlim=(0.0, 1.0), xlabel="PIT = F(y)", ylabel="density")
        axes.legend(loc="best", fontsize="small")
        if title is not None:
            axes.set_title(title)
    return _finish(figure, target)


def plot_interval_reliability(
    pit: object | Mapping[str, object],
    path: str | os.PathLike[str] | None = None,
    *,
    levels: Sequence[float] = RELIABILITY_LEVELS,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Observed against nominal coverage of central predictive intervals.

    ``pit``: the PIT values of one forecaster, or ``{name: pit}`` to compare several (a model
    and its baselines). The observed coverage at level α is the fraction with
    |PIT − ½| ≤ α/2; the diagonal is perfect calibration, points below it intervals that are
    too narrow. The grey band is ±2 binomial standard errors around the diagonal for the first
    forecaster's number of values. Drawn into ``ax`` when given, written to ``path`` when given;
    returns the figure.
    """
    target = _check_path_or_none(path)
    series = dict(pit) if isinstance(pit, Mapping) else {"forecast": pit}
    if not series:
        raise ValueError("pit must hold at least one forecaster's PIT values")
    nominal = np.asarray(sorted({float(level) for level in levels}))
    if nominal.size == 0 or not ((nominal > 0) & (nominal < 1)).all():
        raise ValueError(f"levels must lie in (0, 1), got {list(levels)!r}")
    curves = {}
    for name, values in series.items():
        if not isinstance(name, str):
            raise ValueError(f"forecaster names must be strings, got {name!r}")
        array = _pit_values(values, f"pit[{name!r}]")
        curves[name] = (
            array.size,
            [interval_coverage(torch.from_numpy(array), a) for a in nominal],
        )
    first_n = next(iter(curves.values()))[0]
    band = 2 * np.sqrt(nominal * (1 - nominal) / first_n)

    with sns.axes_style(_STYLE):
        figure, axes = _single_axes(ax, (5.0, 5.0))
        axes.fill_between(
            nominal,
            nominal - band,
            nominal + band,
            color="0.5",
            alpha=0.2,
            linewidth=0,
            label="± 2 SE",
        )
        axes.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="0.3", label="perfect calibration")
        for (name, (n, observed)), colour in zip(curves.items(), sns.color_palette(), strict=False):
            axes.plot(nominal, observed, marker="o", color=colour, label=f"{name} ({n} values)")
        axes.set(
            xlim=(0.0, 1.0), ylim=(0.0, 1.0), xlabel="nominal coverage", ylabel="observed coverage"
        )
        axes.legend(loc="best", fontsize="small")
        if title is not None:
            axes.set_title(title)
    return _finish(figure, target)
