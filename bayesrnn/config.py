"""Run configuration: typed sections, the papers' presets, TOML files and ``--set`` overrides.

A run is described by one :class:`RunConfig` with five sections, ``data``, ``model``, ``guide``,
``trainer`` (exactly :class:`bayesrnn.inference.TrainerConfig`) and ``evaluation``. Values are
layered, later winning: the defaults (the small offline run), a preset, a TOML file, then
``--set section.key=value`` overrides and the CLI's shorthand flags. Every key is checked
against the dataclass fields, so a typo is an error rather than a silently ignored setting.

TOML has no null: optional values are written and read as the string ``"none"``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayesrnn.data.atomic import atomic_write
from bayesrnn.inference.guides.mean_field import KL_ESTIMATORS
from bayesrnn.inference.mixture_kl import check_quadrature_order
from bayesrnn.inference.trainer import TrainerConfig

__all__ = [
    "DATA_SOURCES",
    "PRESETS",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "GuideConfig",
    "ModelConfig",
    "Preset",
    "RunConfig",
    "apply_values",
    "comparable",
    "config_to_dict",
    "dumps_toml",
    "gal_prior_scale",
    "load_toml",
    "parse_override",
    "resolve_config",
    "write_config",
    "write_text_atomic",
]

NONE = "none"
TASKS = ("lm", "classify")
DATA_SOURCES = ("embedded", "ptb", "ptb-char", "polarity")
LEVELS = ("word", "char")
PRIORS = ("scale_mixture", "gaussian", "none")
MIXTURE_PER = ("weight", "row")
GUIDE_NAMES = ("mean_field", "sharpened", "gal", "none", "auto_normal", "auto_low_rank")
GAUSSIAN_GUIDES = ("mean_field", "sharpened", "auto_normal")
SECTIONS = ("data", "model", "guide", "trainer", "evaluation")
TOP_LEVEL = ("task", "preset")
# Keys that change where or how visibly a run executes, not what it computes; a run directory
# may be resumed with other values. data.dir is here because every named data set is checked
# against pinned sha256 sums, so moving the files does not change the data.
RUNTIME_KEYS = frozenset({"trainer.device", "trainer.progress", "data.dir"})

PTB_TRAIN_TOKENS = 929_589  # Mikolov's ptb.train.txt with <eos> (bayesrnn.data.load_ptb)
POLARITY_TRAIN_EXAMPLES = 8_530  # 80% of 10,662 snippets (load_polarity's default split)


class ConfigError(ValueError):
    """A configuration that cannot run: unknown key or preset, wrong type, inconsistent values."""


# --- sections -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Which data.

    ``source``: embedded, ptb, ptb-char, polarity, or a text file/folder path; ``dir``: the
    folder holding ptb/, ptb_char/ or rt-polarity/; ``level``: word or char for embedded and
    text files; ``max_vocab``: vocabulary cap; ``split_seed``: the polarity split;
    ``max_examples``: keep the first N sentences of each polarity split (quick runs).
    """

    source: str = "embedded"
    dir: str | None = None
    level: str = "word"
    max_vocab: int | None = None
    split_seed: int = 0
    max_examples: int | None = None

    def __post_init__(self) -> None:
        _check_choice("data.level", self.level, LEVELS)
        _check_optional_positive("data.max_vocab", self.max_vocab)
        _check_optional_positive("data.max_examples", self.max_examples)

    @property
    def is_path(self) -> bool:
        return self.source not in DATA_SOURCES


@dataclass(frozen=True)
class ModelConfig:
    """Network shape, prior and deterministic regularisers.

    ``prior``: scale_mixture (``prior_pi``, ``prior_sigma1``, ``prior_sigma2``; ``prior_per``
    "weight": one mixture draw per weight, the paper's eq. 18; "row": per row as DeepMind's
    brnn_ptb.py computes it, see :func:`bayesrnn.models.priors.brnn_ptb_prior`), gaussian
    (``prior_scale``) or none (a plain network for the baselines); ``deterministic``: weight
    sites kept as point estimates; ``init_range``: U(−r, r) initialisation, none for torch's;
    the rates from ``naive_dropout`` to ``weight_drop`` and ``mask_scope`` are
    :class:`bayesrnn.models.Regularisers`; ``pooling`` is the classifier's.
    """

    embedding_size: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    cell: str = "lstm"
    tie_weights: bool = False
    init_range: float | None = None
    pooling: str = "last"
    prior: str = "scale_mixture"
    prior_scale: float = 1.0
    prior_pi: float = 0.25
    prior_sigma1: float = math.exp(-1.0)
    prior_sigma2: float = math.exp(-7.0)
    prior_per: str = "weight"
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
            _check_optional_positive(f"model.{name}", getattr(self, name))
        _check_choice("model.prior", self.prior, PRIORS)
        _check_choice("model.prior_per", self.prior_per, MIXTURE_PER)
        _check_choice("model.pooling", self.pooling, ("last", "mean"))

    def regularisers(self) -> dict[str, float | str]:
        return {name: getattr(self, name) for name in self.REGULARISERS}


