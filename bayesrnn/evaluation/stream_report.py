"""Language-model evaluation over a token stream in bounded memory.

A test stream has N tokens and a vocabulary of V words, so keeping every (N, V) predictive
distribution (PTB: 82k x 10k floats) is not an option. Each window's distribution is reduced at
once to the few per-token numbers the metrics need — top-1 confidence, correctness, log p(target),
Σ_k p_k², predictive entropy and, with Monte Carlo draws, the expected entropy — and ECE, MCE,
Brier score and NLL are computed from those:

    Brier = Σ_k p_k² − 2 p_y + 1        NLL = −log p_y        ECE/MCE from (confidence, correct)

:func:`language_model_report` runs the passes a report needs: posterior mean and MC predictive
on the stream, the same on the reversed stream (Fortunato et al. 2017's entropy gap), an
in- vs out-of-distribution AUROC from per-segment entropies, and the sharpened upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bayesrnn.data.streams import reverse_stream
from bayesrnn.evaluation.calibration import ReliabilityBins, _check_binning, _reliability
from bayesrnn.evaluation.ood import auroc, entropy_gap, ood_report
from bayesrnn.evaluation.uncertainty import categorical_entropy
from bayesrnn.inference.prediction.predictive import evaluate_stream, safe_exp
from bayesrnn.inference.prediction.sharpened_bound import SharpenedBound, sharpened_bound
from bayesrnn.inference.runtime.distributed import Ranks, gather_columns

__all__ = [
    "LanguageModelReport",
    "StreamReport",
    "TokenAccumulator",
    "bins_from_confidence",
    "language_model_report",
    "stream_report",
]


def bins_from_confidence(
    confidence: Tensor, correct: Tensor, n_bins: int = 15, strategy: str = "width"
) -> ReliabilityBins:
    """Reliability bins from top-1 confidences and 0/1 correctness, without the (N, K) probs.

    Uses calibration.py's own binning, so ECE and MCE equal ``reliability_bins(probs, labels)``
    on the full distributions.
    """
    _check_binning(n_bins, strategy)
    if confidence.shape != correct.shape or confidence.dim() != 1 or confidence.numel() == 0:
        raise ValueError("confidence and correct must be non-empty 1-D tensors of equal length")
    return _reliability(confidence.double(), correct.double(), n_bins, strategy)


class TokenAccumulator:
    """Collects per-token and per-segment statistics from ``evaluate_stream``'s window callback.

    A segment is one parallel sequence's stretch of one window (T tokens): the unit scored for
    out-of-distribution detection.
    """

    _COLUMNS = (
        "confidence",
        "correct",
        "log_p_target",
        "sum_sq",
        "entropy",
        "expected_entropy",
        "segment_entropy",
        "segment_mutual_information",
    )

    def __init__(self) -> None:
        # One growable float64 buffer per column, not a list of small per-window tensors: tiny
        # long-lived allocations between each window's large temporaries fragmented the heap
        # (resident memory grew ~90 MB per window, to 18 GB on the PTB test stream).
        self._data = {name: torch.empty(4096, dtype=torch.float64) for name in self._COLUMNS}
        self._size = dict.fromkeys(self._COLUMNS, 0)
        self.has_draws = False

    def _append(self, name: str, value: Tensor) -> None:
        value = value.reshape(-1)
        size, buffer = self._size[name], self._data[name]
        if size + value.numel() > buffer.numel():
            grown = torch.empty(max(2 * buffer.numel(), size + value.numel()), dtype=torch.float64)
            grown[:size] = buffer[:size]
            self._data[name] = buffer = grown
        buffer[size : size + value.numel()] = value.detach().to("cpu", torch.float64)
        self._size[name] = size + value.numel()

    def __call__(self, targets: Tensor, log_probs: Tensor, draw_log_probs: Tensor | None) -> None:
        # Full-vocabulary passes stay in the model's precision (float64 copies of a (T, B, V)
        # window cost more than the decoder); only the per-token results are kept in float64.
        lp = log_probs.detach()
        probs = lp.exp()
        confidence, prediction = probs.max(-1)
        entropy = categorical_entropy(lp, probs).double()
        expected = (
            entropy
            if draw_log_probs is None
            else categorical_entropy(draw_log_probs.detach()).mean(0).double()
        )
        self.has_draws = self.has_draws or draw_log_probs is not None
        mutual = (entropy - expected).clamp_min(0.0)
        values = {
            "confidence": confidence,
            "correct": (prediction == targets).double(),
            "log_p_target": lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1),
            "sum_sq": torch.linalg.vector_norm(probs, dim=-1).square(),
            "entropy": entropy,
            "expected_entropy": expected,
        }
        for name, value in values.items():
            self._append(name, value)  # time-major, like flatten_tokens
        self._append("segment_entropy", entropy.mean(0))
        self._append("segment_mutual_information", mutual.mean(0))

    def column(self, name: str) -> Tensor:
        return self._data[name][: self._size[name]].clone()

    def gather(self, ranks: Ranks) -> None:
        """Every rank's tokens in every rank's accumulator (rank order), so the report of a
        sharded pass is computed from all B sequences, as one process would."""
        for name in self._COLUMNS:
            full = gather_columns(self.column(name), ranks, dim=0)
            self._data[name], self._size[name] = full, full.numel()


@dataclass(frozen=True, eq=False)
class StreamReport:
    """Metrics of one pass over a stream (posterior mean when ``num_samples`` is None).

    Scalars are means over tokens in nats; ``token_*`` and ``segment_*`` keep the per-token and
    per-segment values for histograms and OOD scores.
    """

    num_samples: int | None
    tokens: int
    nll: float
    perplexity: float
    accuracy: float
    confidence: float
    ece: float
    mce: float
    brier: float
    predictive_entropy: float
    expected_entropy: float
    mutual_information: float
    bins: ReliabilityBins
    token_entropy: Tensor
    token_mutual_information: Tensor
    segment_entropy: Tensor
    segment_mutual_information: Tensor

    def metrics(self) -> dict[str, float | int]:
        """Scalar metrics (``num_samples`` only for MC passes), JSON-ready."""
        out: dict[str, float | int] = (
            {} if self.num_samples is None else {"num_samples": self.num_samples}
        )
        return out | {
            "tokens": self.tokens,
            "perplexity": self.perplexity,
            "nll": self.nll,
            "accuracy": self.accuracy,
            "confidence": self.confidence,
            "ece": self.ece,
            "mce": self.mce,
            "brier": self.brier,
            "predictive_entropy": self.predictive_entropy,
            "expected_entropy": self.expected_entropy,
            "mutual_information": self.mutual_information,
        }


def report_from_accumulator(
    acc: TokenAccumulator, num_samples: int | None, n_bins: int = 15, strategy: str = "width"
) -> StreamReport:
    """Turn collected per-token statistics into the report's metrics."""
    log_p = acc.column("log_p_target")
    if log_p.numel() == 0:
        raise ValueError("the stream produced no predictions")
    p_target = log_p.exp()
    nll = float(-log_p.mean())
    entropy = acc.column("entropy")
    expected = acc.column("expected_entropy")
    mutual = (entropy - expected).clamp_min(0.0)
    bins = bins_from_confidence(acc.column("confidence"), acc.column("correct"), n_bins, strategy)
    brier = acc.column("sum_sq") - 2.0 * p_target + 1.0
    return StreamReport(
        num_samples=num_samples,
        tokens=log_p.numel(),
        nll=nll,
        perplexity=safe_exp(nll),
        accuracy=float(acc.column("correct").mean()),
        confidence=float(acc.column("confidence").mean()),
        ece=bins.ece,
        mce=bins.mce,
        brier=float(brier.clamp_min(0.0).mean()),
        predictive_entropy=float(entropy.mean()),
        expected_entropy=float(expected.mean()),
        mutual_information=float(mutual.mean()),
        bins=bins,
        token_entropy=entropy,
        token_mutual_information=mutual,
        segment_entropy=acc.column("segment_entropy"),
        segment_mutual_information=acc.column("segment_mutual_information"),
    )


