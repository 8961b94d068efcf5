"""A run's ArviZ file: posterior draws of the weights and predictions as a DataTree."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from bayesrnn.app.config import RunConfig
from bayesrnn.app.run_dir import JobError
from bayesrnn.app.setup import (
    Log,
    Setup,
    padding_id,
    seed_everything,
)
from bayesrnn.data import pad_batch
from bayesrnn.data.atomic import temporary_path
from bayesrnn.inference.training.kl_weight import posterior_label


def no_export_reason(config: RunConfig) -> str | None:
    """Why a run has no ArviZ export, or None when it has one."""
    if config.guide.name == "none":
        return "a deterministic network has no posterior to export"
    return None


def export_draws(config: RunConfig) -> int:
    """How many draws ``posterior.nc`` holds: ``evaluation.export_samples``, except for an
    ensemble, whose K members are its K draws (more would repeat members, not add draws)."""
    if config.guide.name == "ensemble":
        return config.guide.members
    return config.evaluation.export_samples


def export_posterior(
    s: Setup, history: dict | None, path: Path, log: Log, tree: xr.DataTree | None = None
) -> Path | None:
    """Write ``path`` (an ArviZ DataTree) from the trained model on the evaluation split.

    Held-out data, recorded with its fingerprint: ``arviz_stats.loo``/``compare`` (and
    ``bayesrnn compare``) rank runs scored on the same tokens (see
    ``bayesrnn.evaluation.arviz_export``). Gal's guide exports too, without ``sample_stats``.
    A NUTS run exports every stored draw with its chains (``tree``: one already built).
    """
    reason = no_export_reason(s.config)
    if reason is not None:
        log(f"posterior.nc skipped: {reason}")
        return None
    ev = s.config.evaluation
    if s.config.guide.name == "nuts":
        from bayesrnn.app.nuts_task import nuts_datatree

        log(f"exporting every NUTS draw, and {ev.export_samples} prior draws, to {path}")
        tree = nuts_datatree(s, history) if tree is None else tree
    else:
        seed_everything(s.config.trainer.seed + 2)
        draws = export_draws(s.config)
        what = "ensemble members" if s.config.guide.name == "ensemble" else "posterior samples"
        log(f"exporting {draws} {what} to {path}")
        tree = task_exporter(s, history)(s.guide, draws)
    label = posterior_label(s.config.trainer.kl_weight)
    if label is not None:  # on the file and on its posterior group
        tree.attrs["posterior"] = label
        if "posterior" in tree.children:
            tree["posterior"].attrs["posterior"] = label
    check_free_space(path, tree)
    tmp = temporary_path(path)
    try:
        tree.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as error:  # h5py's own errors on a full disk
        tmp.unlink(missing_ok=True)
        _FAILED_WRITES.append(error)
        if isinstance(error, OSError) and error.errno:  # h5py's own text repeats the path
            reason = os.strerror(error.errno)
        else:
            reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise JobError(f"{path} was not written ({reason}); nothing of it is left") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# The errors of writes that failed, kept to the end of the process: their tracebacks hold the
# half-closed h5py file, and freeing it after a write failed on a full disk ended the process
# with a segmentation fault (measured on a 2 MiB tmpfs; kept alive, the command exits with 2).
_FAILED_WRITES: list[BaseException] = []

# netCDF's own layout (HDF5 superblock, group and variable headers) beside the arrays and
# attributes: measured 34-35 KiB for language-model exports of 2 and 100 draws (7 KB and 204 KB
# of arrays) and 29 KiB for a sunspots forecaster's; 256 KiB leaves a wide margin.
EXPORT_OVERHEAD_BYTES = 256 * 2**10


def export_size(tree: xr.DataTree) -> int:
    """An estimate of the file ``tree`` makes: its arrays' bytes and a tenth more, its
    attributes' text (a vocabulary is one), and :data:`EXPORT_OVERHEAD_BYTES`."""
    arrays = sum(node.dataset.nbytes for node in tree.subtree)
    attributes = sum(
        len(str(value).encode("utf-8"))
        for node in tree.subtree
        for holder in (node.attrs, *(v.attrs for v in node.dataset.variables.values()))
        for value in holder.values()
    )
    return int(arrays * 1.1) + attributes + EXPORT_OVERHEAD_BYTES


def check_free_space(path: Path, tree: xr.DataTree) -> None:
    """Refuse (a JobError) an export the disk has no room for, before anything is written:
    HDF5 on a full disk can end the process with a segmentation fault rather than an error."""
    needed = export_size(tree)
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise JobError(
            f"{path} needs about {needed / 2**20:,.1f} MiB and its disk has "
            f"{free / 2**20:,.1f} MiB free; free some space or lower evaluation.export_samples"
        )


def task_exporter(s: Setup, history: dict | None) -> Callable[[Any, int], xr.DataTree]:
    """``export(guide, num_samples)``: the run's task exporter on the evaluation split, for any
    guide (the run's, or one drawing from the prior)."""
    from bayesrnn.evaluation.arviz_export import export_classifier, export_language_model

    ev = s.config.evaluation
    device = torch.device(s.config.trainer.device)

    def export(guide, num_samples: int) -> xr.DataTree:
        if s.config.task == "forecast":
            from bayesrnn.app.forecast_task import forecast_range
            from bayesrnn.evaluation.arviz_forecast import export_forecaster

            rows, start = forecast_range(s.corpus, ev.split)
            return export_forecaster(
                s.model,
                guide,
                rows.to(device),
                start,
                num_samples=num_samples,
                target_names=list(s.corpus.target_columns),
                split=ev.split,
                units=s.corpus.target_units,  # data units, as metrics.json
                times=s.corpus.full_times(),
                observed_values=s.corpus.observed(start, rows.shape[0]).numpy(),
            )
        elif s.config.task == "classify":
            split = getattr(s.corpus, ev.split)
            tokens, lengths = pad_batch(split.sequences, pad_id=padding_id(s.corpus))
            return export_classifier(
                s.model,
                guide,
                tokens.to(device),
                lengths,
                split.labels.to(device),
                num_samples=num_samples,
                split=ev.split,
                vocabulary=s.corpus.vocab.itos,
                label_names=list(s.corpus.label_names),
            )
        else:
            stream = s.corpus.split(ev.split)
            if ev.max_tokens is not None:
                stream = stream[: ev.max_tokens]
            return export_language_model(
                s.model,
                guide,
                stream.to(device),
                num_samples=num_samples,
                batch_size=s.config.trainer.eval_batch_size,
                bptt=s.config.trainer.bptt,
                history=history,
                split=ev.split if ev.max_tokens is None else f"{ev.split}[:{ev.max_tokens}]",
                vocabulary=s.corpus.vocab.itos,
            )

    return export
