"""How weight sites and observations are laid out in an ArviZ export: names, dims, coordinates.

Variable names. A Pyro site ``rnn.bias_ih_l0`` is exported as ``rnn__bias_ih_l0`` (every ``.``
becomes ``__``): a dot reads as attribute access in xarray (``tree.posterior.rnn``) and as a
path in ArviZ's labels, and ``/`` is netCDF's group separator. :func:`variable_name` and
:func:`site_name` map both ways; a site name that already holds ``__`` is refused, so the map
stays one-to-one.

Dims, named after what indexes them (torch's layouts, split where torch stacks):

- recurrent weights ``weight_ih_l{k}`` (G·H, I) → (``gate``, ``unit``, ``input`` for layer 0 or
  ``hidden`` above it), ``weight_hh_l{k}`` (G·H, H) → (``gate``, ``unit``, ``hidden``), biases
  (G·H,) → (``gate``, ``unit``). ``gate`` holds torch's gate order: ``i f g o`` for an LSTM,
  ``r z n`` for a GRU; a tanh RNN has one gate and no ``gate`` dim;
- ``embedding.weight`` (V, E) → (``vocab``, ``embedding``);
- the decoder (out, H) → (``vocab`` | ``class`` | ``output``, ``hidden``) for a language model,
  classifier or regressor, its bias → (``vocab`` | ``class`` | ``output``,); a regressor's
  2·D outputs are the D locations then the D scales (labelled ``loc_NAME``, ``scale_NAME`` by
  :func:`~bayesrnn.evaluation.arviz_forecast.export_forecaster`);
- any other site: ``{variable}_dim_{i}``, ArviZ's default.

``vocab``, ``class`` and ``output`` carry the vocabulary, class and output names when the caller
knows them (integers otherwise). A dim name already used with another length (two RNNs of
different sizes) gets the variable's name in front: ``rnn2__weight_hh_l0__unit``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bayesrnn.models.bayesian import prior_scale_sites, weight_sites
from bayesrnn.models.rnn import BayesianRNNBase

GATE_NAMES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn_tanh": ("h",)}
_DECODER_DIM = {
    "LanguageModel": "vocab",
    "SequenceClassifier": "class",
    "SequenceRegressor": "output",
}

__all__ = [
    "GATE_NAMES",
    "SiteLayout",
    "exportable_sites",
    "observations_fingerprint",
    "site_layouts",
    "site_name",
    "text_fingerprint",
    "variable_name",
]


def variable_name(site: str) -> str:
    """The exported variable of a Pyro site: ``rnn.bias_ih_l0`` → ``rnn__bias_ih_l0``."""
    if not isinstance(site, str) or not site:
        raise ValueError(f"a site name must be a non-empty string, got {site!r}")
    if "__" in site:
        raise ValueError(f"site {site!r} holds '__', which the exported names use for '.'")
    return site.replace(".", "__")


def site_name(variable: str) -> str:
    """The Pyro site of an exported variable: ``rnn__bias_ih_l0`` → ``rnn.bias_ih_l0``."""
    return variable.replace("__", ".")


@dataclass(frozen=True)
class SiteLayout:
    """One exported site: its variable name, its draw's shape in the file, and its dims."""

    site: str
    name: str
    shape: tuple[int, ...]
    dims: tuple[str, ...]

    def arrange(self, value: torch.Tensor | np.ndarray) -> np.ndarray:
        """A draw of the site (torch's layout) in the exported shape."""
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        return np.asarray(value).reshape(self.shape)


