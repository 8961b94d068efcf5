"""The pipeline behind ``bayesrnn run/train/evaluate/export``.

data → model and guide → training (resumable) → evaluation → files in one run directory:

    config.toml     the resolved config (a directory holds one config: a different one is refused)
    checkpoint.pt   model, guide, optimiser, RNG states and position (resume after a kill)
    history.json    per-window ELBO terms and per-epoch validation
    metrics.json    evaluation metrics (timings under "timing", the only run-dependent values)
    *.png           reliability diagram, entropy histograms, ELBO trace, pruning curve
    posterior.nc    ArviZ DataTree (netCDF, h5netcdf engine)

Errors a user can fix (bad config, missing data, a clashing run directory) are raised as
:class:`JobError` or the data package's errors, before anything is written.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from bayesrnn.app.classifier_task import evaluate_classifier, train_classifier
from bayesrnn.app.config import ConfigError, RunConfig
from bayesrnn.app.config_files import apply_values, config_to_dict, write_config
from bayesrnn.app.diverged_run import after_divergence
from bayesrnn.app.export import export_posterior, no_export_reason
from bayesrnn.app.forecast_task import evaluate_forecaster
from bayesrnn.app.lm_task import evaluate_language_model, train_language_model
from bayesrnn.app.nuts_task import is_nuts_history, nuts_datatree, nuts_metrics, train_nuts
from bayesrnn.app.ood_task import OODText, encode_ood_text, read_ood_file
from bayesrnn.app.run_data import (
    RunData,
    check_checkpoint_vocabulary,
    check_data,
    read_run_data,
    recorded_tags,
    run_data_of,
    write_run_data,
)
from bayesrnn.app.run_dir import (
    JobError,
    RunDir,
    check_run_dir,
    free_name,
    numbered_name,
    read_metrics,
    read_run_config,
    write_json,
)
from bayesrnn.app.run_lock import lock_run_dir
from bayesrnn.app.setup import (
    Log,
    Setup,
    check_fits,
    quiet_log,
    restore,
    setup,
    stderr_log,
)
from bayesrnn.data.atomic import temporary_path
from bayesrnn.evaluation import (
    plot_elbo_trace,
)
from bayesrnn.inference import NonFiniteLossError, TrainerConfig
from bayesrnn.inference.runtime.distributed import Ranks, barrier, current_ranks
from bayesrnn.inference.training.kl_weight import posterior_label
from bayesrnn.inference.training.trainer import History
from bayesrnn.models import learned_prior_scales, prior_scale_sites, weight_sites
from bayesrnn.version import __version__

__all__ = [
    "JobError",
    "RunDir",
    "evaluate_run",
    "export_run",
    "quiet_log",
    "run_job",
    "stderr_log",
]

logger = logging.getLogger(__name__)


def _training_summary(history: dict) -> dict:
    if is_nuts_history(history):  # sampled, not trained: the sampler's settings and cost
        return dict(history["mcmc"])
    windows = len(history["elbo"])
    last = slice(max(0, windows - 10), windows)
    tokens = sum(history["tokens"][last]) or 1
    out = {
        "steps": windows,
        "epochs_completed": len(history["epoch_lr"]),
        "elbo_last10_per_item": sum(history["elbo"][last]) / tokens,
        "nll_last10_per_item": sum(history["nll"][last]) / tokens,
        "kl_last": history["kl"][-1] if windows else None,
        "epoch_lr": history["epoch_lr"],
    }
    for key in ("valid_perplexity", "valid_accuracy", "valid_nll"):
        if history.get(key):
            out[key] = history[key]
    for key in ("best_epoch", "stopped_epoch", "stop_reason"):  # early stopping
        if history.get(key) is not None:
            out[key] = history[key]
    return out


def plot_training(history: dict, path: Path) -> Path:
    """The ELBO trace per item (token, label or value), dashed lines at each epoch's start."""
    starts = list(itertools.accumulate(history.get("epoch_steps", [])))[:-1]
    plot_elbo_trace(
        history["elbo"],
        path,
        kl=history["kl"],
        nll=history["nll"],
        items=history["tokens"],
        epoch_starts=starts,
    )
    return path


def _describe(s: Setup) -> dict:
    corpus = s.corpus
    params = {*s.model.parameters()}
    if isinstance(s.guide, torch.nn.Module):
        params |= {*s.guide.parameters()}
    return {
        "data": {
            "name": getattr(corpus, "name", s.config.data.source),
            **(
                {"vocab_size": len(corpus.vocab)}
                if hasattr(corpus, "vocab")
                else {"columns": list(corpus.columns), "targets": corpus.targets}
            ),
            "sizes": corpus.sizes(),
        },
        "model": {
            "class": type(s.model).__name__,
            "weight_sites": len(weight_sites(s.model)),
            "weights": sum(v.numel() for v in weight_sites(s.model).values()),
            "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
            **_fitted_prior_scales(s),
        },
    }


