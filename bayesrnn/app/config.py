"""Run configuration: the typed sections of a run and their checks.

A run is described by one :class:`RunConfig` with five sections, ``data``, ``model``, ``guide``,
``trainer`` (exactly :class:`bayesrnn.inference.TrainerConfig`) and ``evaluation``. Presets are
in :mod:`bayesrnn.app.presets`; TOML files, ``--set`` overrides and the layering of all of them
in :mod:`bayesrnn.app.config_files`.
"""

import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from bayesrnn.app.config_checks import ConfigError, check_choice, check_optional_positive
from bayesrnn.app.config_evaluation import EvaluationConfig
from bayesrnn.app.config_limits import limit_violation
from bayesrnn.data.lags import check_lags
from bayesrnn.data.transforms import AUTO_TRANSFORM, TRANSFORMS
from bayesrnn.inference.estimators.mixture_kl import check_quadrature_order
from bayesrnn.inference.guides.ensemble import check_members
from bayesrnn.inference.guides.mean_field import KL_ESTIMATORS, check_init_scale
from bayesrnn.inference.training.trainer import TrainerConfig

NONE = "none"
TASKS = ("lm", "classify", "forecast")
# What each task's validation reports (the names ``trainer.monitor`` may watch): a language
# model's perplexity, a classifier's accuracy and NLL, a forecaster's NLL per value
TASK_MONITORS = {
    "lm": ("valid_perplexity",),
    "classify": ("valid_accuracy", "valid_nll"),
    "forecast": ("valid_nll",),
}
SERIES_SOURCES = ("sunspots", "co2", "elnino")  # statsmodels' bundled series (timeseries extra)
DATA_SOURCES = ("embedded", "ptb", "ptb-char", "polarity", *SERIES_SOURCES)
LIKELIHOODS = ("gaussian", "student_t")
LEVELS = ("word", "char")
PRIORS = ("scale_mixture", "gaussian", "none")
FITTED_SCALES = ("learned", "hierarchical")  # model.prior_scale values other than a number
MIXTURE_PER = ("weight", "row")
GUIDE_NAMES = (
    "mean_field",
    "sharpened",
    "gal",
    "none",
    "auto_normal",
    "auto_low_rank",
    "ensemble",
    "nuts",
)
GAUSSIAN_GUIDES = ("mean_field", "sharpened", "auto_normal")
SECTIONS = ("data", "model", "guide", "trainer", "evaluation")
TOP_LEVEL = ("task", "preset")
# Keys that change where or how visibly a run executes, not what it computes; a run directory
# may be resumed with other values. data.dir is here because every named data set is checked
# against pinned sha256 sums, so moving the files does not change the data.
RUNTIME_KEYS = frozenset({"trainer.device", "trainer.progress", "data.dir"})

PTB_TRAIN_TOKENS = 929_589  # Mikolov's ptb.train.txt with <eos> (bayesrnn.data.load_ptb)
POLARITY_TRAIN_EXAMPLES = 8_530  # 80% of 10,662 snippets (load_polarity's default split)