def stream_report(
    model,
    guide,
    stream: Tensor,
    *,
    num_samples: int | None = None,
    batch_size: int = 10,
    bptt: int = 35,
    n_bins: int = 15,
    strategy: str = "width",
    redraw: str = "window",
    ranks: Ranks | None = None,
    decoder: str = "weights",
    recurrent_draws: int | None = None,
) -> StreamReport:
    """Perplexity, calibration and entropy of one pass over ``stream``.

    ``num_samples=None`` predicts with the posterior mean; an integer S averages the
    probabilities of S posterior draws (MC), which also gives the mutual information;
    ``redraw`` ("window" or "stream"), ``decoder`` and ``recurrent_draws`` go to
    :func:`bayesrnn.inference.evaluate_stream`.
    """
    _check_binning(n_bins, strategy)
    acc = TokenAccumulator()
    evaluate_stream(
        model,
        guide,
        stream,
        batch_size=batch_size,
        bptt=bptt,
        num_samples=num_samples,
        on_window=acc,
        redraw=redraw,
        ranks=ranks,
        decoder=decoder,
        recurrent_draws=recurrent_draws,
    )
    if ranks is not None and ranks.distributed:
        acc.gather(ranks)
    return report_from_accumulator(acc, num_samples, n_bins, strategy)


