"""A multi-step forecast held as sample paths: summaries, a table and a fan chart.

Quantiles of sample paths are empirical (torch's linear interpolation between order
statistics): with S paths their Monte Carlo error shrinks like 1/√S, so take thousands for
tail quantiles. Every summary is marginal per step; the paths themselves keep the joint law
(sums, maxima, the first crossing of a level are read off them directly).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from bayesrnn.data.atomic import atomic_write
from bayesrnn.evaluation.plots import _STYLE, _check_path_or_none, _finish, _single_axes

__all__ = ["QUANTILE_LEVELS", "PathForecast"]

QUANTILE_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


def _check_probs(q: float | Sequence[float]) -> list[float]:
    values = [q] if isinstance(q, int | float) and not isinstance(q, bool) else list(q)
    if not values or not all(
        isinstance(p, int | float) and not isinstance(p, bool) and 0 <= p <= 1 for p in values
    ):
        raise ValueError(f"quantile levels must lie in [0, 1], got {q!r}")
    return [float(p) for p in values]


@dataclass(frozen=True, eq=False)
class PathForecast:
    """S sample paths of H forecast steps, ``paths`` (S, H, D), in the data's units.

    ``times`` (H,) are the steps' times (the series' own times continued, or row positions
    after the history's end); ``columns`` names the D targets. ``history`` and
    ``history_times`` are the end of the observed series, drawn before the fan.
    """

    paths: Tensor
    times: np.ndarray
    columns: tuple[str, ...]
    history: Tensor | None = field(default=None, repr=False)
    history_times: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.paths.dim() != 3 or self.paths.shape[2] != len(self.columns):
            raise ValueError(
                f"paths must be (S, H, {len(self.columns)}), got {tuple(self.paths.shape)}"
            )
        if len(self.times) != self.paths.shape[1]:
            raise ValueError(f"times must have one entry per step ({self.paths.shape[1]})")

    def __repr__(self) -> str:
        s, h, _ = self.paths.shape
        span = f"{self.times[0]}..{self.times[-1]}" if h > 1 else f"{self.times[0]}"
        return f"PathForecast({s} paths, {h} steps at {span}, columns={list(self.columns)})"

    @property
    def num_samples(self) -> int:
        return int(self.paths.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.paths.shape[1])

    @property
    def mean(self) -> Tensor:
        """The mean over paths of each step, (H, D)."""
        return self.paths.mean(0)

    def quantiles(self, q: float | Sequence[float]) -> Tensor:
        """Empirical quantiles per step: (H, D) for one level, (len(q), H, D) for several."""
        probs = _check_probs(q)
        levels = torch.tensor(probs, dtype=self.paths.dtype, device=self.paths.device)
        result = torch.quantile(self.paths, levels, dim=0)
        return result[0] if isinstance(q, int | float) else result

    def to_frame(self, levels: Sequence[float] = QUANTILE_LEVELS):
        """A pandas DataFrame, one row per step and target: ``time``, ``step`` (1 … H),
        ``column``, ``mean`` and one ``q<percent>`` column per level (``q5``, ``q25``, …)."""
        import pandas

        probs = _check_probs(levels)
        quantiles = self.quantiles(probs).cpu().numpy()
        mean = self.mean.cpu().numpy()
        rows = []
        for h in range(self.horizon):
            for d, name in enumerate(self.columns):
                row = {"time": self.times[h], "step": h + 1, "column": name, "mean": mean[h, d]}
                for i, p in enumerate(probs):
                    row[f"q{100 * p:g}".replace(".", "_")] = quantiles[i, h, d]
                rows.append(row)
        return pandas.DataFrame(rows)

    def to_csv(
        self, path: str | os.PathLike[str], levels: Sequence[float] = QUANTILE_LEVELS
    ) -> Path:
        """Write :meth:`to_frame` as CSV (whole or not at all); returns the path."""
        text = self.to_frame(levels).to_csv(index=False)
        return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))

    def to_string(self, levels: Sequence[float] = QUANTILE_LEVELS) -> str:
        buffer = io.StringIO()
        self.to_frame(levels).to_string(buffer, index=False, float_format=lambda v: f"{v:.4g}")
        return buffer.getvalue()

    def plot(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        ax: Axes | None = None,
        column: int = 0,
        levels: Sequence[float] = (0.5, 0.9),
        show_paths: int = 3,
    ) -> Figure:
        """Fan chart of one target: the history's end, the median and central bands of the
        paths (50% and 90% by default), and ``show_paths`` single paths for texture. Drawn into
        ``ax`` when given, written to ``path`` when given (format from its suffix)."""
        target = _check_path_or_none(path)
        if not -len(self.columns) <= column < len(self.columns):
            raise ValueError(f"column {column} is out of range for {len(self.columns)} targets")
        bands = sorted({float(level) for level in levels}, reverse=True)
        if not bands or not all(0 < level < 1 for level in bands):
            raise ValueError(f"levels must lie in (0, 1), got {list(levels)!r}")
        values = self.paths[..., column].double().cpu()
        with sns.axes_style(_STYLE):
            figure, axes = _single_axes(ax, (8.0, 3.5))
            if self.history is not None:
                axes.plot(
                    self.history_times,
                    self.history[:, column].cpu().numpy(),
                    color="black",
                    lw=1.2,
                    label="observed",
                )
            for i, level in enumerate(bands):
                low, high = torch.quantile(
                    values, torch.tensor([(1 - level) / 2, (1 + level) / 2]).double(), dim=0
                ).numpy()
                axes.fill_between(
                    self.times, low, high, color="C0", alpha=0.2 + 0.2 * i,
                    lw=0, label=f"{100 * level:g}% band",
                )  # fmt: skip
            for k in range(min(show_paths, values.shape[0])):
                axes.plot(self.times, values[k].numpy(), color="C1", lw=0.6, alpha=0.7)
            axes.plot(
                self.times,
                torch.quantile(values, 0.5, dim=0).numpy(),
                color="C0",
                lw=1.5,
                label="median",
            )
            axes.set_title(f"{self.columns[column]}: {self.num_samples} sample paths")
            axes.legend(loc="best", fontsize="small")
        return _finish(figure, target)
