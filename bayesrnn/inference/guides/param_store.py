"""The weight guides' parameters in Pyro's param store, named ``<guide name>.<holder>.<site>``.

Pyro's convention is that the param store holds a guide's parameters by name: ``pyro.param``
statements find them there, ``get_param_store().save/load`` round-trips them, and a name is one
set of values. The guides keep their parameters as ``nn.Parameter`` attributes as well (the
trainer's optimiser, ``state_dict`` and checkpoints read those), and every read of one first
brings the two into agreement:

* a name missing from the store (a fresh store, ``clear_param_store()``) gets the guide's own
  tensor;
* a tensor put there by ``load``, ``set_state`` or the user's own ``pyro.param`` is copied into
  the guide's parameter (in place, so an optimiser already built keeps working), which then
  takes its place: loading is honoured, whenever the guide is built;
* a tensor another guide put there (one with the same name, or a guide since deleted) is
  replaced without copying: guides never share or inherit each other's values.

A guide's default name is its class name, with ``_2``, ``_3``, … appended while a live guide
holds parameters under the shorter one, so two guides built side by side train independently
and both appear in a saved store.
"""

from __future__ import annotations

import weakref

import pyro
import torch
from torch import nn

# id(tensor) → (the tensor, the module that registered it), both weakly: which store entries
# a guide put there, and whether that guide is still alive.
_REGISTERED: dict[int, tuple[weakref.ref, weakref.ref]] = {}


def _register(tensor: torch.Tensor, holder: nn.Module) -> None:
    for key in [k for k, (t, _) in _REGISTERED.items() if t() is None]:
        del _REGISTERED[key]
    _REGISTERED[id(tensor)] = (weakref.ref(tensor), weakref.ref(holder))


def _registrant(tensor: torch.Tensor) -> tuple[bool, nn.Module | None]:
    """(whether a guide put ``tensor`` in the store, that guide's holder if still alive)."""
    entry = _REGISTERED.get(id(tensor))
    if entry is None or entry[0]() is not tensor:
        return False, None
    return True, entry[1]()


def _stored(name: str) -> torch.Tensor | None:
    store = pyro.get_param_store()
    return store._params.get(name)  # the raw tensor: these parameters are unconstrained


def _put(name: str, own: nn.Parameter, holder: nn.Module) -> None:
    store = pyro.get_param_store()
    if name in store:
        del store[name]
    store[name] = own
    _register(own, holder)


def sync(name: str, own: nn.Parameter, holder: nn.Module) -> None:
    """Make the store's ``name`` the tensor ``own``, first copying in a loaded value."""
    stored = _stored(name)
    if stored is own:
        return
    if stored is not None and not _registrant(stored)[0]:  # loaded or set by the user
        if stored.shape != own.shape:
            raise ValueError(
                f"Pyro's param store holds {name!r} of shape {tuple(stored.shape)}, but this "
                f"guide's parameter has shape {tuple(own.shape)}: it was saved from another "
                "model (clear_param_store() or give the guide another name)"
            )
        with torch.no_grad():
            own.copy_(stored)
    _put(name, own, holder)


def held_by_live_guide(prefix: str, exclude: nn.Module | None = None) -> bool:
    """Whether a live guide (other than one holding ``exclude``) has parameters in the store
    under ``prefix.``."""
    store = pyro.get_param_store()
    for name in store.get_all_param_names():
        if name.startswith(prefix + "."):
            registered, holder = _registrant(store._params[name])
            if registered and holder is not None and holder is not exclude:
                return True
    return False


def free_name(base: str) -> str:
    """``base``, or ``base_2``, ``base_3``, … : the first no live guide's parameters use."""
    name, k = base, 1
    while held_by_live_guide(name):
        k += 1
        name = f"{base}_{k}"
    return name


def check_name(name: object) -> str:
    """A guide name is a non-empty string without spaces (it prefixes param store names)."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"name must be a non-empty string without spaces, got {name!r}")
    return name
