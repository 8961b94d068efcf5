"""Language model and classifier: torch references, Pyro-model behaviour, bad input."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from bayesrnn.models import BayesianGRU, BayesianLSTM, LanguageModel, SequenceClassifier


class TorchLM(torch.nn.Module):
    def __init__(self, vocab, emb, hidden, layers, tie):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, emb)
        self.rnn = torch.nn.LSTM(emb, hidden, layers)
        self.decoder = torch.nn.Linear(hidden, vocab)
        if tie:
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens, state=None):
        out, state = self.rnn(self.embedding(tokens), state)
        return self.decoder(out), state


def _condition(model, reference):
    data = {n: p.detach() for n, p in reference.named_parameters()}
    return poutine.condition(model, data=data)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_language_model_matches_torch_and_scores_targets(tie, batch_first):
    model = LanguageModel(13, 6, 6, num_layers=2, tie_weights=tie, batch_first=batch_first)
    ref = TorchLM(13, 6, 6, 2, tie)
    tokens = torch.randint(0, 13, (5, 3))
    targets = torch.randint(0, 13, (5, 3))
    ref_logits, ref_state = ref(tokens)
    ref_logits2, _ = ref(targets, ref_state)
    if batch_first:
        tokens, targets = tokens.t(), targets.t()
    conditioned = _condition(model, ref)
    trace = poutine.trace(conditioned).get_trace(tokens, targets)
    logits, state = trace.nodes["_RETURN"]["value"]
    expected = ref_logits.transpose(0, 1) if batch_first else ref_logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    # the observed site's log-likelihood is the summed log-softmax of the targets
    log_probs = torch.log_softmax(expected, -1).gather(-1, targets.unsqueeze(-1)).sum()
    obs = trace.nodes["obs"]
    torch.testing.assert_close(obs["fn"].log_prob(obs["value"]).sum(), log_probs, atol=1e-4, rtol=0)
    logits2, _ = conditioned(targets, state=state)  # state carried between calls
    expected2 = ref_logits2.transpose(0, 1) if batch_first else ref_logits2
    torch.testing.assert_close(logits2, expected2, atol=1e-5, rtol=0)


def test_language_model_trains_with_stock_svi_and_autonormal():
    model = LanguageModel(8, 8, 8, num_layers=1)
    tokens = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7] * 2] * 4).t()  # a deterministic cycle
    targets = (tokens + 1) % 8
    guide = AutoNormal(model, init_scale=0.01)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.03}), Trace_ELBO())
    losses = [svi.step(tokens, targets) for _ in range(150)]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_classifier_variable_lengths_equal_separate_runs(pooling, cell):
    model = SequenceClassifier(10, 3, 4, 5, cell=cell, pooling=pooling)
    tokens = torch.randint(0, 10, (6, 3))
    lengths = torch.tensor([6, 2, 4])
    weights = {n: torch.randn_like(v) * 0.5 for n, v in _sites(model).items()}
    batched = poutine.condition(model, data=weights)(tokens, lengths=lengths)
    for b in range(3):
        alone = poutine.condition(model, data=weights)(tokens[: lengths[b], b : b + 1])
        torch.testing.assert_close(batched[b : b + 1], alone, atol=1e-5, rtol=0)


def _sites(model):
    from bayesrnn.models import weight_sites

    return weight_sites(model)


def test_classifier_observes_labels_in_a_plate():
    model = SequenceClassifier(10, 2, 4, 4)
    tokens = torch.randint(0, 10, (5, 3))
    trace = poutine.trace(model).get_trace(tokens, torch.tensor([0, 1, 1]))
    assert [f.name for f in trace.nodes["obs"]["cond_indep_stack"]] == ["sequences"]
    assert trace.nodes["obs"]["value"].tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda layer: layer(torch.randn(4, 3)), "3-D"),
        (lambda layer: layer(torch.randn(4, 2, 5)), "features"),
        (lambda layer: layer(torch.full((4, 2, 3), math.nan)), "non-finite"),
        (
            lambda layer: layer(torch.randn(4, 2, 3), (torch.zeros(1, 2, 6), torch.zeros(1, 2, 6))),
            "state h",
        ),
        (lambda layer: layer(torch.randn(4, 2, 3), torch.zeros(1, 2, 5)), "tuple"),
        (lambda layer: layer(torch.randn(4, 2, 3), lengths=torch.tensor([5, 1])), "lengths"),
    ],
)
def test_layer_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call(BayesianLSTM(3, 5))


def test_gru_state_must_be_a_tensor():
    with pytest.raises(ValueError, match="single tensor"):
        BayesianGRU(3, 5)(torch.randn(4, 2, 3), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 5)))


@pytest.mark.parametrize(
    ("tokens", "targets", "match"),
    [
        (torch.tensor([[0, 13]]), None, "tokens holds ids outside"),
        (torch.tensor([[0, -1]]), None, "tokens holds ids outside"),
        (torch.tensor([0, 1]), None, "2-D"),
        (torch.tensor([[0.0, 1.0]]), None, "integer"),
        (torch.tensor([[0, 1]]), torch.tensor([[0, 99]]), "targets holds ids outside"),
        (torch.tensor([[0, 1]]), torch.tensor([[0, 1, 2]]), "targets must have the shape"),
    ],
)
def test_language_model_bad_tokens(tokens, targets, match):
    with pytest.raises(ValueError, match=match):
        LanguageModel(13, 4, 4)(tokens, targets)


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="hidden_size"):
        BayesianLSTM(3, 0)
    with pytest.raises(ValueError, match="tie_weights"):
        LanguageModel(10, 4, 5, tie_weights=True)
    with pytest.raises(ValueError, match="cell"):
        LanguageModel(10, 4, 4, cell="transformer")
    with pytest.raises(ValueError, match="labels"):
        SequenceClassifier(10, 2, 4, 4)(torch.randint(0, 10, (3, 2)), torch.tensor([0, 2]))
