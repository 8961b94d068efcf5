"""θ = μ + softplus(ρ)⊙ε for a whole weight matrix in one pass, forward and backward.

Eagerly a draw is softplus, an add, a multiply-add and (for the KL) a log and a sum, and its
backward as many again: a dozen passes over 20M weights per window. Compiled (where
:mod:`bayesrnn.inference.estimators.compiled` allows) the forward is one pass writing θ and σ
(and Σ log σ when the window's KL needs it) and the backward one pass; ε comes from torch's
generator either way, so a seed gives the same draws compiled or not.
"""

from __future__ import annotations

import torch

from bayesrnn.inference.estimators.compiled import maybe_compiled
from bayesrnn.inference.estimators.softplus import _softplus_formula, softplus_scale


def _draw_formula(loc, rho, eps, floor):
    sigma = _softplus_formula(rho, floor)
    return loc + sigma * eps, sigma


def _draw_log_sum_formula(loc, rho, eps, floor):
    sigma = _softplus_formula(rho, floor)
    return loc + sigma * eps, sigma, torch.log(sigma).sum()


def _eager_draw(loc, rho, eps, floor):
    sigma = softplus_scale(rho, floor)
    return torch.addcmul(loc, sigma, eps), sigma


def _eager_draw_log_sum(loc, rho, eps, floor):
    value, sigma = _eager_draw(loc, rho, eps, floor)
    return value, sigma, sigma.log().sum()


_draw = maybe_compiled(_draw_formula, _eager_draw)
_draw_log_sum = maybe_compiled(_draw_log_sum_formula, _eager_draw_log_sum)


def gaussian_draw(
    loc: torch.Tensor, rho: torch.Tensor, eps: torch.Tensor, floor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ, σ): θ = loc + σ⊙eps with σ = softplus(ρ) + floor, differentiable in loc and ρ."""
    return _draw(loc, rho, eps, float(floor))


def gaussian_draw_with_log_sum(
    loc: torch.Tensor, rho: torch.Tensor, eps: torch.Tensor, floor: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(θ, σ, Σ log σ), the last for the entropy and log q terms of the window's KL."""
    return _draw_log_sum(loc, rho, eps, float(floor))


def _sharpen_formula(phi, psi, grad, eps, eta_max, sigma0):
    step = eta_max * torch.sigmoid(psi) * grad
    return phi - step + sigma0 * eps, (step * step).sum()


def _eager_sharpen(phi, psi, grad, eps, eta_max, sigma0):
    step = eta_max * torch.sigmoid(psi) * grad
    flat = step.reshape(-1)
    return (phi - step).add_(eps, alpha=sigma0), torch.dot(flat, flat)


_sharpen = maybe_compiled(_sharpen_formula, _eager_sharpen)


def sharpened_draw(
    phi: torch.Tensor,
    psi: torch.Tensor,
    grad: torch.Tensor,
    eps: torch.Tensor,
    eta_max: float,
    sigma0: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior sharpening's θ = φ − η⊙g + σ0·ε, η = η_max·sigmoid(ψ), and ‖η⊙g‖².

    Differentiable in φ and ψ (g is a constant); one pass forward and one backward compiled.
    """
    return _sharpen(phi, psi, grad, eps, float(eta_max), float(sigma0))
