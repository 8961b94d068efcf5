"""How far each approximate posterior's predictive is from the NUTS reference's.

After Izmailov et al. (2021), who scored approximations by their predictive's distance to
full-batch HMC: every method is trained through the command (``bayesrnn run``, one process per
method) on small tasks on real data, and its test-split predictive is compared with the
reference run's (``nuts`` by default) with :mod:`bayesrnn.evaluation.posterior_quality`:

- ``forecast``: yearly sunspots, the ``forecast`` preset with a 1x4 LSTM (122 weights);
  Wasserstein-1 per test year, CRPS gap, 50%/90% coverage gaps, predictive sd ratio;
- ``classify``: sentence polarity cut to 25 words and 500 sentences per split, a 3-wide LSTM
  over 2-wide embeddings (142 weights); total variation, top-1 agreement, predictive-entropy
  ratio, mutual-information ratio;
- ``symbols``: a next-symbol language model on Penn Treebank characters mapped to four classes
  (vowel, consonant, word boundary, other; each line closed by ``<eos>``), the first ~3,000
  training, 500 valid and 1,000 test symbols, a 3-wide LSTM over 2-wide embeddings (120
  weights; unlike the classifier, its NUTS potential JIT-traces); categorical distances as for
  ``classify``, per test position. The corpus is written at run time from ``ptb_char/`` into
  ``--out``/data/ptb-symbols (the text is never copied elsewhere);
- ``symbols-small``: the same task on the first ~600 training symbols (the same valid and test
  text) with a 2-wide LSTM (78 weights), a flatter posterior for a NUTS reference that mixes;
  its corpus in ``--out``/data/ptb-symbols-small, its own settings by ``--symbols-small-set``;
- ``sunspots``: the ``forecast`` preset as it is (lags, √ of the counts, a linear skip) with a
  1x2 LSTM (83 weights), forecast distances as for ``forecast``.

All stay under the NUTS guide's size limit, and all use a N(0, 1) prior for every method
(Gal's guide needs a Gaussian prior, and NUTS mixes badly on a scale mixture's spike). Under a
Gaussian prior the mean-field KL is the closed form whatever ``guide.kl`` says, so the two
mean-field rows are the same run twice; to compare the two KL estimators, rerun with e.g.
``--forecast-set model.prior=scale_mixture`` (and without ``gal``).

Each method also gets its own scores (forecast: CRPS, NLL, coverage; classify and symbols: NLL
per sentence or symbol, accuracy) and its training cost: the summed epoch times from its
``metrics.json`` and the wall time of its whole ``bayesrnn run`` process (training, evaluation
and start-up). Resumable: a method whose run directory holds ``metrics.json`` is reused, not
retrained (an interrupted one is resumed by the command from its checkpoint), and
``results.json``, ``results.md`` and ``posterior_quality.png`` in ``--out`` are rewritten
after every method. The NUTS run takes no epoch setting, so changing the others' training
length reuses it.

    python benchmarks/posterior_quality.py --out runs/quality                 # everything
    python benchmarks/posterior_quality.py --out /tmp/q --quick \\
        --reference mean_field_expected --methods mean_field_expected none    # a smoke run

``--data-dir`` is the folder holding rt-polarity/ and ptb_char/ (default ../shared/data beside
the project). ``--forecast-set``, ``--classify-set``, ``--symbols-set`` and ``--nuts-set`` add
``--set`` values to every run of a task or to the NUTS run (e.g. ``--forecast-set
model.hidden_size=4 --nuts-set guide.max_tree_depth=8``); a run directory made with other
settings is refused, not reused. ``--nuts-seed`` fixes the NUTS run's seed apart from
``--seed``: to train the other methods at another seed against one reference, copy its
``TASK/nuts`` folder and ``TASK/nuts.command.json`` into a new ``--out`` and run there with
``--seed S --nuts-seed`` the reference's seed.
``--samples`` must be a multiple of the ensemble's 5 members (each member weighs the same).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the symbols task: Penn Treebank characters as four classes, so that a 1x3 LSTM fits NUTS
VOWELS = frozenset("aeiou")
CONSONANTS = frozenset("bcdfghjklmnpqrstvwxyz")
BOUNDARY = "_"  # ptb.char's word boundary
SYMBOL_COUNTS = {"train": 3000, "valid": 500, "test": 1000}  # at least, in whole lines
# each symbols task's corpus: symbols-small keeps the valid and test text and a fifth of the
# training text, for a flatter posterior NUTS can mix on
SYMBOL_TASKS = {
    "symbols": SYMBOL_COUNTS,
    "symbols-small": {"train": 600, "valid": 500, "test": 1000},
}

# guide settings of each method, as --set values
METHODS: dict[str, list[str]] = {
    "nuts": ["guide.name=nuts"],
    "mean_field_expected": ["guide.name=mean_field", "guide.kl=expected"],
    "mean_field_sample": ["guide.name=mean_field", "guide.kl=sample"],
    "sharpened": ["guide.name=sharpened"],
    "gal": ["guide.name=gal", "guide.dropout_hidden=0.25", "guide.dropout_output=0.25"],
    "auto_low_rank": ["guide.name=auto_low_rank"],
    "ensemble": ["guide.name=ensemble", "guide.members=5"],
    "none": ["guide.name=none", "model.prior=none"],  # a plain network: no posterior
}

TASKS: dict[str, dict[str, list[str]]] = {
    "forecast": {
        "args": ["--preset", "forecast"],
        # the forecaster measured here before the preset read lags, √ and a linear skip
        "set": [
            "model.hidden_size=4",
            "data.transform=none",
            "data.lags=[]",
            "model.linear_skip=false",
        ],
        "full": ["trainer.epochs=600"],
        "quick": ["trainer.epochs=20"],
    },
    "symbols": {
        "args": ["--task", "lm"],  # --data: the symbol corpus this script writes
        "set": [
            "model.embedding_size=2",
            "model.hidden_size=3",
            "model.prior=gaussian",
            "model.prior_scale=1.0",
            "model.deterministic=[]",
            "trainer.batch_size=50",
            "trainer.eval_batch_size=10",
            "trainer.bptt=20",
            "trainer.optimizer=adam",
            "trainer.lr=0.01",
            "trainer.lr_decay=1.0",
            "trainer.clip_norm=5.0",
            "evaluation.reversed_text=false",
            "evaluation.pruning=false",
            "evaluation.sharpened_bound=false",
        ],
        "full": ["trainer.epochs=400"],
        "quick": ["trainer.epochs=2"],
    },
    "classify": {
        "args": ["--task", "classify", "--data", "polarity"],
        "set": [
            "data.max_vocab=25",
            "data.max_examples=500",
            "model.embedding_size=2",
            "model.hidden_size=3",
            "model.prior=gaussian",
            "model.prior_scale=1.0",
            "model.deterministic=[]",  # every weight random (NUTS) or per member (ensemble)
            "trainer.batch_size=32",
            "trainer.optimizer=adam",
            "trainer.lr=0.01",
            "trainer.lr_decay=1.0",
        ],
        "full": ["trainer.epochs=40"],
        "quick": ["trainer.epochs=2"],
    },
}

# the symbols task on ~600 training symbols (657 with <eos>) with a 1x2 LSTM (78 weights),
# whose posterior modes predict alike more often than the 1x3's (benchmarks/nuts_mixing.py);
# 10 parallel sequences of 65 steps, so that the 20-step windows fit and an epoch is 3
# windows, as on the 3,151 symbols at 50 sequences
TASKS["symbols-small"] = {
    **TASKS["symbols"],
    "set": [*TASKS["symbols"]["set"], "model.hidden_size=2", "trainer.batch_size=10"],
}

# the forecast preset as it is (lags, √ of the counts, a linear skip beside the LSTM) with a
# 1x2 LSTM (83 weights): the smallest forecaster with the preset's features (NUTS with a
# dense metric did not mix on it either: predictive r-hat 1.19 with 4 x (300 + 300)); with
# --sunspots-set model.hidden_size=1 (41 weights) and 4 x (500 + 2000) draws it did (1.009)
TASKS["sunspots"] = {
    **TASKS["forecast"],
    "set": ["model.hidden_size=2"],
}

DISTANCES = {
    "forecast": ["wasserstein1", "crps_gap", "coverage_gap_50", "coverage_gap_90", "sd_ratio"],
    "classify": ["total_variation", "agreement", "entropy_ratio", "mutual_information_ratio"],
    "symbols": ["total_variation", "agreement", "entropy_ratio", "mutual_information_ratio"],
}
DISTANCES["symbols-small"] = DISTANCES["symbols"]
DISTANCES["sunspots"] = DISTANCES["forecast"]
SCORES = {
    "forecast": ["crps", "nll", "coverage_50", "coverage_90"],
    "classify": ["nll", "accuracy"],
    "symbols": ["nll", "accuracy"],
}
SCORES["symbols-small"] = SCORES["symbols"]
SCORES["sunspots"] = SCORES["forecast"]


def symbol_of(char: str) -> str:
    """A ptb.char symbol's class: v (vowel), c (consonant), _ (word boundary), o (other:
    digits, punctuation, the N for numbers and the letters of <unk>'s brackets)."""
    if char in VOWELS:
        return "v"
    if char in CONSONANTS:
        return "c"
    return "_" if char == BOUNDARY else "o"


