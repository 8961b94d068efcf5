"""Bayes by Backprop guide: initialisation, analytic and sampled KLs, one draw per window."""

import math

import pytest
import torch
from pyro import poutine

from bayesrnn.inference import MeanFieldGuide, make_guide, window_terms
from bayesrnn.inference.guides.mean_field import auto_initial_scale
from bayesrnn.models import GaussianPrior, LanguageModel, ScaleMixturePrior


def test_fortunato_initial_scales():
    prior = ScaleMixturePrior()  # π=0.25, σ1=e⁻¹, σ2=e⁻⁷
    sigma_p = math.sqrt(0.25 * math.exp(-2) + 0.75 * math.exp(-14))
    assert prior.stddev == pytest.approx(sigma_p) and sigma_p == pytest.approx(0.184, abs=1e-3)
    model = LanguageModel(30, 8, 8, prior=prior, deterministic=("decoder.bias",))
    guide = MeanFieldGuide(model, init_scale="fortunato")
    recurrent = guide.scale("rnn.weight_hh_l0")
    embedding = guide.scale("embedding.weight")
    assert (
        sigma_p / 4 - 1e-6 <= float(recurrent.detach().min())
        and float(recurrent.detach().max()) <= sigma_p / 2 + 1e-6
    )
    assert (
        sigma_p / 2 - 1e-6 <= float(embedding.detach().min())
        and float(embedding.detach().max()) <= sigma_p + 1e-6
    )
    torch.testing.assert_close(
        guide.loc["rnn.weight_hh_l0"], guide.initial_value("rnn.weight_hh_l0")
    )


def test_auto_initial_scale_is_a_tenth_of_each_sites_size_capped_by_the_prior():
    torch.manual_seed(0)
    model = LanguageModel(30, 8, 8, num_layers=1, prior=GaussianPrior(0.5), init_range=0.2)
    guide = MeanFieldGuide(model)  # "auto" is the default
    for site in guide.site_names:
        initial = guide.initial_value(site).detach()
        rms = math.sqrt(sum(float(x) ** 2 for x in initial.flatten()) / initial.numel())
        # U(−0.2, 0.2) has rms 0.2/√3 ≈ 0.115, below the prior's 0.5
        assert rms == pytest.approx(0.2 / math.sqrt(3), rel=0.3)
        scale = guide.scale(site).detach()
        torch.testing.assert_close(scale, torch.full_like(scale, 0.1 * rms), rtol=1e-4, atol=0)
    # a site that starts at zero takes a tenth of the prior's scale
    assert auto_initial_scale(torch.zeros(4, 3), 0.5) == pytest.approx(0.05)
    assert auto_initial_scale(torch.full((2,), 3.0), 0.5) == pytest.approx(0.05)
    big = LanguageModel(30, 8, 8, num_layers=1, prior=GaussianPrior(0.01), init_range=0.5)
    capped = MeanFieldGuide(big, init_scale="auto")
    for site in capped.site_names:  # weights larger than the prior: σ = 0.1 × 0.01
        scale = capped.scale(site).detach()
        torch.testing.assert_close(scale, torch.full_like(scale, 1e-3), rtol=1e-4, atol=0)


def test_sharpened_guide_and_config_default_to_auto():
    from bayesrnn.app.config import GuideConfig
    from bayesrnn.inference import SharpenedGuide

    torch.manual_seed(0)
    model = LanguageModel(30, 8, 8, num_layers=1, prior=GaussianPrior(1.0), init_range=0.1)
    sharp, plain = SharpenedGuide(model), MeanFieldGuide(model, init_scale="auto")
    for site in plain.site_names:
        torch.testing.assert_close(sharp.scale(site), plain.scale(site))
    assert GuideConfig().init_scale == "auto"


