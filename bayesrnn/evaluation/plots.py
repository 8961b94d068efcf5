"""Figures for evaluation reports: reliability diagram, entropy histograms, pruning curve and
ELBO trace.

Every function returns the ``matplotlib.figure.Figure`` it drew on. With ``ax=`` it draws into
the caller's axes (a pair of axes for the two-panel plots) and returns their figure, leaving it
open and otherwise untouched; without, it builds its own ``Figure`` directly, never through
pyplot, so no global backend is chosen or changed, nothing is registered with pyplot (such a
figure is freed like any object once dropped: there is nothing to close), and the functions work
on headless machines. Seaborn styles apply only inside each call. With ``path`` the figure is
also written, in any format matplotlib writes (chosen by the suffix: .png, .pdf, .svg, ...): the
parent directory is created and the file written beside the target and moved into place with
``os.replace``, so a reader never sees a half-written file.
"""

import contextlib
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bayesrnn.data.atomic import temporary_path
from bayesrnn.evaluation.calibration import ReliabilityBins

type Curve = torch.Tensor | np.ndarray | Sequence[float]

_STYLE = "whitegrid"
_DPI = 120


def _to_array(values: object, name: str, flatten: bool = False) -> np.ndarray:
    """Finite, non-empty 1-D float array from a tensor, array or sequence."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {type(values)!r}") from err
    if flatten:
        array = array.ravel()
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path whose suffix names a format matplotlib can write."""
    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"path must be a str or os.PathLike, got {type(path)!r}")
    target = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    if target.suffix.lower().lstrip(".") not in formats:
        raise ValueError(
            f"path must end in a suffix matplotlib can write ({', '.join(sorted(formats))}), "
            f"got {str(target)!r}"
        )
    return target


def _check_path_or_none(path: str | os.PathLike[str] | None) -> Path | None:
    return None if path is None else _check_path(path)


def _root_figure(ax: object, name: str = "ax") -> Figure:
    """The figure holding ``ax`` (the top one when ``ax`` sits in a subfigure)."""
    if not isinstance(ax, Axes):
        raise ValueError(f"{name} must be a matplotlib Axes, got {type(ax)!r}")
    return ax.get_figure(root=True)


def _single_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The caller's axes and their figure, or a new one-panel Figure (not pyplot's)."""
    if ax is None:
        figure = Figure(figsize=figsize, layout="constrained")
        return figure, figure.subplots()
    if not isinstance(ax, Axes):
        raise ValueError(
            f"ax must be one matplotlib Axes (this plot has a single panel), got {type(ax)!r}"
        )
    return _root_figure(ax), ax


def _axes_pair(ax: object, what: str) -> tuple[Axes, Axes]:
    """Two axes given for a two-panel plot, or a clear error."""
    if isinstance(ax, Axes) or not isinstance(ax, Sequence) or len(ax) != 2:
        raise ValueError(f"ax must be a pair of matplotlib Axes ({what}), got {ax!r}")
    for index, each in enumerate(ax):
        _root_figure(each, f"ax[{index}]")
    return ax[0], ax[1]


def _finish(figure: Figure, target: Path | None) -> Figure:
    """Write ``figure`` to ``target`` when one is given; the figure either way."""
    if target is not None:
        _save(figure, target)
    return figure


def _save(figure: Figure, target: Path) -> Path:
    """Render ``figure`` to ``target`` atomically (temp file in the same dir, then os.replace),
    in the format its suffix names."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if type(figure.canvas) is FigureCanvasBase:  # our own figure: an Agg canvas draws it
        FigureCanvasAgg(figure)
    fmt = target.suffix.lower().lstrip(".")
    temp = temporary_path(target)
    try:
        # os.open with mode 0o666 keeps the user's umask (mkstemp would force 0o600).
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
            figure.savefig(fh, format=fmt, dpi=_DPI)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return target


