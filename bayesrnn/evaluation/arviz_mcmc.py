"""ArviZ export of MCMC runs: chains kept, the sampler's statistics, prior draws, and the
convergence of *predictions*.

The task exporters (:func:`~bayesrnn.evaluation.arviz_export.export_language_model`,
``export_classifier``, :func:`~bayesrnn.evaluation.arviz_forecast.export_forecaster`) write
one chain of S guide draws. :func:`mcmc_datatree` runs the same exporter over every stored
draw of a :class:`~bayesrnn.inference.guides.SampledPosterior` in chain order and splits the
draws back into (chain, draw), replaces ``sample_stats`` by the sampler's (``diverging``,
``energy``, ``tree_depth``, ``step_size``, ``acceptance_rate``, ``lp``), and adds ``prior`` and
``prior_predictive`` from draws of the prior, so that ``arviz_stats.rhat``/``ess``/``mcse``/
``bfmi`` and ``arviz_plots.plot_trace``/``plot_rank``/``plot_energy``/``plot_prior_posterior``
read it.

Weights are not identifiable (permuting hidden units, or flipping the signs around a tanh,
gives the same function), so r-hat of a weight can be large while every chain describes the
same predictive distribution. :func:`predictive_convergence` measures r-hat and ESS of
functions of the data instead: each observation's log-likelihood and predictive mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pyro
import torch
import xarray as xr

from bayesrnn.inference.guides.sampled import SampledPosterior
from bayesrnn.models.bayesian import site_prior, weight_sites

__all__ = [
    "RHAT_LIMIT",
    "RHAT_THRESHOLDS",
    "PriorDraws",
    "mcmc_datatree",
    "predictive_convergence",
    "rhat_shares",
    "split_chains",
]

RHAT_LIMIT = 1.01  # Vehtari et al. (2021): trust the draws only below this rank-normalised r-hat
RHAT_THRESHOLDS = (RHAT_LIMIT, 1.05, 1.1)  # Vehtari et al.'s limit, a middle one, the older 1.1

Exporter = Callable[[object, int], xr.DataTree]


class PriorDraws:
    """A guide that draws every weight site of ``model`` from its prior (the ``prior`` group)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.sites = weight_sites(model)

    def __call__(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        out = {}
        for site, value in self.sites.items():
            fn = site_prior(self.model, site).distribution(value.shape, value.device, value.dtype)
            out[site] = pyro.sample(site, fn)
        return out


def split_chains(dataset: xr.Dataset, chains: int) -> xr.Dataset:
    """A dataset of one chain of ``chains × D`` draws (chain-major) as ``chains`` chains of D."""
    total = dataset.sizes["draw"]
    if dataset.sizes.get("chain") != 1 or total % chains:
        raise ValueError(f"cannot split {dict(dataset.sizes)} into {chains} chains")
    draws = total // chains
    variables = {}
    for name, var in dataset.data_vars.items():
        values = var.values.reshape(chains, draws, *var.shape[2:])
        variables[name] = (var.dims, values, var.attrs)
    coords = {
        name: coord
        for name, coord in dataset.coords.items()
        if "chain" not in coord.dims and "draw" not in coord.dims
    }
    out = xr.Dataset(variables, coords=coords, attrs=dataset.attrs)
    return out.assign_coords(chain=np.arange(chains), draw=np.arange(draws))


def _stats_dataset(guide: SampledPosterior) -> xr.Dataset:
    variables = {}
    for name, values in guide.sample_stats.items():
        array = values.detach().cpu().numpy()
        if name == "diverging":
            array = array.astype(bool)
        elif name == "tree_depth":
            array = array.astype(np.int64)
        variables[name] = (("chain", "draw"), array)
    chains, draws = guide.num_chains, guide.num_samples
    return xr.Dataset(variables).assign_coords(chain=np.arange(chains), draw=np.arange(draws))


def mcmc_datatree(
    export: Exporter,
    guide: SampledPosterior,
    *,
    prior: object | None = None,
    prior_samples: int | None = None,
    attrs: Mapping[str, object] | None = None,
) -> xr.DataTree:
    """``export(guide, num_samples)`` over every stored draw, as (chain, draw), with the NUTS
    ``sample_stats`` and, when ``prior`` (a guide drawing from the prior) is given,
    ``prior``/``prior_predictive`` groups of ``prior_samples`` draws (default: as many as one
    chain). ``attrs`` are added to the root."""
    with guide.replay():
        tree = export(guide, guide.total)
    groups: dict[str, xr.Dataset] = {"/": tree.to_dataset()}
    for name, node in tree.children.items():
        dataset = node.to_dataset()
        if name == "sample_stats":
            continue
        if "draw" in dataset.dims:
            dataset = split_chains(dataset, guide.num_chains)
        groups[name] = dataset
    groups["sample_stats"] = _stats_dataset(guide)
    if prior is not None:
        prior_tree = export(prior, prior_samples or guide.num_samples)
        groups["prior"] = prior_tree["posterior"].to_dataset()
        groups["prior_predictive"] = prior_tree["posterior_predictive"].to_dataset()
    groups["/"] = groups["/"].assign_attrs(
        {
            **(attrs or {}),
            "inference": "NUTS (Pyro): chains of stored draws",
            "guide": type(guide).__name__,
        }
    )
    return xr.DataTree.from_dict(groups)


def _rhats_esses(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalised split r-hat and bulk ESS of each observation of (chain, draw, …)
    values; quantities constant across all draws are left out (r-hat undefined)."""
    from arviz_stats.base import array_stats

    flat = values.reshape(values.shape[0], values.shape[1], -1).astype(np.float64)
    varying = flat.std(axis=(0, 1)) > 0
    if not varying.any():
        return np.array([]), np.array([])
    flat = np.moveaxis(flat[..., varying], -1, 0)  # (quantity, chain, draw)
    rhat = array_stats.rhat(flat, chain_axis=-2, draw_axis=-1)
    ess = array_stats.ess(flat, chain_axis=-2, draw_axis=-1)
    return np.asarray(rhat, dtype=np.float64), np.asarray(ess, dtype=np.float64)


def rhat_shares(rhats: np.ndarray) -> dict[str, float | None]:
    """The share of observations whose r-hat is at or below each of :data:`RHAT_THRESHOLDS`.

    The largest r-hat over thousands of predictions is the strictest summary; the shares say
    whether a few observations or all of them disagree between chains (Izmailov et al. 2021
    read their HMC chains' function-space r-hat as a distribution against 1.1)."""
    finite = rhats[np.isfinite(rhats)]
    if finite.size == 0:
        return {f"{t:g}": None for t in RHAT_THRESHOLDS}
    return {f"{t:g}": float(np.mean(finite <= t)) for t in RHAT_THRESHOLDS}


def predictive_convergence(
    quantities: Mapping[str, np.ndarray], divergences: int, draws: int
) -> dict:
    """``mcmc`` metrics from per-draw predictive quantities, each (chain, draw, …): the largest
    r-hat and smallest bulk ESS over every quantity and observation, the median r-hat and the
    share of observations at or below 1.01, 1.05 and 1.1, the divergences, and a warning when
    r-hat > :data:`RHAT_LIMIT` or any transition diverged."""
    per = {name: _rhats_esses(np.asarray(values)) for name, values in quantities.items()}
    each = {
        name: {
            "rhat_max": _extreme(np.max, r),
            "ess_min": _extreme(np.min, e),
            "rhat_share": rhat_shares(r),
        }
        for name, (r, e) in per.items()
    }
    rhats = [q["rhat_max"] for q in each.values() if np.isfinite(q["rhat_max"])]
    esses = [q["ess_min"] for q in each.values() if np.isfinite(q["ess_min"])]
    every = np.concatenate([r for r, _ in per.values()]) if per else np.array([])
    finite_rhats = every[np.isfinite(every)]
    out = {
        "rhat_max_predictive": max(rhats) if rhats else None,
        "ess_min_predictive": min(esses) if esses else None,
        "rhat_median_predictive": float(np.median(finite_rhats)) if finite_rhats.size else None,
        "rhat_share_predictive": rhat_shares(every),
        "divergences": int(divergences),
        "draws": int(draws),
        "predictive_quantities": each,
    }
    problems = []
    if out["rhat_max_predictive"] is not None and out["rhat_max_predictive"] > RHAT_LIMIT:
        above = 1.0 - out["rhat_share_predictive"][f"{RHAT_LIMIT:g}"]
        problems.append(
            f"predictive r-hat {out['rhat_max_predictive']:.3f} > {RHAT_LIMIT} (chains disagree "
            f"on {above:.0%} of the predictions)"
        )
    if divergences:
        problems.append(f"{divergences} divergent transition(s)")
    out["warning"] = (
        "NUTS draws not trustworthy: " + "; ".join(problems) + " — run longer chains "
        "(guide.num_samples, guide.warmup_steps) or raise guide.target_accept"
        if problems
        else None
    )
    return out


def _extreme(reduce: Callable, values: np.ndarray) -> float:
    """``reduce`` (max or min) of the finite values, NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(reduce(finite)) if finite.size else float("nan")
