"""Building a run from its config: data, prior, model, guide, and restoring a checkpoint."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch

from bayesrnn.app.checkpoint_schema import check_checkpoint
from bayesrnn.app.config import (
    DATA_SOURCES,
    SERIES_SOURCES,
    ConfigError,
    RunConfig,
    check_ensemble_draws,
)
from bayesrnn.app.memory_check import check_memory, model_values
from bayesrnn.app.run_data import check_checkpoint_vocabulary
from bayesrnn.app.run_dir import JobError, RunDir
from bayesrnn.app.window_fit import check_fits, fit_windows
from bayesrnn.data import (
    ClassificationCorpus,
    ClassificationSplit,
    DataError,
    DataNotFoundError,
    LanguageCorpus,
    Vocabulary,
    load_embedded_corpus,
    load_polarity,
    load_ptb,
    load_text,
    reencode_corpus,
    rescale_series,
)
from bayesrnn.data.lags import with_lags
from bayesrnn.inference import load_checkpoint, make_guide
from bayesrnn.inference.mcmc import check_nuts_size
from bayesrnn.inference.runtime.distributed import current_ranks
from bayesrnn.inference.training.checkpoint import CheckpointError
from bayesrnn.models import (
    GaussianPrior,
    HierarchicalGaussianPrior,
    LanguageModel,
    LearnedGaussianPrior,
    ScaleMixturePrior,
    SequenceClassifier,
    SequenceRegressor,
)
from bayesrnn.models.priors import brnn_ptb_prior

__all__ = [
    "Log",
    "Setup",
    "check_fits",
    "fit_windows",
    "load_data",
    "quiet_log",
    "restore",
    "setup",
    "stderr_log",
]

Log = Callable[[str], None]

logger = logging.getLogger(__name__)


def stderr_log(message: str) -> None:
    """``message`` as an INFO record of the ``bayesrnn.app`` loggers: on stderr under the
    ``bayesrnn`` command, wherever the caller's logging configuration sends it otherwise."""
    logger.info(message)


def quiet_log(message: str) -> None:
    """Drops ``message``: for callers that want no progress lines whatever logging does."""
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


def _load_series(config: RunConfig):
    from bayesrnn.data.series import load_csv_series, load_statsmodels_series

    data = config.data
    if data.source in SERIES_SOURCES:
        columns = (data.target, data.covariates, data.future_covariates, data.time)
        if any(v not in (None, ()) for v in columns):
            raise ConfigError(
                f"--data {data.source} has one column; data.target, data.covariates, "
                "data.future_covariates and data.time are for CSV files"
            )
        return load_statsmodels_series(data.source, transform=data.transform)
    if data.source in DATA_SOURCES:
        raise ConfigError(
            f"--task forecast needs a real-valued series: --data {', '.join(SERIES_SOURCES)} or "
            f"a CSV file, not {data.source}"
        )
    if data.target is None:
        raise ConfigError(
            f"--data {data.source}: name the column to forecast with --set data.target=COLUMN"
        )
    targets = [name.strip() for name in data.target.split(",") if name.strip()]
    try:
        return load_csv_series(
            data.source,
            targets,
            data.covariates,
            time=data.time,
            future_covariates=data.future_covariates,
            transform=data.transform,
        )
    except DataError:
        raise
    except ValueError as error:  # a column named twice: a settings mistake
        raise ConfigError(f"--data {data.source}: {error}") from None


def _with_lags(corpus, lags: tuple[int, ...] | str):
    """The series with its lag columns; a lag the training split cannot show is an error."""
    rows = corpus.sizes()["train"]
    if lags != "auto" and lags and max(lags) >= rows:
        raise ConfigError(
            f"data.lags: lag {max(lags)} reaches back past the {rows} training rows of "
            f"{corpus.name!r}; use lags below {rows}"
        )
    return with_lags(corpus, lags)


