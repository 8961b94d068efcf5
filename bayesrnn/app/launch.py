"""Joining the process group ``torchrun`` sets up: gloo on CPUs, NCCL with one GPU per rank."""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist

from bayesrnn.app.config import ConfigError, RunConfig
from bayesrnn.app.setup import check_device

__all__ = ["join_process_group", "leave_process_group"]


def join_process_group(config: RunConfig) -> RunConfig:
    """Under ``torchrun`` (WORLD_SIZE > 1): initialise the default process group and give this
    rank its GPU (``cuda`` becomes ``cuda:LOCAL_RANK``). A no-op for one process or when the
    caller initialised the group already."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return config
    check_device(config)  # before torch.cuda is touched: one line, not a traceback per rank
    device = config.trainer.device
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun started local rank {local}, but torch sees "
                f"{torch.cuda.device_count()} CUDA device(s) on this machine: start at most "
                "that many processes per node (--nproc-per-node)"
            )
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    trainer = dataclasses.replace(config.trainer, device=device)
    return dataclasses.replace(config, trainer=trainer)


def leave_process_group(meet: bool = False) -> None:
    """Tear the group down. ``meet=True`` (a rank that finished its work) first waits for the
    others, at most a minute: a rank destroying gloo's group while a peer still sends to it can
    abort that peer ("terminate called without an active exception"). A rank that failed does
    not wait, since its peers may never arrive."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if meet:
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
            else:
                dist.barrier()
        except RuntimeError:  # a peer died after its work was done: the results stand
            pass
    dist.destroy_process_group()