@dataclass(frozen=True)
class GuideConfig:
    """The variational posterior; only the options of the chosen ``name`` are used.

    mean_field/sharpened: ``init_scale`` ("fortunato" or a float), ``kl`` ("expected": the KL
    against a scale mixture computed from (μ, σ), by ``quadrature_order``-node Gauss–Hermite per
    weight; "sample": the one-sample estimate of the paper and brnn_ptb.py); sharpened:
    ``sigma0``, ``eta_init``, ``eta_max`` (none: σ0², 2σ0² in units of the per-sequence NLL);
    gal: ``dropout_embedding/input/hidden/output`` and ``mask_scope``.
    """

    name: str = "mean_field"
    init_scale: str | float = "fortunato"
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

    def __post_init__(self) -> None:
        _check_choice("guide.name", self.name, GUIDE_NAMES)
        _check_choice("guide.kl", self.kl, KL_ESTIMATORS)
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
        return {}


@dataclass(frozen=True)
class EvaluationConfig:
    """What ``evaluate`` computes on ``split`` after training, and what ``export`` writes.

    ``mc_samples``: draws averaged (in probability) for the MC predictive; ``n_bins`` and
    ``bin_strategy``: calibration bins; ``reversed_text``: Fortunato's entropy gap and the OOD
    AUROC; ``sharpened_bound``: the upper bound of a sharpened guide; ``pruning`` and
    ``pruning_fractions``: the SNR curve on valid (Gaussian guides); ``export`` and
    ``export_samples``: posterior.nc; ``max_tokens``: evaluate only the first N tokens;
    ``dynamic_lr``: also evaluate dynamically with this lr (none: not at all).
    """

    split: str = "test"
    mc_samples: int = 10
    n_bins: int = 15
    bin_strategy: str = "width"
    reversed_text: bool = True
    sharpened_bound: bool = True
    pruning: bool = True
    pruning_fractions: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95)
    export: bool = True
    export_samples: int = 10
    max_tokens: int | None = None
    dynamic_lr: float | None = None

    def __post_init__(self) -> None:
        _check_choice("evaluation.split", self.split, ("valid", "test"))
        lr = self.dynamic_lr
        if lr is not None and (
            isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 <= lr < math.inf
        ):
            raise ConfigError(f"evaluation.dynamic_lr must be none or a number >= 0, got {lr!r}")
        _check_choice("evaluation.bin_strategy", self.bin_strategy, ("width", "mass"))
        for name in ("mc_samples", "n_bins", "export_samples"):
            _check_optional_positive(f"evaluation.{name}", getattr(self, name))
        _check_optional_positive("evaluation.max_tokens", self.max_tokens)
        if any(not 0.0 <= f <= 1.0 for f in self.pruning_fractions):
            raise ConfigError("evaluation.pruning_fractions must lie in [0, 1]")


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
        _check_choice("task", self.task, TASKS)
        _check_trainer(self.trainer)


_DEVICE = re.compile(r"(cpu|cuda|mps)(:\d+)?")


def _check_trainer(trainer: TrainerConfig) -> None:
    """What TrainerConfig leaves to the run: a seed torch accepts, a device name torch knows."""
    seed = trainer.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"trainer.seed must be an integer in [0, 2**32), got {seed!r}")
    if not isinstance(trainer.device, str) or not _DEVICE.fullmatch(trainer.device):
        raise ConfigError(
            f"trainer.device must be cpu, cuda, cuda:N or mps, got {trainer.device!r}"
        )


# --- presets ------------------------------------------------------------------------------------