def _fitted_prior_scales(s: Setup) -> dict:
    """Per weight site: the empirical-Bayes scale, or the posterior median of a hierarchical
    prior's scale (where the guide has medians); nothing for fixed priors."""
    learned = learned_prior_scales(s.model)
    if learned:
        return {"prior_scales": learned}
    sites = prior_scale_sites(s.model)
    if not sites or not hasattr(s.guide, "median"):
        return {}
    with torch.no_grad():
        medians = s.guide.median()
    return {"prior_scales": {weight: float(medians[site]) for site, weight in sites.items()}}


def _posterior_label(config: RunConfig) -> dict[str, str]:
    """``{"posterior": label}`` for a run trained with a KL weight other than 1, else {}."""
    label = posterior_label(config.trainer.kl_weight)
    return {} if label is None else {"posterior": label}


def _evaluate(
    s: Setup,
    history: dict,
    run: RunDir,
    log: Log,
    export: bool,
    ranks: Ranks | None = None,
    ood: OODText | None = None,
    own_result: bool = False,
    unfinished: str | None = None,
) -> dict:
    began = time.perf_counter()
    if s.config.task == "classify":
        results = evaluate_classifier(s, run, log, ood)
    elif s.config.task == "forecast":
        results = evaluate_forecaster(s, run, log)
    else:
        results = evaluate_language_model(s, history, run, log, ranks, ood)
    tree = None
    if is_nuts_history(history):  # r-hat and ESS of the predictions, over every stored draw
        tree = nuts_datatree(s, history)
        results["mcmc"] = nuts_metrics(s, history, tree, log)
    else:
        elbo = plot_training(history, run / "elbo.png")
        results["plots"].append(elbo.name)
    evaluate_seconds = time.perf_counter() - began
    files = sorted(results.pop("plots"))
    export_error = None
    if export and s.config.evaluation.export:
        try:
            # the run's own evaluation (no metrics.json yet) owns posterior.nc: one left by a
            # kill between it and metrics.json is replaced, not kept beside a posterior-2.nc
            path = run.posterior if own_result else free_name(run.posterior)
            written = export_posterior(s, history, path, log, tree)
            if written is not None:
                files.append(written.name)
        except (ValueError, RuntimeError, OSError) as error:  # keep the evaluation regardless
            export_error = " ".join(str(error).split())
            logger.warning(f"posterior.nc not written: {export_error}")
    metrics = {
        "bayesrnn": __version__,
        "task": s.config.task,
        "preset": s.config.preset,
        **_describe(s),
        **_posterior_label(s.config),
        "evaluation": config_to_dict(s.config)["evaluation"],
        "training": _training_summary(history),
        **results,
        "files": files,
        **({"export_error": export_error} if export_error else {}),
        # said in the file too: a mid-training checkpoint's results are never the run's
        **({"unfinished": f"mid-training checkpoint ({unfinished})"} if unfinished else {}),
        "timing": {
            "epoch_seconds": history["epoch_seconds"],
            "evaluate_seconds": evaluate_seconds,
        },
    }
    if "tokens_per_second" in history:
        metrics["timing"]["tokens_per_second"] = history["tokens_per_second"]
    write_json(run.metrics, metrics)
    return metrics


# --- entry points -------------------------------------------------------------------------------


def _needed_splits(config: RunConfig, *, train: bool, evaluate: bool) -> tuple[str, ...]:
    """The splits a step reads: their data must be the run's, and big enough."""
    splits = ("train", "valid") if train else ()
    if evaluate:
        ev = config.evaluation
        splits += (ev.split,)
        if config.task == "lm" and config.guide.is_gaussian and ev.pruning:
            splits += ("valid",)
        if config.task == "forecast":  # the rows before the split are the forecasts' history
            splits += ("train",) + (("valid",) if ev.split == "test" else ())
    return tuple(dict.fromkeys(splits))


def _trained_data(run: RunDir, log: Log) -> RunData | None:
    """The data record of a run that has trained (a checkpoint), else None."""
    if not run.checkpoint.is_file():
        return None
    saved = read_run_data(run)
    if saved is None:
        log(
            f"note: {run.root} has no vocab.json (written by an older bayesrnn); the vocabulary "
            "is rebuilt from the data"
        )
    elif not saved.vocabulary_checked:
        log(
            f"note: {run.vocabulary} has no fingerprint of its vocabulary (written by an older "
            "bayesrnn): an edit of its token table cannot be detected"
        )
    return saved