def plot_reliability_diagram(
    bins: ReliabilityBins,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    *,
    ax: Axes | Sequence[Axes] | None = None,
) -> Figure:
    """Accuracy against confidence per bin, with the diagonal of perfect calibration and the
    number of items per bin below; the title reports ECE and MCE.

    ``ax``: one Axes for the diagram alone (no count panel, to fit a grid of plots), or a pair
    (diagram, counts); the figure is written to ``path`` when given and returned."""
    if not isinstance(bins, ReliabilityBins):
        raise ValueError(f"bins must be a ReliabilityBins, got {type(bins)!r}")
    target = _check_path_or_none(path)
    count = bins.count.detach().cpu().numpy()
    if count.sum() == 0:
        raise ValueError("bins holds no items")
    lower = bins.lower.detach().cpu().numpy()
    width = bins.upper.detach().cpu().numpy() - lower
    filled = count > 0
    accuracy = np.where(filled, bins.accuracy.detach().cpu().numpy(), 0.0)
    confidence = np.where(filled, bins.confidence.detach().cpu().numpy(), 0.0)
    colours = sns.color_palette()

    with sns.axes_style(_STYLE):
        if ax is None:
            figure = Figure(figsize=(5.0, 6.0), layout="constrained")
            top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        elif isinstance(ax, Axes):
            figure, top, bottom = _root_figure(ax), ax, None
        else:
            top, bottom = _axes_pair(ax, "the diagram and the counts per bin")
            figure = _root_figure(top)
        top.bar(
            lower,
            accuracy,
            width=width,
            align="edge",
            color=colours[0],
            edgecolor="white",
            label="accuracy",
        )
        top.bar(
            lower[filled],
            (confidence - accuracy)[filled],
            bottom=accuracy[filled],
            width=width[filled],
            align="edge",
            color=colours[3],
            alpha=0.35,
            edgecolor=colours[3],
            hatch="//",
            label="gap to confidence",
        )
        top.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="0.3", label="perfect calibration")
        top.set(xlim=(0.0, 1.0), ylim=(0.0, 1.0), ylabel="accuracy")
        top.legend(loc="best")
        heading = f"ECE {bins.ece:.4f}   MCE {bins.mce:.4f}   ({bins.strategy} bins)"
        top.set_title(heading if title is None else f"{title}\n{heading}")
        xlabel = "confidence (top-1 probability)"
        if bottom is None:
            top.set(xlabel=xlabel)
        else:
            bottom.bar(lower, count, width=width, align="edge", color=colours[0], edgecolor="white")
            bottom.set(xlabel=xlabel, ylabel="items")
    return _finish(figure, target)


def plot_entropy_histograms(
    in_entropy: Curve,
    out_entropy: Curve,
    path: str | os.PathLike[str] | None = None,
    labels: tuple[str, str] = ("in-distribution", "out-of-distribution"),
    *,
    ax: Axes | None = None,
) -> Figure:
    """Overlaid density histograms of per-item entropies (nats) of two data sets, on shared bins;
    for OOD checks and Fortunato's forward vs reversed text. Drawn into ``ax`` when given,
    written to ``path`` when given; returns the figure."""
    target = _check_path_or_none(path)
    first = _to_array(in_entropy, "in_entropy", flatten=True)
    second = _to_array(out_entropy, "out_entropy", flatten=True)
    if len(labels) != 2 or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"labels must be two strings, got {labels!r}")
    low = min(first.min(), second.min())
    high = max(first.max(), second.max())
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, 51)

    with sns.axes_style(_STYLE):
        figure, axes = _single_axes(ax, (6.0, 4.0))
        palette = sns.color_palette()
        for values, label, colour in zip((first, second), labels, palette[:2], strict=True):
            sns.histplot(
                x=values,
                bins=edges,
                stat="density",
                element="step",
                alpha=0.3,
                color=colour,
                label=f"{label} (mean {values.mean():.3f})",
                ax=axes,
            )
        axes.set(xlabel="entropy (nats)", ylabel="density")
        axes.legend()
    return _finish(figure, target)


def plot_pruning_curve(
    fractions: Curve,
    perplexities: Curve,
    path: str | os.PathLike[str] | None = None,
    *,
    ax: Axes | None = None,
) -> Figure:
    """Perplexity against the fraction of weights pruned by signal-to-noise ratio (Fortunato).
    Drawn into ``ax`` when given, written to ``path`` when given; returns the figure."""
    target = _check_path_or_none(path)
    x = _to_array(fractions, "fractions")
    y = _to_array(perplexities, "perplexities")
    if x.shape != y.shape:
        raise ValueError(f"fractions and perplexities differ in length: {x.size} vs {y.size}")
    if ((x < 0) | (x > 1)).any():
        raise ValueError("fractions must lie in [0, 1]")
    if (y <= 0).any():
        raise ValueError("perplexities must be positive")
    order = np.argsort(x, kind="stable")

    with sns.axes_style(_STYLE):
        figure, axes = _single_axes(ax, (6.0, 4.0))
        sns.lineplot(x=100.0 * x[order], y=y[order], marker="o", sort=False, ax=axes)
        axes.set(xlabel="weights pruned (%)", ylabel="perplexity", xlim=(0.0, 100.0))
    return _finish(figure, target)


