"""Turning a module's parameters into Pyro sample sites with priors.

Leaf modules (RNN layers, embeddings, linear maps) create ordinary ``nn.Parameter`` weights with
PyTorch's default initialisation. :func:`bayesianize` then replaces each of them by a
``PyroSample`` whose site name is the parameter's path in the module tree (``rnn.weight_ih_l0``),
so ``poutine.condition(model, data=dict(torch_module.named_parameters()))`` runs the model with
torch's weights. The initial values are kept as non-persistent buffers: guides start their means
there, and they follow ``.to(device)`` without entering the state dict.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping

import torch
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_

from bayesrnn.models.learned_priors import (
    LOG_SCALE_SUFFIX,
    SCALE_SUFFIX,
    HierarchicalGaussianPrior,
    LearnedGaussianPrior,
)
from bayesrnn.models.priors import GaussianPrior, Prior
from bayesrnn.models.rnn_options import TORCH_DEFAULTS, unsupported_options
from bayesrnn.models.torch_children import draw_aware_children, read_draws

INIT_PREFIX = "_init_"

PriorSpec = Prior | Mapping[str, Prior] | Callable[[str], Prior]


def resolve_prior(spec: PriorSpec, site: str) -> Prior:
    """The prior of one site: a prior, a ``{glob: prior}`` map (first match wins), or a callable."""
    if isinstance(spec, Mapping):
        for pattern, prior in spec.items():
            if fnmatch.fnmatchcase(site, pattern):
                return prior
        raise ValueError(f"prior: no pattern in {list(spec)} matches the site {site!r}")
    if callable(spec) and not hasattr(spec, "distribution"):
        return spec(site)
    return spec  # type: ignore[return-value]


def _prior_sampler(prior: Prior, local_name: str) -> Callable[[PyroModule], object]:
    def build(module: PyroModule):
        anchor = getattr(module, INIT_PREFIX + local_name)
        if isinstance(prior, LearnedGaussianPrior):
            log_scale = getattr(module, local_name + LOG_SCALE_SUFFIX)
            return prior.distribution(anchor.shape, anchor.device, anchor.dtype, log_scale)
        if isinstance(prior, HierarchicalGaussianPrior):  # reading the scale samples its site
            scale = getattr(module, local_name + SCALE_SUFFIX)
            return prior.distribution(anchor.shape, anchor.device, anchor.dtype, scale)
        return prior.distribution(anchor.shape, anchor.device, anchor.dtype)

    return build


def _hyperprior_sampler(prior: HierarchicalGaussianPrior, local_name: str):
    def build(module: PyroModule):
        anchor = getattr(module, INIT_PREFIX + local_name)
        return prior.hyperprior(anchor.device, anchor.dtype)

    return build


def _attach_scale(owner: PyroModule, local: str, prior: Prior, initial: torch.Tensor) -> None:
    """The learned prior's scale parameter or the hierarchical prior's scale site, beside the
    weight on the same module (so it follows ``.to(device)`` and the state dict)."""
    if isinstance(prior, LearnedGaussianPrior):
        value = torch.tensor(math.log(prior.initial_scale), dtype=initial.dtype)
        setattr(owner, local + LOG_SCALE_SUFFIX, torch.nn.Parameter(value.to(initial.device)))
    elif isinstance(prior, HierarchicalGaussianPrior):
        setattr(owner, local + SCALE_SUFFIX, PyroSample(_hyperprior_sampler(prior, local)))


def _refuse_cached_weights(model: torch.nn.Module, names: list[str], keep: tuple[str, ...]):
    """torch's RNN modules hold their own list of weight references (``_flat_weights``), so a
    sample site put in a weight's place is never read: refuse them, naming the replacement."""
    for path, module in model.named_modules():
        if not isinstance(module, torch.nn.RNNBase) or isinstance(module, PyroModule):
            continue
        own = [n for n in names if n.startswith(f"{path}.") or not path]
        if any(not any(fnmatch.fnmatchcase(n, p) for p in keep) for n in own):
            kind = type(module).__name__
            options = {n: getattr(module, n) for n in TORCH_DEFAULTS if hasattr(module, n)}
            unsupported = [f"{n}={options[n]!r}" for n in unsupported_options(options)]
            same = (
                f"same arguments, but it does not support the {', '.join(unsupported)} set here"
                if unsupported
                else "same arguments"
            )
            raise ValueError(
                f"bayesianize: {path or 'the model'} is a torch.nn.{kind}, which reads its "
                f"weights from its own cache; use bayesrnn.models.Bayesian{kind} ({same}) "
                "or keep its weights in deterministic"
            )


