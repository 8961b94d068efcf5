"""Epistemic uncertainty under a real shift between corpora: Penn Treebank news against movie
reviews.

Each method trains a 2 x 200 LSTM language model (Zaremba's small shape) on the first
``--train-fraction`` of the PTB training lines through the ``bayesrnn train`` command, then scores
``--sentences`` PTB test sentences (in distribution) against as many sentence-polarity snippets
(Pang & Lee's rt-polarity movie reviews, out of distribution) with ``TrainedRun.ood``: AUROC of
the per-sentence predictive entropy and mutual information (MC over ``--samples`` draws), once
with the predictions that read or predict ``<unk>`` left out (the package's default) and once
with them scored, beside the AUROC of the per-sentence ``<unk>`` share alone.

One process per method, resumable: a method whose result JSON exists is skipped, a method whose
run directory finished training is scored without retraining. The data slices and the run
directories live under ``--work`` (outside the project); the results go to ``--out``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ood_shift.py --data-dir ../shared/data``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from bayesrnn.app.presets import gal_prior_scale

GAL_RATES = {"embedding": 0.1, "input": 0.4, "hidden": 0.2, "output": 0.4}
MIXTURE = ["model.prior=scale_mixture", 'model.deterministic=["decoder.bias"]']


def method_overrides(method: str, train_tokens: int, bptt: int) -> list[str]:
    """``--set`` values of each method on top of the ``zaremba-small`` preset."""
    gal_scale = round(gal_prior_scale(1e-7, 0.5, train_tokens / bptt), 1)
    gaussian = ["model.prior=gaussian", f"model.prior_scale={gal_scale}"]
    if method == "none":
        return []
    if method == "zaremba":
        return ["model.naive_dropout=0.5"]
    if method == "gal":
        return [
            *gaussian,
            "guide.name=gal",
            "guide.mask_scope=sequence",
            *(f"guide.dropout_{site}={rate}" for site, rate in GAL_RATES.items()),
        ]
    if method == "mean_field":
        return [*MIXTURE, "guide.name=mean_field"]
    if method == "sharpened":
        return [*MIXTURE, "guide.name=sharpened", "guide.sigma0=0.02"]
    if method == "ensemble":
        return [*gaussian, "guide.name=ensemble", "guide.members=5"]
    raise SystemExit(f"unknown method {method!r}")


METHODS = ("gal", "mean_field", "sharpened", "zaremba", "none", "ensemble")


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    return [line.strip() for line in path.read_bytes().decode(encoding).splitlines()]


def prepare(data_dir: Path, work: Path, fraction: float, sentences: int, seed: int) -> dict:
    """The training slice as a text folder, and the two sets of sentences to compare."""
    ptb, rt = data_dir / "ptb", data_dir / "rt-polarity"
    if not (ptb / "ptb.train.txt").is_file() or not (rt / "rt-polarity.pos").is_file():
        raise SystemExit(f"{data_dir} lacks ptb/ or rt-polarity/ (see the data README)")
    folder = work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    train = _lines(ptb / "ptb.train.txt")
    train = train[: int(len(train) * fraction)]
    valid = _lines(ptb / "ptb.valid.txt")
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "valid.txt").write_text("\n".join(valid[: len(valid) // 5]) + "\n")
    (folder / "test.txt").write_text("\n".join(_lines(ptb / "ptb.test.txt")) + "\n")
    rng = random.Random(seed)
    inside = [s for s in _lines(ptb / "ptb.test.txt") if len(s.split()) >= 2]
    # the snippets are Windows-1252 bytes (curly quotes, accented names), not UTF-8
    reviews = [
        s
        for name in ("rt-polarity.pos", "rt-polarity.neg")
        for s in _lines(rt / name, "cp1252")
        if len(s.split()) >= 2
    ]
    return {
        "data": folder,
        "train_tokens": sum(len(s.split()) + 1 for s in train),
        "inside": "\n".join(rng.sample(inside, sentences)) + "\n",
        "outside": "\n".join(rng.sample(reviews, sentences)) + "\n",
    }


def train(method: str, run: Path, prepared: dict, epochs: int, seed: int) -> float:
    """Train through the command (skipped when the run finished); returns seconds spent."""
    history = run / "history.json"
    if (
        history.is_file()
        and len(json.loads(history.read_text()).get("valid_perplexity") or []) >= epochs
    ):
        return 0.0  # trained to the end already (checkpoint.pt stays beside a finished run)
    argv = [
        sys.executable, "-m", "bayesrnn", "train", "--out", str(run),
        "--preset", "zaremba-small", "--data", str(prepared["data"]),
        "--set", f"trainer.epochs={epochs}", "--set", f"trainer.seed={seed}",
    ]  # fmt: skip
    for value in method_overrides(method, prepared["train_tokens"], 20):
        argv += ["--set", value]
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def score(method: str, run: Path, prepared: dict, samples: int) -> dict:
    import bayesrnn

    trained = bayesrnn.load_run(run)
    history = json.loads((run / "history.json").read_text())
    result: dict = {"method": method, "valid_perplexity": history.get("valid_perplexity")}
    for oov in ("exclude", "include"):
        start = time.perf_counter()
        report = trained.ood(
            text=prepared["outside"], in_text=prepared["inside"], num_samples=samples, oov=oov
        )
        m = report.metrics
        result[oov] = {
            "auroc_entropy": m["scores"]["predictive_entropy"]["auroc"],
            "auroc_mutual_information": m["scores"]["mutual_information"]["auroc"],
            "mean_mi": {
                "in": m["scores"]["mutual_information"]["mean_in"],
                "out": m["scores"]["mutual_information"]["mean_out"],
            },
            "sentences": m["sentences"],
            "positions_excluded": m["positions_excluded"],
            "seconds": time.perf_counter() - start,
        }
        result["unk_rate"] = m["unk_rate"]
        result["auroc_unk_share"] = m["unk_share_baseline"]["auroc"]
    return result


def markdown(results: list[dict]) -> str:
    head = (
        "| method | valid ppl (last) | AUROC entropy (excl. / incl. <unk>) | AUROC MI (excl. / "
        "incl.) | MI in → out (excl.) | train s |\n|---|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for r in results:
        ex, inc = r["exclude"], r["include"]
        ppl = r.get("valid_perplexity") or [float("nan")]
        rows.append(
            f"| {r['method']} | {ppl[-1]:.1f} | {ex['auroc_entropy']:.3f} / "
            f"{inc['auroc_entropy']:.3f} | {ex['auroc_mutual_information']:.3f} / "
            f"{inc['auroc_mutual_information']:.3f} | {ex['mean_mi']['in']:.4f} → "
            f"{ex['mean_mi']['out']:.4f} | {r['train_seconds']:.0f} |"
        )
    base = results[0] if results else None
    tail = (
        f"\n<unk> rate: PTB {base['unk_rate']['in']:.3f}, reviews {base['unk_rate']['out']:.3f}; "
        f"AUROC of the per-sentence <unk> share alone: {base['auroc_unk_share']:.3f}\n"
        if base
        else ""
    )
    return head + "\n".join(rows) + "\n" + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/bayesrnn-ood-shift"))
    parser.add_argument("--out", default="benchmarks/results/ood-shift")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prepared = prepare(Path(args.data_dir), work, args.train_fraction, args.sentences, args.seed)
    for method in args.methods:
        target = out / f"{method}.json"
        if target.is_file():
            continue
        seconds = train(method, work / "runs" / method, prepared, args.epochs, args.seed)
        result = score(method, work / "runs" / method, prepared, args.samples)
        result |= {"train_seconds": seconds, "settings": vars(args)}
        target.write_text(json.dumps(result, indent=1))
        print(json.dumps({k: result[k] for k in ("method", "exclude", "include")}), flush=True)
    done = [
        json.loads((out / f"{m}.json").read_text())
        for m in METHODS
        if (out / f"{m}.json").is_file()
    ]
    (out / "results.md").write_text(markdown(done))
    print(markdown(done))


if __name__ == "__main__":
    main()
