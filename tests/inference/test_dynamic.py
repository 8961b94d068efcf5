"""Dynamic evaluation: each window scored before it adapts the weights, and nothing else."""

import math

import pytest
import torch

from bayesrnn.inference import DynamicEvaluation, dynamic_evaluate, evaluate_stream, make_guide
from bayesrnn.models import LanguageModel, ScaleMixturePrior

BPTT, BATCH = 6, 2


def _trained_pair(seed: int = 0):
    torch.manual_seed(seed)
    model = LanguageModel(
        12, 8, 8, num_layers=1, prior=ScaleMixturePrior(), deterministic=["decoder.bias"]
    )
    return model, make_guide("mean_field", model)


def _snapshot(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


def test_zero_learning_rate_is_the_static_posterior_mean_perplexity():
    model, guide = _trained_pair()
    stream = torch.randint(0, 12, (200,))
    static = evaluate_stream(model, guide, stream, batch_size=BATCH, bptt=BPTT)
    dynamic = dynamic_evaluate(model, guide, stream, lr=0.0, batch_size=BATCH, bptt=BPTT)
    assert dynamic.tokens == static.tokens
    assert dynamic.nll == pytest.approx(static.nll, rel=1e-5)


def test_no_window_is_used_before_it_is_scored():
    """Streams equal up to window k score the first k windows identically; window k differs."""
    model, guide = _trained_pair()
    k = 5
    prefix = torch.randint(0, 12, (BATCH * (k * BPTT + 1),))
    # batchify splits the stream into BATCH contiguous sequences: keep each sequence's first
    # k·BPTT + 1 tokens and change what follows in each.
    a = torch.randint(0, 12, (BATCH, k * BPTT + 1 + 4 * BPTT))
    b = a.clone()
    a[:, : k * BPTT + 1] = prefix.view(BATCH, -1)
    b[:, : k * BPTT + 1] = prefix.view(BATCH, -1)
    b[:, k * BPTT + 1 :] = (a[:, k * BPTT + 1 :] + 1) % 12
    runs = [
        dynamic_evaluate(model, guide, s.flatten(), lr=0.5, batch_size=BATCH, bptt=BPTT)
        for s in (a, b)
    ]
    first, second = (r.window_nll for r in runs)
    assert first[:k] == second[:k]  # the same weights scored the shared windows, bit for bit
    assert first[k] != second[k]  # window k's targets differ (its last target is changed)
    # Adaptation happened: with lr = 0 the same windows score differently from lr = 0.5.
    frozen = dynamic_evaluate(model, guide, a.flatten(), lr=0.0, batch_size=BATCH, bptt=BPTT)
    assert frozen.window_nll[0] == first[0] and frozen.window_nll[1] != first[1]


def test_adapting_to_a_repeating_stream_lowers_perplexity_and_leaves_the_run_untouched():
    model, guide = _trained_pair()
    stream = torch.arange(600) % 12  # a deterministic cycle: adaptation must learn it
    before = _snapshot(model, guide)
    static = evaluate_stream(model, guide, stream, batch_size=BATCH, bptt=BPTT)
    dynamic = dynamic_evaluate(model, guide, stream, lr=0.5, batch_size=BATCH, bptt=BPTT)
    assert dynamic.perplexity < 0.5 * static.perplexity
    for old, new in zip(before, _snapshot(model, guide), strict=True):
        assert torch.equal(old, new)
    assert model.training and guide.training  # modes restored


@pytest.mark.parametrize("lr", [-0.1, float("nan"), True])
def test_bad_learning_rate_is_a_value_error(lr):
    model, guide = _trained_pair()
    with pytest.raises(ValueError, match="lr"):
        dynamic_evaluate(model, guide, torch.randint(0, 12, (100,)), lr=lr)


def test_a_batch_first_model_adapts_exactly_as_the_time_major_one():
    time_major, guide = _trained_pair()
    batch_first = LanguageModel(
        12,
        8,
        8,
        num_layers=1,
        batch_first=True,
        prior=ScaleMixturePrior(),
        deterministic=["decoder.bias"],
    )
    batch_first.load_state_dict(time_major.state_dict())
    guide_bf = make_guide("mean_field", batch_first)
    guide_bf.load_state_dict(guide.state_dict())
    stream = torch.arange(203) % 12  # 101 steps in 2 sequences: the last window has 4 steps
    a = dynamic_evaluate(time_major, guide, stream, lr=0.5, batch_size=BATCH, bptt=BPTT)
    b = dynamic_evaluate(batch_first, guide_bf, stream, lr=0.5, batch_size=BATCH, bptt=BPTT)
    assert len(a.window_nll) == 17 and b.tokens == a.tokens
    assert b.window_nll == pytest.approx(a.window_nll, rel=1e-5)


def test_a_perplexity_too_large_for_a_float_is_infinite():
    assert DynamicEvaluation(nll=3000.0, tokens=2, lr=0.1).perplexity == math.inf
    assert DynamicEvaluation(nll=3.0, tokens=2, lr=0.1).perplexity == pytest.approx(math.exp(1.5))
