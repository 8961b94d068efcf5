"""Stream prediction: posterior-mean perplexity by hand, batched MC draws, batch_first models."""

import math

import pytest
import torch
from pyro import poutine

from bayesrnn.inference import MeanFieldGuide, evaluate_stream
from bayesrnn.models import LanguageModel


def _pair(batch_first=False):
    torch.manual_seed(0)
    model = LanguageModel(13, 6, 6, num_layers=2, batch_first=batch_first)
    return model, MeanFieldGuide(model, init_scale=0.3)


def test_posterior_mean_perplexity_matches_a_manual_loop_with_carried_state():
    model, guide = _pair()
    stream = torch.randint(0, 13, (203,))
    result = evaluate_stream(model, guide, stream, batch_size=4, bptt=7)
    data = stream[: (203 // 4) * 4].reshape(4, -1).t()  # Zaremba batchify, by hand
    means = {s: guide.loc[s].detach() for s in guide.site_names}
    state, total, count = None, 0.0, 0
    with torch.no_grad():
        for start in range(0, data.shape[0] - 1, 7):
            end = min(start + 7, data.shape[0] - 1)
            logits, state = poutine.condition(model, data=means)(data[start:end], state=state)
            total += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, 13), data[start + 1 : end + 1].reshape(-1), reduction="sum"
                )
            )
            count += data[start + 1 : end + 1].numel()
    assert result.tokens == count
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


def test_batched_draws_equal_one_draw_at_a_time():
    model, guide = _pair()
    stream = torch.randint(0, 13, (160,))
    torch.manual_seed(5)
    batched = evaluate_stream(
        model, guide, stream, batch_size=4, bptt=9, num_samples=4, draws_per_batch=4
    )
    torch.manual_seed(5)
    single = evaluate_stream(
        model, guide, stream, batch_size=4, bptt=9, num_samples=4, draws_per_batch=1
    )
    assert batched.perplexity == pytest.approx(single.perplexity, rel=1e-6)


def test_mc_mixture_is_an_average_of_probabilities():
    model, guide = _pair()
    stream = torch.randint(0, 13, (120,))
    seen = []
    result = evaluate_stream(
        model,
        guide,
        stream,
        batch_size=3,
        bptt=8,
        num_samples=5,
        on_window=lambda t, lp, d: seen.append((t, lp, d)),
    )
    nll = 0.0
    for targets, log_probs, draws in seen:
        assert draws.shape[0] == 5
        torch.testing.assert_close(log_probs.exp(), draws.exp().mean(0), atol=1e-6, rtol=1e-5)
        nll -= float(log_probs.gather(-1, targets.unsqueeze(-1)).sum())
    assert result.nll == pytest.approx(nll, rel=1e-6)


def test_batch_first_models_are_evaluated_on_the_same_windows():
    time_major, guide = _pair(batch_first=False)
    batch_first, guide_bf = _pair(batch_first=True)
    guide_bf.load_state_dict(guide.state_dict())
    stream = torch.randint(0, 13, (150,))
    a = evaluate_stream(time_major, guide, stream, batch_size=5, bptt=6)
    b = evaluate_stream(batch_first, guide_bf, stream, batch_size=5, bptt=6)
    assert a.perplexity == pytest.approx(b.perplexity, rel=1e-6)


@pytest.mark.parametrize("wrong", [0, -2, True, 2.0])
def test_num_samples_must_be_a_positive_integer(wrong):
    model, guide = _pair()
    with pytest.raises(ValueError, match="num_samples must be None or an integer"):
        evaluate_stream(model, guide, torch.randint(0, 13, (50,)), num_samples=wrong)


def test_sequence_prediction_mixture_and_mean():
    from bayesrnn.inference import GalDropoutGuide, predict_sequences
    from bayesrnn.models import SequenceClassifier

    model = SequenceClassifier(20, 3, 5, 6)
    guide = GalDropoutGuide(model, input=0.5, hidden=0.3)
    tokens = torch.randint(0, 20, (7, 4))
    lengths = torch.tensor([7, 3, 5, 1])
    mean = predict_sequences(model, guide, tokens, lengths)
    means = {s: guide.mean[s].detach() for s in guide.site_names}
    model.eval()
    expected = torch.log_softmax(poutine.condition(model, data=means)(tokens, lengths=lengths), -1)
    torch.testing.assert_close(mean.log_probs, expected)
    mc = predict_sequences(model, guide, tokens, lengths, num_samples=6)
    assert mc.draw_log_probs.shape == (6, 4, 3)
    torch.testing.assert_close(mc.log_probs.exp(), mc.draw_log_probs.exp().mean(0))
    assert not torch.allclose(mc.draw_log_probs[0], mc.draw_log_probs[1])  # masks differ


class _CountingGuide(MeanFieldGuide):
    """Mean-field guide that counts its calls and keeps the last draw."""

    def forward(self, *args, **kwargs):
        self.calls = getattr(self, "calls", 0) + 1
        self.last = {k: v.detach().clone() for k, v in super().forward(*args, **kwargs).items()}
        return self.last