def load_data(config: RunConfig):
    """The corpus named by ``config.data`` for ``config.task`` (a series for forecasting)."""
    data, source = config.data, config.data.source
    if config.task == "forecast":
        return _with_lags(_load_series(config), data.lags)
    if data.lags:
        raise ConfigError("data.lags are lagged values of a series: they need --task forecast")
    if source in SERIES_SOURCES:
        raise ConfigError(f"{source} is a real-valued series: add --task forecast")
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
    if m.prior == "gaussian" and m.prior_scale == "learned":
        return LearnedGaussianPrior()
    if m.prior == "gaussian" and m.prior_scale == "hierarchical":
        return HierarchicalGaussianPrior(m.prior_hyper_shape, m.prior_hyper_rate)
    if m.prior == "gaussian":
        return GaussianPrior(m.prior_scale)
    return None


def build_model(config: RunConfig, size: int, outputs: int | None) -> torch.nn.Module:
    """The run's model: ``size`` is the vocabulary (lm, classify) or the features per row
    (forecast); ``outputs`` the classes (classify) or target columns (forecast)."""
    m = config.model
    options = {
        "prior": build_prior(config),
        "deterministic": m.deterministic,
        "regularisers": m.regularisers(),
        "init_range": m.init_range,
    }
    if config.task == "forecast":
        return SequenceRegressor(
            size,
            m.hidden_size,
            m.num_layers,
            m.cell,
            output_size=outputs,
            lags=config.data.lags,
            likelihood=m.likelihood,
            residual=m.residual,
            linear_skip=m.linear_skip,
            prior=options["prior"],
            deterministic=options["deterministic"],
            regularisers=options["regularisers"],
            init_range=options["init_range"],
        )
    if config.task == "classify":
        return SequenceClassifier(
            size,
            outputs,
            m.embedding_size,
            m.hidden_size,
            m.num_layers,
            m.cell,
            pooling=m.pooling,
            **options,
        )
    return LanguageModel(
        size,
        m.embedding_size,
        m.hidden_size,
        m.num_layers,
        m.cell,
        m.tie_weights,
        **options,
    )


def build_guide(config: RunConfig, model: torch.nn.Module):
    return make_guide(config.guide.name, model, **config.guide.options())


def first_batch(config: RunConfig, model: torch.nn.Module) -> tuple:
    """A two-step batch of zeros to call a guide once (autoguides build their parameters then;
    only the shapes of the weight sites matter, which the data does not change)."""
    tokens = torch.zeros(2, 2, dtype=torch.long)
    if config.task == "forecast":
        rows = torch.zeros(2, 2, model.input_size)
        return rows, rows.clone()
    if config.task == "classify":
        return tokens, torch.zeros(2, dtype=torch.long), torch.full((2,), 2)
    return tokens, tokens.clone()


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


def check_device(config: RunConfig) -> None:
    device = config.trainer.device
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "device 'mps' was asked for, but torch sees no Apple GPU (MPS) on this machine; "
            "use device 'cpu' (--device cpu, trainer.device or load_run(..., device='cpu'))"
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} was asked for, but torch sees no CUDA device on this machine; "
            "use device 'cpu' (--device cpu, trainer.device or load_run(..., device='cpu'))"
        )


def model_sizes(corpus, task: str) -> tuple[int, int | None]:
    """``(size, outputs)`` for :func:`build_model` from a loaded corpus."""
    if task == "forecast":
        return int(corpus.train.shape[1]), int(corpus.targets)
    return len(corpus.vocab), getattr(corpus, "n_classes", None)


def build(config: RunConfig, size: int, outputs: int | None, *, training: bool = True) -> tuple:
    """Model and guide, seeded by the config; a bad combination, or a model too large for the
    memory (``training``: to train it, else to evaluate it), is a ConfigError."""
    check_device(config)
    check_ensemble_draws(config)
    what = (
        f"model.hidden_size={config.model.hidden_size}, "
        f"model.embedding_size={config.model.embedding_size}, "
        f"model.num_layers={config.model.num_layers}, input size {size}"
    )
    try:
        with torch.device("meta"):  # shapes only: counts the weights without allocating them
            values = model_values(build_model(config, size, outputs))
        check_memory(
            values,
            config.guide.name,
            config.guide.members,
            config.trainer.num_particles,
            config.trainer.device,
            what,
            training=training,
        )
    except ValueError as error:
        raise ConfigError(f"cannot build model and guide: {error}") from error
    except MemoryError as error:
        raise ConfigError(str(error)) from None
    seed_everything(config.trainer.seed)
    try:
        model = build_model(config, size, outputs)
        if config.guide.name == "nuts":  # refused before any training or writing
            check_nuts_size(model)
            if current_ranks().world > 1:
                raise ValueError("guide.name=nuts runs in one process (its chains are processes)")
        guide = build_guide(config, model)
        if isinstance(guide, torch.nn.Module):
            forget_params(guide)
    except ValueError as error:
        raise ConfigError(f"cannot build model and guide: {error}") from error
    except (RuntimeError, MemoryError) as error:  # e.g. hidden_size=10**10
        if isinstance(error, RuntimeError) and "alloc" not in str(error).lower():
            raise
        raise ConfigError(f"the model does not fit in memory ({what})") from None
    return model, guide


