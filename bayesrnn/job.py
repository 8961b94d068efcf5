"""The pipeline behind ``bayesrnn run/train/evaluate/export``.

data → model and guide → training (resumable) → evaluation → files in one run directory:

    config.toml     the resolved config (a directory holds one config: a different one is refused)
    checkpoint.pt   model, guide, optimiser, RNG states and position (resume after a kill)
    history.json    per-window ELBO terms and per-epoch validation
    metrics.json    evaluation metrics (timings under "timing", the only run-dependent values)
    *.png           reliability diagram, entropy histograms, ELBO trace, pruning curve
    posterior.nc    ArviZ DataTree (netCDF, h5netcdf engine)

Errors a user can fix (bad config, missing data, a clashing run directory) are raised as
:class:`JobError` or the data package's errors, before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from bayesrnn import __version__
from bayesrnn.config import (
    ConfigError,
    RunConfig,
    apply_values,
    comparable,
    config_from_dict,
    config_to_dict,
    load_toml,
    write_config,
    write_text_atomic,
)
from bayesrnn.data import (
    ClassificationCorpus,
    ClassificationSplit,
    DataNotFoundError,
    LanguageCorpus,
    classification_batches,
    load_embedded_corpus,
    load_polarity,
    load_ptb,
    load_text,
    pad_batch,
)
from bayesrnn.evaluation import (
    brier_score,
    expected_entropy,
    mutual_information,
    plot_elbo_trace,
    plot_entropy_histograms,
    plot_pruning_curve,
    plot_reliability_diagram,
    predictive_entropy,
    reliability_bins,
)
from bayesrnn.evaluation.stream_report import language_model_report
from bayesrnn.inference import (
    SharpenedGuide,
    TBPTTTrainer,
    TrainerConfig,
    load_checkpoint,
    make_guide,
    predict_sequences,
    save_checkpoint,
    scale_kl,
    window_terms,
)
from bayesrnn.inference.trainer import History, NonFiniteLossError
from bayesrnn.models import (
    GaussianPrior,
    LanguageModel,
    ScaleMixturePrior,
    SequenceClassifier,
    weight_sites,
)

__all__ = ["JobError", "RunDir", "evaluate_run", "export_run", "run_job"]

Log = Callable[[str], None]


class JobError(ValueError):
    """A run that cannot start: a clashing output directory, an incompatible device, ..."""


def stderr_log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def quiet_log(message: str) -> None:
    return None


# --- the run directory --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDir:
    """Paths of the files of one run."""

    root: Path

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def posterior(self) -> Path:
        return self.root / "posterior.nc"


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            out += _differences(left, right, f"{prefix}{key}.")
        elif left != right:
            out.append(f"{prefix}{key} ({left!r} there, {right!r} now)")
    return out


def check_run_dir(root: Path, config: RunConfig) -> bool:
    """Refuse a directory that holds another run or other files; True if it can be resumed."""
    run = RunDir(root)
    if root.exists() and not root.is_dir():
        raise JobError(f"--out {root} exists and is not a directory")
    if run.config.is_file():
        stored = read_run_config(run)
        diff = _differences(comparable(stored), comparable(config))
        if diff:
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise JobError(
                f"{root} holds a run with a different config: {shown}. Use another --out, or "
                "the same options to resume it"
            )
        return True
    if root.is_dir() and any(root.iterdir()):
        raise JobError(
            f"{root} is not empty and holds no bayesrnn run (no config.toml); "
            "choose a new or empty --out"
        )
    return False


def read_run_config(run: RunDir) -> RunConfig:
    if not run.config.is_file():
        raise JobError(f"{run.root} is not a bayesrnn run directory (no config.toml)")
    return config_from_dict(load_toml(run.config), str(run.config))


def write_json(path: Path, payload: Any) -> Path:
    """Atomic JSON write; NaN and infinities become null so the file is strict JSON."""
    return write_text_atomic(path, json.dumps(_finite(payload), indent=2, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _finite(value.tolist())
    return value


# --- data ---------------------------------------------------------------------------------------


def _data_dir(config: RunConfig) -> Path:
    data = config.data
    if data.dir is None:
        raise ConfigError(
            f"--data {data.source} needs --data-dir DIR, the folder that holds (or will hold) "
            f"the files; fetch them with: bayesrnn download {data.source} --data-dir DIR"
        )
    root = Path(data.dir)
    if not root.is_dir():
        raise DataNotFoundError(f"data directory not found: {root}")
    return root


def load_data(config: RunConfig) -> LanguageCorpus | ClassificationCorpus:
    """The corpus named by ``config.data`` for ``config.task``."""
    data, source = config.data, config.data.source
    if config.task == "classify":
        if source != "polarity":
            raise ConfigError(
                "--task classify needs labelled sentences: --data polarity --data-dir DIR"
            )
        corpus = load_polarity(_data_dir(config), seed=data.split_seed, max_vocab=data.max_vocab)
        return _limit_examples(corpus, data.max_examples)
    if source == "polarity":
        raise ConfigError("polarity is a sentence-classification data set: add --task classify")
    if source == "embedded":
        return load_embedded_corpus(level=data.level, max_vocab=data.max_vocab)
    if source in ("ptb", "ptb-char"):
        return load_ptb(_data_dir(config), level="word" if source == "ptb" else "char")
    return load_text(source, level=data.level, max_vocab=data.max_vocab)


def _limit_examples(corpus: ClassificationCorpus, limit: int | None) -> ClassificationCorpus:
    if limit is None:
        return corpus

    def cut(split: ClassificationSplit) -> ClassificationSplit:
        return ClassificationSplit(
            split.sequences[:limit], split.labels[:limit], split.source_index[:limit]
        )

    return dataclasses.replace(
        corpus, train=cut(corpus.train), valid=cut(corpus.valid), test=cut(corpus.test)
    )


# --- model and guide ----------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """torch, Python and numpy generators (pyro.set_rng_seed covers all three)."""
    pyro.set_rng_seed(seed)


def build_prior(config: RunConfig):
    m = config.model
    if m.prior == "scale_mixture":
        return ScaleMixturePrior(m.prior_pi, m.prior_sigma1, m.prior_sigma2)
    if m.prior == "gaussian":
        return GaussianPrior(m.prior_scale)
    return None


def build_model(config: RunConfig, corpus) -> torch.nn.Module:
    m = config.model
    options = {
        "prior": build_prior(config),
        "deterministic": m.deterministic,
        "regularisers": m.regularisers(),
        "init_range": m.init_range,
    }
    if config.task == "classify":
        return SequenceClassifier(
            len(corpus.vocab),
            corpus.n_classes,
            m.embedding_size,
            m.hidden_size,
            m.num_layers,
            m.cell,
            pooling=m.pooling,
            **options,
        )
    return LanguageModel(
        corpus.vocab_size,
        m.embedding_size,
        m.hidden_size,
        m.num_layers,
        m.cell,
        m.tie_weights,
        **options,
    )


def build_guide(config: RunConfig, model: torch.nn.Module):
    return make_guide(config.guide.name, model, **config.guide.options())


def _first_batch(config: RunConfig, corpus) -> tuple:
    if config.task == "classify":
        split = corpus.train
        tokens, lengths, labels = next(
            classification_batches(split.sequences[:2], split.labels[:2], 2, pad_id=_pad(corpus))
        )
        return tokens, labels, lengths
    stream = corpus.train[:3]
    return stream[:2].unsqueeze(1), stream[1:3].unsqueeze(1)


def _pad(corpus: ClassificationCorpus) -> int:
    pad = corpus.vocab.pad_id
    return 0 if pad is None else pad


@dataclass
class Setup:
    """Everything built from a config before training or evaluation."""

    config: RunConfig
    corpus: LanguageCorpus | ClassificationCorpus
    model: torch.nn.Module
    guide: Any


def setup(config: RunConfig, log: Log) -> Setup:
    """Load data and build model and guide; a bad combination is a ConfigError."""
    device = config.trainer.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}, but torch sees no CUDA device on this machine")
    corpus = load_data(config)
    log(f"data: {getattr(corpus, 'name', config.data.source)} {corpus.sizes()}")
    seed_everything(config.trainer.seed)
    try:
        model = build_model(config, corpus)
        guide = build_guide(config, model)
    except ValueError as error:
        raise ConfigError(f"cannot build model and guide: {error}") from error
    return Setup(config, corpus, model, guide)


def restore(s: Setup, run: RunDir) -> dict:
    """Load the trained model and guide from the run's checkpoint; returns the checkpoint."""
    if not run.checkpoint.is_file():
        raise JobError(f"{run.root} has no checkpoint.pt: train it first (bayesrnn train/run)")
    device = torch.device(s.config.trainer.device)
    payload = load_checkpoint(run.checkpoint, map_location=device)
    s.model.to(device)
    if isinstance(s.guide, torch.nn.Module):
        s.guide.to(device)
        if s.config.guide.name.startswith("auto_"):
            # Autoguides create their parameters on their first call.
            with torch.no_grad():
                s.guide(*(t.to(device) for t in _first_batch(s.config, s.corpus)))
        s.guide.load_state_dict(payload["guide"])
    s.model.load_state_dict(payload["model"])
    return payload


