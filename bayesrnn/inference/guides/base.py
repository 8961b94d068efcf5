"""What the weight guides share: the model's weight sites, their priors and parameter holders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from pyro.nn import PyroModule
from torch import nn

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
    """One ``nn.Parameter`` per weight site, registered as ``<holder>.<site with __ for .>``."""

    def __init__(self, values: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        for site, value in values.items():
            setattr(self, _attribute(site), nn.Parameter(value.detach().clone()))

    def __getitem__(self, site: str) -> torch.Tensor:
        return getattr(self, _attribute(site))


class WeightGuide(PyroModule):
    """Base of the guides over a bayesrnn model's weight sites.

    The model is referenced, not registered as a submodule, so the guide's parameters are only
    its own; ``median()`` gives the posterior-mean weights used for deterministic prediction.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
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
