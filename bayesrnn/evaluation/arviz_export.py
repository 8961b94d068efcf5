"""Export variational posteriors to an ArviZ 1.x ``xarray.DataTree``.

Guide draws are exported as one chain of S draws, dims ``(chain=1, draw=S)``, because
``arviz_stats``' LOO family hard-codes those sample dims. Groups:

- ``posterior``: the chosen weight sites (never all weights by default: a PTB model has 20M);
- ``log_likelihood["obs"]``: log p(y_i | θ_s) per observation, dims (chain, draw, token) for a
  language model, (chain, draw, sequence) for a classifier;
- ``posterior_predictive["obs"]``: one sampled token (label) per observation from draw s's
  predictive, integer;
- ``observed_data["obs"]``: the targets, no sample dims;
- ``sample_stats``: per draw ``log_q`` = log q(θ_s), ``log_prior`` = log p(θ_s),
  ``log_p`` = log p(θ_s) + Σ_i log p(y_i | θ_s) and ``kl`` = log_q − log_prior (its mean over
  draws estimates KL[q‖p]). ``log_p`` is the unnormalised log posterior, the target density
  that ``arviz_stats.loo_approximate_posterior(dt, dt.sample_stats.log_p,
  dt.sample_stats.log_q)`` reweights q towards (it uses log_p − log_q per draw);
- ``optimization``: the training trace (ELBO, NLL, KL per window; validation per epoch). It has
  no sample dims, so it lives in its own group rather than in ``sample_stats``, where every
  variable must carry (chain, draw) for ``arviz_stats`` to read the group.

PSIS-LOO for an approximate posterior (Magnusson et al. 2019) assumes the exported observations
are the data the posterior was fitted to: export (a slice of) the training stream for LOO. A
held-out stream still gives a per-token predictive log-likelihood for comparing guides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import torch
import xarray as xr
from arviz_base import from_dict
from pyro import poutine
from pyro.distributions import Independent as PyroIndependent
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import Independent

from bayesrnn.data.streams import batchify, check_token_ids
from bayesrnn.inference.guides.gal import GalDropoutGuide
from bayesrnn.inference.guides.mean_field import MeanFieldGuide
from bayesrnn.inference.tbptt import detach_state, plan_windows, window_batch
from bayesrnn.models.bayesian import weight_sites

SAMPLED_GROUPS = ("posterior", "posterior_predictive", "log_likelihood", "sample_stats")
OPTIMIZATION_GROUP = "optimization"
SAMPLE_DIMS = ("chain", "draw")
_EPOCH_TRACES = ("valid_perplexity", "epoch_lr", "epoch_seconds", "tokens_per_second")

__all__ = [
    "OPTIMIZATION_GROUP",
    "SAMPLED_GROUPS",
    "default_sites",
    "export_classifier",
    "export_language_model",
    "to_datatree",
]

ArrayLike = Any  # numpy arrays, torch tensors, or nested sequences of numbers


def _to_numpy(value: ArrayLike, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise ValueError(f"{name} must be numeric, got an object array")
    return array


def _sample_shape(groups: dict[str, dict[str, np.ndarray]], draw_only: bool) -> None:
    """Prepend chain=1 where asked, then require one (chain, draw) shape across all groups."""
    shapes: dict[str, tuple[int, ...]] = {}
    for group in SAMPLED_GROUPS:
        for var, array in groups.get(group, {}).items():
            if draw_only:
                array = array[np.newaxis]
                groups[group][var] = array
            if array.ndim < 2:
                raise ValueError(
                    f"{group}/{var} has shape {array.shape}: sampled groups lead with "
                    "(chain, draw), or with (draw,) when draw_only=True"
                )
            shapes[f"{group}/{var}"] = array.shape[:2]
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k}: {v}" for k, v in shapes.items())
        raise ValueError(f"sampled groups disagree on (chain, draw): {listed}")
    for chain, draw in shapes.values():
        if chain < 1 or draw < 1:
            raise ValueError(f"need at least one chain and one draw, got ({chain}, {draw})")


def _optimization_dataset(
    traces: Mapping[str, ArrayLike],
    dims: Mapping[str, Sequence[str]] | None,
    coords: Mapping[str, ArrayLike] | None,
    attrs: Mapping[str, Any] | None,
) -> xr.Dataset:
    variables = {}
    for var, values in traces.items():
        array = _to_numpy(values, f"{OPTIMIZATION_GROUP}/{var}")
        var_dims = tuple((dims or {}).get(var, ("window",)))
        if array.ndim != len(var_dims):
            raise ValueError(
                f"{OPTIMIZATION_GROUP}/{var} has shape {array.shape}, dims {var_dims}; "
                "training traces have no sample dims"
            )
        variables[var] = (var_dims, array)
    dataset = xr.Dataset(variables, attrs=dict(attrs or {}))
    for dim in dataset.dims:
        if coords and dim in coords:
            dataset = dataset.assign_coords({dim: _to_numpy(coords[dim], dim)})
    return dataset


def to_datatree(
    posterior: Mapping[str, ArrayLike] | None = None,
    posterior_predictive: Mapping[str, ArrayLike] | None = None,
    log_likelihood: Mapping[str, ArrayLike] | None = None,
    observed_data: Mapping[str, ArrayLike] | None = None,
    sample_stats: Mapping[str, ArrayLike] | None = None,
    coords: Mapping[str, ArrayLike] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    attrs: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    optimization: Mapping[str, ArrayLike] | None = None,
    optimization_dims: Mapping[str, Sequence[str]] | None = None,
    draw_only: bool = False,
) -> xr.DataTree:
    """Arrays (numpy or torch) → an ArviZ DataTree, validated so that arviz_stats can read it.

    Arrays of the sampled groups lead with (chain, draw); with ``draw_only=True`` they lead with
    (draw,) only and a chain of length 1 is prepended. ``observed_data`` has no sample dims.
    ``optimization`` holds traces without sample dims (1-D, dim ``"window"`` unless
    ``optimization_dims`` names others; ``coords`` applies to them too). ``coords``/``dims`` are
    ArviZ's (by variable name, across the sampled and data groups); ``attrs``
    maps a group name, or ``"/"`` for the root, to its attributes. Every sampled array must
    agree on (chain, draw): a mismatch, or no draw at all, is a ValueError.
    """
    given = {
        "posterior": posterior,
        "posterior_predictive": posterior_predictive,
        "log_likelihood": log_likelihood,
        "observed_data": observed_data,
        "sample_stats": sample_stats,
    }
    groups: dict[str, dict[str, np.ndarray]] = {}
    for group, variables in given.items():
        if variables is None:
            continue
        if not isinstance(variables, Mapping) or not variables:
            raise ValueError(f"{group} must be a non-empty mapping of variable → array")
        groups[group] = {var: _to_numpy(v, f"{group}/{var}") for var, v in variables.items()}
    if not groups and not optimization:
        raise ValueError("nothing to export: every group is empty")
    _sample_shape(groups, bool(draw_only))
    attrs = dict(attrs or {})
    optimization_attrs = attrs.pop(OPTIMIZATION_GROUP, None)
    unknown = [g for g in attrs if g != "/" and g not in groups]
    if unknown:
        raise ValueError(f"attrs name groups that are not exported: {unknown}")
    tree = from_dict(
        groups,
        sample_dims=list(SAMPLE_DIMS),
        coords=dict(coords) if coords else None,
        dims=dict(dims) if dims else None,
        attrs=attrs,
    )
    if optimization:
        tree[OPTIMIZATION_GROUP] = xr.DataTree(
            _optimization_dataset(optimization, optimization_dims, coords, optimization_attrs)
        )
    return tree


# ---------------------------------------------------------------------------------------------
# Model level: draw θ_s from the guide, run the model with θ_s, record densities.


def _log_density(fn, value: Tensor) -> float:
    """Σ log fn(value) accumulated in float64 (millions of weights lose digits in float32)."""
    while isinstance(fn, Independent | PyroIndependent):
        fn = fn.base_dist
    try:
        return float(fn.log_prob(value).double().sum())
    except NotImplementedError as error:
        raise ValueError(f"{type(fn).__name__} has no log density to export") from error


@contextlib.contextmanager
def evaluation_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Modules in ``eval()`` for the block, their modes restored after.

    The guide too: a :class:`SharpenedGuide` in evaluation mode samples q(φ) rather than
    sharpening on the targets, the posterior the export describes.
    """
    modes = [(m, m.training) for m in modules if isinstance(m, torch.nn.Module)]
    for module, _ in modes:
        module.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.train(mode)


