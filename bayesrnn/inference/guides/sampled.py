"""Stored posterior draws (NUTS's) replayed as a guide, so MC evaluation treats them as S draws."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayesrnn.inference.guides.base import WeightGuide, reject_unknown_options
from bayesrnn.inference.mcmc import STAT_NAMES

_DRAWS = "draws__"
_STATS = "stats__"


def _attribute(site: str) -> str:
    return _DRAWS + site.replace(".", "__")


class SampledPosterior(WeightGuide):
    """A guide whose posterior is a fixed set of draws: ``num_chains`` × ``num_samples`` weight
    sets (a NUTS run's), held as buffers so that the checkpoint stores them.

    Each call returns one stored draw (``Delta`` at every weight site), chosen uniformly at
    random with the torch generator, so S calls are S posterior draws as for any other guide
    (with replacement). :meth:`replay` walks them in order, chain after chain, for exports that
    keep the chain structure. ``median()`` is the mean of the draws. ``sample_stats`` holds
    the sampler's per-draw statistics (chains, draws), :data:`bayesrnn.inference.mcmc.STAT_NAMES`.
    """

    def __init__(self, model: nn.Module, num_chains: int = 4, num_samples: int = 100, **options):
        reject_unknown_options("SampledPosterior", options, ("num_chains", "num_samples"))
        for name, value in (("num_chains", num_chains), ("num_samples", num_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        super().__init__(model)
        self.num_chains, self.num_samples = num_chains, num_samples
        lead = (num_chains, num_samples)
        for site in self.site_names:
            initial = self.initial_value(site)
            self.register_buffer(_attribute(site), initial.new_zeros(lead + initial.shape))
        for name in STAT_NAMES:
            self.register_buffer(_STATS + name, torch.zeros(lead, dtype=torch.float64))
        self.register_buffer("filled", torch.zeros((), dtype=torch.bool))
        self._order: Iterator[int] | None = None

    # --- storing ---------------------------------------------------------------------------

    def store(self, samples: Mapping[str, torch.Tensor], stats: Mapping[str, torch.Tensor]):
        """Keep ``samples[site]`` (chains, draws, *shape) and ``stats[name]`` (chains, draws)."""
        lead = (self.num_chains, self.num_samples)
        missing = sorted(set(self.site_names) - set(samples))
        if missing:
            raise ValueError(f"draws of {missing} are missing")
        for site in self.site_names:
            buffer = self.draws(site)
            if tuple(samples[site].shape) != tuple(buffer.shape):
                raise ValueError(
                    f"draws of {site} have shape {tuple(samples[site].shape)}, expected "
                    f"{tuple(buffer.shape)} ({lead[0]} chains of {lead[1]})"
                )
            buffer.copy_(samples[site].detach())
        for name in STAT_NAMES:
            getattr(self, _STATS + name).copy_(stats[name].detach().reshape(lead))
        self.filled.fill_(True)

    def draws(self, site: str) -> torch.Tensor:
        """The stored draws of ``site``, (chains, draws, *shape)."""
        return getattr(self, _attribute(site))

    @property
    def sample_stats(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, _STATS + name) for name in STAT_NAMES}

    @property
    def total(self) -> int:
        return self.num_chains * self.num_samples

    def draw(self, index: int) -> dict[str, torch.Tensor]:
        """Draw ``index`` of the flattened (chain-major) draws, every weight site."""
        chain, step = divmod(index, self.num_samples)
        return {site: self.draws(site)[chain, step] for site in self.site_names}

    # --- replaying -------------------------------------------------------------------------

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Calls inside the block return draws 0, 1, … in order (chain 0 first): a caller
        that makes ``num_chains * num_samples`` calls sees every draw once, in chain order."""
        previous = self._order
        self._order = iter(range(self.total))
        try:
            yield
        finally:
            self._order = previous

    def _next_index(self) -> int:
        if self._order is not None:
            index = next(self._order, None)
            if index is None:
                raise RuntimeError(f"replay asked for more than the {self.total} stored draws")
            return index
        device = self.filled.device
        return int(torch.randint(self.total, (), device=device))

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        if not bool(self.filled):
            raise RuntimeError("SampledPosterior holds no draws yet: run NUTS first")
        weights = self.draw(self._next_index())
        for site, value in weights.items():
            pyro.sample(site, dist.Delta(value, event_dim=value.dim()))
        return weights

    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {site: self.draws(site).flatten(0, 1).mean(0) for site in self.site_names}
