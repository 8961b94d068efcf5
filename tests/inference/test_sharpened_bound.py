"""The sharpened bound against independent Monte Carlo: it bounds −log E_{N(μ, σ0²I)} p(y | θ).

A tiny LM whose μ is fitted to its stream (so the NLL is curved there, as after training), at
σ0 = 0.05. There the NLL at the noiseless sharpened centre plus the KL, the formula the bound
once used, falls well below the quantity it claims to bound.
"""

import math
from functools import cache

import pytest
import torch
from pyro import poutine

from bayesrnn.data.streams import batchify
from bayesrnn.inference import (
    MeanFieldGuide,
    SharpenedGuide,
    evaluate_stream,
    sharpened_bound,
)
from bayesrnn.models import LanguageModel

SIGMA0 = 0.05
VOCAB = 9


def _nll(model, weights, tokens, targets, state=None):
    """Summed NLL of a (T, B) window at ``weights``, and the state it leaves."""
    logits, state = poutine.condition(model, data=weights)(tokens, state=state)
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, VOCAB), targets.reshape(-1), reduction="sum"
    )
    return nll, state


@cache
def _fitted(length: int):
    """Model, guide, stream and its (steps, 3) batch, μ fitted by Adam to the whole stream
    (made once per length; the tests only read it)."""
    torch.manual_seed(0)
    model = LanguageModel(VOCAB, 5, 5, num_layers=1, deterministic=("decoder.bias",))
    guide = SharpenedGuide(model, sigma0=SIGMA0)
    stream = torch.randint(0, VOCAB, (length,))
    data = batchify(stream, 3)
    means = [guide.loc[s] for s in guide.site_names]
    optimiser = torch.optim.Adam(means, lr=0.05)
    for _ in range(100):
        optimiser.zero_grad()
        mu = {s: guide.loc[s] for s in guide.site_names}
        _nll(model, mu, data[:-1], data[1:])[0].backward()
        optimiser.step()
    return model, guide, stream, data


def _means(guide):
    return {s: guide.loc[s].detach() for s in guide.site_names}


def _noisy(weights):
    return {s: w + SIGMA0 * torch.randn_like(w) for s, w in weights.items()}


def _neg_log_mean_exp(log_p: torch.Tensor, tokens: int) -> tuple[float, float]:
    """−log mean exp(log_p) per token, and its delta-method standard error."""
    log_p = log_p.double()
    p = (log_p - log_p.max()).exp()
    value = -(torch.logsumexp(log_p, 0) - math.log(log_p.numel()))
    se = p.std() / p.mean() / math.sqrt(log_p.numel())
    return float(value) / tokens, float(se) / tokens


def _independent_centre(model, guide, tokens, targets, state=None):
    """μ − η⊙g with g = ∇_μ NLL by autograd here, and ‖η⊙g‖²/(2σ0²)."""
    mu = {s: guide.loc[s].detach().clone().requires_grad_(True) for s in guide.site_names}
    grads = torch.autograd.grad(_nll(model, mu, tokens, targets, state)[0], list(mu.values()))
    with torch.no_grad():
        steps = {s: guide.eta(s) * g for s, g in zip(mu, grads, strict=True)}
        kl = sum(float(step.square().sum()) for step in steps.values()) / (2 * SIGMA0**2)
        return {s: mu[s].detach() - steps[s] for s in mu}, kl


def test_the_bound_holds_where_the_noiseless_formula_does_not():
    model, guide, stream, data = _fitted(21)  # one window of 6 steps × 3 sequences
    x, y = data[:-1], data[1:]
    tokens = y.numel()
    with torch.no_grad():
        log_p = torch.stack([-_nll(model, _noisy(_means(guide)), x, y)[0] for _ in range(1000)])
    target, target_se = _neg_log_mean_exp(log_p, tokens)
    centre, kl = _independent_centre(model, guide, x, y)
    with torch.no_grad():
        noiseless = (float(_nll(model, centre, x, y)[0]) + kl) / tokens
    assert noiseless < target - 10 * target_se  # the formula without the σ0 noise: no bound

    bound = sharpened_bound(model, guide, stream, num_samples=128, batch_size=3, bptt=10)
    assert bound.tokens == tokens and bound.num_samples == 128
    assert bound.nll_per_token >= target - 3 * (bound.se + target_se)
    assert bound.nll_per_token - noiseless > 6 * bound.se  # the noise is in it