def _recurrent_dims(owner: BayesianRNNBase, local: str, shape: tuple[int, ...]):
    gates = GATE_NAMES[owner.mode]
    layer = int(local.rpartition("_l")[2])
    rows: tuple[int, ...] = (len(gates), shape[0] // len(gates)) if len(gates) > 1 else shape[:1]
    row_dims: tuple[str, ...] = ("gate", "unit") if len(gates) > 1 else ("unit",)
    if local.startswith("weight_ih"):
        return (*rows, shape[1]), (*row_dims, "input" if layer == 0 else "hidden")
    if local.startswith("weight_hh"):
        return (*rows, shape[1]), (*row_dims, "hidden")
    return rows, row_dims


def _dims_of(model: torch.nn.Module, site: str, shape: tuple[int, ...]):
    path, _, local = site.rpartition(".")
    owner = model.get_submodule(path) if path else model
    if isinstance(owner, BayesianRNNBase) and local.rpartition("_l")[2].isdigit():
        return _recurrent_dims(owner, local, shape)
    if site == "embedding.weight" and len(shape) == 2:
        return shape, ("vocab", "embedding")
    out = _DECODER_DIM.get(type(model).__name__)
    if out is not None and site == "decoder.weight" and len(shape) == 2:
        return shape, (out, "hidden")
    if out is not None and site == "decoder.bias" and len(shape) == 1:
        return shape, (out,)
    name = variable_name(site)
    return shape, tuple(f"{name}_dim_{i}" for i in range(len(shape)))


def exportable_sites(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every latent site of ``model`` and a value of its shape: the weights, then the scalar
    scales of hierarchical priors (``rnn.weight_hh_l0_prior_scale``, no dims of their own)."""
    weights = weight_sites(model)
    scalar = next(iter(weights.values())).new_zeros(()) if weights else torch.zeros(())
    return {**weights, **{site: scalar for site in prior_scale_sites(model)}}


def site_layouts(
    model: torch.nn.Module,
    sites: Sequence[str],
    labels: Mapping[str, Sequence] | None = None,
) -> tuple[list[SiteLayout], dict[str, np.ndarray]]:
    """Layouts of ``sites`` of ``model`` and the coordinates of their dims.

    ``labels`` gives coordinate values of a dim by name (``{"vocab": itos, "class": names}``);
    a label list whose length disagrees with the dim is a ValueError. Integer coordinates
    otherwise; ``gate`` always carries the gate names.
    """
    values = exportable_sites(model)
    labels = dict(labels or {})
    sizes: dict[str, int] = {}
    gates: dict[str, tuple[str, ...]] = {}
    layouts = []
    for site in sites:
        if site not in values:
            raise ValueError(f"unknown weight site {site!r}; the model has {list(values)}")
        name = variable_name(site)
        shape, dims = _dims_of(model, site, tuple(values[site].shape))
        named = []
        for dim, size in zip(dims, shape, strict=True):
            if sizes.setdefault(dim, size) != size:
                dim = f"{name}__{dim}"
                sizes[dim] = size
            if dim.rpartition("__")[2] == "gate":
                gates[dim] = GATE_NAMES[model.get_submodule(site.rpartition(".")[0]).mode]
            named.append(dim)
        layouts.append(SiteLayout(site, name, tuple(shape), tuple(named)))
    coords = {}
    for dim, size in sizes.items():
        if dim in gates:
            coords[dim] = np.asarray(gates[dim])
        elif dim in labels:
            given = list(labels[dim])
            if len(given) != size:
                raise ValueError(f"{len(given)} {dim} labels for a dim of length {size}")
            coords[dim] = np.asarray(given)
        else:
            coords[dim] = np.arange(size)
    return layouts, coords


def _canonical(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind in "iub":
        return np.ascontiguousarray(array, dtype="<i8")
    if array.dtype.kind == "f":
        return np.ascontiguousarray(array, dtype="<f8")
    return np.ascontiguousarray(array.astype(str)).astype("U")


def observations_fingerprint(*arrays: np.ndarray) -> str:
    """sha256 of the observations and their coordinates, independent of storage dtype.

    Two exports scored on the same tokens (same ids at the same positions of the same split)
    share it, whatever integer width the netCDF file kept.
    """
    digest = hashlib.sha256()
    for array in arrays:
        canonical = _canonical(array)
        digest.update(f"{canonical.dtype.str}{canonical.shape};".encode())
        digest.update(canonical.tobytes())
    return digest.hexdigest()


def text_fingerprint(texts: Sequence[Sequence[str]]) -> str:
    """sha256 of the observed text itself, one list of token strings per sequence (a language
    model's stream is one sequence): two exports whose texts differ word for word but encode to
    the same ids (each run's vocabulary numbers its own words) share the ids' fingerprint, not
    this one."""
    table = [[str(token) for token in text] for text in texts]
    return hashlib.sha256(json.dumps(table, ensure_ascii=True).encode("ascii")).hexdigest()