def _draw(guide, args: tuple, kwargs: dict) -> tuple[dict[str, Tensor], float]:
    """One posterior draw θ_s and log q(θ_s)."""
    if isinstance(guide, GalDropoutGuide):
        raise ValueError(
            "GalDropoutGuide's Bernoulli-mixture posterior has no density (σ → 0), so log q "
            "and loo_approximate_posterior are undefined; export a Gaussian guide"
        )
    if isinstance(guide, MeanFieldGuide):
        # SharpenedGuide included: its draw without data is q(φ), the paper's option 1.
        weights, log_q = {}, 0.0
        for site in guide.site_names:
            fn = guide.distribution(site)
            weights[site] = fn.sample()
            log_q += _log_density(fn, weights[site])
        return weights, log_q
    with poutine.block():
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
    weights, log_q = {}, 0.0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        weights[name] = site["value"].detach()
        log_q += _log_density(site["fn"], site["value"])
    return weights, log_q


def default_sites(model: torch.nn.Module) -> list[str]:
    """The 1-D weight sites (biases), else the smallest site: small enough for any model."""
    sizes = {site: value.numel() for site, value in weight_sites(model).items()}
    if not sizes:
        raise ValueError("model has no Bayesian weight sites to export (built with prior=None?)")
    biases = [site for site, value in weight_sites(model).items() if value.dim() == 1]
    return biases or [min(sizes, key=sizes.__getitem__)]


