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

import os
import shutil
import time
from pathlib import Path

import torch

from bayesrnn import __version__
from bayesrnn.app.classifier_task import evaluate_classifier, train_classifier
from bayesrnn.app.config import ConfigError, RunConfig
from bayesrnn.app.config_files import apply_values, config_to_dict, write_config
from bayesrnn.app.run_data import RunData, check_data, read_run_data, run_data_of, write_run_data
from bayesrnn.app.run_dir import (
    JobError,
    RunDir,
    check_run_dir,
    free_name,
    read_json,
    read_run_config,
    write_json,
)
from bayesrnn.app.run_lock import lock_run_dir
from bayesrnn.app.setup import (
    Log,
    Setup,
    check_fits,
    padding_id,
    quiet_log,
    restore,
    seed_everything,
    setup,
    stderr_log,
)
from bayesrnn.data import pad_batch
from bayesrnn.data.atomic import temporary_path
from bayesrnn.evaluation import (
    plot_elbo_trace,
    plot_entropy_histograms,
    plot_pruning_curve,
    plot_reliability_diagram,
)
from bayesrnn.evaluation.pruning import pruning_curve
from bayesrnn.evaluation.stream_report import language_model_report
from bayesrnn.inference import SharpenedGuide, TBPTTTrainer, TrainerConfig, evaluate_stream
from bayesrnn.inference.dynamic import dynamic_evaluate
from bayesrnn.inference.predictive import safe_exp
from bayesrnn.inference.trainer import History
from bayesrnn.models import weight_sites

__all__ = [
    "JobError",
    "RunDir",
    "evaluate_run",
    "export_run",
    "quiet_log",
    "run_job",
    "stderr_log",
]


# --- language model -----------------------------------------------------------------------------


def train_language_model(s: Setup, run: RunDir, log: Log) -> dict:
    trainer = TBPTTTrainer(
        s.model,
        s.guide,
        s.corpus.train,
        s.corpus.valid,
        s.config.trainer,
        checkpoint_path=run.checkpoint,
    )
    if run.checkpoint.is_file():
        log(f"resuming from {run.checkpoint}")
    history = trainer.fit(resume=True)
    # fit() checkpoints every N windows and at epoch ends; a max_windows stop may fall between.
    trainer.save_checkpoint()
    return history.to_dict()


def evaluate_language_model(s: Setup, history: dict, run: RunDir, log: Log) -> dict:
    ev, tr = s.config.evaluation, s.config.trainer
    stream = s.corpus.split(ev.split)
    if ev.max_tokens is not None:
        stream = stream[: ev.max_tokens]
    seed_everything(tr.seed + 1)
    guide = s.guide
    log(
        f"evaluating {ev.split} ({stream.numel()} tokens): posterior mean, "
        f"MC with {ev.mc_samples} samples" + (", reversed text" if ev.reversed_text else "")
    )
    report = language_model_report(
        s.model,
        guide,
        stream,
        num_samples=ev.mc_samples,
        batch_size=tr.eval_batch_size,
        bptt=tr.bptt,
        n_bins=ev.n_bins,
        strategy=ev.bin_strategy,
        reversed_text=ev.reversed_text,
        sharpened=False,
    )
    metrics = report.metrics()
    if isinstance(s.guide, SharpenedGuide) and ev.sharpened_bound:
        bound = evaluate_stream(
            s.model, s.guide, stream, batch_size=tr.eval_batch_size, bptt=tr.bptt, sharpened=True
        )
        # exp() of a bound this loose overflows: keep the per-token NLL bound as well
        metrics["nll_sharpened_bound"] = bound.nll_per_token
        metrics["perplexity_sharpened_bound"] = safe_exp(bound.nll_per_token)
    if ev.dynamic_lr is not None:
        log(f"dynamic evaluation of {ev.split} (lr {ev.dynamic_lr})")
        dynamic = dynamic_evaluate(
            s.model,
            s.guide,
            stream,
            lr=ev.dynamic_lr,
            batch_size=tr.eval_batch_size,
            bptt=tr.bptt,
        )
        metrics["dynamic_lr"] = ev.dynamic_lr
        metrics["nll_dynamic"] = dynamic.nll_per_token
        metrics["perplexity_dynamic"] = safe_exp(dynamic.nll_per_token)
    files = [
        plot_reliability_diagram(report.mc.bins, run / "reliability.png", title="MC predictive")
    ]
    if report.reversed_mc is not None:
        files.append(
            plot_entropy_histograms(
                report.mc.token_entropy,
                report.reversed_mc.token_entropy,
                run / "entropy.png",
                labels=("forward text", "reversed text"),
            )
        )
    out = {ev.split: metrics}
    if s.config.guide.is_gaussian and ev.pruning:
        pruning = _pruning(s, log)
        out["pruning"] = pruning
        files.append(
            plot_pruning_curve(pruning["fractions"], pruning["perplexities"], run / "pruning.png")
        )
    out["plots"] = [p.name for p in files]
    return out