def gal_prior_scale(weight_decay: float, keep: float, windows_times_batch: float) -> float:
    """The Gaussian prior scale s whose KL gradient matches Gal's per-step weight decay.

    Gal's code shrinks every weight by ``weight_decay`` after each step (lr 1). Our trainer's
    step minimises (NLL + KL/C)/B with Gal's KL ‖M‖²/(2 s² (1−p)), whose gradient is
    M/(s² (1−p) C B); equal to weight_decay·M when s² = 1/(weight_decay (1−p) C B).
    ``keep`` is 1−p and ``windows_times_batch`` is C·B (PTB: 929,589/35 for BPTT 35; for a
    classifier trained on the batch mean, C·B is the number of training examples, with the
    decay then read as the L2 coefficient λ of λ‖W‖²: s² = 1/(2 λ (1−p) N)).
    """
    return 1.0 / math.sqrt(weight_decay * keep * windows_times_batch)


_GAL_PTB_SCALE = round(gal_prior_scale(1e-7, 0.5, PTB_TRAIN_TOKENS / 35), 1)
_GAL_POLARITY_SCALE = round(gal_prior_scale(2 * 1e-6, 0.5, POLARITY_TRAIN_EXAMPLES), 1)


@dataclass(frozen=True)
class Preset:
    """Named values from a paper, with where they come from and what the paper reported."""

    name: str
    summary: str
    source: str
    published: str
    values: Mapping[str, Any]
    notes: str = ""


def _ptb(level: str = "word") -> dict[str, Any]:
    return {"source": "ptb" if level == "word" else "ptb-char"}


def _zaremba(hidden: int, init: float, dropout: float, **trainer: Any) -> dict[str, Any]:
    return {
        "data": _ptb(),
        "model": {
            "embedding_size": hidden,
            "hidden_size": hidden,
            "num_layers": 2,
            "init_range": init,
            "prior": "none",
            "deterministic": [],
            "naive_dropout": dropout,
        },
        "guide": {"name": "none"},
        "trainer": {"batch_size": 20, "optimizer": "sgd", "lr": 1.0, **trainer},
    }


_FORTUNATO = {
    "data": _ptb(),
    "model": {
        "embedding_size": 650,
        "hidden_size": 650,
        "num_layers": 2,
        "init_range": NONE,
        "prior": "scale_mixture",
        "prior_pi": 0.25,
        "prior_sigma1": math.exp(-1.0),
        "prior_sigma2": math.exp(-7.0),
        "prior_per": "row",
        "deterministic": ["decoder.bias"],
    },
    "guide": {"name": "mean_field", "init_scale": "fortunato", "kl": "sample"},
    "trainer": {
        "batch_size": 20,
        "bptt": 35,
        "epochs": 70,
        "optimizer": "sgd",
        "lr": 1.0,
        "constant_epochs": 20,
        "lr_decay": 1 / 0.9,
        "clip_norm": 5.0,
        "checkpoint_every": 200,
    },
}


def _gal(hidden: int, init: float, **trainer: Any) -> dict[str, Any]:
    return {
        "data": _ptb(),
        "model": {
            "embedding_size": hidden,
            "hidden_size": hidden,
            "num_layers": 2,
            "init_range": init,
            "prior": "gaussian",
            "prior_scale": _GAL_PTB_SCALE,
            "deterministic": [],
        },
        "guide": {
            "name": "gal",
            "dropout_embedding": 0.3,
            "dropout_hidden": 0.3,
            "dropout_input": 0.5,
            "dropout_output": 0.5,
            "mask_scope": "sequence",
        },
        "trainer": {"batch_size": 20, "bptt": 35, "optimizer": "sgd", "lr": 1.0, **trainer},
        "evaluation": {"mc_samples": 100},
    }


def _with(base: Mapping[str, Mapping[str, Any]], **sections: Mapping[str, Any]):
    return {name: {**base.get(name, {}), **sections.get(name, {})} for name in {*base, *sections}}


