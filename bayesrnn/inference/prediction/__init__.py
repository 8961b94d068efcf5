"""Prediction: Monte Carlo averages over the posterior once it is trained.

The predictive over a stream or a batch of sequences, the draws it averages (weights, masks,
members), dynamic evaluation, and the sharpened posterior's bound. Public names are
re-exported by :mod:`bayesrnn.inference`.
"""