def _pruning(s: Setup, log: Log) -> dict:
    ev, tr = s.config.evaluation, s.config.trainer
    log(f"pruning curve on valid at fractions {list(ev.pruning_fractions)}")
    curve = pruning_curve(
        s.model,
        s.guide,
        s.corpus.valid,
        fractions=ev.pruning_fractions,
        batch_size=tr.eval_batch_size,
        bptt=tr.bptt,
    )
    return {
        "split": "valid",
        "fractions": list(curve.fractions),
        "perplexities": list(curve.perplexities),
        "zeroed": list(curve.zeroed),
        "total_weights": curve.total,
    }


# --- exports and reports ------------------------------------------------------------------------


def no_export_reason(config: RunConfig) -> str | None:
    """Why a run has no ArviZ export, or None when it has one."""
    if config.guide.name == "none":
        return "a deterministic network has no posterior to export"
    if config.guide.name == "gal":
        return "Gal's Bernoulli-mixture posterior has no density (log q) for the ArviZ export"
    return None


def export_posterior(s: Setup, history: dict | None, path: Path, log: Log) -> Path | None:
    """Write ``path`` (an ArviZ DataTree) from the trained model on the evaluation split.

    Held-out data: its log-likelihood compares guides; for PSIS-LOO of the approximate posterior
    export the training data instead (see ``bayesrnn.evaluation.arviz_export``).
    """
    reason = no_export_reason(s.config)
    if reason is not None:
        log(f"posterior.nc skipped: {reason}")
        return None
    from bayesrnn.evaluation.arviz_export import export_classifier, export_language_model

    ev = s.config.evaluation
    device = torch.device(s.config.trainer.device)
    guide = s.guide
    seed_everything(s.config.trainer.seed + 2)
    log(f"exporting {ev.export_samples} posterior samples to {path}")
    if s.config.task == "classify":
        split = getattr(s.corpus, ev.split)
        tokens, lengths = pad_batch(split.sequences, pad_id=padding_id(s.corpus))
        tree = export_classifier(
            s.model,
            guide,
            tokens.to(device),
            lengths,
            split.labels.to(device),
            num_samples=ev.export_samples,
        )
    else:
        stream = s.corpus.split(ev.split)
        if ev.max_tokens is not None:
            stream = stream[: ev.max_tokens]
        tree = export_language_model(
            s.model,
            guide,
            stream.to(device),
            num_samples=ev.export_samples,
            batch_size=s.config.trainer.eval_batch_size,
            bptt=s.config.trainer.bptt,
            history=history,
        )
    tmp = temporary_path(path)
    try:
        tree.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _training_summary(history: dict) -> dict:
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
    return out