# --- language model -----------------------------------------------------------------------------


def train_language_model(s: Setup, run: RunDir, log: Log) -> dict:
    trainer = TBPTTTrainer(
        s.model,
        s.guide,
        s.corpus.train,
        s.corpus.valid,
        s.config.trainer,
        checkpoint_path=run.checkpoint,
    )
    if run.checkpoint.is_file():
        log(f"resuming from {run.checkpoint}")
    history = trainer.fit(resume=True)
    # fit() checkpoints every N windows and at epoch ends; a max_windows stop may fall between.
    trainer.save_checkpoint()
    return history.to_dict()


def evaluate_language_model(s: Setup, history: dict, run: RunDir, log: Log) -> dict:
    ev, tr = s.config.evaluation, s.config.trainer
    stream = s.corpus.split(ev.split)
    if ev.max_tokens is not None:
        stream = stream[: ev.max_tokens]
    seed_everything(tr.seed + 1)
    guide = s.guide
    log(
        f"evaluating {ev.split} ({stream.numel()} tokens): posterior mean, "
        f"MC with {ev.mc_samples} samples" + (", reversed text" if ev.reversed_text else "")
    )
    report = language_model_report(
        s.model,
        guide,
        stream,
        num_samples=ev.mc_samples,
        batch_size=tr.eval_batch_size,
        bptt=tr.bptt,
        n_bins=ev.n_bins,
        strategy=ev.bin_strategy,
        reversed_text=ev.reversed_text,
        sharpened=False,
    )
    metrics = report.metrics()
    if isinstance(s.guide, SharpenedGuide) and ev.sharpened_bound:
        from bayesrnn.inference import evaluate_stream

        bound = evaluate_stream(
            s.model, s.guide, stream, batch_size=tr.eval_batch_size, bptt=tr.bptt, sharpened=True
        )
        # exp() of a bound this loose overflows: keep the per-token NLL bound as well
        metrics["nll_sharpened_bound"] = bound.nll_per_token
        metrics["perplexity_sharpened_bound"] = _exp(bound.nll_per_token)
    files = [
        plot_reliability_diagram(report.mc.bins, run / "reliability.png", title="MC predictive")
    ]
    if report.reversed_mc is not None:
        files.append(
            plot_entropy_histograms(
                report.mc.token_entropy,
                report.reversed_mc.token_entropy,
                run / "entropy.png",
                labels=("forward text", "reversed text"),
            )
        )
    out = {ev.split: metrics}
    if s.config.guide.is_gaussian and ev.pruning:
        pruning = _pruning(s, log)
        if pruning is not None:
            out["pruning"] = pruning
            files.append(
                plot_pruning_curve(
                    pruning["fractions"], pruning["perplexities"], run / "pruning.png"
                )
            )
    out["plots"] = [p.name for p in files]
    return out