def bayesianize(
    model: torch.nn.Module,
    prior: PriorSpec = GaussianPrior(1.0),
    deterministic: Iterable[str] = (),
) -> PyroModule:
    """Replace each parameter of ``model`` by a sample site, except those in ``deterministic``.

    Any module works: plain ``torch.nn`` children (``nn.Linear``, ``nn.Embedding``, …) are made
    ``PyroModule``s in place first, so their own ``forward`` reads the sampled weights;
    ``nn.Linear`` and ``nn.Embedding`` also read a batch of draws (Pyro's vectorised paths), see
    :mod:`bayesrnn.models.torch_children`.
    ``deterministic`` holds site names or glob patterns (``"decoder.bias"``); those stay point
    estimates (``pyro.param`` sites), as Fortunato keeps the softmax bias. Returns ``model``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"bayesianize needs a torch.nn.Module, got {type(model).__name__}")
    keep = tuple(deterministic)
    names = [name for name, _ in model.named_parameters()]
    unknown = [p for p in keep if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unknown:
        raise ValueError(f"deterministic: {unknown} match no parameter of the model; have {names}")
    _refuse_cached_weights(model, names, keep)
    torch_children = draw_aware_children(model)
    to_pyro_module_(model)
    read_draws(torch_children)  # nn.Linear / nn.Embedding then read stacked weight draws
    for full_name in names:
        if any(fnmatch.fnmatchcase(full_name, p) for p in keep):
            continue
        owner_path, _, local = full_name.rpartition(".")
        owner = model.get_submodule(owner_path) if owner_path else model
        initial = getattr(owner, local).detach().clone()
        delattr(owner, local)
        owner.register_buffer(INIT_PREFIX + local, initial, persistent=False)
        resolved = resolve_prior(prior, full_name)
        try:  # a prior that cannot describe this site fails here, named, not at the first call
            resolved.distribution(initial.shape, initial.device, initial.dtype)
        except ValueError as error:
            raise ValueError(f"prior of site {full_name!r}: {error}") from error
        _attach_scale(owner, local, resolved, initial)
        setattr(owner, local, PyroSample(_prior_sampler(resolved, local)))
        owner._bayesrnn_priors = {**getattr(owner, "_bayesrnn_priors", {}), local: resolved}
    return model


def weight_sites(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Site name → initial value for every Bayesian weight of ``model`` (in module order)."""
    sites: dict[str, torch.Tensor] = {}
    for path, module in model.named_modules():
        for name, buffer in module.named_buffers(recurse=False):
            if name.startswith(INIT_PREFIX):
                local = name[len(INIT_PREFIX) :]
                sites[f"{path}.{local}" if path else local] = buffer
    return sites


def site_prior(model: torch.nn.Module, site: str) -> Prior:
    """The prior description (not the distribution) of one weight site."""
    owner_path, _, local = site.rpartition(".")
    owner = model.get_submodule(owner_path) if owner_path else model
    priors = getattr(owner, "_bayesrnn_priors", {})
    if local not in priors:
        raise ValueError(f"site: {site!r} is not a Bayesian weight of this model")
    return priors[local]


def _scale_attributes(model: torch.nn.Module, kind: type, suffix: str) -> dict[str, str]:
    found = {}
    for path, module in model.named_modules():
        for local, prior in getattr(module, "_bayesrnn_priors", {}).items():
            if isinstance(prior, kind):
                weight = f"{path}.{local}" if path else local
                found[weight + suffix] = weight
    return found


def prior_scale_sites(model: torch.nn.Module) -> dict[str, str]:
    """Latent scale site → its weight site, for every weight with a hierarchical prior."""
    return _scale_attributes(model, HierarchicalGaussianPrior, SCALE_SUFFIX)


def learned_prior_scales(model: torch.nn.Module) -> dict[str, float]:
    """Weight site → its empirical-Bayes prior scale s, for every weight with a learned prior."""
    scales = {}
    for name, weight in _scale_attributes(model, LearnedGaussianPrior, LOG_SCALE_SUFFIX).items():
        scales[weight] = float(model.get_parameter(name).detach().exp())
    return scales