def symbol_lines(text: str, count: int) -> list[str]:
    """The first whole lines of a ptb.char file, as space-separated classes, until they hold
    at least ``count`` symbols (each line's end, the loader's <eos>, counted as one)."""
    lines, total = [], 0
    for line in text.split("\n"):
        chars = line.split()
        if not chars:
            continue
        lines.append(" ".join(symbol_of(c) for c in chars))
        total += len(chars) + 1
        if total >= count:
            return lines
    raise SystemExit(f"the ptb.char text holds {total} symbols, fewer than the {count} needed")


def write_symbol_corpus(
    data_dir: Path, folder: Path, counts: dict[str, int] = SYMBOL_COUNTS
) -> Path:
    """Write ``folder``/{train,valid,test}.txt from ``data_dir``/ptb_char: the start of each
    split, at least ``counts[split]`` symbols, mapped by :func:`symbol_of` (a word-level
    corpus of 4 symbols plus <eos>)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in counts.items():
        text = (data_dir / "ptb_char" / f"ptb.char.{split}.txt").read_text()
        (folder / f"{split}.txt").write_text("\n".join(symbol_lines(text, count)) + "\n")
    return folder


def symbol_corpus_dir(args: argparse.Namespace, task: str = "symbols") -> Path:
    """Where a symbols task's corpus is written: a cache folder beside the runs."""
    return args.out / "data" / f"ptb-{task}"


