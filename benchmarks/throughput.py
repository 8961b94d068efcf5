"""Throughput of bayesrnn's training paths against plain PyTorch, measured in the same run.

Part 1 (issue 2): forward + backward of a 2 × 650 BayesianLSTM with one Gaussian weight draw
per call (batch 20, 35 steps) against ``torch.nn.LSTM`` of the same size.
Part 2 (issues 3 and 16): ``TBPTTTrainer.fit`` per window (forward, ELBO, backward, clipping,
SGD) of a 2 × 650 LSTM language model (vocabulary 10,000, batch 20, 35 steps) for each method as
its preset runs it, against the same trainer on a plain network (``prior=None``): one thread by
default, the minimum over interleaved repeats. Targets (issue 16): mean-field ≤ 1.4×,
sharpening ≤ 2.0×.

Run: ``.venv/bin/python benchmarks/throughput.py [--repeats 3] [--kl-every 8] [--threads 1]
[--device cpu]``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import pyro
import torch
from torch import nn

from bayesrnn.inference import TBPTTTrainer, TrainerConfig, make_guide
from bayesrnn.inference.guides.mean_field import MeanFieldGuide
from bayesrnn.models import BayesianLSTM, LanguageModel, ScaleMixturePrior, brnn_ptb_prior

VOCAB, HIDDEN, LAYERS, BATCH, STEPS = 10_000, 650, 2, 20, 35


def median_seconds(step: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def layer_benchmark(repeats: int, device: torch.device) -> list[tuple[str, float]]:
    x = torch.randn(STEPS, BATCH, HIDDEN, device=device)
    plain = nn.LSTM(HIDDEN, HIDDEN, LAYERS).to(device)

    def plain_step():
        plain.zero_grad()
        out, _ = plain(x)
        out.sum().backward()

    bayes = BayesianLSTM(HIDDEN, HIDDEN, LAYERS).to(device)
    guide = MeanFieldGuide(bayes).to(device)

    def bayes_step():
        guide.zero_grad()
        weights = {s: guide.distribution(s).rsample() for s in guide.site_names}
        out, _ = pyro.poutine.condition(bayes, data=weights)(x)
        out.sum().backward()

    return [
        ("torch.nn.LSTM fwd+bwd", median_seconds(plain_step, repeats)),
        ("BayesianLSTM, one Gaussian draw", median_seconds(bayes_step, repeats)),
    ]


def trainer_fit(model, guide, device: torch.device, windows: int, **config):
    """``TBPTTTrainer.fit`` over ``windows`` windows of a synthetic stream: the public path."""
    stream = torch.randint(0, VOCAB, (BATCH * (STEPS * windows + 1),))
    options = dict(batch_size=BATCH, bptt=STEPS, device=str(device), progress=False)
    options.update(config)

    def run():
        TBPTTTrainer(model, guide, stream, config=TrainerConfig(**options)).fit()

    return run


def lm_methods(device: torch.device, windows: int, kl_every: int):
    """Each method as the presets run it: fortunato-medium (brnn_ptb.py's row prior, one-sample
    KL), its sharpened variant, and the paper's per-weight mixture with the computed KL."""
    preset = dict(optimizer="sgd", lr=1.0, clip_norm=5.0)

    def plain():
        model = LanguageModel(VOCAB, HIDDEN, HIDDEN, LAYERS, prior=None)
        return trainer_fit(model, make_guide("none", model), device, windows, **preset)

    def bayesian(guide_name, prior, every, **guide_options):
        def build():
            model = LanguageModel(
                VOCAB, HIDDEN, HIDDEN, LAYERS, prior=prior, deterministic=("decoder.bias",)
            )
            guide = make_guide(guide_name, model, **guide_options)
            return trainer_fit(model, guide, device, windows, kl_every=every, **preset)

        return build

    row = brnn_ptb_prior()
    weight = ScaleMixturePrior(pi=0.25, sigma1=math.exp(-1), sigma2=math.exp(-7))
    return {
        "plain network, same trainer": plain,
        "mean-field, preset, KL every window": bayesian("mean_field", row, 1, kl="sample"),
        f"mean-field, preset, KL every {kl_every}": bayesian(
            "mean_field", row, kl_every, kl="sample"
        ),
        f"mean-field, eq. 18 prior, KL every {kl_every}": bayesian(
            "mean_field", weight, kl_every, kl="expected"
        ),
        "sharpening, preset, KL every window": bayesian("sharpened", row, 1, kl="sample"),
        f"sharpening, preset, KL every {kl_every}": bayesian(
            "sharpened", row, kl_every, kl="sample"
        ),
    }


def interleaved_minimum(builds: dict, repeats: int, per: int) -> list[tuple[str, float]]:
    """Seconds per window: each method once per round, rounds repeated, the minimum kept."""
    runs = {}
    for name, build in builds.items():
        pyro.clear_param_store()
        runs[name] = build()
        runs[name]()  # warm-up (allocations, compiled kernels)
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            began = time.perf_counter()
            run()
            best[name] = min(best[name], (time.perf_counter() - began) / per)
    return list(best.items())


TARGETS = {
    "BayesianLSTM, one Gaussian draw": 1.3,
}


def print_table(title: str, rows: list[tuple[str, float]]) -> None:
    base = rows[0][1]
    tokens = STEPS * BATCH
    print(f"\n{title}")
    print(f"| {'path':<34} | {'ms/step':>8} | {'tokens/s':>9} | {'ratio':>6} | {'target':>6} |")
    print(f"|{'-' * 36}|{'-' * 10}:|{'-' * 10}:|{'-' * 7}:|{'-' * 7}:|")
    for name, seconds in rows:
        target = TARGETS.get(name)
        if target is None and name.startswith("mean-field"):
            target = 1.4
        if target is None and name.startswith("sharpening"):
            target = 2.0
        target_text = "" if target is None else f"≤{target}"
        print(
            f"| {name:<34} | {seconds * 1e3:8.1f} | {tokens / seconds:9.0f} | "
            f"{seconds / base:6.2f} | {target_text:>6} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--windows", type=int, default=8, help="windows per timed fit")
    parser.add_argument("--kl-every", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["layer", "lm"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    if args.only in (None, "layer"):
        print_table(
            "Layer: 2 × 650 LSTM, batch 20, 35 steps, forward + backward",
            layer_benchmark(args.repeats, device),
        )
    if args.only in (None, "lm"):
        builds = lm_methods(device, args.windows, args.kl_every)
        rows = interleaved_minimum(builds, args.repeats, args.windows)
        print_table(
            f"TBPTTTrainer.fit per window: 2 × 650 LSTM LM, vocabulary 10,000, batch 20, 35 "
            f"steps (minimum of {args.repeats} interleaved fits of {args.windows} windows)",
            rows,
        )


if __name__ == "__main__":
    main()
