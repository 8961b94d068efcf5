"""Token streams for language modelling: parallel batching, reversal, and id checks."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batchify", "check_token_ids", "reverse_stream"]


def _check_stream(stream: object, name: str) -> Tensor:
    if not isinstance(stream, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(stream).__name__}")
    if stream.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(stream.shape)}")
    if stream.is_floating_point() or stream.is_complex() or stream.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer token ids, got dtype {stream.dtype}")
    return stream


def batchify(stream: Tensor, n_sequences: int) -> Tensor:
    """Cut a stream into ``n_sequences`` contiguous parallel sequences, time-major.

    Column ``j`` holds tokens ``stream[j*steps:(j+1)*steps]`` with ``steps = len // n_sequences``;
    the remainder is dropped (Zaremba et al. 2014; awd-lstm). Truncated BPTT then walks down the
    rows, carrying each column's hidden state from one window to the next. A token stream is
    1-D (ids, returned as int64, shape (steps, B)); a real-valued series is a float (N, F)
    tensor of rows (returned as (steps, B, F), its dtype kept).
    """
    if isinstance(stream, Tensor) and stream.is_floating_point():
        if stream.dim() != 2:
            raise ValueError(
                "a stream is 1-D integer token ids or a real-valued (N, F) series; got a float "
                f"tensor of shape {tuple(stream.shape)}"
            )
    else:
        _check_stream(stream, "stream")
    if isinstance(n_sequences, bool) or not isinstance(n_sequences, int) or n_sequences < 1:
        raise ValueError(f"n_sequences must be a positive int, got {n_sequences!r}")
    if stream.shape[0] < n_sequences:
        raise ValueError(
            f"stream has {stream.shape[0]} steps, fewer than n_sequences={n_sequences}"
        )
    steps = stream.shape[0] // n_sequences
    rest = stream.shape[1:]
    if stream.is_floating_point():
        if not bool(torch.isfinite(stream).all()):
            raise ValueError("stream holds NaN or infinite values")
        cut = stream[: steps * n_sequences].reshape(n_sequences, steps, *rest)
        return cut.transpose(0, 1).contiguous()
    if int(stream.min()) < 0:
        raise ValueError(f"stream holds negative token ids (min {int(stream.min())})")
    return stream[: steps * n_sequences].long().view(n_sequences, steps).t().contiguous()


def reverse_stream(stream: Tensor) -> Tensor:
    """The whole stream back to front (Fortunato et al. 2017's reversed-text uncertainty test)."""
    _check_stream(stream, "stream")
    return torch.flip(stream, dims=(0,))


def check_token_ids(stream: Tensor, vocab_size: int, name: str = "stream") -> None:
    """Raise ``ValueError`` naming ``name`` when any id lies outside ``[0, vocab_size)``.

    An out-of-range id would otherwise surface as a CUDA device-side assert far from its cause.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if not isinstance(stream, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(stream).__name__}")
    if stream.is_floating_point() or stream.is_complex() or stream.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer token ids, got dtype {stream.dtype}")
    if stream.numel() == 0:
        return
    low, high = int(stream.min()), int(stream.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"{name} holds token ids in [{low}, {high}], outside [0, {vocab_size}) "
            "(was it encoded with a different vocabulary?)"
        )