def _prepare(config: RunConfig, run: RunDir, needed: tuple[str, ...], log: Log, *, training: bool):
    """Load the data (with the run's vocabulary once it has one) and build the model, checking
    the data against the run's fingerprint: all before anything is written."""
    saved = _trained_data(run, log)
    s = setup(
        config,
        log,
        None if saved is None else saved.vocabulary,
        series=None if saved is None else saved.series,
        training=training,
    )
    check_fits(s.config, s.corpus, needed)  # with the windows fitted to a short series
    if saved is not None:  # a vocabulary that is not the checkpoint's, before the data it encodes
        vocab = getattr(s.corpus, "vocab", None)
        check_checkpoint_vocabulary(recorded_tags(run.checkpoint), vocab, run)
        changed = check_data(saved, s.corpus, needed, run)
        if changed:
            log(f"note: the {', '.join(changed)} split(s) changed since training; not used here")
    return s, saved


def run_job(
    config: RunConfig, out: str | os.PathLike[str], *, evaluate: bool = True, log: Log = stderr_log
) -> dict:
    """Train (resuming a killed run in ``out``), then evaluate and export unless ``evaluate`` is
    False. Returns the metrics (or the training summary). A finished run is not evaluated again:
    its ``metrics.json`` is returned as it is (``evaluate_run`` makes a new evaluation)."""
    run = RunDir(Path(out).expanduser())
    check_run_dir(run.root, config)  # a clashing directory is refused before any work
    if evaluate and run.metrics.is_file():
        log(
            f"{run.root} is a finished run; its results are in {run.metrics} "
            "(bayesrnn evaluate makes a new evaluation)"
        )
        return read_metrics(run.metrics)
    ranks = current_ranks()
    if not ranks.is_main:
        log = quiet_log  # one voice: rank 0 logs and writes, the others compute
    needed = _needed_splits(config, train=True, evaluate=evaluate)
    s, saved = _prepare(config, run, needed, log, training=True)
    command = "bayesrnn run" if evaluate else "bayesrnn train"
    made_dir = not run.root.exists()
    created: list[Path] = []  # files this command wrote that no earlier start had
    with lock_run_dir(run.root, command) if ranks.is_main else contextlib.nullcontext():
        if ranks.is_main:
            check_run_dir(run.root, config)  # again, now that no other process can write here
        payload = None
        if run.checkpoint.is_file():
            payload = restore(s, run)  # a corrupt or foreign checkpoint is refused before training
        if ranks.is_main and not run.config.is_file():
            write_config(config, run.config, header=f"bayesrnn {__version__} resolved config")
            created.append(run.config)
        if ranks.is_main and saved is None:
            if not run.vocabulary.exists():
                created.append(run.vocabulary)
            write_run_data(run, run_data_of(s.corpus, config.task))
        barrier(ranks)
        began = time.perf_counter()
        try:
            if config.guide.name == "nuts":
                history = train_nuts(s, run, log, payload)
            elif config.task == "classify":
                history = train_classifier(s, run.checkpoint, log)
            else:
                history = train_language_model(s, run, log)
        except NonFiniteLossError as error:
            if not ranks.is_main:
                raise
            raise after_divergence(error, run, created, made_dir) from None
        log(f"training finished in {time.perf_counter() - began:.1f} s")
        result: dict = {"training": _training_summary(history)}
        if ranks.is_main:
            write_json(run.history, history)
            if evaluate:
                result = _evaluate(s, history, run, log, export=True, ranks=ranks, own_result=True)
            elif not is_nuts_history(history):
                plot_training(history, run / "elbo.png")
        elif evaluate and config.task == "lm":  # the other ranks' share of the LM's passes
            evaluate_language_model(s, history, run, log, ranks)
        barrier(ranks)
        return result


def _run_config(run: RunDir, overrides: dict | None) -> RunConfig:
    config = read_run_config(run)
    if overrides:
        unknown = sorted(set(overrides) - {"evaluation", "trainer"})
        trainer_keys = set(overrides.get("trainer", {})) - {"device", "progress"}
        if unknown or trainer_keys:
            raise ConfigError(
                "evaluate/export take only evaluation.* settings and --device; the model and "
                "training are fixed by the run"
            )
        config = apply_values(config, overrides, "command line")
    return config


def _load_run(run: RunDir, overrides: dict | None, log: Log, *, evaluate: bool):
    config = _run_config(run, overrides)
    if not run.checkpoint.is_file():
        raise JobError(f"{run.root} has no checkpoint.pt: train it first (bayesrnn train/run)")
    needed = _needed_splits(config, train=False, evaluate=evaluate)
    s, _ = _prepare(config, run, needed, log, training=False)
    payload = restore(s, run)
    history = payload["history"]
    history = history.to_dict() if isinstance(history, History) else dict(history)
    return s, payload, history


