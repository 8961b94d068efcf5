"""The guide of a model with no weight sites: deterministic baselines run by the same trainer."""

from __future__ import annotations

import torch
from torch import nn

from bayesrnn.models.bayesian import weight_sites


class DeterministicGuide(nn.Module):
    """Guide for ``prior=None`` models (Zaremba dropout, zoneout, AWD baselines).

    Their weights are ordinary parameters trained by the same ELBO, which then has no KL and is
    the plain log-likelihood; the guide samples nothing and its "posterior mean" is empty.
    """

    def __init__(self, model: nn.Module, **options) -> None:
        if options:
            raise ValueError(f"unknown option(s) {sorted(options)} for DeterministicGuide")
        super().__init__()
        if weight_sites(model):
            raise ValueError(
                "DeterministicGuide is for models built with prior=None; this model has "
                "Bayesian weight sites — use a variational guide"
            )

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {}

    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {}
