"""Fortunato et al.'s posterior sharpening on top of Bayes by Backprop (section 4).

Per window: φ ~ q(φ) = N(μ, σ²); g = ∇_φ of the window's negative log-likelihood, by BPTT
through the model run with φ; θ ~ N(φ − η⊙g, σ0²I) with a learned per-weight η. The
hierarchical prior p(θ | φ) = N(φ, σ0²I) makes the extra KL between equal-variance Gaussians
‖η⊙g‖²/(2σ0²), added at full weight to every window (a guide factor, so the trainer's 1/C scale
leaves it alone) while KL[q(φ)‖p(φ)] is split over the epoch as usual.

g is treated as a constant (no second-order terms): gradients reach μ and ρ through φ and η
through −g, at the cost of one extra forward and backward pass. Whether the paper stops these
terms is not stated in Fortunato et al. 2017; this is the cheaper choice.

η is bounded: η = η_max·sigmoid(ψ) with ψ learned per weight and η_max = 2σ0² by default. To
first order in η the window loss is −η‖g‖² + η²‖g‖²/(2σ0²), minimised at η = σ0² whatever g
is, so the bound leaves the optimum inside while an unbounded η, whose curvature ‖g‖²/σ0² is
huge under plain SGD with lr 1, would overshoot and diverge.

Evaluation: ``median()`` gives the posterior mean μ of φ and, in ``eval()`` mode, a call samples
q(φ) without sharpening (the paper's option 1, also for MC). ``sharpened_weights(...)`` gives
the centre μ − η⊙g(μ) of the sharpened posterior q(θ | φ = μ, x, y) = N(μ − η⊙g, σ0²I) on a
batch's targets and its KL against p(θ | φ = μ) = N(μ, σ0²I). The NLL *at that centre* plus the
KL is not a bound: it leaves out the σ0 noise. The upper bound of the paper's "≤" rows averages
the NLL over θ drawn from q(θ | φ = μ, x, y) (:func:`bayesrnn.inference.sharpened_bound`).
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from torch import nn

from bayesrnn.inference.estimators.distributions import SharpenedNormal
from bayesrnn.inference.guides.base import SiteParameters, reject_unknown_options
from bayesrnn.inference.guides.mean_field import MeanFieldGuide
from bayesrnn.inference.runtime.distributed import Ranks, all_reduce_tensors, current_ranks
from bayesrnn.models.sequence_share import sharing_sequences

SHARPENING_SITE = "sharpening_kl"


def window_nll_gradient(model, weights: dict[str, torch.Tensor], *args, **kwargs):
    """The window's summed NLL at ``weights`` and its gradient there (the paper's g_φ).

    g is the gradient of the NLL summed over the window's tokens, the term it sits beside in the
    ELBO; the sharpening KL at full weight then makes η = σ0² the first-order optimum whatever
    the batch size (see the module docstring). Returns (nll, {site: g}); no graph is kept.
    """
    leaves = {site: w.detach().requires_grad_(True) for site, w in weights.items()}
    with torch.enable_grad(), poutine.block():
        try:
            trace = poutine.trace(poutine.condition(model, data=leaves)).get_trace(*args, **kwargs)
        except ValueError as error:
            if "collide" not in str(error):
                raise
            raise ValueError(
                "posterior sharpening runs the model inside the guide, and Pyro put the guide's "
                "draws in a plate at a dim the model's plates use (Predictive guesses the plate "
                "dims from the guide alone). For parallel prediction put the guide in eval() "
                "mode (it then samples q(φ), the paper's option 1) or use parallel=False"
            ) from error
        nll = sum(  # conditioned weights and recorded values (pyro.deterministic) are no data
            -site["fn"].log_prob(site["value"]).sum()
            for name, site in trace.nodes.items()
            if site["type"] == "sample"
            and site["is_observed"]
            and name not in leaves
            and not site["infer"].get("_deterministic", False)
        )
        if not isinstance(nll, torch.Tensor):
            raise ValueError(
                "posterior sharpening needs the targets, and the model observed none (a "
                "Predictive call without targets, say): pass the targets, or put the guide in "
                "eval() mode to sample q(φ) without sharpening (the paper's option 1)"
            )
        grads = torch.autograd.grad(nll, list(leaves.values()), allow_unused=True)
    gradient = {
        site: (torch.zeros_like(w) if g is None else g)
        for (site, w), g in zip(leaves.items(), grads, strict=True)
    }
    return float(nll.detach()), gradient


class SharpenedGuide(MeanFieldGuide):
    """Mean-field guide with posterior sharpening; ``sigma0`` is the paper's σ0 (0.02).

    ``eta_init`` defaults to σ0², the step size that minimises −η‖g‖² + η²‖g‖²/(2σ0²), i.e.
    the first-order gain of a step against the gradient against its KL cost; ``eta_max``
    (default 2σ0²) bounds η.
    """

    def __init__(
        self,
        model: nn.Module,
        sigma0: float = 0.02,
        *,
        eta_init: float | None = None,
        eta_max: float | None = None,
        init_scale: str | float = "auto",
        kl: str = "expected",
        quadrature_order: int = 8,
        name: str | None = None,
        **options,
    ) -> None:
        reject_unknown_options(
            type(self).__name__,
            options,
            ["sigma0", "eta_init", "eta_max", "init_scale", "kl", "quadrature_order", "name"],
        )
        if not (isinstance(sigma0, int | float) and sigma0 > 0 and math.isfinite(sigma0)):
            raise ValueError(f"sigma0 must be a positive finite number, got {sigma0!r}")
        super().__init__(
            model, init_scale=init_scale, kl=kl, quadrature_order=quadrature_order, name=name
        )
        self.sigma0 = float(sigma0)
        self.eta_max = 2 * self.sigma0**2 if eta_max is None else float(eta_max)
        eta = self.sigma0**2 if eta_init is None else float(eta_init)
        if not (self.eta_max > 0 and math.isfinite(self.eta_max)):
            raise ValueError(f"eta_max must be a positive finite number, got {eta_max!r}")
        if not 0 < eta < self.eta_max:
            raise ValueError(f"eta_init must lie in (0, eta_max={self.eta_max}), got {eta!r}")
        psi = math.log(eta / (self.eta_max - eta))  # sigmoid(ψ)·η_max = η
        self.psi = SiteParameters(
            {s: torch.full_like(self.initial_value(s), psi) for s in self.site_names}
        )

    def eta(self, site: str) -> torch.Tensor:
        """The per-weight sharpening step size η = η_max·sigmoid(ψ)."""
        return self.eta_max * torch.sigmoid(self.psi[site])

    def data_gradient(self, weights: dict[str, torch.Tensor], *args, **kwargs):
        """∇ of the window's negative log-likelihood at ``weights`` (constants, no graph kept)."""
        return window_nll_gradient(self.model, weights, *args, **kwargs)[1]

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        if not self.training:  # evaluation samples q(φ): no use of the batch's targets
            return super().forward(*args, **kwargs)
        rows = {site: self.rows_to_draw(site, *args, **kwargs) for site in self.site_names}
        phi_dists = {site: self.distribution(site, rows[site]) for site in self.site_names}
        phi = {site: d.rsample() for site, d in phi_dists.items()}
        # Under torch.distributed the window's g sums every process's sequences (the NLL is a
        # sum): all draw the same θ, one process's, and share the extra KL, counted once.
        ranks = current_ranks() if sharing_sequences() else Ranks()
        grads = all_reduce_tensors(self.data_gradient(phi, *args, **kwargs), ranks)
        values, extra_kl = {}, torch.zeros(())
        step_square = sigma_square = 0.0
        for site in self.site_names:
            fn = SharpenedNormal(
                phi_dists[site],
                phi[site],
                self.psi[site],
                grads[site],
                self.eta_max,
                self.sigma0,
                rows[site],  # g is zero off the rows read: only those move
            )
            values[site] = pyro.sample(site, fn)
            square = fn.step_square  # ‖η⊙g‖², computed by the draw
            if square is None:  # a plate drew a batch of θ: the norm on its own
                square = (self.eta(site) * grads[site]).square().sum()
            extra_kl = extra_kl + square / (2 * self.sigma0**2)
            # q(φ)'s own σ, with its graph: a row-sampled q computes it once, here, for the KL too
            sigma = phi_dists[site].base_dist.scale.reshape(-1)
            with torch.no_grad():
                step_square += float(square)
                sigma_square += float(torch.dot(sigma, sigma))
        values.update(self.sample_scales())
        pyro.factor(SHARPENING_SITE, extra_kl / ranks.world, has_rsample=True)
        # ‖η⊙g‖/‖σ‖: how far sharpening moves θ against q(φ)'s own spread (trainer logs it).
        self.diagnostics = {"sharpening_step_ratio": math.sqrt(step_square / sigma_square)}
        return values

    def sharpened_weights(self, *args, **kwargs) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The centre μ − η⊙g(μ) of q(θ | φ = μ, x, y) on this batch's targets, and that
        posterior's KL against p(θ | φ = μ), ‖η⊙g‖²/(2σ0²).

        The NLL at the centre plus this KL is no bound (it leaves out the σ0 noise of q);
        :func:`bayesrnn.inference.sharpened_bound` averages the NLL over draws of q instead.
        """
        means = {site: self.loc[site].detach() for site in self.site_names}
        grads = self.data_gradient(means, *args, **kwargs)
        with torch.no_grad():
            steps = {site: self.eta(site) * grads[site] for site in self.site_names}
            extra_kl = sum(step.square().sum() for step in steps.values()) / (2 * self.sigma0**2)
            return {site: means[site] - steps[site] for site in self.site_names}, extra_kl
