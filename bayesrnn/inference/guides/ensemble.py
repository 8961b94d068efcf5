"""Deep ensembles (Lakshminarayanan et al. 2017) as a guide: K MAP networks trained as one.

Each member is a point estimate θ_k, a Dirac delta at its weights; with the library's ELBO
(:func:`bayesrnn.inference.window_terms`) the KL of a delta against the prior is −log p(θ_k),
so a window's loss is Σ_k [−log p(y | θ_k) − log p(θ_k)/C]: K maximum-a-posteriori fits under
the same prior, the prior term split over the C windows of an epoch exactly as the KL is.
The members share nothing, so the gradient of that sum with respect to θ_k is member k's own.

Training runs the K members as one batched call: in training mode the guide returns every
site with the members as a leading draw dim, left of the model's plates, which the layers read
as K weight draws (:mod:`bayesrnn.models.draws`); the hidden state carried between TBPTT
windows is then (layers, K·B, hidden), one state per member. In evaluation mode each call
returns the next member in turn, so any K consecutive draws are the K members once each:
Monte Carlo prediction with S = K (or a multiple) is the equal-weight mixture, exactly.
``median()`` is member 0 alone: averaging the weights of independently trained networks is
not a network, so "posterior-mean" scores of an ensemble are those of its first member.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyro
import torch
from pyro import poutine
from pyro.distributions import Delta
from pyro.poutine.indep_messenger import CondIndepStackFrame
from pyro.poutine.runtime import get_plates
from torch import nn

from bayesrnn.inference.guides.base import SiteParameters, WeightGuide, reject_unknown_options
from bayesrnn.inference.guides.member_init import member_initial_values


def check_members(members: object) -> int:
    """The number of members: a whole number >= 1 (``True`` and 1.5 are refused)."""
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"members must be an integer >= 1, got {members!r}")
    return members


def check_member_draws(guide, num_samples: int | None, *, exact: bool = False) -> None:
    """Refuse MC draws that would not weigh an ensemble's members equally: ``num_samples``
    must be a multiple of the members (``exact``: equal to them, for exports, where a repeated
    member would pass for another draw). Other guides pass."""
    if num_samples is None or not isinstance(guide, EnsembleGuide):
        return
    k = guide.members
    if exact and num_samples != k:
        raise ValueError(
            f"an ensemble's draws are its {k} members: export num_samples={k}, got {num_samples}"
        )
    if num_samples % k:
        raise ValueError(
            f"an ensemble of {k} members needs num_samples a multiple of {k} (each member "
            f"drawn equally often), got {num_samples}"
        )


def _vectorised_plate() -> CondIndepStackFrame | None:
    """The vectorised plate a guide call runs in (``Predictive(parallel=True)``'s draws or
    vectorised particles), or None; the guide has no plates of its own."""
    plates = [frame for frame in get_plates() if frame.vectorized]
    return plates[0] if plates else None


class EnsembleGuide(WeightGuide):
    """``members`` independently initialised MAP point estimates of every weight site.

    Member 0 starts at the model's own initial weights (where every other guide starts);
    member k >= 1 at a fresh draw of the model's initialisation under seed ``seed + k``
    (``seed`` default: drawn from torch's global generator, so a seeded run is reproducible).
    ``initial_values`` (one ``{site: value}`` per member) replaces those draws for models whose
    layers bayesrnn cannot re-initialise. The model must have no parameters of its own
    (``deterministic`` sites, a Student-t's degrees of freedom): they would be shared by all
    members.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        members: int = 5,
        seed: int | None = None,
        initial_values: Sequence[Mapping[str, torch.Tensor]] | None = None,
        name: str | None = None,
        **options,
    ) -> None:
        reject_unknown_options(
            type(self).__name__, options, ["members", "seed", "initial_values", "name"]
        )
        super().__init__(model, name)
        self.members = check_members(members)
        shared = [name for name, p in model.named_parameters() if p.requires_grad]
        if shared:
            raise ValueError(
                f"an ensemble trains every weight per member, but {shared} are parameters of the "
                "model itself, which all members would share; make them weight sites (in a run "
                "config: model.deterministic=[] and model.likelihood=gaussian)"
            )
        values = self._initial_values(initial_values, seed)
        self.weights = SiteParameters(
            {s: torch.stack([v[s] for v in values]) for s in self.site_names}
        )
        self._next_member = 0
        self._plate_nesting: int | None = None

    def _initial_values(self, given, seed) -> list[Mapping[str, torch.Tensor]]:
        if given is not None:
            if len(given) != self.members:
                raise ValueError(
                    f"initial_values has {len(given)} entries for {self.members} members"
                )
            for k, values in enumerate(given):
                for site in self.site_names:
                    if site not in values or values[site].shape != self.initial_value(site).shape:
                        shape = tuple(self.initial_value(site).shape)
                        raise ValueError(
                            f"initial_values[{k}] needs site {site!r} of shape {shape}"
                        )
            return list(given)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1 - self.members, ()))
        first = {s: self.initial_value(s) for s in self.site_names}
        return [first] + [
            member_initial_values(self.model, seed + k) for k in range(1, self.members)
        ]

    def member(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s weights, one tensor per site (the parameters, not copies)."""
        return {site: self.weights[site][k] for site in self.site_names}

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        plate = _vectorised_plate()
        if plate is not None:
            return self._members_in_plate(plate)
        if not self.training:
            k = self._next_member
            self._next_member = (k + 1) % self.members
            return {
                site: pyro.sample(site, Delta(value, event_dim=value.dim()))
                for site, value in self.member(k).items()
            }
        singletons = (1,) * self.plate_nesting(*args, **kwargs)
        values = {}
        for site in self.site_names:
            stacked = self.weights[site]
            event = stacked.shape[1:]
            value = stacked.reshape(self.members, *singletons, *event)
            values[site] = pyro.sample(site, Delta(value, event_dim=len(event)))
        return values

    def _members_in_plate(self, plate: CondIndepStackFrame) -> dict[str, torch.Tensor]:
        """Pyro's vectorised prediction draws S networks in one plate: draw i is member i mod K,
        so the S draws weigh the members equally, as S sequential calls in eval mode do."""
        if self.training:
            raise ValueError(
                "an ensemble's members are point estimates, trained as one batch of K networks: "
                "train with one particle (num_particles=1, or vectorize_particles=False)"
            )
        check_member_draws(self, plate.size)
        singletons = (1,) * (-plate.dim - 1)
        values = {}
        for site in self.site_names:
            stacked = self.weights[site]
            event = stacked.shape[1:]
            tiled = stacked.repeat(plate.size // self.members, *(1,) * len(event))
            value = tiled.reshape(plate.size, *singletons, *event)
            values[site] = pyro.sample(site, Delta(value, event_dim=len(event)))
        return values

    def plate_nesting(self, *args, **kwargs) -> int:
        """How many plate dims the model's data fill on these arguments (found by one traced
        call of the model at member 0, then kept): the members go left of them."""
        if self._plate_nesting is None:
            conditioned = poutine.condition(self.model, data=self.member(0))
            with torch.no_grad(), poutine.block(), torch.random.fork_rng(devices=[]):
                trace = poutine.trace(conditioned).get_trace(*args, **kwargs)
            dims = [
                -frame.dim
                for site in trace.nodes.values()
                if site["type"] == "sample"
                for frame in site["cond_indep_stack"]
                if frame.vectorized
            ]
            self._plate_nesting = max(dims, default=0)
        return self._plate_nesting

    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Member 0's weights: an ensemble has no single mean network (see the module notes)."""
        return self.member(0)

    def clip_member_gradients(self, max_norm: float) -> torch.Tensor:
        """Clip each member's gradient to norm ``max_norm`` on its own, as K separate runs
        would; returns the largest member norm before clipping (for the finiteness check)."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros(())
        squares = torch.stack([g.reshape(self.members, -1).square().sum(1) for g in grads])
        norms = squares.sum(0).sqrt()
        factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(factor.reshape(self.members, *(1,) * (g.dim() - 1)).to(g.dtype))
        return norms.max()
