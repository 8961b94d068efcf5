"""Regularisers: mask sharing over time, word-type dropout, zoneout, weight-drop, naive dropout."""

import pytest
import torch
from pyro import poutine

from bayesrnn.models import BayesianGRU, BayesianLSTM, LanguageModel, Regularisers, mc_dropout
from bayesrnn.models.regularisers import bernoulli_mask
from bayesrnn.models.sequence_models import embed_tokens
from tests.models.helpers import reference_for, run_with


def test_locked_masks_are_shared_over_time_and_differ_between_sequences():
    layer = BayesianLSTM(6, 5, regularisers={"locked_input": 0.5})
    ref = reference_for(layer)
    x = torch.randn(9, 8, 6)
    masks = layer.draw_masks(8, x)
    mask = masks["input_l0"]
    assert mask.shape == (8, 6)
    assert set(mask.unique().tolist()) <= {0.0, 2.0}
    assert len({tuple(row.tolist()) for row in mask}) > 1  # rows (sequences) differ
    out, _ = run_with(layer, ref, x, masks=masks)
    # the same mask multiplies the input at every step: equal to pre-masking every step by hand
    ref_out, _ = ref(x * mask.unsqueeze(0))
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)


def test_batch_scope_masks_are_one_row_and_fold_into_the_fused_kernel():
    layer = BayesianLSTM(4, 5, regularisers={"locked_hidden": 0.5, "mask_scope": "batch"})
    ref = reference_for(layer)
    x = torch.randn(6, 3, 4)
    masks = layer.draw_masks(3, x)
    assert masks["hidden_l0"].shape == (1, 5)
    out, _ = run_with(layer, ref, x, masks=masks)
    with torch.no_grad():
        ref.weight_hh_l0.mul_(masks["hidden_l0"])
    torch.testing.assert_close(out, ref(x)[0], atol=1e-5, rtol=0)


def test_masks_off_in_eval_and_on_under_mc_dropout():
    layer = BayesianLSTM(4, 5, regularisers={"locked_input": 0.5})
    x = torch.randn(3, 2, 4)
    layer.eval()
    assert layer.draw_masks(2, x) == {}
    with mc_dropout(layer):
        assert "input_l0" in layer.draw_masks(2, x)
    assert layer.draw_masks(2, x) == {}


def test_embedding_dropout_drops_word_types_not_tokens():
    model = LanguageModel(6, 3, 3, num_layers=1, regularisers={"embedding_dropout": 0.5})
    tokens = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 2, 3]] * 16).t()  # (T=10, B=16), repeats
    weight = torch.randn(6, 3)
    out = _embed(model, tokens, weight)
    dropped_somewhere = kept_somewhere = False
    for b in range(16):
        for word in (0, 1, 2):
            rows = out[tokens[:, b] == word, b]
            zero = rows.abs().sum(-1) == 0
            assert zero.all() or (~zero).all(), "a word type must be dropped everywhere or nowhere"
            if zero.all():
                dropped_somewhere = True
            else:
                kept_somewhere = True
                torch.testing.assert_close(rows, (weight[word] * 2.0).expand_as(rows))
    assert dropped_somewhere and kept_somewhere


def _embed(model, tokens, weight):
    def run():
        return embed_tokens(model.embedding, model.rnn, tokens, "tokens", batch_dim=1)

    return poutine.condition(run, data={"embedding.weight": weight})()


def test_naive_dropout_is_fresh_each_step_and_never_on_the_state():
    """Zaremba: dropout on each layer's input and the last output only, a new mask every step."""
    layer = BayesianLSTM(4, 5, num_layers=2, regularisers={"naive_dropout": 0.5})
    ref = reference_for(layer)
    x = torch.ones(6, 3, 4)
    torch.manual_seed(7)
    out, _ = run_with(layer, ref, x)
    torch.manual_seed(7)  # replay the same three mask draws, in the layer's order
    first = torch.nn.functional.dropout(torch.ones(6, 3, 4), 0.5)
    second = torch.nn.functional.dropout(torch.ones(6, 3, 5), 0.5)
    third = torch.nn.functional.dropout(torch.ones(6, 3, 5), 0.5)
    assert not torch.equal(first[0], first[1])  # a new mask at every step
    layer0, layer1 = torch.nn.LSTM(4, 5), torch.nn.LSTM(5, 5)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer0, f"{name}_l0").copy_(getattr(ref, f"{name}_l0"))
            getattr(layer1, f"{name}_l0").copy_(getattr(ref, f"{name}_l1"))
    out0, _ = layer0(x * first)  # plain recurrences: h and c are never masked
    out1, _ = layer1(out0 * second)
    torch.testing.assert_close(out, out1 * third, atol=1e-5, rtol=0)


