"""The range of every numeric setting, checked before anything is written.

Types are checked where each section is defined (:mod:`bayesrnn.app.config`); these ranges
stop the values that type-check but cannot run: a hidden size of 2⁶², a million MC samples, a
learning rate of 1e39, an infinite initialisation range, a dropout rate of 1.5, a NaN prior
scale. Every numeric key of every section has an entry (a test enumerates the sections to keep
it so); the upper bounds are far above what any configuration of the papers uses, so a real
run never meets one. :func:`describe_limits` writes the table (``bayesrnn limits`` prints it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from bayesrnn.data.lags import MAX_LAG

if TYPE_CHECKING:
    from bayesrnn.app.config import RunConfig

__all__ = ["LIMITS", "MAX_PRUNING_FRACTIONS", "Bound", "describe_limits", "limit_violation"]


class Bound(NamedTuple):
    """An interval, closed unless ``low_open``/``high_open``; written as the message shows it."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        def number(value: float) -> str:
            return str(value) if isinstance(value, int) else f"{value:g}"

        return (
            f"{'(' if self.low_open else '['}{number(self.low)}, "
            f"{number(self.high)}{')' if self.high_open else ']'}"
        )


_SEED = Bound(0, 2**32 - 1)  # what torch and numpy accept as a seed
_RATE = Bound(0.0, 1.0, high_open=True)  # a dropout-type rate: 1 would drop everything
_POSITIVE_SCALE = Bound(0.0, 1e6, low_open=True)
_SIZE = Bound(1, 1_048_576)
_COUNT = Bound(1, 1_000_000_000)

# section.key: the allowed range; None values (where a key allows none) are not checked.
LIMITS: dict[str, Bound] = {
    "data.max_vocab": Bound(1, 100_000_000),
    "data.split_seed": _SEED,
    "data.max_examples": _COUNT,
    "data.lags": Bound(2, MAX_LAG),  # each lag (lag 1, the last value, is always read)
    "model.embedding_size": _SIZE,
    "model.hidden_size": _SIZE,
    "model.num_layers": Bound(1, 64),
    "model.init_range": Bound(0.0, 10.0),
    "model.prior_scale": _POSITIVE_SCALE,  # when a number (learned, hierarchical are words)
    "model.prior_hyper_shape": _POSITIVE_SCALE,
    "model.prior_hyper_rate": _POSITIVE_SCALE,
    "model.prior_pi": Bound(0.0, 1.0, low_open=True, high_open=True),
    "model.prior_sigma1": _POSITIVE_SCALE,
    "model.prior_sigma2": _POSITIVE_SCALE,
    "model.naive_dropout": _RATE,
    "model.locked_input": _RATE,
    "model.locked_hidden": _RATE,
    "model.locked_output": _RATE,
    "model.embedding_dropout": _RATE,
    "model.zoneout_c": _RATE,
    "model.zoneout_h": _RATE,
    "model.weight_drop": _RATE,
    "guide.init_scale": _POSITIVE_SCALE,  # when a number (auto, fortunato are words)
    "guide.quadrature_order": Bound(1, 64),
    "guide.sigma0": _POSITIVE_SCALE,
    "guide.eta_init": _POSITIVE_SCALE,
    "guide.eta_max": _POSITIVE_SCALE,
    "guide.dropout_embedding": _RATE,
    "guide.dropout_input": _RATE,
    "guide.dropout_hidden": _RATE,
    "guide.dropout_output": _RATE,
    "guide.members": Bound(1, 1_000),
    "guide.num_chains": Bound(1, 256),
    "guide.num_samples": Bound(1, 100_000),
    "guide.warmup_steps": Bound(0, 100_000),
    "guide.max_tree_depth": Bound(1, 20),
    "guide.target_accept": Bound(0.0, 1.0, low_open=True, high_open=True),
    "trainer.batch_size": _SIZE,
    "trainer.bptt": _SIZE,
    "trainer.epochs": Bound(1, 100_000),
    "trainer.lr": Bound(0.0, 1e9, low_open=True),  # tests drive runs to divergence with 1e6
    "trainer.lr_decay": Bound(1.0, 1e3),
    "trainer.constant_epochs": Bound(1, 100_000),
    "trainer.clip_norm": Bound(0.0, 1e9, low_open=True),
    "trainer.weight_decay": Bound(0.0, 1e3),
    "trainer.num_particles": Bound(1, 1_024),
    "trainer.kl_every": Bound(1, 1_000_000),
    "trainer.kl_warmup_epochs": Bound(0, 100_000),
    "trainer.kl_weight": _POSITIVE_SCALE,
    "trainer.eval_batch_size": _SIZE,
    "trainer.checkpoint_every": _COUNT,
    "trainer.max_windows": Bound(1, 10**12),
    "trainer.seed": _SEED,
    "trainer.divergence_factor": _POSITIVE_SCALE,
    "trainer.divergence_patience": _COUNT,
    "trainer.early_stopping_patience": Bound(1, 100_000),
    "trainer.early_stopping_min_delta": Bound(0.0, 1e9),
    "evaluation.mc_samples": Bound(1, 100_000),
    "evaluation.n_bins": Bound(1, 10_000),
    "evaluation.pruning_fractions": Bound(0.0, 1.0),  # each fraction
    "evaluation.export_samples": Bound(1, 100_000),
    "evaluation.max_tokens": Bound(1, 10**12),
    "evaluation.dynamic_lr": Bound(0.0, 1e9),
    "evaluation.mc_recurrent_draws": Bound(1, 100_000),
    "evaluation.horizon": Bound(1, 100_000),
    "evaluation.backtest_stride": Bound(1, 1_000_000),
    "evaluation.backtest_samples": Bound(1, 100_000),
    "data.season": Bound(1, 100_000),
}
MAX_PRUNING_FRACTIONS = 1_000  # points of the pruning curve (each one evaluation of valid)


def _violation(key: str, bound: Bound, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return None  # absent, or a word (auto, learned): the section's own check speaks
    if isinstance(value, tuple):
        if len(value) > MAX_PRUNING_FRACTIONS:
            return f"{key} holds {len(value)} values; at most {MAX_PRUNING_FRACTIONS} are allowed"
        bad = [v for v in value if v not in bound]
        return None if not bad else f"each of {key} must lie in {bound}, got {bad[0]!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None  # not a number: the section's type check speaks
    if value in bound:
        return None
    return f"{key} must lie in {bound}, got {value!r}"


def limit_violation(config: RunConfig) -> str | None:
    """What is wrong with the first numeric setting outside its range, naming the range (the
    config raises it as a ConfigError); None when every setting is within its range."""
    for key, bound in LIMITS.items():
        section, name = key.split(".")
        problem = _violation(key, bound, getattr(getattr(config, section), name))
        if problem is not None:
            return problem
    if config.evaluation.pruning and not config.evaluation.pruning_fractions:
        return (
            "evaluation.pruning_fractions is empty: give at least one fraction in [0, 1], or "
            "set evaluation.pruning=false"
        )
    return None


def describe_limits() -> str:
    """The table of ranges, one ``key: range`` line each (for the README and users)."""
    return "\n".join(f"{key}: {bound}" for key, bound in LIMITS.items())