@dataclass(frozen=True, eq=False)
class LanguageModelReport:
    """The passes of a language-model evaluation and the comparisons between them."""

    mean: StreamReport
    mc: StreamReport
    reversed_mean: StreamReport | None = None
    reversed_mc: StreamReport | None = None
    sharpened: SharpenedBound | None = None

    def reversed_metrics(self) -> dict[str, float] | None:
        """Fortunato's entropy gap (posterior mean and MC) and OOD scores, forward = in."""
        if self.reversed_mean is None or self.reversed_mc is None:
            return None
        out = {
            "entropy_forward_mean": self.mean.predictive_entropy,
            "entropy_reversed_mean": self.reversed_mean.predictive_entropy,
            "entropy_gap_mean": entropy_gap(
                self.mean.token_entropy, self.reversed_mean.token_entropy
            ),
            "entropy_forward_mc": self.mc.predictive_entropy,
            "entropy_reversed_mc": self.reversed_mc.predictive_entropy,
            "entropy_gap_mc": entropy_gap(self.mc.token_entropy, self.reversed_mc.token_entropy),
            "mutual_information_forward_mc": self.mc.mutual_information,
            "mutual_information_reversed_mc": self.reversed_mc.mutual_information,
            "perplexity_reversed_mean": self.reversed_mean.perplexity,
        }
        scores = ood_report(self.mc.segment_entropy, self.reversed_mc.segment_entropy)
        out.update({f"{name}_entropy": value for name, value in scores.items()})
        out["auroc_mutual_information"] = auroc(
            self.mc.segment_mutual_information, self.reversed_mc.segment_mutual_information
        )
        out["segments"] = int(self.mc.segment_entropy.numel())
        return out

    def metrics(self) -> dict[str, object]:
        out: dict[str, object] = {
            "perplexity_mean": self.mean.perplexity,
            "perplexity_mc": self.mc.perplexity,
            "mc_samples": self.mc.num_samples,
            "posterior_mean": self.mean.metrics(),
            "mc": self.mc.metrics(),
        }
        if self.sharpened is not None:
            out.update(self.sharpened.metrics())
        reversed_ = self.reversed_metrics()
        if reversed_ is not None:
            out["reversed"] = reversed_
        return out


def language_model_report(
    model,
    guide,
    stream: Tensor,
    *,
    num_samples: int = 10,
    batch_size: int = 10,
    bptt: int = 35,
    n_bins: int = 15,
    strategy: str = "width",
    reversed_text: bool = True,
    sharpened: bool = False,
    redraw: str = "window",
    ranks: Ranks | None = None,
    decoder: str = "weights",
    recurrent_draws: int | None = None,
) -> LanguageModelReport:
    """Posterior-mean and MC passes over ``stream`` (and its reverse), plus the sharpened bound.

    ``sharpened`` needs a :class:`bayesrnn.inference.SharpenedGuide`: the sharpened bound
    (Fortunato et al. 2017, §4; :func:`bayesrnn.inference.sharpened_bound`, ``num_samples``
    paths, at least 2), an upper bound from the targets on the NLL under N(μ, σ0²I).
    ``redraw`` says how often an MC draw's weights are resampled ("window" or "stream", see
    ``evaluate_stream``). ``ranks`` (all processes of a torch.distributed group calling
    together) shares the B sequences out and gathers the per-token statistics, giving one
    process's numbers; the sharpened bound, whose step uses the whole batch's gradient, is
    computed unsharded. ``decoder`` and ``recurrent_draws`` choose the MC estimator
    (``evaluate_stream``).
    """
    options = {
        "batch_size": batch_size,
        "bptt": bptt,
        "n_bins": n_bins,
        "strategy": strategy,
        "ranks": ranks,
    }
    mean = stream_report(model, guide, stream, num_samples=None, **options)
    estimator = {"redraw": redraw, "decoder": decoder, "recurrent_draws": recurrent_draws}
    mc = stream_report(model, guide, stream, num_samples=num_samples, **estimator, **options)
    reversed_mean = reversed_mc = None
    if reversed_text:
        backwards = reverse_stream(stream)
        reversed_mean = stream_report(model, guide, backwards, num_samples=None, **options)
        reversed_mc = stream_report(
            model, guide, backwards, num_samples=num_samples, **estimator, **options
        )
    bound = None
    if sharpened:
        paths = max(2, num_samples)
        bound = sharpened_bound(
            model, guide, stream, num_samples=paths, batch_size=batch_size, bptt=bptt
        )
    return LanguageModelReport(mean, mc, reversed_mean, reversed_mc, bound)
