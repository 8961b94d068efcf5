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
:attr:`DivergenceGuard.suspect` holds, so the one on disk stays the last good one; it sets
:attr:`DivergenceGuard.checkpoint` so that the message names that file only when it exists.

Real values have no uniform predictor. Their basis is the NLL per value that N(0, 1) scores on
the standardised values being predicted, ½log(2π) + ½·mean(y²), at least ½log(2πe) (its mean
over the training split): a window of values far from the training mean gets a higher ceiling
(pass it as ``update(..., ceiling=...)``). A heteroscedastic forecaster can still score many
nats on a few spiky windows while it generalises well, so a guard made with ``defer=True``
does not stop on the training NLL alone: the verdict waits for the epoch's validation
(:meth:`DivergenceGuard.settle`), and a validation NLL within the ceiling lets training go on.
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = [
    "DivergenceError",
    "DivergenceGuard",
    "NonFiniteLossError",
    "gaussian_ceiling_basis",
    "training_stopped",
    "uniform_ceiling",
]

STANDARD_NORMAL_ENTROPY = 0.5 * math.log(2 * math.pi * math.e)  # ½log(2πe) nats
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _aftermath(checkpoint: Path | None) -> str:
    """What is left on disk: the checkpoint by name when it exists, else that there is none."""
    if checkpoint is not None and Path(checkpoint).is_file():
        return f"training stopped, the last good checkpoint is left intact ({checkpoint})"
    return "training stopped before any checkpoint was written"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; a checkpoint on disk is left untouched."""


class DivergenceError(NonFiniteLossError):
    """A finite NLL stayed above the guard's ceiling for ``patience`` consecutive updates."""


def training_stopped(
    where: str, what: str, checkpoint: str | Path | None = None
) -> NonFiniteLossError:
    """The error for a non-finite value ``what`` (loss, gradient, parameters) at ``where``;
    ``checkpoint`` is the trainer's checkpoint file (named only if it exists)."""
    path = None if checkpoint is None else Path(checkpoint)
    return NonFiniteLossError(f"{what} at {where}; {_aftermath(path)}")


def gaussian_ceiling_basis(sum_squares: float, count: int) -> float:
    """The basis of a real-valued ceiling: the NLL per value of N(0, 1) on ``count``
    standardised values whose squares sum to ``sum_squares``, at least ½log(2πe)."""
    if count <= 0:
        return STANDARD_NORMAL_ENTROPY
    return max(STANDARD_NORMAL_ENTROPY, _HALF_LOG_2PI + 0.5 * sum_squares / count)


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
    ``steps`` the updates ("windows", "batches") in the error message. ``defer``: reaching
    ``patience`` records a verdict that :meth:`settle` confirms or drops after validation.
    ``checkpoint``: the file the trainer writes, for the message.
    """

    def __init__(
        self,
        ceiling: float | None = None,
        patience: int = 5,
        *,
        unit: str = "item",
        steps: str = "updates",
        defer: bool = False,
        checkpoint: str | Path | None = None,
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
        self.defer = bool(defer)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.verdict: str | None = None  # a deferred divergence, waiting for validation

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

    def update(self, nll_per_item: float, where: str, ceiling: float | None = None) -> None:
        """Record one update's NLL per item; raise if training has diverged at ``where``.

        ``ceiling`` replaces the guard's own for this update (a per-window basis)."""
        value = float(nll_per_item)
        if not math.isfinite(value):
            raise training_stopped(where, f"non-finite loss ({value})", self.checkpoint)
        limit = self.ceiling if ceiling is None or self.ceiling is None else float(ceiling)
        if limit is None or value <= limit:
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= self.patience:
            verdict = (
                f"training diverged at {where}: {value:.4g} nats per {self.unit}, above the "
                f"ceiling of {limit:.4g} for {self.streak} consecutive {self.steps}"
            )
            if self.defer:
                self.verdict = self.verdict or verdict
                return
            raise DivergenceError(f"{verdict}; {_aftermath(self.checkpoint)}")

    def settle(self, valid_nll: float | None, where: str) -> bool:
        """After validation: raise on a deferred verdict unless ``valid_nll`` (per item) is
        finite and within the guard's ceiling; True when a verdict was dropped (training goes
        on, the streak starts again).

        A validation NLL that is not finite, or above the ceiling, stops training by itself,
        streak or not: with few updates per epoch (a short series, one window an epoch) the
        streak may never reach ``patience`` while the weights have long blown up."""
        if valid_nll is not None and self.verdict is None:
            value = float(valid_nll)
            if not math.isfinite(value) or (self.ceiling is not None and value > self.ceiling):
                limit = "" if self.ceiling is None else f", above the ceiling of {self.ceiling:.4g}"
                raise DivergenceError(
                    f"training diverged: validation NLL {value:.4g} per {self.unit} at {where}"
                    f"{limit}; {_aftermath(self.checkpoint)}"
                )
        if self.verdict is None:
            return False
        healthy = (
            valid_nll is not None
            and math.isfinite(float(valid_nll))
            and (self.ceiling is None or float(valid_nll) <= self.ceiling)
        )
        if not healthy:
            shown = "no validation" if valid_nll is None else f"validation NLL {valid_nll:.4g}"
            raise DivergenceError(
                f"{self.verdict}, and {shown} at {where} confirms it; {_aftermath(self.checkpoint)}"
            )
        self.verdict, self.streak = None, 0
        return True
