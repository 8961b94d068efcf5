"""The ``bayesrnn`` command: train and evaluate Bayesian RNNs from the shell.

Subcommands: ``run`` (train, evaluate, export), ``train``, ``evaluate``, ``export``, ``score``,
``forecast``, ``compare``, ``presets`` and ``download``. Every fault a user can fix (settings,
data, files, the OS refusing a write) ends in one line on stderr and exit status 2, Ctrl-C in
one line and status 130; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from bayesrnn.app.cli_faults import (
    exit_now,
    failed_netcdf_write,
    ignore_interrupts,
    interrupts_held,
    one_line,
    rank_speaks,
    user_errors,
    warnings_held,
)
from bayesrnn.app.cli_parser import build_parser, preset_lines
from bayesrnn.app.summary import fmt, summarise


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            flags.setdefault(section, {})[key] = value

    if getattr(args, "task", None) is not None:
        flags["task"] = args.task
    put("data", "source", getattr(args, "data", None))
    put("data", "dir", getattr(args, "data_dir", None))
    put("trainer", "seed", getattr(args, "seed", None))
    put("trainer", "device", args.device)
    put("trainer", "epochs", getattr(args, "epochs", None))
    put("trainer", "early_stopping_patience", getattr(args, "early_stopping", None))
    put("evaluation", "mc_samples", getattr(args, "samples", None))
    put("evaluation", "dynamic_lr", getattr(args, "dynamic_eval", None))
    if args.quiet:
        put("trainer", "progress", False)
    return flags


def _log(args: argparse.Namespace):
    from bayesrnn.app.pipeline import quiet_log, stderr_log

    return quiet_log if args.quiet else stderr_log


def _cmd_run(args: argparse.Namespace) -> int:
    from bayesrnn.app.config_files import dumps_toml, resolve_config
    from bayesrnn.app.pipeline import run_job

    config = resolve_config(args.preset, args.config, args.overrides, _flags(args))
    if args.print_config:
        print(dumps_toml(config), end="")
        return 0
    from bayesrnn.app.launch import join_process_group, leave_process_group
    from bayesrnn.inference.runtime.distributed import PeerLostError, current_ranks

    config = join_process_group(config)  # under torchrun: one rank of several
    try:
        metrics = run_job(config, args.out, evaluate=args.evaluate, log=_log(args))
    except PeerLostError:
        raise  # the group is broken: tearing it down can abort the process (SIGABRT)
    except BaseException:
        leave_process_group()
        raise
    leave_process_group(meet=True)
    if current_ranks().is_main:
        print(summarise(metrics, args.out))
    return 0


def _run_dir_overrides(args: argparse.Namespace, samples_key: str) -> dict[str, Any]:
    from bayesrnn.app.config_files import parse_override

    values: dict[str, Any] = {}
    for text in getattr(args, "overrides", []):
        for section, keys in parse_override(text).items():
            values.setdefault(section, {}).update(keys)
    if args.samples is not None:
        values.setdefault("evaluation", {})[samples_key] = args.samples
    if getattr(args, "dynamic_eval", None) is not None:
        values.setdefault("evaluation", {})["dynamic_lr"] = args.dynamic_eval
    if args.device is not None:
        values.setdefault("trainer", {})["device"] = args.device
    if args.quiet:
        values.setdefault("trainer", {})["progress"] = False
    return values


def _cmd_evaluate(args: argparse.Namespace) -> int:
    _single_process(args.handler_name)
    from bayesrnn.app.pipeline import evaluate_run

    metrics = evaluate_run(
        args.out,
        _run_dir_overrides(args, "mc_samples"),
        log=_log(args),
        force=args.force,
        ood=args.ood,
    )
    print(summarise(metrics, metrics.get("written_to", args.out)))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    _single_process(args.handler_name)
    from bayesrnn.app.pipeline import export_run

    path = export_run(
        args.out, _run_dir_overrides(args, "export_samples"), log=_log(args), force=args.force
    )
    print(f"wrote {path}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    _single_process(args.handler_name)
    import json
    from pathlib import Path

    from bayesrnn.app.config import ConfigError
    from bayesrnn.app.trained_run import load_run
    from bayesrnn.data.input_files import read_input_bytes

    if args.samples < 0:
        raise ConfigError(f"--samples must be >= 0, got {args.samples}")
    path = Path(args.file).expanduser()
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; score takes a text file")
    try:
        text = read_input_bytes(path, "file").decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte offset {error.start})") from None
    run = load_run(args.out, device=args.device)
    if len(text.split()) == 0:
        raise ConfigError(f"{path} holds no text to score")
    score = run.score_text(text, num_samples=args.samples)
    result = {"file": str(path), **score.to_dict()}
    if args.json:
        print(json.dumps(result))
    else:
        how = "posterior mean" if not args.samples else f"MC, {args.samples} samples"
        print(
            f"{path}: perplexity {fmt(score.perplexity)} over {score.tokens} predicted tokens "
            f"({how}); mean predictive entropy {fmt(result['mean_entropy'])} nats"
        )
    return 0


def _read_covariates(path: str, names: tuple[str, ...]):
    """The covariate columns ``names`` of a CSV file, in file order, as float64 (checked like
    the training data: a regular file, no NUL byte, every value a number a float64 holds)."""
    from pathlib import Path

    import pandas

    from bayesrnn.app.config import ConfigError
    from bayesrnn.data.checksums import DataError
    from bayesrnn.data.series import series_matrix
    from bayesrnn.data.series_csv import csv_values, read_csv_table

    file = Path(path).expanduser()
    if file.is_dir():
        raise ConfigError(f"--covariates {file} is a folder; name a CSV file")
    frame = read_csv_table(file, "--covariates file")
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise ConfigError(f"{path} has no column {missing}; the run's covariates are {list(names)}")
    try:
        values = series_matrix(csv_values(frame, list(names), file.name), names)
    except DataError as error:
        raise DataError(f"{file.name}: {error}") from None
    return pandas.DataFrame(values, columns=list(names))


def _cmd_forecast(args: argparse.Namespace) -> int:
    _single_process(args.handler_name)
    from bayesrnn.app.config import ConfigError
    from bayesrnn.app.run_dir import JobError
    from bayesrnn.app.trained_run import load_run

    if args.horizon < 1:
        raise ConfigError(f"--horizon must be >= 1, got {args.horizon}")
    if args.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {args.samples}")
    run = load_run(args.out, device=args.device)
    if run.config.task != "forecast":
        raise JobError(f"{args.out} is a {run.config.task} run; forecast needs --task forecast")
    covariates = None
    if args.covariates is not None:
        if not run.series.covariates:
            raise ConfigError(f"{args.out} reads no covariates; leave --covariates out")
        covariates = _read_covariates(args.covariates, run.series.covariates)
    elif run.series.covariates:
        raise ConfigError(
            f"{args.out} reads covariates {list(run.series.covariates)}: give their values for "
            f"the {args.horizon} steps with --covariates FILE.csv"
        )
    try:
        result = run.forecast(horizon=args.horizon, num_samples=args.samples, covariates=covariates)
    except ValueError as error:
        raise ConfigError(one_line(error)) from None
    if args.output is not None:
        path = result.to_csv(args.output)
        print(f"wrote {path} ({args.horizon} steps, {args.samples} sample paths)")
    else:
        print(result.to_string())
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from bayesrnn.app.compare import compare_runs

    comparison = compare_runs(args.runs, estimate="loo" if args.loo else "holdout")
    print(json.dumps(comparison.to_dict()) if args.json else comparison.table())
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from bayesrnn.app.config import ConfigError
    from bayesrnn.app.config_files import dumps_toml, resolve_config
    from bayesrnn.app.presets import PRESETS

    if args.name is None:
        print("presets (bayesrnn run --preset NAME; PTB presets need --data-dir):\n")
        print(preset_lines())
        return 0
    if args.name not in PRESETS:
        raise ConfigError(f"unknown preset {args.name!r}; known presets: {', '.join(PRESETS)}")
    preset = PRESETS[args.name]
    print(f"# {preset.name}: {preset.summary}")
    for label, text in (
        ("source", preset.source),
        ("published", preset.published),
        ("note", preset.notes),
    ):
        if text:
            for line in textwrap.wrap(f"{label}: {text}", 98):
                print(f"# {line}")
    print(dumps_toml(resolve_config(args.name)), end="")
    return 0


def _cmd_limits(args: argparse.Namespace) -> int:
    from bayesrnn.app.config_limits import describe_limits
    from bayesrnn.data.input_files import MAX_INPUT_BYTES_ENV, input_limit

    print("settings (section.key: allowed range; [ ] closed, ( ) open):")
    print(textwrap.indent(describe_limits(), "  "))
    print(
        f"input files: regular files of at most {input_limit():,} bytes "
        f"(set {MAX_INPUT_BYTES_ENV}, e.g. 8G, to change it)"
    )
    print(
        "memory: a model is refused when 4 bytes x weights x (4 x guide values per weight + "
        "trainer.num_particles) to train, or 4 bytes x weights x (guide values per weight + 1) "
        "to evaluate, exceeds the memory available"
    )
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from bayesrnn.data import download_polarity, download_ptb

    if args.dataset == "polarity":
        folder = download_polarity(args.data_dir)
    else:
        folder = download_ptb(args.data_dir, level="word" if args.dataset == "ptb" else "char")
    print(f"{args.dataset} is in {folder}")
    return 0


def _single_process(command: str) -> None:
    import os

    from bayesrnn.app.config import ConfigError

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"bayesrnn {command} runs in one process; start it without torchrun (only run and "
            "train are shared out over processes)"
        )


HANDLERS = {
    "run": _cmd_run,
    "evaluate": _cmd_evaluate,
    "export": _cmd_export,
    "score": _cmd_score,
    "forecast": _cmd_forecast,
    "compare": _cmd_compare,
    "presets": _cmd_presets,
    "limits": _cmd_limits,
    "download": _cmd_download,
}


# What each command imports: torch, pyro, xarray, seaborn, scipy. Ctrl-C inside an import can
# leave a library half-initialised (its own try/except then fails with a NameError far away).
_HEAVY_IMPORTS = {
    "run": ("bayesrnn.app.pipeline", "bayesrnn.evaluation.arviz_export"),
    "train": ("bayesrnn.app.pipeline",),
    "evaluate": ("bayesrnn.app.pipeline",),
    "export": ("bayesrnn.app.pipeline", "bayesrnn.evaluation.arviz_export"),
    "score": ("bayesrnn.app.trained_run",),
    "forecast": ("bayesrnn.app.trained_run",),
    "compare": ("bayesrnn.app.compare", "arviz_stats", "xarray"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayesrnn`` console script; returns the exit status.

    As the program itself (``argv`` None), a Ctrl-C that comes once the command is done is
    ignored: the work is finished and written, and the interpreter's exit would otherwise
    print a ``KeyboardInterrupt`` traceback over a successful run.
    """
    try:
        status = _command(argv)
    except KeyboardInterrupt:  # between the command's own handler and here
        status = 130
    if argv is None:
        ignore_interrupts()
        if failed_netcdf_write():
            exit_now(status)  # the half-closed file's teardown would print a traceback
    return status


