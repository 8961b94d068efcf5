"""Epistemic uncertainty under a real shift between corpora: Penn Treebank news against movie
reviews.

Each method trains a 2 x 200 LSTM language model (Zaremba's small shape) on the first
``--train-fraction`` of the PTB training lines through the ``bayesrnn train`` command, then scores
``--sentences`` PTB test sentences (in distribution) against as many sentence-polarity snippets
(Pang & Lee's rt-polarity movie reviews, out of distribution) as ``TrainedRun.ood`` does: AUROC of
every per-sentence score of ``bayesrnn.evaluation.sentence_ood.LM_SCORES`` (MC over ``--samples``
draws, an ensemble's five members, the deterministic network's one), once with the predictions
that read or predict ``<unk>`` left out (the package's default) and once with them scored, from
one pass over each text, beside the AUROC of the per-sentence ``<unk>`` share alone.

One process per method, resumable: a method whose result JSON exists is skipped, a method whose
run directory finished training is scored without retraining. The data slices and the run
directories live under ``--work`` (outside the project); the results go to ``--out``.

``--level char`` trains a character-level model instead (:data:`CHAR_SHAPE`): the training lines
are spelled out character by character with ``_`` at each word boundary, which reproduces
Mikolov's ``ptb.char`` symbols exactly, and the reviews are spelled the same way by the run's
tokenizer. No word is unknown; a review character that the training slice lacks (a comma, a
quote) becomes the vocabulary's ``<unk>``, so "exclude" leaves out the predictions that read or
predict such a character and "include" scores them.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ood_shift.py --data-dir ../shared/data``
(``--level char --out benchmarks/results/ood-shift/char`` for the character level)
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

import torch

from bayesrnn.app.ood_task import MIN_WORDS, file_batch_size
from bayesrnn.app.presets import gal_prior_scale
from bayesrnn.app.setup import seed_everything
from bayesrnn.evaluation.ood import auroc
from bayesrnn.evaluation.sentence_ood import (
    oov_positions,
    sentence_ood_report,
    sentence_unk_rate,
    sentence_unk_shares,
    stream_token_values,
    tokens_to_sentences,
)

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


# the character-level model: one LSTM layer of 128 (about 90k weights), windows of 50 symbols,
# Adam, so that a method trains in minutes on one shared core
CHAR_SHAPE = [
    "data.level=char",
    "model.embedding_size=32",
    "model.hidden_size=128",
    "model.num_layers=1",
    "trainer.bptt=50",
    "trainer.optimizer=adam",
    "trainer.lr=0.003",
    "trainer.constant_epochs=100",
]
CHAR_BPTT = 50


def spelled_length(line: str) -> int:
    """Symbols of a line at character level (``_`` between words) plus its ``<eos>``."""
    return len("_".join(line.split())) + 1


METHODS = ("gal", "mean_field", "sharpened", "zaremba", "none", "ensemble")


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    return [line.strip() for line in path.read_bytes().decode(encoding).splitlines()]


def prepare(
    data_dir: Path, work: Path, fraction: float, sentences: int, seed: int, level: str = "word"
) -> dict:
    """The training slice as a text folder, and the two sets of sentences to compare (the same
    sentences at either level: a character-level run spells them out itself)."""
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
        "level": level,
        "train_tokens": sum(
            len(s.split()) + 1 if level == "word" else spelled_length(s) for s in train
        ),
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
    char = prepared.get("level") == "char"
    shape = CHAR_SHAPE if char else []
    for value in [
        *shape,
        *method_overrides(method, prepared["train_tokens"], CHAR_BPTT if char else 20),
    ]:
        argv += ["--set", value]
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def text_pass(trained, text: str, samples: int) -> tuple[torch.Tensor, dict, torch.Tensor, int]:
    """One MC pass over a text as ``TrainedRun.ood`` makes it: its stream, every per-token
    value, each draw's log p of each predicted token, and the parallel sequences it used."""
    tr = trained.config.trainer
    stream = trained.encode(text)
    batch = file_batch_size(stream.numel(), tr.eval_batch_size, tr.bptt)
    seed_everything(tr.seed + 2)
    values, draws = stream_token_values(
        trained.model, trained.guide, stream, num_samples=samples, batch_size=batch, bptt=tr.bptt
    )
    return stream, values, draws, batch


def draws_for(method: str, samples: int) -> int:
    """MC draws per method: an ensemble's are its members (each once, the same scores as any
    multiple), the deterministic network's one; the others ``samples``."""
    return {"ensemble": 5, "none": 1}.get(method, samples)


