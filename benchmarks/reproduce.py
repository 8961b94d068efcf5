"""Reproduce the papers' Penn Treebank comparisons and write a results table.

Studies:

* ``cpu-small``: Zaremba's small shape (2 × 200 LSTM, BPTT 20, batch 20, init ±0.1, SGD lr 1
  halved each epoch after 4 (``--decay-after`` moves that for every method), clipping 5)
  trained on the first 10% of the PTB training stream, evaluated on the full validation and
  test streams, for each method: no regularisation,
  Zaremba dropout, Gal variational dropout (sequence masks, MC), Bayes by Backprop (the paper's
  per-weight mixture, and brnn_ptb.py's row-wise one), Bayes by Backprop with posterior
  sharpening, zoneout. About an hour on 2 CPU cores.
* ``zaremba-small-full``: Zaremba's small non-regularised model on the full training stream for
  13 epochs (published 120.7 / 114.5 validation / test perplexity).

Each method runs in its own process, so the peak resident memory it reports is its own. Writes
``results.json`` and ``results.md`` (a markdown table) in ``--out``. MC columns average S draws;
a draw's weights (mean-field, sharpened) are kept for the whole stream, while dropout masks drawn
by the model itself (Zaremba's dropout, zoneout, Gal's sequence masks) are redrawn every window.

The method processes get glibc's ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` raised
(unless already set): a window's (T, B, V) temporaries are tens of MB, and glibc otherwise maps
and unmaps each one, so every pass over them pays for page faults (measured 10-15% of a training
step and about a quarter of an MC evaluation on the 2-core machine).

Run: ``.venv/bin/python benchmarks/reproduce.py cpu-small --data-dir ../shared/data``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import multiprocessing
import os
import platform
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bayesrnn.app.config_files import resolve_config
from bayesrnn.app.presets import gal_prior_scale
from bayesrnn.data import load_ptb
from bayesrnn.evaluation.stream_report import language_model_report
from bayesrnn.inference import TBPTTTrainer, TrainerConfig, evaluate_stream, make_guide
from bayesrnn.models import (
    GaussianPrior,
    LanguageModel,
    LearnedGaussianPrior,
    ScaleMixturePrior,
    brnn_ptb_prior,
)

PTB_TRAIN_TOKENS = 929_589

# Large allocations from the heap, kept there after free (see the module docstring).
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**34)}


@dataclass(frozen=True)
class Method:
    """One row of a study: how to build the model and the guide, and where it comes from."""

    name: str
    source: str
    prior: str | None = None  # None (plain weights), "gal" or "mixture"
    guide: str = "none"
    guide_options: dict = field(default_factory=dict)
    regularisers: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)  # TrainerConfig fields that differ from SMALL's
    # the mean-field ρ's learning rate as a multiple of the weights' (None: the same rate)
    scale_lr: float | None = None


def _row_auto_warmup(epochs: int) -> Method:
    """Mean-field BBB under the row-wise prior from the default σ, its KL weight rising from 0
    to 1 over the first ``epochs`` of the study's 13 (the rest minimise the ELBO)."""
    return Method(
        f"BBB, row-wise prior, the package's initial σ, KL warm-up over {epochs} epochs",
        "Fortunato et al. 2017's official prior with init_scale='auto'; the KL weight rises "
        f"from 0 to 1 over the first {epochs} epochs (the objective of the last {13 - epochs} "
        "is the ELBO)",
        prior="mixture-row",
        guide="mean_field",
        guide_options={"init_scale": "auto"},
        trainer={"kl_warmup_epochs": epochs},
    )


# Zaremba's small configuration (network and schedule), read from the preset: one source.
SMALL = resolve_config("zaremba-small")

GAL_RATES = {"embedding": 0.1, "input": 0.4, "hidden": 0.2, "output": 0.4}