def _choose_sites(model: torch.nn.Module, sites: Sequence[str] | None) -> list[str]:
    available = list(weight_sites(model))
    if not available:
        raise ValueError("model has no Bayesian weight sites to export (built with prior=None?)")
    if sites is None:
        return default_sites(model)
    if isinstance(sites, str):
        sites = [sites]
    unknown = [s for s in sites if s not in available]
    if unknown:
        raise ValueError(f"unknown weight sites {unknown}; the model has {available}")
    return list(sites)


def _check_complete(model: torch.nn.Module, weights: dict[str, Tensor]) -> None:
    """A draw must fix every weight site, or the model would sample the rest from its prior."""
    missing = [site for site in weight_sites(model) if site not in weights]
    if missing:
        raise ValueError(f"the guide did not sample the weight sites {missing}")


def _check_num_samples(num_samples: int) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    return num_samples


def _sample_categorical(logits: Tensor) -> Tensor:
    """One draw per row by inverting the CDF with one uniform per row.

    ``torch.multinomial`` or Gumbel-max noise cost one random number per class, which dominates
    the export for a 10k-word vocabulary on CPU.
    """
    cdf = torch.softmax(logits, -1).cumsum(-1)
    u = torch.rand((*cdf.shape[:-1], 1), dtype=cdf.dtype, device=cdf.device) * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=logits.shape[-1] - 1)


def _run_conditioned(model, weights: dict[str, Tensor], *args, **kwargs):
    """Trace the model with θ fixed: (return value, log p(θ), per-obs log-lik, sampled obs)."""
    trace = poutine.trace(poutine.condition(model, data=weights)).get_trace(*args, **kwargs)
    log_prior = 0.0
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and name in weights and name != "obs":
            log_prior += _log_density(site["fn"], site["value"])
    obs = trace.nodes["obs"]
    log_lik = obs["fn"].log_prob(obs["value"])
    return (
        trace.nodes["_RETURN"]["value"],
        log_prior,
        log_lik,
        _sample_categorical(obs["fn"].logits),
    )


