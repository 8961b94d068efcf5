"""Guides, ELBO, KL scaling, the SVI trainer and its batching strategies, prediction, and NUTS."""

from bayesrnn.inference import learned_prior_kl  # noqa: F401  (registers the fitted-scale KLs)
from bayesrnn.inference.batching import SequenceBatches, StreamWindows
from bayesrnn.inference.checkpoint import load_checkpoint, save_checkpoint
from bayesrnn.inference.divergence import DivergenceError, DivergenceGuard
from bayesrnn.inference.dynamic import DynamicEvaluation, dynamic_evaluate
from bayesrnn.inference.early_stopping import EarlyStopping
from bayesrnn.inference.elbo import ELBOTerms, WindowELBO, window_terms
from bayesrnn.inference.guides import (
    GUIDES,
    DeterministicGuide,
    EnsembleGuide,
    GalDropoutGuide,
    MeanFieldGuide,
    SampledPosterior,
    SharpenedGuide,
    make_guide,
)
from bayesrnn.inference.mcmc import NUTSResult, run_nuts
from bayesrnn.inference.predictive import (
    StreamEvaluation,
    evaluate_stream,
    observed_nll,
    posterior_mean,
    safe_exp,
    sample_weights,
    stacked_draws,
)
from bayesrnn.inference.scaling import LatentScaleMessenger, epoch_kl_scales, scale_kl
from bayesrnn.inference.sequence_prediction import SequencePrediction, predict_sequences
from bayesrnn.inference.sharpened_bound import SharpenedBound, sharpened_bound
from bayesrnn.inference.tbptt import Window, model_window, plan_windows, window_batch
from bayesrnn.inference.tbptt_trainer import TBPTTTrainer
from bayesrnn.inference.trainer import (
    History,
    NonFiniteLossError,
    SVITrainer,
    TrainerConfig,
)

__all__ = [
    "GUIDES",
    "DeterministicGuide",
    "DivergenceError",
    "DivergenceGuard",
    "DynamicEvaluation",
    "ELBOTerms",
    "EarlyStopping",
    "EnsembleGuide",
    "GalDropoutGuide",
    "History",
    "LatentScaleMessenger",
    "MeanFieldGuide",
    "NUTSResult",
    "NonFiniteLossError",
    "SVITrainer",
    "SampledPosterior",
    "SequenceBatches",
    "SequencePrediction",
    "SharpenedBound",
    "SharpenedGuide",
    "StreamEvaluation",
    "StreamWindows",
    "TBPTTTrainer",
    "TrainerConfig",
    "Window",
    "WindowELBO",
    "dynamic_evaluate",
    "epoch_kl_scales",
    "evaluate_stream",
    "load_checkpoint",
    "make_guide",
    "model_window",
    "observed_nll",
    "plan_windows",
    "posterior_mean",
    "predict_sequences",
    "run_nuts",
    "safe_exp",
    "sample_weights",
    "save_checkpoint",
    "scale_kl",
    "sharpened_bound",
    "stacked_draws",
    "window_batch",
    "window_terms",
]