def load_run_for(out: str | os.PathLike[str], *, evaluate: bool = True):
    """``(setup, checkpoint payload, history)`` of a trained run, its data loaded and checked
    (for benchmarks and studies that need the training data too; see also ``load_run``)."""
    return _load_run(RunDir(Path(out).expanduser()), None, quiet_log, evaluate=evaluate)


def _new_evaluation_dir(run: RunDir, force: bool, unfinished: bool = False) -> RunDir:
    """Where an evaluation writes: the run itself the first time (or with ``force``), else a
    fresh ``eval-N`` folder, so earlier results are never overwritten. A mid-training
    checkpoint's evaluation always goes to a fresh folder: a ``metrics.json`` in the run would
    mark it finished."""
    if not unfinished and (force or not run.metrics.exists()):
        return run
    return RunDir(numbered_name(run.root / "eval"))


def evaluate_run(
    out: str | os.PathLike[str],
    overrides: dict | None = None,
    *,
    log: Log = stderr_log,
    force: bool = False,
    ood: str | os.PathLike[str] | None = None,
) -> dict:
    """Re-evaluate a trained run directory (``evaluation.*`` settings may be overridden).

    The first evaluation writes ``metrics.json`` and the plots into the run; later ones go to a
    new ``eval-2``, ``eval-3``, ... folder inside it, unless ``force`` overwrites the first.
    ``ood`` names a UTF-8 text file (one sentence per line) to compare with the evaluation split
    as out-of-distribution text (``"ood_file"`` in the metrics, ``ood_entropy.png``); the
    reversed split stays the ``"reversed"`` comparison. Returns the metrics, with
    ``"written_to"`` naming the folder.
    """
    run = RunDir(Path(out).expanduser())
    ood_text = None if ood is None else read_ood_file(ood)  # a bad file fails before any work
    s, payload, history = _load_run(run, overrides, log, evaluate=True)
    named = None
    if ood_text is not None:
        corpus = s.corpus
        named = encode_ood_text(
            ood_text,
            s.config.task,
            getattr(corpus, "tokenizer", "whitespace"),
            getattr(corpus, "vocab", None),
            name=Path(ood).name,
            path=ood,
        )
    with lock_run_dir(run.root, "bayesrnn evaluate"):
        unfinished = _unfinished(s.config, payload, log)
        target = _new_evaluation_dir(run, force, unfinished is not None)
        if target.root == run.root:
            metrics = _evaluate(
                s, history, target, log, export=False, ood=named, unfinished=unfinished
            )
        else:  # built under a temporary name, renamed once whole: a kill leaves no eval-N
            scratch = RunDir(temporary_path(target.root))
            scratch.root.mkdir()
            try:
                metrics = _evaluate(
                    s, history, scratch, log, export=False, ood=named, unfinished=unfinished
                )
                os.rename(scratch.root, target.root)
            except BaseException:
                shutil.rmtree(scratch.root, ignore_errors=True)
                raise
    metrics["written_to"] = str(target.root)
    return metrics


def export_run(
    out: str | os.PathLike[str],
    overrides: dict | None = None,
    *,
    log: Log = stderr_log,
    force: bool = False,
) -> Path:
    """Write ``posterior.nc`` for a trained run directory (``posterior-2.nc``, ... when one is
    already there, unless ``force`` overwrites it)."""
    run = RunDir(Path(out).expanduser())
    reason = no_export_reason(_run_config(run, overrides))
    if reason is not None:
        raise JobError(f"nothing to export: {reason}")
    s, payload, history = _load_run(run, overrides, log, evaluate=False)
    with lock_run_dir(run.root, "bayesrnn export"):
        if _unfinished(s.config, payload, log) is not None:  # posterior.nc is the finished run's
            path = run.root / UNFINISHED_EXPORT
        else:
            path = run.posterior
        return export_posterior(s, history, path if force else free_name(path), log)


UNFINISHED_EXPORT = "posterior-unfinished.nc"  # a mid-training checkpoint's export


def _unfinished(config: RunConfig, payload: dict, log: Log) -> str | None:
    """Where a mid-training checkpoint stands ("epoch E, step W"), logged as a note; None for
    a finished run. Such a checkpoint's evaluation or export is never the run's result: the
    run's ``metrics.json`` and ``posterior.nc`` belong to its finished state."""
    if is_nuts_history(payload["history"]):  # written only when every chain has finished
        return None
    epoch, window = payload["position"]
    trainer: TrainerConfig = config.trainer
    steps = len(payload["history"]["elbo"])
    done = epoch >= trainer.epochs or (
        trainer.max_windows is not None and steps >= trainer.max_windows
    )
    done = done or payload["history"].get("stop_reason") is not None  # stopped early
    if done:
        return None
    where = f"epoch {epoch + 1}, step {window}"
    log(f"note: the checkpoint is mid-training ({where}); used as is, and written apart")
    return where
