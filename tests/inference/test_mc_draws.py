"""MC draws for stream prediction: embedding rows a window reads, local decoder noise (issue 16)."""

import copy

import pytest
import torch

from bayesrnn.inference import GalDropoutGuide, MeanFieldGuide, evaluate_stream
from bayesrnn.inference.mc_draws import mean_field_draws
from bayesrnn.inference.predictive import sample_weights
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
    import bayesrnn.inference.predictive as predictive

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
