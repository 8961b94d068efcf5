"""Sentence classification in a run: resumable SVI over padded minibatches, and evaluation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from bayesrnn.app.ood_task import PLOT_NAME, OODText, classifier_sentences, compare
from bayesrnn.app.run_data import checkpoint_tags
from bayesrnn.app.run_dir import RunDir
from bayesrnn.app.setup import Log, Setup, padding_id, seed_everything
from bayesrnn.data import ClassificationSplit, classification_batches
from bayesrnn.evaluation import (
    brier_score,
    expected_entropy,
    mutual_information,
    plot_entropy_histograms,
    plot_reliability_diagram,
    predictive_entropy,
    reliability_bins,
)
from bayesrnn.evaluation.uncertainty import categorical_entropy
from bayesrnn.inference import (
    predict_sequences,
)
from bayesrnn.inference.training.batching import SequenceBatches
from bayesrnn.inference.training.trainer import SVITrainer

__all__ = ["classifier_predictions", "evaluate_classifier", "train_classifier"]


def train_classifier(s: Setup, checkpoint: Path, log: Log) -> dict:
    """SVI over shuffled minibatches of padded sentences (the trainer's SequenceBatches
    strategy), resuming from ``checkpoint``; validation accuracy and NLL after each epoch."""
    cfg = s.config.trainer
    train = s.corpus.train
    batching = SequenceBatches(
        train.sequences, train.labels, cfg.batch_size, pad_id=padding_id(s.corpus)
    )

    def validate() -> dict[str, float]:
        valid = classifier_predictions(s, s.corpus.valid, num_samples=None)
        return {"valid_accuracy": valid["accuracy"], "valid_nll": valid["nll"]}

    trainer = SVITrainer(
        s.model,
        s.guide,
        batching,
        cfg,
        checkpoint_path=checkpoint,
        validate=validate,
        baseline_nll=math.log(s.model.num_classes) if s.model.num_classes >= 2 else None,
        unit="label",
    )
    trainer.checkpoint_tags = checkpoint_tags(s.corpus)
    if checkpoint.is_file():
        log(f"resuming from {checkpoint}")
    history = trainer.fit(resume=True)
    trainer.save_checkpoint()  # a max_windows stop may fall between periodic checkpoints
    return history.to_dict()


def classifier_predictions(
    s: Setup, split: ClassificationSplit, num_samples: int | None, guide=None
) -> dict[str, Any]:
    """Predictive log-probabilities (posterior mean, or MC over ``num_samples`` draws) and the
    metrics of a split."""
    guide = s.guide if guide is None else guide
    device = torch.device(s.config.trainer.device)
    mixture, draws, labels_all = [], [], []
    for tokens, lengths, labels in classification_batches(
        split.sequences, split.labels, s.config.trainer.batch_size, pad_id=padding_id(s.corpus)
    ):
        prediction = predict_sequences(
            s.model, guide, tokens.to(device), lengths, num_samples=num_samples
        )
        mixture.append(prediction.log_probs.cpu())
        if prediction.draw_log_probs is not None:
            draws.append(prediction.draw_log_probs.cpu())
        labels_all.append(labels)
    log_probs = torch.cat(mixture).cpu().double()
    labels = torch.cat(labels_all)
    probs = log_probs.exp()
    probs = probs / probs.sum(-1, keepdim=True)  # float round-off only
    ev = s.config.evaluation
    bins = reliability_bins(probs, labels, ev.n_bins, ev.bin_strategy)
    out: dict[str, Any] = {} if num_samples is None else {"num_samples": num_samples}
    out |= {
        "examples": int(labels.numel()),
        "accuracy": float((probs.argmax(-1) == labels).double().mean()),
        "nll": float(-log_probs.gather(-1, labels.unsqueeze(-1)).mean()),
        "brier": brier_score(probs, labels),
        "ece": bins.ece,
        "mce": bins.mce,
        "_bins": bins,
        "_probs": probs,
        "_labels": labels,
    }
    if draws:
        stacked = torch.cat(draws, dim=1).double()
        entropy = predictive_entropy(stacked)
        out["predictive_entropy"] = float(entropy.mean())
        out["expected_entropy"] = float(expected_entropy(stacked).mean())
        out["mutual_information"] = float(mutual_information(stacked).mean())
        out["_entropy"] = entropy
    else:
        out["predictive_entropy"] = float(categorical_entropy(probs.log(), probs).mean())
    return out


def evaluate_classifier(s: Setup, run: RunDir, log: Log, ood: OODText | None = None) -> dict:
    """Accuracy, calibration and entropies of the evaluation split; with ``ood``, a named text
    compared sentence by sentence with the split (``"ood_file"``)."""
    ev = s.config.evaluation
    split = getattr(s.corpus, ev.split)
    seed_everything(s.config.trainer.seed + 1)
    log(f"evaluating {ev.split} ({len(split)} sentences): posterior mean, MC {ev.mc_samples}")
    mean = classifier_predictions(s, split, None)
    mc = classifier_predictions(s, split, ev.mc_samples, guide=s.guide)
    plot_reliability_diagram(mc["_bins"], run / "reliability.png", title="MC predictive")
    files = ["reliability.png"]
    wrong = mc["_probs"].argmax(-1) != mc["_labels"]
    if bool(wrong.any()) and bool((~wrong).any()):
        plot_entropy_histograms(
            mc["_entropy"][~wrong],
            mc["_entropy"][wrong],
            run / "entropy.png",
            labels=("correct", "misclassified"),
        )
        files.append("entropy.png")

    def public(result: dict) -> dict:
        return {k: v for k, v in result.items() if not k.startswith("_")}

    out = {
        ev.split: {
            "accuracy_mean": mean["accuracy"],
            "accuracy_mc": mc["accuracy"],
            "mc_samples": ev.mc_samples,
            "posterior_mean": public(mean),
            "mc": public(mc),
        },
        "plots": files,
    }
    if ood is not None:
        log(f"scoring {ood.name} ({ood.lines} lines) against {ev.split}, sentence by sentence")
        inside = classifier_sentences(s, list(split.sequences))
        compared = compare(s, ood, inside, list(split.sequences))
        out["ood_file"] = compared.metrics
        compared.plot(run / PLOT_NAME)
        out["plots"].append(PLOT_NAME)
    return out