METHODS = {
    "none": Method("no regularisation", "Zaremba et al. 2014, small non-regularised"),
    "zaremba": Method(
        "Zaremba dropout 0.5",
        "Zaremba et al. 2014 §3.2 (non-recurrent dropout)",
        regularisers={"naive_dropout": 0.5},
    ),
    "gal": Method(
        "Gal variational dropout (MC)",
        "Gal & Ghahramani 2016 (sequence masks)",
        prior="gal",
        guide="gal",
        guide_options=dict(GAL_RATES, scope="sequence"),
    ),
    "bbb": Method(
        "Bayes by Backprop",
        "Fortunato et al. 2017 (scale-mixture prior)",
        prior="mixture",
        guide="mean_field",
        guide_options={"init_scale": "fortunato"},
    ),
    "bbb-row": Method(
        "Bayes by Backprop, brnn_ptb.py's row-wise prior",
        "Fortunato et al. 2017 as DeepMind's brnn_ptb.py runs it (mixture per row)",
        prior="mixture-row",
        guide="mean_field",
        guide_options={"init_scale": "fortunato"},
    ),
    "bbb-row-auto": Method(
        "BBB, brnn_ptb.py's row-wise prior, the package's initial σ",
        "Fortunato et al. 2017's official prior with init_scale='auto' (a tenth of each "
        "site's weight size)",
        prior="mixture-row",
        guide="mean_field",
        guide_options={"init_scale": "auto"},
    ),
    "bbb-row-warmup": Method(
        "BBB, brnn_ptb.py's row-wise prior, KL warm-up over 4 epochs",
        "Fortunato et al. 2017's official prior and σ; the KL weight rises from 0 to 1 over "
        "the first 4 epochs (the objective of the last 9 is the ELBO)",
        prior="mixture-row",
        guide="mean_field",
        guide_options={"init_scale": "fortunato"},
        trainer={"kl_warmup_epochs": 4},
    ),
    "bbb-row-auto-warmup": _row_auto_warmup(4),
    "bbb-row-auto-warmup8": _row_auto_warmup(8),
    "bbb-row-auto-warmup-sharpened": Method(
        "BBB + posterior sharpening, row-wise prior, the package's initial σ, KL warm-up",
        "Fortunato et al. 2017 §4, σ0 = 0.02, the official code's prior, init_scale='auto'; "
        "the KL weight rises from 0 to 1 over the first 4 epochs",
        prior="mixture-row",
        guide="sharpened",
        guide_options={"sigma0": 0.02, "init_scale": "auto"},
        trainer={"kl_warmup_epochs": 4},
    ),
    "bbb-row-auto-scale-lr": Method(
        "BBB, row-wise prior, the package's initial σ, ρ at 20 × the weights' learning rate",
        "Fortunato et al. 2017's official prior with init_scale='auto'; SGD steps ρ at B = 20 "
        "times the rate (the KL then moves log σ by about lr an epoch, not lr/B)",
        prior="mixture-row",
        guide="mean_field",
        guide_options={"init_scale": "auto"},
        scale_lr=20.0,
    ),
    "bbb-gal-prior": Method(
        "BBB under Gal's Gaussian prior, the package's initial σ",
        "mean-field q under exactly the prior, model and likelihood of the gal method: "
        "the two differ only in the approximating family",
        prior="gal",
        guide="mean_field",
        guide_options={"init_scale": "auto"},
    ),
    "bbb-row-auto-sharpened": Method(
        "BBB + posterior sharpening, row-wise prior, the package's initial σ",
        "Fortunato et al. 2017 §4, σ0 = 0.02, the official code's prior, init_scale='auto'",
        prior="mixture-row",
        guide="sharpened",
        guide_options={"sigma0": 0.02, "init_scale": "auto"},
    ),
    "bbb-row-sharpened": Method(
        "BBB + posterior sharpening, brnn_ptb.py's row-wise prior",
        "Fortunato et al. 2017 §4, σ0 = 0.02, with the official code's prior (mixture per row)",
        prior="mixture-row",
        guide="sharpened",
        guide_options={"sigma0": 0.02, "init_scale": "fortunato"},
    ),
    "bbb-sharpened": Method(
        "BBB + posterior sharpening",
        "Fortunato et al. 2017 §4, σ0 = 0.02",
        prior="mixture",
        guide="sharpened",
        guide_options={"sigma0": 0.02, "init_scale": "fortunato"},
    ),
    "bbb-eb": Method(
        "BBB, Gaussian prior scale per site by empirical Bayes",
        "the package's model.prior_scale=learned (s*² = mean of μ² + σ² per site)",
        prior="learned",
        guide="mean_field",
    ),
    "bbb-constant-lr": Method(
        "BBB, Fortunato's σ, no learning-rate decay",
        "Fortunato et al. 2017 prior and initial σ; SGD lr 1 for all epochs (is it undertrained?)",
        prior="mixture",
        guide="mean_field",
        guide_options={"init_scale": "fortunato"},
        trainer={"constant_epochs": 10_000},
    ),
    "zoneout": Method(
        "zoneout + Zaremba dropout",
        "Krueger et al. 2017 word-PTB: z_c 0.25, z_h 0.025 with dropout 0.5",
        regularisers={"zoneout_c": 0.25, "zoneout_h": 0.025, "naive_dropout": 0.5},
    ),
}

