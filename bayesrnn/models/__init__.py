"""Bayesian RNN layers, priors, regularisers and the models built on them."""

from bayesrnn.models.bayesian import (
    bayesianize,
    learned_prior_scales,
    prior_scale_sites,
    site_prior,
    weight_sites,
)
from bayesrnn.models.classifier import SequenceClassifier
from bayesrnn.models.grouped_mixture import GroupedScaleMixture
from bayesrnn.models.language_model import LanguageModel
from bayesrnn.models.learned_priors import HierarchicalGaussianPrior, LearnedGaussianPrior
from bayesrnn.models.priors import (
    GaussianPrior,
    ScaleMixtureNormal,
    ScaleMixturePrior,
    brnn_ptb_prior,
)
from bayesrnn.models.regressor import Forecast, SequenceRegressor
from bayesrnn.models.regularisers import Regularisers, mc_dropout
from bayesrnn.models.rnn import BayesianGRU, BayesianLSTM, BayesianRNN, BayesianRNNBase

__all__ = [
    "BayesianGRU",
    "BayesianLSTM",
    "BayesianRNN",
    "BayesianRNNBase",
    "Forecast",
    "GaussianPrior",
    "GroupedScaleMixture",
    "HierarchicalGaussianPrior",
    "LanguageModel",
    "LearnedGaussianPrior",
    "Regularisers",
    "ScaleMixtureNormal",
    "ScaleMixturePrior",
    "SequenceClassifier",
    "SequenceRegressor",
    "bayesianize",
    "brnn_ptb_prior",
    "learned_prior_scales",
    "mc_dropout",
    "prior_scale_sites",
    "site_prior",
    "weight_sites",
]
