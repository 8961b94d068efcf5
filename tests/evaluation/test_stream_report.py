"""Stream evaluation from per-token statistics agrees with the full-distribution metrics."""

import math

import pytest
import torch
from torch import nn

from bayesrnn.evaluation import (
    brier_score,
    expected_calibration_error,
    maximum_calibration_error,
    mutual_information,
    predictive_entropy,
    reliability_bins,
)
from bayesrnn.evaluation.stream_report import (
    TokenAccumulator,
    bins_from_confidence,
    language_model_report,
    report_from_accumulator,
    stream_report,
)
from bayesrnn.inference import evaluate_stream, make_guide
from bayesrnn.models import LanguageModel, ScaleMixturePrior


def _random_windows(generator, windows=3, samples=4, steps=5, batch=3, vocab=7):
    """Per-window (targets, mixture log-probs, per-draw log-probs) with peaked draws."""
    out = []
    for _ in range(windows):
        logits = 3.0 * torch.randn(samples, steps, batch, vocab, generator=generator)
        draws = torch.log_softmax(logits, -1)
        mixture = torch.logsumexp(draws, 0) - math.log(samples)
        targets = torch.randint(0, vocab, (steps, batch), generator=generator)
        out.append((targets, mixture, draws))
    return out


def test_bins_from_confidence_equal_reliability_bins():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(2 * torch.randn(500, 6, generator=g), -1)
    labels = torch.randint(0, 6, (500,), generator=g)
    confidence, prediction = probs.max(-1)
    for strategy in ("width", "mass"):
        full = reliability_bins(probs, labels, 10, strategy)
        ours = bins_from_confidence(confidence, (prediction == labels).double(), 10, strategy)
        assert ours.ece == pytest.approx(full.ece, abs=1e-12)
        assert ours.mce == pytest.approx(full.mce, abs=1e-12)
        assert torch.equal(ours.count, full.count)


def test_accumulated_metrics_equal_full_distribution_metrics():
    windows = _random_windows(torch.Generator().manual_seed(0))
    acc = TokenAccumulator()
    for targets, mixture, draws in windows:
        acc(targets, mixture, draws)
    report = report_from_accumulator(acc, num_samples=4, n_bins=5)

    probs = torch.cat([m.exp().reshape(-1, m.shape[-1]) for _, m, _ in windows]).double()
    probs = probs / probs.sum(-1, keepdim=True)
    labels = torch.cat([t.reshape(-1) for t, _, _ in windows])
    draws = torch.cat([d.reshape(d.shape[0], -1, d.shape[-1]) for _, _, d in windows], 1)
    assert report.tokens == labels.numel() == 45
    nll = -probs[torch.arange(45), labels].log().mean()
    assert report.nll == pytest.approx(float(nll), rel=1e-6)
    assert report.perplexity == pytest.approx(math.exp(float(nll)), rel=1e-6)
    assert report.brier == pytest.approx(brier_score(probs, labels), rel=1e-6)
    assert report.ece == pytest.approx(expected_calibration_error(probs, labels, 5), abs=1e-6)
    assert report.mce == pytest.approx(maximum_calibration_error(probs, labels, 5), abs=1e-6)
    assert report.accuracy == pytest.approx(float((probs.argmax(-1) == labels).double().mean()))
    assert report.predictive_entropy == pytest.approx(
        float(predictive_entropy(draws).mean()), rel=1e-5
    )
    assert report.mutual_information == pytest.approx(
        float(mutual_information(draws).mean()), rel=1e-4, abs=1e-7
    )
    assert report.mutual_information > 0.05  # peaked, disagreeing draws
    # per-segment entropy: mean over each window's steps, one value per sequence
    first_draws = windows[0][2]
    assert report.segment_entropy.shape == (9,)
    assert report.segment_entropy[:3] == pytest.approx(
        predictive_entropy(first_draws).mean(0).double(), rel=1e-5
    )


def test_uniform_prediction_by_hand():
    vocab = 8
    targets = torch.zeros(4, 2, dtype=torch.long)
    uniform = torch.full((4, 2, vocab), -math.log(vocab))
    acc = TokenAccumulator()
    acc(targets, uniform, None)
    report = report_from_accumulator(acc, num_samples=None)
    assert report.nll == pytest.approx(math.log(vocab))
    assert report.predictive_entropy == pytest.approx(math.log(vocab))
    assert report.mutual_information == 0.0
    assert report.brier == pytest.approx(1 - 1 / vocab)  # Σp² − 2p_y + 1 = 1/8 − 2/8 + 1
    assert report.confidence == pytest.approx(1 / vocab)
    assert report.accuracy == 1.0  # argmax picks id 0 on ties, the target here
    assert report.ece == pytest.approx(1 - 1 / vocab)


