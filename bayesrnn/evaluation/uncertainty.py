"""Monte Carlo predictive distributions and the entropy decomposition of their uncertainty.

Inputs are per-sample log-probabilities of shape (S, ..., K): S posterior samples (weight draws
or dropout masks) first, K classes last. The predictive distribution averages the samples'
*probabilities*, never their log-probabilities (Gal's MC dropout; Fortunato's entropy benchmark):

    predictive entropy  H[mean_s p_s]          total uncertainty
    expected entropy    mean_s H[p_s]          aleatoric part
    mutual information  H[mean_s p_s] - mean_s H[p_s]   epistemic part, >= 0

Entropies are in nats, with 0 * log 0 = 0 exactly (zero probabilities, i.e. log-probs of -inf,
are allowed and contribute nothing).
"""

import math
from dataclasses import dataclass

import torch

from bayesrnn.evaluation.calibration import TensorLike, _as_tensor, _sum_tolerance


def _check_log_values(x: TensorLike, name: str) -> torch.Tensor:
    t = _as_tensor(x, name)
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold real log-probabilities, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.ndim < 1 or t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if bool(torch.isnan(t.detach()).any()) or bool(torch.isposinf(t.detach()).any()):
        raise ValueError(f"{name} contains NaN or +inf (only -inf, a zero probability, is allowed)")
    return t


def _check_sample_log_probs(x: TensorLike, name: str = "sample_log_probs") -> torch.Tensor:
    """Validate (S, ..., K) log-probabilities: S >= 1 and each distribution sums to one."""
    t = _check_log_values(x, name)
    if t.ndim < 2:
        raise ValueError(f"{name} must have shape (S, ..., K), got {tuple(t.shape)}")
    # float32 is accurate enough here; half precision is upcast so the check is meaningful.
    work = t.detach()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.to(torch.float32)
    log_sums = torch.logsumexp(work, dim=-1).to(torch.float64)
    worst = float((log_sums.exp() - 1.0).abs().max())
    if worst > _sum_tolerance(t.dtype):
        raise ValueError(
            f"{name} must be normalised log-probabilities over the last dim "
            f"(sum of exp off by {worst:.3g})"
        )
    return t


def mixture_log_probs(sample_log_probs: TensorLike, dim: int = 0) -> torch.Tensor:
    """log of the MC predictive probability: logsumexp over samples minus log S.

    This is log(mean_s p_s), the Bayesian model average; the mean of log p_s (a geometric
    mean) is smaller by Jensen's inequality and is not the predictive. Works for whole
    distributions (S, ..., K) and for the log-probability of the observed token only (S, ...),
    so it is not checked for normalisation.
    """
    t = _check_log_values(sample_log_probs, "sample_log_probs")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -t.ndim <= dim < t.ndim:
        raise ValueError(f"dim must be an integer in [{-t.ndim}, {t.ndim}), got {dim!r}")
    n_samples = t.shape[dim]
    if n_samples < 1:
        raise ValueError(f"sample_log_probs needs S >= 1 samples along dim {dim}, got 0")
    return torch.logsumexp(t, dim=dim) - math.log(n_samples)


def categorical_entropy(log_probs: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy over the last dim; terms with p = 0 are exactly zero (and have zero gradient).

    Pass ``probs = log_probs.exp()`` when the caller has it already: on a (T, B, 10k) window
    each full-vocabulary pass costs as much as the model's decoder.
    """
    if probs is None:
        probs = log_probs.exp()
    # One fused dot product per row; only rows with log p = -inf (p = 0, giving 0 · -inf = nan)
    # take the second pass, with log p clamped to the most negative finite value.
    entropy = -torch.linalg.vecdot(probs, log_probs)
    if bool(torch.isnan(entropy).any()):
        finite_log = log_probs.clamp_min(torch.finfo(log_probs.dtype).min)
        entropy = -torch.linalg.vecdot(probs, finite_log)
    return entropy


def predictive_entropy(sample_log_probs: TensorLike) -> torch.Tensor:
    """Entropy of the MC predictive mean_s p_s: total uncertainty, shape (...)."""
    t = _check_sample_log_probs(sample_log_probs)
    return categorical_entropy(mixture_log_probs(t, dim=0))


def expected_entropy(sample_log_probs: TensorLike) -> torch.Tensor:
    """Mean over samples of each sample's entropy: the aleatoric part, shape (...)."""
    t = _check_sample_log_probs(sample_log_probs)
    return categorical_entropy(t).mean(dim=0)


def _mutual_information(predictive: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    # Jensen makes the difference >= 0; clamping only removes round-off of order 1e-7.
    return (predictive - expected).clamp_min(0.0)


def mutual_information(sample_log_probs: TensorLike) -> torch.Tensor:
    """Predictive minus expected entropy (BALD): disagreement between samples, shape (...)."""
    t = _check_sample_log_probs(sample_log_probs)
    return _mutual_information(
        categorical_entropy(mixture_log_probs(t, dim=0)), categorical_entropy(t).mean(dim=0)
    )


@dataclass(frozen=True, eq=False)
class UncertaintyDecomposition:
    """Entropy decomposition per token (T, B) and its mean per sequence (B,), in nats.

    Per-token tensors cover every position, padding included; the per-sequence means use only
    positions kept by the mask (NaN for a sequence with no kept token).
    """

    predictive_entropy: torch.Tensor
    expected_entropy: torch.Tensor
    mutual_information: torch.Tensor
    sequence_predictive_entropy: torch.Tensor
    sequence_expected_entropy: torch.Tensor
    sequence_mutual_information: torch.Tensor


def uncertainty_decomposition(
    sample_log_probs: TensorLike, mask: TensorLike | None = None
) -> UncertaintyDecomposition:
    """Total, aleatoric and epistemic uncertainty of sequence predictions.

    ``sample_log_probs`` has shape (S, T, B, K): samples, time, batch, classes (time-major, as
    PyTorch RNNs). ``mask`` (T, B), boolean with True for real tokens, excludes padding from the
    per-sequence means, which average over the time dim.
    """
    t = _check_sample_log_probs(sample_log_probs)
    if t.ndim != 4:
        raise ValueError(f"sample_log_probs must have shape (S, T, B, K), got {tuple(t.shape)}")
    predictive = categorical_entropy(mixture_log_probs(t, dim=0))
    expected = categorical_entropy(t).mean(dim=0)
    mutual = _mutual_information(predictive, expected)

    if mask is None:
        keep = torch.ones(predictive.shape, dtype=torch.bool, device=t.device)
    else:
        keep = _as_tensor(mask, "mask").to(t.device)
        if keep.dtype != torch.bool:
            raise ValueError(f"mask must be boolean (True = real token), got dtype {keep.dtype}")
        if keep.shape != predictive.shape:
            raise ValueError(
                f"mask must have shape (T, B) = {tuple(predictive.shape)}, got {tuple(keep.shape)}"
            )
        if not bool(keep.any()):
            raise ValueError("mask keeps no tokens")
    n_kept = keep.sum(dim=0).to(predictive.dtype)

    def per_sequence(per_token: torch.Tensor) -> torch.Tensor:
        return torch.where(keep, per_token, 0.0).sum(dim=0) / n_kept

    return UncertaintyDecomposition(
        predictive_entropy=predictive,
        expected_entropy=expected,
        mutual_information=mutual,
        sequence_predictive_entropy=per_sequence(predictive),
        sequence_expected_entropy=per_sequence(expected),
        sequence_mutual_information=per_sequence(mutual),
    )
