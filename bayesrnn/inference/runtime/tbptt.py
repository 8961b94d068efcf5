"""Truncated-BPTT windows over B parallel sequences, fixed or AWD-style random lengths."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    """Steps [start, start+length) predict steps [start+1, start+length+1)."""

    start: int
    length: int


def plan_windows(
    steps: int,
    bptt: int,
    *,
    variable: bool = False,
    generator: torch.Generator | None = None,
    min_length: int = 5,
    std: float = 5.0,
) -> list[Window]:
    """The windows of one epoch over a (steps, B) batchified stream.

    Fixed: consecutive windows of ``bptt`` steps, the last one shorter. ``variable`` (Merity et
    al.): base length ``bptt`` with probability 0.95 else ``bptt/2``, length ~ N(base, std),
    at least ``min_length``; the trainer rescales the learning rate by length/bptt.
    """
    if bptt < 1:
        raise ValueError(f"bptt must be a positive integer, got {bptt!r}")
    usable = steps - 1  # the last step has no target
    if bptt > usable:
        raise ValueError(
            f"bptt window of {bptt} steps is longer than the data: each of the parallel "
            f"sequences has only {usable} steps with a target"
        )
    windows, start = [], 0
    while start < usable:
        length = bptt
        if variable:
            u, z = torch.rand((), generator=generator), torch.randn((), generator=generator)
            base = bptt if float(u) < 0.95 else bptt / 2
            length = max(min_length, round(base + std * float(z)))
        length = min(length, usable - start)
        windows.append(Window(start, length))
        start += length
    return windows


def window_batch(
    data: torch.Tensor, window: Window, *, batch_first: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a window of a time-major (steps, B) token tensor.

    Time-major (T, B) by default; ``batch_first=True`` gives (B, T).
    """
    end = window.start + window.length
    inputs, targets = data[window.start : end], data[window.start + 1 : end + 1]
    if batch_first:
        return inputs.transpose(0, 1), targets.transpose(0, 1)
    return inputs, targets


def is_batch_first(model) -> bool:
    """Whether ``model`` reads (B, T) token tensors (its ``batch_first``; time-major if absent)."""
    return bool(getattr(model, "batch_first", False))


def model_window(model, data: torch.Tensor, window: Window) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a window in the layout ``model`` reads: (B, T) if batch-first.

    The hidden state carried between windows is (layers, B, H) in either layout.
    """
    return window_batch(data, window, batch_first=is_batch_first(model))


def to_model_layout(model, tokens: torch.Tensor) -> torch.Tensor:
    """A time-major (T, B) tensor in ``model``'s layout: (B, T) for a batch-first model."""
    return tokens.transpose(0, 1) if is_batch_first(model) else tokens


def time_major_logits(model, logits: torch.Tensor) -> torch.Tensor:
    """``model``'s (…, T, B, V) or batch-first (…, B, T, V) logits as time-major (…, T, B, V)."""
    return logits.transpose(-2, -3) if is_batch_first(model) else logits


def detach_state(state):
    """Cut the graph between windows while carrying the values (TBPTT)."""
    if state is None:
        return None
    if isinstance(state, tuple | list):
        return type(state)(detach_state(s) for s in state)
    return state.detach()
