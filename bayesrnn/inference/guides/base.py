"""What the weight guides share: the model's weight sites, their priors and parameter holders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from pyro.nn import PyroModule
from torch import nn

from bayesrnn.inference.guides.param_store import check_name, free_name, sync
from bayesrnn.models.bayesian import prior_scale_sites, site_prior, weight_sites
from bayesrnn.models.priors import Prior
from bayesrnn.models.rnn import BayesianRNNBase


def reject_unknown_options(guide: str, options: Mapping[str, object], known: Iterable[str]):
    """Guides take keyword options; a misspelt one is a ValueError, not a silent default."""
    if options:
        raise ValueError(
            f"unknown option(s) {sorted(options)} for {guide}; known options: {sorted(known)}"
        )


def _attribute(site: str) -> str:
    return site.replace(".", "__")


def pyro_sample_sites(model: nn.Module) -> list[str]:
    """Every ``PyroSample`` attribute of ``model``'s modules, by its site name."""
    found = []
    for path, module in model.named_modules():
        for local in getattr(module, "_pyro_samples", {}):
            found.append(f"{path}.{local}" if path else local)
    return found


class SiteParameters(PyroModule):
    """One ``nn.Parameter`` per weight site, registered as ``<holder>.<site with __ for .>``.

    In Pyro's param store each is ``<guide name>.<holder>.<site with __ for .>``, kept in step
    with the attribute on every read (:mod:`bayesrnn.inference.guides.param_store`).
    """

    def __init__(self, values: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        for site, value in values.items():
            setattr(self, _attribute(site), nn.Parameter(value.detach().clone()))

    def store_name(self, attribute: str) -> str:
        return f"{self._pyro_name}.{attribute}" if self._pyro_name else attribute

    def _pyro_set_supermodule(self, name, context) -> None:
        """Once named (set on the guide), claim the store names: a later guide then picks
        another default name, and a value loaded before this guide was built is taken."""
        super()._pyro_set_supermodule(name, context)
        self.sync_with_param_store()

    def sync_with_param_store(self) -> None:
        """Bring every parameter in step with the store now (a read does it for one)."""
        for attribute, own in self._parameters.items():
            sync(self.store_name(attribute), own, self)

    def __getitem__(self, site: str) -> torch.Tensor:
        attribute = _attribute(site)
        sync(self.store_name(attribute), self._parameters[attribute], self)
        return getattr(self, attribute)  # inside a guide call: a pyro.param statement


class WeightGuide(PyroModule):
    """Base of the guides over a bayesrnn model's weight sites.

    The model is referenced, not registered as a submodule, so the guide's parameters are only
    its own; ``median()`` gives the posterior-mean weights used for deterministic prediction.
    ``name`` prefixes the guide's names in Pyro's param store (default: the class name, made
    unique among live guides), as an autoguide's ``prefix`` does.
    """

    def __init__(self, model: nn.Module, name: str | None = None) -> None:
        prefix = free_name(type(self).__name__) if name is None else check_name(name)
        super().__init__(name=prefix)
        sites = weight_sites(model)
        if not sites:
            raise ValueError("model has no Bayesian weight sites (was it built with prior=None?)")
        scales = prior_scale_sites(model)
        foreign = [s for s in pyro_sample_sites(model) if s not in sites and s not in scales]
        if foreign:
            raise ValueError(
                f"{type(self).__name__} covers the sites bayesianize made; {foreign} are "
                "PyroSample sites it did not make, which would be drawn from their prior at every "
                "step. Make them with bayesrnn.models.bayesianize(module, prior=...), or use a "
                "Pyro autoguide (AutoNormal) for this model"
            )
        self.__dict__["model"] = model
        self.site_names = list(sites)
        self.scale_sites = dict(scales)  # a hierarchical prior's scale site → its weight site
        self.__dict__["_initial"] = sites

    def sync_with_param_store(self) -> None:
        """Take every value loaded into Pyro's param store now; reading a parameter (a guide
        call, ``median()``) does it for that parameter anyway."""
        for module in self.modules():
            if isinstance(module, SiteParameters):
                module.sync_with_param_store()

    def initial_value(self, site: str) -> torch.Tensor:
        return self.__dict__["_initial"][site]

    def prior(self, site: str) -> Prior:
        return site_prior(self.model, site)

    def owner(self, site: str) -> nn.Module:
        path = site.rpartition(".")[0]
        return self.model.get_submodule(path) if path else self.model

    def is_recurrent(self, site: str) -> bool:
        return isinstance(self.owner(site), BayesianRNNBase)

    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