def run_command(task: str, method: str, out: Path, args: argparse.Namespace) -> list[str]:
    """The ``bayesrnn run`` command line of one method on one task."""
    spec = TASKS[task]
    settings = [
        *spec["set"],
        # the training length: NUTS has none, so its run (the costly one) is reused when
        # only the other methods' epochs change
        *([] if method == "nuts" else spec["quick" if args.quick else "full"]),
        *METHODS[method],
        "evaluation.export=false",
        f"evaluation.mc_samples={args.samples}",
        f"trainer.seed={reference_seed(args) if method == 'nuts' else args.seed}",
    ]
    if method == "nuts":
        settings += [
            f"guide.num_chains={args.nuts_chains}",
            f"guide.num_samples={args.nuts_samples}",
            f"guide.warmup_steps={args.nuts_warmup}",
            *args.nuts_set,
        ]
    settings += getattr(args, f"{task.replace('-', '_')}_set")  # the user's, last: they win
    command = [sys.executable, "-m", "bayesrnn", "run", *spec["args"], "--out", str(out)]
    if task == "classify":
        command += ["--data-dir", str(args.data_dir)]
    if task in SYMBOL_TASKS:
        command += ["--data", str(symbol_corpus_dir(args, task))]
    command.append("--quiet")
    for setting in settings:
        command += ["--set", setting]
    return command


def reference_seed(args: argparse.Namespace) -> int:
    """The NUTS run's seed: ``--nuts-seed`` when given, so that the other methods can be
    trained at several seeds against one reference (its run copied into each ``--out``)."""
    return args.seed if args.nuts_seed is None else args.nuts_seed


def train(task: str, method: str, args: argparse.Namespace, previous: dict) -> dict:
    """Train one method (or reuse its finished run directory); its run facts."""
    out = args.out / task / method
    command = run_command(task, method, out, args)
    # the settings a run directory was made with, beside it: a finished run is reused only
    # for the same command, never silently for other settings
    recorded = out.with_name(f"{method}.command.json")
    settings = command[command.index("--quiet") :]
    made_with = json.loads(recorded.read_text()) if recorded.is_file() else settings
    if _without_epochs(made_with, method) != settings:
        raise SystemExit(
            f"{out} was made with other settings than these ({recorded}); delete both or "
            "give another --out"
        )
    if (out / "metrics.json").is_file():
        return {"run": str(out), "reused": True, "wall_seconds": previous.get("wall_seconds")}
    out.parent.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(settings) + "\n")
    print(f"[{task}] training {method}: {' '.join(command[1:])}", flush=True)
    began = time.perf_counter()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        return {"run": str(out), "error": lines[-1], "exit_code": done.returncode}
    return {"run": str(out), "reused": False, "wall_seconds": wall}


def _without_epochs(settings: list[str], method: str) -> list[str]:
    """A NUTS run's recorded settings without ``trainer.epochs`` (which NUTS ignores and older
    records of this script hold), so that its run is still reused; others' as they are."""
    if method != "nuts":
        return settings
    kept = []
    for part in settings:
        if part.startswith("trainer.epochs=") and kept and kept[-1] == "--set":
            kept.pop()
        else:
            kept.append(part)
    return kept


