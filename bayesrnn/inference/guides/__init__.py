"""Variational posteriors of the papers as Pyro guides, and a factory that names them."""

from __future__ import annotations

from torch import nn

from bayesrnn.inference.guides.ensemble import EnsembleGuide
from bayesrnn.inference.guides.gal import GalDropoutGuide
from bayesrnn.inference.guides.mean_field import MeanFieldGuide
from bayesrnn.inference.guides.point import DeterministicGuide
from bayesrnn.inference.guides.sampled import SampledPosterior
from bayesrnn.inference.guides.sharpened import SharpenedGuide


def _auto_normal(model: nn.Module, **options):
    from pyro.infer.autoguide import AutoNormal

    return AutoNormal(model, **options)


def _auto_low_rank(model: nn.Module, **options):
    from pyro.infer.autoguide import AutoLowRankMultivariateNormal

    return AutoLowRankMultivariateNormal(model, **options)


GUIDES = {
    "none": DeterministicGuide,
    "mean_field": MeanFieldGuide,
    "gal": GalDropoutGuide,
    "sharpened": SharpenedGuide,
    "ensemble": EnsembleGuide,
    "auto_normal": _auto_normal,
    "auto_low_rank": _auto_low_rank,
    "nuts": SampledPosterior,
}


def make_guide(name: str, model: nn.Module, **options):
    """Build a guide by name; an unknown name or option is a ValueError."""
    if name not in GUIDES:
        raise ValueError(f"unknown guide {name!r}; known guides: {sorted(GUIDES)}")
    try:
        return GUIDES[name](model, **options)
    except TypeError as error:  # autoguides reject unknown keywords with TypeError
        raise ValueError(f"bad option for guide {name!r}: {error}") from error


__all__ = [
    "GUIDES",
    "DeterministicGuide",
    "EnsembleGuide",
    "GalDropoutGuide",
    "MeanFieldGuide",
    "SampledPosterior",
    "SharpenedGuide",
    "make_guide",
]
