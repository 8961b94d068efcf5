"""Training across processes with ``torch.distributed``: who this process is, and the collectives.

With R ranks (``torchrun``; gloo on CPUs, NCCL on GPUs) each rank holds B/R of the B parallel
streams (or of each minibatch's sequences). Every rank draws the *same* weights for a window
(same seed, same random stream: one θ per window, as one process would), scores its own
streams, and carries KL·scale/R, so that the window's objective summed over ranks is exactly
−log p(y_window | θ) + KL/C, one KL per epoch. Gradients are summed over ranks (an all-reduce
of one flat buffer) before clipping, so every rank takes the same step and the parameters stay
identical without a broadcast. Nothing here runs when no process group is initialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "PeerLostError",
    "Ranks",
    "all_reduce_gradients",
    "all_reduce_sum",
    "all_reduce_tensors",
    "barrier",
    "current_ranks",
    "gather_columns",
    "shard",
    "union_over_ranks",
]


class PeerLostError(RuntimeError):
    """Another process of the job stopped (killed, crashed, its machine gone) mid-collective."""


def _collective(operation, *args, **kwargs):
    """Run a collective; a lost peer becomes one clear :class:`PeerLostError`."""
    try:
        return operation(*args, **kwargs)
    except RuntimeError as error:  # gloo/NCCL: connection reset, timeout, aborted communicator
        first = " ".join(str(error).split())[:160]
        raise PeerLostError(
            f"another process of this torch.distributed job stopped ({first}); the last "
            "checkpoint is intact: run the same command again to resume"
        ) from error


@dataclass(frozen=True)
class Ranks:
    """This process's rank and the world size (0 of 1 without a process group)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def current_ranks() -> Ranks:
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def shard(count: int, ranks: Ranks, what: str) -> slice:
    """This rank's contiguous share of ``count`` items; ``count`` must divide evenly."""
    if count % ranks.world:
        raise ValueError(
            f"{what}={count} does not split evenly over {ranks.world} processes; use a multiple "
            f"of {ranks.world}"
        )
    size = count // ranks.world
    return slice(ranks.rank * size, (ranks.rank + 1) * size)


def all_reduce_sum(values: list[float], ranks: Ranks) -> list[float]:
    """Element-wise sums over ranks (float64, the same on every rank)."""
    if not ranks.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    _collective(dist.all_reduce, tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_reduce_gradients(parameters: list[torch.nn.Parameter], ranks: Ranks) -> None:
    """Sum every parameter's gradient over ranks, in one flat buffer (one collective)."""
    if not ranks.distributed:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    _collective(dist.all_reduce, flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(parameters, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).clone()
        offset += n


def all_reduce_tensors(tensors: dict[str, torch.Tensor], ranks: Ranks) -> dict[str, torch.Tensor]:
    """Each tensor summed over ranks (one flat buffer, one collective); new tensors, no graph."""
    if not ranks.distributed:
        return tensors
    flat = torch.cat([t.detach().reshape(-1) for t in tensors.values()])
    _collective(dist.all_reduce, flat, op=dist.ReduceOp.SUM)
    sizes = [t.numel() for t in tensors.values()]
    parts = flat.split(sizes)
    return {k: p.view_as(t) for (k, t), p in zip(tensors.items(), parts, strict=True)}


def gather_columns(state, ranks: Ranks, dim: int = 1):
    """A carried state (tensor or tuple of tensors, the batch on ``dim``) of all ranks, in
    rank order: the state one process over all B streams would hold."""
    if state is None or not ranks.distributed:
        return state
    if isinstance(state, tuple | list):
        return type(state)(gather_columns(s, ranks, dim) for s in state)
    parts = [torch.empty_like(state) for _ in range(ranks.world)]
    _collective(dist.all_gather, parts, state.contiguous())
    return torch.cat(parts, dim=dim)


def union_over_ranks(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The sorted distinct values of a 1-D integer tensor over all ranks (the same on each)."""
    if not ranks.distributed:
        return torch.unique(values)
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(ranks.world)]
    _collective(dist.all_gather, sizes, torch.tensor([values.numel()]))
    longest = int(max(sizes).item())
    padded = torch.full((longest,), -1, dtype=torch.long)
    padded[: values.numel()] = values.cpu()
    parts = [torch.empty_like(padded) for _ in range(ranks.world)]
    _collective(dist.all_gather, parts, padded)
    merged = torch.unique(torch.cat(parts))
    return merged[merged >= 0].to(values.device)


def take_columns(state, columns: slice, dim: int = 1):
    """This rank's columns of a full carried state (the inverse of :func:`gather_columns`)."""
    if state is None:
        return None
    if isinstance(state, tuple | list):
        return type(state)(take_columns(s, columns, dim) for s in state)
    return state.narrow(dim, columns.start, columns.stop - columns.start).contiguous()


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        _collective(dist.barrier)
