"""Deep ensembles: K MAP networks in one batched call, checked against K separate networks.

The reference is materialised: K plain (non-Bayesian) models holding the members' weights as
ordinary parameters, run one by one, with the Gaussian prior's log-density written out here.
"""

import math

import pytest
import torch

from bayesrnn.inference import (
    EnsembleGuide,
    TBPTTTrainer,
    TrainerConfig,
    evaluate_stream,
    make_guide,
    predict_sequences,
    scale_kl,
    window_terms,
)
from bayesrnn.models import GaussianPrior, LanguageModel, SequenceClassifier, SequenceRegressor
from bayesrnn.models.bayesian import weight_sites

K = 3
PRIOR_SCALE = 0.7
V, E, H = 11, 5, 6


def _lm(**options):
    return LanguageModel(V, E, H, num_layers=1, **options)


def _classifier(**options):
    return SequenceClassifier(V, 3, E, H, pooling="mean", **options)


def _regressor(**options):
    return SequenceRegressor(2, H, output_size=1, **options)


BUILDERS = {"lm": _lm, "classify": _classifier, "forecast": _regressor}


def _ensemble(kind: str, members: int = K, seed: int = 0):
    torch.manual_seed(seed)
    model = BUILDERS[kind](prior=GaussianPrior(PRIOR_SCALE))
    return model, EnsembleGuide(model, members=members, seed=seed + 100)


def _plain(kind: str, weights: dict[str, torch.Tensor]):
    """A non-Bayesian twin holding ``weights`` as its parameters (the one-by-one reference)."""
    plain = BUILDERS[kind](prior=None)
    params = dict(plain.named_parameters())
    assert set(params) == set(weights)
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    return plain


def _gaussian_log_prior(params) -> torch.Tensor:
    total = torch.zeros(())
    for w in params:
        total = total - 0.5 * (w / PRIOR_SCALE).square().sum()
        total = total - w.numel() * (math.log(PRIOR_SCALE) + 0.5 * math.log(2 * math.pi))
    return total


def _lm_nll(logits, targets):
    return -torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).sum()


# --- initialisation ------------------------------------------------------------------------


def test_members_start_from_their_own_draws_of_the_models_initialisation():
    torch.manual_seed(0)
    model = LanguageModel(50, 8, H, num_layers=1, prior=GaussianPrior(1.0))
    guide = EnsembleGuide(model, members=4, seed=3)
    initial = weight_sites(model)
    for site, value in initial.items():
        torch.testing.assert_close(guide.member(0)[site], value)  # member 0: the model's start
        for a in range(4):
            for b in range(a + 1, 4):
                assert not torch.equal(guide.member(a)[site], guide.member(b)[site]), site
    bound = 1 / math.sqrt(H)  # the RNN layers' U(±1/√hidden), the decoder's U(±1/√in)
    for k in range(1, 4):
        member = {site: value.detach() for site, value in guide.member(k).items()}
        assert 0.75 < float(member["embedding.weight"].std()) < 1.25  # N(0, 1), 400 values
        for site in ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "decoder.weight", "decoder.bias"):
            assert float(member[site].abs().max()) <= bound
            assert float(member[site].abs().max()) > 0.8 * bound  # spread over the range
    again = EnsembleGuide(model, members=4, seed=3)
    for site in initial:
        torch.testing.assert_close(again.weights[site], guide.weights[site])
    other = EnsembleGuide(model, members=4, seed=4)
    assert not torch.equal(other.member(1)["rnn.weight_hh_l0"], guide.member(1)["rnn.weight_hh_l0"])


def test_a_model_built_with_init_range_gives_members_that_range():
    model = _lm(prior=GaussianPrior(1.0), init_range=0.05)
    guide = EnsembleGuide(model, members=3, seed=1)
    for site in guide.site_names:
        values = guide.weights[site]
        assert float(values.abs().max()) <= 0.05
        assert not torch.equal(values[1], values[2])


@pytest.mark.parametrize("members", [0, -1, 1.5, True, "3", None])
def test_a_bad_number_of_members_is_refused(members):
    with pytest.raises(ValueError, match=r"members must be an integer >= 1, got"):
        EnsembleGuide(_lm(prior=GaussianPrior(1.0)), members=members)


def test_parameters_the_members_would_share_are_refused():
    model = _lm(prior=GaussianPrior(1.0), deterministic=("decoder.bias",))
    with pytest.raises(ValueError, match=r"\['decoder.bias'\].*all members would share"):
        EnsembleGuide(model, members=2)


def test_make_guide_knows_the_ensemble_and_rejects_unknown_options():
    guide = make_guide("ensemble", _lm(prior=GaussianPrior(1.0)), members=2)
    assert isinstance(guide, EnsembleGuide) and guide.members == 2
    with pytest.raises(ValueError, match="unknown option"):
        make_guide("ensemble", _lm(prior=GaussianPrior(1.0)), member=2)


