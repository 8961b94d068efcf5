"""The settings of an SVI run and the history it records (plain, JSON-ready lists)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

OPTIMIZERS = ("sgd", "adam")
MONITORS = ("valid_nll", "valid_perplexity", "valid_accuracy")

__all__ = ["MONITORS", "OPTIMIZERS", "History", "TrainerConfig"]


@dataclass(frozen=True)
class TrainerConfig:
    """Hyperparameters of a TBPTT run (defaults: Zaremba's medium schedule shape)."""

    batch_size: int = 20
    bptt: int = 35
    variable_bptt: bool = False
    epochs: int = 1
    optimizer: str = "sgd"
    lr: float = 1.0
    lr_decay: float = 1.0
    constant_epochs: int = 1
    clip_norm: float | None = 5.0
    weight_decay: float = 0.0
    num_particles: int = 1
    # The KL on every k-th step only, with weight k/C: the same epoch objective for 1/k of the
    # KL's cost (bayesrnn.inference.estimators.scaling.epoch_kl_scales); 1 takes it on every step.
    kl_every: int = 1
    # The KL's weight rises linearly to 1 over the first kl_warmup_epochs epochs (0: no warm-up)
    # and is then multiplied by kl_weight, a temperature (1: the ELBO; bayesrnn.inference.
    # kl_weight has the exact schedule).
    kl_warmup_epochs: int = 0
    kl_weight: float = 1.0
    eval_batch_size: int = 10
    checkpoint_every: int | None = None
    max_windows: int | None = None
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    divergence_factor: float | None = 10.0  # ceiling: factor × log V nats per token; None: off
    divergence_patience: int = 5  # windows in a row above the ceiling before training stops
    # Early stopping: epochs in a row without validation improvement before training stops
    # (None: off), the least change that counts, and the metric watched (None: valid_nll,
    # else valid_perplexity). The best epoch's parameters are restored when training ends.
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    monitor: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "bptt",
            "epochs",
            "constant_epochs",
            "num_particles",
            "kl_every",
            "eval_batch_size",
            "divergence_patience",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("checkpoint_every", "max_windows", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be None or a positive integer, got {value!r}")
        warmup = self.kl_warmup_epochs
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"kl_warmup_epochs must be an integer >= 0, got {warmup!r}")
        if warmup >= self.epochs and warmup > 0:
            raise ValueError(
                f"kl_warmup_epochs ({warmup}) must be below epochs ({self.epochs}): the epochs "
                "after the warm-up train the ELBO"
            )
        weight = self.kl_weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not (weight > 0 and math.isfinite(weight))
        ):
            raise ValueError(f"kl_weight must be a positive finite number, got {weight!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not self.lr_decay >= 1.0:
            raise ValueError(f"lr_decay is a divisor and must be >= 1, got {self.lr_decay!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be None or positive, got {self.clip_norm!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        factor = self.divergence_factor
        if factor is not None and (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not (factor > 0 and math.isfinite(factor))
        ):
            raise ValueError(f"divergence_factor must be None or a positive number, got {factor!r}")
        delta = self.early_stopping_min_delta
        if isinstance(delta, bool) or not isinstance(delta, int | float) or not delta >= 0:
            raise ValueError(f"early_stopping_min_delta must be a number >= 0, got {delta!r}")
        if self.monitor is not None and self.monitor not in MONITORS:
            raise ValueError(f"monitor must be None or one of {MONITORS}, got {self.monitor!r}")

    def learning_rate(self, epoch: int) -> float:
        """Constant for ``constant_epochs`` epochs, then divided by ``lr_decay`` each epoch."""
        return self.lr / self.lr_decay ** max(0, epoch - self.constant_epochs + 1)

    @classmethod
    def from_dict(cls, values: dict) -> TrainerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown trainer option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class History:
    """Per-window ELBO terms and per-epoch validation as plain lists, and how training ended
    (JSON-ready)."""

    elbo: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    valid_perplexity: list[float] = field(default_factory=list)
    valid_nll: list[float] = field(default_factory=list)  # per value or label
    valid_accuracy: list[float] = field(default_factory=list)  # classifiers
    epoch_lr: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_steps: list[int] = field(default_factory=list)  # windows or batches of each epoch
    tokens_per_second: list[float] = field(default_factory=list)
    sharpening_step_ratio: list[float] = field(default_factory=list)  # ‖η⊙g‖/‖σ‖ per window
    # The weight of each window's KL: warm-up times kl_weight (inference/training/kl_weight.py);
    # elbo and kl above stay the unweighted ELBO and KL share.
    kl_weight: list[float] = field(default_factory=list)
    # The epoch (from 1) with the best monitored validation, its value, and why training
    # stopped before its last epoch (None: it did not).
    best_epoch: int | None = None
    best_valid: float | None = None
    stopped_epoch: int | None = None
    stop_reason: str | None = None

    def to_dict(self) -> dict[str, list]:
        return asdict(self)
