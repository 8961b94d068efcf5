"""torch's RNN arguments: the Bayesian layers take them, run the defaults, refuse the rest."""

import pytest
import torch
from torch import nn

from bayesrnn.models import BayesianGRU, BayesianLSTM, BayesianRNN, bayesianize
from tests.models.helpers import run_with

LAYERS = {
    "lstm": (BayesianLSTM, nn.LSTM),
    "gru": (BayesianGRU, nn.GRU),
    "rnn": (BayesianRNN, nn.RNN),
}


@pytest.mark.parametrize(
    ("kind", "argument", "value"),
    [
        ("lstm", "bidirectional", True),
        ("lstm", "dropout", 0.5),
        ("lstm", "proj_size", 2),
        ("gru", "bidirectional", True),
        ("gru", "dropout", 0.1),
        ("rnn", "bidirectional", True),
        ("rnn", "dropout", 0.2),
        ("rnn", "nonlinearity", "relu"),
    ],
)
def test_a_torch_option_the_layer_does_not_run_is_a_value_error_naming_it(kind, argument, value):
    bayesian, _ = LAYERS[kind]
    with pytest.raises(ValueError, match=rf"{bayesian.__name__} does not support {argument}="):
        bayesian(3, 4, **{argument: value})


def test_nonlinearity_in_torchs_legacy_fourth_position_is_read_as_torch_reads_it():
    with pytest.raises(ValueError, match=r"nonlinearity='relu'"):
        BayesianRNN(3, 4, 1, "relu")
    layer = BayesianRNN(3, 4, 2, "tanh", False)  # (in, hidden, layers, nonlinearity, bias)
    assert (layer.num_layers, layer.bias) == (2, False)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_torchs_full_positional_signature_at_its_defaults_builds_the_same_network(kind):
    bayesian, plain = LAYERS[kind]
    # torch's order: input, hidden, layers, bias, batch_first, dropout, bidirectional (+ proj_size)
    args = (3, 4, 2, True, True, 0.0, False) + ((0,) if kind == "lstm" else ())
    if kind == "rnn":  # torch's nn.RNN reads a fourth positional argument as its nonlinearity
        args = (*args[:3], "tanh", *args[3:])
    torch.manual_seed(0)
    reference = plain(*args)
    layer = bayesian(*args, dtype=torch.float64)
    assert layer.weight_ih_l0.dtype == torch.float64  # a prior draw: the dtype reached the site
    layer = bayesian(*args)
    x = torch.randn(2, 5, 3)  # batch_first
    out, _ = run_with(layer, reference, x)
    torch.testing.assert_close(out, reference(x)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("module", "named", "not_named"),
    [
        (
            nn.LSTM(3, 4, bidirectional=True, proj_size=2),
            "bidirectional=True, proj_size=2",
            "dropout",
        ),
        (nn.GRU(3, 4, 2, dropout=0.5), "dropout=0.5", "bidirectional"),
        (nn.RNN(3, 4, nonlinearity="relu"), "nonlinearity='relu'", "dropout"),
    ],
)
def test_bayesianize_names_exactly_the_arguments_the_replacement_does_not_support(
    module, named, not_named
):
    with pytest.raises(ValueError, match=r"Bayesian(LSTM|GRU|RNN) \(same arguments, but") as error:
        bayesianize(nn.Sequential(module))
    assert f"does not support the {named} set here" in str(error.value)
    assert not_named not in str(error.value)


def test_bayesianize_of_a_torch_lstm_at_defaults_promises_the_same_arguments_and_nothing_more():
    with pytest.raises(ValueError, match=r"BayesianLSTM \(same arguments\) or keep") as error:
        bayesianize(nn.Sequential(nn.LSTM(3, 4, 2, batch_first=True)))
    assert "does not support" not in str(error.value)
    BayesianLSTM(3, 4, 2, batch_first=True)  # and that promise holds
