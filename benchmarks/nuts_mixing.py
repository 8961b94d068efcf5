"""What limits NUTS on the ``symbols`` task of posterior_quality.py: measured, not assumed.

Four measurements on the task's model (1x3 LSTM, 120 weights, N(0, 1) prior) and its whole
training data as one batch (``--task symbols-small``: a fifth of the training text; ``--set``
changes the model, e.g. ``model.hidden_size=2``), each printed and written to
``--out``/results.json:

1. the cost of one potential-energy gradient, jit-traced and eager;
2. posterior modes: ``--modes`` prior draws, each optimised on the NUTS potential (Adam, then
   L-BFGS); per mode its potential U (minus the log joint density), the Hessian's spectrum
   (the curvature NUTS's step size must resolve), its Laplace log mass (how much of the
   posterior a Gaussian at the mode would hold) and its test NLL; and the total variation
   between the modes' test predictives (do the modes predict differently?);
3. with ``--samples``: one NUTS chain from each mode, its metric the mode's Laplace covariance
   (the inverse Hessian, eigenvalues clamped at the prior precision 1), kept through warm-up
   while the step size adapts; per chain the step size, tree depth, divergences, E-BFMI and
   log density, and over chains the predictive r-hat and the chains' predictive TV.

Chains started at modes are not the benchmark's reference: they answer whether the chains mix
*within* a mode and whether modes differ, not whether NUTS finds the posterior's mass.

    python benchmarks/nuts_mixing.py --out runs/nuts-mixing --modes 2 --warmup 50 \\
        --samples 50 --max-tree-depth 8
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from pyro import poutine
from pyro.infer.mcmc import MCMC
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad

sys.path.insert(0, str(Path(__file__).resolve().parent))
import posterior_quality as quality

from bayesrnn.app.config_files import resolve_config
from bayesrnn.app.nuts_task import nuts_data
from bayesrnn.app.setup import quiet_log, seed_everything, setup
from bayesrnn.data.streams import batchify
from bayesrnn.evaluation.arviz_mcmc import predictive_convergence
from bayesrnn.inference.mcmc import RecordingNUTS, prior_initial_params
from bayesrnn.inference.runtime.tbptt import Window, model_window

PRIOR_PRECISION = 1.0  # N(0, 1): no direction of the posterior is wider than the prior's


class FixedMetricNUTS(RecordingNUTS):
    """RecordingNUTS with a given dense inverse mass matrix, kept through warm-up (only the
    step size adapts)."""

    def __init__(self, model, inverse_mass: torch.Tensor, **kwargs) -> None:
        super().__init__(model, full_mass=True, adapt_mass_matrix=False, **kwargs)
        self._given_inverse_mass = inverse_mass

    def _initialize_adapter(self):
        super()._initialize_adapter()
        sites = tuple(sorted(self.initial_params))  # Pyro's order for one dense block
        self.mass_matrix_adapter.inverse_mass_matrix = {sites: self._given_inverse_mass}
        self._adapter.reset_step_size_adaptation(self._initial_params)


def task_setup(out: Path, data_dir: Path, task: str = "symbols", extra: tuple[str, ...] = ()):
    """The run setup of a symbols task of posterior_quality.py (its corpus written to
    ``out``/data), with ``extra`` settings after the task's own."""
    corpus = quality.write_symbol_corpus(
        data_dir, out / "data" / f"ptb-{task}", quality.SYMBOL_TASKS[task]
    )
    settings = [*quality.TASKS[task]["set"], "guide.name=nuts", *extra]
    config = resolve_config(None, None, settings, {"task": "lm", "data": {"source": str(corpus)}})
    return setup(config, quiet_log)


def gradient_ms(s, args, kwargs, jit: bool, repeats: int = 40) -> float:
    """Milliseconds of one potential energy and its gradient."""
    _, potential, _, _ = initialize_model(
        s.model, args, kwargs, jit_compile=jit, skip_jit_warnings=True
    )
    params = {k: v[0] for k, v in prior_initial_params(s.model, 1).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):  # the first traces
            potential_grad(potential, params)
        began = time.perf_counter()
        for _ in range(repeats):
            potential_grad(potential, params)
    return 1000 * (time.perf_counter() - began) / repeats


