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
from pyro.poutine.runtime import _PYRO_STACK


class LatentScaleMessenger(Messenger):
    """``poutine.scale`` restricted to latent sites."""

    def __init__(self, scale: float) -> None:
        if not scale >= 0:
            raise ValueError(f"scale must be non-negative, got {scale!r}")
        super().__init__()
        self.scale = float(scale)

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.scale * msg["scale"]


def kl_left_out() -> bool:
    """True inside ``scale_kl(…, 0)``: this call's KL counts for nothing and is not computed."""
    return any(isinstance(h, LatentScaleMessenger) and h.scale == 0 for h in _PYRO_STACK)


def scale_kl(fn: Callable, scale: float) -> Callable:
    """Wrap a model or guide so its latent sites (hence the KL) count ``scale`` times.

    A scale of 0 leaves the KL out of the window (:func:`bayesrnn.inference.window_terms` then
    does not compute it).
    """
    return LatentScaleMessenger(scale)(fn)


def epoch_kl_scales(num_windows: int, every: int = 1) -> list[Fraction]:
    """The KL weight of each window of an epoch, as exact fractions summing to one.

    ``every=1``: 1/C on each of the C windows. ``every=k``: the KL is taken on the first window
    of each run of k (windows 0, k, 2k, …) with the weight of its run, k/C (the last run may be
    shorter), and left out of the others. Any weights summing to one over the epoch give the
    same epoch objective, the full-data ELBO (Blundell et al. 2015, section 3.4); a per-weight
    KL over millions of weights then costs 1/k per window.
    """
    if num_windows < 1:
        raise ValueError(f"num_windows must be at least 1, got {num_windows}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    scales = [Fraction(0)] * num_windows
    for first in range(0, num_windows, every):
        scales[first] = Fraction(min(every, num_windows - first), num_windows)
    return scales


def total_weight(scales: Sequence[Fraction]) -> Fraction:
    return sum(scales, Fraction(0))
