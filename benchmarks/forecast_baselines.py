"""Rolling-origin backtests of the classical forecasters on the test splits of sunspots and co2.

Every forecaster of :func:`bayesrnn.evaluation.classical.classical_forecasters` is fitted once
on train + valid (ARIMA's order and ETS's trend chosen on valid) and filtered forward to each
origin of the test split (:func:`bayesrnn.evaluation.backtest.rolling_origin`), in the data's
units, with the package's chronological 70/15/15 split:

- sunspots (yearly): H = 10 years, an origin every year; the models' season is the ~11-year
  solar cycle (seasonal naive, SARIMAX's (1, 0, 0, 11), ETS's additive season);
- co2 (weekly): H = 52 weeks, an origin every ``--co2-stride`` weeks; season 52 weeks. ARIMA's
  grid keeps d = 1 (``--co2-d``): each SARIMAX fit with a 52-week seasonal AR takes ~30 s.

MASE and MSIS are scaled by the naive one-step error of each origin's history (m = 1, as M4
scales its yearly and weekly series). Prints a per-horizon table and writes ``results.json``
(every metric at every horizon, the fitted choices, validation scores) and ``results.md``.

    OMP_NUM_THREADS=1 python benchmarks/forecast_baselines.py \\
        --out benchmarks/results/forecast-baselines
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bayesrnn.data.series import load_statsmodels_series
from bayesrnn.evaluation.backtest import rolling_origin
from bayesrnn.evaluation.classical import arima_orders, classical_forecasters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import current_commit

SHOWN = {"sunspots": (1, 2, 3, 5, 10), "co2": (1, 4, 13, 26, 52)}
COLUMNS = ("crps", "mae", "rmse", "mase", "msis", "coverage_50", "coverage_90")


def backtest(name: str, horizon: int, stride: int, season: int, orders, samples: int) -> dict:
    corpus = load_statsmodels_series(name)
    series = corpus.unscale(corpus.full()[:, 0])  # the data's units, float64
    sizes = corpus.sizes()
    train = series[: sizes["train"]]
    valid = series[sizes["train"] : corpus.test_start]
    began = time.perf_counter()
    forecasters = classical_forecasters(train, valid, season, orders=orders, num_samples=samples)
    fitted = time.perf_counter()
    scores = rolling_origin(series, forecasters, corpus.test_start, horizon, stride, season=1)
    done = time.perf_counter()
    return {
        "series": name,
        "rows": sizes,
        "horizon": horizon,
        "stride": stride,
        "model_season": season,
        "scaling_season": 1,
        "samples": samples,
        "fit_seconds": round(fitted - began, 1),
        "backtest_seconds": round(done - fitted, 1),
        "methods": {
            method: {
                "fitted": forecasters[method].describe(),
                "validation": {
                    str(k): v for k, v in getattr(forecasters[method], "validation", {}).items()
                },
                **scores[method],
            }
            for method in forecasters
        },
    }


def table(result: dict) -> str:
    """Markdown rows: every method at the shown horizons and the mean over all horizons."""
    shown = SHOWN[result["series"]]
    lines = [
        f"#### {result['series']}: H = {result['horizon']}, stride {result['stride']}, "
        f"{next(iter(result['methods'].values()))['origins']} origins, "
        f"model season {result['model_season']}",
        "",
        "| method (fitted) | h | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for method, scores in result["methods"].items():
        label = f"{method} ({scores['fitted']})"
        for h in shown:
            values = " | ".join(f"{scores[c][h - 1]:.3g}" for c in COLUMNS)
            lines.append(f"| {label} | {h} | {values} |")
            label = ""
        means = " | ".join(f"{sum(scores[c]) / len(scores[c]):.3g}" for c in COLUMNS)
        lines.append(f"| | mean 1–{result['horizon']} | {means} |")
    return "\n".join(lines)


def header(argv: list[str]) -> str:
    """The command and the commit that produced the results."""
    commit = current_commit()
    command = " ".join(["OMP_NUM_THREADS=1 python benchmarks/forecast_baselines.py", *argv])
    return (
        f"Produced by `{command}` on commit {commit}. Scores in the data's units; MASE and "
        "MSIS scaled by each origin's naive one-step error (m = 1); every horizon of every "
        "metric is in results.json.\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/forecast-baselines"))
    parser.add_argument("--series", nargs="+", default=["sunspots", "co2"], choices=list(SHOWN))
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--co2-stride", type=int, default=4)
    parser.add_argument("--co2-d", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    settings = {
        "sunspots": dict(horizon=10, stride=1, season=11, orders=arima_orders()),
        "co2": dict(
            horizon=52, stride=args.co2_stride, season=52, orders=arima_orders(d=args.co2_d)
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.series:
        result = backtest(name, samples=args.samples, **settings[name])
        results.append(result)
        print(table(result), "\n", flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        tables = "\n\n".join(table(r) for r in results)
        (args.out / "results.md").write_text(header(sys.argv[1:]) + tables + "\n")


if __name__ == "__main__":
    main()
