"""The ``bayesrnn`` command line: subcommands, options, help texts and examples."""

from __future__ import annotations

import argparse
import textwrap
from typing import NoReturn

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

forecasting a real series (needs the timeseries extra: statsmodels):
  bayesrnn run --task forecast --data sunspots --out sun
  bayesrnn run --task forecast --data sales.csv --set data.target=units --out sales

sentence classification (rt-polarity):
  bayesrnn download polarity --data-dir ~/data
  bayesrnn run --preset gal-polarity --data-dir ~/data

after a run:
  bayesrnn evaluate --out bayesrnn-run --samples 100    (a new eval-N/ folder in the run)
  bayesrnn export --out bayesrnn-run    write the ArviZ file again (posterior-N.nc)
  bayesrnn score --out bayesrnn-run notes.txt           perplexity of any text under the model
  bayesrnn forecast --out sun --horizon 10              a forecasting run, 10 steps ahead
  bayesrnn compare run1 run2            rank runs by held-out elpd (from their posterior.nc)

A run killed part-way resumes from its last checkpoint when the same command is run again.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the default prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _wrap(text: str) -> str:
    return textwrap.fill(text, 90)


def preset_lines(width: int = 100) -> str:
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
        "file or a folder with train/valid/test files; forecasting: sunspots (default), co2, "
        "elnino, or a CSV file with --set data.target=COLUMN",
    )
    what.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder holding ptb/, ptb_char/ or rt-polarity/ (needed for those data sets)",
    )
    what.add_argument(
        "--task",
        choices=("lm", "classify", "forecast"),
        help="lm: next-token language model (default); classify: sentence polarity (starts from "
        "the classify preset); forecast: one-step-ahead forecasts of a real series (starts from "
        "the forecast preset)",
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
        "--early-stopping",
        type=int,
        metavar="N",
        help="stop after N epochs without validation improvement and keep the best epoch's "
        "parameters (trainer.early_stopping_patience; default: off)",
    )
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
    from bayesrnn.version import __version__

    parser.add_argument("--version", action="version", version=f"bayesrnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    presets_text = "presets:\n" + preset_lines()

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
    run.set_defaults(handler_name="run", evaluate=True)

    train = commands.add_parser(
        "train",
        help="train only (checkpoint.pt, history.json, elbo.png, config.toml)",
        description="Train and stop: evaluate later with `bayesrnn evaluate --out DIR`.",
        epilog=presets_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(train)
    train.set_defaults(handler_name="run", evaluate=False)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a trained run directory (metrics.json and plots)",
        description="Rebuild the model and guide from DIR/config.toml, DIR/vocab.json and "
        "DIR/checkpoint.pt and evaluate them; only evaluation.* settings may change. A run that "
        "has metrics.json gets the new results in DIR/eval-2/, eval-3/, ... (--force: in place).",
        epilog="examples:\n  bayesrnn evaluate --out bayesrnn-run --samples 100 "
        "--set evaluation.split=valid\n  bayesrnn evaluate --out bayesrnn-run --ood other.txt",
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
        "--ood",
        metavar="FILE",
        help="a UTF-8 text file, one sentence per line, to score as out-of-distribution against "
        "the evaluation split: per-sentence predictive entropy and mutual information, AUROC, "
        "AUPR, FPR95 and each side's <unk> rate (metrics.json 'ood_file', ood_entropy.png); "
        "the reversed split is still reported as before",
    )
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
    evaluate.set_defaults(handler_name="evaluate")

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
    export.set_defaults(handler_name="export")

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
    score.set_defaults(handler_name="score")

    forecast = commands.add_parser(
        "forecast",
        help="multi-step forecasts of a trained forecasting run: mean and quantiles per step",
        description=_wrap(
            "Continue the run's whole series H steps ahead with S ancestral sample paths (each "
            "path draws its weights once and feeds its own samples back) and print, per step in "
            "the data's units, the mean and the 5%, 25%, 50%, 75% and 95% quantiles; --output "
            "writes them as CSV instead."
        ),
        epilog="example:\n  bayesrnn forecast --out sun --horizon 10 --samples 2000 "
        "--output sun-10y.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    forecast.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help="the run directory")
    forecast.add_argument(
        "--horizon", type=int, required=True, metavar="H", help="steps to forecast"
    )
    forecast.add_argument(
        "--samples", type=int, default=1000, metavar="S", help="sample paths (default 1000)"
    )
    forecast.add_argument(
        "--covariates",
        metavar="FILE",
        help="a CSV with the run's covariate columns (by name), one row per forecast step",
    )
    forecast.add_argument("--output", metavar="FILE", help="write the table as CSV")
    forecast.add_argument("--device", help="cpu, cuda, ... (default: the run's, else cpu)")
    forecast.set_defaults(handler_name="forecast")

    compare = commands.add_parser(
        "compare",
        help="rank runs by their held-out elpd (arviz_stats.compare on their posterior.nc)",
        description="Read each RUN's posterior.nc (a run directory, or a .nc file), check that "
        "all were scored on the same held-out tokens, and print arviz_stats.compare's table "
        "per token: rank, elpd and its se, the difference to the best and its se, the stacking "
        "weight. The elpd is the held-out log predictive density log mean_s p(y|θ_s) (--loo: "
        "PSIS-LOO on the same draws, with Pareto k̂ notes). Any guides, Gal's included. Writes "
        "nothing.",
        epilog="example:\n  bayesrnn export --out bbb\n  bayesrnn export --out gal\n"
        "  bayesrnn compare bbb gal",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run directories (two or more)")
    compare.add_argument("--json", action="store_true", help="print the table as JSON")
    compare.add_argument(
        "--loo", action="store_true", help="rank by PSIS-LOO instead of the held-out density"
    )
    compare.set_defaults(handler_name="compare")

    presets = commands.add_parser(
        "presets",
        help="list the presets with their sources and published numbers",
        description="Without NAME: every preset with its source and published numbers. With "
        "NAME: also its full resolved config (usable as --config after editing).",
    )
    presets.add_argument("name", nargs="?", metavar="NAME")
    presets.set_defaults(handler_name="presets")

    limits = commands.add_parser(
        "limits",
        help="the range of every numeric setting, and the limits on input files",
        description="Every numeric setting (--set section.key=value) with its allowed range; "
        "the most bytes an input file may hold; the memory rule a model must pass.",
    )
    limits.set_defaults(handler_name="limits")

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
    download.set_defaults(handler_name="download")
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