def _epoch_mean_counts(counts: np.ndarray, epoch_starts: Sequence[int]) -> np.ndarray:
    """Each step's epoch's mean items per step (epochs cut at ``epoch_starts``)."""
    means = np.empty_like(counts, dtype=float)
    bounds = [0, *(s for s in epoch_starts if 0 < s < counts.size), counts.size]
    for begin, end in itertools.pairwise(bounds):
        if end > begin:
            means[begin:end] = counts[begin:end].mean()
    return means


def plot_elbo_trace(
    elbo: Curve,
    path: str | os.PathLike[str] | None = None,
    kl: Curve | None = None,
    nll: Curve | None = None,
    *,
    items: Curve | None = None,
    epoch_starts: Sequence[int] = (),
    ax: Axes | Sequence[Axes] | None = None,
) -> Figure:
    """ELBO per step; with ``kl`` and/or ``nll`` (same length) a second panel shows the terms,
    to see whether the KL or the data term drives training. ``items`` (tokens or labels per
    step) puts every curve per item, comparable across batch sizes and windows; dashed lines
    mark ``epoch_starts`` (step indices). Each step's KL is its 1/C share of the epoch's KL
    whatever the step's length, so per item it is divided by the epoch's mean items per step
    (the ELBO per item is −NLL/items − KL share/mean): dividing it by a short last window's own
    count would plot a dip at every epoch's end that is not in the objective. ``ax``: one Axes
    for the ELBO alone, a pair (ELBO, terms) with ``kl`` or ``nll``. Written to ``path`` when
    given; returns the figure."""
    target = _check_path_or_none(path)
    trace = _to_array(elbo, "elbo")
    terms = {}
    for name, values in (("nll", nll), ("kl", kl)):
        if values is not None:
            terms[name] = _to_array(values, name)
            if terms[name].shape != trace.shape:
                raise ValueError(f"{name} must have the length of elbo ({trace.size})")
    unit = ""
    if items is not None:
        counts = _to_array(items, "items")
        if counts.shape != trace.shape or not (counts > 0).all():
            raise ValueError(f"items must be {trace.size} positive counts, one per step")
        per_step = _epoch_mean_counts(counts, epoch_starts)
        if "kl" in terms:
            trace = (trace + terms["kl"]) / counts - terms["kl"] / per_step
        else:
            trace = trace / counts
        terms = {
            name: values / (per_step if name == "kl" else counts) for name, values in terms.items()
        }
        unit = " per item"
    steps = np.arange(trace.size)

    with sns.axes_style(_STYLE):
        if ax is None:
            figure = Figure(figsize=(7.0, 6.0 if terms else 4.0), layout="constrained")
            panels = figure.subplots(2 if terms else 1, 1, sharex=True, squeeze=False)[:, 0]
        elif terms:
            panels = _axes_pair(ax, "the ELBO and its terms, as kl or nll are given")
            figure = _root_figure(panels[0])
        else:
            figure, single = _single_axes(ax, (7.0, 4.0))
            panels = [single]
        sns.lineplot(x=steps, y=trace, ax=panels[0])
        panels[0].set(ylabel="ELBO" + unit)
        for (name, values), colour in zip(terms.items(), sns.color_palette()[1:], strict=False):
            sns.lineplot(x=steps, y=values, color=colour, label=name.upper(), ax=panels[-1])
        if terms:
            panels[-1].set(ylabel="term" + unit)
        for start in epoch_starts:
            if 0 < start < trace.size:
                for panel in panels:
                    panel.axvline(start - 0.5, color="grey", linestyle="--", linewidth=0.8)
        panels[-1].set(xlabel="step (dashed: epoch starts)" if len(epoch_starts) else "step")
    return _finish(figure, target)
