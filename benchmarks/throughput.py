"""Throughput of bayesrnn's training paths against plain PyTorch, measured in the same run.

Part 1 (issue 2): forward + backward of a 2 × 650 BayesianLSTM with one Gaussian weight draw
per call (batch 20, 35 steps) against ``torch.nn.LSTM`` of the same size.
Part 2 (issue 3): one SVI step (forward, ELBO, backward, clipping, optimiser) of a 2 × 650 LSTM
language model (vocabulary 10,000, batch 20, 35 steps) for each method, against a plain PyTorch
LSTM language model trained with SGD.

Run: ``.venv/bin/python benchmarks/throughput.py [--repeats 5] [--device cpu]``. Prints a table
of median step times and their ratio to the baseline. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
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


class PlainLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, HIDDEN)
        self.rnn = nn.LSTM(HIDDEN, HIDDEN, LAYERS)
        self.decoder = nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens, state=None):
        out, state = self.rnn(self.embedding(tokens), state)
        return self.decoder(out), state


def plain_lm_step(device: torch.device) -> Callable[[], None]:
    model = PlainLM().to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=1.0)
    tokens = torch.randint(0, VOCAB, (STEPS + 1, BATCH), device=device)

    def step():
        optimiser.zero_grad(set_to_none=True)
        logits, _ = model(tokens[:-1])
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, VOCAB), tokens[1:].reshape(-1), reduction="sum"
        )
        (loss / BATCH).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimiser.step()

    return step


def trainer_step(model, guide, device: torch.device) -> Callable[[], None]:
    """One window of the real TBPTTTrainer path (the same code `fit` runs)."""
    stream = torch.randint(0, VOCAB, (BATCH * (STEPS * 40 + 1),))
    config = TrainerConfig(batch_size=BATCH, bptt=STEPS, device=str(device), progress=False)
    trainer = TBPTTTrainer(model, guide, stream, config=config)
    trainer.optimizer = trainer._build_optimizer()
    inputs = trainer.train_data[:STEPS]
    targets = trainer.train_data[1 : STEPS + 1]
    return lambda: trainer._step(inputs, targets, 1 / 40, 0, 0)


def lm_methods(device: torch.device) -> dict[str, Callable[[], Callable[[], None]]]:
    mixture = ScaleMixturePrior()

    def mean_field(prior=mixture, kl="expected"):
        def build():
            model = LanguageModel(
                VOCAB, HIDDEN, HIDDEN, LAYERS, prior=prior, deterministic=("decoder.bias",)
            )
            return trainer_step(model, make_guide("mean_field", model, kl=kl), device)

        return build

    def gal(scope):
        def build():
            model = LanguageModel(VOCAB, HIDDEN, HIDDEN, LAYERS)
            guide = make_guide(
                "gal", model, embedding=0.2, input=0.5, hidden=0.2, output=0.5, scope=scope
            )
            return trainer_step(model, guide, device)

        return build

    def zoneout():
        model = LanguageModel(
            VOCAB,
            HIDDEN,
            HIDDEN,
            LAYERS,
            prior=None,
            regularisers={"zoneout_c": 0.25, "zoneout_h": 0.025},
        )
        return trainer_step(model, make_guide("none", model), device)

    def sharpened():
        model = LanguageModel(
            VOCAB, HIDDEN, HIDDEN, LAYERS, prior=mixture, deterministic=("decoder.bias",)
        )
        return trainer_step(model, make_guide("sharpened", model), device)

    def auto_normal():
        model = LanguageModel(VOCAB, HIDDEN, HIDDEN, LAYERS).to(device)
        guide = AutoNormal(model)
        svi = SVI(model, guide, pyro.optim.SGD({"lr": 1e-3}), Trace_ELBO())
        tokens = torch.randint(0, VOCAB, (STEPS + 1, BATCH), device=device)
        return lambda: svi.step(tokens[:-1], tokens[1:])

    return {
        "mean-field (BBB)": mean_field(),
        "mean-field, one-sample KL": mean_field(kl="sample"),
        "mean-field, brnn_ptb.py row prior": mean_field(brnn_ptb_prior(), "sample"),
        "Gal, batch scope": gal("batch"),
        "Gal, sequence scope": gal("sequence"),
        "zoneout": zoneout,
        "sharpening": sharpened,
        "stock AutoNormal + Trace_ELBO": auto_normal,
    }


TARGETS = {
    "BayesianLSTM, one Gaussian draw": 1.3,
    "mean-field (BBB)": 1.5,
    "Gal, batch scope": 1.2,
    "Gal, sequence scope": 1.6,
    "zoneout": 1.6,
    "sharpening": 2.3,
}


def print_table(title: str, rows: list[tuple[str, float]]) -> None:
    base = rows[0][1]
    tokens = STEPS * BATCH
    print(f"\n{title}")
    print(f"| {'path':<34} | {'ms/step':>8} | {'tokens/s':>9} | {'ratio':>6} | {'target':>6} |")
    print(f"|{'-' * 36}|{'-' * 10}:|{'-' * 10}:|{'-' * 7}:|{'-' * 7}:|")
    for name, seconds in rows:
        target = TARGETS.get(name)
        target_text = "" if target is None else f"≤{target}"
        print(
            f"| {name:<34} | {seconds * 1e3:8.1f} | {tokens / seconds:9.0f} | "
            f"{seconds / base:6.2f} | {target_text:>6} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["layer", "lm"], default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    if args.only in (None, "layer"):
        print_table(
            "Layer: 2 × 650 LSTM, batch 20, 35 steps, forward + backward",
            layer_benchmark(args.repeats, device),
        )
    if args.only in (None, "lm"):
        rows = [("plain PyTorch LM + SGD", median_seconds(plain_lm_step(device), args.repeats))]
        for name, build in lm_methods(device).items():
            pyro.clear_param_store()
            rows.append((name, median_seconds(build(), args.repeats)))
        print_table("SVI step: 2 × 650 LSTM LM, vocabulary 10,000, batch 20, 35 steps", rows)


if __name__ == "__main__":
    main()
