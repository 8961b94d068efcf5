"""The fitted-scale priors as model parts: their sites and parameters, their densities."""

import math

import pyro
import pytest
import torch
from pyro import poutine

from bayesrnn.models import (
    HierarchicalGaussianPrior,
    LearnedGaussianPrior,
    SequenceRegressor,
    learned_prior_scales,
    prior_scale_sites,
)
from bayesrnn.models.learned_priors import InverseGammaScale


def tiny(prior):
    return SequenceRegressor(1, 3, prior=prior, deterministic=())


def test_the_learned_prior_is_one_log_scale_parameter_per_weight_site():
    model = tiny(LearnedGaussianPrior(initial_scale=0.5))
    names = {name for name, _ in model.named_parameters()}
    sites = ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0"]
    sites += ["decoder.weight", "decoder.bias"]
    assert names == {f"{site}_prior_log_scale" for site in sites}
    assert learned_prior_scales(model) == pytest.approx({site: 0.5 for site in sites})
    assert prior_scale_sites(model) == {}
    assert "rnn.weight_hh_l0_prior_log_scale" in model.state_dict()


def test_the_learned_scale_is_a_proper_part_of_the_model():
    """With the weights fixed, d log p(w | s)/d log s = −n + Σw²/s² (hand-derived)."""
    model = tiny(LearnedGaussianPrior())
    log_scale = model.get_parameter("rnn.weight_hh_l0_prior_log_scale")
    with torch.no_grad():
        log_scale.fill_(math.log(0.7))
    weights = {"rnn.weight_hh_l0": torch.randn(12, 3)}
    x = torch.randn(4, 2, 1)
    trace = poutine.trace(poutine.condition(model, data=weights)).get_trace(x, x)
    site = trace.nodes["rnn.weight_hh_l0"]
    site["fn"].log_prob(site["value"]).backward()
    w = weights["rnn.weight_hh_l0"]
    expected = -w.numel() + float(w.square().sum()) / 0.7**2
    assert float(log_scale.grad) == pytest.approx(expected, rel=1e-5)
    assert "rnn.weight_hh_l0_prior_log_scale" in pyro.get_param_store()


def test_the_hierarchical_prior_makes_one_scalar_scale_site_per_weight_site():
    model = tiny(HierarchicalGaussianPrior(2.0, 3.0))
    scales = prior_scale_sites(model)
    assert scales["rnn.weight_hh_l0_prior_scale"] == "rnn.weight_hh_l0"
    assert len(scales) == 6
    x = torch.randn(4, 2, 1)
    trace = poutine.trace(model).get_trace(x, x)
    for scale_site, weight_site in scales.items():
        s = trace.nodes[scale_site]["value"]
        assert s.shape == () and float(s) > 0
        assert trace.nodes[weight_site]["fn"].base_dist.scale.flatten()[0] == s
    assert list(model.parameters()) == []


def test_the_inverse_gamma_scale_density_is_the_variance_density_times_its_jacobian():
    a, b = torch.tensor(2.5), torch.tensor(0.7)
    s = torch.tensor([0.2, 0.9, 3.0])
    variance = torch.distributions.InverseGamma(a, b)
    expected = variance.log_prob(s.square()) + torch.log(2 * s)
    assert torch.allclose(InverseGammaScale(a, b).log_prob(s), expected, atol=1e-6)


def test_inverse_gamma_scale_draws_have_the_precision_mean_a_over_b():
    torch.manual_seed(0)
    a, b = torch.tensor(3.0), torch.tensor(2.0)
    draws = InverseGammaScale(a, b).rsample((200_000,))
    precision = draws.pow(-2)
    assert float(precision.mean()) == pytest.approx(1.5, rel=0.01)  # Gamma(a, b) mean a/b


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: LearnedGaussianPrior(0.0), "initial_scale"),
        (lambda: LearnedGaussianPrior(float("inf")), "initial_scale"),
        (lambda: HierarchicalGaussianPrior(concentration=-1.0), "concentration"),
        (lambda: HierarchicalGaussianPrior(rate=0.0), "rate"),
    ],
)
def test_bad_hyperparameters_are_value_errors(build, fragment):
    with pytest.raises(ValueError, match=fragment):
        build()
