"""Checkpoints written atomically and read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` to a temporary file beside ``path`` and rename it into place.

    A crash mid-write leaves the previous checkpoint untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