def test_stream_redraw_keeps_one_network_per_draw_for_the_whole_stream():
    torch.manual_seed(0)
    model = LanguageModel(13, 6, 6, num_layers=2)
    guide = _CountingGuide(model, init_scale=0.3)
    stream = torch.randint(0, 13, (203,))
    windows = math.ceil((203 // 4 - 1) / 7)
    evaluate_stream(model, guide, stream, batch_size=4, bptt=7, num_samples=3)
    assert guide.calls == 1 + 3 * windows  # the probe, then every draw in every window
    guide.calls = 0
    one = evaluate_stream(
        model, guide, stream, batch_size=4, bptt=7, num_samples=1, redraw="stream"
    )
    assert guide.calls == 2  # the probe and the one draw
    # the same draw, fixed, as a point posterior: the perplexity a manual loop would give
    drawn = guide.last

    class Fixed(torch.nn.Module):
        def forward(self, *args, **kwargs):
            return drawn

        def median(self, *args, **kwargs):
            return drawn

    fixed = evaluate_stream(model, Fixed(), stream, batch_size=4, bptt=7)
    assert one.perplexity == pytest.approx(fixed.perplexity, rel=1e-6)


def test_unknown_redraw_is_refused():
    model, guide = _pair()
    with pytest.raises(ValueError, match="redraw"):
        evaluate_stream(model, guide, torch.arange(40) % 13, num_samples=2, redraw="token")


def test_mixture_keeps_exact_target_log_probs_where_the_probability_sum_underflows():
    from bayesrnn.inference.prediction.predictive import _mixture_scores

    # two draws, one window position, four words; word 2's log-probs are far below float32's
    # smallest normal, so its probability sum underflows, but as the target it stays exact
    draws = torch.tensor([[[[-0.1, -2.5, -150.0, -3.0]]], [[[-0.7, -0.9, -160.0, -2.0]]]])
    draws = torch.log_softmax(draws, -1)
    targets = torch.tensor([[2]])
    probs_sum = draws.exp().sum(0)
    scores = _mixture_scores(draws, probs_sum.clone(), targets, 2)
    exact = torch.logsumexp(draws.double(), 0) - math.log(2)
    assert float(scores[0, 0, 2]) == pytest.approx(float(exact[0, 0, 2]), rel=1e-6)
    for word in (0, 1, 3):
        assert float(scores[0, 0, word]) == pytest.approx(float(exact[0, 0, word]), rel=1e-5)
    # target log-probs only: the log-sum-exp path
    picked = draws.gather(-1, targets.expand(2, 1, 1).unsqueeze(-1)).squeeze(-1)
    only = _mixture_scores(picked, None, targets, 2)
    assert float(only[0, 0]) == pytest.approx(float(exact[0, 0, 2]), rel=1e-6)


def test_draws_share_weights_only_when_the_guide_samples_nothing_or_says_so():
    from bayesrnn.inference import DeterministicGuide, GalDropoutGuide
    from bayesrnn.inference.prediction.predictive import draws_share_weights
    from bayesrnn.models import GaussianPrior

    inputs = torch.zeros(3, 2, dtype=torch.long)
    _, guide = _pair()
    assert not draws_share_weights(guide, inputs, inputs)
    plain = LanguageModel(13, 6, 6, prior=None, regularisers={"naive_dropout": 0.5})
    assert draws_share_weights(DeterministicGuide(plain), inputs, inputs)
    gal_model = LanguageModel(13, 6, 6, prior=GaussianPrior(1.0))
    assert draws_share_weights(GalDropoutGuide(gal_model, input=0.3), inputs, inputs)
    batch = LanguageModel(13, 6, 6, prior=GaussianPrior(1.0))
    assert not draws_share_weights(GalDropoutGuide(batch, input=0.3, scope="batch"), inputs, inputs)


@pytest.mark.parametrize("draws_per_batch", [None, 1, 2])
def test_shared_weight_draws_carry_each_draws_state_in_one_wide_call(draws_per_batch):
    """With every rate at zero each draw is the mean network: MC must equal the mean exactly."""
    from bayesrnn.inference import GalDropoutGuide
    from bayesrnn.models import GaussianPrior

    torch.manual_seed(1)
    model = LanguageModel(13, 6, 6, num_layers=2, prior=GaussianPrior(1.0))
    guide = GalDropoutGuide(model)  # sequence scope, all rates 0
    stream = torch.randint(0, 13, (211,))
    mean = evaluate_stream(model, guide, stream, batch_size=3, bptt=6)
    mc = evaluate_stream(
        model,
        guide,
        stream,
        batch_size=3,
        bptt=6,
        num_samples=5,
        draws_per_batch=draws_per_batch,
        on_window=lambda *args: None,
    )
    assert mc.perplexity == pytest.approx(mean.perplexity, rel=1e-5)


def test_safe_exp_is_inf_past_the_float_range_and_exp_within_it():
    from bayesrnn.inference import safe_exp

    assert safe_exp(0.0) == 1.0
    assert safe_exp(709.0) == math.exp(709.0)
    assert safe_exp(710.0) == math.inf and safe_exp(1e300) == math.inf
    assert safe_exp(math.inf) == math.inf and safe_exp(-math.inf) == 0.0
    assert math.isnan(safe_exp(math.nan))


def test_a_stream_perplexity_too_large_for_a_float_is_infinite():
    from bayesrnn.inference import StreamEvaluation

    assert StreamEvaluation(nll=5.9e6, tokens=1).perplexity == math.inf
    assert StreamEvaluation(nll=1.0, tokens=4, extra_kl=1.0).perplexity == pytest.approx(
        math.exp(0.5)
    )