def score(method: str, run: Path, prepared: dict, samples: int, keep: Path | None = None) -> dict:
    """Every score of ``sentence_ood.LM_SCORES``, with ``<unk>`` positions left out and kept,
    from one MC pass over each side (so the two policies see the same draws); ``keep`` gets
    each sentence's scores and ``<unk>`` share (``<unk>`` left out; kept: ``-include``)."""
    import bayesrnn

    trained = bayesrnn.load_run(run)
    history = json.loads((run / "history.json").read_text())
    draws = draws_for(method, samples)
    result: dict = {
        "method": method,
        "valid_perplexity": history.get("valid_perplexity"),
        "num_samples": draws,
    }
    vocab = trained.vocabulary
    start = time.perf_counter()
    sides = {
        "in": text_pass(trained, prepared["inside"], draws),
        "out": text_pass(trained, prepared["outside"], draws),
    }
    result["score_seconds"] = time.perf_counter() - start
    for oov in ("exclude", "include"):
        scored = {}
        for side, (stream, values, per_draw, batch) in sides.items():
            skip = oov_positions(stream, vocab.unk_id) if oov == "exclude" else None
            scored[side] = tokens_to_sentences(
                values, stream, batch, vocab.eos_id, MIN_WORDS, skip, per_draw
            )
        report = sentence_ood_report(scored["in"], scored["out"])
        if keep is not None:
            torch.save(
                {
                    side: {name: sc.score(name) for name in sc.names}
                    | {"predicted": sc.predicted, "kept": sc.kept}
                    | {
                        "unk_share": sentence_unk_shares(
                            sc, vocab.unk_id, stream=sides[side][0], eos_id=vocab.eos_id
                        )
                    }
                    for side, sc in scored.items()
                },
                keep if oov == "exclude" else keep.with_name(f"{keep.stem}-include.pt"),
            )
        result[oov] = {
            "scores": {
                name: {key: report[name][key] for key in ("auroc", "mean_in", "mean_out")}
                for name in report
            },
            "sentences": {side: len(scored[side]) for side in scored},
            "positions_excluded": {side: scored[side].excluded for side in scored},
        }
        if oov == "exclude":
            shares = {
                side: sentence_unk_shares(
                    scored[side], vocab.unk_id, stream=sides[side][0], eos_id=vocab.eos_id
                )
                for side in scored
            }
            result["auroc_unk_share"] = auroc(shares["in"], shares["out"])
    result["unk_rate"] = {
        side: sentence_unk_rate(sides[side][0], vocab.unk_id, vocab.eos_id) for side in sides
    }
    return result


SHOWN = (
    "predictive_entropy",
    "mutual_information",
    "expected_pairwise_kl",
    "reverse_mutual_information",
    "observed_nll",
    "observed_token_rmi",
    "observed_sentence_rmi",
    "observed_sentence_information_gain",
    "observed_sentence_epkl",
)


def markdown(results: list[dict]) -> str:
    """AUROC of each score per method, ``<unk>`` positions excluded / included."""
    head = "| score | " + " | ".join(r["method"] for r in results) + " |\n"
    head += "|---|" + "---:|" * len(results) + "\n"
    rows = []
    for name in SHOWN:
        cells = [
            f"{r['exclude']['scores'][name]['auroc']:.3f} / "
            f"{r['include']['scores'][name]['auroc']:.3f}"
            for r in results
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    ppl = " | ".join(f"{(r.get('valid_perplexity') or [float('nan')])[-1]:.1f}" for r in results)
    rows.append(f"| valid perplexity | {ppl} |")
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
    parser.add_argument("--out", default="benchmarks/results/ood-shift/text-scores")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--level", choices=("word", "char"), default="word")
    args = parser.parse_args()
    if args.level == "char" and args.work == parser.get_default("work"):
        args.work += "-char"  # its runs and slices apart from the word-level ones
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    prepared = prepare(
        Path(args.data_dir), work, args.train_fraction, args.sentences, args.seed, args.level
    )
    for method in args.methods:
        target = out / f"{method}.json"
        if target.is_file():
            continue
        seconds = train(method, work / "runs" / method, prepared, args.epochs, args.seed)
        shape = (args.sentences, args.samples)
        suffix = "" if shape == (400, 50) else f"-{shape[0]}x{shape[1]}"
        keep = work / "sentences" / f"{method}{suffix}.pt"
        keep.parent.mkdir(parents=True, exist_ok=True)
        result = score(method, work / "runs" / method, prepared, args.samples, keep)
        result |= {"train_seconds": seconds, "settings": vars(args)}
        target.write_text(json.dumps(result, indent=1))
        print(json.dumps({k: result[k] for k in ("method", "exclude")}), flush=True)
    done = [
        json.loads((out / f"{m}.json").read_text())
        for m in METHODS
        if (out / f"{m}.json").is_file()
    ]
    (out / "results.md").write_text(markdown(done))
    print(markdown(done))


if __name__ == "__main__":
    main()
