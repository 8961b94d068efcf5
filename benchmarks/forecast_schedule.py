"""Which learning-rate schedule lets the forecaster's mean-field q reach the ELBO's optimum?

Adam at a constant rate never settles: its last iterate wanders around the optimum by a step
size. This trains the ``forecast`` preset (yearly sunspots, mean-field, N(0, 1) prior) under
several schedules of ``trainer.constant_epochs`` / ``trainer.lr_decay`` (the rate is divided by
the decay every epoch after the constant ones) and scores each final q three ways:

- its **ELBO per training value**, the objective: E_q[log p(y | θ)] over the whole training
  series (one sequence, the hidden state carried from the first year, ``--elbo-draws`` weight
  draws) minus the closed-form KL of the last training step (``metrics.json``), both in the
  model's units (standardised √ of the counts);
- its **validation** MC CRPS and 90% coverage (50 draws, in the data's units), where a
  schedule may be chosen;
- its **test** MC CRPS and coverage, which must not be used to choose.

    OMP_NUM_THREADS=1 python benchmarks/forecast_schedule.py --out runs/schedule \\
        [--schedules constant decay-300 decay-200 decay-100] [--seeds 0 1 2]

Runs are kept under ``--out`` (one per schedule and seed; a finished one is re-read, not
retrained); ``results.json`` and ``results.md`` are rewritten after each. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bayesrnn.app.cli import main as bayesrnn_main
from bayesrnn.app.run_draws import run_predictive
from bayesrnn.app.setup import load_data, seed_everything
from bayesrnn.app.trained_run import TrainedRun, load_run
from bayesrnn.evaluation.forecast import predict_series
from bayesrnn.evaluation.posterior_quality import continuous_scores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import current_commit

# name: (constant epochs, decay per epoch after them); the preset trains 600 epochs
SCHEDULES = {
    "constant": (600, 1.0),
    "decay-300": (300, 1.01),
    "decay-300-fast": (300, 1.0155),
    "decay-200": (200, 1.01),
    "decay-100": (100, 1.01),
}


def train(out: Path, seed: int, schedule: str) -> Path:
    constant, decay = SCHEDULES[schedule]
    run = out / f"{schedule}-seed{seed}"
    command = ["run", "--preset", "forecast", "--seed", str(seed), "--out", str(run), "--quiet"]
    for item in (
        "evaluation.export=false",
        f"trainer.constant_epochs={constant}",
        f"trainer.lr_decay={decay}",
    ):
        command += ["--set", item]
    code = bayesrnn_main(command)
    if code not in (0, None):
        raise SystemExit(f"training {schedule} seed {seed} failed with exit code {code}")
    return run


def elbo_per_value(run: TrainedRun, draws: int) -> dict[str, float]:
    """E_q[log-likelihood], the KL and their difference per training value (model units)."""
    corpus = load_data(run.config)
    rows = corpus.full()[: corpus.sizes()["train"]]
    seed_everything(run.config.trainer.seed + 2)
    forecast = predict_series(run.model, run.guide, rows, 1, draws)  # (S, N, D)
    observed = rows[1:, : forecast.loc.shape[-1]].to(forecast.loc)
    log_lik = forecast.log_prob(observed.expand_as(forecast.loc)).sum((1, 2)).mean().item()
    kl = run.metrics["training"]["kl_last"]
    n = observed.numel()
    return {"expected_nll": -log_lik / n, "kl": kl / n, "elbo": (log_lik - kl) / n}


def split_scores(run: TrainedRun, split: str) -> dict[str, float]:
    """MC scores of 50 draws on ``split``, seeded as the run's own evaluation."""
    predictive = run_predictive(run, split, num_samples=50)
    scores = continuous_scores(predictive.draws, predictive.observed)
    return {k: scores[k] for k in ("crps", "coverage_50", "coverage_90")}


def _cell(seeds: dict, key: str, split: str, digits: int) -> str:
    """The mean over seeds, then each seed's value."""
    values = [s[split][key] for s in seeds.values()]
    mean = sum(values) / len(values)
    return f"{mean:.{digits}f} ({' / '.join(f'{v:.{digits}f}' for v in values)})"


def table(results: dict) -> str:
    lines = [
        "| schedule (constant epochs, decay) | seeds | ELBO per value | KL per value "
        "| valid CRPS | valid 90% | test CRPS | test 90% |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, seeds in results.items():
        if not seeds:
            continue
        constant, decay = SCHEDULES[name]
        cells = [
            _cell(seeds, key, split, digits)
            for key, split, digits in (
                ("elbo", "train", 4),
                ("kl", "train", 4),
                ("crps", "valid", 2),
                ("coverage_90", "valid", 3),
                ("crps", "test", 2),
                ("coverage_90", "test", 3),
            )
        ]
        lines.append(
            f"| {name} ({constant}, {decay:g}) | {', '.join(seeds)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--schedules", nargs="+", choices=list(SCHEDULES), default=list(SCHEDULES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--elbo-draws", type=int, default=2000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    header = (
        f"Produced by `OMP_NUM_THREADS=1 python benchmarks/forecast_schedule.py "
        f"{' '.join(sys.argv[1:])}` on commit {current_commit()}: the forecast preset on "
        "sunspots; each cell the mean over seeds (each seed in brackets).\n\n"
    )
    results: dict[str, dict] = {name: {} for name in args.schedules}
    for name in args.schedules:
        for seed in args.seeds:
            run = load_run(train(args.out, seed, name))  # read once, scored three ways
            results[name][str(seed)] = {
                "train": elbo_per_value(run, args.elbo_draws),
                "valid": split_scores(run, "valid"),
                "test": split_scores(run, "test"),
            }
            print(f"{name} seed {seed}: {results[name][str(seed)]}", flush=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
            (args.out / "results.md").write_text(header + table(results))
    print(table(results))


if __name__ == "__main__":
    main()
