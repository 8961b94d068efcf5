"""Splitting the KL over the windows of an epoch with a Pyro effect handler.

With C windows (minibatches × truncations) in an epoch, each window's loss is
−log p(y_window | θ) + KL/C (Fortunato et al. 2017, eqs. 4–5), so one epoch adds up to exactly
one KL. :func:`scale_kl` multiplies the scale of every *latent* sample site, in the model and in
the guide, and leaves observed sites (the likelihood, guide factors) at full weight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction

from pyro.poutine.messenger import Messenger


class LatentScaleMessenger(Messenger):
    """``poutine.scale`` restricted to latent sites."""

    def __init__(self, scale: float) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        super().__init__()
        self.scale = float(scale)

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.scale * msg["scale"]


def scale_kl(fn: Callable, scale: float) -> Callable:
    """Wrap a model or guide so its latent sites (hence the KL) count ``scale`` times."""
    return LatentScaleMessenger(scale)(fn)


def epoch_kl_scales(num_windows: int) -> list[Fraction]:
    """The KL weight of each window of an epoch, 1/C each, as exact fractions summing to one."""
    if num_windows < 1:
        raise ValueError(f"num_windows must be at least 1, got {num_windows}")
    return [Fraction(1, num_windows)] * num_windows


def total_weight(scales: Sequence[Fraction]) -> Fraction:
    return sum(scales, Fraction(0))