def _describe(s: Setup) -> dict:
    corpus = s.corpus
    params = {*s.model.parameters()}
    if isinstance(s.guide, torch.nn.Module):
        params |= {*s.guide.parameters()}
    return {
        "data": {
            "name": getattr(corpus, "name", s.config.data.source),
            "vocab_size": len(corpus.vocab),
            "sizes": corpus.sizes(),
        },
        "model": {
            "class": type(s.model).__name__,
            "weight_sites": len(weight_sites(s.model)),
            "weights": sum(v.numel() for v in weight_sites(s.model).values()),
            "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        },
    }


def _evaluate(s: Setup, history: dict, run: RunDir, log: Log, export: bool) -> dict:
    began = time.perf_counter()
    if s.config.task == "classify":
        results = evaluate_classifier(s, run, log)
    else:
        results = evaluate_language_model(s, history, run, log)
    elbo = plot_elbo_trace(history["elbo"], run / "elbo.png", kl=history["kl"], nll=history["nll"])
    results["plots"].append(elbo.name)
    evaluate_seconds = time.perf_counter() - began
    files = sorted(results.pop("plots"))
    export_error = None
    if export and s.config.evaluation.export:
        try:
            written = export_posterior(s, history, free_name(run.posterior), log)
            if written is not None:
                files.append(written.name)
        except (ValueError, RuntimeError, OSError) as error:  # keep the evaluation regardless
            export_error = " ".join(str(error).split())
            log(f"warning: posterior.nc not written: {export_error}")
    metrics = {
        "bayesrnn": __version__,
        "task": s.config.task,
        "preset": s.config.preset,
        **_describe(s),
        "evaluation": config_to_dict(s.config)["evaluation"],
        "training": _training_summary(history),
        **results,
        "files": files,
        **({"export_error": export_error} if export_error else {}),
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
    return tuple(dict.fromkeys(splits))


def _saved_data(run: RunDir, s_config: RunConfig, log: Log) -> RunData | None:
    saved = read_run_data(run)
    if saved is None and run.checkpoint.is_file():
        log(
            f"note: {run.root} has no vocab.json (written by an older bayesrnn); the vocabulary "
            "is rebuilt from the data"
        )
    return saved


def _prepare(config: RunConfig, run: RunDir, needed: tuple[str, ...], log: Log):
    """Load the data (with the run's vocabulary once it has one) and build the model, checking
    the data against the run's fingerprint: all before anything is written."""
    saved = _saved_data(run, config, log) if run.checkpoint.is_file() else None
    s = setup(config, log, None if saved is None else saved.vocabulary)
    check_fits(config, s.corpus, needed)
    if saved is not None:
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
        return read_json(run.metrics)
    s, saved = _prepare(config, run, _needed_splits(config, train=True, evaluate=evaluate), log)
    with lock_run_dir(run.root, "bayesrnn run" if evaluate else "bayesrnn train"):
        check_run_dir(run.root, config)  # again, now that no other process can write here
        if run.checkpoint.is_file():
            restore(s, run)  # a corrupt or foreign checkpoint is refused before training
        if not run.config.is_file():
            write_config(config, run.config, header=f"bayesrnn {__version__} resolved config")
        if saved is None:
            write_run_data(run, run_data_of(s.corpus, config.task))
        began = time.perf_counter()
        if config.task == "classify":
            history = train_classifier(s, run.checkpoint, log)
        else:
            history = train_language_model(s, run, log)
        log(f"training finished in {time.perf_counter() - began:.1f} s")
        write_json(run.history, history)
        if not evaluate:
            plot_elbo_trace(history["elbo"], run / "elbo.png", kl=history["kl"], nll=history["nll"])
            return {"training": _training_summary(history)}
        return _evaluate(s, history, run, log, export=True)


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
    s, _ = _prepare(config, run, _needed_splits(config, train=False, evaluate=evaluate), log)
    payload = restore(s, run)
    history = payload["history"]
    history = history.to_dict() if isinstance(history, History) else dict(history)
    return s, payload, history


def _new_evaluation_dir(run: RunDir, force: bool) -> RunDir:
    """Where an evaluation writes: the run itself the first time (or with ``force``), else a
    fresh ``eval-N`` folder, so earlier results are never overwritten."""
    if force or not run.metrics.exists():
        return run
    number = 2
    while (run.root / f"eval-{number}").exists():
        number += 1
    return RunDir(run.root / f"eval-{number}")


def evaluate_run(
    out: str | os.PathLike[str],
    overrides: dict | None = None,
    *,
    log: Log = stderr_log,
    force: bool = False,
) -> dict:
    """Re-evaluate a trained run directory (``evaluation.*`` settings may be overridden).

    The first evaluation writes ``metrics.json`` and the plots into the run; later ones go to a
    new ``eval-2``, ``eval-3``, ... folder inside it, unless ``force`` overwrites the first.
    Returns the metrics, with ``"written_to"`` naming the folder.
    """
    run = RunDir(Path(out).expanduser())
    s, payload, history = _load_run(run, overrides, log, evaluate=True)
    with lock_run_dir(run.root, "bayesrnn evaluate"):
        _warn_unfinished(s.config, payload, log)
        target = _new_evaluation_dir(run, force)
        target.root.mkdir(exist_ok=True)
        try:
            metrics = _evaluate(s, history, target, log, export=False)
        except BaseException:
            if target.root != run.root:  # a new folder, half written: not a result
                shutil.rmtree(target.root, ignore_errors=True)
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
        _warn_unfinished(s.config, payload, log)
        return export_posterior(
            s, history, run.posterior if force else free_name(run.posterior), log
        )


def _warn_unfinished(config: RunConfig, payload: dict, log: Log) -> None:
    epoch, window = payload["position"]
    trainer: TrainerConfig = config.trainer
    steps = len(payload["history"]["elbo"])
    done = epoch >= trainer.epochs or (
        trainer.max_windows is not None and steps >= trainer.max_windows
    )
    if not done:
        log(f"note: the checkpoint is mid-training (epoch {epoch + 1}, step {window}); used as is")
