"""PSIS-LOO of an export, also where arviz_stats' own call refuses a token.

``arviz_stats.loo`` raises "All tail values are the same" on an observation whose largest
importance ratios tie, which happens on real exports: under Gal's dropout on the recurrent units
only, the first token of every sequence (h₀ = 0) scores the same under every mask.
:func:`psis_loo` is the supported call on every export of the package.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["psis_loo"]


def _tail_length(draws: int) -> int:
    """arviz_stats' right-tail length for PSIS-LOO of one chain (r_eff = 1)."""
    return int(math.floor(3 * math.sqrt(draws)) if draws > 225 else draws // 5)


def psis_loo(tree: xr.DataTree) -> Any:
    """``arviz_stats.loo(tree, pointwise=True)``, also where a token's largest importance ratios
    tie.

    arviz_stats refuses an observation whose Pareto tail holds one value: under Gal's dropout
    a token can score the same under every mask (the first token of a sequence when only h is
    dropped, h₀ being 0), or under a few mask patterns only. Its ratios are then bounded, so
    plain importance sampling is exact enough: those tokens get the raw normalised ratios and
    k̂ = 0, the others arviz_stats' PSIS weights and k̂ (one chain: r_eff = 1).
    """
    import arviz_stats  # imported here: ``bayesrnn.evaluation`` loads without ArviZ's stack
    import xarray as xr
    from scipy.special import logsumexp

    try:
        return arviz_stats.loo(tree, pointwise=True)
    except ValueError as error:
        if "tail values are the same" not in str(error):
            raise
    ll = tree["log_likelihood"]["obs"]
    sample = [d for d in ll.dims if d in ("chain", "draw")]
    obs_dims = [d for d in ll.dims if d not in sample]
    flat = ll.stack(__obs__=obs_dims).transpose(*sample, "__obs__")
    neg = -np.asarray(flat.values, dtype=np.float64).reshape(-1, flat.sizes["__obs__"])
    shifted = np.sort(neg - neg.max(axis=0), axis=0)[-_tail_length(neg.shape[0]) :]
    tied = np.abs(shifted.max(axis=0) - shifted.min(axis=0)) < np.finfo(float).tiny
    log_weights = neg - logsumexp(neg, axis=0)
    khat = np.zeros(neg.shape[1])
    if not tied.all():
        rest = flat.isel(__obs__=np.flatnonzero(~tied))
        lw, k = rest.azstats.psislw(r_eff=1.0, dim=sample)
        log_weights[:, ~tied] = lw.transpose(*sample, "__obs__").values.reshape(neg.shape[0], -1)
        khat[~tied] = k.values
    weights = xr.DataArray(log_weights.reshape(flat.shape), dims=flat.dims, coords=flat.coords)
    pareto_k = xr.DataArray(khat, dims=["__obs__"], coords=flat["__obs__"].coords)
    return arviz_stats.loo(
        tree,
        pointwise=True,
        log_weights=weights.unstack("__obs__").transpose(*ll.dims),
        pareto_k=pareto_k.unstack("__obs__").transpose(*obs_dims),
    )
