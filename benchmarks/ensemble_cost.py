"""Training cost of a deep ensemble of K members against one point estimate, per window.

The default run's language model (embedded corpus, 1 × 128 LSTM, embedding 128, batch 20,
35 steps, scale-mixture prior, SGD at lr 1, clipping at 5) trained by ``TBPTTTrainer`` with
``EnsembleGuide(members=K)``. K = 1 is one MAP network: its weights carry no draw dim, so it
runs PyTorch's fused LSTM kernel; K > 1 runs the K members as one batch of K·B sequences with
(K, …) weights, a time loop of batched matmuls. Seconds per window are the difference of two
fits (W and 2 windows) divided by W − 2, so building the trainer does not count; K values are
interleaved and each repeated, the minimum kept.

Run: ``PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/ensemble_cost.py [--members 1 5]
[--windows 22] [--repeats 3]``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import time

import torch

from bayesrnn.data import load_embedded_corpus
from bayesrnn.inference import EnsembleGuide, TBPTTTrainer, TrainerConfig
from bayesrnn.models import LanguageModel, ScaleMixturePrior


def fit_seconds(members: int, windows: int, train: torch.Tensor, vocab: int) -> float:
    torch.manual_seed(0)
    model = LanguageModel(vocab, 128, 128, num_layers=1, prior=ScaleMixturePrior())
    guide = EnsembleGuide(model, members=members, seed=0)
    config = TrainerConfig(
        batch_size=20, bptt=35, epochs=1, lr=1.0, clip_norm=5.0, max_windows=windows,
        progress=False,
    )  # fmt: skip
    trainer = TBPTTTrainer(model, guide, train, config=config)
    began = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--windows", type=int, default=22)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = load_embedded_corpus()
    best: dict[int, float] = {}
    for _ in range(args.repeats):
        for k in args.members:
            span = fit_seconds(k, args.windows, corpus.train, corpus.vocab_size)
            span -= fit_seconds(k, 2, corpus.train, corpus.vocab_size)
            per_window = span / (args.windows - 2)
            best[k] = min(best.get(k, float("inf")), per_window)
    base = best[min(best)]
    print(f"{'members':>8} {'s/window':>9} {'x K=' + str(min(best)):>8} {'per member':>11}")
    for k, seconds in sorted(best.items()):
        print(f"{k:>8} {seconds:>9.3f} {seconds / base:>8.2f} {seconds / base / k:>11.2f}")


if __name__ == "__main__":
    main()
