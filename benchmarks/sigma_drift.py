"""How far the mean-field σ moves during training of the ``cpu-small`` language model.

The ``cpu-small`` Bayes-by-Backprop runs with the default initial σ end with a KL of about 176
nats per token, barely below where they start (183): the q stays a point estimate with a little
noise although the ELBO would widen it. A hypothesis for why: a window's loss is NLL/B +
KL/(C·B) (B sequences, C windows an epoch), and for σ far below the prior's scale the KL's
derivative in ρ (σ = softplus(ρ) ≈ e^ρ) is about −1, so plain SGD at the rate set for the
weights moves log σ by about lr/(C·B) a window: lr/B = 0.05 an epoch at lr 1, B = 20.
This trains the study's ``bbb-row-auto`` model (row-wise prior, ``init_scale="auto"``, the KL
at full weight from the start: its strongest push on σ) for a few epochs with the study's
schedule and prints, per weight site, the median σ before and after and the mean change of
log σ, beside that estimate.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sigma_drift.py --data-dir ../shared/data``
"""

from __future__ import annotations

import argparse

import reproduce  # the study beside this script: its methods, model builder and trainer
import torch

from bayesrnn.data import load_ptb


def sigmas(guide) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {site: guide.scale(site).detach().clone() for site in guide.site_names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--method", default="bbb-row-auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    corpus = load_ptb(args.data_dir)
    train = corpus.train[: len(corpus.train) // 10]
    method = reproduce.METHODS[args.method]
    model, guide = reproduce.build(method, corpus.vocab_size, len(train))
    config = reproduce.study_config(method, args.epochs, args.seed, progress=True)
    if not getattr(guide, "rho", None):
        raise SystemExit(f"{args.method} has no mean-field σ: nothing to measure")
    trainer = reproduce.make_trainer(method, model, guide, train, corpus.valid[:2000], config)
    before = sigmas(guide)
    history = trainer.fit()
    after = sigmas(guide)
    rates = [config.learning_rate(epoch) for epoch in range(args.epochs)]
    print(
        f"{args.method}: {args.epochs} epoch(s) at learning rates {rates}, "
        f"B = {config.batch_size}, N = {len(train)} training tokens"
    )
    print(f"KL pull on log σ over the run, Σ lr/B: {sum(rates) / config.batch_size:+.4f}")
    print("| site | weights | median σ before | median σ after | mean Δ log σ |")
    print("|---|---:|---:|---:|---:|")
    for site, start in before.items():
        end = after[site]
        change = float((end.log() - start.log()).mean())
        print(
            f"| {site} | {start.numel()} | {float(start.median()):.5f} | "
            f"{float(end.median()):.5f} | {change:+.4f} |"
        )
    if history.kl:  # each window's KL share, times C: the whole KL
        per_token = [k * history.epoch_steps[0] / len(train) for k in history.kl]
        print("KL per token by window, first and last:", f"{per_token[0]:.1f}, {per_token[-1]:.1f}")


if __name__ == "__main__":
    main()
