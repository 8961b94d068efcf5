"""Token by token, against how often the predicted word occurs in the training text: does a
posterior disagree less on the reviews' known words because they are commoner words?

The closed vocabulary turns every review word the training slice lacks into ``<unk>``, and those
predictions are left out, so the reviews' scored tokens may be commoner training words than
PTB's. This scores both texts of ``ood_shift.py`` once per method (MC, each draw kept for the
whole text), keeps the predictions that neither read nor predict ``<unk>``, and reports per
side the median training count of the predicted words, and in bins of that count (the same
bins for both sides) each side's mean mutual information and observed-token reverse MI and
the token-level AUROC of each (reviews positive). If within every bin the reviews score at
least as high, the overall deficit is the mix of word frequencies, not the text.

Run after ``ood_shift.py`` (it reuses its data and run folders):
``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ood_shift_tokens.py --methods gal ensemble``
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from collections import Counter
from pathlib import Path

import torch
from ood_shift import draws_for, prepare, text_pass  # the sibling script

from bayesrnn.evaluation.ood import auroc
from bayesrnn.evaluation.sentence_ood import oov_positions

BINS = (1, 10, 100, 1000, 10**9)  # training counts: [1, 10), [10, 100), ...
SHOWN = ("mutual_information", "observed_token_rmi", "observed_nll", "predictive_entropy")


def _predicted(stream: torch.Tensor, batch: int) -> torch.Tensor:
    """Stream position of each prediction, in ``evaluate_stream``'s order."""
    steps = stream.numel() // batch
    index = torch.arange((steps - 1) * batch)
    return (index % batch) * steps + index // batch + 1


def tokens(trained, text: str, samples: int, counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each scored prediction's values and its predicted word's training count."""
    stream, values, _, batch = text_pass(trained, text, samples)
    positions = _predicted(stream, batch)
    keep = ~oov_positions(stream, trained.vocabulary.unk_id)[positions]
    out = {name: values[name][keep] for name in SHOWN}
    out["count"] = counts[stream[positions][keep]]
    return out


def compare(inside: dict, outside: dict) -> dict:
    result: dict = {
        "median_count": {
            "in": float(inside["count"].median()),
            "out": float(outside["count"].median()),
        },
        "overall": {name: auroc(inside[name], outside[name]) for name in SHOWN},
        "bins": [],
    }
    for low, high in itertools.pairwise(BINS):
        a = (inside["count"] >= low) & (inside["count"] < high)
        b = (outside["count"] >= low) & (outside["count"] < high)
        row: dict = {"counts": [low, high], "tokens": {"in": int(a.sum()), "out": int(b.sum())}}
        if a.sum() >= 20 and b.sum() >= 20:
            for name in SHOWN:
                row[name] = {
                    "mean_in": float(inside[name][a].mean()),
                    "mean_out": float(outside[name][b].mean()),
                    "auroc": auroc(inside[name][a], outside[name][b]),
                }
        result["bins"].append(row)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/bayesrnn-ood-shift"))
    parser.add_argument("--out", default="benchmarks/results/ood-shift/text-scores")
    parser.add_argument("--methods", nargs="+", default=["gal", "ensemble"])
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import bayesrnn

    work = Path(args.work)
    prepared = prepare(Path(args.data_dir), work, 0.1, args.sentences, args.seed)
    target = Path(args.out) / "tokens.json"
    results = json.loads(target.read_text()) if target.is_file() else {}
    for method in args.methods:
        trained = bayesrnn.load_run(work / "runs" / method)
        vocab = trained.vocabulary
        seen = Counter((prepared["data"] / "train.txt").read_text().split())
        counts = torch.tensor([seen.get(word, 0) for word in vocab.itos], dtype=torch.long)
        samples = draws_for(method, args.samples)
        inside = tokens(trained, prepared["inside"], samples, counts)
        outside = tokens(trained, prepared["outside"], samples, counts)
        results[method] = compare(inside, outside) | {"num_samples": samples}
        target.write_text(json.dumps(results, indent=1))
        print(json.dumps({method: results[method]}), flush=True)


if __name__ == "__main__":
    main()
