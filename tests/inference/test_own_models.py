"""Your own models: bayesianize on any torch module, the guides on them, stock Pyro ELBOs."""

import copy
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO
from pyro.nn import PyroSample
from torch import nn

from bayesrnn.inference.guides import GalDropoutGuide, MeanFieldGuide, SharpenedGuide
from bayesrnn.models import BayesianLSTM, GaussianPrior, LanguageModel, bayesianize, weight_sites


class Tagger(nn.Module):
    """A user's model: torch modules around a bayesrnn LSTM, one tag per token."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.rnn = BayesianLSTM(4, 5, prior=None)
        self.head = nn.Linear(5, 3)

    def forward(self, tokens, tags=None):
        out, _ = self.rnn(self.embed(tokens))
        logits = self.head(out)
        with pyro.plate("seq", tokens.shape[1], dim=-1), pyro.plate("t", tokens.shape[0], dim=-2):
            pyro.sample("obs", dist.Categorical(logits=logits), obs=tags)
        return logits


def test_bayesianize_turns_torch_children_into_sample_sites_that_their_forward_reads():
    torch.manual_seed(0)
    plain = Tagger()
    reference = copy.deepcopy(plain)
    model = bayesianize(plain, GaussianPrior(0.5))
    assert set(weight_sites(model)) == {n for n, _ in reference.named_parameters()}
    tokens = torch.randint(0, 10, (6, 2))
    # conditioned on torch's own weights, the Bayesian model is the torch model
    conditioned = poutine.condition(model, data=dict(reference.named_parameters()))
    torch.testing.assert_close(conditioned(tokens), reference(tokens))
    # unconditioned, each call draws fresh weights from the prior
    assert not torch.equal(model(tokens), model(tokens))


def test_bayesianize_refuses_torch_rnns_whose_weights_it_cannot_replace():
    class WithTorchLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 4)
            self.head = nn.Linear(4, 2)

    with pytest.raises(ValueError, match=r"lstm is a torch.nn.LSTM.*BayesianLSTM"):
        bayesianize(WithTorchLSTM())
    kept = bayesianize(WithTorchLSTM(), deterministic=["lstm.*"])
    assert set(weight_sites(kept)) == {"head.weight", "head.bias"}
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        bayesianize("not a module")


def test_gal_guide_on_your_own_model_masks_every_group():
    torch.manual_seed(1)
    model = bayesianize(Tagger())
    guide = GalDropoutGuide(model, embedding=0.3, input=0.2, hidden=0.25, output=0.4)
    # the LSTM's input and h: per-sequence locked masks inside the layer
    assert model.rnn.regularisers.locked_input == 0.2
    assert model.rnn.regularisers.locked_hidden == 0.25
    # embedding rows and the head's columns: one mask per call, drawn by the guide
    assert guide.guide_masked == {"embed.weight", "head.weight"}
    assert not guide.draws_share_weights
    model.train()
    values = guide()
    mean = guide.median()
    for site, rate, dim in (("head.weight", 0.4, 0), ("embed.weight", 0.3, 1)):
        kept = values[site].ne(0).any(dim)  # columns of the head, rows of the embedding
        expected = mean[site] / (1 - rate)
        torch.testing.assert_close(
            values[site], torch.where(kept.unsqueeze(dim), expected, torch.zeros_like(expected))
        )
    torch.testing.assert_close(values["rnn.weight_ih_l0"], mean["rnn.weight_ih_l0"])
    model.eval()
    for site, value in guide().items():  # evaluation: the standard dropout approximation
        torch.testing.assert_close(value, mean[site])


def test_gal_guide_trains_your_own_model_with_stock_svi():
    pyro.set_rng_seed(2)
    pyro.clear_param_store()
    model = bayesianize(Tagger(), GaussianPrior(1.0))
    guide = GalDropoutGuide(model, input=0.1, hidden=0.1, output=0.1)
    tokens = torch.randint(0, 10, (8, 16))
    tags = tokens % 3  # learnable from the current token
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(150):
        svi.step(tokens, tags)
    model.eval()
    logits = poutine.condition(model, data=guide.median())(tokens)
    assert (logits.argmax(-1) == tags).float().mean() > 0.9


def test_mean_field_guide_refuses_sample_sites_it_did_not_make():
    model = bayesianize(Tagger())
    model.extra = PyroSample(dist.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match=r"\['extra'\] are PyroSample sites it did not make"):
        MeanFieldGuide(model)


@pytest.mark.parametrize("scope", ["sequence", "batch"])
def test_stock_trace_elbo_gets_gals_kl(scope):
    """log p(w) − log q(w) of a guide draw is −KL_Gal plus the prior's normaliser."""
    pyro.set_rng_seed(3)
    scale = 0.7
    lm = LanguageModel(9, 4, 5, num_layers=1, prior=GaussianPrior(scale))
    guide = GalDropoutGuide(lm, embedding=0.2, input=0.3, hidden=0.4, output=0.5, scope=scope)
    tokens = torch.randint(0, 9, (3, 2))
    lm.eval()  # no masks: every draw is M, where log p(M) alone would miss the 1/(1−p)

    def log_ratio():
        guide_trace = poutine.trace(guide).get_trace(tokens)
        model_trace = poutine.trace(poutine.replay(lm, trace=guide_trace)).get_trace(tokens)
        total = 0.0
        for site in weight_sites(lm):
            p, q = model_trace.nodes[site], guide_trace.nodes[site]
            total = total + p["fn"].log_prob(p["value"]) - q["fn"].log_prob(q["value"])
        return total

    weights = sum(v.numel() for v in weight_sites(lm).values())
    normaliser = -weights * 0.5 * math.log(2 * math.pi * scale**2)
    for _ in range(2):
        torch.testing.assert_close(
            log_ratio(), normaliser - guide.kl_divergence(), rtol=1e-5, atol=1e-3
        )
        with torch.no_grad():  # a different M: the identity holds as a function of M
            for site in guide.site_names:
                guide.mean[site].mul_(1.7)


def test_sharpening_in_parallel_predictive_explains_itself_and_eval_mode_works():
    pyro.set_rng_seed(4)
    lm = LanguageModel(9, 4, 5, num_layers=1)
    guide = SharpenedGuide(lm)
    tokens = torch.randint(0, 9, (3, 2))
    with pytest.raises(ValueError, match=r"eval\(\) mode"):
        Predictive(lm, guide=guide, num_samples=3, parallel=True)(tokens, tokens)
    guide.eval()
    samples = Predictive(lm, guide=guide, num_samples=3, parallel=True, return_sites=["obs"])(
        tokens
    )
    assert samples["obs"].shape == (3, 3, 2)
