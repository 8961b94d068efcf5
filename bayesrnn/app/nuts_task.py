"""``guide.name = "nuts"`` in a run: NUTS over the whole training data, stored in the checkpoint.

NUTS needs the full-data likelihood, so the model sees the training data as one batch: the
language model's and forecaster's training stream cut into ``trainer.batch_size`` parallel
sequences walked from start to end (the likelihood TBPTT training sums window by window, with
the state carried, but in one call), the classifier's training sentences padded into one batch.
There are no windows, epochs or optimiser; ``trainer.seed`` seeds the chains.

A run is written once, when every chain has finished: a killed run starts again from the
beginning (NUTS runs are offered only for models that sample in minutes). The draws and the
sampler's per-draw statistics live in ``checkpoint.pt`` as the buffers of the
:class:`~bayesrnn.inference.guides.SampledPosterior` guide (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from pyro import poutine

from bayesrnn.app.run_data import checkpoint_tags
from bayesrnn.app.run_dir import RunDir
from bayesrnn.app.setup import Log, Setup, padding_id, seed_everything
from bayesrnn.data import pad_batch
from bayesrnn.data.streams import batchify
from bayesrnn.inference.mcmc import nuts_weight_count, run_nuts
from bayesrnn.inference.runtime.tbptt import Window, model_window
from bayesrnn.inference.training.checkpoint import save_checkpoint

__all__ = ["is_nuts_history", "nuts_data", "nuts_datatree", "nuts_metrics", "train_nuts"]


def nuts_data(s: Setup) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of the model call on the whole training data (one batch)."""
    device = torch.device(s.config.trainer.device)
    if s.config.task == "classify":
        train = s.corpus.train
        tokens, lengths = pad_batch(list(train.sequences), pad_id=padding_id(s.corpus))
        return (tokens.to(device), train.labels.to(device), lengths), {}
    data = batchify(s.corpus.train, s.config.trainer.batch_size)
    inputs, targets = model_window(s.model, data, Window(0, data.shape[0] - 1))
    return (inputs.to(device), targets.to(device)), {}


def is_nuts_history(history: dict) -> bool:
    """Whether a run's history is a NUTS run's (no training windows, a ``mcmc`` record)."""
    return "mcmc" in history


def _history(s: Setup, seconds: float, stats: dict[str, torch.Tensor], jit_compile: bool) -> dict:
    g = s.config.guide
    return {
        "elbo": [],
        "nll": [],
        "kl": [],
        "tokens": [],
        "epoch_lr": [],
        "epoch_steps": [],
        "epoch_seconds": [seconds],
        "mcmc": {
            "method": "nuts",
            "num_chains": g.num_chains,
            "num_samples": g.num_samples,
            "warmup_steps": g.warmup_steps,
            "max_tree_depth": g.max_tree_depth,
            "target_accept": g.target_accept,
            "full_mass": g.full_mass,
            "weights": nuts_weight_count(s.model),
            "seconds": seconds,
            "jit_compile": jit_compile,
            "seconds_per_chain": seconds / g.num_chains,
            "divergences": int(stats["diverging"].sum()),
            "mean_tree_depth": float(stats["tree_depth"].mean()),
            "mean_acceptance_rate": float(stats["acceptance_rate"].mean()),
        },
    }


def train_nuts(s: Setup, run: RunDir, log: Log, payload: dict | None = None) -> dict:
    """Sample the posterior with NUTS and write the checkpoint; a finished run (``payload``
    restored from its checkpoint) is returned as it is."""
    if payload is not None and bool(s.guide.filled):
        log(f"{run.checkpoint} already holds the NUTS draws")
        return dict(payload["history"])
    g, tr = s.config.guide, s.config.trainer
    args, kwargs = nuts_data(s)
    weights = nuts_weight_count(s.model)
    log(
        f"NUTS: {g.num_chains} chain(s) x ({g.warmup_steps} warm-up + {g.num_samples} draws) "
        f"over {weights} weights, the whole training data as one batch, "
        f"{'dense' if g.full_mass else 'diagonal'} mass matrix"
    )
    seed_everything(tr.seed)
    result = run_nuts(
        s.model,
        args,
        kwargs,
        num_chains=g.num_chains,
        num_samples=g.num_samples,
        warmup_steps=g.warmup_steps,
        max_tree_depth=g.max_tree_depth,
        target_accept=g.target_accept,
        full_mass=g.full_mass,
        progress=tr.progress,
    )
    s.guide.store(result.samples, result.stats)
    history = _history(s, result.seconds, result.stats, result.jit_compile)
    divergences = history["mcmc"]["divergences"]
    log(
        f"NUTS finished in {result.seconds:.1f} s ({result.seconds / g.num_chains:.1f} s a "
        f"chain); {divergences} divergent transition(s)"
    )
    save_checkpoint(
        run.checkpoint,
        {
            **checkpoint_tags(s.corpus),
            "model": s.model.state_dict(),
            "guide": s.guide.state_dict(),
            "position": (0, 0),
            "history": history,
        },
    )
    return history


# --- evaluation and export ----------------------------------------------------------------------


def _forecast_means(s: Setup) -> np.ndarray:
    """Each stored draw's one-step predictive mean of the evaluation split, (chain, draw, step,
    target), in the scaled units the model sees."""
    from bayesrnn.app.forecast_task import forecast_range
    from bayesrnn.evaluation.forecast import series_inputs

    guide = s.guide
    rows, start = forecast_range(s.corpus, s.config.evaluation.split)
    device = torch.device(s.config.trainer.device)
    inputs, _ = series_inputs(s.model, rows.to(device))
    batch_dim = 0 if getattr(s.model, "batch_first", False) else 1
    means = []
    was_training = s.model.training
    s.model.eval()
    try:
        with torch.no_grad():
            for index in range(guide.total):
                forecast, _ = poutine.condition(s.model, data=guide.draw(index))(inputs)
                loc = forecast.loc.select(batch_dim, 0)[start - 1 :]
                means.append(loc.double().cpu().numpy())
    finally:
        s.model.train(was_training)
    return np.stack(means).reshape(guide.num_chains, guide.num_samples, *means[0].shape)


def nuts_datatree(s: Setup, history: dict | None) -> xr.DataTree:
    """The run's ArviZ tree over every stored draw, chains kept, with the sampler's
    statistics and ``evaluation.export_samples`` prior draws (``prior``, ``prior_predictive``)."""
    from bayesrnn.app.export import task_exporter
    from bayesrnn.evaluation.arviz_mcmc import PriorDraws, mcmc_datatree

    seed_everything(s.config.trainer.seed + 2)
    return mcmc_datatree(
        task_exporter(s, None),
        s.guide,
        prior=PriorDraws(s.model),
        prior_samples=s.config.evaluation.export_samples,
        attrs={"weights": nuts_weight_count(s.model)},
    )


def nuts_metrics(s: Setup, history: dict, tree: xr.DataTree, log: Log) -> dict:
    """``metrics.json``'s ``mcmc`` record: the sampler's settings and cost, r-hat and ESS of
    the predictions on the evaluation split, divergences, and a warning when they fail."""
    from bayesrnn.evaluation.arviz_mcmc import predictive_convergence

    quantities = {"log_likelihood": tree["log_likelihood"]["obs"].values}
    if s.config.task == "forecast":
        quantities["predictive_mean"] = _forecast_means(s)
    stats = s.guide.sample_stats
    convergence = predictive_convergence(quantities, int(stats["diverging"].sum()), s.guide.total)
    if convergence["warning"]:
        log(f"warning: {convergence['warning']}")
    return {**history.get("mcmc", {}), **convergence}
