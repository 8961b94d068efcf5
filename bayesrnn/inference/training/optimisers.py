"""The optimiser and learning-rate scheduler of a trainer: from its config, or the caller's.

The trainer steps one ``torch.optim.Optimizer`` over all trainable parameters of model and
guide. Pyro creates a guide's parameters on its first call, so the trainer runs the guide once
and only then builds the optimiser; that is why ``optimizer=`` takes how to build one, not a
built one:

* ``None``: the config's ``optimizer`` ("sgd" or "adam") at ``lr`` with ``weight_decay``, and
  the config's epoch schedule (``lr_decay`` after ``constant_epochs``);
* a ``torch.optim.Optimizer`` class or any callable taking the parameter list and returning an
  optimiser, e.g. ``torch.optim.AdamW`` or ``functools.partial(torch.optim.SGD, lr=1,
  momentum=0.9)`` (a lambda can build parameter groups);
* a ``pyro.optim.PyroOptim`` such as ``pyro.optim.Adam({"lr": 0.01})``: its torch class and
  arguments build the one optimiser (a ``pyro.optim`` scheduler, e.g.
  ``pyro.optim.StepLR({...})``, also brings its scheduler). Per-parameter argument functions
  and Pyro's ``clip_args`` are refused: the trainer clips by ``clip_norm``.

``scheduler=`` is a ``torch.optim.lr_scheduler`` class or a callable taking the optimiser, e.g.
``functools.partial(StepLR, step_size=1, gamma=0.5)``. It is stepped once per epoch, after
validation; a ``ReduceLROnPlateau`` is given the monitored validation metric. With either, the
learning rate is theirs: the config's ``lr_decay`` must stay 1 (no second schedule on top).
Variable-length TBPTT windows still scale each step's rate by length/bptt.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pyro.optim import PyroOptim
from pyro.optim.lr_scheduler import PyroLRScheduler
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

__all__ = [
    "OptimizerSpec",
    "SchedulerSpec",
    "build_optimizer",
    "build_scheduler",
    "check_optimizer_spec",
    "check_scheduler_spec",
    "step_scheduler",
]

type OptimizerSpec = PyroOptim | Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer] | None
type Scheduler = LRScheduler | ReduceLROnPlateau
type SchedulerSpec = Callable[[torch.optim.Optimizer], Any] | None

_FACTORY_HINT = (
    "pass the optimiser class or a factory (e.g. functools.partial(torch.optim.SGD, lr=1.0)): "
    "the trainer builds it once the guide has created its parameters"
)


def check_optimizer_spec(spec: object) -> None:
    """Refuse, before any work, what :func:`build_optimizer` cannot use."""
    if spec is None or isinstance(spec, PyroOptim):
        if isinstance(spec, PyroOptim):
            _pyro_parts(spec)
        return
    if isinstance(spec, torch.optim.Optimizer):
        raise ValueError(f"optimizer is an already built {type(spec).__name__}; {_FACTORY_HINT}")
    if not callable(spec):
        raise ValueError(
            "optimizer must be None, a pyro.optim optimiser, a torch.optim.Optimizer class or "
            f"a callable building one from the parameters, got {spec!r}"
        )


def check_scheduler_spec(spec: object) -> None:
    if spec is None:
        return
    if isinstance(spec, LRScheduler | ReduceLROnPlateau):
        raise ValueError(
            f"scheduler is an already built {type(spec).__name__}; pass its class or a factory "
            "(e.g. functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)): "
            "the trainer builds it with the optimiser"
        )
    if not callable(spec):
        raise ValueError(
            f"scheduler must be None or a callable building one from the optimiser, got {spec!r}"
        )


def _pyro_parts(spec: PyroOptim) -> tuple[Callable, dict, SchedulerSpec]:
    """The torch optimiser class, its arguments and (for a Pyro scheduler) the scheduler."""
    args = spec.pt_optim_args
    if callable(args):
        raise ValueError(
            "a pyro.optim optimiser with per-parameter arguments (a function) cannot drive one "
            "optimiser over all parameters; give it a dict of arguments"
        )
    if spec.pt_clip_args:
        raise ValueError(
            "pyro.optim clip_args are not used by this trainer; set TrainerConfig.clip_norm"
        )
    scheduler = None
    if isinstance(spec, PyroLRScheduler):
        scheduler = functools.partial(spec.pt_scheduler_constructor, **spec.kwargs)
    return spec.pt_optim_constructor, dict(args), scheduler


def build_optimizer(
    spec: OptimizerSpec, params: Sequence[torch.nn.Parameter], config
) -> tuple[torch.optim.Optimizer, SchedulerSpec]:
    """The optimiser over ``params`` (see the module docstring), and the scheduler factory a
    Pyro scheduler brings (else None)."""
    params = list(params)
    scheduler = None
    if spec is None:
        cls = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.Adam
        optimizer = cls(params, lr=config.lr, weight_decay=config.weight_decay)
    elif isinstance(spec, PyroOptim):
        cls, args, scheduler = _pyro_parts(spec)
        optimizer = cls(params, **args)
    else:
        optimizer = spec(params)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(
            f"optimizer built a {type(optimizer).__name__}, not a torch.optim.Optimizer"
        )
    return optimizer, scheduler


def build_scheduler(spec: SchedulerSpec, optimizer: torch.optim.Optimizer) -> Scheduler | None:
    if spec is None:
        return None
    scheduler = spec(optimizer)
    if not (
        isinstance(scheduler, LRScheduler | ReduceLROnPlateau)
        or (callable(getattr(scheduler, "step", None)) and hasattr(scheduler, "state_dict"))
    ):
        raise ValueError(
            f"scheduler built a {type(scheduler).__name__}, which has no step() and state_dict()"
        )
    return scheduler


def needs_metric(scheduler: object) -> bool:
    """Whether ``scheduler.step`` wants the validation metric (ReduceLROnPlateau)."""
    return isinstance(scheduler, ReduceLROnPlateau)


def step_scheduler(scheduler: Scheduler | None, metric: float | None) -> None:
    """One epoch's step: with the monitored validation metric for ReduceLROnPlateau."""
    if scheduler is None:
        return
    if needs_metric(scheduler):
        if metric is None:
            raise ValueError("ReduceLROnPlateau needs a validation metric: give validation data")
        scheduler.step(metric)
    else:
        scheduler.step()