class _CountingModel(nn.Module):
    """Predicts ``x + 1`` confidently after an increasing step, uniformly otherwise.

    Its state is the previous token, so entropy depends on direction: low on 0, 1, 2, ...
    and maximal on the same text reversed.
    """

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab_size = vocab
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, tokens, targets=None, state=None):
        previous = torch.cat([tokens[:1] if state is None else state, tokens[:-1]])
        increasing = tokens == (previous + 1) % self.vocab_size
        confident = 8.0 * nn.functional.one_hot((tokens + 1) % self.vocab_size, self.vocab_size)
        logits = torch.where(increasing.unsqueeze(-1), confident.float(), 0.0)
        return logits, tokens[-1:]


class _EmptyGuide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, *args, **kwargs):
        return {}

    def median(self, *args, **kwargs):
        return {}


def test_reversed_text_raises_entropy_and_is_detected():
    vocab = 11
    stream = torch.arange(600) % vocab
    report = language_model_report(
        _CountingModel(vocab), _EmptyGuide(), stream, num_samples=2, batch_size=4, bptt=10
    )
    forward, backward = report.mean, report.reversed_mean
    assert forward.predictive_entropy < 0.1
    assert backward.predictive_entropy == pytest.approx(math.log(vocab), abs=1e-6)
    reversed_ = report.reversed_metrics()
    assert reversed_["entropy_gap_mean"] == pytest.approx(
        backward.predictive_entropy - forward.predictive_entropy
    )
    assert reversed_["entropy_gap_mean"] > 2.0
    assert reversed_["auroc_entropy"] == 1.0  # every reversed segment is less certain
    assert reversed_["fpr95_entropy"] == 0.0
    assert report.mc.mutual_information == pytest.approx(0.0, abs=1e-6)  # draws agree
    assert forward.accuracy > 0.99 and backward.perplexity == pytest.approx(vocab, rel=1e-6)
    metrics = report.metrics()
    assert metrics["perplexity_mean"] == forward.perplexity
    assert "num_samples" not in metrics["posterior_mean"]
    assert metrics["mc"]["num_samples"] == 2


def test_stream_report_matches_evaluate_stream_on_a_bayesian_lstm():
    torch.manual_seed(0)
    model = LanguageModel(30, 6, 6, 1, prior=ScaleMixturePrior(), deterministic=("decoder.bias",))
    guide = make_guide("mean_field", model)
    stream = torch.randint(0, 30, (400,))
    mean = stream_report(model, guide, stream, batch_size=4, bptt=7)
    reference = evaluate_stream(model, guide, stream, batch_size=4, bptt=7)
    assert mean.perplexity == pytest.approx(reference.perplexity, rel=1e-6)
    assert mean.tokens == reference.tokens
    torch.manual_seed(3)
    mc = stream_report(model, guide, stream, num_samples=3, batch_size=4, bptt=7)
    torch.manual_seed(3)
    reference_mc = evaluate_stream(model, guide, stream, batch_size=4, bptt=7, num_samples=3)
    assert mc.perplexity == pytest.approx(reference_mc.perplexity, rel=1e-6)
    assert mc.mutual_information > 0  # weight draws disagree
    assert mc.token_entropy.shape == (mc.tokens,)


def test_bad_binning_is_rejected():
    with pytest.raises(ValueError, match="n_bins"):
        bins_from_confidence(torch.rand(3), torch.ones(3), n_bins=0)
    with pytest.raises(ValueError, match="equal length"):
        bins_from_confidence(torch.rand(3), torch.ones(2))


def test_a_perplexity_too_large_for_a_float_is_infinite_not_an_overflow():
    """A prediction that puts e^-2000 on its target: NLL 2000 nats, perplexity e^2000 = inf."""
    logits = torch.tensor([[[0.0, -2000.0, -1.0]]])  # (T=1, B=1, V=3)
    acc = TokenAccumulator()
    acc(torch.tensor([[1]]), torch.log_softmax(logits, -1), None)
    report = report_from_accumulator(acc, None)
    assert report.nll == pytest.approx(2000.0 + math.log(1 + math.exp(-1.0)), rel=1e-6)
    assert report.perplexity == math.inf
    assert report.metrics()["perplexity"] == math.inf
