"""How close MC perplexity with S draws comes to the many-draw value, per estimator option.

Perplexity from S draws, exp(−mean log mean_s p(y|θ_s)), is biased upward for finite S (Jensen:
the log of an average); estimators that share work between draws (``decoder="local"`` with
``recurrent_draws=K`` < S) keep every token's predictive probability unbiased but correlate the
draws, so the bias is larger. This script measures it on a trained mean-field run: a reference
with many independent weight draws, then each option over several seeds, printing the mean
perplexity, its bias against the reference and the spread over seeds. With ``eval_cost.py``'s
cost column it is what the default ``decoder="weights"`` was chosen from.

    .venv/bin/bayesrnn run --out runs/demo          # the default preset: mean-field
    .venv/bin/python benchmarks/mc_quality.py runs/demo --seeds 12
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import bayesrnn
from bayesrnn.data import embedded_split_text
from bayesrnn.inference import evaluate_stream


def perplexity(run, ids: torch.Tensor, seed: int, samples: int, **options) -> float:
    torch.manual_seed(seed)
    tr = run.config.trainer
    batch = min(tr.eval_batch_size, ids.numel() // 2)
    result = evaluate_stream(
        run.model, run.guide, ids, batch_size=batch, bptt=tr.bptt, num_samples=samples, **options
    )
    return result.perplexity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained run's folder (mean-field guide, untied decoder)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--reference", type=int, default=200, help="draws of the reference")
    parser.add_argument("--recurrent", type=int, nargs="*", default=[1, 2, 3, 5])
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = bayesrnn.load_run(args.run)
    ids = run.encode(embedded_split_text("test"))
    began = time.process_time()
    reference = perplexity(run, ids, 10_000, args.reference)
    mean_pass = perplexity(run, ids, 0, None)
    print(
        f"{ids.numel():,} test tokens; reference, {args.reference} weight draws: "
        f"{reference:.3f}; posterior mean: {mean_pass:.3f}"
    )
    options = {'decoder="weights" (default)': {}, 'decoder="local"': {"decoder": "local"}}
    for k in args.recurrent:
        if k < args.samples:
            options[f'decoder="local", recurrent_draws={k}'] = {
                "decoder": "local",
                "recurrent_draws": k,
            }
    print(f"\n| S = {args.samples}, {args.seeds} seeds | mean perplexity | bias | sd over seeds |")
    print("|---|---:|---:|---:|")
    for label, extra in options.items():
        values = [perplexity(run, ids, s, args.samples, **extra) for s in range(args.seeds)]
        mean = statistics.fmean(values)
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"| {label} | {mean:.3f} | {mean - reference:+.3f} | {spread:.3f} |")
    print(f"\n({time.process_time() - began:.0f} CPU s)")


if __name__ == "__main__":
    main()
