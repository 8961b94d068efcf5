"""What a run's ``checkpoint.pt`` must hold, checked once when it is read.

A checkpoint is loaded with ``weights_only=True``, so a damaged or hand-edited one cannot run
code; but it can still unpickle into the wrong shapes (a ``position`` that is a string, an RNG
state of another size, an empty ``history``), which would surface as a ``KeyError`` or
``IndexError`` deep inside resume, evaluation or export. :func:`check_checkpoint` names the
field instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bayesrnn.inference.training.checkpoint import CheckpointError

__all__ = ["check_checkpoint"]

# The per-step lists a variational run's history holds (History in bayesrnn.inference)
HISTORY_LISTS = ("elbo", "nll", "kl", "tokens")
# Written by a trainer, read by a resume (a NUTS run's checkpoint holds the draws only)
TRAINING_FIELDS = ("optimizer", "torch_rng", "window_rng", "plan", "cuda_rng")


def check_checkpoint(payload: dict[str, Any], path: Path, *, nuts: bool = False) -> None:
    """Raise :class:`CheckpointError` naming the first field of ``payload`` that is not what
    the package writes."""

    def bad(field: str, what: str) -> CheckpointError:
        return CheckpointError(
            f"{path} is damaged: its {field!r} {what}; delete it to train from the start, or "
            "restore it from a backup"
        )

    for field in ("model", "guide"):
        if field in payload and not isinstance(payload[field], dict):
            raise bad(field, "is not a parameter dictionary")
    position = payload.get("position")
    if (
        not isinstance(position, list | tuple)
        or len(position) != 2
        or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in position)
    ):
        raise bad("position", f"is not [epoch, step] (got {_short(position)})")
    history = payload.get("history")
    if not isinstance(history, dict) or not history:
        raise bad("history", f"is not a non-empty dictionary (got {_short(history)})")
    if nuts:
        return
    for name in HISTORY_LISTS:
        if not isinstance(history.get(name), list):
            raise bad(f"history.{name}", "is not a list")
    missing = [field for field in TRAINING_FIELDS if field not in payload]
    if missing:
        raise bad(missing[0], "is missing")
    if not isinstance(payload["optimizer"], dict) or not {"state", "param_groups"} <= set(
        payload["optimizer"]
    ):
        raise bad("optimizer", "is not an optimiser state")
    for field, size in (
        ("torch_rng", torch.get_rng_state().numel()),
        ("window_rng", torch.Generator().get_state().numel()),
    ):
        value = payload[field]
        if (
            not isinstance(value, torch.Tensor)
            or value.dtype != torch.uint8
            or value.numel() != size
        ):
            raise bad(field, f"is not a random-number state of {size} bytes")
    if not isinstance(payload["cuda_rng"], list):
        raise bad("cuda_rng", "is not a list")
    plan = payload["plan"]
    if not isinstance(plan, torch.Tensor) or plan.dim() not in (1, 2):
        raise bad("plan", "is not the epoch's order of windows or batches")
    _check_state(payload.get("state"), bad)


def _check_state(state: Any, bad) -> None:
    """The recurrent state: None, or per layer a tensor or a tuple of tensors of rank 3 or
    more (layers-or-draws, batch, hidden)."""
    if state is None:
        return
    tensors = _tensors(state)
    if tensors is None or not tensors or any(t.dim() < 2 for t in tensors):
        raise bad("state", "is not a recurrent state (tensors of batch × hidden)")


def _tensors(value: Any) -> list[torch.Tensor] | None:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        found: list[torch.Tensor] = []
        for item in value:
            inner = _tensors(item) if item is not None else []
            if inner is None:
                return None
            found += inner
        return found
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
