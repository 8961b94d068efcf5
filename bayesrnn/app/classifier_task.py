"""Sentence classification in a run: resumable SVI over padded minibatches, and evaluation."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bayesrnn.app.run_dir import RunDir
from bayesrnn.app.setup import Log, Setup, first_batch, padding_id, seed_everything
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
    load_checkpoint,
    predict_sequences,
    save_checkpoint,
    scale_kl,
    window_terms,
)
from bayesrnn.inference.divergence import DivergenceGuard, training_stopped

__all__ = ["ClassifierTrainer", "classifier_predictions", "evaluate_classifier"]


class ClassifierTrainer:
    """SVI over shuffled minibatches of padded sentences, resumable like ``TBPTTTrainer``.

    Each of the epoch's B batches minimises −log p(y_b | θ) + KL/B (``scale_kl``), divided by
    the batch size; ``max_windows`` and ``checkpoint_every`` count batches.
    """

    def __init__(self, s: Setup, checkpoint: Path) -> None:
        self.s, self.cfg, self.checkpoint_path = s, s.config.trainer, checkpoint
        self.device = torch.device(self.cfg.device)
        self.model = s.model.to(self.device)
        self.guide = s.guide.to(self.device)
        self.generator = torch.Generator().manual_seed(self.cfg.seed)
        self.epoch_rng = self.generator.get_state()
        self.history: dict[str, list] = {
            k: [] for k in ("elbo", "nll", "kl", "tokens", "valid_accuracy", "valid_nll")
        }
        self.history |= {"epoch_lr": [], "epoch_seconds": []}
        self.position = (0, 0)
        self.guard = DivergenceGuard.uniform(
            s.model.num_classes,
            self.cfg.divergence_factor,
            self.cfg.divergence_patience,
            unit="label",
            steps="batches",
        )

    def parameters(self) -> list[torch.nn.Parameter]:
        params = [*self.model.parameters(), *self.guide.parameters()]
        return [p for p in dict.fromkeys(params) if p.requires_grad]

    def fit(self, log: Log) -> dict:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        with torch.no_grad():  # autoguides create their parameters on the first call
            self.guide(*(t.to(self.device) for t in first_batch(self.s.config)))
        optimiser_class = torch.optim.SGD if cfg.optimizer == "sgd" else torch.optim.Adam
        self.optimizer = optimiser_class(
            self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        if self.checkpoint_path.is_file():
            log(f"resuming from {self.checkpoint_path}")
            self._restore(load_checkpoint(self.checkpoint_path, map_location=self.device))
        epoch, start = self.position
        while epoch < cfg.epochs:
            if self._run_epoch(epoch, start):
                break
            epoch, start = epoch + 1, 0
            self.position = (epoch, 0)
            self.epoch_rng = self.generator.get_state()
            self._checkpoint()
        self._checkpoint()
        return self.history

    def _run_epoch(self, epoch: int, start: int) -> bool:
        cfg, split = self.cfg, self.s.corpus.train
        self.generator.set_state(self.epoch_rng)  # replays this epoch's shuffle after a resume
        batches = classification_batches(
            split.sequences,
            split.labels,
            cfg.batch_size,
            shuffle=True,
            generator=self.generator,
            pad_id=padding_id(self.s.corpus),
        )
        count = math.ceil(len(split) / cfg.batch_size)
        lr = cfg.learning_rate(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        began = time.perf_counter()
        bar = tqdm(
            total=count,
            initial=start,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress,
            leave=False,
            dynamic_ncols=True,
        )
        self.model.train()
        self.guide.train()
        for index, (tokens, lengths, labels) in enumerate(batches):
            if index < start:
                continue
            if cfg.max_windows is not None and len(self.history["elbo"]) >= cfg.max_windows:
                bar.close()
                return True
            where = f"epoch {epoch + 1}, batch {index + 1}"
            nll, kl = self._step(
                tokens.to(self.device), lengths, labels.to(self.device), count, where
            )
            self.guard.update(nll / labels.numel(), where)
            for key, value in (("elbo", -(nll + kl)), ("nll", nll), ("kl", kl)):
                self.history[key].append(value)
            self.history["tokens"].append(int(labels.numel()))
            bar.update(1)
            bar.set_postfix(nll=f"{nll / labels.numel():.3f}", kl=f"{kl:.4g}")
            self.position = (epoch, index + 1)
            every = cfg.checkpoint_every
            if every and len(self.history["elbo"]) % every == 0 and not self.guard.suspect:
                self._checkpoint()
        bar.close()
        self.history["epoch_lr"].append(lr)
        self.history["epoch_seconds"].append(time.perf_counter() - began)
        valid = classifier_predictions(self.s, self.s.corpus.valid, num_samples=None)
        self.history["valid_accuracy"].append(valid["accuracy"])
        self.history["valid_nll"].append(valid["nll"])
        if cfg.progress:
            tqdm.write(
                f"epoch {epoch + 1}: valid accuracy {valid['accuracy']:.4f}, "
                f"NLL {valid['nll']:.4f}",
                file=sys.stderr,
            )
        return False

    def _step(self, tokens, lengths, labels, count: int, where: str) -> tuple[float, float]:
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        scale = 1.0 / count
        nll = kl = 0.0
        for _ in range(cfg.num_particles):
            terms = window_terms(
                scale_kl(self.model, scale), scale_kl(self.guide, scale), tokens, labels, lengths
            )
            loss = (terms.nll + terms.kl) / (labels.numel() * cfg.num_particles)
            if not bool(torch.isfinite(loss)):
                raise training_stopped(where, f"non-finite loss ({float(loss.detach())})")
            loss.backward()
            nll += float(terms.nll.detach()) / cfg.num_particles
            kl += float(terms.kl.detach()) / cfg.num_particles
        if cfg.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters(), cfg.clip_norm)
        self.optimizer.step()
        return nll, kl

    def _checkpoint(self) -> None:
        save_checkpoint(
            self.checkpoint_path,
            {
                "model": self.model.state_dict(),
                "guide": self.guide.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "epoch_rng": self.epoch_rng,
                "position": list(self.position),
                "history": self.history,
                "config": dataclasses.asdict(self.cfg),
            },
        )

    def _restore(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.guide.load_state_dict(payload["guide"])
        self.optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["torch_rng"].cpu())
        if payload["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state.cpu() for state in payload["cuda_rng"]])
        self.epoch_rng = payload["epoch_rng"]
        self.position = tuple(payload["position"])
        self.history = payload["history"]


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


def evaluate_classifier(s: Setup, run: RunDir, log: Log) -> dict:
    ev = s.config.evaluation
    split = getattr(s.corpus, ev.split)
    seed_everything(s.config.trainer.seed + 1)
    log(f"evaluating {ev.split} ({len(split)} sentences): posterior mean, MC {ev.mc_samples}")
    mean = classifier_predictions(s, split, None)
    mc = classifier_predictions(s, split, ev.mc_samples, guide=s.guide)
    files = [plot_reliability_diagram(mc["_bins"], run / "reliability.png", title="MC predictive")]
    wrong = mc["_probs"].argmax(-1) != mc["_labels"]
    if bool(wrong.any()) and bool((~wrong).any()):
        files.append(
            plot_entropy_histograms(
                mc["_entropy"][~wrong],
                mc["_entropy"][wrong],
                run / "entropy.png",
                labels=("correct", "misclassified"),
            )
        )

    def public(result: dict) -> dict:
        return {k: v for k, v in result.items() if not k.startswith("_")}

    return {
        ev.split: {
            "accuracy_mean": mean["accuracy"],
            "accuracy_mc": mc["accuracy"],
            "mc_samples": ev.mc_samples,
            "posterior_mean": public(mean),
            "mc": public(mc),
        },
        "plots": [p.name for p in files],
    }
