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


def window_batch(data: torch.Tensor, window: Window) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a window of a time-major (steps, B) token tensor."""
    end = window.start + window.length
    return data[window.start : end], data[window.start + 1 : end + 1]


def detach_state(state):
    """Cut the graph between windows while carrying the values (TBPTT)."""
    if state is None:
        return None
    if isinstance(state, tuple | list):
        return type(state)(detach_state(s) for s in state)
    return state.detach()
