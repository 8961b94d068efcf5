"""Fixed-seed ELBO traces of short runs, for checking that a change leaves an estimator alone.

Writes the per-window ELBO of four short TBPTT runs (mean-field with brnn_ptb.py's row prior and
the one-sample KL, mean-field with the per-weight mixture and the computed KL, Gal, sharpening)
to a JSON file; ``--compare OLD.json`` prints which traces are identical. To compare against an
older commit: ``git worktree add /tmp/old REV`` then
``PYTHONPATH=/tmp/old .venv/bin/python benchmarks/elbo_traces.py /tmp/old.json`` and
``.venv/bin/python benchmarks/elbo_traces.py /tmp/new.json --compare /tmp/old.json``.
"""

from __future__ import annotations

import argparse
import json

import pyro
import torch

from bayesrnn.inference import TBPTTTrainer, TrainerConfig, make_guide
from bayesrnn.models import GaussianPrior, LanguageModel, ScaleMixturePrior, brnn_ptb_prior

RUNS = {
    "mean-field, row prior, one-sample KL": ("mean_field", brnn_ptb_prior(), {"kl": "sample"}),
    "mean-field, eq. 18 prior, computed KL": ("mean_field", ScaleMixturePrior(), {}),
    "gal": ("gal", GaussianPrior(1.0), {"input": 0.3, "hidden": 0.3, "embedding": 0.1}),
    "sharpening, row prior": ("sharpened", brnn_ptb_prior(), {"kl": "sample"}),
}


def traces() -> dict[str, list[float]]:
    out = {}
    for name, (guide_name, prior, options) in RUNS.items():
        torch.manual_seed(0)
        pyro.set_rng_seed(0)
        pyro.clear_param_store()
        keep = () if guide_name == "gal" else ("decoder.bias",)
        model = LanguageModel(50, 16, 16, 2, prior=prior, deterministic=keep)
        guide = make_guide(guide_name, model, **options)
        stream = torch.randint(0, 50, (4 * 80,))
        config = TrainerConfig(batch_size=4, bptt=10, epochs=2, lr=0.5, progress=False)
        out[name] = TBPTTTrainer(model, guide, stream, config=config).fit().elbo
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--compare", default=None, help="an earlier output to compare with")
    args = parser.parse_args()
    now = traces()
    with open(args.output, "w") as handle:
        json.dump(now, handle)
    if args.compare:
        with open(args.compare) as handle:
            before = json.load(handle)
        for name, trace in now.items():
            old = before.get(name)
            if old is None:
                print(f"{name}: not in {args.compare}")
            elif old == trace:
                print(f"{name}: identical ({len(trace)} windows)")
            else:
                gap = max(abs(a - b) for a, b in zip(old, trace, strict=True))
                print(f"{name}: differs (largest gap {gap:.4g} nats)")


if __name__ == "__main__":
    main()
