"""Weights are sample sites named like torch's parameters, drawn once per forward call."""

import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from bayesrnn.models import BayesianLSTM, LanguageModel, weight_sites


def _sample_sites(trace):
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


@pytest.mark.parametrize("steps", [1, 12])
def test_one_site_per_weight_with_parameter_shape(steps):
    layer = BayesianLSTM(3, 5, num_layers=2)
    reference = torch.nn.LSTM(3, 5, num_layers=2)
    trace = poutine.trace(layer).get_trace(torch.randn(steps, 2, 3))
    sites = _sample_sites(trace)
    expected = {name: p.shape for name, p in reference.named_parameters()}
    assert {name: s["value"].shape for name, s in sites.items()} == expected


def test_nested_sites_carry_module_path_and_deterministic_stays_param():
    model = LanguageModel(11, 4, 4, num_layers=1, deterministic=("decoder.bias",))
    tokens = torch.randint(0, 11, (5, 2))
    trace = poutine.trace(model).get_trace(tokens, tokens)
    sites = _sample_sites(trace)
    assert sorted(sites) == sorted(
        [
            "embedding.weight",
            "rnn.weight_ih_l0",
            "rnn.weight_hh_l0",
            "rnn.bias_ih_l0",
            "rnn.bias_hh_l0",
            "decoder.weight",
        ]
    )
    assert trace.nodes["decoder.bias"]["type"] == "param"
    assert trace.nodes["obs"]["is_observed"]
    plates = {f.name: f.dim for f in trace.nodes["obs"]["cond_indep_stack"]}
    assert plates == {"sequences": -1, "steps": -2}  # time-major: batch is the last batch dim
    assert set(weight_sites(model)) == set(sites)


def test_two_calls_draw_different_weights_from_the_prior():
    layer = BayesianLSTM(2, 3)
    x = torch.randn(4, 1, 2)
    first = poutine.trace(layer).get_trace(x).nodes["weight_hh_l0"]["value"]
    second = poutine.trace(layer).get_trace(x).nodes["weight_hh_l0"]["value"]
    assert not torch.equal(first, second)


def test_deterministic_pattern_must_match_a_parameter():
    with pytest.raises(ValueError, match="deterministic"):
        LanguageModel(11, 4, 4, deterministic=("decoder.nonexistent",))


def test_prior_none_gives_a_plain_network():
    layer = BayesianLSTM(2, 3, prior=None)
    assert len(list(layer.parameters())) == 4
    trace = poutine.trace(layer).get_trace(torch.randn(4, 1, 2))
    assert not _sample_sites(trace)
