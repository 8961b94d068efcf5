"""Closed-form ELBO terms of the fitted-scale priors (:mod:`bayesrnn.models.learned_priors`).

Registered with torch's ``kl_divergence``, so :func:`bayesrnn.inference.window_terms` uses them
for every Gaussian guide (mean-field, the sharpened guide's q(φ), and any torch ``Normal``):

- q(w) = N(μ, σ²) against N(0, s²) with a given s (the hierarchical prior, s the guide's draw):
  Σ log(s/σ) + Σ(μ² + σ²)/(2s²) − n/2, differentiable in s;
- q(w) against the empirical-Bayes prior: the same KL at its minimiser in s,
  s*² = Σ(μ² + σ²)/n, i.e. n·log s* − Σ log σ; log s* is written into the prior's parameter;
- q(s) = LogNormal(m, τ²) against s² ~ InverseGamma(a, b):
  2a·m + b·exp(−2m + 2τ²) − log τ − 1/2 − log(2π)/2 − a·log b + log Γ(a) − log 2.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import LogNormal, Normal, register_kl

from bayesrnn.inference.estimators.distributions import log_scale_sum
from bayesrnn.models.learned_priors import (
    InverseGammaScale,
    LearnedScaleNormal,
    ScaledZeroMeanNormal,
)

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _energy(q: Normal) -> torch.Tensor:
    """Σ(μ² + σ²) over the site: E_q‖w‖²."""
    return q.loc.square().sum() + q.scale.square().sum()


@register_kl(Normal, ScaledZeroMeanNormal)
def _kl_normal_scaled(q: Normal, p: ScaledZeroMeanNormal) -> torch.Tensor:
    """Summed over the site (the caller sums a scalar unchanged)."""
    s = p.site_scale
    n = q.loc.numel()
    return _energy(q) / (2 * s.square()) - log_scale_sum(q) + n * (s.log() - 0.5)


@register_kl(Normal, LearnedScaleNormal)
def _kl_normal_learned(q: Normal, p: LearnedScaleNormal) -> torch.Tensor:
    """The KL at the optimal scale, n/2·log(E_q‖w‖²/n) − Σ log σ; stores log s*.

    Summed in float64: when q collapses onto the prior (μ → 0, every σ → s*) the two sums of
    n terms cancel, and in float32 their rounding (~10⁻⁷·n·|log s*|) made the KL of a 4.6M-weight
    model read negative (−0.008 nats per token); the exact value is ≥ 0 by Jensen's inequality.
    """
    n = q.loc.numel()
    scale = q.scale.double()
    energy = q.loc.double().square().sum() + scale.square().sum()
    log_optimum = 0.5 * torch.log(energy / n)
    with torch.no_grad():
        p.log_scale.copy_(log_optimum.detach().to(p.log_scale.dtype))
    kl = n * log_optimum - scale.log().sum()
    return kl.to(q.loc.dtype)


@register_kl(LogNormal, InverseGammaScale)
def _kl_lognormal_inverse_gamma_scale(q: LogNormal, p: InverseGammaScale) -> torch.Tensor:
    m, tau = q.loc, q.scale
    a, b = p.concentration, p.rate
    return (
        2 * a * m
        + b * torch.exp(2 * tau.square() - 2 * m)
        - tau.log()
        - 0.5
        - HALF_LOG_2PI
        - a * b.log()
        + torch.lgamma(a)
        - math.log(2.0)
    )
