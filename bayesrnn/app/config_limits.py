"""Upper (and lower) bounds on every numeric setting, checked before anything is written.

Types and positivity are checked where each section is defined (:mod:`bayesrnn.app.config`);
these bounds stop the values that type-check but cannot run: a hidden size of 2⁶², a million
MC samples, a learning rate of 1e39, an infinite initialisation range. Each bound is far above
what any configuration of the papers uses, so a real run never meets one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bayesrnn.app.config import RunConfig

__all__ = ["LIMITS", "limit_violation"]

# section.key: (lowest, highest) allowed, both inclusive; None values are left to the section
LIMITS: dict[str, tuple[float, float]] = {
    "model.embedding_size": (1, 1_048_576),
    "model.hidden_size": (1, 1_048_576),
    "model.num_layers": (1, 64),
    "model.init_range": (0.0, 10.0),
    "guide.quadrature_order": (1, 64),
    "guide.members": (1, 1_000),
    "guide.num_chains": (1, 256),
    "guide.num_samples": (1, 100_000),
    "guide.warmup_steps": (0, 100_000),
    "guide.max_tree_depth": (1, 20),
    "trainer.lr": (0.0, 1e9),  # tests drive runs to divergence with 1e6
    "trainer.epochs": (1, 100_000),
    "trainer.num_particles": (1, 1_024),
    "trainer.batch_size": (1, 1_048_576),
    "trainer.bptt": (1, 1_048_576),
    "trainer.weight_decay": (0.0, 1e3),
    "trainer.clip_norm": (0.0, 1e9),
    "evaluation.mc_samples": (1, 100_000),
    "evaluation.n_bins": (1, 10_000),
    "evaluation.export_samples": (1, 100_000),
    "evaluation.horizon": (1, 100_000),
    "evaluation.backtest_stride": (1, 1_000_000),
    "evaluation.backtest_samples": (1, 100_000),
    "data.season": (1, 100_000),
}


def limit_violation(config: RunConfig) -> str | None:
    """What is wrong with the first numeric setting outside its bounds, naming the range (the
    config raises it as a ConfigError); None when every setting is within its bounds."""
    for key, (low, high) in LIMITS.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue  # absent, or not a number: the section's own check speaks
        if not (math.isfinite(value) and low <= value <= high):
            return f"{key} must lie in [{low:g}, {high:g}], got {value!r}"
    if config.evaluation.pruning and not config.evaluation.pruning_fractions:
        return (
            "evaluation.pruning_fractions is empty: give at least one fraction in [0, 1], or "
            "set evaluation.pruning=false"
        )
    return None