def find_mode(potential, start: dict, adam_steps: int, lbfgs_steps: int) -> dict:
    """A local minimum of the potential from ``start``: Adam to the basin, L-BFGS into it."""
    x = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    adam = torch.optim.Adam(list(x.values()), lr=0.02)
    for _ in range(adam_steps):
        adam.zero_grad()
        potential(x).backward()
        adam.step()
    lbfgs = torch.optim.LBFGS(list(x.values()), max_iter=lbfgs_steps, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        u = potential(x)
        u.backward()
        return u

    lbfgs.step(closure)
    return {k: v.detach() for k, v in x.items()}


def hessian(potential, point: dict) -> torch.Tensor:
    """The potential's Hessian at ``point``, flattened in sorted site order (float64)."""
    names = sorted(point)
    shapes = [point[n].shape for n in names]
    sizes = [point[n].numel() for n in names]

    def flat(v):
        return potential(
            {
                n: p.reshape(sh)
                for n, p, sh in zip(names, torch.split(v, sizes), shapes, strict=True)
            }
        )

    vector = torch.cat([point[n].reshape(-1) for n in names])
    h = torch.autograd.functional.hessian(flat, vector).double()
    return (h + h.T) / 2


def laplace_covariance(h: torch.Tensor) -> torch.Tensor:
    """The inverse Hessian with eigenvalues clamped at the prior precision (a mode found by a
    finite optimiser can have small negative ones)."""
    values, vectors = torch.linalg.eigh(h)
    return (vectors * (1.0 / values.clamp(min=PRIOR_PRECISION))) @ vectors.T


def laplace_log_mass(potential: float, eigenvalues: torch.Tensor) -> float:
    """The log posterior mass of a mode's Laplace approximation, up to the shared evidence:
    −U + (d/2) log 2π − ½ log det H, eigenvalues clamped as in :func:`laplace_covariance`."""
    clamped = eigenvalues.double().clamp(min=PRIOR_PRECISION)
    d = len(eigenvalues)
    return -potential + 0.5 * d * math.log(2 * math.pi) - 0.5 * float(clamped.log().sum())


def test_predictive(s, draws: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per draw the test predictive (draw, position, class) and the targets' log-likelihood
    (draw, position); the test stream cut into 10 sequences as the evaluation does."""
    data = batchify(s.corpus.test, 10)
    inputs, targets = model_window(s.model, data, Window(0, data.shape[0] - 1))
    probs, loglik = [], []
    s.model.eval()
    with torch.no_grad():
        for draw in draws:
            logits, _ = poutine.condition(s.model, data=draw)(inputs)
            log_p = torch.log_softmax(logits.double(), -1)
            probs.append(log_p.exp().reshape(-1, log_p.shape[-1]).numpy())
            loglik.append(log_p.gather(-1, targets.unsqueeze(-1)).reshape(-1).numpy())
    return np.stack(probs), np.stack(loglik), targets.reshape(-1).numpy()


def tv_matrix(predictives: list[np.ndarray]) -> list[list[float]]:
    """Mean total variation over test positions between each pair of predictives."""
    return [[float(0.5 * np.abs(p - q).sum(-1).mean()) for q in predictives] for p in predictives]


def nll(predictive: np.ndarray, targets: np.ndarray) -> float:
    return float(-np.log(predictive[np.arange(len(targets)), targets]).mean())


def bfmi(energy: np.ndarray) -> float:
    return float(np.sum(np.diff(energy) ** 2) / np.sum((energy - energy.mean()) ** 2))


def sample_from_modes(s, args, kwargs, modes, covariances, a) -> dict:
    """One NUTS chain per mode with that mode's Laplace metric; per-chain and joint facts."""
    chains, results = [], {}
    for c, (mode, covariance) in enumerate(zip(modes, covariances, strict=True)):
        kernel = FixedMetricNUTS(
            s.model,
            covariance.float(),
            max_tree_depth=a.max_tree_depth,
            target_accept_prob=a.target_accept,
            jit_compile=True,
            ignore_jit_warnings=True,
        )
        mcmc = MCMC(
            kernel,
            num_samples=a.samples,
            warmup_steps=a.warmup,
            initial_params=dict(mode),
            disable_progbar=not a.progress,
        )
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mcmc.run(*args, **kwargs)
        seconds = time.perf_counter() - began
        stats = {k: np.asarray(v) for k, v in mcmc.diagnostics()["sample_stats"]["chain 0"].items()}
        samples = mcmc.get_samples()
        draws = [{k: v[n] for k, v in samples.items()} for n in range(a.samples)]
        chains.append((stats, draws))
        lp = stats["lp"]
        third = max(1, len(lp) // 3)
        results[f"chain {c}"] = {
            "seconds": seconds,
            "step_size": float(stats["step_size"][0]),
            "mean_tree_depth": float(stats["tree_depth"].mean()),
            "divergences": int(stats["diverging"].sum()),
            "mean_acceptance_rate": float(stats["acceptance_rate"].mean()),
            "bfmi": bfmi(stats["energy"]),
            "lp_mean": float(lp.mean()),
            "lp_sd": float(lp.std()),
            "lp_first_third": float(lp[:third].mean()),
            "lp_last_third": float(lp[-third:].mean()),
        }
        print(f"chain {c}: {results[f'chain {c}']}", flush=True)
    predictive = [test_predictive(s, draws) for _, draws in chains]
    loglik = np.stack([ll for _, ll, _ in predictive])
    targets = predictive[0][2]
    lp = np.stack([stats["lp"] for stats, _ in chains])
    per_chain = [probs.mean(0) for probs, _, _ in predictive]
    pooled = np.mean(per_chain, 0)
    convergence = predictive_convergence({"log_likelihood": loglik}, 0, loglik.size)
    lp_convergence = predictive_convergence({"lp": lp}, 0, lp.size)
    results["joint"] = {
        "rhat_max_predictive": convergence["rhat_max_predictive"],
        "ess_min_predictive": convergence["ess_min_predictive"],
        "rhat_lp": lp_convergence["rhat_max_predictive"],
        "ess_lp": lp_convergence["ess_min_predictive"],
        "chain_test_nll": [nll(p, targets) for p in per_chain],
        "pooled_test_nll": nll(pooled, targets),
        "chain_tv": tv_matrix(per_chain),
    }
    print(f"chains together: {results['joint']}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=quality.ROOT.parent / "shared" / "data")
    parser.add_argument("--task", choices=list(quality.SYMBOL_TASKS), default="symbols")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a further setting"
    )
    parser.add_argument("--modes", type=int, default=2, help="prior draws optimised to modes")
    parser.add_argument("--adam-steps", type=int, default=2000)
    parser.add_argument("--lbfgs-steps", type=int, default=600)
    parser.add_argument("--samples", type=int, default=0, help="NUTS draws per chain (0: none)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--max-tree-depth", type=int, default=8)
    parser.add_argument("--target-accept", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    a = parser.parse_args()
    for name in ("modes", "adam_steps", "lbfgs_steps", "warmup", "max_tree_depth"):
        if getattr(a, name) < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if a.samples < 0 or not 0 < a.target_accept < 1:
        parser.error("--samples must be >= 0 and --target-accept in (0, 1)")
    if not (a.data_dir / "ptb_char").is_dir():
        parser.error(f"no ptb_char/ in {a.data_dir}: give --data-dir")
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    s = task_setup(a.out, a.data_dir, a.task, tuple(a.set))
    args, kwargs = nuts_data(s)
    results: dict = {"settings": {k: str(v) for k, v in vars(a).items()}}
    results["gradient_ms"] = {
        "jit": gradient_ms(s, args, kwargs, jit=True),
        "eager": gradient_ms(s, args, kwargs, jit=False),
    }
    print(f"one potential gradient: {results['gradient_ms']} ms", flush=True)
    _, jitted, _, _ = initialize_model(s.model, args, kwargs, jit_compile=True)
    _, eager, _, _ = initialize_model(s.model, args, kwargs, jit_compile=False)
    seed_everything(a.seed)
    starts = prior_initial_params(s.model, a.modes)
    modes, covariances, mode_facts = [], [], []
    for c in range(a.modes):
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mode = find_mode(jitted, {k: v[c] for k, v in starts.items()}, a.adam_steps,
                             a.lbfgs_steps)  # fmt: skip
        h = hessian(eager, mode)
        values = torch.linalg.eigvalsh(h)
        modes.append(mode)
        covariances.append(laplace_covariance(h))
        mode_facts.append(
            {
                "potential": float(eager(mode)),
                "hessian_min": float(values.min()),
                "hessian_max": float(values.max()),
                "hessian_below_prior": int((values < PRIOR_PRECISION).sum()),
                "laplace_log_mass": laplace_log_mass(float(eager(mode)), values),
                "seconds": time.perf_counter() - began,
            }
        )
    probs, _, targets = test_predictive(s, modes)
    for facts, p in zip(mode_facts, probs, strict=True):
        facts["test_nll"] = nll(p, targets)
    results["modes"] = mode_facts
    results["mode_tv"] = tv_matrix(list(probs))
    for c, facts in enumerate(mode_facts):
        print(f"mode {c}: {facts}", flush=True)
    print("TV between the modes' test predictives:", flush=True)
    for row in results["mode_tv"]:
        print("  " + " ".join(f"{v:.3f}" for v in row), flush=True)
    (a.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if a.samples:
        results["nuts"] = sample_from_modes(s, args, kwargs, modes, covariances, a)
        (a.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"results in {a.out}/results.json")


if __name__ == "__main__":
    main()
