"""Stop a diverged run: a non-finite loss at once, a finite blow-up after a few updates.

A predictor that spreads its probability uniformly over K outcomes scores log K nats per item.
A run that scores many times that, update after update, is not learning but exploding (Adam at
lr 1e6 reached 5.9e6 nats per token), and its perplexity overflows later, far from the cause.
:class:`DivergenceGuard` sees one number per update, the NLL per predicted item (token or
label), so the language-model trainer and the classifier trainer share it:

    guard = DivergenceGuard.uniform(vocab_size, factor=10.0, patience=5, unit="token")
    guard.update(window_nll / window_tokens, where="epoch 2, window 17")

A NaN or infinite NLL raises at once; a finite one above ``factor · log K`` for ``patience``
consecutive updates raises :class:`DivergenceError`. A trainer should write no checkpoint while
:attr:`DivergenceGuard.suspect` holds, so the one on disk stays the last good one.
"""

from __future__ import annotations

import math

__all__ = [
    "DivergenceError",
    "DivergenceGuard",
    "NonFiniteLossError",
    "training_stopped",
    "uniform_ceiling",
]

_LEFT_INTACT = "training stopped, the last good checkpoint is left intact"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint is untouched."""


class DivergenceError(NonFiniteLossError):
    """A finite NLL stayed above the guard's ceiling for ``patience`` consecutive updates."""


def training_stopped(where: str, what: str) -> NonFiniteLossError:
    """The error for a non-finite value ``what`` (loss, gradient, parameters) at ``where``."""
    return NonFiniteLossError(f"{what} at {where}; {_LEFT_INTACT}")


def uniform_ceiling(outcomes: int, factor: float | None) -> float | None:
    """``factor`` times log(``outcomes``), the NLL per item of a uniform predictor.

    None when ``factor`` is None (no ceiling) or there are fewer than two outcomes (every
    predictor then scores 0 nats: no multiple of it is a useful bound).
    """
    if factor is None or outcomes < 2:
        return None
    _check_factor(factor)
    return factor * math.log(outcomes)


def _check_factor(factor: object) -> None:
    if isinstance(factor, bool) or not isinstance(factor, int | float):
        raise ValueError(f"divergence factor must be None or a positive number, got {factor!r}")
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"divergence factor must be None or a positive number, got {factor!r}")


class DivergenceGuard:
    """Counts consecutive updates whose NLL per item exceeds ``ceiling``.

    ``ceiling=None`` checks finiteness only. ``unit`` names an item ("token", "label") and
    ``steps`` the updates ("windows", "batches") in the error message.
    """

    def __init__(
        self,
        ceiling: float | None = None,
        patience: int = 5,
        *,
        unit: str = "item",
        steps: str = "updates",
    ) -> None:
        if ceiling is not None and not (
            isinstance(ceiling, int | float)
            and not isinstance(ceiling, bool)
            and ceiling > 0
            and math.isfinite(ceiling)
        ):
            raise ValueError(f"ceiling must be None or a positive finite number, got {ceiling!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive integer, got {patience!r}")
        self.ceiling = None if ceiling is None else float(ceiling)
        self.patience = patience
        self.unit = unit
        self.steps = steps
        self.streak = 0  # consecutive updates above the ceiling so far

    @classmethod
    def uniform(
        cls,
        outcomes: int,
        factor: float | None = 10.0,
        patience: int = 5,
        *,
        unit: str = "item",
        steps: str = "updates",
    ) -> DivergenceGuard:
        """A guard whose ceiling is ``factor`` × log(``outcomes``) (see :func:`uniform_ceiling`)."""
        return cls(uniform_ceiling(outcomes, factor), patience, unit=unit, steps=steps)

    @property
    def suspect(self) -> bool:
        """Whether the last update was above the ceiling (weights saved now may be diverged)."""
        return self.streak > 0

    def update(self, nll_per_item: float, where: str) -> None:
        """Record one update's NLL per item; raise if training has diverged at ``where``."""
        value = float(nll_per_item)
        if not math.isfinite(value):
            raise training_stopped(where, f"non-finite loss ({value})")
        if self.ceiling is None or value <= self.ceiling:
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= self.patience:
            raise DivergenceError(
                f"training diverged at {where}: {value:.4g} nats per {self.unit}, above the "
                f"ceiling of {self.ceiling:.4g} for {self.streak} consecutive {self.steps}; "
                f"{_LEFT_INTACT}"
            )
