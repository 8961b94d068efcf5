"""Pyro's vectorised paths on the Bayesian RNNs: parallel ``Predictive`` and vectorised particles.

Weight sites then arrive with the draws in front, (S, 1, 1, G, F); every check compares the
batched call against separate calls with one draw each (the sequential loop), or sampled
``obs`` against the model's own predictive distribution.
"""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO

from bayesrnn.inference.guides import GalDropoutGuide, MeanFieldGuide
from bayesrnn.models import (
    BayesianGRU,
    BayesianLSTM,
    BayesianRNN,
    LanguageModel,
    SequenceClassifier,
    SequenceRegressor,
    weight_sites,
)

DRAWS = 4


def _plated(values: dict[str, torch.Tensor], singletons: int) -> dict[str, torch.Tensor]:
    """Stacked draws as a plate left of ``singletons`` model plates puts them: (S, 1, …, *w)."""
    return {
        site: value.reshape(value.shape[0], *(1,) * singletons, *value.shape[1:])
        for site, value in values.items()
    }


def _random_draws(model, count=DRAWS):
    draws = [
        {s: torch.randn_like(v) * 0.4 for s, v in weight_sites(model).items()} for _ in range(count)
    ]
    return draws, {s: torch.stack([d[s] for d in draws]) for s in draws[0]}


@pytest.mark.parametrize("layer", [BayesianLSTM, BayesianGRU, BayesianRNN])
@pytest.mark.parametrize("batch_first", [False, True])
def test_layer_with_plated_weight_draws_equals_one_call_per_draw(layer, batch_first):
    rnn = layer(3, 5, num_layers=2, batch_first=batch_first)
    draws, stacked = _random_draws(rnn)
    x = torch.randn(2, 6, 3) if batch_first else torch.randn(6, 2, 3)
    lengths = torch.tensor([6, 4])
    out, state = poutine.condition(rnn, data=_plated(stacked, 2))(x, lengths=lengths)
    assert out.shape == (DRAWS, *x.shape[:2], 5)
    h_n = state[0] if isinstance(state, tuple) else state
    assert h_n.shape == (2, DRAWS * 2, 5)  # draw-major N·B sequences
    for s, weights in enumerate(draws):
        alone, alone_state = poutine.condition(rnn, data=weights)(x, lengths=lengths)
        torch.testing.assert_close(out[s], alone, atol=1e-5, rtol=1e-5)
        alone_h = alone_state[0] if isinstance(alone_state, tuple) else alone_state
        torch.testing.assert_close(h_n[:, s * 2 : (s + 1) * 2], alone_h, atol=1e-5, rtol=1e-5)


def test_layer_takes_inputs_that_carry_the_draws():
    rnn = BayesianLSTM(3, 4)
    draws, stacked = _random_draws(rnn)
    x = torch.randn(DRAWS, 5, 2, 3)  # a different input per draw
    out, _ = poutine.condition(rnn, data=stacked)(x)
    for s, weights in enumerate(draws):
        alone, _ = poutine.condition(rnn, data=weights)(x[s])
        torch.testing.assert_close(out[s], alone, atol=1e-5, rtol=1e-5)


def test_disagreeing_draws_are_refused():
    rnn = BayesianLSTM(3, 4)
    _, stacked = _random_draws(rnn)
    stacked["weight_hh_l0"] = stacked["weight_hh_l0"][:2]
    with pytest.raises(ValueError, match="disagree"):
        poutine.condition(rnn, data=stacked)(torch.randn(5, 2, 3))


@pytest.mark.parametrize("batch_first", [False, True])
def test_parallel_predictive_equals_the_sequential_loop_for_the_language_model(batch_first):
    pyro.set_rng_seed(1)
    lm = LanguageModel(13, 6, 7, num_layers=2, batch_first=batch_first)
    guide = MeanFieldGuide(lm, init_scale=0.2)
    tokens = torch.randint(0, 13, (3, 5) if batch_first else (5, 3))
    sites = [*weight_sites(lm), "logits", "obs"]
    samples = Predictive(lm, guide=guide, num_samples=DRAWS, parallel=True, return_sites=sites)(
        tokens
    )
    assert samples["obs"].shape == (DRAWS, *tokens.shape)
    for s in range(DRAWS):
        weights = {site: samples[site][s].squeeze(0).squeeze(0) for site in weight_sites(lm)}
        alone, _ = poutine.condition(lm, data=weights)(tokens)
        torch.testing.assert_close(samples["logits"][s].reshape(alone.shape), alone)


