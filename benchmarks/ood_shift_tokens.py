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

The same comparison in bins of KL(p̄ ‖ unigram), how far the predictive is from the training
text's word frequencies (add-one smoothed; bins at PTB's quartiles), asks the next question:
do the draws agree more on the reviews because there every draw falls back on the word
frequencies, which all of them learned alike?

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
from ood_shift import draws_for, prepare  # the sibling scripts
from ood_shift_analysis import spearman

from bayesrnn.app.ood_task import file_batch_size
from bayesrnn.app.setup import seed_everything
from bayesrnn.evaluation.ood import auroc
from bayesrnn.evaluation.sentence_ood import StreamDraws, oov_positions
from bayesrnn.inference import evaluate_stream

BINS = (1, 10, 100, 1000, 10**9)  # training counts: [1, 10), [10, 100), ...
SHOWN = ("mutual_information", "observed_token_rmi", "observed_nll", "predictive_entropy")


def _predicted(stream: torch.Tensor, batch: int) -> torch.Tensor:
    """Stream position of each prediction, in ``evaluate_stream``'s order."""
    steps = stream.numel() // batch
    index = torch.arange((steps - 1) * batch)
    return (index % batch) * steps + index // batch + 1


def tokens(trained, text: str, samples: int, counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each scored prediction's values, its predicted word's training count and the KL of its
    predictive from the training unigram (the pass of ``ood_shift.text_pass``, one more
    column)."""
    tr = trained.config.trainer
    stream = trained.encode(text)
    batch = file_batch_size(stream.numel(), tr.eval_batch_size, tr.bptt)
    smoothed = (counts + 1).double()
    unigram = (smoothed / smoothed.sum()).log()
    kl = []

    def window(targets, log_probs, draw_log_probs):
        recorder(targets, log_probs, draw_log_probs)
        lp = log_probs.double()
        kl.append(torch.linalg.vecdot(lp.exp(), lp - unigram).reshape(-1))

    seed_everything(tr.seed + 2)
    with StreamDraws(trained.model) as recorder:
        evaluate_stream(
            trained.model,
            trained.guide,
            stream,
            batch_size=batch,
            bptt=tr.bptt,
            num_samples=samples,
            on_window=window,
            redraw="stream",
        )
    values, _ = recorder.values()
    values["kl_to_unigram"] = torch.cat(kl)
    positions = _predicted(stream, batch)
    keep = ~oov_positions(stream, trained.vocabulary.unk_id)[positions]
    out = {name: values[name][keep] for name in (*SHOWN, "kl_to_unigram")}
    out["count"] = counts[stream[positions][keep]]
    return out


def _binned(inside: dict, outside: dict, key: str, edges) -> list[dict]:
    rows = []
    for low, high in itertools.pairwise(edges):
        a = (inside[key] >= low) & (inside[key] < high)
        b = (outside[key] >= low) & (outside[key] < high)
        row: dict = {
            key: [float(low), float(high)],
            "tokens": {"in": int(a.sum()), "out": int(b.sum())},
        }
        if a.sum() >= 20 and b.sum() >= 20:
            for name in SHOWN:
                row[name] = {
                    "mean_in": float(inside[name][a].mean()),
                    "mean_out": float(outside[name][b].mean()),
                    "auroc": auroc(inside[name][a], outside[name][b]),
                }
        rows.append(row)
    return rows


def compare(inside: dict, outside: dict) -> dict:
    quartiles = torch.quantile(inside["kl_to_unigram"], torch.tensor([0.25, 0.5, 0.75]).double())
    return {
        "median_count": {
            "in": float(inside["count"].median()),
            "out": float(outside["count"].median()),
        },
        "mean_kl_to_unigram": {
            "in": float(inside["kl_to_unigram"].mean()),
            "out": float(outside["kl_to_unigram"].mean()),
        },
        "overall": {name: auroc(inside[name], outside[name]) for name in SHOWN},
        "spearman_mi_kl_in": spearman(inside["mutual_information"], inside["kl_to_unigram"]),
        "bins": _binned(inside, outside, "count", BINS),
        "kl_bins": _binned(inside, outside, "kl_to_unigram", [0.0, *quartiles.tolist(), 1e9]),
    }


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
