"""Inference: guides, the ELBO's terms, training, prediction, and NUTS.

The room is split by job: ``runtime`` (stream windows, the process group), ``estimators``
(ELBO terms, KLs, weight draws), ``guides`` (the posteriors of the papers), ``prediction``
(Monte Carlo averages with a trained posterior), ``training`` (the SVI trainers) and ``mcmc``
(NUTS). Every public name is importable from here.
"""

from bayesrnn.inference.estimators import learned_prior_kl  # noqa: F401  (registers the fitted-scale KLs)
from bayesrnn.inference.estimators.elbo import ELBOTerms, WindowELBO, window_terms
from bayesrnn.inference.estimators.scaling import LatentScaleMessenger, epoch_kl_scales, scale_kl
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
from bayesrnn.inference.prediction.dynamic import DynamicEvaluation, dynamic_evaluate
from bayesrnn.inference.prediction.predictive import (
    StreamEvaluation,
    evaluate_stream,
    observed_nll,
    posterior_mean,
    safe_exp,
    sample_weights,
    stacked_draws,
)
from bayesrnn.inference.prediction.sequence_prediction import SequencePrediction, predict_sequences
from bayesrnn.inference.prediction.sharpened_bound import SharpenedBound, sharpened_bound
from bayesrnn.inference.runtime.tbptt import Window, model_window, plan_windows, window_batch
from bayesrnn.inference.training.batching import SequenceBatches, StreamWindows
from bayesrnn.inference.training.checkpoint import load_checkpoint, save_checkpoint
from bayesrnn.inference.training.divergence import DivergenceError, DivergenceGuard
from bayesrnn.inference.training.early_stopping import EarlyStopping
from bayesrnn.inference.training.tbptt_trainer import TBPTTTrainer
from bayesrnn.inference.training.trainer import (
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
