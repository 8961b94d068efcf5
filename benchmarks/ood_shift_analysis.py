"""Look into ``ood_shift.py``'s per-sentence scores (``<unk>`` positions left out, or kept in the
``-include`` files): for each
method, the AUROC of each sentence-level score without the length normalisation, the AUROC of
the scored length alone, and within PTB each score's Spearman correlation with the sentence's
mean predictive entropy and observed NLL (does a score follow how broad or how surprised the
model is, rather than how much its draws disagree?), and within each text each score's
correlation with the sentence's ``<unk>`` share (does it count unknown words?); each score's
AUROC against only the foreign sentences free of ``<unk>``, and the AUROC of the next-token MI
divided by the entropy and of the observed token reverse MI divided by the observed NLL (does
the disagreement grow faster than the surprise?).

Run after ``ood_shift.py``: ``.venv/bin/python benchmarks/ood_shift_analysis.py`` (character
level: ``--work ~/.cache/bayesrnn-ood-shift-char --out benchmarks/results/ood-shift/char``)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from bayesrnn.evaluation.ood import auroc
from bayesrnn.evaluation.sentence_ood import SENTENCE_SCORES


def _ranks(x: torch.Tensor) -> torch.Tensor:
    order = x.argsort()
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(x.numel(), dtype=torch.float64)
    return ranks  # ties broken by order: the scores here are continuous


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of the ranks."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def analyse(saved: dict) -> dict:
    inside, outside = saved["in"], saved["out"]
    out: dict = {
        "auroc_scored_length": auroc(inside["predicted"].double(), outside["predicted"].double())
    }
    for name in SENTENCE_SCORES:  # the sentence's total, not per token
        whole_in = inside[name] * inside["predicted"]
        whole_out = outside[name] * outside["predicted"]
        out[f"auroc_{name}_unnormalised"] = auroc(whole_in, whole_out)
    names = [n for n in inside if n not in ("predicted", "kept", "unk_share")]
    if "unk_share" in inside:  # does a score count unknown words? rank correlation per text
        out["spearman_with_unk_share"] = {
            name: {
                "in": spearman(inside[name], inside["unk_share"]),
                "out": spearman(outside[name], outside["unk_share"]),
            }
            for name in names
        }
    if "unk_share" in outside:
        clean = outside["unk_share"] == 0
        out["foreign_sentences_without_unk"] = int(clean.sum())
        out["auroc_foreign_without_unk"] = {
            name: auroc(inside[name], outside[name][clean]) if clean.any() else None
            for name in names
        }
    for top, bottom in (
        ("mutual_information", "predictive_entropy"),
        ("observed_token_rmi", "observed_nll"),
    ):
        out[f"auroc_{top}_over_{bottom}"] = auroc(
            inside[top] / inside[bottom], outside[top] / outside[bottom]
        )
    out["spearman_in_ptb"] = {
        name: {
            "with_entropy": spearman(inside[name], inside["predictive_entropy"]),
            "with_observed_nll": spearman(inside[name], inside["observed_nll"]),
        }
        for name in names
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/bayesrnn-ood-shift"))
    parser.add_argument("--out", default="benchmarks/results/ood-shift/text-scores")
    args = parser.parse_args()
    results = {}
    for path in sorted((Path(args.work) / "sentences").glob("*.pt")):
        results[path.stem] = analyse(torch.load(path))
    (Path(args.out) / "analysis.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
