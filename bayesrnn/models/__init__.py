"""Bayesian RNN layers, priors, regularisers and the models built on them."""

from bayesrnn.models.bayesian import bayesianize, site_prior, weight_sites
from bayesrnn.models.classifier import SequenceClassifier
from bayesrnn.models.language_model import LanguageModel
from bayesrnn.models.priors import GaussianPrior, ScaleMixtureNormal, ScaleMixturePrior
from bayesrnn.models.regularisers import Regularisers, mc_dropout
from bayesrnn.models.rnn import BayesianGRU, BayesianLSTM, BayesianRNN, BayesianRNNBase

__all__ = [
    "BayesianGRU",
    "BayesianLSTM",
    "BayesianRNN",
    "BayesianRNNBase",
    "GaussianPrior",
    "LanguageModel",
    "Regularisers",
    "ScaleMixtureNormal",
    "ScaleMixturePrior",
    "SequenceClassifier",
    "bayesianize",
    "mc_dropout",
    "site_prior",
    "weight_sites",
]
