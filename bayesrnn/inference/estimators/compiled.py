"""When the per-weight elementwise work goes through ``torch.compile``.

A mean-field window touches every one of 20M weights a few dozen times (sampling, softplus,
log-densities and their backward); eagerly each touch is a pass over memory, compiled they fuse
into a few passes. Compiling costs seconds once per kernel (cached on disk by torch
afterwards) and needs a C++ compiler, so it pays only for large tensors.

``BAYESRNN_COMPILE`` (or :func:`set_compile_mode`) chooses: ``"auto"`` (default) compiles for
CPU tensors of at least ``AUTO_MIN_NUMEL`` elements, ``"on"`` for every CPU tensor (tests),
``"off"`` never. If compiling fails (no compiler, an unsupported platform) the eager formula is
used from then on, with one warning. GPUs use torch's own fused kernels.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator

import torch

MODES = ("auto", "on", "off")
AUTO_MIN_NUMEL = 1 << 20  # about 1M weights: one 650 × 1,600 matrix and up

_state = {"mode": None, "broken": False}


def compile_mode() -> str:
    """The mode in force: set_compile_mode's, else ``BAYESRNN_COMPILE``, else "auto"."""
    mode = _state["mode"] or os.environ.get("BAYESRNN_COMPILE", "auto").strip().lower()
    if mode in ("0", "false", "no"):
        return "off"
    if mode in ("1", "true", "yes"):
        return "on"
    if mode not in MODES:
        raise ValueError(f"BAYESRNN_COMPILE must be one of {MODES}, got {mode!r}")
    return mode


def set_compile_mode(mode: str | None) -> None:
    """Override ``BAYESRNN_COMPILE`` for this process (None: back to the variable)."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"compile mode must be one of {MODES} or None, got {mode!r}")
    _state["mode"] = mode


@contextlib.contextmanager
def compile_mode_set(mode: str) -> Iterator[None]:
    """Run a block under ``mode`` (restores the previous override afterwards)."""
    previous = _state["mode"]
    set_compile_mode(mode)
    try:
        yield
    finally:
        _state["mode"] = previous


def _wanted(tensor: torch.Tensor) -> bool:
    if _state["broken"] or tensor.device.type != "cpu":
        return False
    mode = compile_mode()
    return mode == "on" or (mode == "auto" and tensor.numel() >= AUTO_MIN_NUMEL)


def maybe_compiled(formula: Callable, eager: Callable) -> Callable:
    """``formula`` compiled (dynamic shapes) where wanted for its first argument, else ``eager``.

    Both must compute the same thing; ``formula`` is written in out-of-place ops for the
    compiler, ``eager`` may be hand-tuned.
    """
    compiled: dict[str, Callable] = {}

    def call(tensor: torch.Tensor, *args):
        if not _wanted(tensor):
            return eager(tensor, *args)
        if "fn" not in compiled:
            compiled["fn"] = torch.compile(formula, dynamic=True)
        try:
            return compiled["fn"](tensor, *args)
        except Exception as error:  # any compiler failure falls back to eager
            _state["broken"] = True
            warnings.warn(
                f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); "
                "bayesrnn uses its eager kernels from now on (set BAYESRNN_COMPILE=off to "
                "skip the attempt)",
                RuntimeWarning,
                stacklevel=2,
            )
            return eager(tensor, *args)

    return call
