"""Multi-step sample paths of a trained sunspots run: a consistency check and rolling origins.

1. The first step of the paths must be the one-step predictive: paths from the end of the
   validation years against ``predict_series``'s MC mixture for the first test year (mean and
   standard deviation of the mixture from its draws' moments).
2. Rolling origins over the test years: from each origin, ``--paths`` paths of ``--horizon``
   years; CRPS by horizon (``crps_empirical`` of the paths) and the coverage of the central 90%
   band, against a random walk N(y_T, h·σ²) with σ the sd of the training years' changes.

Run: ``bayesrnn run --preset forecast --out sun-preset --set evaluation.export=false``, then
``PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/forecast_paths.py sun-preset
[--horizon 10] [--paths 2000]``. Not part of the test suite.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from pyro.ops.stats import crps_empirical

import bayesrnn
from bayesrnn.app.setup import load_data
from bayesrnn.evaluation import crps_gaussian, predict_series, sample_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--paths", type=int, default=2000)
    args = parser.parse_args()
    run = bayesrnn.load_run(args.run)
    corpus = load_data(run.config)
    rows, start = corpus.full(), corpus.test_start
    scale, mean = float(corpus.scale[0]), float(corpus.mean[0])
    times = corpus.full_times()

    torch.manual_seed(0)
    first = sample_paths(run.model, run.guide, rows[:start], 1, 2 * args.paths)[:, 0, 0]
    first = first.double() * scale + mean
    mc = predict_series(run.model, run.guide, rows[: start + 1], start, args.paths)
    loc, sd = mc.loc[:, 0, 0].double() * scale + mean, mc.scale[:, 0, 0].double() * scale
    mixture_sd = float((sd**2 + loc**2).mean() - loc.mean() ** 2) ** 0.5
    print(
        f"step 1 from {times[start - 1]}: {2 * args.paths} paths mean {first.mean():.2f} sd "
        f"{first.std():.2f}; one-step MC mixture of {args.paths} draws mean {loc.mean():.2f} "
        f"sd {mixture_sd:.2f}"
    )

    horizon = args.horizon
    raw = rows[:, 0].double() * scale + mean
    step_sd = float(torch.diff(raw[: corpus.sizes()["train"]]).std())
    steps = torch.arange(1, horizon + 1).double()
    origins = range(start, rows.shape[0] - horizon + 1)
    crps, walk, cover = np.zeros(horizon), np.zeros(horizon), np.zeros(horizon)
    for origin in origins:
        paths = sample_paths(run.model, run.guide, rows[:origin], horizon, args.paths)
        paths = paths[..., 0].double() * scale + mean
        observed = raw[origin : origin + horizon]
        crps += crps_empirical(paths, observed).numpy()
        spread = step_sd * steps.sqrt()
        walk += crps_gaussian(raw[origin - 1].expand(horizon), spread, observed).numpy()
        low, high = torch.quantile(paths, torch.tensor([0.05, 0.95]).double(), 0)
        cover += ((observed >= low) & (observed <= high)).double().numpy()
    count = len(origins)
    print(
        f"{count} origins (first forecast years {times[start]}..{times[origins[-1]]}), "
        f"{args.paths} paths each, data units"
    )
    print("horizon         " + " ".join(f"{h:6d}" for h in range(1, horizon + 1)))
    print("CRPS            " + " ".join(f"{v / count:6.2f}" for v in crps))
    print("random walk CRPS" + " ".join(f"{v / count:6.2f}" for v in walk))
    print("90% coverage    " + " ".join(f"{v / count:6.2f}" for v in cover))


if __name__ == "__main__":
    main()