_Z = "Zaremba, Sutskever & Vinyals 2014, §4.1; TF ptb_word_lm.py"
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "default",
            "offline demo: pydoc corpus, 1x128 LSTM, Bayes by Backprop, 4 epochs of SGD",
            "bayesrnn (Fortunato's prior and posterior on a small net)",
            "none (not a paper configuration)",
            {},
        ),
        Preset(
            "zaremba-small",
            "2x200 LSTM, no regularisation, BPTT 20, 13 epochs, lr halved after epoch 4",
            _Z,
            "PTB val 120.7 / test 114.5 (TF reproduction 121.39 / 115.91)",
            _zaremba(
                200, 0.1, 0.0, bptt=20, epochs=13, constant_epochs=4, lr_decay=2.0, clip_norm=5.0
            ),
        ),
        Preset(
            "zaremba-medium",
            "2x650 LSTM, naive dropout 0.5, 39 epochs, lr/1.2 per epoch after 6",
            _Z,
            "PTB val 86.2 / test 82.7 (TF reproduction 86.16 / 82.07)",
            _zaremba(
                650,
                0.05,
                0.5,
                bptt=35,
                epochs=39,
                constant_epochs=6,
                lr_decay=1.2,
                clip_norm=5.0,
                checkpoint_every=200,
            ),
        ),
        Preset(
            "zaremba-large",
            "2x1500 LSTM, naive dropout 0.65, 55 epochs, lr/1.15 per epoch after 14",
            _Z,
            "PTB val 82.2 / test 78.4 (TF reproduction 82.62 / 78.29)",
            _zaremba(
                1500,
                0.04,
                0.65,
                bptt=35,
                epochs=55,
                constant_epochs=14,
                lr_decay=1.15,
                clip_norm=10.0,
                checkpoint_every=200,
            ),
        ),
        Preset(
            "gal-medium",
            "2x650 variational LSTM (tied masks per sequence), Zaremba-medium schedule",
            "Gal & Ghahramani 2016, Table 1 (medium); schedule from Zaremba medium",
            "PTB tied: val 81.8 / test 79.7, MC test 79.0 (untied: 81.9 / 79.7, MC 78.6)",
            _gal(
                650,
                0.05,
                epochs=39,
                constant_epochs=6,
                lr_decay=1.2,
                clip_norm=5.0,
                checkpoint_every=200,
            ),
            notes=(
                "UNVERIFIED: the medium dropout rates (papers.md could not read them); the large "
                "script's 0.3/0.3/0.5/0.5 are used. Prior N(0, s²) with s = "
                f"{_GAL_PTB_SCALE} derived from Gal's weight decay 1e-7 per step at p = 0.5 "
                "(bayesrnn.config.gal_prior_scale; the derivation is ours). Our masks are tied "
                "across gates, so compare with the tied rows."
            ),
        ),
        Preset(
            "gal-large",
            "2x1500 variational LSTM: p_x 0.3, p_h 0.3, p_i 0.5, p_o 0.5, 55 epochs",
            "Gal & Ghahramani 2016, Table 1; yaringal/BayesianRNN main_new_dropout_SOTA_v3.lua",
            "PTB tied: val 77.3 / test 75.0, MC test 74.1 (untied: 77.9 / 75.2, MC 73.4)",
            _gal(
                1500,
                0.04,
                epochs=55,
                constant_epochs=10,
                lr_decay=1.15,
                clip_norm=10.0,
                checkpoint_every=200,
            ),
            notes=(
                f"Prior N(0, s²) with s = {_GAL_PTB_SCALE} derived from the script's weight "
                "decay 1e-7 per step at p = 0.5 (derivation ours; the paper's KL-to-L2 constant "
                "is UNVERIFIED). The paper averages 1000 MC passes; the preset uses 100 (set "
                "evaluation.mc_samples). Our masks are tied across gates."
            ),
        ),
        Preset(
            "fortunato-medium",
            "2x650 Bayes-by-Backprop LSTM, brnn_ptb.py's row-wise scale mixture, 70 epochs",
            "Fortunato, Blundell & Vinyals 2017, Table 1; DeepMind sonnet brnn_ptb.py",
            "PTB posterior mean: val 78.8 / test 75.5; reversed-PTB entropy gap ≈0.67 (10 "
            "samples), <0.65 (mean)",
            _FORTUNATO,
            notes=(
                "Prior as brnn_ptb.py runs it (model.prior_per = row): π = 0.25, σ1 = e^-1, "
                "σ2 = e^-7, one mixture draw per row of TensorFlow's (in, out) weights (torch "
                "columns; embedding rows; each bias whole), so real weights see N(0, σ1²) and "
                "no spike. The paper's eq. 18 mixes per weight (model.prior_per = weight). KL "
                "by one sample as brnn_ptb.py (guide.kl = sample). σ init from the official "
                "example; lr 1 for 20 epochs then x0.9 per epoch, clip 5."
            ),
        ),
        Preset(
            "fortunato-medium-sharpened",
            "fortunato-medium with posterior sharpening, σ0 = 0.02",
            "Fortunato, Blundell & Vinyals 2017, §4 and Table 1",
            "PTB val ≤ 77.8 / test ≤ 74.8 (upper bounds: sharpening uses the targets)",
            _with(_FORTUNATO, guide={"name": "sharpened", "sigma0": 0.02}),
            notes=(
                "Prior and KL as fortunato-medium (brnn_ptb.py's row-wise mixture). brnn_ptb.py "
                "has no sharpening; whether the paper stops second-order terms through g_φ is "
                "UNVERIFIED."
            ),
        ),
        Preset(
            "zoneout-large",
            "zaremba-large plus zoneout z_c 0.25, z_h 0.025 (naive dropout 0.65 kept)",
            "Krueger et al. 2017, §4 (word-level PTB)",
            "PTB val 81.4 / test 77.4",
            _with(
                _zaremba(
                    1500,
                    0.04,
                    0.65,
                    bptt=35,
                    epochs=55,
                    constant_epochs=14,
                    lr_decay=1.15,
                    clip_norm=10.0,
                    checkpoint_every=200,
                ),
                model={"zoneout_c": 0.25, "zoneout_h": 0.025},
            ),
            notes=(
                "z is the probability of keeping the previous c or h, the paper's convention "
                "(the authors' README command uses 0.5/0.05, and their PTB scripts read the flag "
                "as 1 − z)."
            ),
        ),
        Preset(
            "gal-polarity",
            "sentence polarity classifier: 1x128 variational LSTM, p = 0.5, Adam, batch 128",
            "settings of yaringal/BayesianRNN sentiment_lstm_regression.py (a different task)",
            "none: Gal's sentiment results are RMSE curves on another data set (UNVERIFIED)",
            {
                "task": "classify",
                "data": {"source": "polarity", "max_vocab": 20_000},
                "model": {
                    "embedding_size": 128,
                    "hidden_size": 128,
                    "num_layers": 1,
                    "prior": "gaussian",
                    "prior_scale": _GAL_POLARITY_SCALE,
                    "deterministic": [],
                },
                "guide": {
                    "name": "gal",
                    "dropout_embedding": 0.5,
                    "dropout_input": 0.5,
                    "dropout_hidden": 0.5,
                    "dropout_output": 0.5,
                },
                "trainer": {
                    "batch_size": 128,
                    "epochs": 10,
                    "optimizer": "adam",
                    "lr": 1e-3,
                    "clip_norm": NONE,
                    "checkpoint_every": 20,
                },
                "evaluation": {"mc_samples": 50},
            },
            notes=(
                "Gal's script regresses ratings of the Pang & Lee scale data; this preset "
                "classifies rt-polarity with its embedding/hidden sizes, p, Adam and batch size. "
                "Epochs and Adam's lr are ours; prior s = "
                f"{_GAL_POLARITY_SCALE} from its L2 1e-6 (derivation ours)."
            ),
        ),
    )
}
# --- coercion and layering ----------------------------------------------------------------------


