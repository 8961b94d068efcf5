"""The classifier's "last" pooling reads the last layer's output, so output dropout reaches it."""

import pytest
import torch
from pyro import poutine
from torch.nn.utils.rnn import pack_padded_sequence

from bayesrnn.inference import GalDropoutGuide
from bayesrnn.models import GaussianPrior, SequenceClassifier

TORCH_CELLS = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
TOKENS = torch.tensor(  # (T=6, B=3), padded with 0 past each sequence's end
    [[3, 1, 4], [1, 5, 9], [2, 0, 6], [5, 0, 5], [3, 0, 0], [5, 0, 0]]
)
LENGTHS = torch.tensor([6, 2, 4])


class TorchClassifier(torch.nn.Module):
    """Reference: the last layer's final hidden state of a packed torch RNN, then a linear map."""

    def __init__(self, cell: str, layers: int):
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 4)
        self.rnn = TORCH_CELLS[cell](4, 5, layers)
        self.decoder = torch.nn.Linear(5, 3)

    def features(self, tokens, lengths=None):
        embedded = self.embedding(tokens)
        if lengths is not None:
            embedded = pack_padded_sequence(embedded, lengths, enforce_sorted=False)
        _, state = self.rnn(embedded)
        return (state[0] if isinstance(state, tuple) else state)[-1]


def _pair(cell="lstm", layers=2, batch_first=False, **regularisers):
    torch.manual_seed(0)
    model = SequenceClassifier(
        10, 3, 4, 5, num_layers=layers, cell=cell, batch_first=batch_first,
        regularisers=regularisers,
    )  # fmt: skip
    reference = TorchClassifier(cell, layers)
    data = {name: p.detach() for name, p in reference.named_parameters()}
    return poutine.condition(model, data=data), model, reference


def _run(conditioned, model, tokens=TOKENS, lengths=LENGTHS):
    return conditioned(tokens.t() if model.batch_first else tokens, lengths=lengths)


@pytest.mark.parametrize("regularisers", [{"locked_output": 0.5}, {"naive_dropout": 0.5}])
def test_output_dropout_reaches_the_last_pooled_features_in_training(regularisers):
    conditioned, model, _ = _pair(**regularisers)
    model.train()
    calls = torch.stack([_run(conditioned, model) for _ in range(8)])
    spread = (calls.max(0).values - calls.min(0).values).max()
    assert spread > 0.01  # a fresh mask on the decoder's input at every call


def test_gal_output_rate_drops_the_decoder_input_it_charges_a_kl_for():
    """Gal's guide with only an output rate: the one mask it configures must vary the logits."""
    torch.manual_seed(0)
    model = SequenceClassifier(10, 3, 4, 5, prior=GaussianPrior(1.0))
    guide = GalDropoutGuide(model, output=0.5)
    assert model.regularisers.locked_output == 0.5 and model.regularisers.locked_input == 0.0
    conditioned = poutine.condition(model, data=guide.median())
    model.train()
    calls = torch.stack([conditioned(TOKENS, lengths=LENGTHS) for _ in range(8)])
    assert (calls.max(0).values - calls.min(0).values).max() > 0.01
    model.eval()
    evaluated = torch.stack([conditioned(TOKENS, lengths=LENGTHS) for _ in range(3)])
    assert torch.equal(evaluated[0], evaluated[1]) and torch.equal(evaluated[0], evaluated[2])


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("lengths", [LENGTHS, None])
def test_without_masks_last_pooling_is_the_final_state_of_a_torch_rnn(cell, batch_first, lengths):
    conditioned, model, reference = _pair(cell, batch_first=batch_first, locked_output=0.5)
    model.eval()  # masks off: the features are h[-1] of the last layer's final state
    with torch.no_grad():
        expected = reference.decoder(reference.features(TOKENS, lengths))
        logits = _run(conditioned, model, lengths=lengths)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("lengths", [LENGTHS, None])
def test_a_fixed_output_mask_multiplies_the_last_state(cell, lengths):
    rate = 0.25
    conditioned, model, reference = _pair(cell, locked_output=rate)
    model.train()
    drawn = model.rnn.draw_masks(3, torch.zeros(1))["output"]
    assert drawn.shape == (3, 5)  # one mask per sequence (Gal's "sequence" scope)
    kept = drawn[drawn != 0]  # inverted dropout: a kept unit is scaled by 1/(1 - rate)
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - rate)))
    keep = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1], [1, 1, 0, 1, 1]])
    mask = keep / (1 - rate)
    model.rnn.draw_masks = lambda batch, like: {"output": mask}
    with torch.no_grad():
        h_last = reference.features(TOKENS, lengths)
        expected = h_last * keep * (4 / 3) @ reference.decoder.weight.t() + reference.decoder.bias
        logits = _run(conditioned, model, lengths=lengths)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_on_the_step_by_step_path_last_pooling_is_the_final_state(cell):
    """Zoneout runs the per-step loop (at evaluation: its expectation); features = h[-1]."""
    conditioned, model, _ = _pair(cell, zoneout_h=0.3)
    model.eval()
    seen = {}
    model.rnn.register_forward_hook(lambda module, args, out: seen.update(state=out[1]))
    model.decoder.register_forward_pre_hook(lambda module, args: seen.update(features=args[0]))
    with torch.no_grad():
        _run(conditioned, model)
    h = seen["state"][0] if cell == "lstm" else seen["state"]
    torch.testing.assert_close(seen["features"], h[-1], atol=1e-6, rtol=0)