# --- one batched call = K separate networks --------------------------------------------------


def _inputs(kind: str):
    g = torch.Generator().manual_seed(5)
    if kind == "lm":
        tokens = torch.randint(0, V, (8, 2), generator=g)
        return (tokens[:-1], tokens[1:]), {}
    if kind == "classify":
        tokens = torch.randint(0, V, (6, 3), generator=g)
        return (tokens, torch.tensor([0, 2, 1]), torch.tensor([6, 3, 4])), {}
    rows = torch.randn(8, 2, 2, generator=g)
    return (rows[:-1], rows[1:]), {}


def _reference_loss(kind, plain, args, state=None):
    """One member's NLL on the window, run alone; its carried state."""
    if kind == "lm":
        logits, state = plain(args[0], state=state)
        return _lm_nll(logits, args[1]), state
    if kind == "classify":
        logits = plain(args[0], None, args[2])
        return -torch.log_softmax(logits, -1).gather(-1, args[1].unsqueeze(-1)).sum(), None
    forecast, state = plain(args[0], state=state)
    normal = torch.distributions.Normal(forecast.loc, forecast.scale)
    return -normal.log_prob(args[1][..., :1]).sum(), state


def _split_state(state, k):
    """Member k's columns of a draw-major (layers, K·B, H) state."""
    if isinstance(state, tuple):
        return tuple(_split_state(s, k) for s in state)
    batch = state.shape[1] // K
    return state[:, k * batch : (k + 1) * batch]


@pytest.mark.parametrize("kind", ["lm", "classify", "forecast"])
def test_one_batched_call_equals_k_separate_models_in_loss_and_gradient(kind):
    """Two TBPTT windows (the state carried per member), the prior at weight 1/C = 1/4."""
    model, guide = _ensemble(kind)
    args, _ = _inputs(kind)
    scale = 0.25
    windows = [args, args] if kind != "classify" else [args]
    state = None
    for window_args in windows:
        kwargs = {} if kind == "classify" else {"state": state}
        guide.zero_grad()
        terms = window_terms(scale_kl(model, scale), scale_kl(guide, scale), *window_args, **kwargs)
        terms.loss.backward()
        batched_state = None if kind == "classify" else terms.result[1]
        total = torch.zeros(())
        for k in range(K):
            plain = _plain(kind, {s: v.detach() for s, v in guide.member(k).items()})
            member_state = None if state is None else _split_state(state, k)
            nll, new_state = _reference_loss(kind, plain, window_args, member_state)
            params = dict(plain.named_parameters())
            loss = nll - scale * _gaussian_log_prior(params.values())
            loss.backward()
            total = total + loss.detach()
            for site in guide.site_names:
                torch.testing.assert_close(
                    guide.weights[site].grad[k], params[site].grad, atol=1e-5, rtol=1e-4
                )
            if new_state is not None:
                torch.testing.assert_close(
                    _split_state(batched_state, k), new_state, atol=1e-5, rtol=1e-5
                )
        torch.testing.assert_close(terms.loss.detach(), total, atol=1e-3, rtol=1e-5)
        state = batched_state if kind != "classify" else None
        if isinstance(state, tuple):
            state = tuple(s.detach() for s in state)
        elif state is not None:
            state = state.detach()


def test_each_member_is_clipped_alone():
    _, guide = _ensemble("lm")
    torch.manual_seed(1)
    grads = {site: torch.full_like(guide.weights[site], 0.01) for site in guide.site_names}
    grads["decoder.weight"] = torch.randn_like(grads["decoder.weight"])
    grads["decoder.weight"][1] *= 1e-3  # member 1 under the bound, the others above
    for site in guide.site_names:
        guide.weights[site].grad = grads[site].clone()
    largest = guide.clip_member_gradients(1.0)
    norms = [
        math.sqrt(sum(float(grads[s][k].square().sum()) for s in guide.site_names))
        for k in range(K)
    ]
    assert float(largest) == pytest.approx(max(norms), rel=1e-5)
    for k in range(K):
        factor = min(1.0, 1.0 / (norms[k] + 1e-6))  # clip_grad_norm_'s rule, member by member
        for site in guide.site_names:
            torch.testing.assert_close(guide.weights[site].grad[k], grads[site][k] * factor)
    assert norms[1] < 1.0 < min(norms[0], norms[2])


# --- the mixture predictive --------------------------------------------------------------------