def _history_traces(history) -> tuple[dict[str, np.ndarray], dict[str, tuple[str]]]:
    """Numeric 1-D traces of a ``History`` (or its dict) with their dims.

    Per-window traces (``elbo``, ``nll``, ``kl``, ``tokens``) share ``window``; per-epoch ones
    (``valid_*``, ``epoch_*``, ``tokens_per_second``) share ``epoch``; a trace whose length
    disagrees with its dim's gets a dim of its own instead of a size clash.
    """
    record = history.to_dict() if hasattr(history, "to_dict") else dict(history)
    traces, dims, sizes = {}, {}, {}
    for name, values in record.items():
        array = np.asarray(values)
        if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iuf":
            continue
        epochal = name in _EPOCH_TRACES or name.startswith(("valid_", "epoch_"))
        dim = "epoch" if epochal else "window"
        if sizes.setdefault(dim, array.size) != array.size:
            dim = f"{name}_dim_0"
        traces[name], dims[name] = array, (dim,)
    return traces, dims


def _stack_draws(per_draw: list[np.ndarray]) -> np.ndarray:
    return np.stack(per_draw)[np.newaxis]  # (chain=1, draw, ...)


def _sample_stats(log_q: list[float], log_prior: list[float], log_lik: list[float]):
    q, prior, lik = (
        np.asarray(x, dtype=np.float64)[np.newaxis] for x in (log_q, log_prior, log_lik)
    )
    return {"log_q": q, "log_p": prior + lik, "log_prior": prior, "kl": q - prior}


def _root_attrs(model, guide, **extra) -> dict[str, Any]:
    return {
        "inference_library": "pyro",
        "inference_library_version": pyro.__version__,
        "model": type(model).__name__,
        "guide": type(guide).__name__,
        **extra,
    }


