"""Calibration of categorical predictions: ECE, MCE, reliability bins, Brier score and NLL.

Every metric takes ``probs`` of shape (N, K), one probability vector per item, and integer
``labels`` of shape (N,). Next-token predictions of shape (T, B, V) are flattened first with
:func:`flatten_tokens`, so one set of functions serves language models and classifiers.

The top-1 prediction is ``argmax`` over K (the first class wins a tie) and its confidence is the
largest probability. Scalar metrics are computed in float64 and returned as Python floats.
"""

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

type TensorLike = torch.Tensor | np.ndarray
type Strategy = Literal["width", "mass"]

SUM_TOLERANCE = 1e-4
"""Accepted deviation of a probability vector's sum from one (wider for half precision)."""


def _sum_tolerance(dtype: torch.dtype) -> float:
    """Accepted |sum - 1|: ``SUM_TOLERANCE``, widened to 8 machine epsilons for half precision,
    whose rounding alone exceeds 1e-4."""
    return max(SUM_TOLERANCE, 8 * torch.finfo(dtype).eps)


_STRATEGIES = ("width", "mass")


def _as_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` as a torch tensor (numpy arrays and nested lists are converted)."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        array = np.asarray(x)
        if not array.flags.writeable:
            array = array.copy()
        return torch.from_numpy(array)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(x)!r}") from err


def _check_probs(probs: object, name: str = "probs", ndim: int | None = 2) -> torch.Tensor:
    """Validate probability vectors along the last dim; returns a floating tensor.

    ``ndim=None`` accepts any shape (..., K) with at least one dim.
    """
    p = _as_tensor(probs, name)
    if p.dtype == torch.bool or p.is_complex():
        raise ValueError(f"{name} must hold real probabilities, got dtype {p.dtype}")
    if not p.is_floating_point():
        p = p.to(torch.float64)
    if ndim is not None and p.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(p.shape)}")
    if p.ndim < 1 or p.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(p.shape)})")
    # Single passes over a possibly (T*B, V)-sized tensor: aminmax propagates NaN, and float32
    # sums are accurate to ~1e-6, far inside the tolerance (half precision is upcast).
    tolerance = _sum_tolerance(p.dtype)
    values = p.detach()
    if values.dtype not in (torch.float32, torch.float64):
        values = values.to(torch.float32)
    low, high = (float(v) for v in torch.aminmax(values))
    if math.isnan(low) or math.isnan(high) or math.isinf(high):
        raise ValueError(f"{name} contains NaN or infinite values")
    if low < 0:
        raise ValueError(f"{name} contains negative probabilities")
    worst = float((values.sum(dim=-1) - 1.0).abs().max())
    if worst > tolerance:
        raise ValueError(
            f"{name} rows must sum to one (tolerance {tolerance:.3g}); worst deviation {worst:.3g}"
        )
    return p


def _check_int_tensor(x: object, name: str) -> torch.Tensor:
    t = _as_tensor(x, name)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"{name} must hold integers, got dtype {t.dtype}")
    return t.to(torch.int64)


def _check_labels(labels: object, n: int, k: int, device: torch.device) -> torch.Tensor:
    y = _check_int_tensor(labels, "labels").to(device)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match probs, got {tuple(y.shape)}")
    if bool(((y < 0) | (y >= k)).any()):
        raise ValueError(f"labels must lie in [0, {k}) for {k} classes")
    return y


def _check_binning(n_bins: int, strategy: str) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")


@dataclass(frozen=True, eq=False)
class ReliabilityBins:
    """Per-bin summary of top-1 confidence against accuracy.

    All fields have one entry per bin. Empty bins have ``count == 0`` and NaN ``confidence`` and
    ``accuracy``; they are skipped by :attr:`ece` and :attr:`mce`.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor
    count: torch.Tensor
    strategy: str

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean of |accuracy - confidence|."""
        filled = self.count > 0
        weights = self.count[filled].to(torch.float64) / self.count.sum()
        gaps = (self.accuracy - self.confidence).abs()[filled]
        return float((weights * gaps).sum())

    @property
    def mce(self) -> float:
        """Maximum calibration error: the largest |accuracy - confidence| over non-empty bins."""
        filled = self.count > 0
        return float((self.accuracy - self.confidence).abs()[filled].max())


def _bin_edges(confidence: torch.Tensor, n_bins: int, strategy: str) -> torch.Tensor:
    """Bin edges (n_bins + 1,); a bin is (lower, upper], the first one also holds its lower edge.

    "width": equal-width bins on [0, 1]. "mass": sort the confidences and cut them into n_bins
    runs whose sizes differ by at most one; each inner edge is the largest confidence of its run.
    Because a value equal to an edge goes to the lower bin, tied confidences never straddle two
    bins, so with ties some bins hold more items than others and some may be empty.
    """
    options = {"dtype": torch.float64, "device": confidence.device}
    if strategy == "width":
        return torch.linspace(0.0, 1.0, n_bins + 1, **options)
    n = confidence.numel()
    sizes = torch.full((n_bins,), n // n_bins, dtype=torch.int64, device=confidence.device)
    sizes[: n % n_bins] += 1
    run_ends = sizes.cumsum(0)[:-1]  # items in runs 0..i, >= 1 because run 0 is never empty
    inner = confidence.sort().values[run_ends - 1]
    return torch.cat([torch.zeros(1, **options), inner, torch.ones(1, **options)])


def _reliability(
    confidence: torch.Tensor, correct: torch.Tensor, n_bins: int, strategy: str
) -> ReliabilityBins:
    edges = _bin_edges(confidence, n_bins, strategy)
    index = torch.bucketize(confidence, edges[1:-1], right=False)
    count = torch.bincount(index, minlength=n_bins)
    zeros = torch.zeros(n_bins, dtype=torch.float64, device=confidence.device)
    sum_conf = zeros.index_add(0, index, confidence)
    sum_correct = zeros.index_add(0, index, correct)
    return ReliabilityBins(
        lower=edges[:-1],
        upper=edges[1:],
        confidence=sum_conf / count,  # 0 / 0 = NaN marks an empty bin
        accuracy=sum_correct / count,
        count=count,
        strategy=strategy,
    )


def _top1(probs: TensorLike, labels: TensorLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated top-1 confidence and correctness (both float64, shape (N,))."""
    p = _check_probs(probs)
    y = _check_labels(labels, p.shape[0], p.shape[1], p.device)
    confidence, prediction = p.max(dim=-1)
    return confidence.to(torch.float64), (prediction == y).to(torch.float64)


def reliability_bins(
    probs: TensorLike, labels: TensorLike, n_bins: int = 15, strategy: Strategy = "width"
) -> ReliabilityBins:
    """Bin items by top-1 confidence; the input of reliability diagrams, ECE and MCE.

    ``strategy="width"`` uses equal-width bins on [0, 1] (Guo et al.); ``"mass"`` uses
    equal-count bins, which avoid nearly empty bins when confidences crowd near one.
    """
    _check_binning(n_bins, strategy)
    confidence, correct = _top1(probs, labels)
    return _reliability(confidence, correct, n_bins, strategy)


def expected_calibration_error(
    probs: TensorLike, labels: TensorLike, n_bins: int = 15, strategy: Strategy = "width"
) -> float:
    """Top-1 ECE: sum over bins of (n_b / N) * |accuracy_b - confidence_b|, in [0, 1]."""
    return reliability_bins(probs, labels, n_bins, strategy).ece


def maximum_calibration_error(
    probs: TensorLike, labels: TensorLike, n_bins: int = 15, strategy: Strategy = "width"
) -> float:
    """Top-1 MCE: the worst |accuracy_b - confidence_b| over non-empty bins."""
    return reliability_bins(probs, labels, n_bins, strategy).mce


def brier_score(probs: TensorLike, labels: TensorLike) -> float:
    """Multi-class Brier score: mean over items of sum_k (p_k - onehot_k)^2, in [0, 2]."""
    p = _check_probs(probs)
    y = _check_labels(labels, p.shape[0], p.shape[1], p.device)
    p_label = p[torch.arange(p.shape[0], device=p.device), y]
    # sum over k != y of p_k^2 (in the input precision), then the label's own term (1 - p_y)^2.
    squares = torch.linalg.vector_norm(p, dim=-1).to(torch.float64).square()
    others = squares - p_label.to(torch.float64).square()
    per_item = others.clamp_min(0.0) + (1.0 - p_label.to(torch.float64)).square()
    return float(per_item.mean())


def negative_log_likelihood(
    probs: TensorLike, labels: TensorLike, min_prob: float = torch.finfo(torch.float64).tiny
) -> float:
    """Mean -log p[label] in nats (the log of perplexity for next-token prediction).

    The label's probability is clamped below at ``min_prob`` (default: the smallest normal
    float64, about 2.2e-308), so a zero probability costs about 708 nats instead of making the
    mean infinite; probabilities above ``min_prob`` are not changed. Prefer log-probabilities
    (see ``uncertainty.mixture_log_probs``) when probabilities may underflow.
    """
    if not (isinstance(min_prob, float | int) and 0.0 < min_prob <= 1.0):
        raise ValueError(f"min_prob must lie in (0, 1], got {min_prob!r}")
    p = _check_probs(probs)
    y = _check_labels(labels, p.shape[0], p.shape[1], p.device)
    p_label = p[torch.arange(p.shape[0], device=p.device), y].to(torch.float64)
    return float(-p_label.clamp_min(min_prob).log().mean())


@dataclass(frozen=True, eq=False)
class PositionCalibration:
    """Calibration per sequence position (or any integer group), one entry per position.

    Positions with no items have ``count == 0`` and NaN ``ece``, ``accuracy`` and ``confidence``.
    """

    position: torch.Tensor
    count: torch.Tensor
    accuracy: torch.Tensor
    confidence: torch.Tensor
    ece: torch.Tensor


def calibration_by_position(
    probs: TensorLike,
    labels: TensorLike,
    positions: TensorLike,
    n_bins: int = 15,
    strategy: Strategy = "width",
    max_position: int | None = None,
) -> PositionCalibration:
    """ECE, accuracy and mean confidence for each position, to see where a model is overconfident.

    ``positions`` (N,) holds non-negative integers: for next-token prediction the index of the
    token in its window or sentence (see :func:`token_positions`), for classification any integer
    grouping. Output entries cover positions 0..P with P = ``max_position`` if given, else the
    largest position; items at positions beyond ``max_position`` are pooled into its entry, so
    the last entry then reads "``max_position`` or later".
    """
    _check_binning(n_bins, strategy)
    confidence, correct = _top1(probs, labels)
    pos = _check_int_tensor(positions, "positions").to(confidence.device)
    if pos.shape != confidence.shape:
        raise ValueError(
            f"positions must have shape {tuple(confidence.shape)} to match probs, "
            f"got {tuple(pos.shape)}"
        )
    if bool((pos < 0).any()):
        raise ValueError("positions must be non-negative")
    if max_position is not None:
        if isinstance(max_position, bool) or not isinstance(max_position, int) or max_position < 0:
            raise ValueError(f"max_position must be a non-negative integer, got {max_position!r}")
        pos = pos.clamp_max(max_position)
    last = int(pos.max()) if max_position is None else max_position
    count = torch.bincount(pos, minlength=last + 1)
    nan = torch.full((last + 1,), math.nan, dtype=torch.float64, device=confidence.device)
    accuracy, mean_conf, ece = nan.clone(), nan.clone(), nan.clone()
    for p in torch.nonzero(count).flatten().tolist():
        here = pos == p
        accuracy[p] = correct[here].mean()
        mean_conf[p] = confidence[here].mean()
        ece[p] = _reliability(confidence[here], correct[here], n_bins, strategy).ece
    return PositionCalibration(
        position=torch.arange(last + 1, device=confidence.device),
        count=count,
        accuracy=accuracy,
        confidence=mean_conf,
        ece=ece,
    )


def _check_token_mask(mask: object, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    m = _as_tensor(mask, "mask").to(device)
    if m.dtype != torch.bool:
        raise ValueError(f"mask must be boolean (True = real token), got dtype {m.dtype}")
    if tuple(m.shape) != shape:
        raise ValueError(f"mask must have shape {shape}, got {tuple(m.shape)}")
    if not bool(m.any()):
        raise ValueError("mask keeps no tokens")
    return m


def flatten_tokens(
    probs: TensorLike, labels: TensorLike, mask: TensorLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten next-token predictions (T, B, V) and targets (T, B) to (N, V) and (N,).

    ``mask`` (T, B), boolean with True for real tokens, drops padding. Items come out in
    time-major order (t * B + b), the same order as :func:`token_positions`. Probabilities are
    validated by the metrics that consume them, not here.
    """
    p = _as_tensor(probs, "probs")
    y = _check_int_tensor(labels, "labels").to(p.device)
    if p.ndim != 3 or p.numel() == 0:
        raise ValueError(f"probs must have shape (T, B, V) and be non-empty, got {tuple(p.shape)}")
    if tuple(y.shape) != tuple(p.shape[:2]):
        raise ValueError(f"labels must have shape {tuple(p.shape[:2])}, got {tuple(y.shape)}")
    if mask is None:
        return p.reshape(-1, p.shape[-1]), y.reshape(-1)
    m = _check_token_mask(mask, tuple(p.shape[:2]), p.device)
    return p[m], y[m]


def token_positions(labels: TensorLike, mask: TensorLike | None = None) -> torch.Tensor:
    """Time index of each token kept by :func:`flatten_tokens`, in the same order.

    The ``positions`` argument of :func:`calibration_by_position` for next-token prediction.
    """
    y = _as_tensor(labels, "labels")
    if y.ndim != 2 or y.numel() == 0:
        raise ValueError(f"labels must have shape (T, B) and be non-empty, got {tuple(y.shape)}")
    t, b = y.shape
    time = torch.arange(t, device=y.device).unsqueeze(1).expand(t, b)
    if mask is None:
        return time.reshape(-1)
    return time[_check_token_mask(mask, (t, b), y.device)]
