"""Reference torch modules and the conditioning helper the model tests share."""

import torch
from pyro import poutine

TORCH_CLASSES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}


def run_with(layer, reference: torch.nn.Module, *args, **kwargs):
    """Run a Bayesian module with its weight sites fixed to ``reference``'s parameters."""
    data = {name: p.detach() for name, p in reference.named_parameters()}
    return poutine.condition(layer, data=data)(*args, **kwargs)


def reference_for(layer, **overrides) -> torch.nn.Module:
    cls = TORCH_CLASSES[layer.mode]
    kwargs = dict(
        input_size=layer.input_size,
        hidden_size=layer.hidden_size,
        num_layers=layer.num_layers,
        bias=layer.bias,
        batch_first=layer.batch_first,
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def assert_state_close(a, b, atol=1e-5):
    if isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, atol=atol, rtol=0)
    else:
        torch.testing.assert_close(a, b, atol=atol, rtol=0)