def _check_choice(name: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_optional_positive(name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _section_types(section: type) -> dict[str, Any]:
    hints = typing.get_type_hints(section)
    return {f.name: hints[f.name] for f in dataclasses.fields(section)}


_SECTION_CLASSES: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "guide": GuideConfig,
    "trainer": TrainerConfig,
    "evaluation": EvaluationConfig,
}


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a TOML/override value to the field's type, or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if type(None) in options and (value is None or value == NONE):
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[-1] if errors else f"{key}: bad value {value!r}")
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if isinstance(value, str):  # "0,0.5,0.9" from the command line
            value = [_toml_scalar(v.strip()) for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(v, item, key) for v in value)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # pragma: no cover - fields are fixed


def apply_values(config: RunConfig, values: Mapping[str, Any], origin: str) -> RunConfig:
    """Return ``config`` with the nested ``values`` (sections of keys) applied.

    ``origin`` names where the values came from (a file, a preset, ``--set``) in errors.
    """
    top: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for name, value in values.items():
        if name in TOP_LEVEL:
            top[name] = _coerce(value, str, name)
        elif name in SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: [{name}] must be a table of keys")
            sections[name] = _apply_section(getattr(config, name), name, value, origin)
        else:
            known = ", ".join((*TOP_LEVEL, *SECTIONS))
            raise ConfigError(f"{origin}: unknown config key {name!r} (known: {known})")
    try:
        return dataclasses.replace(config, **top, **sections)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{origin}: {error}") from error