def test_vectorised_particles_score_each_particle_as_a_separate_run():
    """The obs log-likelihood of each vectorised particle equals a run with that draw alone."""
    pyro.set_rng_seed(2)
    lm = LanguageModel(11, 5, 6, num_layers=1)
    guide = MeanFieldGuide(lm, init_scale=0.3)
    tokens, targets = torch.randint(0, 11, (6, 2)), torch.randint(0, 11, (6, 2))
    plate = pyro.plate("particles", DRAWS, dim=-3)
    guide_trace = poutine.trace(plate(guide)).get_trace(tokens, targets)
    model_trace = poutine.trace(poutine.replay(plate(lm), trace=guide_trace)).get_trace(
        tokens, targets
    )
    obs = model_trace.nodes["obs"]
    per_particle = obs["fn"].log_prob(obs["value"]).sum((-2, -1))
    assert per_particle.shape == (DRAWS,)
    for s in range(DRAWS):
        weights = {n: guide_trace.nodes[n]["value"][s, 0, 0] for n in weight_sites(lm)}
        logits, _ = poutine.condition(lm, data=weights)(tokens)
        expected = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).sum()
        torch.testing.assert_close(per_particle[s], expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("guide_kind", ["mean_field", "gal"])
def test_vectorised_trace_elbo_matches_the_particle_loop_in_expectation(guide_kind):
    pyro.set_rng_seed(3)
    lm = LanguageModel(11, 5, 6, num_layers=1)
    if guide_kind == "gal":
        guide = GalDropoutGuide(lm, input=0.3, hidden=0.3)
    else:
        guide = MeanFieldGuide(lm, init_scale=0.05)
    tokens, targets = torch.randint(0, 11, (6, 2)), torch.randint(0, 11, (6, 2))
    vectorised = Trace_ELBO(num_particles=200, vectorize_particles=True).loss(
        lm, guide, tokens, targets
    )
    looped = Trace_ELBO(num_particles=200).loss(lm, guide, tokens, targets)
    assert math.isfinite(vectorised)
    assert vectorised == pytest.approx(looped, rel=0.02)


def test_parallel_predictive_for_the_classifier_and_regressor():
    pyro.set_rng_seed(4)
    clf = SequenceClassifier(13, 3, 6, 5, pooling="mean")
    tokens, lengths = torch.randint(0, 13, (5, 3)), torch.tensor([5, 2, 4])
    samples = Predictive(
        clf,
        guide=MeanFieldGuide(clf, init_scale=0.2),
        num_samples=DRAWS,
        parallel=True,
        return_sites=[*weight_sites(clf), "logits", "obs"],
    )(tokens, lengths=lengths)
    assert samples["obs"].shape == (DRAWS, 3)
    for s in range(DRAWS):
        weights = {n: samples[n][s, 0] for n in weight_sites(clf)}
        alone = poutine.condition(clf, data=weights)(tokens, lengths=lengths)
        torch.testing.assert_close(samples["logits"][s].reshape(alone.shape), alone)

    reg = SequenceRegressor(2, 5, output_size=1)
    rows = torch.randn(6, 3, 2)
    guide = MeanFieldGuide(reg, init_scale=0.2)
    plate = pyro.plate("draws", DRAWS, dim=-3)
    trace = poutine.trace(plate(guide)).get_trace(rows)
    stacked = {n: trace.nodes[n]["value"] for n in weight_sites(reg)}
    forecast, _ = poutine.condition(reg, data=stacked)(rows)
    assert forecast.loc.shape == (DRAWS, 6, 3, 1)
    for s in range(DRAWS):
        alone, _ = poutine.condition(reg, data={n: v[s, 0, 0] for n, v in stacked.items()})(rows)
        torch.testing.assert_close(forecast.loc[s], alone.loc)
        torch.testing.assert_close(forecast.scale[s], alone.scale)


def test_predictive_samples_next_tokens_from_the_model_distribution():
    """Without targets ``obs`` is sampled: frequencies match softmax(logits) at a token."""
    pyro.set_rng_seed(5)
    lm = LanguageModel(5, 4, 4, num_layers=1, prior=None)
    tokens = torch.tensor([[1], [3]])
    logits, _ = lm(tokens)
    probs = torch.softmax(logits[1, 0], -1)
    n = 20000
    obs = Predictive(lm, num_samples=n, return_sites=["obs"], parallel=True)(tokens)["obs"]
    assert obs.shape == (n, 2, 1)
    freq = torch.bincount(obs[:, 1, 0], minlength=5).double() / n
    bound = 5 * torch.sqrt(probs * (1 - probs) / n) + 1e-3
    assert torch.all((freq - probs.double()).abs() < bound)


def test_predictive_samples_forecast_values_with_the_forecast_moments():
    pyro.set_rng_seed(6)
    reg = SequenceRegressor(1, 4, prior=None)
    rows = torch.randn(3, 1, 1)
    forecast, _ = reg(rows)
    n = 20000
    obs = Predictive(reg, num_samples=n, return_sites=["obs"], parallel=True)(rows)["obs"]
    assert obs.shape == (n, 3, 1, 1)
    torch.testing.assert_close(obs.mean(0), forecast.loc, atol=5 * 1.1 / n**0.5, rtol=0)
    torch.testing.assert_close(obs.std(0), forecast.scale, atol=0.05, rtol=0.05)


def test_a_plain_call_draws_no_next_tokens():
    """Outside a trace the obs site is skipped: a plain eval call consumes no randomness."""
    lm = LanguageModel(5, 4, 4, num_layers=1, prior=None).eval()
    tokens = torch.tensor([[1], [3]])
    state = torch.get_rng_state()
    lm(tokens)
    assert torch.equal(torch.get_rng_state(), state)
    assert "obs" in poutine.trace(lm).get_trace(tokens).nodes