def setup(
    config: RunConfig,
    log: Log,
    vocabulary: Vocabulary | None = None,
    series: Mapping | None = None,
    *,
    training: bool = True,
) -> Setup:
    """Load data (encoded with ``vocabulary`` when given, a trained run's; a series scaled with
    ``series``, a trained run's scaling) and build model and guide (for ``training``, or to
    evaluate a trained one); a bad combination is a
    ConfigError."""
    check_device(config)
    corpus = load_data(config)
    if vocabulary is not None:
        corpus = reencode_corpus(corpus, vocabulary)
    if series is not None and config.task == "forecast":
        corpus = rescale_series(corpus, series)
    log(f"data: {getattr(corpus, 'name', config.data.source)} {corpus.sizes()}")
    if config.data.lags == "auto":  # the lags read off the data, written as the config's own
        lags = tuple(getattr(corpus, "lags", ()))
        log(f"data.lags=auto: lags {list(lags)}")
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, lags=lags))
    config = fit_windows(config, corpus, log)
    model, guide = build(config, *model_sizes(corpus, config.task), training=training)
    return Setup(config, corpus, model, guide)


def forget_params(guide: torch.nn.Module) -> None:
    """Drop the parameters of ``guide``'s name from Pyro's global store: an autoguide builds its
    parameters on its first call and takes any of its name already there, another run's (of
    another shape) when several runs are built or loaded in one process."""
    prefix = f"{getattr(guide, '_pyro_name', type(guide).__name__)}."
    store = pyro.get_param_store()
    for name in [key for key in store.get_all_param_names() if key.startswith(prefix)]:
        del store[name]


def restore(s: Setup, run: RunDir) -> dict:
    """Load the trained model and guide from the run's checkpoint; returns the checkpoint.

    A checkpoint of another model, a foreign file or one holding non-finite parameters (a
    diverged run) is a :class:`CheckpointError` that says what to do.
    """
    if not run.checkpoint.is_file():
        raise JobError(f"{run.root} has no checkpoint.pt: train it first (bayesrnn train/run)")
    device = torch.device(s.config.trainer.device)
    payload = load_checkpoint(run.checkpoint, map_location=device)
    check_checkpoint(payload, run.checkpoint, nuts=s.config.guide.name == "nuts")
    check_checkpoint_vocabulary(payload, getattr(s.corpus, "vocab", None), run)
    s.model.to(device)
    try:
        if isinstance(s.guide, torch.nn.Module):
            s.guide.to(device)
            if s.config.guide.name.startswith("auto_"):
                # Autoguides create their parameters on their first call.
                with torch.no_grad():
                    s.guide(*(t.to(device) for t in first_batch(s.config, s.model)))
            s.guide.load_state_dict(payload["guide"])
        s.model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        reason = " ".join(str(error).split())[:160]
        raise CheckpointError(
            f"{run.checkpoint} does not fit this run's model and guide ({type(error).__name__}: "
            f"{reason}); delete it to train from the start, or restore it from a backup"
        ) from None
    tensors = [*s.model.state_dict().values()]
    if isinstance(s.guide, torch.nn.Module):
        tensors += [*s.guide.state_dict().values()]
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors):
        raise CheckpointError(
            f"{run.checkpoint} holds non-finite (NaN or infinite) parameters: the run diverged; "
            "train a new run with a lower trainer.lr"
        )
    return payload
