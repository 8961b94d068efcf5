"""The scale mixture over groups of weights, as DeepMind's ``brnn_ptb.py`` computes it.

``CustomScaleMixture.log_prob`` in the official Bayesian RNN example sums each component's
Normal log-density over the last axis of a weight *before* the log-sum-exp: every row (in
TensorFlow's (in, out) layout: all weights leaving one input unit) is one draw from the
two-component mixture, not each weight. A row of real weights then lies far inside the wide
component, so the prior acts as N(0, σ1²) per weight with no σ2 spike. The paper's text
(Fortunato et al. 2017, eq. 18) and Blundell et al. (2015) describe the per-weight mixture,
:class:`bayesrnn.models.priors.ScaleMixtureNormal`.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

GROUPINGS = ("row", "column", "whole")

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def group_dims(grouping: str, event_dim: int) -> tuple[int, ...]:
    """The dims (counted from the right) summed inside one mixture draw."""
    if grouping == "row":
        return (-1,)
    if grouping == "column":
        return (-event_dim,)
    return tuple(range(-event_dim, 0))


def component_log_densities(
    square_sums: torch.Tensor, count: int, pi: float, sigma1: float, sigma2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π + Σ log N(w; 0, σ1²) and log(1−π) + Σ log N(w; 0, σ2²) of groups of ``count``
    weights whose squares sum to ``square_sums``."""
    first = (
        math.log(pi) - count * (math.log(sigma1) + _HALF_LOG_2PI) - square_sums / (2 * sigma1**2)
    )
    second = (
        math.log1p(-pi) - count * (math.log(sigma2) + _HALF_LOG_2PI) - square_sums / (2 * sigma2**2)
    )
    return first, second


class GroupedScaleMixture(TorchDistribution):
    """π Π N(w; 0, σ1²) + (1−π) Π N(w; 0, σ2²) over each group of a weight site.

    ``grouping``: ``"row"`` (slices along the last axis), ``"column"`` (slices along the first
    axis: for a torch ``(out, in)`` matrix, the weights leaving one input unit, which is
    ``brnn_ptb.py``'s row) or ``"whole"`` (the site is one group, as ``brnn_ptb.py`` treats a
    bias vector). ``log_prob`` sums over the groups; the event is the whole site.
    """

    arg_constraints = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, pi: float, sigma1: float, sigma2: float, shape, grouping: str, **kw):
        shape = torch.Size(shape)
        if grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
        if grouping in ("row", "column") and len(shape) < 2:
            raise ValueError(
                f"prior per={grouping!r}: a {grouping}-wise scale mixture needs a weight "
                f"matrix, but this site has shape {tuple(shape)}; give vectors (biases) "
                "per='weight' or per='whole' (brnn_ptb.py treats a bias as one row)"
            )
        self.pi, self.sigma1, self.sigma2 = float(pi), float(sigma1), float(sigma2)
        self.grouping = grouping
        self.device, self.dtype = kw.pop("device", None), kw.pop("dtype", None)
        super().__init__(torch.Size(), shape, validate_args=False)

    @property
    def summed_dims(self) -> tuple[int, ...]:
        """The event dims (from the right) one group spans."""
        return group_dims(self.grouping, len(self.event_shape))

    @property
    def group_size(self) -> int:
        return math.prod(self.event_shape[d] for d in self.summed_dims)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self.event_shape, device=self.device, dtype=self.dtype)

    @property
    def variance(self) -> torch.Tensor:
        v = self.pi * self.sigma1**2 + (1 - self.pi) * self.sigma2**2
        return torch.full(self.event_shape, v, device=self.device, dtype=self.dtype)

    def group_log_prob(self, square_sums: torch.Tensor) -> torch.Tensor:
        """Σ over groups of log p(group), from each group's sum of squares (keeps sample dims)."""
        first, second = component_log_densities(
            square_sums, self.group_size, self.pi, self.sigma1, self.sigma2
        )
        per_group = torch.logaddexp(first, second)
        event_left = len(self.event_shape) - len(self.summed_dims)
        return per_group.flatten(per_group.dim() - event_left).sum(-1) if event_left else per_group

    def group_sums(self, values: torch.Tensor) -> torch.Tensor:
        """Σ of ``values`` over each group (keeps sample dims)."""
        return values.sum(dim=self.summed_dims)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.group_log_prob(self.group_sums(value.square()))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        group_shape = list(shape)
        for d in self.summed_dims:
            group_shape[d] = 1
        with torch.no_grad():
            first = torch.rand(group_shape, device=self.device, dtype=self.dtype) < self.pi
            scale = torch.where(first, self.sigma1, self.sigma2).to(self.dtype or torch.float32)
            return torch.randn(shape, device=self.device, dtype=scale.dtype) * scale

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != torch.Size():
            raise NotImplementedError("GroupedScaleMixture has no batch dimensions")
        return self
