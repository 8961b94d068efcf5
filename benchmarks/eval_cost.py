"""Cost of MC evaluation against one posterior-mean pass, on the PTB validation stream.

A small LSTM language model (2 × 200, Zaremba's small shape, vocabulary 10,000) with a
mean-field guide; perplexity over the validation stream with the state carried, evaluation batch
10, windows of 35. The weights need no training for a cost measurement. Prints seconds and the
ratio cost(S draws) / (S × cost(posterior mean)); the target is at most 0.7.

Run: ``.venv/bin/python benchmarks/eval_cost.py [--data-dir ../shared/data] [--tokens N]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bayesrnn.data import load_ptb
from bayesrnn.inference import MeanFieldGuide, evaluate_stream
from bayesrnn.models import LanguageModel, ScaleMixturePrior


def timed(fn) -> tuple[float, float]:
    began = time.perf_counter()
    result = fn()
    return time.perf_counter() - began, result.perplexity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    parser.add_argument("--data-dir", type=Path, default=default)
    parser.add_argument("--tokens", type=int, default=None, help="use only the first N tokens")
    parser.add_argument("--samples", type=int, nargs="+", default=[10, 50])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    corpus = load_ptb(args.data_dir)
    stream = corpus.valid if args.tokens is None else corpus.valid[: args.tokens]
    torch.manual_seed(0)
    model = LanguageModel(
        corpus.vocab_size, 200, 200, 2, prior=ScaleMixturePrior(), deterministic=("decoder.bias",)
    )
    guide = MeanFieldGuide(model)
    options = dict(batch_size=10, bptt=35)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{len(stream):,} validation tokens, 2 × 200 LSTM, vocabulary {corpus.vocab_size:,}"
    )
    mean_seconds, mean_ppl = timed(lambda: evaluate_stream(model, guide, stream, **options))
    print("\n| evaluation | seconds | perplexity | cost / (S × mean pass) | target |")
    print("|---|---:|---:|---:|---:|")
    print(f"| posterior mean (1 pass) | {mean_seconds:.1f} | {mean_ppl:.1f} | 1.00 | |")
    for samples in args.samples:
        modes = (
            (1, "window", "one draw per call"),
            (samples, "window", "all draws in one call"),
            (1, "stream", "one draw per call, weights kept for the stream"),
        )
        for per_call, redraw, label in modes:
            seconds, ppl = timed(
                lambda s=samples, k=per_call, r=redraw: evaluate_stream(
                    model, guide, stream, num_samples=s, draws_per_batch=k, redraw=r, **options
                )
            )
            ratio = seconds / (samples * mean_seconds)
            print(
                f"| MC, S = {samples}, {label} | {seconds:.1f} | {ppl:.1f} | {ratio:.2f} | ≤ 0.70 |"
            )


if __name__ == "__main__":
    main()