def test_gaussian_prior_kl_is_analytic_closed_form():
    model = LanguageModel(10, 4, 4, num_layers=1, prior=GaussianPrior(0.5))
    guide = MeanFieldGuide(model, init_scale=0.1)
    tokens = torch.randint(0, 10, (3, 2))
    kl = float(window_terms(model, guide, tokens, tokens).kl.detach())
    expected = 0.0
    for site in guide.site_names:
        mu = guide.loc[site].detach().double()
        sigma = guide.scale(site).detach().double()
        # KL(N(μ,σ²) ‖ N(0,s²)) = log(s/σ) + (σ² + μ²)/(2s²) − 1/2, summed over weights
        expected += float(
            (math.log(0.5) - sigma.log() + (sigma**2 + mu**2) / (2 * 0.25) - 0.5).sum()
        )
    assert kl == pytest.approx(expected, rel=1e-5)


def test_scale_mixture_kl_is_the_single_sample_log_q_minus_log_p():
    model = LanguageModel(10, 4, 4, num_layers=1, prior=ScaleMixturePrior())
    guide = MeanFieldGuide(model, kl="sample")
    tokens = torch.randint(0, 10, (3, 2))
    trace = poutine.trace(guide).get_trace(tokens, tokens)
    terms = window_terms(model, poutine.replay(guide, trace=trace), tokens, tokens)
    expected = 0.0
    for site in guide.site_names:
        theta = trace.nodes[site]["value"].detach()
        expected += float(guide.distribution(site).log_prob(theta).detach())
        expected -= float(
            guide.prior(site).distribution(theta.shape, theta.device, theta.dtype).log_prob(theta)
        )
    assert float(terms.kl.detach()) == pytest.approx(expected, rel=1e-4)


def test_one_draw_per_window_shared_by_steps_and_sequences():
    model = LanguageModel(10, 4, 4, num_layers=1)
    guide = MeanFieldGuide(model)
    tokens = torch.randint(0, 10, (1, 1)).expand(7, 3)  # identical sequences, repeated token
    trace = poutine.trace(guide).get_trace(tokens)
    assert trace.nodes["rnn.weight_hh_l0"]["value"].shape == (16, 4)  # one matrix, not per step
    logits, _ = poutine.replay(model, trace=trace)(tokens)
    torch.testing.assert_close(logits[:, 0], logits[:, 2])  # the same weights for every sequence


def test_bad_options():
    model = LanguageModel(10, 4, 4)
    with pytest.raises(ValueError, match="unknown option"):
        MeanFieldGuide(model, init_sigma=0.1)
    with pytest.raises(ValueError, match="init_scale"):
        MeanFieldGuide(model, init_scale=-1.0)
    for bad in ("automatic", True, float("nan"), 1e-6):
        with pytest.raises(ValueError, match="init_scale must be 'auto', 'fortunato' or a"):
            MeanFieldGuide(model, init_scale=bad)
    with pytest.raises(ValueError, match="unknown guide"):
        make_guide("laplace", model)
    with pytest.raises(ValueError, match="bad option"):
        make_guide("auto_normal", model, init_sigma=0.1)
    with pytest.raises(ValueError, match="prior=None"):
        MeanFieldGuide(LanguageModel(10, 4, 4, prior=None))


def test_fused_mixture_kl_equals_independent_log_densities():
    """The cached-ε single-sample KL equals log N(θ; μ, σ) − log(mixture density) by hand."""
    model = LanguageModel(10, 4, 4, num_layers=1, prior=ScaleMixturePrior(0.3, 0.5, 0.01))
    guide = MeanFieldGuide(model, kl="sample")
    site = "rnn.weight_hh_l0"
    q = guide.distribution(site)
    theta = q.rsample()
    prior = guide.prior(site).distribution(theta.shape, theta.device, theta.dtype)
    got = float(torch.distributions.kl_divergence(q, prior).detach())
    t = theta.detach().double()
    log_q = (
        torch.distributions.Normal(
            guide.loc[site].detach().double(), guide.scale(site).detach().double()
        )
        .log_prob(t)
        .sum()
    )
    density = 0.3 * torch.exp(-0.5 * (t / 0.5) ** 2) / (
        0.5 * math.sqrt(2 * math.pi)
    ) + 0.7 * torch.exp(-0.5 * (t / 0.01) ** 2) / (0.01 * math.sqrt(2 * math.pi))
    assert got == pytest.approx(float(log_q - density.log().sum()), rel=1e-4)
