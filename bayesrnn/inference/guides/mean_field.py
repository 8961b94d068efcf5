"""Bayes by Backprop: a diagonal Gaussian over every weight (Fortunato et al. 2017)."""

from __future__ import annotations

import math

import pyro
import torch
from pyro.distributions import Independent, LogNormal
from torch import nn

from bayesrnn.inference.estimators.distributions import ExpectedSoftplusNormal, SoftplusNormal
from bayesrnn.inference.estimators.elbo import analytic_kl_active
from bayesrnn.inference.estimators.mixture_kl import check_quadrature_order
from bayesrnn.inference.estimators.scaling import kl_left_out
from bayesrnn.inference.estimators.softplus import softplus_scale
from bayesrnn.inference.guides.base import SiteParameters, WeightGuide, reject_unknown_options
from bayesrnn.inference.runtime.distributed import Ranks, current_ranks, union_over_ranks
from bayesrnn.models.learned_priors import FITTED_SCALE_PRIORS
from bayesrnn.models.priors import GaussianPrior

SCALE_INIT_SPREAD = 0.1  # τ of q(s) = LogNormal(log s0, τ²) at the start

MIN_SCALE = 1e-5  # σ = softplus(ρ) + 1e-5, as in DeepMind's brnn_ptb example
INIT_SCALES = ("auto", "fortunato")
# init_scale="auto": the initial σ of a site as a fraction of its weights' natural size
AUTO_FRACTION = 0.1


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


KL_ESTIMATORS = ("expected", "sample")


def check_init_scale(init_scale: object) -> str | float:
    """``init_scale`` is "auto", "fortunato" or a finite number above the σ floor (1e-5)."""
    if isinstance(init_scale, str):
        if init_scale not in INIT_SCALES:
            raise ValueError(
                f"init_scale must be 'auto', 'fortunato' or a number, got {init_scale!r}"
            )
        return init_scale
    if (
        isinstance(init_scale, bool)
        or not isinstance(init_scale, int | float)
        or not (init_scale > MIN_SCALE and math.isfinite(init_scale))
    ):
        raise ValueError(
            f"init_scale must be 'auto', 'fortunato' or a number above {MIN_SCALE}, "
            f"got {init_scale!r}"
        )
    return float(init_scale)


def auto_initial_scale(initial: torch.Tensor, prior_stddev: float) -> float:
    """``init_scale="auto"``'s σ for one site: a tenth of its weights' size.

    The size is the root mean square of the site's initial values, capped at the prior's
    standard deviation (the prior's when the site starts at zero): a draw then moves the
    network about 10% away from its initialisation, whatever the layer's width or the prior.
    """
    rms = float(initial.detach().double().pow(2).mean().sqrt()) if initial.numel() else 0.0
    size = min(rms, float(prior_stddev)) if rms > 0 else float(prior_stddev)
    return max(AUTO_FRACTION * size, 2 * MIN_SCALE)