def test_the_bound_is_the_noisy_sharpened_nll_plus_the_kl_with_its_standard_error():
    model, guide, stream, data = _fitted(21)
    x, y = data[:-1], data[1:]
    tokens = y.numel()
    centre, kl = _independent_centre(model, guide, x, y)
    with torch.no_grad():
        totals = torch.tensor(
            [float(_nll(model, _noisy(centre), x, y)[0]) + kl for _ in range(1000)]
        ).double()
    expected = float(totals.mean()) / tokens
    spread = float(totals.std()) / tokens  # per-token sd of one path's bound
    bound = sharpened_bound(model, guide, stream, num_samples=64, batch_size=3, bptt=10)
    assert bound.extra_kl == pytest.approx(kl, rel=1e-4)  # one window, no state: the same g
    combined = math.hypot(bound.se, spread / math.sqrt(1000))
    assert abs(bound.nll_per_token - expected) < 4 * combined
    # replayed by seed: the estimate and its standard error from the same 8 paths' draws
    torch.manual_seed(7)
    replayed = sharpened_bound(model, guide, stream, num_samples=8, batch_size=3, bptt=10)
    torch.manual_seed(7)
    with torch.no_grad():
        paths = [float(_nll(model, _noisy(centre), x, y)[0]) + kl for _ in range(8)]
    mean = sum(paths) / 8
    se = math.sqrt(sum((v - mean) ** 2 for v in paths) / 7 / 8)
    assert replayed.nll_per_token == pytest.approx(mean / tokens, rel=1e-5)
    assert replayed.se == pytest.approx(se / tokens, rel=1e-4)


def test_each_path_carries_the_state_its_own_noisy_weights_left():
    """Two windows: the bound's expectation is a path's sum of E NLL + KL, g and θ of window 2
    taken at the state window 1's noisy θ left; it bounds −log E Π_w p(y_w | θ_w, h)."""
    model, guide, stream, data = _fitted(33)  # 11 steps: windows of 5 and 5
    windows = [(data[0:5], data[1:6]), (data[5:10], data[6:11])]
    tokens = 30

    def path() -> float:
        state, total = None, 0.0
        for x, y in windows:
            centre, kl = _independent_centre(model, guide, x, y, state)
            with torch.no_grad():
                nll, state = _nll(model, _noisy(centre), x, y, state)
            total += float(nll) + kl
        return total / tokens

    paths = torch.tensor([path() for _ in range(64)]).double()
    bound = sharpened_bound(model, guide, stream, num_samples=48, batch_size=3, bptt=5)
    assert bound.tokens == tokens
    combined = math.hypot(bound.se, float(paths.std()) / 8)
    assert abs(bound.nll_per_token - float(paths.mean())) < 4 * combined

    with torch.no_grad():
        log_p = []
        for _ in range(600):
            state, total = None, 0.0
            for x, y in windows:
                nll, state = _nll(model, _noisy(_means(guide)), x, y, state)
                total -= float(nll)
            log_p.append(total)
    target, target_se = _neg_log_mean_exp(torch.tensor(log_p), tokens)
    assert bound.nll_per_token >= target - 3 * (bound.se + target_se)


def test_evaluate_stream_sharpened_gives_the_bound():
    model, guide, stream, _ = _fitted(21)
    torch.manual_seed(5)
    direct = sharpened_bound(model, guide, stream, num_samples=4, batch_size=3, bptt=10)
    torch.manual_seed(5)
    via = evaluate_stream(
        model, guide, stream, batch_size=3, bptt=10, num_samples=4, sharpened=True
    )
    assert via == direct


@pytest.mark.parametrize("num_samples", [1, 0, 2.5, True])
def test_the_bound_needs_two_draws_or_more(num_samples):
    model, guide, stream, _ = _fitted(21)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 2"):
        sharpened_bound(model, guide, stream, num_samples=num_samples, batch_size=3)


def test_the_bound_needs_a_sharpened_guide():
    model = LanguageModel(VOCAB, 5, 5, num_layers=1)
    with pytest.raises(ValueError, match="needs a SharpenedGuide, got MeanFieldGuide"):
        sharpened_bound(model, MeanFieldGuide(model), torch.randint(0, VOCAB, (30,)))


@pytest.mark.parametrize(
    "options, name",
    [
        ({"on_window": lambda *a: None}, "on_window"),
        ({"redraw": "stream"}, "redraw"),
        ({"draws_per_batch": 2}, "draws_per_batch"),
        ({"num_samples": 2, "decoder": "local"}, "decoder"),
    ],
)
def test_evaluate_stream_sharpened_refuses_the_options_it_would_ignore(options, name):
    model = LanguageModel(VOCAB, 5, 5, num_layers=1)
    guide = SharpenedGuide(model)
    stream = torch.randint(0, VOCAB, (30,))
    with pytest.raises(ValueError, match=f"takes no {name}"):
        evaluate_stream(model, guide, stream, batch_size=3, sharpened=True, **options)
