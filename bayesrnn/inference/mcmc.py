"""NUTS over a bayesrnn model's weight sites: a reference posterior for small models.

Every weight of a bayesrnn model is a Pyro sample site, so Pyro's ``MCMC(NUTS(model))`` samples
its posterior as it is. :func:`run_nuts` adds what the reference needs: chains started from
prior draws (NUTS's default, uniform on (−2, 2), saturates an RNN), the per-draw statistics
ArviZ reads (:class:`RecordingNUTS`), and draws with a chain dim.

HMC needs the full-data likelihood: the model must be called on the *whole* training data as
one batch, never on truncated-BPTT windows (a window's likelihood is not the posterior's).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyro
import torch
from pyro.infer.mcmc import MCMC, NUTS
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad

from bayesrnn.models.bayesian import site_prior, weight_sites

__all__ = [
    "MAX_NUTS_WEIGHTS",
    "STAT_NAMES",
    "NUTSResult",
    "RecordingNUTS",
    "check_nuts_size",
    "nuts_weight_count",
    "run_nuts",
]

# The largest model NUTS is offered for, in weights (sampled values), chosen from the cost
# measured on this project's 2 shared CPU cores with the sunspots forecaster (benchmarks/
# nuts_cost.py and the README's NUTS section). The cost of an iteration is its leapfrog steps,
# 2^tree depth, times ~15-20 ms (jitted; overhead-bound: 1x2 and 1x4 LSTMs cost the same per
# step), and these RNN posteriors need deep trees: 1x4 (122 weights) ran at mean depth 7.8,
# 4.3 s an iteration eager, 3.5 jitted; 1x2 (46 weights) hit depth 7 at 0.9 s an iteration.
# 4 chains of 200 iterations then take ~10 min (1x2) to ~30 min (1x4) one chain after another:
# beyond ~150 weights a run no longer finishes in minutes here.
MAX_NUTS_WEIGHTS = 150

# jit_compile=True by default, measured (benchmarks/nuts_cost.py settings, one chain of 15 + 15
# iterations at max_tree_depth=4, so both do the same 16 leapfrog steps an iteration; sunspots
# forecaster, 2 busy CPU cores, two repeats): 1x2 LSTM 0.65/0.54 s an iteration eager against
# 0.27/0.31 jitted; 1x4 LSTM 0.49/0.50 against 0.30/0.24. One gradient of the potential: 25 ms
# eager, 8 ms jitted (1x2), 25 and 7 ms (1x4); the trace costs ~0.6 s once, and gives the same
# potential and gradients (to 5e-4 on a potential of 5,000).
STAT_NAMES = ("diverging", "energy", "tree_depth", "step_size", "acceptance_rate", "lp")


def nuts_weight_count(model: torch.nn.Module) -> int:
    """How many values NUTS samples: every weight site's elements."""
    return sum(value.numel() for value in weight_sites(model).values())


def check_nuts_size(model: torch.nn.Module, limit: int = MAX_NUTS_WEIGHTS) -> int:
    """The model's weight count, or a ValueError naming it when it exceeds ``limit``."""
    count = nuts_weight_count(model)
    if count == 0:
        raise ValueError("NUTS needs a model with Bayesian weight sites (a prior)")
    if count > limit:
        raise ValueError(
            f"the model has {count:,} weights; NUTS is offered up to {limit:,} (it does not mix "
            "on more in minutes): use a smaller model (model.hidden_size) or a variational guide"
        )
    return count


class RecordingNUTS(NUTS):
    """Pyro's NUTS that records, for each iteration after warm-up, the statistics ArviZ names
    ``sample_stats``: ``diverging``, ``energy`` (the Hamiltonian at the iteration's start:
    kinetic energy of the fresh momentum plus the potential energy), ``tree_depth`` (doublings),
    ``step_size``, ``acceptance_rate`` (mean acceptance probability over the tree) and ``lp``
    (the log joint density of the draw, up to a constant: minus its potential energy).

    Pyro keeps none of these per draw; they travel back (from a worker process too) through
    :meth:`diagnostics` under ``"sample_stats"``.
    """

    def setup(self, warmup_steps, *args, **kwargs):
        self._stats: dict[str, list[float]] = {name: [] for name in STAT_NAMES}
        self._depth = 0
        self._top = None
        super().setup(warmup_steps, *args, **kwargs)

    def _sample_r(self, name):
        r, r_unscaled = super()._sample_r(name)
        potential = self._fetch_from_cache()[1]
        self._energy = float(self._kinetic_energy(r_unscaled) + potential)
        return r, r_unscaled

    def _build_tree(self, z, r, z_grads, log_slice, direction, tree_depth, energy_current):
        self._depth += 1
        try:
            tree = super()._build_tree(
                z, r, z_grads, log_slice, direction, tree_depth, energy_current
            )
        finally:
            self._depth -= 1
        if self._depth == 0:  # one doubling of the trajectory
            self._top["doublings"] += 1
            self._top["accept"] += float(tree.sum_accept_probs)
            self._top["proposals"] += int(tree.num_proposals)
        return tree

    def sample(self, params):
        warm = self._t < self._warmup_steps
        divergences = len(self._divergences)
        step_size = float(self.step_size)
        self._top = {"doublings": 0, "accept": 0.0, "proposals": 0}
        z = super().sample(params)
        if not warm:
            top, stats = self._top, self._stats
            stats["diverging"].append(float(len(self._divergences) > divergences))
            stats["energy"].append(self._energy)
            stats["tree_depth"].append(float(top["doublings"]))
            stats["step_size"].append(step_size)
            stats["acceptance_rate"].append(top["accept"] / max(1, top["proposals"]))
            stats["lp"].append(-float(self._fetch_from_cache()[1]))
        return z

    def diagnostics(self):
        return {**super().diagnostics(), "sample_stats": dict(self._stats)}