# Methods by training cost on the CPU (sharpening: two forward-backward passes per window).
START_ORDER = [
    "bbb-row-auto-warmup-sharpened",
    "bbb-row-auto-sharpened",
    "bbb-row-auto-scale-lr",
    "bbb-gal-prior",
    "bbb-row-sharpened",
    "bbb-sharpened",
    "bbb",
    "bbb-row",
    "bbb-row-auto",
    "bbb-row-warmup",
    "bbb-row-auto-warmup",
    "bbb-row-auto-warmup8",
    "bbb-eb",
    "bbb-constant-lr",
    "gal",
    "zoneout",
    "zaremba",
    "none",
]
assert sorted(START_ORDER) == sorted(METHODS)

STUDIES = {
    "cpu-small": dict(
        methods=[
            "none",
            "zaremba",
            "gal",
            "bbb",
            "bbb-row",
            "bbb-sharpened",
            "bbb-row-sharpened",
            "zoneout",
        ],
        train_fraction=0.1,
        epochs=13,
        mc_samples=10,
    ),
    "zaremba-small-full": dict(methods=["none"], train_fraction=1.0, epochs=13, mc_samples=0),
}


def build(method: Method, vocab: int, train_tokens: int):
    if method.prior is None:
        prior = None
    elif method.prior == "mixture":
        prior = ScaleMixturePrior()
    elif method.prior == "mixture-row":
        prior = brnn_ptb_prior()
    elif method.prior == "learned":
        prior = LearnedGaussianPrior()
    else:
        # Gal's per-step weight decay 1e-7 as a prior (derivation in bayesrnn.app.config and
        # bayesrnn.inference.guides.gal): C·B = train tokens / BPTT, keep probability 0.5.
        prior = GaussianPrior(gal_prior_scale(1e-7, 0.5, train_tokens / SMALL.trainer.bptt))
    deterministic = (
        ("decoder.bias",) if method.prior in ("mixture", "mixture-row", "learned") else ()
    )
    model = LanguageModel(
        vocab,
        SMALL.model.embedding_size,
        SMALL.model.hidden_size,
        SMALL.model.num_layers,
        prior=prior,
        deterministic=deterministic,
        regularisers=method.regularisers,
        init_range=SMALL.model.init_range,
    )
    return model, make_guide(method.guide, model, **method.guide_options)


def run_method(key: str, study: dict, data_dir: str, seed: int) -> dict:
    torch.manual_seed(seed)
    corpus = load_ptb(data_dir)
    train = corpus.train[: int(len(corpus.train) * study["train_fraction"])]
    method = METHODS[key]
    model, guide = build(method, corpus.vocab_size, len(train))
    config = study_config(
        method, study["epochs"], seed, study.get("decay_after"), study.get("progress", False)
    )
    valid = corpus.valid[: study.get("eval_tokens")]
    trainer = make_trainer(method, model, guide, train, valid, config)
    began = time.perf_counter()
    history = trainer.fit()
    train_seconds = time.perf_counter() - began
    result = {
        "method": method.name,
        "source": method.source,
        "train_tokens": len(train),
        "epochs": study["epochs"],
        "constant_epochs": config.constant_epochs,
        "train_seconds": train_seconds,
        "tokens_per_second": sum(history.tokens) / sum(history.epoch_seconds),
        "valid_perplexity_by_epoch": history.valid_perplexity,
        # The ELBO's two parts per epoch: training NLL per token (an underfit shows here) and
        # the epoch's KL in nats (the sum of its windows' 1/C shares).
        **_epoch_terms(history),
    }
    # A model with no random weights and no masks predicts the same with every draw: one pass.
    stochastic = method.guide != "none" or bool(method.regularisers)
    samples = study["mc_samples"] if stochastic else min(study["mc_samples"], 1)
    for split in ("valid", "test"):
        stream = getattr(corpus, split)[: study.get("eval_tokens")]
        if samples:
            report = language_model_report(
                model,
                guide,
                stream,
                num_samples=samples,
                batch_size=10,
                bptt=35,
                reversed_text=split == "test",
                sharpened=method.guide == "sharpened",
                redraw="stream",  # one network per draw: no weight sampling per window
            )
            metrics = report.metrics()
            result[f"{split}_perplexity_mean"] = metrics["perplexity_mean"]
            result[f"{split}_perplexity_mc"] = metrics["perplexity_mc"]
            result[f"{split}_ece_mean"] = metrics["posterior_mean"]["ece"]
            result[f"{split}_ece_mc"] = metrics["mc"]["ece"]
            if "perplexity_sharpened_bound" in metrics:
                result[f"{split}_perplexity_sharpened_bound"] = metrics[
                    "perplexity_sharpened_bound"
                ]
            if "reversed" in metrics:
                result["entropy_gap_mean"] = metrics["reversed"]["entropy_gap_mean"]
                result["entropy_gap_mc"] = metrics["reversed"]["entropy_gap_mc"]
        else:
            evaluation = evaluate_stream(model, guide, stream, batch_size=10, bptt=35)
            result[f"{split}_perplexity_mean"] = evaluation.perplexity
    result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def study_config(
    method: Method, epochs: int, seed: int, decay_after: int | None = None, progress: bool = False
) -> TrainerConfig:
    """SMALL's trainer settings with the method's own and the study's epochs, seed and
    schedule (``decay_after``: the epochs at full learning rate)."""
    schedule = {"constant_epochs": decay_after} if decay_after else {}
    return dataclasses.replace(
        SMALL.trainer,
        epochs=epochs,
        seed=seed,
        progress=progress,
        checkpoint_every=None,  # no checkpoint file: a study run is not resumed
        **{**method.trainer, **schedule},
    )