class MeanFieldGuide(WeightGuide):
    """q(θ) = N(μ, σ²) per weight, σ = softplus(ρ) + 1e-5, one draw per call (per window).

    ``kl`` chooses the KL against a scale-mixture prior: ``"expected"`` (default) computes it
    from (μ, σ), by quadrature for the per-weight mixture (``quadrature_order``-node
    Gauss–Hermite for σ below the spike's edge, a trapezoid grid above) and as
    Jensen's bound for grouped mixtures (:class:`bayesrnn.inference.estimators.distributions.
    ExpectedKLNormal`); ``"sample"`` is the one-sample log q(θ) − log p(θ) of the paper and of
    ``brnn_ptb.py``, whose gradient for weights in the σ2 spike swamps the data gradient. A
    Gaussian prior always gets the closed-form KL.

    The draw is shared by every step and every sequence of the window, so the model runs the
    fused RNN kernel. Means start at the model's initialisation. ``init_scale`` sets the
    initial σ: ``"auto"`` (default) makes it small beside the weights it perturbs, so the first
    steps see nearly the network's own initialisation and the data, not noise, shape μ: per
    site σ = 0.1 × min(rms of its initial values, σ_p), σ_p the prior's standard deviation (σ_p
    alone for a site that starts at zero). ``"fortunato"`` draws it uniformly in [σ_p/4, σ_p/2]
    for recurrent weights and [σ_p/2, σ_p] for embedding and softmax weights (DeepMind's
    brnn_ptb example; on small networks under an N(0, 1) prior this noise drowns the signal);
    a float sets every initial σ to that value.

    A weight site with a hierarchical prior (:class:`bayesrnn.models.HierarchicalGaussianPrior`)
    has a latent scale s; the guide gives it q(s) = LogNormal(m, τ²), τ = softplus(ρ) + 1e-5,
    starting at the prior's ``initial_scale`` with τ = 0.1, one draw per call.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        init_scale: str | float = "auto",
        kl: str = "expected",
        quadrature_order: int = 8,
        name: str | None = None,
        **options,
    ):
        reject_unknown_options(
            type(self).__name__, options, ["init_scale", "kl", "quadrature_order", "name"]
        )
        super().__init__(model, name)
        if kl not in KL_ESTIMATORS:
            raise ValueError(f"kl must be one of {KL_ESTIMATORS}, got {kl!r}")
        self.kl = kl
        self.quadrature_order = check_quadrature_order(quadrature_order)
        check_init_scale(init_scale)
        self.loc = SiteParameters({s: self.initial_value(s) for s in self.site_names})
        self.rho = SiteParameters({s: self._initial_rho(s, init_scale) for s in self.site_names})
        self.scale_loc = SiteParameters({s: self._initial_scale_loc(s) for s in self.scale_sites})
        spread = inverse_softplus(torch.tensor(SCALE_INIT_SPREAD - MIN_SCALE))
        self.scale_rho = SiteParameters({s: spread.clone() for s in self.scale_sites})

    def _initial_scale_loc(self, scale_site: str) -> torch.Tensor:
        like = self.initial_value(self.scale_sites[scale_site])
        initial = self.prior(self.scale_sites[scale_site]).initial_scale
        return torch.tensor(math.log(initial), dtype=like.dtype, device=like.device)

    def scale_distribution(self, scale_site: str) -> LogNormal:
        """q(s) of a hierarchical prior's scale site: LogNormal(m, τ²)."""
        spread = softplus_scale(self.scale_rho[scale_site], MIN_SCALE)
        return LogNormal(self.scale_loc[scale_site], spread)

    def sample_scales(self) -> dict[str, torch.Tensor]:
        """One draw of every hierarchical prior scale, as Pyro sample sites."""
        return {s: pyro.sample(s, self.scale_distribution(s)) for s in self.scale_sites}

    def _initial_rho(self, site: str, init_scale: str | float) -> torch.Tensor:
        like = self.initial_value(site)
        if init_scale == "fortunato":
            sigma_p = self.prior(site).stddev
            low, high = (
                (sigma_p / 4, sigma_p / 2) if self.is_recurrent(site) else (sigma_p / 2, sigma_p)
            )
            sigma = torch.empty_like(like).uniform_(low, high)
        elif init_scale == "auto":
            sigma = torch.full_like(like, auto_initial_scale(like, self.prior(site).stddev))
        else:
            sigma = torch.full_like(like, float(init_scale))
        return inverse_softplus(sigma - MIN_SCALE)

    def scale(self, site: str) -> torch.Tensor:
        rho = self.rho[site]
        if torch.is_grad_enabled():
            return softplus_scale(rho, MIN_SCALE)
        # Without gradients (prediction, MC draws) σ is reused until ρ changes.
        cache = self.__dict__.setdefault("_scale_cache", {})
        key = (rho.data_ptr(), rho._version)
        if site not in cache or cache[site][0] != key:
            cache[site] = (key, softplus_scale(rho, MIN_SCALE))
        return cache[site][1]

    def distribution(self, site: str, rows: torch.Tensor | None = None) -> Independent:
        """q of one site; with ``rows``, a draw samples only those rows (the rest is μ).

        σ is computed by the draw itself, fused with it (and reused without gradients).
        """
        loc = self.loc[site]
        scale = None if torch.is_grad_enabled() else self.scale(site)
        expected = self.kl == "expected" or rows is not None
        kind = ExpectedSoftplusNormal if expected else SoftplusNormal
        normal = kind(loc, self.rho[site], MIN_SCALE, rows, scale)
        normal.quadrature_order = self.quadrature_order
        return Independent(normal, loc.dim())

    def rows_to_draw(self, site: str, *args, **kwargs) -> torch.Tensor | None:
        """The rows of ``site`` this window reads, when drawing only those is exact.

        That needs a KL that does not read the draw: the library's ELBO
        (:func:`bayesrnn.inference.window_terms`) with ``kl="expected"`` or a Gaussian prior,
        or a window whose KL is left out (``scale_kl(…, 0)``, ``TrainerConfig.kl_every``).
        Stock Pyro ELBOs score the draw itself, so they always get dense draws.
        """
        if not analytic_kl_active() or not torch.is_grad_enabled():
            return None
        closed_form = isinstance(self.prior(site), (GaussianPrior, *FITTED_SCALE_PRIORS))
        from_draw = self.kl != "expected" and not closed_form
        if from_draw and not kl_left_out():
            return None
        # One draw for the whole distributed minibatch: every rank draws the rows any rank reads.
        return self.rows_read(site, *args, ranks=current_ranks(), **kwargs)

    def rows_read(
        self, site: str, *args, ranks: Ranks | None = None, **kwargs
    ) -> torch.Tensor | None:
        """The rows of ``site`` a model call on these arguments reads (``model.rows_read``),
        or None for all; under ``ranks``, the rows any of those processes reads."""
        rows_read = getattr(self.model, "rows_read", None)
        rows = None if rows_read is None else rows_read(site, *args, **kwargs)
        return rows if rows is None or ranks is None else union_over_ranks(rows, ranks)

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        values = {}
        for site in self.site_names:
            rows = self.rows_to_draw(site, *args, **kwargs)
            values[site] = pyro.sample(site, self.distribution(site, rows))
        return {**values, **self.sample_scales()}

    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Posterior means μ (Fortunato's Table 1 evaluates with these); q(s)'s median e^m."""
        scales = {s: self.scale_loc[s].exp() for s in self.scale_sites}
        return {**{site: self.loc[site] for site in self.site_names}, **scales}

    def signal_to_noise(self) -> dict[str, torch.Tensor]:
        """|μ|/σ per weight, the ranking used for pruning."""
        with torch.no_grad():
            return {s: self.loc[s].abs() / self.scale(s) for s in self.site_names}
