"""Bayesian layers with torch's weights equal torch.nn.LSTM/GRU/RNN (outputs and final states)."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bayesrnn.models import BayesianGRU, BayesianLSTM, BayesianRNN
from tests.models.helpers import assert_state_close, reference_for, run_with

CLASSES = [BayesianLSTM, BayesianGRU, BayesianRNN]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_torch_with_carried_state(cls, num_layers, batch_first):
    layer = cls(5, 7, num_layers=num_layers, batch_first=batch_first)
    ref = reference_for(layer)
    shape = (3, 6, 5) if batch_first else (6, 3, 5)
    x1, x2 = torch.randn(shape), torch.randn(shape)
    out1, state1 = run_with(layer, ref, x1)
    ref_out1, ref_state1 = ref(x1)
    torch.testing.assert_close(out1, ref_out1, atol=1e-5, rtol=0)
    assert_state_close(state1, ref_state1)
    out2, state2 = run_with(layer, ref, x2, state1)  # the returned state feeds the next call
    ref_out2, ref_state2 = ref(x2, ref_state1)
    torch.testing.assert_close(out2, ref_out2, atol=1e-5, rtol=0)
    assert_state_close(state2, ref_state2)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_packed_variable_length_matches_torch(cls, num_layers):
    layer = cls(4, 6, num_layers=num_layers)
    ref = reference_for(layer)
    lengths = torch.tensor([3, 7, 5, 1])  # unsorted on purpose
    x = torch.randn(7, 4, 4)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, state = run_with(layer, ref, packed)
    ref_out, ref_state = ref(packed)
    torch.testing.assert_close(out.data, ref_out.data, atol=1e-5, rtol=0)
    assert_state_close(state, ref_state)
    # The lengths argument on a padded batch gives the same, with zeros past each end.
    padded_out, padded_state = run_with(layer, ref, x, lengths=lengths)
    ref_padded, _ = pad_packed_sequence(ref_out, total_length=7)
    torch.testing.assert_close(padded_out, ref_padded, atol=1e-5, rtol=0)
    assert_state_close(padded_state, ref_state)


@pytest.mark.parametrize("cls", CLASSES)
def test_time_loop_path_matches_torch(cls):
    """All-ones per-sequence hidden masks force the step loop; it must equal the fused kernel."""
    layer = cls(3, 5, num_layers=2, regularisers={"locked_hidden": 0.5})
    ref = reference_for(layer)
    x = torch.randn(6, 4, 3)
    ones = {f"hidden_l{k}": torch.ones(4, 5) for k in range(2)}
    out, state = run_with(layer, ref, x, masks=ones)
    ref_out, ref_state = ref(x)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
    assert_state_close(state, ref_state)
    lengths = torch.tensor([6, 2, 4, 3])
    out, state = run_with(layer, ref, x, lengths=lengths, masks=ones)
    ref_out, ref_state = ref(pack_padded_sequence(x, lengths, enforce_sorted=False))
    torch.testing.assert_close(
        out, pad_packed_sequence(ref_out, total_length=6)[0], atol=1e-5, rtol=0
    )
    assert_state_close(state, ref_state)


@pytest.mark.parametrize("cls", CLASSES)
def test_per_sequence_masks_equal_materialised_per_sequence_weights(cls):
    """Gal's tied-weights form: masks z_b on x and h equal running sequence b with W·diag(z_b)."""
    layer = cls(4, 6, num_layers=2, regularisers={"locked_input": 0.4, "locked_hidden": 0.3})
    ref = reference_for(layer)
    batch = 5
    x = torch.randn(8, batch, 4)
    masks = layer.draw_masks(batch, x)
    assert set(masks) == {"input_l0", "input_l1", "hidden_l0", "hidden_l1"}
    out, state = run_with(layer, ref, x, masks=masks)
    for b in range(batch):
        per_sequence = reference_for(layer)
        with torch.no_grad():
            for name, p in ref.named_parameters():
                kind, layer_index = name.split("_")[1], name[-1]
                if name.startswith("weight"):
                    key = "input" if kind == "ih" else "hidden"
                    z = masks[f"{key}_l{layer_index}"][b]
                    p = p * z.unsqueeze(0)  # diag(z_b) on the input side of M (torch's columns)
                getattr(per_sequence, name).copy_(p)
        ref_out, ref_state = per_sequence(x[:, b : b + 1])
        torch.testing.assert_close(out[:, b : b + 1], ref_out, atol=1e-5, rtol=0)
        h = state[0] if isinstance(state, tuple) else state
        h_ref = ref_state[0] if isinstance(ref_state, tuple) else ref_state
        torch.testing.assert_close(h[:, b : b + 1], h_ref, atol=1e-5, rtol=0)