def _command(argv: Sequence[str] | None) -> int:
    import importlib

    command = "bayesrnn"
    try:
        with interrupts_held():
            parser = build_parser()
            try:
                args = parser.parse_args(argv)
            except SystemExit as done:  # --help, --version and usage errors (already printed)
                return done.code if isinstance(done.code, int) else 2
            if args.command is None:
                parser.print_help()
                return 0
            command = f"bayesrnn {args.command}"
            for name in _HEAVY_IMPORTS.get(args.command, ()):
                importlib.import_module(name)
        try:
            from bayesrnn.app.logs import cli_logging

            with cli_logging(quiet=getattr(args, "quiet", False)), warnings_held():
                return HANDLERS[args.handler_name](args)
        except user_errors() as error:
            from bayesrnn.inference.runtime.distributed import PeerLostError

            if rank_speaks(error):
                print(f"{command}: error: {one_line(error)}", file=sys.stderr)

            if argv is None and isinstance(error, PeerLostError):
                exit_now(2)  # skip the broken process group's destructors (they may abort)
            return 2
    except KeyboardInterrupt:
        resumable = command in ("bayesrnn run", "bayesrnn train")
        print(
            f"{command}: interrupted"
            + (
                "; run the same command again to resume from the last checkpoint"
                if resumable
                else ""
            ),
            file=sys.stderr,
        )
        if argv is None:  # the program itself, not a caller
            exit_now(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