def test_weight_drop_uses_one_mask_per_call():
    layer = BayesianLSTM(4, 5, regularisers={"weight_drop": 0.5})
    ref = reference_for(layer)
    x = torch.randn(6, 3, 4)
    torch.manual_seed(3)
    out, _ = run_with(layer, ref, x)
    torch.manual_seed(3)
    mask = bernoulli_mask(tuple(ref.weight_hh_l0.shape), 0.5, ref.weight_hh_l0)
    with torch.no_grad():
        ref.weight_hh_l0.mul_(mask)
    torch.testing.assert_close(out, ref(x)[0], atol=1e-5, rtol=0)


def _zoneout_reference(cell, x, zc, zh):
    h = torch.zeros(x.shape[1], cell.hidden_size)
    c = torch.zeros_like(h)
    outs = []
    for t in range(x.shape[0]):
        if isinstance(cell, torch.nn.LSTMCell):
            h_new, c_new = cell(x[t], (h, c))
            c = zc * c + (1 - zc) * c_new
        else:
            h_new = cell(x[t], h)
        h = zh * h + (1 - zh) * h_new
        outs.append(h)
    return torch.stack(outs)


@pytest.mark.parametrize(
    ("cls", "cell_cls", "zc"),
    [(BayesianLSTM, torch.nn.LSTMCell, 0.5), (BayesianGRU, torch.nn.GRUCell, 0.0)],
)
def test_zoneout_at_evaluation_is_the_expectation(cls, cell_cls, zc):
    layer = cls(3, 4, regularisers={"zoneout_c": zc, "zoneout_h": 0.3}).eval()
    ref = reference_for(layer)
    cell = cell_cls(3, 4)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(ref, f"{name}_l0"))
    x = torch.randn(7, 2, 3)
    out, _ = run_with(layer, ref, x)
    torch.testing.assert_close(out, _zoneout_reference(cell, x, zc, 0.3), atol=1e-5, rtol=0)


def test_zoneout_rate_zero_equals_plain_cell_in_training():
    layer = BayesianLSTM(3, 4, regularisers={"zoneout_c": 0.0, "zoneout_h": 0.0}).train()
    ref = reference_for(layer)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(run_with(layer, ref, x)[0], ref(x)[0], atol=1e-5, rtol=0)


def test_zoneout_in_training_keeps_previous_or_takes_new_per_unit():
    layer = BayesianGRU(2, 50, regularisers={"zoneout_h": 0.5}).train()
    ref = reference_for(layer)
    x = torch.randn(2, 1, 2)
    out, _ = run_with(layer, ref, x)
    cell = torch.nn.GRUCell(2, 50)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(ref, f"{name}_l0"))
    h1 = out[0, 0]
    candidate = cell(x[1], out[0])[0]
    kept = torch.isclose(out[1, 0], h1, atol=1e-6)
    updated = torch.isclose(out[1, 0], candidate, atol=1e-6)
    assert (kept | updated).all()  # each unit is either zoned out or updated, never mixed
    assert kept.any() and updated.any()


@pytest.mark.parametrize("name", ["locked_input", "zoneout_h", "weight_drop", "embedding_dropout"])
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_rates_outside_unit_interval_are_rejected(name, rate):
    with pytest.raises(ValueError, match=name):
        Regularisers.from_mapping({name: rate})


def test_unknown_regulariser_name_is_rejected():
    with pytest.raises(ValueError, match="unknown names"):
        BayesianLSTM(2, 3, regularisers={"dropconnect": 0.5})


def test_zoneout_c_rejected_for_gru():
    with pytest.raises(ValueError, match="zoneout_c"):
        BayesianGRU(2, 3, regularisers={"zoneout_c": 0.2})