def _exp(value: float) -> float:
    """exp, with +inf (written as null) instead of OverflowError."""
    return math.exp(value) if value < 709.0 else math.inf


def _pruning(s: Setup, log: Log) -> dict | None:
    try:
        from bayesrnn.evaluation.pruning import pruning_curve
    except ImportError:  # pragma: no cover - present once the pruning module is committed
        log("pruning curve skipped: bayesrnn.evaluation.pruning is not available")
        return None
    ev, tr = s.config.evaluation, s.config.trainer
    log(f"pruning curve on valid at fractions {list(ev.pruning_fractions)}")
    curve = pruning_curve(
        s.model,
        s.guide,
        s.corpus.valid,
        fractions=ev.pruning_fractions,
        batch_size=tr.eval_batch_size,
        bptt=tr.bptt,
    )
    return {
        "split": "valid",
        "fractions": list(curve.fractions),
        "perplexities": list(curve.perplexities),
        "zeroed": list(curve.zeroed),
        "total_weights": curve.total,
    }


# --- sentence classification --------------------------------------------------------------------


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

    def parameters(self) -> list[torch.nn.Parameter]:
        params = [*self.model.parameters(), *self.guide.parameters()]
        return [p for p in dict.fromkeys(params) if p.requires_grad]

    def fit(self, log: Log) -> dict:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        with torch.no_grad():  # autoguides create their parameters on the first call
            self.guide(*(t.to(self.device) for t in _first_batch(self.s.config, self.s.corpus)))
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
            pad_id=_pad(self.s.corpus),
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
            nll, kl = self._step(tokens.to(self.device), lengths, labels.to(self.device), count)
            for key, value in (("elbo", -(nll + kl)), ("nll", nll), ("kl", kl)):
                self.history[key].append(value)
            self.history["tokens"].append(int(labels.numel()))
            bar.update(1)
            bar.set_postfix(nll=f"{nll / labels.numel():.3f}", kl=f"{kl:.4g}")
            self.position = (epoch, index + 1)
            if cfg.checkpoint_every and len(self.history["elbo"]) % cfg.checkpoint_every == 0:
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

    def _step(self, tokens, lengths, labels, count: int) -> tuple[float, float]:
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
                raise NonFiniteLossError(f"non-finite loss ({float(loss)}); training stopped")
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
        split.sequences, split.labels, s.config.trainer.batch_size, pad_id=_pad(s.corpus)
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
        p = probs.clamp_min(1e-300)
        out["predictive_entropy"] = float(-(probs * p.log()).sum(-1).mean())
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


