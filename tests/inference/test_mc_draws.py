"""MC draws for stream prediction: embedding rows a window reads, local decoder noise (issue 16)."""

import copy

import pytest
import torch

from bayesrnn.inference import GalDropoutGuide, MeanFieldGuide, evaluate_stream
from bayesrnn.inference.prediction.mc_draws import mean_field_draws
from bayesrnn.inference.prediction.predictive import sample_weights
from bayesrnn.models import GaussianPrior, LanguageModel


def _pair(vocab=13, size=6, scale=0.3, **kwargs):
    torch.manual_seed(0)
    model = LanguageModel(vocab, size, size, num_layers=2, **kwargs)
    return model, MeanFieldGuide(model, init_scale=scale)


def test_dense_draws_are_the_guide_traces_draws_for_the_same_random_state():
    _, guide = _pair()
    tokens = torch.randint(0, 13, (5, 3))
    torch.manual_seed(3)
    traced = sample_weights(guide, tokens, tokens)
    torch.manual_seed(3)
    direct = mean_field_draws(guide, 1, tokens, rows_only=False)
    assert traced.keys() == direct.keys()
    for site in traced:
        torch.testing.assert_close(direct[site], traced[site], rtol=0, atol=0)


def test_window_draws_sample_the_embedding_only_at_the_rows_read_with_the_guide_scale():
    _, guide = _pair(vocab=40)
    tokens = torch.tensor([[3, 7], [7, 11], [3, 30]])
    read = torch.tensor([3, 7, 11, 30])
    draws = mean_field_draws(guide, 2000, tokens, rows_only=True)["embedding.weight"]
    loc = guide.loc["embedding.weight"].detach()
    sigma = guide.scale("embedding.weight").detach()
    unread = torch.ones(40, dtype=torch.bool)
    unread[read] = False
    assert torch.equal(draws[:, unread], loc[unread].expand(2000, -1, -1))
    z = (draws[:, read] - loc[read]) / sigma[read]
    assert abs(float(z.mean())) < 0.03  # 48,000 standard normals: se ≈ 0.005
    assert float(z.std()) == pytest.approx(1.0, abs=0.02)


def test_only_window_redraws_get_row_draws(monkeypatch):
    import bayesrnn.inference.prediction.predictive as predictive

    seen = []

    def recording(*args, **kwargs):
        seen.append(kwargs["rows_only"])
        return mean_field_draws(*args, **kwargs)

    monkeypatch.setattr(predictive, "mean_field_draws", recording)
    model, guide = _pair()
    stream = torch.randint(0, 13, (90,))
    evaluate_stream(model, guide, stream, batch_size=3, bptt=6, num_samples=2)
    assert seen and all(seen)
    seen.clear()
    evaluate_stream(model, guide, stream, batch_size=3, bptt=6, num_samples=2, redraw="stream")
    assert seen == [False, False]  # one dense draw per chunk, kept for the whole stream


def _per_token_predictive(model, guide, stream, draws, decoder):
    """Mixture probabilities (T·B·V per window, concatenated) and their MC standard errors."""
    probs, errors = [], []

    def keep(targets, log_probs, draw_log_probs):
        p = draw_log_probs.exp()
        probs.append(log_probs.exp().flatten())
        errors.append((p.std(0) / draws**0.5).flatten())

    evaluate_stream(
        model,
        guide,
        stream,
        batch_size=2,
        bptt=5,
        num_samples=draws,
        draws_per_batch=1000,
        decoder=decoder,
        on_window=keep,
    )
    return torch.cat(probs), torch.cat(errors)


@pytest.mark.parametrize("random_sites", ["all", "decoder only"])
def test_local_decoder_predictive_matches_weight_draw_mc_within_monte_carlo_error(random_sites):
    fixed = ()
    if random_sites == "decoder only":  # h is then the same in every draw: the sharpest check
        probe, _ = _pair(vocab=7, size=5)
        fixed = tuple(s for s in MeanFieldGuide(probe).site_names if not s.startswith("decoder"))
    scale = 0.6 if random_sites == "all" else 3.0
    model, guide = _pair(vocab=7, size=5, scale=scale, deterministic=fixed)
    stream = torch.randint(0, 7, (26,), generator=torch.Generator().manual_seed(1))
    draws = 2000
    torch.manual_seed(10)
    weights, se_weights = _per_token_predictive(model, guide, stream, draws, "weights")
    torch.manual_seed(11)
    local, se_local = _per_token_predictive(model, guide, stream, draws, "local")
    z = (local - weights) / (se_weights.square() + se_local.square()).sqrt()
    assert float(z.abs().max()) < 4.5  # 154 probabilities: |z| < 4.5 unless the law differs
    if random_sites == "decoder only":  # the check has power: no decoder noise is told apart
        still = copy.deepcopy(guide)
        with torch.no_grad():
            for site in ("decoder.weight", "decoder.bias"):
                still.rho[site].fill_(-30.0)
        held, _ = _per_token_predictive(model, still, stream, 2, "weights")
        assert float(((held - weights) / se_weights).abs().max()) > 5.0  # null: max |z| ≈ 3


