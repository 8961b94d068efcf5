"""Building a run from its config: data, prior, model, guide, and restoring a checkpoint."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from bayesrnn.config import ConfigError, RunConfig
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
)
from bayesrnn.inference import load_checkpoint, make_guide
from bayesrnn.models import GaussianPrior, LanguageModel, ScaleMixturePrior, SequenceClassifier
from bayesrnn.models.priors import brnn_ptb_prior
from bayesrnn.run_dir import JobError, RunDir

__all__ = ["Log", "Setup", "load_data", "quiet_log", "restore", "setup", "stderr_log"]

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def quiet_log(message: str) -> None:
    return None


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
    if m.prior == "scale_mixture" and m.prior_per == "row":
        return brnn_ptb_prior(m.prior_pi, m.prior_sigma1, m.prior_sigma2)
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


def first_batch(config: RunConfig, corpus) -> tuple:
    if config.task == "classify":
        split = corpus.train
        tokens, lengths, labels = next(
            classification_batches(
                split.sequences[:2], split.labels[:2], 2, pad_id=padding_id(corpus)
            )
        )
        return tokens, labels, lengths
    stream = corpus.train[:3]
    return stream[:2].unsqueeze(1), stream[1:3].unsqueeze(1)


def padding_id(corpus: ClassificationCorpus) -> int:
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
                s.guide(*(t.to(device) for t in first_batch(s.config, s.corpus)))
        s.guide.load_state_dict(payload["guide"])
    s.model.load_state_dict(payload["model"])
    return payload