def make_trainer(method: Method, model, guide, train, valid, config) -> TBPTTTrainer:
    """The study's trainer for ``method``: the config's own schedule, or with ``scale_lr`` an
    SGD whose ρ group runs at that multiple of the rate (the same schedule, as a scheduler)."""
    if method.scale_lr is None:
        return TBPTTTrainer(model, guide, train, valid, config=config)
    optimizer, scheduler = scale_lr_schedule(guide, config, method.scale_lr)
    config = dataclasses.replace(config, lr_decay=1.0)  # the scheduler decays instead
    return TBPTTTrainer(
        model, guide, train, valid, config=config, optimizer=optimizer, scheduler=scheduler
    )


def scale_lr_schedule(guide, config, factor: float):
    """SGD with the guide's ρ in a parameter group at ``factor`` times the rate, and the
    config's epoch schedule (constant, then divided by ``lr_decay``) applied to both groups."""
    rhos = {id(p) for p in guide.rho.parameters()}

    def build(params):
        params = list(params)
        groups = [
            {"params": [p for p in params if id(p) not in rhos]},
            {"params": [p for p in params if id(p) in rhos], "lr": config.lr * factor},
        ]
        return torch.optim.SGD(groups, lr=config.lr, weight_decay=config.weight_decay)

    def decay(epoch: int) -> float:
        return config.learning_rate(epoch) / config.lr

    return build, functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=decay)