# --- exports and reports ------------------------------------------------------------------------


def no_export_reason(config: RunConfig) -> str | None:
    """Why a run has no ArviZ export, or None when it has one."""
    if config.guide.name == "none":
        return "a deterministic network has no posterior to export"
    if config.guide.name == "gal":
        return "Gal's Bernoulli-mixture posterior has no density (log q) for the ArviZ export"
    return None


def export_posterior(s: Setup, history: dict | None, run: RunDir, log: Log) -> Path | None:
    """Write ``posterior.nc`` (an ArviZ DataTree) from the trained model on the evaluation split.

    Held-out data: its log-likelihood compares guides; for PSIS-LOO of the approximate posterior
    export the training data instead (see ``bayesrnn.evaluation.arviz_export``).
    """
    reason = no_export_reason(s.config)
    if reason is not None:
        log(f"posterior.nc skipped: {reason}")
        return None
    from bayesrnn.evaluation.arviz_export import export_classifier, export_language_model

    ev = s.config.evaluation
    device = torch.device(s.config.trainer.device)
    guide = s.guide
    seed_everything(s.config.trainer.seed + 2)
    log(f"exporting {ev.export_samples} posterior samples to {run.posterior}")
    if s.config.task == "classify":
        split = getattr(s.corpus, ev.split)
        tokens, lengths = pad_batch(split.sequences, pad_id=_pad(s.corpus))
        tree = export_classifier(
            s.model,
            guide,
            tokens.to(device),
            lengths,
            split.labels.to(device),
            num_samples=ev.export_samples,
        )
    else:
        stream = s.corpus.split(ev.split)
        if ev.max_tokens is not None:
            stream = stream[: ev.max_tokens]
        tree = export_language_model(
            s.model,
            guide,
            stream.to(device),
            num_samples=ev.export_samples,
            batch_size=s.config.trainer.eval_batch_size,
            bptt=s.config.trainer.bptt,
            history=history,
        )
    tmp = run.root / f".posterior.{os.getpid()}.{time.time_ns()}.nc.tmp"
    try:
        tree.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, run.posterior)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return run.posterior


def _training_summary(history: dict) -> dict:
    windows = len(history["elbo"])
    last = slice(max(0, windows - 10), windows)
    tokens = sum(history["tokens"][last]) or 1
    out = {
        "steps": windows,
        "epochs_completed": len(history["epoch_lr"]),
        "elbo_last10_per_item": sum(history["elbo"][last]) / tokens,
        "nll_last10_per_item": sum(history["nll"][last]) / tokens,
        "kl_last": history["kl"][-1] if windows else None,
        "epoch_lr": history["epoch_lr"],
    }
    for key in ("valid_perplexity", "valid_accuracy", "valid_nll"):
        if key in history:
            out[key] = history[key]
    return out


