"""Checkpoints written atomically and read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from bayesrnn.data.atomic import atomic_write

__all__ = ["CheckpointError", "cpu_copy", "load_checkpoint", "save_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: truncated, foreign, or of another model."""


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` to a temporary file beside ``path`` and rename it into place.

    A crash mid-write leaves the previous checkpoint untouched. A failed write (a full disk,
    which torch reports as a ``RuntimeError`` from its zip writer) is an ``OSError`` naming the
    file, and the temporary file is gone.
    """
    path = Path(path)

    def write(handle) -> None:
        try:
            torch.save(payload, handle)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else "write failed"
            raise OSError(f"could not write {path} (is the disk full?): {first}") from error

    return atomic_write(path, write)


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict:
    """Read a checkpoint; an unreadable or foreign file is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as error:
        if error.filename is not None:  # the file system refused: not the file's content
            raise
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({reason}); delete it to train from the "
            "start, or restore it from a backup"
        ) from None
    except Exception as error:  # truncated zip, foreign pickle, refused global, ...
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({reason}); delete it to train from the "
            "start, or restore it from a backup"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(
            f"{path} is not a bayesrnn checkpoint (no model state in it); delete it to train "
            "from the start, or restore it from a backup"
        )
    return payload


def cpu_copy(value):
    """A copy of a checkpoint payload that later training steps cannot change (tensors on CPU:
    a kept copy costs host memory, not accelerator memory)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {key: cpu_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(cpu_copy(item) for item in value)
    return value