def train_seconds(run_dir: str) -> float | None:
    """The summed epoch times the run recorded (None when it recorded none)."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    seconds = metrics.get("timing", {}).get("epoch_seconds")
    return float(sum(seconds)) if seconds else None


MCMC_FACTS = (
    "full_mass",
    "num_chains",
    "num_samples",
    "warmup_steps",
    "seconds",
    "mean_tree_depth",
    "divergences",
    "rhat_max_predictive",
    "ess_min_predictive",
)


def mcmc_facts(run_dir: str) -> dict | None:
    """A NUTS run's sampler facts from its ``metrics.json`` (seconds per iteration, tree
    depth, divergences, the largest r-hat and smallest ESS over the test log-likelihoods),
    plus the r-hat and ESS of the log joint density of the draws (``rhat_lp``, ``ess_lp``),
    the step size warm-up chose (mean over chains) and the smallest chain's E-BFMI; None for
    other runs."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    mcmc = metrics.get("mcmc")
    if not mcmc:
        return None
    from bayesrnn import load_run
    from bayesrnn.evaluation.arviz_mcmc import predictive_convergence

    facts = {key: mcmc.get(key) for key in MCMC_FACTS}
    facts["rhat_median_predictive"] = mcmc.get("rhat_median_predictive")
    for limit, share in (mcmc.get("rhat_share_predictive") or {}).items():
        facts[f"rhat_share_{limit}"] = share  # share of predictions with r-hat ≤ limit
    iterations = mcmc["num_chains"] * (mcmc["num_samples"] + mcmc["warmup_steps"])
    facts["seconds_per_iteration"] = mcmc["seconds"] / iterations
    stats = load_run(run_dir).guide.sample_stats
    lp = stats["lp"].double().numpy()
    lp_facts = predictive_convergence({"lp": lp}, 0, lp.size)["predictive_quantities"]["lp"]
    facts["rhat_lp"], facts["ess_lp"] = finite(lp_facts["rhat_max"]), finite(lp_facts["ess_min"])
    facts["step_size"] = float(stats["step_size"][:, 0].double().mean())
    facts["bfmi_min"] = finite(min(bfmi(chain) for chain in stats["energy"].double().numpy()))
    return facts


def bfmi(energy) -> float:
    """E-BFMI of one chain's energies (Betancourt 2016): the mean squared change of the
    energy between draws over its variance; below ~0.3 the momentum resampling cannot move
    the chain through the energy levels fast enough (heavy tails, funnels)."""
    import numpy as np

    energy = np.asarray(energy, dtype=float)
    spread = float(np.sum((energy - energy.mean()) ** 2))
    return float(np.sum(np.diff(energy) ** 2) / spread) if spread > 0 else math.nan


def finite(value: float | None) -> float | None:
    """JSON-safe: NaN and inf become None."""
    return value if value is not None and math.isfinite(value) else None


def write_results(results: dict, args: argparse.Namespace) -> None:
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    plot(results, args.out / "posterior_quality.png")


