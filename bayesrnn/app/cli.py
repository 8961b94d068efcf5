"""The ``bayesrnn`` command: train and evaluate Bayesian RNNs from the shell.

Subcommands: ``run`` (train, evaluate, export), ``train``, ``evaluate``, ``export``, ``score``,
``presets`` and ``download``. Every fault a user can fix (settings, data, files, the OS refusing
a write) ends in one line on stderr and exit status 2, Ctrl-C in one line and status 130; only
bugs show a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

DEFAULT_OUT = "bayesrnn-run"

EPILOG = """\
quick start (no download; a few minutes on a laptop CPU):
  bayesrnn run                          train and evaluate a small Bayesian LSTM on text that
                                        ships with Python; results land in ./bayesrnn-run/
  bayesrnn run --out run2 --seed 1      the same with another seed, in another folder

the papers' configurations (Penn Treebank; a GPU is advisable):
  bayesrnn presets                      presets, their sources and published numbers
  bayesrnn download ptb --data-dir ~/data
  bayesrnn run --preset fortunato-medium --data-dir ~/data --device cuda --out bbb

your own settings:
  bayesrnn run --data notes.txt         any text file (or a folder with train/valid/test .txt)
  bayesrnn run --set model.hidden_size=512 --set trainer.epochs=8
  bayesrnn run --set guide.name=gal --set model.prior=gaussian --set guide.dropout_hidden=0.3
  bayesrnn run --config my.toml         a TOML file with any keys of a run's config.toml

sentence classification (rt-polarity):
  bayesrnn download polarity --data-dir ~/data
  bayesrnn run --preset gal-polarity --data-dir ~/data

after a run:
  bayesrnn evaluate --out bayesrnn-run --samples 100    (a new eval-N/ folder in the run)
  bayesrnn export --out bayesrnn-run    write the ArviZ file again (posterior-N.nc)
  bayesrnn score --out bayesrnn-run notes.txt           perplexity of any text under the model

A run killed part-way resumes from its last checkpoint when the same command is run again.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the default prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _wrap(text: str) -> str:
    return textwrap.fill(text, 90)


def _preset_lines(width: int = 100) -> str:
    from bayesrnn.app.presets import PRESETS

    lines = []
    for preset in PRESETS.values():
        lines.append(f"  {preset.name}: {preset.summary}")
        for label, text in (
            ("source", preset.source),
            ("published", preset.published),
            ("note", preset.notes),
        ):
            if text:
                lines += textwrap.wrap(
                    f"{label}: {text}", width, initial_indent=" " * 6, subsequent_indent=" " * 8
                )
    return "\n".join(lines)


