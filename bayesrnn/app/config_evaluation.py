"""The ``evaluation`` section of a run's configuration: what is computed after training."""

import math
from dataclasses import dataclass

from bayesrnn.app.config_checks import ConfigError, check_choice, check_optional_positive
from bayesrnn.evaluation.sentence_ood import OOV_POLICIES
from bayesrnn.inference.prediction.mc_draws import DECODER_CHOICES

__all__ = ["CLASSICAL_BASELINES", "EvaluationConfig"]

CLASSICAL_BASELINES = ("persistence", "seasonal_naive", "climatology", "ets", "arima")


@dataclass(frozen=True)
class EvaluationConfig:
    """What ``evaluate`` computes on ``split`` after training, and what ``export`` writes.

    ``mc_samples``: draws averaged (in probability) for the MC predictive; ``n_bins`` and
    ``bin_strategy``: calibration bins; ``reversed_text``: Fortunato's entropy gap and the OOD
    AUROC; ``sharpened_bound``: the upper bound of a sharpened guide, a Monte Carlo estimate
    over ``mc_samples`` (at least 2) paths with its standard error; ``pruning`` and
    ``pruning_fractions``: the SNR curve on valid (Gaussian guides); ``export`` and
    ``export_samples``: posterior.nc; ``max_tokens``: evaluate only the first N tokens;
    ``dynamic_lr``: also evaluate dynamically with this lr (none: not at all).
    ``mc_decoder`` and ``mc_recurrent_draws``: the language model's MC estimator
    (:func:`bayesrnn.inference.evaluate_stream`'s ``decoder`` and ``recurrent_draws``):
    ``"local"`` draws the logits given h (mean-field, untied decoder), and K recurrent draws
    share the network runs among the S decoder draws (cheaper, more Monte Carlo variance).
    ``ood_oov``: a language model's out-of-distribution sentence scores leave out the
    predictions that read or predict ``<unk>`` ("exclude") or score them ("include").
    A forecaster's multi-step backtest over the split: ``horizon`` steps (none: the season,
    or 10 without one, at most the split's rows) from an origin every ``backtest_stride`` rows
    (none: at most 50 origins), ``backtest_samples`` paths per origin for the model and each of
    the classical ``baselines`` (``auto``: all, ARIMA only without a season; none: ``[]``).
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
    # arviz_stats' PSIS fits a Pareto tail of S/5 draws (S <= 225) and refuses fewer than 5, so
    # loo/compare need S >= 25; 100 gives a tail of 20 and a k̂ threshold of 1 − 1/log10(S) = 0.5.
    # `bayesrnn export --samples 100` of the default run (5,245 test tokens): 38 s against 9 s
    # for 10 (one thread on 2 busy cores), beside ~220 s of training; Gal's 1x128 run: 48 s.
    export_samples: int = 100
    max_tokens: int | None = None
    dynamic_lr: float | None = None
    mc_decoder: str = "weights"
    mc_recurrent_draws: int | None = None
    ood_oov: str = "exclude"
    horizon: int | None = None
    backtest_stride: int | None = None
    backtest_samples: int = 200
    # auto: all of CLASSICAL_BASELINES, but ARIMA only without a season (seasonal fits are slow)
    baselines: tuple[str, ...] = ("auto",)

    def __post_init__(self) -> None:
        check_choice("evaluation.split", self.split, ("valid", "test"))
        for name in ("horizon", "backtest_stride", "backtest_samples"):
            check_optional_positive(f"evaluation.{name}", getattr(self, name))
        if "auto" in self.baselines and len(self.baselines) > 1:
            raise ConfigError("evaluation.baselines=auto stands alone; or list the baselines")
        for name in self.baselines:
            check_choice("evaluation.baselines", name, ("auto", *CLASSICAL_BASELINES))
        if len(set(self.baselines)) != len(self.baselines):
            raise ConfigError(f"evaluation.baselines names one twice: {list(self.baselines)}")
        check_choice("evaluation.ood_oov", self.ood_oov, OOV_POLICIES)
        check_choice("evaluation.mc_decoder", self.mc_decoder, DECODER_CHOICES)
        check_optional_positive("evaluation.mc_recurrent_draws", self.mc_recurrent_draws)
        if self.mc_recurrent_draws is not None:
            if self.mc_decoder != "local":
                raise ConfigError("evaluation.mc_recurrent_draws needs evaluation.mc_decoder=local")
            if self.mc_recurrent_draws > self.mc_samples:
                raise ConfigError(
                    f"evaluation.mc_recurrent_draws ({self.mc_recurrent_draws}) must not exceed "
                    f"evaluation.mc_samples ({self.mc_samples})"
                )
        lr = self.dynamic_lr
        if lr is not None and (
            isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 <= lr < math.inf
        ):
            raise ConfigError(f"evaluation.dynamic_lr must be none or a number >= 0, got {lr!r}")
        check_choice("evaluation.bin_strategy", self.bin_strategy, ("width", "mass"))
        for name in ("mc_samples", "n_bins", "export_samples"):
            check_optional_positive(f"evaluation.{name}", getattr(self, name))
        check_optional_positive("evaluation.max_tokens", self.max_tokens)
        if any(not 0.0 <= f <= 1.0 for f in self.pruning_fractions):
            raise ConfigError("evaluation.pruning_fractions must lie in [0, 1]")
