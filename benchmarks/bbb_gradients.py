"""Why Bayes by Backprop stalls with the per-weight scale mixture: gradient norms per term.

For the ``cpu-small`` model (2 × 200 LSTM, PTB vocabulary, the first 10% of the training
stream, batch 20, BPTT 20) at initialisation, over the first few windows, prints the norm of
the data gradient (∇ NLL / B) and of the KL gradient (∇ KL / (C·B)) over all guide
parameters, the norm of their sum, and the factor global-norm clipping at 5 multiplies the
data step by, for each prior (per weight, per row as brnn_ptb.py) and KL estimator (one
sample, expected).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bbb_gradients.py --data-dir ../shared/data``
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bayesrnn.app.config_files import resolve_config
from bayesrnn.data import load_ptb
from bayesrnn.data.streams import batchify
from bayesrnn.inference import make_guide
from bayesrnn.inference.estimators.elbo import window_terms
from bayesrnn.inference.runtime.tbptt import Window, plan_windows, window_batch
from bayesrnn.models import LanguageModel, ScaleMixturePrior, brnn_ptb_prior

SMALL = resolve_config("zaremba-small")


def gradient_norms(model, guide, inputs, targets, windows: int, batch: int) -> dict[str, float]:
    params = [p for p in guide.parameters() if p.requires_grad]
    terms = window_terms(model, guide, inputs, targets)
    data = torch.autograd.grad(terms.nll / batch, params, retain_graph=True)
    kl = torch.autograd.grad(terms.kl / (windows * batch), params)
    norm = lambda grads: float(torch.sqrt(sum(g.square().sum() for g in grads)))  # noqa: E731
    total = norm([d + k for d, k in zip(data, kl, strict=True)])
    return {
        "data": norm(data),
        "kl": norm(kl),
        "total": total,
        "clip": min(1.0, 5.0 / total),
        "kl_per_weight": float(terms.kl.detach()) / sum(p.numel() for p in guide.loc.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--windows", type=int, default=5, help="windows measured per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--init-scales", nargs="+", default=["auto"], help="guide init_scale values compared"
    )
    parser.add_argument("--kls", nargs="+", default=["sample", "expected"])
    args = parser.parse_args()
    corpus = load_ptb(args.data_dir)
    train = corpus.train[: len(corpus.train) // 10]
    data = batchify(train, SMALL.trainer.batch_size)
    plan = plan_windows(data.shape[0], SMALL.trainer.bptt)
    priors = {"per weight": ScaleMixturePrior(), "per row (brnn_ptb.py)": brnn_ptb_prior()}
    print(f"{len(plan)} windows per epoch, batch {SMALL.trainer.batch_size}")
    print(
        "| prior | KL estimator | initial σ | ‖∇ data‖ | ‖∇ KL/C‖ | ‖∇ total‖ | clip factor "
        "| KL/weight |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    variants = [(k, i) for k in args.kls for i in args.init_scales]
    for prior_name, prior in priors.items():
        for kl, init in variants:
            torch.manual_seed(args.seed)
            model = LanguageModel(
                corpus.vocab_size,
                SMALL.model.embedding_size,
                SMALL.model.hidden_size,
                SMALL.model.num_layers,
                prior=prior,
                deterministic=("decoder.bias",),
                init_range=SMALL.model.init_range,
            )
            init_scale = init if init in ("auto", "fortunato") else float(init)
            guide = make_guide("mean_field", model, kl=kl, init_scale=init_scale)
            rows = [
                gradient_norms(
                    model,
                    guide,
                    *window_batch(data, Window(w * SMALL.trainer.bptt, SMALL.trainer.bptt)),
                    len(plan),
                    SMALL.trainer.batch_size,
                )
                for w in range(args.windows)
            ]
            mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
            print(
                f"| {prior_name} | {kl} | {init} | {mean['data']:.2f} | {mean['kl']:.2f} | "
                f"{mean['total']:.2f} | {mean['clip']:.3f} | {mean['kl_per_weight']:.3f} |"
            )


if __name__ == "__main__":
    main()