# --- sections -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Which data.

    ``source``: embedded, ptb, ptb-char, polarity, or a text file/folder path; ``dir``: the
    folder holding ptb/, ptb_char/ or rt-polarity/; ``level``: word or char for embedded and
    text files; ``max_vocab``: vocabulary cap; ``split_seed``: the polarity split;
    ``max_examples``: keep the first N sentences of each polarity split (quick runs);
    forecasting: ``source`` sunspots, co2, elnino or a CSV file, ``target`` its column to forecast
    (CSV only; ``a,b`` for several), ``covariates`` further input columns (read lagged: row t
    informs row t + 1), ``future_covariates`` columns known in advance (calendar features,
    planned promotions: they enter at the row they apply to), ``time`` a column of times
    (for plots and outputs, not a feature), ``transform`` of the positive targets before
    scaling (none, log, sqrt, boxcox with λ fitted on the training split, or auto: √ for a
    count-like series that never goes below 0 and comes near it), ``season`` the period in
    rows of the seasonal baselines (none: inferred from dated times, weekly 52, monthly 12,
    quarterly 4, daily 7, else 1), ``lags`` earlier
    target values read as extra inputs (lag ℓ: the value ℓ steps before the one forecast; lag
    1, the last value, is always read; e.g. ``2,3,11`` for two more years and the solar cycle;
    ``auto``: 2, 3 and the season m, m + 1 read off the training split's autocorrelation).
    """

    source: str = "embedded"
    dir: str | None = None
    level: str = "word"
    max_vocab: int | None = None
    split_seed: int = 0
    max_examples: int | None = None
    target: str | None = None
    covariates: tuple[str, ...] = ()
    future_covariates: tuple[str, ...] = ()
    time: str | None = None
    transform: str = "none"
    season: int | None = None
    lags: tuple[int, ...] | str = ()

    def __post_init__(self) -> None:
        check_choice("data.level", self.level, LEVELS)
        check_choice("data.transform", self.transform, (*TRANSFORMS, AUTO_TRANSFORM))
        try:
            check_lags(self.lags, allow_auto=True)
        except ValueError as error:
            raise ConfigError(f"data.lags: {error}") from None
        check_optional_positive("data.season", self.season)
        check_optional_positive("data.max_vocab", self.max_vocab)
        check_optional_positive("data.max_examples", self.max_examples)

    @property
    def is_path(self) -> bool:
        return self.source not in DATA_SOURCES


@dataclass(frozen=True)
class ModelConfig:
    """Network shape, prior and deterministic regularisers.

    ``prior``: scale_mixture (``prior_pi``, ``prior_sigma1``, ``prior_sigma2``; ``prior_per``
    "row", the default: per row as DeepMind's brnn_ptb.py computes it, see
    :func:`bayesrnn.models.priors.brnn_ptb_prior`, which trains far better from the default
    initial σ on a language model at 10% of PTB; "weight": one mixture draw per weight, the
    paper's eq. 18), gaussian
    (``prior_scale``: a number, the fixed s of N(0, s²); ``"learned"``: one s per weight site
    fitted by empirical Bayes on the ELBO, :class:`bayesrnn.models.LearnedGaussianPrior`;
    ``"hierarchical"``: one latent s per site with s² ~ InverseGamma(``prior_hyper_shape``,
    ``prior_hyper_rate``), :class:`bayesrnn.models.HierarchicalGaussianPrior`; neither with
    the gal guide) or none (a plain network for the baselines); ``deterministic``: weight
    sites kept as point estimates; ``init_range``: U(−r, r) initialisation, none for torch's;
    the rates from ``naive_dropout`` to ``weight_drop`` and ``mask_scope`` are
    :class:`bayesrnn.models.Regularisers`; ``pooling`` is the classifier's, ``likelihood``
    (gaussian or student_t), ``residual`` (forecast the change from the last row) and
    ``linear_skip`` (a linear autoregression on the input row beside the network) the
    forecaster's.
    """

    embedding_size: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    cell: str = "lstm"
    tie_weights: bool = False
    init_range: float | None = None
    pooling: str = "last"
    likelihood: str = "gaussian"
    residual: bool = False
    linear_skip: bool = False
    prior: str = "scale_mixture"
    prior_scale: float | str = 1.0
    prior_hyper_shape: float = 1.0
    prior_hyper_rate: float = 1.0
    prior_pi: float = 0.25
    prior_sigma1: float = math.exp(-1.0)
    prior_sigma2: float = math.exp(-7.0)
    prior_per: str = "row"
    deterministic: tuple[str, ...] = ("decoder.bias",)
    naive_dropout: float = 0.0
    locked_input: float = 0.0
    locked_hidden: float = 0.0
    locked_output: float = 0.0
    embedding_dropout: float = 0.0
    zoneout_c: float = 0.0
    zoneout_h: float = 0.0
    weight_drop: float = 0.0
    mask_scope: str = "sequence"

    REGULARISERS: typing.ClassVar[tuple[str, ...]] = (
        "naive_dropout",
        "locked_input",
        "locked_hidden",
        "locked_output",
        "embedding_dropout",
        "zoneout_c",
        "zoneout_h",
        "weight_drop",
        "mask_scope",
    )

    def __post_init__(self) -> None:
        for name in ("embedding_size", "hidden_size", "num_layers"):
            check_optional_positive(f"model.{name}", getattr(self, name))
        check_choice("model.prior", self.prior, PRIORS)
        check_choice("model.prior_per", self.prior_per, MIXTURE_PER)
        _check_prior_scale(self)
        check_choice("model.pooling", self.pooling, ("last", "mean"))
        check_choice("model.likelihood", self.likelihood, LIKELIHOODS)

    def regularisers(self) -> dict[str, float | str]:
        return {name: getattr(self, name) for name in self.REGULARISERS}


@dataclass(frozen=True)
class GuideConfig:
    """The variational posterior; only the options of the chosen ``name`` are used.

    mean_field/sharpened: ``init_scale`` (the initial σ: "auto", a tenth of each site's weight
    size; "fortunato", the paper's draw in [σ_p/4, σ_p]; or a float), ``kl`` ("expected": the KL
    against a scale mixture computed from (μ, σ) per weight, by ``quadrature_order``-node
    Gauss–Hermite where σ is narrower than the spike's edge and a fixed trapezoid grid above;
    "sample": the one-sample estimate of the paper and brnn_ptb.py); sharpened:
    ``sigma0``, ``eta_init``, ``eta_max`` (none: σ0², 2σ0² in units of the per-sequence NLL);
    gal: ``dropout_embedding/input/hidden/output`` and ``mask_scope``; ensemble: ``members``,
    the K independently initialised MAP networks (a deep ensemble); nuts (no variational
    posterior: NUTS draws over the whole training data as one batch): ``num_chains``,
    ``num_samples`` and ``warmup_steps`` per chain, ``max_tree_depth``, ``target_accept``,
    ``full_mass`` (adapt a dense mass matrix: correlated weights take shorter trees, at the cost
    of estimating d² entries during warm-up, so give it a few hundred warm-up steps).
    """

    name: str = "mean_field"
    init_scale: str | float = "auto"
    kl: str = "expected"
    quadrature_order: int = 8
    sigma0: float = 0.02
    eta_init: float | None = None
    eta_max: float | None = None
    dropout_embedding: float = 0.0
    dropout_input: float = 0.0
    dropout_hidden: float = 0.0
    dropout_output: float = 0.0
    mask_scope: str = "sequence"
    members: int = 5
    num_chains: int = 4
    num_samples: int = 100
    warmup_steps: int = 100
    max_tree_depth: int = 10
    target_accept: float = 0.8
    full_mass: bool = False

    def __post_init__(self) -> None:
        check_choice("guide.name", self.name, GUIDE_NAMES)
        try:
            check_members(self.members)
        except ValueError as error:
            raise ConfigError(f"guide.{error}") from None
        for name in ("num_chains", "num_samples", "max_tree_depth"):
            value = getattr(self, name)
            if value is None:
                raise ConfigError(f"guide.{name} must be a positive integer, got none")
            check_optional_positive(f"guide.{name}", value)
        steps = self.warmup_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"guide.warmup_steps must be an integer >= 0, got {steps!r}")
        accept = self.target_accept
        if isinstance(accept, bool) or not isinstance(accept, int | float) or not 0 < accept < 1:
            raise ConfigError(f"guide.target_accept must lie in (0, 1), got {accept!r}")
        check_choice("guide.kl", self.kl, KL_ESTIMATORS)
        try:
            check_init_scale(self.init_scale)
        except ValueError as error:
            raise ConfigError(f"guide.{error}") from None
        try:
            check_quadrature_order(self.quadrature_order)
        except ValueError as error:
            raise ConfigError(f"guide.{error}") from None
        for name in ("eta_init", "eta_max"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ConfigError(f"guide.{name} must be none or a positive number, got {value!r}")

    @property
    def is_gaussian(self) -> bool:
        """A diagonal Gaussian posterior: signal-to-noise pruning applies."""
        return self.name in GAUSSIAN_GUIDES

    def options(self) -> dict[str, Any]:
        """Keyword options for :func:`bayesrnn.inference.make_guide`."""
        gaussian = {
            "init_scale": self.init_scale,
            "kl": self.kl,
            "quadrature_order": self.quadrature_order,
        }
        if self.name == "mean_field":
            return gaussian
        if self.name == "sharpened":
            return {
                **gaussian,
                "sigma0": self.sigma0,
                "eta_init": self.eta_init,
                "eta_max": self.eta_max,
            }
        if self.name == "gal":
            return {
                "embedding": self.dropout_embedding,
                "input": self.dropout_input,
                "hidden": self.dropout_hidden,
                "output": self.dropout_output,
                "scope": self.mask_scope,
            }
        if self.name == "ensemble":
            return {"members": self.members}
        if self.name == "nuts":
            return {"num_chains": self.num_chains, "num_samples": self.num_samples}
        return {}


# The offline default. Measured on this corpus (135 windows an epoch): a 1x128 LSTM costs
# ~0.23 CPU-s a window against ~0.75 for 1x256, so 4 epochs fit in a few minutes on 2 cores.
# SGD at lr 1 matched Adam (lr 3e-3) over 2 epochs (1x256: valid perplexity 148 vs 154); the
# lr is halved for the last epoch as in Zaremba's small schedule.
DEFAULT_TRAINER = TrainerConfig(
    batch_size=20,
    bptt=35,
    epochs=4,
    lr=1.0,
    constant_epochs=3,
    lr_decay=2.0,
    clip_norm=5.0,
    checkpoint_every=25,
)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; ``preset`` records which preset the values started from."""

    task: str = "lm"
    preset: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    guide: GuideConfig = field(default_factory=GuideConfig)
    trainer: TrainerConfig = field(default_factory=lambda: DEFAULT_TRAINER)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        _check_trainer(self.trainer)
        _check_monitor(self)
        _check_local_decoder(self)
        _check_fitted_scale_guide(self)
        _check_nuts(self)
        violation = limit_violation(self)
        if violation is not None:
            raise ConfigError(violation)


def _check_prior_scale(model: ModelConfig) -> None:
    scale = model.prior_scale
    if isinstance(scale, str):
        if scale not in FITTED_SCALES:
            raise ConfigError(
                f"model.prior_scale must be a positive number, learned or hierarchical; "
                f"got {scale!r}"
            )
        if model.prior != "gaussian":
            raise ConfigError(
                f"model.prior_scale={scale} is a Gaussian prior's scale: it needs "
                f"model.prior=gaussian, got {model.prior}"
            )
    elif not (scale > 0 and math.isfinite(scale)):
        raise ConfigError(f"model.prior_scale must be a positive number, got {scale!r}")
    for name in ("prior_hyper_shape", "prior_hyper_rate"):
        value = getattr(model, name)
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"model.{name} must be a positive number, got {value!r}")


def _check_fitted_scale_guide(config: RunConfig) -> None:
    """Gal's KL has no entropy term to balance a fitted prior scale: refused before training."""
    scale = config.model.prior_scale
    if config.guide.name == "gal" and isinstance(scale, str) and config.model.prior != "none":
        raise ConfigError(
            f"model.prior_scale={scale} does not work with guide.name=gal: Gal's KL drops the "
            "posterior's entropy, so a fitted scale would shrink with the weights without bound; "
            "give model.prior_scale a number"
        )


def check_ensemble_draws(config: RunConfig) -> None:
    """An ensemble predicts with the equal-weight mixture of its members: MC draws visit the
    members in turn, so only a multiple of ``members`` draws weighs them equally. Checked on
    the final config (by :func:`bayesrnn.app.setup.build`), not on each layer of overrides."""
    guide, ev = config.guide, config.evaluation
    if guide.name != "ensemble" or ev.mc_samples % guide.members == 0:
        return
    raise ConfigError(
        f"evaluation.mc_samples ({ev.mc_samples}) must be a multiple of guide.members "
        f"({guide.members}): each member is one draw of the ensemble's mixture; set "
        f"evaluation.mc_samples={guide.members}"
    )


def _check_nuts(config: RunConfig) -> None:
    """NUTS samples a fixed density: the model must draw no masks of its own, and the
    evaluation must not train (dynamic evaluation updates a variational posterior)."""
    if config.guide.name != "nuts":
        return
    active = [
        name
        for name, value in config.model.regularisers().items()
        if name != "mask_scope" and value
    ]
    if active:
        raise ConfigError(
            f"guide.name=nuts needs a model without dropout-type masks; {', '.join(active)} "
            "would make the likelihood random (set them to 0)"
        )
    if config.evaluation.dynamic_lr is not None:
        raise ConfigError("evaluation.dynamic_lr adapts a variational posterior; not with nuts")


def _check_monitor(config: RunConfig) -> None:
    """``trainer.monitor`` must name a metric the task's validation reports: refused here,
    not after the first epoch."""
    monitor, valid = config.trainer.monitor, TASK_MONITORS[config.task]
    if monitor is not None and monitor not in valid:
        raise ConfigError(
            f"trainer.monitor={monitor} is not reported by a {config.task} run's validation; "
            f"use one of {', '.join(valid)}"
        )


def _check_local_decoder(config: RunConfig) -> None:
    """``evaluation.mc_decoder=local`` is exact only for a mean-field language model whose
    decoder is its own: refused before training rather than after it."""
    if config.evaluation.mc_decoder != "local":
        return
    if config.task != "lm":
        raise ConfigError(
            f"evaluation.mc_decoder=local is for language models (task=lm), not {config.task}"
        )
    if config.guide.name != "mean_field":
        raise ConfigError(
            "evaluation.mc_decoder=local needs guide.name=mean_field (Gaussian weights drawn as "
            f"q(θ)), got {config.guide.name}"
        )
    if config.model.tie_weights:
        raise ConfigError("evaluation.mc_decoder=local needs model.tie_weights=false")


_DEVICE = re.compile(r"(cpu|cuda|mps)(:\d+)?")


def _check_trainer(trainer: TrainerConfig) -> None:
    """What TrainerConfig leaves to the run: an integer seed (its range is in LIMITS), a device
    name torch knows."""
    seed = trainer.seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"trainer.seed must be an integer, got {seed!r}")
    if not isinstance(trainer.device, str) or not _DEVICE.fullmatch(trainer.device):
        raise ConfigError(
            f"trainer.device must be cpu, cuda, cuda:N or mps, got {trainer.device!r}"
        )
