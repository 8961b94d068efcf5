"""Refusing a model that cannot fit in memory, from an estimate made before it is built.

Building a network of 10¹¹ weights would stop with a MemoryError after minutes of swapping, or
the kernel would kill the process; the estimate costs nothing. The rule (a floor, not a
forecast):

    training:             bytes = 4 × W × (4 × g + P)
    evaluation or export: bytes = 4 × W × (g + 1)

W: the model's values, weight sites plus point-estimated parameters, counted on PyTorch's
``meta`` device (shapes without storage); 4 bytes a float32; g: the guide's values per weight
(2 for a Gaussian: μ and σ; 2 + ⌈√W⌉ for ``auto_low_rank``'s factor of Pyro's default rank;
K for an ensemble of K members; 1 for gal, none and nuts); 4 × g: those values, their gradients
and an optimiser's two moments; P: ``trainer.num_particles`` weight draws held in one step.
Evaluation and the export hold the guide's values and one drawn network at a time (their
draws come one after another, and ``posterior.nc`` keeps only chosen sites, not every weight).
The estimate is compared with the memory available now (``MemAvailable`` of /proc/meminfo,
else the physical memory; the free memory of the GPU for a CUDA device).
"""

from __future__ import annotations

import math
import os

import torch

from bayesrnn.models.bayesian import weight_sites

__all__ = ["available_bytes", "check_memory", "model_values", "required_bytes"]

FLOAT_BYTES = 4


def model_values(model: torch.nn.Module) -> int:
    """W of the rule: every weight site's values plus every parameter's."""
    sites = sum(value.numel() for value in weight_sites(model).values())
    return sites + sum(p.numel() for p in model.parameters())


def guide_values_per_weight(guide: str, weights: int, members: int) -> int:
    """g of the rule: how many values the guide holds for each weight."""
    if guide in ("mean_field", "sharpened", "auto_normal"):
        return 2
    if guide == "auto_low_rank":
        return 2 + math.ceil(math.sqrt(max(weights, 1)))
    if guide == "ensemble":
        return members
    return 1


def required_bytes(
    weights: int, guide: str, members: int, particles: int, *, training: bool
) -> int:
    """The rule's bytes for ``weights`` values under ``guide``, to train or to evaluate."""
    g = guide_values_per_weight(guide, weights, members)
    copies = 4 * g + particles if training else g + 1
    return FLOAT_BYTES * weights * copies


def available_bytes(device: str) -> int | None:
    """Memory free for the run on ``device`` now; None where it cannot be told."""
    if device.startswith("cuda"):
        try:
            free, _ = torch.cuda.mem_get_info(torch.device(device))
        except (RuntimeError, AssertionError, ValueError):
            return None
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _in_words(count: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{int(count)} bytes"


def check_memory(
    weights: int,
    guide: str,
    members: int,
    particles: int,
    device: str,
    what: str,
    *,
    training: bool,
) -> None:
    """Raise a MemoryError naming the estimate when the rule's bytes exceed what is free."""
    needed = required_bytes(weights, guide, members, particles, training=training)
    free = available_bytes(device)
    if free is None or needed <= free:
        return
    g = guide_values_per_weight(guide, weights, members)
    rule = f"4 × {g} + {particles} particles" if training else f"{g} + 1 drawn network"
    raise MemoryError(
        f"the model does not fit in memory ({what}): {weights:,} weights need about "
        f"{_in_words(needed)} to {'train' if training else 'evaluate'} with "
        f"guide.name={guide} (4 bytes × weights × ({rule})), and {_in_words(free)} is "
        f"available on {device}"
    )
