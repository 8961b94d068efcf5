"""Out-of-distribution detection scores and Fortunato's reversed-text entropy gap.

Convention everywhere: a higher score means "more likely out-of-distribution", and OOD items are
the positive class. Thresholds are the distinct score values, so tied scores always fall on the
same side of a threshold. Everything is computed by hand (no scikit-learn) in float64.
"""

import math

import torch

from bayesrnn.evaluation.calibration import TensorLike, _as_tensor, _check_probs


def _check_scores(scores: TensorLike, name: str) -> torch.Tensor:
    s = _as_tensor(scores, name)
    if s.dtype == torch.bool or s.is_complex():
        raise ValueError(f"{name} must hold real scores, got dtype {s.dtype}")
    if s.ndim != 1 or s.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(s.shape)}")
    s = s.to(torch.float64)
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return s


def _check_pair(in_scores: TensorLike, out_scores: TensorLike) -> tuple[torch.Tensor, torch.Tensor]:
    s_in = _check_scores(in_scores, "in_scores")
    s_out = _check_scores(out_scores, "out_scores").to(s_in.device)
    return s_in, s_out


def auroc(in_scores: TensorLike, out_scores: TensorLike) -> float:
    """Area under the ROC curve: P(out > in) + P(out == in) / 2 over all (in, out) pairs.

    Computed exactly as the Mann-Whitney U statistic from average ranks, in O(N log N).
    0.5 means the score does not separate the two sets.
    """
    s_in, s_out = _check_pair(in_scores, out_scores)
    n_in, n_out = s_in.numel(), s_out.numel()
    _, group, group_size = torch.unique(
        torch.cat([s_in, s_out]), sorted=True, return_inverse=True, return_counts=True
    )
    # A group of c tied scores ending at 1-based rank e shares the average rank e - (c - 1) / 2.
    ends = group_size.cumsum(0).to(torch.float64)
    average_rank = ends - (group_size.to(torch.float64) - 1.0) / 2.0
    rank_sum_out = average_rank[group[n_in:]].sum()
    u_statistic = rank_sum_out - n_out * (n_out + 1) / 2.0
    return float(u_statistic / (n_in * n_out))


def aupr(in_scores: TensorLike, out_scores: TensorLike) -> float:
    """Area under the precision-recall curve with OOD as positive, as average precision.

    AP = sum over thresholds t (distinct scores, high to low) of
    (recall(t) - recall(previous t)) * precision(t), predicting OOD when score >= t.
    """
    s_in, s_out = _check_pair(in_scores, out_scores)
    scores = torch.cat([s_in, s_out])
    is_out = torch.cat([torch.zeros_like(s_in), torch.ones_like(s_out)])
    values, group = torch.unique(scores, sorted=True, return_inverse=True)
    zeros = torch.zeros(values.numel(), dtype=torch.float64, device=scores.device)
    positives = zeros.index_add(0, group, is_out).flip(0)  # per threshold, high to low
    negatives = zeros.index_add(0, group, 1.0 - is_out).flip(0)
    true_pos = positives.cumsum(0)
    precision = true_pos / (true_pos + negatives.cumsum(0))
    return float((positives / s_out.numel() * precision).sum())


def fpr_at_tpr(in_scores: TensorLike, out_scores: TensorLike, tpr: float = 0.95) -> float:
    """False-positive rate on in-distribution items once ``tpr`` of OOD items are caught.

    Uses the highest threshold t (scanning from high to low, the first one) at which
    TPR = #{out >= t} / n_out reaches ``tpr``; FPR = #{in >= t} / n_in. This is the lowest FPR
    with TPR >= ``tpr`` (FPR95 for the default).
    """
    if isinstance(tpr, bool) or not isinstance(tpr, float | int) or not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr!r}")
    s_in, s_out = _check_pair(in_scores, out_scores)
    n_out = s_out.numel()
    # Smallest count k of caught OOD items with k / n_out >= tpr; the slack absorbs round-off
    # such as 0.28 * 25 = 7.000000000000001.
    needed = min(n_out, max(1, math.ceil(tpr * n_out - 1e-9)))
    threshold = s_out.sort(descending=True).values[needed - 1]
    return float((s_in >= threshold).to(torch.float64).mean())


def max_probability_score(probs: TensorLike) -> torch.Tensor:
    """OOD score 1 - max_k p_k (Hendrycks & Gimpel's baseline, flipped so higher = more OOD).

    ``probs`` has shape (..., K); the result has shape (...).
    """
    p = _check_probs(probs, "probs", ndim=None)
    return 1.0 - p.max(dim=-1).values


def _mean_entropy(entropy: TensorLike, name: str) -> float:
    h = _as_tensor(entropy, name)
    if h.dtype == torch.bool or h.is_complex() or h.numel() == 0:
        raise ValueError(f"{name} must be a non-empty real tensor of per-word entropies")
    h = h.to(torch.float64)
    if not bool(torch.isfinite(h).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if bool((h < -1e-6).any()):  # small negatives are float32 round-off of a zero entropy
        raise ValueError(f"{name} contains negative entropies")
    return float(h.mean())


def entropy_gap(forward_entropy: TensorLike, reversed_entropy: TensorLike) -> float:
    """Fortunato et al.'s Delta H: mean per-word predictive entropy on reversed text minus on
    forward text, in nats/word. Larger is better: a calibrated model is less sure on nonsense.

    Pass the per-word entropies of the predictive distribution (samples averaged in probability
    space, see ``uncertainty.predictive_entropy``), padding already removed; any shape.
    """
    forward_mean = _mean_entropy(forward_entropy, "forward_entropy")
    return _mean_entropy(reversed_entropy, "reversed_entropy") - forward_mean


def ood_report(in_scores: TensorLike, out_scores: TensorLike) -> dict[str, float]:
    """AUROC, AUPR (OOD positive) and FPR at 95% TPR, keyed "auroc", "aupr", "fpr95"."""
    return {
        "auroc": auroc(in_scores, out_scores),
        "aupr": aupr(in_scores, out_scores),
        "fpr95": fpr_at_tpr(in_scores, out_scores, 0.95),
    }
