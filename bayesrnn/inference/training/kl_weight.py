"""The KL's weight over training: a linear warm-up, and a temperature.

Window i (from 0) of epoch e (from 0), in an epoch of C windows, weighs its KL by

    β(e, i) = kl_weight × min(1, (e + (i + 1)/C) / E)

with E = ``kl_warmup_epochs`` (β = ``kl_weight`` when E is 0). With a constant C this is
min(1, (windows done + 1)/(E·C)): the weight rises in equal steps from 1/(E·C) to exactly 1
on the warm-up's last window, so every later epoch minimises the ELBO (Bowman et al. 2016 and
Sønderby et al. 2016 anneal the KL this way). It depends only on the position (e, i), which
a checkpoint stores, so a resumed run continues the ramp exactly. ``kl_weight`` = λ ≠ 1 aims
q at the tempered posterior ∝ p(θ)·p(y | θ)^{1/λ}, not the Bayesian one: runs say so.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction

TEMPERED_LABEL = "tempered posterior, not the Bayesian posterior"

__all__ = ["TEMPERED_LABEL", "kl_warmup_weight", "posterior_label", "weighted_kl_scales"]


def kl_warmup_weight(epoch: int, index: int, num_windows: int, warmup_epochs: int) -> float:
    """The warm-up factor min(1, (epoch + (index + 1)/num_windows) / warmup_epochs)."""
    if warmup_epochs == 0:
        return 1.0
    done = Fraction(epoch) + Fraction(index + 1, num_windows)
    return float(min(Fraction(1), done / warmup_epochs))


def weighted_kl_scales(scales: Sequence[float], weights: Sequence[float]) -> list[float]:
    """Each window's KL scale times the KL weights of the windows it stands for.

    ``scales`` is an epoch's split of the KL (:func:`bayesrnn.inference.epoch_kl_scales`);
    a window that carries a run of k windows' KL (``kl_every`` = k) gets the run's mean weight,
    so the epoch's weighted KL is the same whichever ``kl_every``.
    """
    if len(scales) != len(weights):
        raise ValueError(f"{len(scales)} scales but {len(weights)} weights")
    carriers = [i for i, s in enumerate(scales) if s > 0] + [len(scales)]
    out = [0.0] * len(scales)
    for first, end in itertools.pairwise(carriers):
        run = weights[first:end]
        out[first] = scales[first] * sum(run) / len(run)
    return out


def posterior_label(kl_weight: float) -> str | None:
    """What a run with this KL weight trained: the tempered-posterior label, or None at 1."""
    if kl_weight == 1:
        return None
    return f"{TEMPERED_LABEL} (trainer.kl_weight = {kl_weight:g})"