def markdown(results: dict) -> str:
    lines = []
    for task, entry in results["tasks"].items():
        reference = entry["reference"]
        lines += [f"### {task}: distances to `{reference}` (test split)", ""]
        columns = DISTANCES[task] + SCORES[task] + ["draws", "train_s", "wall_s"]
        lines += ["| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        for method, row in entry["methods"].items():
            if "error" in row:
                lines.append(f"| {method} | failed: {row['error']} |")
                continue
            values = {
                **row.get("distances", {}),
                **row.get("scores", {}),
                "draws": row.get("draws"),
                "train_s": row.get("train_seconds"),
                "wall_s": row.get("wall_seconds"),
            }
            cells = [_cell(values.get(c)) for c in columns]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
        for method, row in entry["methods"].items():
            if "mcmc" in row:
                facts = ", ".join(f"{k} {_cell(v)}" for k, v in row["mcmc"].items())
                lines += [f"`{method}` sampler: {facts}", ""]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def plot(results: dict, path: Path) -> None:
    """One panel per distance and task, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [
        t
        for t, e in results["tasks"].items()
        if any("distances" in r for m, r in e["methods"].items() if m != e["reference"])
    ]
    if not tasks:
        return
    width = max(len(DISTANCES[t]) for t in tasks)
    fig, axes = plt.subplots(
        len(tasks), width, figsize=(3.2 * width, 3.2 * len(tasks)), squeeze=False
    )
    for i, task in enumerate(tasks):
        entry = results["tasks"][task]
        rows = {
            m: r["distances"]
            for m, r in entry["methods"].items()
            if "distances" in r and m != entry["reference"]
        }
        for j in range(width):
            ax = axes[i][j]
            if j >= len(DISTANCES[task]):
                ax.axis("off")
                continue
            name = DISTANCES[task][j]
            values = [rows[m].get(name) for m in rows]
            heights = [v if v is not None else 0.0 for v in values]
            ax.bar(range(len(rows)), heights, color=[f"C{k % 10}" for k in range(len(rows))])
            for k, value in enumerate(values):
                if value is None:  # undefined (e.g. a ratio to zero): say so, not a zero bar
                    ax.text(k, 0, "n/a", ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(rows)), list(rows), rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{task}: {name}", fontsize=9)
            if name.endswith("ratio") or name == "agreement":
                ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            else:
                ax.axhline(0.0, color="grey", lw=0.8)
    fig.suptitle(f"distance of each method's test predictive to {results['reference']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for runs and results")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--reference", choices=list(METHODS), default="nuts")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few epochs and draws")
    parser.add_argument("--samples", type=int, help="MC draws per method (default 100, quick 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--nuts-seed",
        type=int,
        help="the NUTS run's seed (default --seed): other seeds of the other methods against "
        "one reference, whose task/nuts run and nuts.command.json are copied into --out",
    )
    parser.add_argument("--nuts-chains", type=int, default=4)
    parser.add_argument("--nuts-samples", type=int, help="draws per chain (default 100, quick 10)")
    parser.add_argument("--nuts-warmup", type=int, help="warm-up steps (default 200, quick 10)")
    for name, what in (
        ("nuts", "the nuts run"),
        *((task, f"every {task} run") for task in TASKS),
    ):
        parser.add_argument(
            f"--{name}-set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"a further --set for {what} (repeatable)",
        )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT.parent / "shared" / "data",
        help="the folder holding rt-polarity/ and ptb_char/",
    )
    args = parser.parse_args()
    args.samples = args.samples or (5 if args.quick else 100)
    args.nuts_samples = args.nuts_samples or (10 if args.quick else 100)
    args.nuts_warmup = args.nuts_warmup or (10 if args.quick else 200)
    if args.quick:
        args.nuts_chains = min(args.nuts_chains, 2)
    if "classify" in args.tasks and not (args.data_dir / "rt-polarity").is_dir():
        parser.error(f"no rt-polarity/ in {args.data_dir}: give --data-dir or --tasks forecast")
    symbol_tasks = [task for task in args.tasks if task in SYMBOL_TASKS]
    if symbol_tasks and not (args.data_dir / "ptb_char").is_dir():
        parser.error(f"no ptb_char/ in {args.data_dir}: give --data-dir or leave out symbols")
    args.out.mkdir(parents=True, exist_ok=True)
    for task in symbol_tasks:
        write_symbol_corpus(args.data_dir, symbol_corpus_dir(args, task), SYMBOL_TASKS[task])

    import torch

    from bayesrnn import run_predictive

    torch.set_num_threads(1)
    saved = args.out / "results.json"
    previous = json.loads(saved.read_text()) if saved.is_file() else {}
    results = {"reference": args.reference, "quick": args.quick, "tasks": {}}
    order = [args.reference] + [m for m in args.methods if m != args.reference]
    for task in args.tasks:
        before = previous.get("tasks", {}).get(task, {}).get("methods", {})
        entry = results["tasks"][task] = {"reference": args.reference, "methods": {}}
        reference = None
        for method in order:
            row = train(task, method, args, before.get(method, {}))
            entry["methods"][method] = row
            if "error" in row:
                print(f"[{task}] {method} failed: {row['error']}", flush=True)
                write_results(results, args)
                continue
            predictive = run_predictive(row["run"], split="test")
            row["draws"] = predictive.num_samples
            row["chains"] = predictive.chains
            row["train_seconds"] = train_seconds(row["run"])
            row["scores"] = {k: finite(v) for k, v in predictive.scores().items()}
            facts = mcmc_facts(row["run"])
            if facts is not None:
                row["mcmc"] = facts
            if method == args.reference:
                reference = predictive
            if reference is not None:
                distances = predictive.distances(reference)
                row["distances"] = {k: finite(v) for k, v in distances.items()}
            print(f"[{task}] {method}: {row.get('distances', row['scores'])}", flush=True)
            write_results(results, args)
    write_results(results, args)
    print(f"results in {args.out}/results.md, results.json, posterior_quality.png")


if __name__ == "__main__":
    main()
