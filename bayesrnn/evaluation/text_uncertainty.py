r"""Epistemic uncertainty about a given text, from its log-likelihood under each posterior draw.

The mutual information of :mod:`bayesrnn.evaluation.uncertainty` is an expectation over the
*next tokens the model would predict*: it says how much the draws disagree about what comes
next, whatever the text goes on to say. To ask how much the draws disagree about the text that
is actually there, Malinin & Gales (2021, "Uncertainty estimation in autoregressive structured
prediction", ICLR) write the sequence-level measures as expectations over a sequence y drawn
from the predictive and evaluate their integrands at a given y. With M draws θ_m (the posterior
as an equally weighted mixture), ℓ_m = log P(y | θ_m), the predictive P̄(y) = mean_m P(y | θ_m)
and the posterior over the draws after reading y, w_m(y) = P(y | θ_m) / (M·P̄(y)):

    reverse mutual information   RMI  = Σ_y P̄(y) [log P̄(y) − mean_m ℓ_m]
    mutual information           MI   = Σ_y P̄(y) Σ_m w_m(y) log(M·w_m(y))
    expected pairwise KL         EPKL = Σ_y P̄(y) [Σ_m w_m(y) ℓ_m − mean_m ℓ_m]  = MI + RMI

(RMI = mean_m KL(P̄ ‖ P_m); MI = mean_m KL(P_m ‖ P̄), since P̄(y)·w_m(y) = P_m(y)/M; EPKL =
mean over pairs of KL(P_m ‖ P_m')). The ``observed_*`` functions return each integrand at the
given y; each is ≥ 0 and each is 0 when all draws give y the same probability:

* :func:`observed_reverse_mutual_information`: log-mean-exp_m ℓ_m − mean_m ℓ_m, the Jensen gap
  between the log of the predictive and the draws' mean log-likelihood;
* :func:`observed_information_gain`: KL(w(y) ‖ uniform) = log M − H(w(y)), what reading y
  teaches about which draw is right: the pointwise mutual information, at most log M;
* :func:`observed_expected_pairwise_kl`: their sum, Σ_m w_m ℓ_m − mean_m ℓ_m.

They take ``(M, ...)`` log-likelihoods, draws first, of one token or of a whole sentence (the
sum of its tokens' conditional log-probabilities under the same draw). The expected pairwise KL
and reverse mutual information of the *next-token distributions*, the token-level counterparts
of the mutual information, are :func:`expected_pairwise_kl` and
:func:`reverse_mutual_information`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bayesrnn.evaluation.uncertainty import categorical_entropy

__all__ = [
    "expected_pairwise_kl",
    "mixture_cross_entropy",
    "observed_expected_pairwise_kl",
    "observed_information_gain",
    "observed_reverse_mutual_information",
    "reverse_mutual_information",
]


def _draws(log_likelihoods: Tensor) -> Tensor:
    if not isinstance(log_likelihoods, Tensor) or not log_likelihoods.is_floating_point():
        raise TypeError("log_likelihoods must be a floating-point tensor of shape (M, ...)")
    if log_likelihoods.dim() < 1 or log_likelihoods.shape[0] < 1:
        shape = tuple(log_likelihoods.shape)
        raise ValueError(f"log_likelihoods needs a leading dim of M >= 1 draws, got {shape}")
    if bool(torch.isnan(log_likelihoods).any()) or bool(torch.isposinf(log_likelihoods).any()):
        raise ValueError("log_likelihoods contains NaN or +inf")
    if bool(torch.isneginf(log_likelihoods).any()):
        raise ValueError("log_likelihoods contains -inf: a draw gives the text probability zero")
    return log_likelihoods.double()


def observed_reverse_mutual_information(log_likelihoods: Tensor) -> Tensor:
    """log mean_m P(y|θ_m) − mean_m log P(y|θ_m) ≥ 0 (Jensen) of the given y, shape (...)."""
    ll = _draws(log_likelihoods)
    gap = torch.logsumexp(ll, 0) - math.log(ll.shape[0]) - ll.mean(0)
    return gap.clamp_min(0.0)  # round-off only


def observed_information_gain(log_likelihoods: Tensor) -> Tensor:
    """KL(w ‖ uniform) of the draws' posterior weights w = softmax_m(ℓ_m) after reading y."""
    ll = _draws(log_likelihoods)
    log_w = torch.log_softmax(ll, 0)
    return (log_w.exp() * (log_w + math.log(ll.shape[0]))).sum(0).clamp_min(0.0)


def observed_expected_pairwise_kl(log_likelihoods: Tensor) -> Tensor:
    """Σ_m w_m ℓ_m − mean_m ℓ_m: the reverse mutual information plus the information gain."""
    ll = _draws(log_likelihoods)
    weights = torch.softmax(ll, 0)
    return ((weights * ll).sum(0) - ll.mean(0)).clamp_min(0.0)


def mixture_cross_entropy(sample_log_probs: Tensor, log_mixture: Tensor) -> Tensor:
    """−Σ_k p̄_k · mean_m log p_mk of (M, ..., K) draws and their mixture log p̄ (..., K).

    The term the two token-level measures below share; summed one draw at a time, so a window
    of (M, T, B, V) log-probabilities is not copied. A zero probability of one draw (log p =
    -inf) is floored at the smallest normal float's log, keeping the sum finite.
    """
    floor = math.log(torch.finfo(sample_log_probs.dtype).tiny)
    total = torch.zeros_like(log_mixture)
    for draw in sample_log_probs:
        total += draw.clamp_min(floor)
    return -torch.linalg.vecdot(log_mixture.exp(), total / sample_log_probs.shape[0])


def _mixture(sample_log_probs: Tensor) -> Tensor:
    return torch.logsumexp(sample_log_probs, 0) - math.log(sample_log_probs.shape[0])


def expected_pairwise_kl(sample_log_probs: Tensor) -> Tensor:
    """mean over pairs (m, m') of KL(p_m ‖ p_m') of (M, ..., K) next-token distributions:
    the mixture's cross-entropy against mean_m log p_m minus the expected entropy."""
    log_mixture = _mixture(sample_log_probs)
    cross = mixture_cross_entropy(sample_log_probs, log_mixture)
    return (cross - categorical_entropy(sample_log_probs).mean(0)).clamp_min(0.0)


def reverse_mutual_information(sample_log_probs: Tensor) -> Tensor:
    """mean_m KL(p̄ ‖ p_m) of (M, ..., K) next-token distributions: the mixture's
    cross-entropy against mean_m log p_m minus its own entropy (= EPKL − MI)."""
    log_mixture = _mixture(sample_log_probs)
    cross = mixture_cross_entropy(sample_log_probs, log_mixture)
    return (cross - categorical_entropy(log_mixture)).clamp_min(0.0)
