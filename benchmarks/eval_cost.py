"""Cost of MC evaluation against one posterior-mean pass, on the PTB validation stream.

A small LSTM language model (2 × 200, Zaremba's small shape, vocabulary 10,000) with a
mean-field guide; perplexity over the validation stream with the state carried, evaluation batch
10, windows of 35. The weights need no training for a cost measurement. Prints seconds (wall
and this process's CPU time, steadier on a shared machine) and the ratio cost(S draws) /
(S × cost(posterior mean)); the issue-16 target is at most 0.6. ``--breakdown`` also prints
where one window's time goes. Without the PTB files a synthetic stream of the same vocabulary
is used (the output says so).

Run: ``.venv/bin/python benchmarks/eval_cost.py [--data-dir ../shared/data] [--tokens N]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bayesrnn.inference import MeanFieldGuide, evaluate_stream
from bayesrnn.inference.prediction.mc_draws import mean_field_draws
from bayesrnn.inference.prediction.predictive import (
    _run,
    _target_log_probs,
    posterior_mean,
    sample_weights,
)
from bayesrnn.models import LanguageModel, ScaleMixturePrior

TARGET = 0.6


class TracedMeanField(MeanFieldGuide):
    """The previous path: dense draws of every site through the guide's Pyro trace."""

    def forward(self, *args, **kwargs):
        return super().forward(*args, **kwargs)


def timed(fn) -> tuple[float, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result.perplexity


def load_stream(data_dir: Path, tokens: int | None) -> tuple[torch.Tensor, int, str]:
    try:
        from bayesrnn.data import load_ptb

        corpus = load_ptb(data_dir)
        stream, vocab, source = corpus.valid, corpus.vocab_size, "PTB validation tokens"
    except (FileNotFoundError, OSError, ValueError) as error:
        print(f"PTB not found ({error}); using a SYNTHETIC uniform stream of 10,000 word types")
        generator = torch.Generator().manual_seed(0)
        stream = torch.randint(0, 10_000, (tokens or 73_760,), generator=generator)
        vocab, source = 10_000, "synthetic tokens"
    return (stream if tokens is None else stream[:tokens]), vocab, source


def breakdown(model, guide, stream: torch.Tensor, repeats: int = 20) -> None:
    """CPU milliseconds of one window's pieces (batch 10, 35 steps)."""
    data = stream[: 10 * 36].reshape(10, -1).t()
    inputs, targets = data[:35], data[1:36]
    mean = posterior_mean(guide)
    drawn = sample_weights(guide, inputs, targets)
    hidden = torch.randn(35, 10, 200)
    weight, bias = mean["decoder.weight"], model.decoder.bias.detach()
    logits = torch.nn.functional.linear(hidden, weight, bias)
    pieces = {
        "posterior-mean pass (embedding, LSTM, decoder, normaliser)": lambda: _target_log_probs(
            _run(model, mean, inputs, None)[0], targets
        ),
        "  decoder matmul, 350 × 200 × 10,000 (+ bias)": lambda: torch.nn.functional.linear(
            hidden, weight, bias
        ),
        "  normaliser: target log-probs (fused log-softmax)": lambda: _target_log_probs(
            logits, targets
        ),
        "same pass with drawn weights": lambda: _target_log_probs(
            _run(model, drawn, inputs, None)[0], targets
        ),
        "draw, dense, through the guide's trace (previous)": lambda: sample_weights(
            guide, inputs, targets
        ),
        "draw, dense, site by site (no trace)": lambda: mean_field_draws(
            guide, 1, inputs, rows_only=False
        ),
        "draw, embedding rows read only (default, window redraw)": lambda: mean_field_draws(
            guide, 1, inputs, rows_only=True
        ),
    }
    for site in guide.site_names:
        pieces[f"  q({site}) {tuple(guide.loc[site].shape)}"] = lambda s=site: guide.distribution(
            s
        ).rsample()
    print("\n| one window's piece (1 call) | CPU ms |\n|---|---:|")
    with torch.no_grad():
        for label, fn in pieces.items():
            fn()
            began = time.process_time()
            for _ in range(repeats):
                fn()
            print(f"| {label} | {(time.process_time() - began) / repeats * 1e3:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    parser.add_argument("--data-dir", type=Path, default=default)
    parser.add_argument("--tokens", type=int, default=None, help="use only the first N tokens")
    parser.add_argument("--samples", type=int, nargs="+", default=[10])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--breakdown", action="store_true", help="time one window's pieces")
    parser.add_argument("--all", action="store_true", help="also stacked and previous paths")
    parser.add_argument(
        "--recurrent", type=int, nargs="*", default=[1, 2, 3, 5], help="recurrent_draws to time"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    stream, vocab, source = load_stream(args.data_dir, args.tokens)
    torch.manual_seed(0)
    model = LanguageModel(
        vocab, 200, 200, 2, prior=ScaleMixturePrior(), deterministic=("decoder.bias",)
    )
    guide = MeanFieldGuide(model)
    traced = TracedMeanField(model)
    traced.load_state_dict(guide.state_dict())
    options = dict(batch_size=10, bptt=35)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{len(stream):,} {source}, 2 × 200 LSTM, vocabulary {vocab:,}"
    )
    if args.breakdown:
        breakdown(model, guide, stream)
    evaluate_stream(model, guide, stream[:2000], num_samples=2, **options)  # warm-up
    passes = [timed(lambda: evaluate_stream(model, guide, stream, **options)) for _ in range(2)]
    wall, cpu, ppl = min(passes)  # the faster of two posterior-mean passes
    print(
        "\n| evaluation | wall s | CPU s | perplexity | ratio, wall | ratio, CPU | target |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    print(f"| posterior mean (1 pass) | {wall:.1f} | {cpu:.1f} | {ppl:.1f} | 1.00 | 1.00 | |")
    for samples in args.samples:
        modes = [
            (guide, {}, "default: weight draws, window redraw, embedding rows read"),
            (guide, {"redraw": "stream"}, 'redraw="stream" (weights kept)'),
            (guide, {"decoder": "local"}, 'decoder="local" (logit noise given h)'),
        ]
        modes += [
            (
                guide,
                {"decoder": "local", "recurrent_draws": k},
                f'decoder="local", recurrent_draws={k}',
            )
            for k in args.recurrent
            if k < samples
        ]
        if args.all:
            modes += [
                (guide, {"draws_per_batch": samples}, "all draws stacked in one call"),
                (traced, {}, "previous: dense draws through the guide's trace"),
            ]
        for which, extra, label in modes:
            w, c, p = timed(
                lambda g=which, e=extra, s=samples: evaluate_stream(
                    model, g, stream, num_samples=s, **options, **e
                )
            )
            print(
                f"| MC, S = {samples}, {label} | {w:.1f} | {c:.1f} | {p:.1f} | "
                f"{w / (samples * wall):.2f} | {c / (samples * cpu):.2f} | ≤ {TARGET} |"
            )


if __name__ == "__main__":
    main()
