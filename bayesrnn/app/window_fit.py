"""Fitting a run's batch and window to its data, and refusing sizes the data cannot fill.

The ``forecast`` preset shrinks its parallel sequences and window to a short series; every
other size is checked against each split it reads before anything is written (messages in
rows and steps for a series, tokens for text).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from bayesrnn.app.backtest_plan import backtest_plan
from bayesrnn.app.config import ConfigError, RunConfig
from bayesrnn.inference.runtime.distributed import current_ranks

__all__ = ["check_fits", "fit_windows"]


def fit_windows(config: RunConfig, corpus, log: Callable[[str], None] | None = None) -> RunConfig:
    """The ``forecast`` preset's batch size and window, shrunk to fit a short training split.

    Training cuts the train rows into ``batch_size`` parallel sequences and needs
    ``bptt + 1`` steps in each. A series too short for the preset's 4 × 21 rows gets fewer
    sequences first (keeping the 20-step window), then, with one sequence left, a shorter
    window. Other configs, and batch sizes or windows set by hand, are left as they are
    (:func:`check_fits` then says what to change).
    """
    if config.task != "forecast" or config.preset != "forecast":
        return config
    from bayesrnn.app.presets import PRESETS

    tr = config.trainer
    own = PRESETS["forecast"].values["trainer"]
    if (tr.batch_size, tr.bptt) != (own["batch_size"], own["bptt"]):
        return config  # values the user chose: check_fits says when they do not fit
    rows = int(corpus.train.shape[0])
    if rows // tr.batch_size >= tr.bptt + 1:
        return config
    batch = max(1, min(tr.batch_size, rows // (tr.bptt + 1)))
    bptt = min(tr.bptt, rows // batch - 1)
    if bptt < 1:
        return config  # fewer than two rows: check_fits explains
    (log or (lambda message: None))(
        f"the train split has {rows} rows: training reads them as {batch} parallel "
        f"sequence(s) of {rows // batch} steps in windows of {bptt} steps "
        f"(trainer.batch_size={batch}, trainer.bptt={bptt}; the preset's are "
        f"{tr.batch_size} and {tr.bptt})"
    )
    trainer = dataclasses.replace(tr, batch_size=batch, bptt=bptt)
    return dataclasses.replace(config, trainer=trainer)


def check_fits(config: RunConfig, corpus, splits: tuple[str, ...]) -> None:
    """Refuse batch and window sizes the data cannot fill (or the processes cannot share),
    before anything is written."""
    tr = config.trainer
    world = current_ranks().world
    if "train" in splits and config.task != "classify" and tr.batch_size % world:
        raise ConfigError(
            f"trainer.batch_size={tr.batch_size} parallel sequences do not split evenly over "
            f"{world} processes; use a multiple of {world}"
        )

    for split in splits:
        part = getattr(corpus, split)
        items = part.shape[0] if isinstance(part, torch.Tensor) else len(part)  # tokens or rows
        cut = split == config.evaluation.split and config.evaluation.max_tokens is not None
        if cut:
            items = min(items, config.evaluation.max_tokens)
        if items == 0:
            raise ConfigError(f"the {split} split of the data is empty")
        if config.task == "classify":
            continue
        batch = tr.batch_size if split == "train" else tr.eval_batch_size
        steps = items // batch
        needed = tr.bptt + 1 if split == "train" else 2
        if steps < needed:
            key = "batch_size" if split == "train" else "eval_batch_size"
            if config.task == "forecast":
                raise ConfigError(_short_series(split, items, key, batch, steps, needed, tr.bptt))
            raise ConfigError(
                f"the {split} split has {items} tokens: cut into trainer.{key}={batch} parallel "
                f"sequences that is {steps} steps each, fewer than the {needed} that "
                + (f"trainer.bptt={tr.bptt} needs" if split == "train" else "evaluation needs")
                + f"; lower trainer.{key}"
                + (" or trainer.bptt" if split == "train" else "")
                + (" or raise evaluation.max_tokens" if cut and split != "train" else "")
            )
    if config.task == "forecast" and config.evaluation.split in splits:
        backtest_plan(config, corpus)  # a horizon or season the split cannot hold: refused now


def _short_series(
    split: str, rows: int, key: str, batch: int, steps: int, needed: int, bptt: int
) -> str:
    """The too-short message of a series, in rows and steps."""
    if split == "train":
        return (
            f"the train split has {rows} rows: as trainer.batch_size={batch} parallel "
            f"sequences that is {steps} steps each, fewer than the {needed} that a "
            f"trainer.bptt={bptt}-step window needs; lower trainer.batch_size or trainer.bptt "
            "(the forecast preset fits both to the series)"
        )
    return (
        f"the {split} split has {rows} rows: as trainer.{key}={batch} parallel sequences that "
        f"is {steps} steps each, fewer than the {needed} that evaluation needs; lower "
        f"trainer.{key}"
    )
