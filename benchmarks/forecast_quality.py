"""The default forecaster against the classical models, on the classical backtest's origins.

For each series and seed this trains ``bayesrnn run --preset forecast --data SERIES --seed S``
(plus any ``--set`` overrides), then backtests the run's ancestral sample paths
(``run.forecast(horizon, samples, history=...)``) with
:func:`bayesrnn.evaluation.backtest.rolling_origin` at the origins and horizons of
``benchmarks/forecast_baselines.py``: the test split, in the data's units, MASE scaled by the
naive one-step error. The classical scores of sunspots and co2 are read from that benchmark's
``results.json``; those of the third series (elnino: monthly, H = 12, season 12) are fitted
here with :func:`bayesrnn.evaluation.classical.classical_forecasters` the same way.

    OMP_NUM_THREADS=1 python benchmarks/forecast_quality.py \\
        --out benchmarks/results/forecast-quality [--series sunspots co2 elnino] \\
        [--seeds 0 1 2] [--seeds-of co2=0] [--set model.hidden_size=16 ...] [--label NAME]

Writes ``results.json`` (every horizon of every metric, per seed and averaged) and
``results.md`` after each run, so a long job can be read while it runs. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import bayesrnn
from bayesrnn.app.cli import main as bayesrnn_main
from bayesrnn.data.series import load_statsmodels_series
from bayesrnn.evaluation.backtest import rolling_origin
from bayesrnn.evaluation.classical import arima_orders, classical_forecasters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import current_commit

# horizon, stride and the classical models' season, as in forecast_baselines.py
SETTINGS = {
    "sunspots": {"horizon": 10, "stride": 1, "season": 11},
    "co2": {"horizon": 52, "stride": 4, "season": 52},
    "elnino": {"horizon": 12, "stride": 1, "season": 12},
}
METRICS = ("crps", "mae", "rmse", "mase", "coverage_50", "coverage_90")
BASELINES = Path(__file__).parent / "results" / "forecast-baselines" / "results.json"


def series_of(name: str):
    corpus = load_statsmodels_series(name)
    return corpus, corpus.observed(0, corpus.full().shape[0])[:, 0]


def classical_scores(name: str, samples: int, cache: Path) -> dict[str, dict]:
    """Per-horizon scores of every classical forecaster: from forecast_baselines' results,
    else fitted here (and cached in the output folder)."""
    if BASELINES.is_file():
        for result in json.loads(BASELINES.read_text()):
            if result["series"] == name:
                return result["methods"]
    if cache.is_file():
        return json.loads(cache.read_text())
    corpus, series = series_of(name)
    sizes, settings = corpus.sizes(), SETTINGS[name]
    train, valid = series[: sizes["train"]], series[sizes["train"] : corpus.test_start]
    forecasters = classical_forecasters(
        train, valid, settings["season"], orders=arima_orders(), num_samples=samples
    )
    scores = rolling_origin(
        series, forecasters, corpus.test_start, settings["horizon"], settings["stride"]
    )
    methods = {
        method: {"fitted": forecasters[method].describe(), **scores[method]}
        for method in forecasters
    }
    cache.write_text(json.dumps(methods, indent=1) + "\n")
    return methods


def train(name: str, seed: int, sets: list[str], folder: Path) -> tuple[Path, float]:
    out = folder / f"{name}-seed{seed}"
    command = ["run", "--preset", "forecast", "--data", name, "--seed", str(seed)]
    command += ["--out", str(out), "--quiet", "--set", "evaluation.export=false"]
    for item in sets:
        command += ["--set", item]
    began = time.perf_counter()
    code = bayesrnn_main(command)
    if code not in (0, None):
        raise SystemExit(f"training {name} seed {seed} failed with exit code {code}")
    return out, time.perf_counter() - began


def backtest_run(out: Path, name: str, samples: int) -> dict:
    corpus, series = series_of(name)
    settings = SETTINGS[name]
    run = bayesrnn.load_run(out)

    def forecaster(history: torch.Tensor, horizon: int) -> torch.Tensor:
        return run.forecast(horizon, samples, history=history).paths[..., 0]

    began = time.perf_counter()
    scores = rolling_origin(
        series, forecaster, corpus.test_start, settings["horizon"], settings["stride"]
    )
    scores["backtest_seconds"] = round(time.perf_counter() - began, 1)
    one_step = run.metrics["test"]
    scores["one_step_test"] = {k: one_step[k] for k in ("crps", "nll", "coverage_90")}
    return scores


def averaged(per_seed: list[dict]) -> dict:
    return {m: np.mean([s[m] for s in per_seed], axis=0).tolist() for m in METRICS}


def best_classical(methods: dict, h: int) -> tuple[str, float]:
    name = min(methods, key=lambda m: methods[m]["crps"][h - 1])
    return name, methods[name]["crps"][h - 1]


def table(results: dict, label: str) -> str:
    lines = [
        f"#### {label}",
        "",
        "| series | forecaster | seeds | CRPS h=1 | CRPS h=H | CRPS mean | MASE mean | "
        "coverage 90% mean | one-step test CRPS (all test steps) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        horizon = SETTINGS[name]["horizon"]
        runs = result["seeds"]
        if not runs:
            continue
        mean = averaged(list(runs.values()))
        per_seed_h1 = " / ".join(f"{r['crps'][0]:.3g}" for r in runs.values())
        per_seed_hh = " / ".join(f"{r['crps'][-1]:.3g}" for r in runs.values())
        one_step = " / ".join(f"{r['one_step_test']['crps']:.3g}" for r in runs.values())
        lines.append(
            f"| {name} (H = {horizon}) | bayesrnn | {', '.join(runs)} | "
            f"{mean['crps'][0]:.3g} ({per_seed_h1}) | {mean['crps'][-1]:.3g} ({per_seed_hh}) | "
            f"{np.mean(mean['crps']):.3g} | {np.mean(mean['mase']):.3g} | "
            f"{np.mean(mean['coverage_90']):.2f} | {one_step} |"
        )
        for method, scores in result["classical"].items():
            lines.append(
                f"| | {method} ({scores['fitted']}) | | {scores['crps'][0]:.3g} | "
                f"{scores['crps'][-1]:.3g} | {np.mean(scores['crps']):.3g} | "
                f"{np.mean(scores['mase']):.3g} | {np.mean(scores['coverage_90']):.2f} | |"
            )
        first, last = (
            best_classical(result["classical"], 1),
            best_classical(result["classical"], horizon),
        )
        lines.append(
            f"| | *target* | | ≤ {first[1]:.3g} ({first[0]}) | ≤ {last[1]:.3g} ({last[0]}) "
            "| | | | |"
        )
    return "\n".join(lines)


def header(argv: list[str]) -> str:
    """The command and the commit the job started on."""
    commit = current_commit()
    command = " ".join(["OMP_NUM_THREADS=1 python benchmarks/forecast_quality.py", *argv])
    return (
        f"Produced by `{command}` on commit {commit}. CRPS in the data's units over the "
        "classical backtest's origins of the test split; bayesrnn's value is the mean over "
        "seeds (each seed in brackets); MASE scaled by the naive one-step error.\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/forecast-quality"))
    parser.add_argument("--series", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--seeds-of",
        action="append",
        default=[],
        metavar="SERIES=S,S",
        help="other seeds for one series (co2's runs take ~10 times sunspots')",
    )
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--label", default="the forecast preset")
    parser.add_argument("--runs", type=Path, help="keep the trained runs here (else a temp dir)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    produced_by = header(sys.argv[1:])  # the commit the runs start from, not a later one
    seeds = {name: args.seeds for name in args.series}
    for item in args.seeds_of:
        name, _, values = item.partition("=")
        if name not in SETTINGS or not values:
            parser.error(f"--seeds-of wants SERIES=S,S with SERIES in {list(SETTINGS)}")
        seeds[name] = [int(v) for v in values.split(",")]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.runs or Path(scratch)
        for name in args.series:
            classical = classical_scores(name, args.samples, args.out / f"classical-{name}.json")
            results[name] = {**SETTINGS[name], "classical": classical, "seeds": {}}
            for seed in seeds[name]:
                out, seconds = train(name, seed, args.sets, folder)
                scores = backtest_run(out, name, args.samples)
                scores["train_seconds"] = round(seconds, 1)
                results[name]["seeds"][str(seed)] = scores
                mean_h1 = scores["crps"][0]
                print(
                    f"{name} seed {seed}: CRPS h=1 {mean_h1:.4g}, h=H {scores['crps'][-1]:.4g}"
                    f", train {seconds:.0f} s",
                    flush=True,
                )
                record = {"label": args.label, "sets": args.sets, "series": results}
                (args.out / "results.json").write_text(json.dumps(record, indent=1) + "\n")
                text = produced_by + table(results, args.label) + "\n"
                (args.out / "results.md").write_text(text)
    print(table(results, args.label))


if __name__ == "__main__":
    main()
