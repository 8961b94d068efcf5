"""Fortunato et al.'s posterior sharpening on top of Bayes by Backprop (section 4).

Per window: φ ~ q(φ) = N(μ, σ²); g = ∇_φ of the window's negative log-likelihood, by BPTT
through the model run with φ; θ ~ N(φ − η⊙g, σ0²I) with a learned per-weight η. The
hierarchical prior p(θ | φ) = N(φ, σ0²I) makes the extra KL between equal-variance Gaussians
‖η⊙g‖²/(2σ0²), added at full weight to every window (a guide factor, so the trainer's 1/C scale
leaves it alone) while KL[q(φ)‖p(φ)] is split over the epoch as usual.

g is treated as a constant (no second-order terms): gradients reach μ and ρ through φ and η
through −g, at the cost of one extra forward and backward pass. Whether the paper stops these
terms is not stated (reference/papers.md, note 7); this is the cheaper choice.

Evaluation: ``median()`` gives the posterior mean μ of φ (the paper's option 1). With the guide in
``eval()`` mode a call sharpens the mean deterministically, θ = μ − η⊙g(μ), which needs the
targets; the NLL plus the extra KL is then an upper bound (the paper's "≤" rows).
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from torch import nn

from bayesrnn.inference.distributions import SharpenedNormal
from bayesrnn.inference.guides.base import SiteParameters, reject_unknown_options
from bayesrnn.inference.guides.mean_field import MeanFieldGuide

SHARPENING_SITE = "sharpening_kl"


class SharpenedGuide(MeanFieldGuide):
    """Mean-field guide with posterior sharpening; ``sigma0`` is the paper's σ0 (0.02).

    ``eta_init`` defaults to σ0², the step size that minimises −η‖g‖² + η²‖g‖²/(2σ0²), i.e.
    the first-order gain of a step against the gradient against its KL cost.
    """

    def __init__(
        self,
        model: nn.Module,
        sigma0: float = 0.02,
        *,
        eta_init: float | None = None,
        init_scale: str | float = "fortunato",
        **options,
    ) -> None:
        reject_unknown_options(type(self).__name__, options, ["sigma0", "eta_init", "init_scale"])
        if not (isinstance(sigma0, int | float) and sigma0 > 0 and math.isfinite(sigma0)):
            raise ValueError(f"sigma0 must be a positive finite number, got {sigma0!r}")
        super().__init__(model, init_scale=init_scale)
        self.sigma0 = float(sigma0)
        eta = self.sigma0**2 if eta_init is None else float(eta_init)
        if not (eta >= 0 and math.isfinite(eta)):
            raise ValueError(f"eta_init must be a non-negative finite number, got {eta_init!r}")
        self.eta = SiteParameters(
            {s: torch.full_like(self.initial_value(s), eta) for s in self.site_names}
        )

    def data_gradient(self, weights: dict[str, torch.Tensor], *args, **kwargs):
        """∇ of the window's negative log-likelihood at ``weights`` (constants, no graph kept)."""
        leaves = {site: w.detach().requires_grad_(True) for site, w in weights.items()}
        with torch.enable_grad(), poutine.block():
            trace = poutine.trace(poutine.condition(self.model, data=leaves)).get_trace(
                *args, **kwargs
            )
            nll = sum(  # conditioned weight sites count as observed: leave them out
                -site["fn"].log_prob(site["value"]).sum()
                for name, site in trace.nodes.items()
                if site["type"] == "sample" and site["is_observed"] and name not in leaves
            )
            if not isinstance(nll, torch.Tensor):
                raise ValueError("sharpening needs the targets: the model observed no data")
            grads = torch.autograd.grad(nll, list(leaves.values()), allow_unused=True)
        return {
            site: (torch.zeros_like(w) if g is None else g)
            for (site, w), g in zip(leaves.items(), grads, strict=True)
        }

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        sample = self.training
        phi_dists = {site: self.distribution(site) for site in self.site_names}
        phi = {s: d.rsample() if sample else self.loc[s] for s, d in phi_dists.items()}
        grads = self.data_gradient(phi, *args, **kwargs)
        values, extra_kl = {}, torch.zeros(())
        for site in self.site_names:
            step = self.eta[site] * grads[site]
            extra_kl = extra_kl + step.square().sum() / (2 * self.sigma0**2)
            fn = SharpenedNormal(phi_dists[site], phi[site], phi[site] - step, self.sigma0, sample)
            values[site] = pyro.sample(site, fn)
        pyro.factor(SHARPENING_SITE, extra_kl, has_rsample=True)
        return values