def export_language_model(
    model,
    guide,
    stream: Tensor,
    num_samples: int = 100,
    sites: Sequence[str] | None = None,
    batch_size: int = 10,
    bptt: int = 35,
    history=None,
) -> xr.DataTree:
    """Posterior draws of a language model and their per-token fit to ``stream``.

    Each of the S draws θ_s is held fixed over the whole stream (one θ per draw is what LOO
    reweights), which is cut into ``batch_size`` parallel sequences and read in ``bptt``
    windows with the hidden state carried. Token order: the targets of sequence 0, then of
    sequence 1, ..., i.e. stream order; coordinate ``token`` is each target's index in
    ``stream`` (the first token of every sequence and the remainder past ``batch_size``·steps
    are never predicted). ``sites`` picks the weight sites of the ``posterior`` group (default
    :func:`default_sites`); ``history`` (a trainer ``History``) fills ``optimization``.
    arviz_stats' PSIS needs at least 25 draws (a Pareto tail of 5); fewer export fine but
    ``loo`` refuses them.
    """
    num_samples = _check_num_samples(num_samples)
    chosen = _choose_sites(model, sites)
    if not isinstance(stream, Tensor) or stream.numel() == 0:
        raise ValueError("stream must be a non-empty 1-D tensor of token ids")
    check_token_ids(stream, model.vocab_size, "stream")
    if getattr(model, "batch_first", False):
        raise ValueError("the stream is read in time-major windows: use batch_first=False")
    device = next(iter(weight_sites(model).values())).device
    data = batchify(stream, batch_size).to(device)
    steps = data.shape[0]
    if steps < 2:
        raise ValueError(
            f"stream of {stream.numel()} tokens gives {batch_size} sequences of {steps} step(s): "
            "nothing to predict"
        )
    windows = plan_windows(steps, min(bptt, steps - 1))
    first_inputs, first_targets = window_batch(data, windows[0])

    all_ll, all_pp = [], []
    posterior: dict[str, list[np.ndarray]] = {site: [] for site in chosen}
    log_q, log_prior, log_lik = [], [], []
    with evaluation_mode(model, guide), torch.no_grad():
        for _ in range(num_samples):
            weights, lq = _draw(guide, (first_inputs, first_targets), {"state": None})
            _check_complete(model, weights)
            state, prior, lls, pps = None, None, [], []
            for window in windows:
                inputs, targets = window_batch(data, window)
                (_, state), lp, ll, sampled = _run_conditioned(
                    model, weights, inputs, targets, state=state
                )
                state = detach_state(state)
                prior = lp if prior is None else prior
                lls.append(ll)
                pps.append(sampled)
            ll = torch.cat(lls).t().reshape(-1)  # (steps−1, B) → sequence-major
            all_ll.append(ll.double().cpu().numpy())
            all_pp.append(torch.cat(pps).t().reshape(-1).cpu().numpy())
            for site in chosen:
                posterior[site].append(weights[site].cpu().numpy())
            log_q.append(lq)
            log_prior.append(prior)
            log_lik.append(float(ll.double().sum()))

    targets = data[1:].t().reshape(-1).cpu().numpy()
    starts = np.arange(data.shape[1])[:, None] * steps  # sequence j begins at stream[j·steps]
    positions = (starts + np.arange(1, steps)[None, :]).reshape(-1)
    optimization, trace_dims = (None, {}) if history is None else _history_traces(history)
    return to_datatree(
        posterior={site: _stack_draws(v) for site, v in posterior.items()},
        posterior_predictive={"obs": _stack_draws(all_pp)},
        log_likelihood={"obs": _stack_draws(all_ll)},
        observed_data={"obs": targets},
        sample_stats=_sample_stats(log_q, log_prior, log_lik),
        coords={"token": positions},
        dims={"obs": ["token"]},
        attrs={
            "/": _root_attrs(
                model,
                guide,
                observations="tokens of the stream in stream order; coordinate = stream index",
                batch_size=int(data.shape[1]),
                bptt=int(windows[0].length),
            )
        },
        optimization=optimization,
        optimization_dims=trace_dims,
    )


def export_classifier(
    model,
    guide,
    tokens: Tensor,
    lengths: Tensor | None,
    labels: Tensor,
    num_samples: int = 100,
    sites: Sequence[str] | None = None,
) -> xr.DataTree:
    """Like :func:`export_language_model` for a :class:`SequenceClassifier` batch.

    One observation per sequence: ``log_likelihood["obs"]`` has dims (chain, draw, sequence)
    in batch order.
    """
    num_samples = _check_num_samples(num_samples)
    chosen = _choose_sites(model, sites)
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.numel() == 0:
        raise ValueError("labels must be a non-empty 1-D tensor")
    posterior: dict[str, list[np.ndarray]] = {site: [] for site in chosen}
    lls, pps, log_q, log_prior, log_lik = [], [], [], [], []
    with evaluation_mode(model, guide), torch.no_grad():
        for _ in range(num_samples):
            weights, lq = _draw(guide, (tokens, labels), {"lengths": lengths})
            _check_complete(model, weights)
            _, prior, ll, sampled = _run_conditioned(model, weights, tokens, labels, lengths)
            lls.append(ll.double().cpu().numpy())
            pps.append(sampled.cpu().numpy())
            for site in chosen:
                posterior[site].append(weights[site].cpu().numpy())
            log_q.append(lq)
            log_prior.append(prior)
            log_lik.append(float(ll.double().sum()))
    return to_datatree(
        posterior={site: _stack_draws(v) for site, v in posterior.items()},
        posterior_predictive={"obs": _stack_draws(pps)},
        log_likelihood={"obs": _stack_draws(lls)},
        observed_data={"obs": labels.cpu().numpy()},
        sample_stats=_sample_stats(log_q, log_prior, log_lik),
        coords={"sequence": np.arange(labels.numel())},
        dims={"obs": ["sequence"]},
        attrs={"/": _root_attrs(model, guide, observations="sequences in batch order")},
    )