def _stream_reference(guide, stream, batch_size, bptt):
    """NLL of the equal-weight mixture: each plain member over the stream, probabilities
    averaged."""
    data = stream[: (stream.numel() // batch_size) * batch_size].reshape(batch_size, -1).t()
    probs, states = None, [None] * K
    nll, count = 0.0, 0
    for start in range(0, data.shape[0] - 1, bptt):
        inputs = data[start : start + bptt][: data.shape[0] - 1 - start]
        targets = data[start + 1 : start + 1 + inputs.shape[0]]
        probs = torch.zeros(*targets.shape)
        for k in range(K):
            plain = _plain("lm", {s: v.detach() for s, v in guide.member(k).items()})
            with torch.no_grad():
                logits, states[k] = plain(inputs, state=states[k])
            probs += torch.softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1) / K
        nll -= float(probs.log().sum())
        count += targets.numel()
    return nll, count


@pytest.mark.parametrize("draws", [K, 2 * K])
def test_the_stream_predictive_is_the_average_of_the_members_probabilities(draws):
    _, guide = _ensemble("lm", seed=2)
    model = guide.model
    stream = torch.randint(0, V, (61,), generator=torch.Generator().manual_seed(0))
    got = evaluate_stream(model, guide, stream, batch_size=3, bptt=7, num_samples=draws)
    nll, count = _stream_reference(guide, stream, 3, 7)
    assert got.tokens == count
    assert got.nll == pytest.approx(nll, rel=1e-5)
    alone = evaluate_stream(model, guide, stream, batch_size=3, bptt=7)  # "mean": member 0
    members = [EnsembleGuide(model, members=1, initial_values=[guide.member(0)])]
    first = evaluate_stream(model, members[0], stream, batch_size=3, bptt=7, num_samples=1)
    assert alone.nll == pytest.approx(first.nll, rel=1e-6)


def test_the_class_predictive_is_the_average_of_the_members_probabilities():
    model, guide = _ensemble("classify", seed=3)
    (tokens, _, lengths), _ = _inputs("classify")
    got = predict_sequences(model, guide, tokens, lengths, num_samples=K)
    expected = torch.zeros(3, 3)
    for k in range(K):
        plain = _plain("classify", {s: v.detach() for s, v in guide.member(k).items()})
        with torch.no_grad():
            expected += torch.softmax(plain(tokens, None, lengths), -1) / K
    torch.testing.assert_close(got.log_probs.exp(), expected, atol=1e-6, rtol=1e-5)
    assert got.draw_log_probs.shape == (K, 3, 3)


# --- training -----------------------------------------------------------------------------------


def _member_stream_nll(guide, k, stream):
    plain = _plain("lm", {s: v.detach() for s, v in guide.member(k).items()})
    data = stream[: (stream.numel() // 4) * 4].reshape(4, -1).t()
    with torch.no_grad():
        logits, _ = plain(data[:-1])
    return float(_lm_nll(logits, data[1:])) / data[1:].numel()


def test_training_lowers_every_members_loss_and_records_one_members_share():
    torch.manual_seed(0)
    pattern = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    stream = pattern.repeat(30)
    model, guide = _ensemble("lm", seed=4)
    before = [_member_stream_nll(guide, k, stream) for k in range(K)]
    start = {s: guide.weights[s].detach().clone() for s in guide.site_names}
    config = TrainerConfig(batch_size=4, bptt=10, epochs=2, lr=0.05, optimizer="adam", seed=0)
    history = TBPTTTrainer(model, guide, stream, config=config).fit()
    after = [_member_stream_nll(guide, k, stream) for k in range(K)]
    for k in range(K):
        assert after[k] < 0.7 * before[k], (k, before, after)
        moved = [not torch.equal(guide.weights[s][k], start[s][k]) for s in guide.site_names]
        assert all(moved)
    for site in guide.site_names:  # still three different networks
        values = guide.weights[site].detach()
        assert not torch.equal(values[0], values[1]) and not torch.equal(values[1], values[2])
    # the first step's recorded NLL is the members' mean over the first window, not their sum
    data = stream[: (stream.numel() // 4) * 4].reshape(4, -1).t()
    first = []
    for k in range(K):
        plain = _plain("lm", {s: start[s][k] for s in guide.site_names})
        with torch.no_grad():
            first.append(float(_lm_nll(plain(data[:10])[0], data[1:11])))
    assert history.nll[0] == pytest.approx(sum(first) / K, rel=1e-4)


def test_draws_that_would_weigh_the_members_unequally_are_refused():
    model, guide = _ensemble("lm")
    stream = torch.randint(0, V, (40,), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"ensemble of 3 members needs num_samples a multiple"):
        evaluate_stream(model, guide, stream, batch_size=2, bptt=5, num_samples=K + 1)
    classifier, class_guide = _ensemble("classify")
    (tokens, _, lengths), _ = _inputs("classify")
    with pytest.raises(ValueError, match=r"multiple of 3"):
        predict_sequences(classifier, class_guide, tokens, lengths, num_samples=2)
    from bayesrnn.evaluation.arviz_export import export_language_model

    with pytest.raises(ValueError, match=r"draws are its 3 members: export num_samples=3"):
        export_language_model(model, guide, stream, num_samples=2 * K)
