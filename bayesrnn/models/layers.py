"""Embedding and linear maps with the same parameter names as ``nn.Embedding``/``nn.Linear``.

They hold plain parameters; the model that owns them turns them into sample sites with
:func:`bayesrnn.models.bayesian.bayesianize`, so site names carry the full module path.
"""

from __future__ import annotations

import math

import torch
from pyro.nn import PyroModule
from torch import Tensor, nn

from bayesrnn.models.draws import count, draw_dims, flatten, leading, trim


class Embedding(PyroModule):
    """Token embedding ``weight`` (V, E), initialised N(0, 1) like ``nn.Embedding``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_range: float | None = None):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        weight = torch.empty(num_embeddings, embedding_dim)
        if init_range is None:
            weight.normal_()
        else:
            weight.uniform_(-init_range, init_range)
        self.weight = nn.Parameter(weight)

    def forward(self, tokens: Tensor) -> Tensor:
        """(…) ids → (…, E); with draws of the weight (*draws, V, E) → (*draws, …, E)."""
        weight = self.weight
        draws = trim(leading(weight, 2))
        if draws:
            out = flatten(weight, 2, draws)[:, tokens]
            return out.reshape(*draws, *out.shape[1:])
        return nn.functional.embedding(tokens, weight.reshape(weight.shape[-2:]))


class Linear(PyroModule):
    """``y = x Wᵀ + b`` with ``nn.Linear``'s default initialisation."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init_range: float | None = None,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features) if init_range is None else init_range
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.has_bias = bias

    def forward(self, x: Tensor, weight: Tensor | None = None) -> Tensor:
        """``x Wᵀ + b``; with draws of the weights (*draws, out, in), ``x`` is (*draws, …, in)."""
        weight = self.weight if weight is None else weight
        bias = self.bias if self.has_bias else None
        pairs = [(weight, 2)] + ([] if bias is None else [(bias, 1)])
        draws = draw_dims(pairs)
        weight = flatten(weight, 2, draws)
        bias = None if bias is None else flatten(bias, 1, draws)
        if not draws:
            return nn.functional.linear(x, weight, bias)
        if tuple(x.shape[: len(draws)]) != tuple(draws):
            raise ValueError(
                f"input of shape {tuple(x.shape)} must carry the weights' draw dims "
                f"{tuple(draws)} in front"
            )
        flat = x.reshape(count(draws), -1, x.shape[-1])
        if bias is None:
            out = torch.bmm(flat, weight.transpose(1, 2))
        else:  # the bias rides in the matmul's accumulator: no extra pass over the logits
            out = torch.baddbmm(bias.unsqueeze(-2), flat, weight.transpose(1, 2))
        return out.reshape(*x.shape[:-1], -1)