def test_local_decoder_refuses_what_it_cannot_draw_exactly():
    stream = torch.randint(0, 13, (60,))
    tied, tied_guide = _pair(tie_weights=True)
    with pytest.raises(ValueError, match="untied"):
        evaluate_stream(tied, tied_guide, stream, num_samples=2, decoder="local")
    model = LanguageModel(13, 6, 6, prior=GaussianPrior(1.0))
    with pytest.raises(ValueError, match="MeanFieldGuide"):
        evaluate_stream(model, GalDropoutGuide(model), stream, num_samples=2, decoder="local")
    model, guide = _pair()
    with pytest.raises(ValueError, match="decoder must be one of"):
        evaluate_stream(model, guide, stream, num_samples=2, decoder="logits")


def _nested_predictive(model, guide, stream, draws, recurrent):
    """Mixture probabilities with ``recurrent`` shared network draws, and a conservative
    standard error from the spread of the per-recurrent-draw means."""
    probs, errors = [], []
    per = draws // recurrent

    def keep(targets, log_probs, draw_log_probs):
        groups = draw_log_probs.exp().reshape(recurrent, per, *draw_log_probs.shape[1:]).mean(1)
        probs.append(log_probs.exp().flatten())
        errors.append((groups.std(0) / recurrent**0.5).flatten())

    options = dict(batch_size=2, bptt=5, num_samples=draws, on_window=keep)
    evaluate_stream(model, guide, stream, decoder="local", recurrent_draws=recurrent, **options)
    return torch.cat(probs), torch.cat(errors)


def test_shared_recurrent_draws_keep_every_tokens_predictive():
    model, guide = _pair(vocab=7, size=5, scale=0.6)
    stream = torch.randint(0, 7, (26,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(10)
    weights, se_weights = _per_token_predictive(model, guide, stream, 2000, "weights")
    torch.manual_seed(12)
    nested, se_nested = _nested_predictive(model, guide, stream, 2000, 400)
    z = (nested - weights) / (se_weights.square() + se_nested.square()).sqrt()
    assert float(z.abs().max()) < 4.5  # 154 probabilities, as for the independent draws


def test_recurrent_draws_run_the_network_once_each_per_window():
    model, guide = _pair()
    stream = torch.randint(0, 13, (3 * 13,))
    runs = []
    handle = model.rnn.register_forward_hook(lambda *args: runs.append(1))
    try:
        result = evaluate_stream(
            model,
            guide,
            stream,
            batch_size=3,
            bptt=6,
            num_samples=10,
            decoder="local",
            recurrent_draws=2,
        )
    finally:
        handle.remove()
    assert len(runs) == 2 * 2  # two windows of 6 steps, two network runs each
    assert result.tokens == 3 * 12
    assert 1.0 < result.perplexity < 13 * 3


def test_recurrent_draws_are_checked():
    model, guide = _pair()
    stream = torch.randint(0, 13, (60,))
    with pytest.raises(ValueError, match=r"needs MC .* decoder='local'"):
        evaluate_stream(model, guide, stream, num_samples=4, recurrent_draws=2)
    with pytest.raises(ValueError, match=r"recurrent_draws must be an integer in \[1, num_"):
        evaluate_stream(model, guide, stream, num_samples=4, decoder="local", recurrent_draws=5)
    with pytest.raises(ValueError, match="recurrent_draws must be an integer"):
        evaluate_stream(model, guide, stream, num_samples=4, decoder="local", recurrent_draws=0)
    for wrong in (True, 2.0, "2"):
        with pytest.raises(ValueError, match="recurrent_draws must be an integer"):
            evaluate_stream(
                model, guide, stream, num_samples=4, decoder="local", recurrent_draws=wrong
            )


def test_local_target_log_probs_equal_a_log_softmax_per_draw_compiled_or_not():
    from bayesrnn.inference.estimators.compiled import compile_mode_set
    from bayesrnn.inference.prediction.mc_draws import local_logit_noise, local_target_log_probs

    generator = torch.Generator().manual_seed(4)
    mean, scale = (
        torch.randn(6, 3, 50, generator=generator),
        torch.rand(6, 3, 50, generator=generator),
    )
    targets = torch.randint(0, 50, (6, 3), generator=generator)
    noise = local_logit_noise(mean, 4)
    assert noise.shape == (4, 1, 3, 50)
    expected = torch.stack(
        [
            torch.log_softmax(mean + scale * n, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for n in noise
        ]
    )
    for mode in ("off", "on"):
        with compile_mode_set(mode):
            got = local_target_log_probs(mean, scale, noise, targets)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
