"""Gal's guide: mask scopes, its L2 KL against closed form and Monte Carlo, prediction modes."""

import pytest
import torch
from pyro import poutine

from bayesrnn.inference import GalDropoutGuide, evaluate_stream, sample_weights, window_terms
from bayesrnn.models import GaussianPrior, LanguageModel, ScaleMixturePrior, mc_dropout

RATES = {"embedding": 0.2, "input": 0.5, "hidden": 0.3, "output": 0.4}


def _model(prior_scale=0.7):
    return LanguageModel(12, 6, 6, num_layers=2, prior=GaussianPrior(prior_scale))


def _closed_form_kl(guide, prior_scale):
    rate_of = {
        "embedding.weight": RATES["embedding"],
        "decoder.weight": RATES["output"],
        "rnn.weight_ih_l0": RATES["input"],
        "rnn.weight_ih_l1": RATES["input"],
        "rnn.weight_hh_l0": RATES["hidden"],
        "rnn.weight_hh_l1": RATES["hidden"],
    }
    total = 0.0
    for site in guide.site_names:
        m2 = float(guide.mean[site].detach().double().square().sum())
        total += m2 / (2 * prior_scale**2 * (1 - rate_of.get(site, 0.0)))
    return total


@pytest.mark.parametrize("scope", ["sequence", "batch"])
def test_kl_is_gals_l2_term(scope):
    model = _model()
    guide = GalDropoutGuide(model, scope=scope, **RATES)
    tokens = torch.randint(0, 12, (5, 3))
    terms = window_terms(model, guide, tokens, tokens)
    assert float(terms.kl.detach()) == pytest.approx(_closed_form_kl(guide, 0.7), rel=1e-5)
    assert float(guide.kl_divergence().detach()) == pytest.approx(
        _closed_form_kl(guide, 0.7), rel=1e-5
    )


def test_kl_matches_the_expected_prior_energy_of_masked_draws():
    """E_q[‖w‖²]/(2s²) over batch-mask draws equals the (1−p)-corrected closed form."""
    model = _model(prior_scale=1.3)
    guide = GalDropoutGuide(model, scope="batch", **RATES)
    draws = 4000
    energy = 0.0
    for _ in range(draws):
        values = sample_weights(guide)
        energy += sum(float(v.double().square().sum()) for v in values.values()) / (2 * 1.3**2)
    assert energy / draws == pytest.approx(_closed_form_kl(guide, 1.3), rel=0.02)


def test_sequence_scope_masks_each_sequence_and_shares_over_time():
    model = _model()
    guide = GalDropoutGuide(model, scope="sequence", **RATES)
    assert model.regularisers.locked_hidden == 0.3 and model.regularisers.mask_scope == "sequence"
    tokens = torch.randint(0, 12, (6, 1)).expand(6, 4)  # four identical sequences
    trace = poutine.trace(guide).get_trace(tokens)
    logits, _ = poutine.replay(model, trace=trace)(tokens)
    assert not torch.allclose(logits[:, 0], logits[:, 1])  # each sequence its own mask
    model.eval()  # the standard dropout approximation: mean weights, no masks
    logits, _ = poutine.replay(model, trace=poutine.trace(guide).get_trace(tokens))(tokens)
    torch.testing.assert_close(logits[:, 0], logits[:, 3])
    means = {s: guide.mean[s] for s in guide.site_names}
    torch.testing.assert_close(logits, poutine.condition(model, data=means)(tokens)[0])


def test_batch_scope_shares_one_mask_over_the_batch_and_redraws_per_call():
    model = _model()
    guide = GalDropoutGuide(model, scope="batch", **RATES)
    assert model.regularisers.locked_hidden == 0.0
    tokens = torch.randint(0, 12, (6, 1)).expand(6, 4)
    first = sample_weights(guide)["rnn.weight_hh_l0"]
    second = sample_weights(guide)["rnn.weight_hh_l0"]
    assert not torch.equal(first, second)
    kept = (first != 0).any(0)  # dropped columns are whole columns
    assert torch.equal(first[:, ~kept], torch.zeros_like(first[:, ~kept]))
    torch.testing.assert_close(first[:, kept], guide.mean["rnn.weight_hh_l0"][:, kept] / 0.7)
    trace = poutine.trace(guide).get_trace(tokens)
    logits, _ = poutine.replay(model, trace=trace)(tokens)
    torch.testing.assert_close(logits[:, 0], logits[:, 3])


def test_mc_prediction_averages_probabilities_and_differs_from_mean_weights():
    model = _model()
    guide = GalDropoutGuide(model, scope="sequence", **RATES)
    stream = torch.randint(0, 12, (400,))
    collected = []
    mc = evaluate_stream(
        model,
        guide,
        stream,
        batch_size=4,
        bptt=10,
        num_samples=3,
        on_window=lambda t, lp, draws: collected.append((t, lp, draws)),
    )
    mean = evaluate_stream(model, guide, stream, batch_size=4, bptt=10)
    assert mc.tokens == mean.tokens and mc.perplexity != mean.perplexity
    _, log_probs, draws = collected[0]
    assert draws.shape[0] == 3
    expected = torch.log(draws.exp().mean(0))  # mean of probabilities, not of log-probs
    torch.testing.assert_close(log_probs, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(log_probs, draws.mean(0))


def test_masks_on_only_in_training_or_mc():
    model = _model()
    guide = GalDropoutGuide(model, scope="batch", **RATES)
    model.eval()
    mean = guide.mean["rnn.weight_hh_l0"]
    torch.testing.assert_close(sample_weights(guide)["rnn.weight_hh_l0"], mean)
    with mc_dropout(model):
        assert not torch.equal(sample_weights(guide)["rnn.weight_hh_l0"], mean)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden": 1.0}, "hidden"),
        ({"input": -0.1}, "input"),
        ({"scope": "token"}, "scope"),
        ({"dropout": 0.5}, "unknown option"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GalDropoutGuide(_model(), **kwargs)


def test_needs_a_gaussian_prior_and_free_mask_slots():
    with pytest.raises(ValueError, match="Gaussian"):
        GalDropoutGuide(LanguageModel(12, 4, 4, prior=ScaleMixturePrior()), hidden=0.2)
    busy = LanguageModel(12, 4, 4, regularisers={"locked_hidden": 0.2})
    with pytest.raises(ValueError, match="owns"):
        GalDropoutGuide(busy, hidden=0.3)
