"""The ELBO of one window: the likelihood plus analytic KL wherever one is registered.

Like Pyro's ``Trace_ELBO`` (guide traced, model replayed against it), but each latent site
contributes ``kl_divergence(q_site, p_site)`` when torch knows it (Gaussian mean-field, Gal's
Bernoulli mixture, the sharpened posterior) and the single-sample log q − log p otherwise (the
scale-mixture prior, stock autoguides). Guide-only sites (auxiliary latents, the sharpening
factor) count in log q. Only reparameterised guides are supported: the papers' posteriors are.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.infer.elbo import ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites
from pyro.util import warn_if_nan
from torch.distributions import kl_divergence


@dataclass(frozen=True)
class ELBOTerms:
    """One window's negative log-likelihood and (scaled) KL, and what the model returned."""

    nll: torch.Tensor
    kl: torch.Tensor
    result: object = None

    @property
    def loss(self) -> torch.Tensor:
        return self.nll + self.kl


def _site_log_prob(site) -> torch.Tensor:
    log_p = site["fn"].log_prob(site["value"])
    if site["mask"] is not None:
        log_p = log_p * site["mask"]
    return (log_p * site["scale"]).sum()


def _scaled(value: torch.Tensor, site) -> torch.Tensor:
    if site["mask"] is not None:
        value = value * site["mask"]
    return value * site["scale"]


_ANALYTIC_KL = contextvars.ContextVar("bayesrnn_analytic_kl", default=False)


def analytic_kl_active() -> bool:
    """True while :func:`window_terms` traces a guide: registered KLs will be computed from the
    sites' distributions, so a guide may skip drawing what the window cannot read."""
    return _ANALYTIC_KL.get()


def _left_out(site) -> bool:
    scale = site["scale"]
    return not isinstance(scale, torch.Tensor) and scale == 0


def window_terms(model, guide, *args, **kwargs) -> ELBOTerms:
    """Run ``guide`` then ``model`` (replayed) and return the window's NLL and KL."""
    token = _ANALYTIC_KL.set(True)
    try:
        guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(*args, **kwargs))
    finally:
        _ANALYTIC_KL.reset(token)
    model_trace = prune_subsample_sites(
        poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    )
    log_lik = torch.zeros(())
    kl = torch.zeros(())
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            log_lik = log_lik + _site_log_prob(site)
            continue
        guide_site = guide_trace.nodes.get(name)
        if guide_site is None:
            raise ValueError(f"the model's latent site {name!r} has no counterpart in the guide")
        if _left_out(guide_site):  # a window without the KL (scale_kl(…, 0)): skip the work
            continue
        if is_validation_enabled() and not guide_site["fn"].has_rsample:
            raise ValueError(f"guide site {name!r} is not reparameterisable")
        try:
            kl = kl + _scaled(kl_divergence(guide_site["fn"], site["fn"]), guide_site).sum()
        except NotImplementedError:
            kl = kl + _site_log_prob(guide_site) - _site_log_prob(site)
    for name, guide_site in guide_trace.nodes.items():
        in_guide_only = guide_site["type"] == "sample" and name not in model_trace.nodes
        if in_guide_only and not _left_out(guide_site):
            kl = kl + _site_log_prob(guide_site)
    return ELBOTerms(nll=-log_lik, kl=kl, result=model_trace.nodes["_RETURN"]["value"])


class WindowELBO(ELBO):
    """A Pyro ``ELBO`` (usable with ``pyro.infer.SVI``) built on :func:`window_terms`.

    After each call ``last_terms`` holds the mean NLL and KL over particles as floats, for
    progress reports that show the likelihood and the KL separately.
    """

    def __init__(self, num_particles: int = 1) -> None:
        super().__init__(num_particles=num_particles, vectorize_particles=False)
        self.last_terms: dict[str, float] = {}

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("WindowELBO traces model and guide in window_terms")

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        nll = kl = 0.0
        for _ in range(self.num_particles):
            terms = window_terms(model, guide, *args, **kwargs)
            nll = nll + terms.nll
            kl = kl + terms.kl
        nll, kl = nll / self.num_particles, kl / self.num_particles
        self.last_terms = {"nll": float(nll.detach()), "kl": float(kl.detach())}
        loss = nll + kl
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        value = float(loss.detach())
        return value
