"""Estimators: the terms of the ELBO and the closed forms and kernels that compute them.

One window's ELBO terms, the KL split over minibatches and truncations, the KL of the
Bernoulli-mixture and scale-mixture posteriors, learned prior scales, the distributions the
guides draw from, fused weight draws and their compiled kernels. Public names are re-exported
by :mod:`bayesrnn.inference`.
"""
