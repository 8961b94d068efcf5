"""Fresh initial weights for one ensemble member, drawn by the model's own layers.

Deep ensembles owe their spread to independent initialisations (Lakshminarayanan et al.
2017), so each member must start from its own draw of the scheme the model itself used, not a
perturbation of one start. bayesrnn's layers initialise in their constructors (``Embedding``:
N(0, 1); ``Linear``: U(±1/√in); the RNN stack: U(±1/√hidden)) and a model built with
``init_range`` r then sets every weight to U(−r, r); a plain twin of each layer, built under the
member's seed, reproduces exactly that. torch's ``nn.Embedding`` and ``nn.Linear`` (in a model
made Bayesian by ``bayesianize``) get a twin of torch's class, initialised as torch does.
"""

from __future__ import annotations

import torch
from torch import nn

from bayesrnn.models.bayesian import weight_sites
from bayesrnn.models.layers import Embedding, Linear
from bayesrnn.models.rnn import BayesianRNNBase


def _plain_twin(owner: nn.Module, site: str) -> nn.Module:
    """A freshly initialised, non-Bayesian layer of the same kind and shape as ``owner``."""
    if isinstance(owner, BayesianRNNBase):
        return type(owner)(
            owner.input_size, owner.hidden_size, owner.num_layers, bias=owner.bias, prior=None
        )
    if isinstance(owner, Embedding):
        return Embedding(owner.num_embeddings, owner.embedding_dim)
    if isinstance(owner, Linear):
        return Linear(owner.in_features, owner.out_features, bias=owner.has_bias)
    if isinstance(owner, nn.Embedding):  # torch's children bayesianize gave draw reading
        return nn.Embedding(owner.num_embeddings, owner.embedding_dim, owner.padding_idx)
    if isinstance(owner, nn.Linear):
        has_bias = "bias" in getattr(owner, "_pyro_samples", {}) or owner.bias is not None
        return nn.Linear(owner.in_features, owner.out_features, bias=has_bias)
    raise ValueError(
        f"cannot re-initialise site {site!r} of a {type(owner).__name__}: only bayesrnn's "
        "Embedding, Linear and RNN layers and torch's nn.Embedding and nn.Linear know their "
        "initialisation; pass initial_values "
        "(one dict of site values per member)"
    )


def member_initial_values(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """One draw of every weight site's initial value, as the model's layers draw it, seeded.

    The global random state is left as it was. A model with an ``init_range`` attribute (set
    by bayesrnn's models) draws every weight U(−r, r), as its constructor did.
    """
    sites = weight_sites(model)
    init_range = getattr(model, "init_range", None)
    values: dict[str, torch.Tensor] = {}
    twins: dict[str, nn.Module] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for site, initial in sites.items():
            if init_range is not None:
                fresh = torch.empty(initial.shape).uniform_(-init_range, init_range)
            else:
                path, _, local = site.rpartition(".")
                owner = model.get_submodule(path) if path else model
                if path not in twins:
                    twins[path] = _plain_twin(owner, site)
                fresh = getattr(twins[path], local).detach()
            values[site] = fresh.to(dtype=initial.dtype, device=initial.device)
    return values
