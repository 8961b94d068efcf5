"""torch's ``nn.Linear`` and ``nn.Embedding`` reading weight draws, for :func:`bayesianize`.

Under Pyro's vectorised paths (``Predictive(parallel=True)``, ``vectorize_particles=True``) a
weight site arrives with draw dims in front (:mod:`bayesrnn.models.draws`), which torch's own
``forward`` refuses. :func:`bayesianize` gives every child whose type is exactly ``nn.Linear``
or ``nn.Embedding`` one of these classes instead: still instances of the torch class (same
attributes, ``isinstance`` holds), with a ``forward`` that runs S draws as one batched call
and puts the draws in front of its output, as bayesrnn's own layers do. With a single draw
they call torch's ``forward`` unchanged.
"""

from __future__ import annotations

import torch
from pyro.nn import PyroModule
from torch import Tensor, nn

from bayesrnn.models.draws import count, draw_dims, flatten, leading, trim


class DrawLinear(PyroModule[nn.Linear]):
    """``nn.Linear`` whose weight (and bias) may hold draws (*draws, out, in).

    An input that carries the draw dims in front (an earlier layer's output) is read draw by
    draw; any other input is shared by every draw. Output: (*draws, …, out). An input carries
    them when its leading dims are the draws and it has at least as many dims left of its
    features as the weight has left of (out, in): a plate's width, which a data tensor inside
    the model's plates does not reach, so a batch that happens to have S rows is not taken
    for S draws.
    """

    def forward(self, input: Tensor) -> Tensor:
        weight, bias = self.weight, self.bias
        pairs = [(weight, 2)] + ([] if bias is None else [(bias, 1)])
        draws = draw_dims(pairs)
        if not draws:
            bias = None if bias is None else bias.reshape(bias.shape[-1:])
            return nn.functional.linear(input, weight.reshape(weight.shape[-2:]), bias)
        weight = flatten(weight, 2, draws)
        n, features = count(draws), input.shape[-1]
        width = max(len(leading(value, event)) for value, event in pairs)
        carries = input.dim() - 1 >= width and tuple(input.shape[: len(draws)]) == tuple(draws)
        if carries:
            lead = input.shape[:-1]
            flat = input.reshape(n, -1, features)
        else:  # the same input for every draw (a view, not a copy)
            lead = (*draws, *input.shape[:-1])
            flat = input.reshape(1, -1, features).expand(n, -1, -1)
        if bias is None:
            out = torch.bmm(flat, weight.transpose(1, 2))
        else:
            out = torch.baddbmm(flatten(bias, 1, draws).unsqueeze(-2), flat, weight.transpose(1, 2))
        return out.reshape(*lead, out.shape[-1])


class DrawEmbedding(PyroModule[nn.Embedding]):
    """``nn.Embedding`` whose weight may hold draws (*draws, V, E): output (*draws, …, E).

    ``padding_idx``, ``scale_grad_by_freq`` and ``sparse`` change only gradients, which a
    draw's gather gives densely; ``max_norm`` renormalises the weight in place, which a draw
    cannot be, so it is refused with draws.
    """

    def forward(self, input: Tensor) -> Tensor:
        weight = self.weight
        draws = trim(leading(weight, 2))
        if not draws:
            return nn.functional.embedding(
                input,
                weight.reshape(weight.shape[-2:]),
                self.padding_idx,
                self.max_norm,
                self.norm_type,
                self.scale_grad_by_freq,
                self.sparse,
            )
        if self.max_norm is not None:
            raise ValueError(
                "an nn.Embedding with max_norm renormalises its weight in place, which a batch "
                "of weight draws cannot be; predict with parallel=False (one draw per call)"
            )
        out = flatten(weight, 2, draws)[:, input]
        return out.reshape(*draws, *out.shape[1:])


DRAW_CLASSES: dict[type, type] = {nn.Linear: DrawLinear, nn.Embedding: DrawEmbedding}


def draw_aware_children(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` whose type is exactly one :data:`DRAW_CLASSES` replaces (a
    subclass may have its own ``forward``, which is kept)."""
    return [module for module in model.modules() if type(module) in DRAW_CLASSES]


def read_draws(modules: list[nn.Module]) -> None:
    """Give each module (already a ``PyroModule``) its draw-reading class, in place."""
    for module in modules:
        base = next(cls for cls in DRAW_CLASSES if isinstance(module, cls))
        module.__class__ = DRAW_CLASSES[base]
