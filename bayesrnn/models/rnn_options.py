"""The ``torch.nn.LSTM/GRU/RNN`` arguments the Bayesian layers do not implement.

The Bayesian layers take torch's signature, so code written for torch's layers runs unchanged,
but a stacked unidirectional tanh/LSTM/GRU recurrence is all they compute. Each torch option
that would change that computation is accepted only at its default, and refused by name with
what to use instead, both when a layer is built and when :func:`bayesrnn.models.bayesianize`
meets one of torch's layers.
"""

from __future__ import annotations

from collections.abc import Mapping

TORCH_DEFAULTS: dict[str, object] = {
    "dropout": 0.0,
    "bidirectional": False,
    "proj_size": 0,
    "nonlinearity": "tanh",
}

INSTEAD = {
    "dropout": "mask the layers' inputs with regularisers={'locked_input': p} or "
    "GalDropoutGuide(input=p)",
    "bidirectional": "run a second layer on the time-reversed input and concatenate",
    "proj_size": "put a bayesrnn.models.Linear after the layer",
    "nonlinearity": "only the tanh recurrence is implemented",
}


def unsupported_options(options: Mapping[str, object]) -> list[str]:
    """The names among ``options`` set to anything but torch's default (which alone is run)."""
    return [
        name
        for name, value in options.items()
        if name in TORCH_DEFAULTS and value != TORCH_DEFAULTS[name]
    ]


def check_torch_options(layer: str, options: Mapping[str, object]) -> None:
    """Refuse, by name, a torch option the Bayesian ``layer`` would otherwise ignore."""
    for name in unsupported_options(options):
        raise ValueError(
            f"{layer} does not support {name}={options[name]!r} (torch's default "
            f"{TORCH_DEFAULTS[name]!r} only); {INSTEAD[name]}"
        )
