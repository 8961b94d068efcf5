"""What users decide with: calibration, uncertainty, OOD scores, pruning, ArviZ export, plots."""

from bayesrnn.evaluation.arviz_export import export_classifier, export_language_model, to_datatree
from bayesrnn.evaluation.calibration import (
    PositionCalibration,
    ReliabilityBins,
    brier_score,
    calibration_by_position,
    expected_calibration_error,
    flatten_tokens,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    token_positions,
)
from bayesrnn.evaluation.ood import (
    aupr,
    auroc,
    entropy_gap,
    fpr_at_tpr,
    max_probability_score,
    ood_report,
)
from bayesrnn.evaluation.plots import (
    plot_elbo_trace,
    plot_entropy_histograms,
    plot_pruning_curve,
    plot_reliability_diagram,
)
from bayesrnn.evaluation.pruning import PruningCurve, prune_by_snr, pruning_curve
from bayesrnn.evaluation.stream_report import (
    LanguageModelReport,
    StreamReport,
    language_model_report,
    stream_report,
)
from bayesrnn.evaluation.uncertainty import (
    UncertaintyDecomposition,
    expected_entropy,
    mixture_log_probs,
    mutual_information,
    predictive_entropy,
    uncertainty_decomposition,
)

__all__ = [
    "LanguageModelReport",
    "PositionCalibration",
    "PruningCurve",
    "ReliabilityBins",
    "StreamReport",
    "UncertaintyDecomposition",
    "aupr",
    "auroc",
    "brier_score",
    "calibration_by_position",
    "entropy_gap",
    "expected_calibration_error",
    "expected_entropy",
    "export_classifier",
    "export_language_model",
    "flatten_tokens",
    "fpr_at_tpr",
    "language_model_report",
    "max_probability_score",
    "maximum_calibration_error",
    "mixture_log_probs",
    "mutual_information",
    "negative_log_likelihood",
    "ood_report",
    "plot_elbo_trace",
    "plot_entropy_histograms",
    "plot_pruning_curve",
    "plot_reliability_diagram",
    "predictive_entropy",
    "prune_by_snr",
    "pruning_curve",
    "reliability_bins",
    "stream_report",
    "to_datatree",
    "token_positions",
    "uncertainty_decomposition",
]
