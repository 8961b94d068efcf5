"""Weight sites with leading draw dimensions: Pyro's vectorised paths.

Under ``Predictive(parallel=True)`` or ``Trace_ELBO(vectorize_particles=True)`` Pyro draws every
weight site inside a plate left of the model's own plates, so a (G, F) weight arrives as
(S, 1, 1, G, F): the draws, then one singleton per model plate. The layers read such a value
as S draws of the weight ("draw dims" = the leading dims with trailing singletons trimmed),
flatten them into one dim for the batched kernels and give outputs the draw dims in front.
Draw shapes are aligned on the left (the outermost dims), so (S,) and (S, 1, 1) agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor


def trim(shape: Iterable[int]) -> torch.Size:
    """``shape`` without its trailing singleton dims: (S, 1, 1) → (S,), (1, 1) → ()."""
    dims = list(shape)
    while dims and dims[-1] == 1:
        dims.pop()
    return torch.Size(dims)


def leading(value: Tensor, event_dim: int) -> torch.Size:
    """The dims of ``value`` left of its last ``event_dim`` (the weight's own shape)."""
    if value.dim() < event_dim:
        raise ValueError(f"a weight of shape {tuple(value.shape)} has fewer than {event_dim} dims")
    return value.shape[: value.dim() - event_dim]


def combine(*shapes: Iterable[int]) -> torch.Size:
    """The common draw dims of several values, aligned on the left, trailing singletons trimmed."""
    trimmed = [trim(shape) for shape in shapes]
    width = max((len(s) for s in trimmed), default=0)
    padded = [tuple(s) + (1,) * (width - len(s)) for s in trimmed]
    try:
        return trim(torch.broadcast_shapes(*padded)) if padded else torch.Size()
    except RuntimeError as error:
        shapes = [tuple(s) for s in trimmed]
        raise ValueError(f"weight draws of shapes {shapes} disagree") from error


def draw_dims(values: Iterable[tuple[Tensor, int]]) -> torch.Size:
    """The common draw dims of ``(value, event_dim)`` pairs."""
    return combine(*(leading(value, event_dim) for value, event_dim in values))


def count(draws: torch.Size) -> int:
    """How many draws the dims ``draws`` hold (0 for none)."""
    return math.prod(draws) if draws else 0


def flatten(value: Tensor, event_dim: int, draws: torch.Size) -> Tensor:
    """``value`` as (N, *event) with N = the number of ``draws``, or as (*event) for none.

    A value with fewer draw dims (a point-estimate site, a shared mean) is expanded: a view,
    not a copy.
    """
    event = value.shape[value.dim() - event_dim :]
    own = trim(leading(value, event_dim))
    if not draws:
        if own:
            raise ValueError(f"a weight with draws {tuple(own)} where none were expected")
        return value.reshape(event)
    padded = tuple(own) + (1,) * (len(draws) - len(own))
    return value.reshape(*padded, *event).expand(*draws, *event).reshape(-1, *event)


def plate_draws(draws: torch.Size, values: Iterable[tuple[Tensor, int]], nesting: int):
    """The output draw dims of a model whose data fill ``nesting`` plate dims.

    A value of lead (S, 1, 1, 1) in a model of two plates came from a plate at dim −4, so the
    model's outputs need lead (S, 1) to sit left of its (T, B) data dims; the trimmed ``draws``
    are padded back with singletons to that width.
    """
    width = max((len(leading(v, e)) for v, e in values), default=0) - nesting
    return torch.Size(tuple(draws) + (1,) * max(0, width - len(draws)))
