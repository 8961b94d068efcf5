"""Arrays → an ArviZ 1.x ``xarray.DataTree``, validated so that ``arviz_stats`` can read it.

The model-level exports (:mod:`bayesrnn.evaluation.arviz_export`,
:mod:`bayesrnn.evaluation.arviz_forecast`) build their trees here. Draws are one chain of S,
dims ``(chain=1, draw=S)``, because ``arviz_stats``' LOO family hard-codes those sample dims.
The ``optimization`` group (training traces) has no sample dims, so it lives beside
``sample_stats``, where every variable must carry (chain, draw) for ``arviz_stats``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from arviz_base import from_dict
from torch import Tensor

SAMPLED_GROUPS = ("posterior", "posterior_predictive", "log_likelihood", "sample_stats")
OPTIMIZATION_GROUP = "optimization"
SAMPLE_DIMS = ("chain", "draw")
_EPOCH_TRACES = ("valid_perplexity", "epoch_lr", "epoch_seconds", "tokens_per_second")

__all__ = ["OPTIMIZATION_GROUP", "SAMPLED_GROUPS", "SAMPLE_DIMS", "history_traces", "to_datatree"]

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


def history_traces(history) -> tuple[dict[str, np.ndarray], dict[str, tuple[str]]]:
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