def _describe(s: Setup) -> dict:
    corpus = s.corpus
    params = {*s.model.parameters()}
    if isinstance(s.guide, torch.nn.Module):
        params |= {*s.guide.parameters()}
    return {
        "data": {
            "name": getattr(corpus, "name", s.config.data.source),
            "vocab_size": len(corpus.vocab),
            "sizes": corpus.sizes(),
        },
        "model": {
            "class": type(s.model).__name__,
            "weight_sites": len(weight_sites(s.model)),
            "weights": sum(v.numel() for v in weight_sites(s.model).values()),
            "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        },
    }


def _evaluate(s: Setup, history: dict, run: RunDir, log: Log, export: bool) -> dict:
    began = time.perf_counter()
    if s.config.task == "classify":
        results = evaluate_classifier(s, run, log)
    else:
        results = evaluate_language_model(s, history, run, log)
    elbo = plot_elbo_trace(history["elbo"], run / "elbo.png", kl=history["kl"], nll=history["nll"])
    results["plots"].append(elbo.name)
    evaluate_seconds = time.perf_counter() - began
    files = sorted(results.pop("plots"))
    export_error = None
    if export and s.config.evaluation.export:
        try:
            if export_posterior(s, history, run, log) is not None:
                files.append(run.posterior.name)
        except (ValueError, RuntimeError, OSError) as error:  # keep the evaluation regardless
            export_error = " ".join(str(error).split())
            log(f"warning: posterior.nc not written: {export_error}")
    metrics = {
        "bayesrnn": __version__,
        "task": s.config.task,
        "preset": s.config.preset,
        **_describe(s),
        "evaluation": config_to_dict(s.config)["evaluation"],
        "training": _training_summary(history),
        **results,
        "files": files,
        **({"export_error": export_error} if export_error else {}),
        "timing": {
            "epoch_seconds": history["epoch_seconds"],
            "evaluate_seconds": evaluate_seconds,
        },
    }
    if "tokens_per_second" in history:
        metrics["timing"]["tokens_per_second"] = history["tokens_per_second"]
    write_json(run.metrics, metrics)
    return metrics


# --- entry points -------------------------------------------------------------------------------


def run_job(
    config: RunConfig, out: str | os.PathLike[str], *, evaluate: bool = True, log: Log = stderr_log
) -> dict:
    """Train (resuming a killed run in ``out``), then evaluate and export unless ``evaluate`` is
    False. Returns the metrics (or the training summary)."""
    run = RunDir(Path(out).expanduser())
    s = setup(config, log)  # data and model first: a bad config writes nothing
    check_run_dir(run.root, config)
    run.root.mkdir(parents=True, exist_ok=True)
    if not run.config.is_file():
        write_config(config, run.config, header=f"bayesrnn {__version__} resolved config")
    began = time.perf_counter()
    if config.task == "classify":
        history = ClassifierTrainer(s, run.checkpoint).fit(log)
    else:
        history = train_language_model(s, run, log)
    log(f"training finished in {time.perf_counter() - began:.1f} s")
    write_json(run.history, history)
    if not evaluate:
        plot_elbo_trace(history["elbo"], run / "elbo.png", kl=history["kl"], nll=history["nll"])
        return {"training": _training_summary(history)}
    return _evaluate(s, history, run, log, export=True)


def _load_run(out: str | os.PathLike[str], overrides: dict | None, log: Log):
    run = RunDir(Path(out).expanduser())
    config = read_run_config(run)
    if overrides:
        unknown = sorted(set(overrides) - {"evaluation", "trainer"})
        trainer_keys = set(overrides.get("trainer", {})) - {"device", "progress"}
        if unknown or trainer_keys:
            raise ConfigError(
                "evaluate/export take only evaluation.* settings and --device; the model and "
                "training are fixed by the run"
            )
        config = apply_values(config, overrides, "command line")
    s = setup(config, log)
    payload = restore(s, run)
    history = payload["history"]
    history = history.to_dict() if isinstance(history, History) else dict(history)
    return run, s, payload, history


def evaluate_run(
    out: str | os.PathLike[str], overrides: dict | None = None, *, log: Log = stderr_log
) -> dict:
    """Re-evaluate a trained run directory (``evaluation.*`` settings may be overridden)."""
    run, s, payload, history = _load_run(out, overrides, log)
    _warn_unfinished(s.config, payload, log)
    return _evaluate(s, history, run, log, export=False)


def export_run(
    out: str | os.PathLike[str], overrides: dict | None = None, *, log: Log = stderr_log
) -> Path:
    """Write ``posterior.nc`` for a trained run directory."""
    reason = no_export_reason(read_run_config(RunDir(Path(out).expanduser())))
    if reason is not None:
        raise JobError(f"nothing to export: {reason}")
    run, s, payload, history = _load_run(out, overrides, log)
    _warn_unfinished(s.config, payload, log)
    return export_posterior(s, history, run, log)


def _warn_unfinished(config: RunConfig, payload: dict, log: Log) -> None:
    epoch, window = payload["position"]
    trainer: TrainerConfig = config.trainer
    steps = len(payload["history"]["elbo"])
    done = epoch >= trainer.epochs or (
        trainer.max_windows is not None and steps >= trainer.max_windows
    )
    if not done:
        log(f"note: the checkpoint is mid-training (epoch {epoch + 1}, step {window}); used as is")