def _epoch_terms(history) -> dict:
    nll, kl, start = [], [], 0
    for steps in history.epoch_steps:
        window = slice(start, start + steps)
        nll.append(sum(history.nll[window]) / max(1, sum(history.tokens[window])))
        kl.append(sum(history.kl[window]))
        start += steps
    return {"train_nll_by_epoch": nll, "kl_by_epoch": kl}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one (platform.processor() is empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _child(args) -> dict:
    return run_method(*args)


def markdown(rows: list[dict], header: str, order: list[str] | None = None) -> str:
    """The results table; rows in ``order`` (method names) when given, else as they finished."""

    def fmt(value, digits=1):
        return "–" if value is None else f"{value:.{digits}f}"

    if order:
        rows = sorted(rows, key=lambda r: order.index(r["method"]) if r["method"] in order else 99)
    lines = [
        header,
        "",
        "| method | valid ppl (mean / MC) | test ppl (mean / MC) | best valid (epoch) | "
        "test ECE (MC) | entropy gap, nats (mean / MC) | train tokens/s | peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        curve = r["valid_perplexity_by_epoch"]
        best = min(range(len(curve)), key=curve.__getitem__)
        lines.append(
            f"| {r['method']} | {fmt(r['valid_perplexity_mean'])} / "
            f"{fmt(r.get('valid_perplexity_mc'))} | {fmt(r['test_perplexity_mean'])} / "
            f"{fmt(r.get('test_perplexity_mc'))} | {curve[best]:.1f} ({best + 1}) | "
            f"{fmt(r.get('test_ece_mc'), 3)} | {fmt(r.get('entropy_gap_mean'), 3)} / "
            f"{fmt(r.get('entropy_gap_mc'), 3)} | {r['tokens_per_second']:.0f} | "
            f"{r['peak_memory_mb']:.0f} |"
        )
    bounds = [r for r in rows if "test_perplexity_sharpened_bound" in r]
    if bounds:
        lines.append("")
        for r in bounds:
            lines.append(
                f"{r['method']}: sharpened upper bound (Fortunato et al. §4, uses the targets) "
                f"valid {r['valid_perplexity_sharpened_bound']:.1f}, "
                f"test {r['test_perplexity_sharpened_bound']:.1f}."
            )
    lines += ["", "Validation perplexity by epoch (posterior mean):", ""]
    for r in rows:
        lines.append(
            f"- {r['method']}: " + ", ".join(f"{p:.1f}" for p in r["valid_perplexity_by_epoch"])
        )
    return "\n".join(lines) + "\n"


def render(out: Path) -> str:
    """Rewrite ``results.md`` from ``results.json``, methods in the study's order."""
    payload = json.loads((out / "results.json").read_text())
    study = STUDIES.get(payload["study"], {})
    order = [METHODS[key].name for key in study.get("methods", [])]
    header = (
        f"Study `{payload['study']}` ({payload.get('wall_seconds', 0):.0f} s wall, "
        f"{len(payload['rows'])} methods). Command: `{payload['command']}`. "
        f"Machine: {payload['machine']}."
    )
    text = markdown(payload["rows"], header, order)
    (out / "results.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rewrite results.md from --out's results.json (methods in the study's order)",
    )
    parser.add_argument("--data-dir", required=True, help="folder holding ptb/ (Mikolov's files)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--decay-after",
        type=int,
        default=None,
        help="epochs at the full learning rate before it halves each epoch, for every method "
        "of the run (default: the study's, 4 as in Zaremba's small model)",
    )
    parser.add_argument("--train-fraction", type=float, default=None)
    parser.add_argument("--mc-samples", type=int, default=None)
    parser.add_argument(
        "--eval-tokens",
        type=int,
        default=None,
        help="smoke runs: evaluate on the first N valid/test tokens only",
    )
    parser.add_argument(
        "--progress", action="store_true", help="progress bars and per-epoch validation on stderr"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="methods run in parallel (each with 2/processes threads)",
    )
    args = parser.parse_args()
    study = dict(STUDIES[args.study])
    if args.epochs is not None:
        study["epochs"] = args.epochs
    if args.decay_after is not None:
        if args.decay_after < 1:
            parser.error(f"--decay-after must be at least 1 epoch, got {args.decay_after}")
        study["decay_after"] = args.decay_after
    if args.train_fraction is not None:
        study["train_fraction"] = args.train_fraction
    if args.mc_samples is not None:
        study["mc_samples"] = args.mc_samples
    study["eval_tokens"] = args.eval_tokens
    study["progress"] = args.progress
    # Longest first, so that parallel processes finish together; the table keeps the study's order.
    keys = sorted(args.methods or study["methods"], key=START_ORDER.index)
    out = args.out or Path("results") / args.study
    if args.render:
        print(render(out))
        return
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(key, study, args.data_dir, args.seed) for key in keys]
    began = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    machine = (
        f"{cpu_name()} ({os.cpu_count()} cores), {torch.get_num_threads()} torch "
        f"threads per process, {args.processes} process(es), torch {torch.__version__}"
    )
    extras = [
        f"--{name.replace('_', '-')} {value}"
        for name, value in (
            ("epochs", args.epochs),
            ("decay_after", args.decay_after),
            ("train_fraction", args.train_fraction),
            ("eval_tokens", args.eval_tokens),
            ("mc_samples", args.mc_samples),
            ("processes", args.processes),
            ("seed", args.seed or None),  # the default seed 0 is left out
        )
        if value is not None
    ]
    if args.methods:
        extras.append("--methods " + " ".join(args.methods))
    command = " ".join(
        [
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} "
            f"benchmarks/reproduce.py {args.study} --data-dir {args.data_dir}",
            *extras,
        ]
    )
    for name, value in MALLOC_SETTINGS.items():  # read by glibc when each child starts
        os.environ.setdefault(name, value)
    rows: list[dict] = []
    with context.Pool(args.processes, maxtasksperchild=1) as pool:
        for row in pool.imap(_child, jobs, chunksize=1):  # results land as each method ends
            rows.append(row)
            header = (
                f"Study `{args.study}` ({time.perf_counter() - began:.0f} s wall, "
                f"{len(rows)}/{len(jobs)} methods). Command: `{command}`. Machine: {machine}."
            )
            payload = {
                "study": args.study,
                "command": command,
                "machine": machine,
                "wall_seconds": time.perf_counter() - began,
                "rows": rows,
            }
            (out / "results.json").write_text(json.dumps(payload, indent=2))
            (out / "results.md").write_text(markdown(rows, header))
    print(render(out))


if __name__ == "__main__":
    main()
