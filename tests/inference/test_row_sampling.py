"""Drawing only the embedding rows a window reads: exact for the ELBO with a computed KL.

The unused rows of a draw hold μ; they cannot change the window's likelihood, and the KL is
computed from (μ, σ), so the window's ELBO estimate (and its gradient) has the same distribution
as with a dense draw. The checks: the drawn rows have the right moments, the other rows cannot
move the likelihood, the mean gradient over many draws matches the dense estimator within Monte
Carlo error, and Pyro's stock ELBOs (which score the draw itself) still get dense draws.
"""

import pyro
import torch
from pyro import poutine

from bayesrnn.inference import MeanFieldGuide, scale_kl, window_terms
from bayesrnn.inference.estimators.distributions import RowSampledNormal
from bayesrnn.models import GaussianPrior, LanguageModel, ScaleMixturePrior


def test_drawn_rows_have_the_posterior_moments_and_the_rest_is_the_mean():
    torch.manual_seed(0)
    loc, rho = torch.randn(6, 3), torch.randn(6, 3)
    rows = torch.tensor([1, 4])
    q = RowSampledNormal(loc, rho, rows, 1e-5)
    draws = torch.stack([q.rsample() for _ in range(20_000)])
    sigma = torch.nn.functional.softplus(rho) + 1e-5
    others = torch.tensor([0, 2, 3, 5])
    assert torch.equal(draws[:, others], loc[others].expand(20_000, 4, 3))
    torch.testing.assert_close(draws[:, rows].mean(0), loc[rows], atol=0.05, rtol=0)
    torch.testing.assert_close(draws[:, rows].std(0), sigma[rows], atol=0.0, rtol=0.03)
    torch.testing.assert_close(q.scale, sigma)  # the KL sees every row's σ


def _model_and_guide(prior):
    torch.manual_seed(1)
    lm = LanguageModel(40, 4, 5, num_layers=1, prior=prior, deterministic=("decoder.bias",))
    return lm, MeanFieldGuide(lm, init_scale=0.3)


def test_the_library_elbo_draws_only_the_rows_a_window_reads():
    lm, guide = _model_and_guide(ScaleMixturePrior())
    tokens, targets = torch.randint(0, 10, (5, 2)), torch.randint(0, 40, (5, 2))
    seen = {}

    def recording_guide(*args, **kwargs):
        values = guide(*args, **kwargs)
        seen.update(values)
        return values

    window_terms(lm, recording_guide, tokens, targets)
    weight, mean = seen["embedding.weight"], guide.loc["embedding.weight"]
    unread = torch.ones(40, dtype=torch.bool)
    unread[tokens.unique()] = False
    assert torch.equal(weight[unread], mean[unread])
    assert not torch.equal(weight[~unread], mean[~unread])
    # the other rows cannot move the likelihood
    junk = weight.detach().clone()
    junk[unread] = torch.randn_like(junk[unread]) * 100
    others = {s: v.detach() for s, v in seen.items()}
    first, _ = poutine.condition(lm, data=others)(tokens)
    second, _ = poutine.condition(lm, data={**others, "embedding.weight": junk})(tokens)
    torch.testing.assert_close(first, second)
    # a stock ELBO traces the guide by itself: a dense draw
    dense = poutine.trace(guide).get_trace(tokens, targets).nodes["embedding.weight"]["value"]
    assert not torch.equal(dense[unread], mean[unread])


def _mean_gradient(lm, guide, tokens, targets, draws: int):
    """Mean and standard error of the window loss's gradient in the embedding's (μ, ρ)."""
    params = [guide.loc["embedding.weight"], guide.rho["embedding.weight"]]
    total = [torch.zeros_like(p) for p in params]
    squares = [torch.zeros_like(p) for p in params]
    for _ in range(draws):
        terms = window_terms(scale_kl(lm, 0.1), scale_kl(guide, 0.1), tokens, targets)
        for t, q, g in zip(total, squares, torch.autograd.grad(terms.loss, params), strict=True):
            t.add_(g)
            q.add_(g.square())
    means = [t / draws for t in total]
    errors = [
        ((q / draws - m.square()).clamp_min(0) / draws).sqrt()
        for q, m in zip(squares, means, strict=True)
    ]
    return means, errors


def test_sparse_and_dense_draws_give_the_same_expected_gradient():
    lm, guide = _model_and_guide(GaussianPrior(0.5))
    tokens, targets = torch.randint(0, 10, (5, 2)), torch.randint(0, 40, (5, 2))
    pyro.set_rng_seed(2)
    sparse, sparse_se = _mean_gradient(lm, guide, tokens, targets, draws=400)
    guide.__dict__["rows_to_draw"] = lambda *args, **kwargs: None  # the dense estimator
    dense, dense_se = _mean_gradient(lm, guide, tokens, targets, draws=400)
    for s, d, se1, se2 in zip(sparse, dense, sparse_se, dense_se, strict=True):
        z = (s - d).abs() / (se1.square() + se2.square()).sqrt().clamp_min(1e-6)
        assert float(z.max()) < 5.0
        assert float((z > 3).float().mean()) < 0.02


def test_a_kl_read_from_the_draw_gets_sparse_rows_only_where_the_kl_is_left_out():
    lm, _ = _model_and_guide(ScaleMixturePrior())
    guide = MeanFieldGuide(lm, init_scale=0.3, kl="sample")  # the one-sample KL reads the draw
    tokens, targets = torch.randint(0, 10, (5, 2)), torch.randint(0, 40, (5, 2))
    unread = torch.ones(40, dtype=torch.bool)
    unread[tokens.unique()] = False
    mean = guide.loc["embedding.weight"]
    for scale, sparse in ((0.5, False), (0.0, True)):
        traced = poutine.trace(guide)
        window_terms(scale_kl(lm, scale), scale_kl(traced, scale), tokens, targets)
        drawn = traced.trace.nodes["embedding.weight"]["value"]
        assert torch.equal(drawn[unread], mean[unread]) == sparse