@dataclass
class NUTSResult:
    """Draws ``samples[site]`` (chains, draws, *site shape), ``stats[name]`` (chains, draws)
    for each of :data:`STAT_NAMES`, the sampling time in seconds, and whether the potential
    was jit-compiled."""

    samples: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor]
    seconds: float
    jit_compile: bool = False

    @property
    def num_chains(self) -> int:
        return int(next(iter(self.stats.values())).shape[0])

    @property
    def num_draws(self) -> int:
        return int(next(iter(self.stats.values())).shape[1])


def prior_initial_params(model: torch.nn.Module, num_chains: int) -> dict[str, torch.Tensor]:
    """One prior draw per chain and weight site, stacked (chains, *shape): dispersed starts
    for r-hat, at the scale the network was built for."""
    sites = weight_sites(model)
    out = {}
    for site, value in sites.items():
        prior = site_prior(model, site).distribution(value.shape, value.device, value.dtype)
        out[site] = prior.sample((num_chains,))
    return out


def run_nuts(
    model: Callable,
    args: tuple,
    kwargs: Mapping[str, object] | None = None,
    *,
    num_chains: int = 4,
    num_samples: int = 100,
    warmup_steps: int = 100,
    max_tree_depth: int = 10,
    target_accept: float = 0.8,
    full_mass: bool = False,
    jit_compile: bool = True,
    progress: bool = True,
    initial_params: Mapping[str, torch.Tensor] | None = None,
    weights_of: torch.nn.Module | None = None,
) -> NUTSResult:
    """NUTS draws of ``model(*args, **kwargs)``'s latent sites, chains started from the prior.

    ``args`` must hold the whole training data (one batch: see the module docstring). Chains
    run in parallel processes when Pyro can (``num_chains`` below the CPU count), otherwise one
    after another; ``progress`` shows Pyro's bar per chain. ``weights_of`` (default ``model``)
    is the bayesrnn module whose weight sites give the prior starts; ``initial_params`` (each
    (chains, *shape)) replaces them. ``jit_compile`` traces the potential energy once: about twice
    as fast an iteration on small RNNs on a CPU; False runs the model eagerly at every step.
    ``full_mass`` adapts a dense mass matrix during warm-up instead of a diagonal one.
    """
    kwargs = dict(kwargs or {})
    if initial_params is None:
        owner = model if weights_of is None else weights_of
        initial_params = prior_initial_params(owner, num_chains)
    if jit_compile:
        jit_compile = jit_traces(model, args, kwargs, {k: v[0] for k, v in initial_params.items()})
    if num_chains == 1:  # MCMC adds the chain dim itself for one chain
        initial_params = {k: v[0] for k, v in initial_params.items()}
    kernel = RecordingNUTS(
        model,
        max_tree_depth=max_tree_depth,
        target_accept_prob=target_accept,
        jit_compile=jit_compile,
        ignore_jit_warnings=True,
        full_mass=full_mass,
    )
    with warnings.catch_warnings():  # "chains will be drawn sequentially": said in the docs
        warnings.filterwarnings("ignore", message="num_chains=", category=UserWarning)
        mcmc = MCMC(
            kernel,
            num_samples=num_samples,
            warmup_steps=warmup_steps,
            num_chains=num_chains,
            initial_params=dict(initial_params),
            disable_progbar=not progress,
        )
    began = time.perf_counter()
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=FutureWarning)
        mcmc.run(*args, **kwargs)
    seconds = time.perf_counter() - began
    samples = {k: v.detach() for k, v in mcmc.get_samples(group_by_chain=True).items()}
    per_chain = mcmc.diagnostics()["sample_stats"]
    stats = {
        name: torch.tensor(
            [per_chain[f"chain {c}"][name] for c in range(num_chains)], dtype=torch.float64
        )
        for name in STAT_NAMES
    }
    return NUTSResult(samples, stats, seconds, jit_compile)


def jit_traces(model: Callable, args: tuple, kwargs: Mapping, params: Mapping) -> bool:
    """Whether the potential energy of ``model`` traces with ``torch.jit`` (the classifier's
    data-dependent indexing by sequence lengths does not: it then runs eagerly)."""
    _, potential_fn, _, _ = initialize_model(
        model, args, dict(kwargs), jit_compile=True, skip_jit_warnings=True
    )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.trace.*")
            for _ in range(2):  # the first call traces, the second runs the compiled function
                potential_grad(potential_fn, {k: v.detach() for k, v in params.items()})
    except RuntimeError:
        return False
    return True