def _apply_section(current: Any, name: str, values: Mapping[str, Any], origin: str) -> Any:
    types_ = _section_types(type(current))
    changes = {}
    for key, value in values.items():
        if key not in types_:
            raise ConfigError(
                f"{origin}: unknown config key '{name}.{key}' "
                f"(known in [{name}]: {', '.join(types_)})"
            )
        try:
            changes[key] = _coerce(value, types_[key], f"{name}.{key}")
        except ConfigError as error:
            raise ConfigError(f"{origin}: {error}") from error
    try:
        return dataclasses.replace(current, **changes)
    except ConfigError as error:
        raise ConfigError(f"{origin}: {error}") from error
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{origin}: [{name}] {error}") from error


def _toml_scalar(raw: str) -> Any:
    """A TOML value if ``raw`` parses as one (numbers, booleans, lists), else the bare string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_override(text: str) -> dict[str, dict[str, Any]]:
    """``section.key=value`` → ``{section: {key: value}}``; the value is read as TOML if it
    parses (numbers, true/false, ["lists"]), else kept as a bare string (``guide.name=gal``)."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    return {section: {name: _toml_scalar(raw.strip())}}


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a ConfigError."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as error:
        raise ConfigError(f"config file not found: {path}") from error
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; --config takes a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error


def _with_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    config = apply_values(RunConfig(), PRESETS[name].values, f"preset {name}")
    return dataclasses.replace(config, preset=name)


def resolve_config(
    preset: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    flags: Mapping[str, Mapping[str, Any]] | None = None,
) -> RunConfig:
    """Layer defaults < preset < config file < ``--set`` overrides < flags.

    A config file may name its own preset (``preset = "gal-medium"``); ``preset`` (the
    ``--preset`` flag) wins over it. Relative data paths are made absolute.
    """
    file_values = load_toml(config_file) if config_file is not None else {}
    name = preset or file_values.get("preset") or "default"
    if not isinstance(name, str):
        raise ConfigError(f"preset must be a string, got {name!r}")
    config = _with_preset(name)
    if file_values:
        rest = {k: v for k, v in file_values.items() if k != "preset"}
        config = apply_values(config, rest, str(config_file))
    for text in overrides:
        config = apply_values(config, parse_override(text), f"--set {text}")
    if flags:
        config = apply_values(config, flags, "command line")
    return _absolute_paths(dataclasses.replace(config, preset=name))


def _absolute_paths(config: RunConfig) -> RunConfig:
    data = config.data
    changes: dict[str, Any] = {}
    if data.dir is not None:
        changes["dir"] = str(Path(data.dir).expanduser().resolve())
    if data.is_path:
        changes["source"] = str(Path(data.source).expanduser().resolve())
    return dataclasses.replace(config, data=dataclasses.replace(data, **changes))


def config_from_dict(values: Mapping[str, Any], origin: str) -> RunConfig:
    """A resolved config read back (from a run directory): defaults plus every stored value."""
    return apply_values(RunConfig(), values, origin)


# --- writing ------------------------------------------------------------------------------------


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Nested plain dict (tuples as lists), the shape of the TOML file."""
    out: dict[str, Any] = {"task": config.task, "preset": config.preset}
    for name in SECTIONS:
        section = getattr(config, name)
        out[name] = {
            f.name: list(v) if isinstance(v := getattr(section, f.name), tuple) else v
            for f in dataclasses.fields(section)
        }
    return out


def comparable(config: RunConfig) -> dict[str, Any]:
    """The values that define what a run computes (runtime keys such as the device left out)."""
    out = config_to_dict(config)
    for key in RUNTIME_KEYS:
        section, _, name = key.partition(".")
        out[section].pop(name, None)
    return out


def _toml_value(value: Any) -> str:
    if value is None:
        return json.dumps(NONE)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def dumps_toml(config: RunConfig, header: str = "") -> str:
    """The resolved config as TOML that :func:`resolve_config` reads back to the same values."""
    data = config_to_dict(config)
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"task = {_toml_value(data['task'])}", f"preset = {_toml_value(data['preset'])}"]
    for name in SECTIONS:
        lines += ["", f"[{name}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in data[name].items()]
    return "\n".join(lines) + "\n"


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) whole or not at all, with the umask's permissions."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_config(config: RunConfig, path: str | os.PathLike[str], header: str = "") -> Path:
    """Write the resolved config atomically."""
    return write_text_atomic(path, dumps_toml(config, header))
