"""Early stopping on a validation metric, keeping the best epoch's parameters.

After each epoch's validation the trainer asks :class:`EarlyStopping` whether the monitored
metric improved on the best so far (by more than ``min_delta``). An improvement makes the
epoch the best one: the trainer keeps a copy of its parameters (and writes them, atomically,
to a ``*.best.pt`` file beside the checkpoint). ``patience`` epochs in a row without one stop
training, and the trainer puts the best parameters back. Lower is better, except for metrics
named like accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["EarlyStopping", "best_checkpoint_path", "monitored_metric"]

# What a validation reports, in the order the default monitor prefers it.
_PREFERRED = ("valid_nll", "valid_perplexity", "valid_accuracy")


def monitored_metric(results: dict[str, float], monitor: str | None) -> tuple[str, float]:
    """The (name, value) watched in a validation's ``results``: ``monitor``, or by default the
    NLL, else the perplexity, else the first value reported."""
    if not results:
        raise ValueError("validation reported no metric to monitor")
    if monitor is not None:
        if monitor not in results:
            raise ValueError(
                f"monitor {monitor!r} is not among the validation results {sorted(results)}"
            )
        return monitor, float(results[monitor])
    name = next((key for key in _PREFERRED if key in results), next(iter(results)))
    return name, float(results[name])


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better (accuracies), not smaller."""
    return "accuracy" in name


def best_checkpoint_path(checkpoint: str | Path) -> Path:
    """The best-validation checkpoint beside ``checkpoint``: ``checkpoint.best.pt``."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.best{path.suffix or '.pt'}")


class EarlyStopping:
    """Counts epochs without improvement of the monitored validation metric.

    ``patience`` None only tracks the best epoch (never stops); a positive integer stops after
    that many epochs in a row without improvement. A NaN value never improves.
    """

    def __init__(
        self, patience: int | None, *, min_delta: float = 0.0, monitor: str | None = None
    ) -> None:
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
        ):
            raise ValueError(f"patience must be None or a positive integer, got {patience!r}")
        if not (isinstance(min_delta, int | float) and min_delta >= 0):
            raise ValueError(f"min_delta must be a number >= 0, got {min_delta!r}")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.monitor = monitor
        self.metric: str | None = None
        self.best: float | None = None
        self.best_epoch: int | None = None  # counted from 0
        self.bad_epochs = 0
        self.latest: float | None = None  # the last value seen (for ReduceLROnPlateau)

    def update(self, epoch: int, results: dict[str, float]) -> tuple[bool, bool]:
        """Record epoch ``epoch``'s validation; returns (improved, stop now)."""
        name, value = monitored_metric(results, self.monitor)
        self.metric, self.latest = name, value
        sign = -1.0 if higher_is_better(name) else 1.0
        improved = math.isfinite(value) and (
            self.best is None or sign * value < sign * self.best - self.min_delta
        )
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        stop = self.patience is not None and self.bad_epochs >= self.patience
        return improved, stop

    def state_dict(self) -> dict:
        """Plain values for a checkpoint (resume goes on counting where it left off)."""
        return {
            "metric": self.metric,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "latest": self.latest,
        }

    def load_state_dict(self, state: dict) -> None:
        self.metric = state.get("metric")
        self.best = state.get("best")
        self.best_epoch = state.get("best_epoch")
        self.bad_epochs = int(state.get("bad_epochs", 0))
        self.latest = state.get("latest")
