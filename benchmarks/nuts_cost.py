"""Seconds per NUTS iteration on the sunspots forecaster, by hidden size, with and without JIT.

One chain of ``--warmup`` + ``--samples`` iterations of :func:`bayesrnn.inference.mcmc.run_nuts`
on the forecast preset's model (1-layer LSTM, Gaussian prior of scale 1, residual) over the
whole training series cut into the preset's 4 parallel sequences, as ``guide.name=nuts`` runs it.
Prints seconds per iteration, the mean tree depth and the divergences.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nuts_cost.py --hidden 4 8 16 --jit``
"""

from __future__ import annotations

import argparse

import pyro

from bayesrnn.data.series import load_statsmodels_series
from bayesrnn.data.streams import batchify
from bayesrnn.inference.mcmc import nuts_weight_count, run_nuts
from bayesrnn.models import GaussianPrior, SequenceRegressor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[4])
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--jit", action="store_true", help="also time jit_compile=True")
    options = parser.parse_args()
    corpus = load_statsmodels_series("sunspots")
    data = batchify(corpus.train, 4)
    inputs, targets = data[:-1], data[1:]
    for hidden in options.hidden:
        for jit in (False, True) if options.jit else (False,):
            pyro.set_rng_seed(0)
            model = SequenceRegressor(1, hidden, prior=GaussianPrior(1.0), residual=True)
            result = run_nuts(
                model,
                (inputs, targets),
                num_chains=1,
                num_samples=options.samples,
                warmup_steps=options.warmup,
                jit_compile=jit,
                progress=False,
            )
            iterations = options.warmup + options.samples
            print(
                f"hidden {hidden} ({nuts_weight_count(model)} weights, {tuple(inputs.shape)} "
                f"inputs) jit={jit}: {result.seconds / iterations:.3f} s/iteration, tree depth "
                f"{float(result.stats['tree_depth'].mean()):.1f}, divergences "
                f"{int(result.stats['diverging'].sum())}",
                flush=True,
            )


if __name__ == "__main__":
    main()
