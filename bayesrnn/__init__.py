"""bayesrnn: Bayesian recurrent neural networks in Pyro."""

__version__ = "0.1.0"