def _add_common(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to run")
    what.add_argument(
        "--preset",
        metavar="NAME",
        help="start from a paper's configuration (list: bayesrnn presets); default: the small "
        "offline demo",
    )
    what.add_argument(
        "--config",
        metavar="FILE.toml",
        help="TOML file of settings (any keys of "
        "config.toml; a 'preset' key there is applied first)",
    )
    what.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. trainer.lr=0.5, model.deterministic=[], "
        "trainer.clip_norm=none (repeatable; wins over --preset and --config)",
    )
    what.add_argument(
        "--data",
        metavar="SOURCE",
        help="embedded (default, no download), ptb, ptb-char, polarity, or a path to a text "
        "file or a folder with train/valid/test files",
    )
    what.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder holding ptb/, ptb_char/ or rt-polarity/ (needed for those data sets)",
    )
    what.add_argument(
        "--task",
        choices=("lm", "classify"),
        help="lm: next-token language model (default); classify: sentence polarity",
    )
    how = parser.add_argument_group("how to run")
    how.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"output directory (default: {DEFAULT_OUT}); rerun to resume",
    )
    how.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    how.add_argument("--seed", type=int, help="random seed (default 0)")
    how.add_argument("--epochs", type=int, help="number of epochs (trainer.epochs)")
    how.add_argument(
        "--samples",
        type=int,
        metavar="S",
        help="Monte Carlo samples for evaluation (evaluation.mc_samples, default 10)",
    )
    how.add_argument(
        "--dynamic-eval",
        type=float,
        metavar="LR",
        help="also evaluate dynamically: score each window, then one SGD step of the posterior "
        "mean on it (evaluation.dynamic_lr; Fortunato et al. use 0.1)",
    )
    how.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    how.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as TOML and exit without running",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bayesrnn",
        description=_wrap(
            "Bayesian recurrent neural networks in Pyro: train language models and sentence "
            "classifiers with variational dropout (Gal), Bayes by Backprop (Fortunato) or "
            "deterministic baselines (Zaremba, zoneout), then measure perplexity, calibration "
            "and uncertainty. Start with `bayesrnn run` (no arguments, no download)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from bayesrnn import __version__

    parser.add_argument("--version", action="version", version=f"bayesrnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    presets_text = "presets:\n" + _preset_lines()

    run = commands.add_parser(
        "run",
        help="train, evaluate and export in one go (no arguments: the offline demo)",
        description=_wrap(
            "Train, then evaluate (perplexity with the posterior mean and with S Monte "
            "Carlo samples, ECE/MCE/Brier/NLL, predictive entropy and mutual information, the "
            "reversed-text entropy gap, SNR pruning for Gaussian posteriors) and export. Writes "
            "metrics.json, PNG plots, posterior.nc, checkpoint.pt and config.toml to --out."
        ),
        epilog=EPILOG + "\n" + presets_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(run)
    run.set_defaults(handler=_cmd_run, evaluate=True)

    train = commands.add_parser(
        "train",
        help="train only (checkpoint.pt, history.json, elbo.png, config.toml)",
        description="Train and stop: evaluate later with `bayesrnn evaluate --out DIR`.",
        epilog=presets_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(train)
    train.set_defaults(handler=_cmd_run, evaluate=False)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a trained run directory (metrics.json and plots)",
        description="Rebuild the model and guide from DIR/config.toml, DIR/vocab.json and "
        "DIR/checkpoint.pt and evaluate them; only evaluation.* settings may change. A run that "
        "has metrics.json gets the new results in DIR/eval-2/, eval-3/, ... (--force: in place).",
        epilog="example:\n  bayesrnn evaluate --out bayesrnn-run --samples 100 "
        "--set evaluation.split=valid",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_dir_options(evaluate)
    evaluate.add_argument(
        "--force",
        action="store_true",
        help="overwrite the run's metrics.json and plots (default: write to a new eval-N/)",
    )
    evaluate.add_argument("--samples", type=int, metavar="S", help="evaluation.mc_samples")
    evaluate.add_argument(
        "--dynamic-eval",
        type=float,
        metavar="LR",
        help="also evaluate dynamically with this learning rate (evaluation.dynamic_lr)",
    )
    evaluate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="evaluation.KEY=VALUE",
        help="override an evaluation setting",
    )
    evaluate.set_defaults(handler=_cmd_evaluate)

    export = commands.add_parser(
        "export",
        help="write the ArviZ netCDF file (posterior.nc) of a trained run",
        description="Draw posterior samples of a trained run's weights and predictions into an "
        "ArviZ DataTree and write DIR/posterior.nc (open it with "
        "xarray.open_datatree(path, engine='h5netcdf')).",
        epilog="example:\n  bayesrnn export --out bayesrnn-run --samples 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_dir_options(export)
    export.add_argument(
        "--force",
        action="store_true",
        help="overwrite posterior.nc (default: write posterior-2.nc, ... when it exists)",
    )
    export.add_argument("--samples", type=int, metavar="S", help="evaluation.export_samples")
    export.set_defaults(handler=_cmd_export)

    score = commands.add_parser(
        "score",
        help="perplexity and predictive entropy of a text file under a trained language model",
        description="Read FILE with the run's tokenizer and vocabulary (one <eos> per non-blank "
        "line) and print its perplexity and mean predictive entropy, with the posterior mean "
        "(default) or S posterior draws. Writes nothing.",
        epilog="example:\n  bayesrnn score --out bayesrnn-run notes.txt --samples 10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("file", metavar="FILE", help="a UTF-8 text file")
    score.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help="the run directory")
    score.add_argument(
        "--samples", type=int, default=0, metavar="S", help="posterior draws (0: posterior mean)"
    )
    score.add_argument("--device", help="cpu, cuda, ... (default: the run's, else cpu)")
    score.add_argument("--json", action="store_true", help="print the numbers as JSON")
    score.set_defaults(handler=_cmd_score)

    presets = commands.add_parser(
        "presets",
        help="list the presets with their sources and published numbers",
        description="Without NAME: every preset with its source and published numbers. With "
        "NAME: also its full resolved config (usable as --config after editing).",
    )
    presets.add_argument("name", nargs="?", metavar="NAME")
    presets.set_defaults(handler=_cmd_presets)

    download = commands.add_parser(
        "download",
        help="fetch Penn Treebank or the polarity data (needs a network)",
        description="Download a data set into --data-dir, atomically, checking pinned sha256 "
        "sums. Files already present and correct are kept.",
        epilog="example:\n  bayesrnn download ptb --data-dir ~/data\n"
        "  bayesrnn run --preset zaremba-small --data-dir ~/data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    download.add_argument("dataset", choices=("ptb", "ptb-char", "polarity"))
    download.add_argument("--data-dir", required=True, metavar="DIR")
    download.set_defaults(handler=_cmd_download)
    return parser


def _add_run_dir_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"the run directory (default: {DEFAULT_OUT})",
    )
    parser.add_argument("--device", help="cpu, cuda, ... (default: the run's)")
    parser.add_argument("--quiet", action="store_true", help="no log lines")


# --- handlers -----------------------------------------------------------------------------------


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
    metrics = run_job(config, args.out, evaluate=args.evaluate, log=_log(args))
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
    from bayesrnn.app.pipeline import evaluate_run

    metrics = evaluate_run(
        args.out, _run_dir_overrides(args, "mc_samples"), log=_log(args), force=args.force
    )
    print(summarise(metrics, metrics.get("written_to", args.out)))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from bayesrnn.app.pipeline import export_run

    path = export_run(
        args.out, _run_dir_overrides(args, "export_samples"), log=_log(args), force=args.force
    )
    print(f"wrote {path}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from bayesrnn.app.config import ConfigError
    from bayesrnn.app.trained_run import load_run

    if args.samples < 0:
        raise ConfigError(f"--samples must be >= 0, got {args.samples}")
    path = Path(args.file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
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
            f"{path}: perplexity {_fmt(score.perplexity)} over {score.tokens} predicted tokens "
            f"({how}); mean predictive entropy {_fmt(result['mean_entropy'])} nats"
        )
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from bayesrnn.app.config import ConfigError
    from bayesrnn.app.config_files import dumps_toml, resolve_config
    from bayesrnn.app.presets import PRESETS

    if args.name is None:
        print("presets (bayesrnn run --preset NAME; PTB presets need --data-dir):\n")
        print(_preset_lines())
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


def _cmd_download(args: argparse.Namespace) -> int:
    from bayesrnn.data import download_polarity, download_ptb

    if args.dataset == "polarity":
        folder = download_polarity(args.data_dir)
    else:
        folder = download_ptb(args.data_dir, level="word" if args.dataset == "ptb" else "char")
    print(f"{args.dataset} is in {folder}")
    return 0


# --- output -------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summarise(metrics: dict[str, Any], out: str) -> str:
    """A few human-readable lines of the results; the full set is in metrics.json."""
    lines = [f"results in {out}/"]
    training = metrics.get("training", {})
    if training.get("valid_perplexity"):
        lines.append(
            f"  valid perplexity by epoch: {[round(v, 2) for v in training['valid_perplexity']]}"
        )
    for split in ("test", "valid"):
        result = metrics.get(split)
        if not isinstance(result, dict):
            continue
        if "perplexity_mean" in result:
            mc = result["mc"]
            lines.append(
                f"  {split} perplexity: {_fmt(result['perplexity_mean'])} (posterior mean), "
                f"{_fmt(result['perplexity_mc'])} (MC, {result['mc_samples']} samples)"
            )
            if "perplexity_dynamic" in result:
                lines.append(
                    f"  dynamic evaluation (lr {result['dynamic_lr']}): perplexity "
                    f"{_fmt(result['perplexity_dynamic'])} (posterior mean, adapted per window)"
                )
            if "nll_sharpened_bound" in result:
                lines.append(
                    f"  sharpened bound: perplexity <= {_fmt(result['perplexity_sharpened_bound'])}"
                    f" (NLL <= {_fmt(result['nll_sharpened_bound'])} nats/token)"
                )
        else:
            mc = result["mc"]
            lines.append(
                f"  {split} accuracy: {_fmt(result['accuracy_mean'])} (posterior mean), "
                f"{_fmt(result['accuracy_mc'])} (MC, {result['mc_samples']} samples)"
            )
        lines.append(
            f"  calibration (MC): ECE {_fmt(mc['ece'])}, MCE {_fmt(mc['mce'])}, "
            f"Brier {_fmt(mc['brier'])}, NLL {_fmt(mc['nll'])}"
        )
        if "mutual_information" in mc:
            lines.append(
                f"  entropy (MC): predictive {_fmt(mc['predictive_entropy'])}, mutual "
                f"information {_fmt(mc['mutual_information'])} nats"
            )
        rev = result.get("reversed")
        if rev:
            lines.append(
                f"  reversed text: entropy gap {_fmt(rev['entropy_gap_mean'])} (mean), "
                f"{_fmt(rev['entropy_gap_mc'])} (MC) nats/word; "
                f"AUROC {_fmt(rev['auroc_entropy'])}"
            )
    if "files" in metrics:
        lines.append(f"  files: {', '.join(metrics['files'])}, metrics.json")
    return "\n".join(lines)


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        where = f"{error.filename}" + (f" -> {error.filename2}" if error.filename2 else "")
        return f"{where}: {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


def _user_errors() -> tuple[type[BaseException], ...]:
    """Faults a user can fix: the package's own errors, and the OS refusing a file."""
    from bayesrnn.app.config import ConfigError
    from bayesrnn.app.pipeline import JobError
    from bayesrnn.data import ChecksumError, DataError, DataNotFoundError, DownloadError
    from bayesrnn.inference import NonFiniteLossError
    from bayesrnn.inference.checkpoint import CheckpointError

    return (
        ConfigError,
        JobError,
        DataError,
        DataNotFoundError,
        ChecksumError,
        DownloadError,
        CheckpointError,
        NonFiniteLossError,
        OSError,
    )


# What each command imports: torch, pyro, xarray, seaborn, scipy. Ctrl-C inside an import can
# leave a library half-initialised (its own try/except then fails with a NameError far away).
_HEAVY_IMPORTS = {
    "run": ("bayesrnn.app.pipeline", "bayesrnn.evaluation.arviz_export"),
    "train": ("bayesrnn.app.pipeline",),
    "evaluate": ("bayesrnn.app.pipeline",),
    "export": ("bayesrnn.app.pipeline", "bayesrnn.evaluation.arviz_export"),
    "score": ("bayesrnn.app.trained_run",),
}


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C back during the block (imports), and raise it once the block is done."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: pending.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def _exit_now(status: int) -> NoReturn:
    """Exit with ``status`` at once, skipping interpreter shutdown (files are closed by now).

    Returning 130 normally, 2 of 59 interrupts (SIGINT 0.1 s to 5.9 s into a run) still ended
    with status −2, as if killed by SIGINT, after bayesrnn had caught the interrupt; with this
    exit, none did. The cause is not pinned down: CPython's flag for an unhandled
    KeyboardInterrupt, set inside an extension, is the suspect.
    """
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayesrnn`` console script; returns the exit status."""
    import importlib

    command = "bayesrnn"
    try:
        with _interrupts_held():
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
            return args.handler(args)
        except _user_errors() as error:
            print(f"{command}: error: {_one_line(error)}", file=sys.stderr)
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
            _exit_now(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
