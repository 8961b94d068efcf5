"""A trained run's per-draw predictive on a split: what the posterior-quality distances compare.

:func:`run_predictive` goes through the same Monte Carlo path as the run's own evaluation, so
every guide the command trains is read the same way, and a guide that replays a finite set of
draws (MCMC samples, ensemble members) is read in full when it says how many it holds.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from bayesrnn.data.transforms import TargetUnits
from bayesrnn.evaluation.posterior_quality import (
    categorical_distances,
    categorical_scores,
    continuous_distances,
    continuous_scores,
)
from bayesrnn.models.regressor import Forecast

if TYPE_CHECKING:  # the app imports this package: no import of it at load time
    from bayesrnn.app.trained_run import TrainedRun

__all__ = ["CATEGORICAL_TASKS", "SPLITS", "RunPredictive", "run_predictive"]

SPLITS = ("valid", "test")
QUANTILES_PER_DRAW = 20  # samples per draw of a transformed target, in the data's units
CATEGORICAL_TASKS = ("classify", "lm")


@dataclass(frozen=True, eq=False)
class RunPredictive:
    """A run's per-draw predictive on a split, and what it predicts.

    ``draws``: (S, N, C) class probabilities (``task="classify"``; ``task="lm"``: next-symbol
    probabilities, one row per predicted position of the split's stream), or a Forecast of
    (S, N, D) Gaussian/Student-t parameters in the data's units (``task="forecast"``; its
    ``likelihood`` names the family); ``observed``: the N labels (or next symbols), or the
    (N, D) observed values. A forecaster whose targets were transformed (``data.transform``)
    has no Gaussian or Student-t in the data's units: its ``draws`` are then (S·K, N, D)
    samples in the data's units, the K = 20 quantiles (k + ½)/K of each draw's predictive
    mapped back (``samples_per_draw`` = K; the NLL of :meth:`scores` is then NaN).
    ``chains``: the number of MCMC chains the draws come from in order (None when the guide
    reports none).
    """

    task: str
    guide: str
    split: str
    draws: Tensor | Forecast
    observed: Tensor
    chains: int | None = None
    samples_per_draw: int = 1

    @property
    def num_samples(self) -> int:
        """The number of posterior draws (weight sets) behind ``draws``."""
        loc = self.draws.loc if isinstance(self.draws, Forecast) else self.draws
        return int(loc.shape[0]) // self.samples_per_draw

    def distances(
        self, reference: RunPredictive, levels: Sequence[float] = (0.5, 0.9)
    ) -> dict[str, float]:
        """:func:`categorical_distances` or :func:`continuous_distances` to ``reference``."""
        if not isinstance(reference, RunPredictive) or reference.task != self.task:
            got = getattr(reference, "task", type(reference).__name__)
            raise ValueError(f"reference must be a {self.task} RunPredictive, got {got}")
        if reference.split != self.split or not torch.equal(reference.observed, self.observed):
            raise ValueError(
                f"the reference predicts other values ({reference.split} split) than this "
                f"run ({self.split} split): runs of one data set and split are needed"
            )
        if self.task in CATEGORICAL_TASKS:
            return categorical_distances(self.draws, reference.draws)
        return continuous_distances(self.draws, reference.draws, self.observed, levels)

    def scores(self, levels: Sequence[float] = (0.5, 0.9)) -> dict[str, float]:
        """:func:`categorical_scores` or :func:`continuous_scores` against ``observed``."""
        if self.task in CATEGORICAL_TASKS:
            return categorical_scores(self.draws, self.observed)
        return continuous_scores(self.draws, self.observed, levels)


def run_predictive(
    run: TrainedRun | str | os.PathLike[str], split: str = "test", num_samples: int | None = None
) -> RunPredictive:
    """The per-draw predictive of a trained run (a ``load_run`` result or its directory) on
    ``split``, through the same Monte Carlo path as the run's own evaluation.

    Each of the S draws is one weight set from the guide (with the model's dropout masks on, as
    Gal's guide needs), whatever the guide: a variational posterior, a point estimate (S equal
    draws), or a guide holding a finite set of draws. ``num_samples=None`` reads a guide that
    can replay its stored draws in order (a ``replay()`` context and a ``total`` count, as the
    NUTS guide has) in full, chain after chain (``chains``: its ``num_chains``), except for a
    language model, where they are drawn at random; a guide with ``members`` (an ensemble,
    whose draws cycle through them) or ``num_draws`` gives that many draws; any other guide
    gives the run's ``evaluation.mc_samples``. The generators
    are seeded as the run's evaluation seeds them (a forecaster's MC metrics on its evaluation
    split are reproduced with its ``mc_samples``). A language model's stream is cut as its
    evaluation cuts it (``trainer.eval_batch_size`` parallel sequences, ``trainer.bptt`` windows,
    ``evaluation.max_tokens``), each draw keeping its weights for the whole stream; its
    (S, N, V) probabilities are held in memory, so keep the stream or the vocabulary small.
    """
    from bayesrnn.app.run_dir import JobError
    from bayesrnn.app.trained_run import TrainedRun, load_run

    if not isinstance(run, TrainedRun):
        run = load_run(run)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    task = run.config.task
    plan = _draw_plan(run, num_samples)
    with plan.order():
        if task == "classify":
            draws, observed = _classifier_draws(run, split, plan.count)
        elif task == "forecast":
            draws, observed = _forecast_draws(run, split, plan.count)
        elif task == "lm":
            draws, observed = _language_model_draws(run, split, plan.count)
        else:
            raise JobError(f"run_predictive cannot read a {task} run ({run.path})")
    per_draw = (
        QUANTILES_PER_DRAW if task == "forecast" and run.config.data.transform != "none" else 1
    )
    return RunPredictive(task, run.config.guide.name, split, draws, observed, plan.chains, per_draw)


@dataclass(frozen=True)
class _DrawPlan:
    """How many draws to take, inside which context, from how many chains (in order)."""

    count: int
    order: Callable[[], AbstractContextManager] = contextlib.nullcontext
    chains: int | None = None


def _draw_plan(run, num_samples: int | None) -> _DrawPlan:
    """All of a replayable guide's stored draws in order (chains kept); else ``num_samples``
    draws, by default as many as the guide holds (ensemble members) or ``mc_samples``."""
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
    ):
        raise ValueError(f"num_samples must be None or an integer >= 1, got {num_samples!r}")
    guide = run.guide
    stored = (
        _whole(getattr(guide, "total", None)) if callable(getattr(guide, "replay", None)) else None
    )
    # evaluate_stream draws once more to test whether the draws differ: no replay there
    if stored is not None and num_samples in (None, stored) and run.config.task != "lm":
        return _DrawPlan(stored, guide.replay, _whole(getattr(guide, "num_chains", None)))
    if num_samples is not None:
        return _DrawPlan(num_samples)
    for own in (
        stored,
        _whole(getattr(guide, "members", None)),
        _whole(getattr(guide, "num_draws", None)),
    ):
        if own is not None:
            return _DrawPlan(own)
    return _DrawPlan(run.config.evaluation.mc_samples)


def _whole(value: object) -> int | None:
    """``value`` if it is a whole number >= 1 (a guide's draw or chain count), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def _classifier_draws(run, split: str, count: int) -> tuple[Tensor, Tensor]:
    """(S, N, C) probabilities of every sentence of ``split``, in one padded batch so that each
    draw is one weight set for the whole split."""
    from bayesrnn.app.run_data import check_data, read_run_data
    from bayesrnn.app.run_dir import RunDir
    from bayesrnn.app.setup import load_data, seed_everything
    from bayesrnn.data import pad_batch, reencode_corpus
    from bayesrnn.inference import predict_sequences

    config = run.config
    corpus = reencode_corpus(load_data(config), run.vocabulary)
    saved = read_run_data(RunDir(run.path))
    if saved is not None:
        check_data(saved, corpus, (split,), RunDir(run.path))
    part = getattr(corpus, split)
    pad = run.vocabulary.pad_id or 0
    tokens, lengths = pad_batch(list(part.sequences), pad_id=pad)
    device = torch.device(config.trainer.device)
    seed_everything(config.trainer.seed + 1)
    prediction = predict_sequences(
        run.model, run.guide, tokens.to(device), lengths, num_samples=count
    )
    probs = prediction.draw_log_probs.detach().double().exp().cpu()
    return probs / probs.sum(-1, keepdim=True), part.labels.clone()


def _forecast_draws(run, split: str, count: int) -> tuple[Forecast | Tensor, Tensor]:
    """Forecast (S, N, D) of ``split``'s steps in the data's units, and the observed values;
    for a transformed target, (S·K, N, D) samples in the data's units instead (see
    :class:`RunPredictive`)."""
    from bayesrnn.app.forecast_task import forecast_range, in_units
    from bayesrnn.app.setup import load_data, seed_everything
    from bayesrnn.evaluation.forecast import predict_series

    config = run.config
    corpus = load_data(config)
    rows, start = forecast_range(corpus, split)
    seed_everything(config.trainer.seed + 1)
    draws = predict_series(run.model, run.guide, rows, start, count)
    observed = corpus.observed(start, rows.shape[0])
    if corpus.transform.kind != "none":
        return transformed_draws(draws.map(lambda t: t.cpu()), corpus.target_units), observed
    forecast = in_units(draws.map(lambda t: t.cpu()), corpus)
    return forecast.map(lambda t: t.double()), observed


def transformed_draws(
    draws: Forecast, units: TargetUnits, per_draw: int = QUANTILES_PER_DRAW
) -> Tensor:
    """Samples (S·K, N, D) in the data's units of draws (S, N, D) over the model's units: the
    K quantiles (k + ½)/K of each draw's predictive, mapped back through the increasing
    x = g⁻¹(z·scale + mean), which keeps quantiles. Each draw's law is thereby represented
    with no Monte Carlo noise; the samples of draw s are rows s·K … s·K + K − 1."""
    levels = (torch.arange(per_draw, dtype=torch.float64) + 0.5) / per_draw
    shape = (per_draw, *([1] * draws.loc.dim()))
    quantiles = draws.map(torch.Tensor.double).icdf(levels.view(shape))  # (K, S, N, D)
    samples = units.to_data(quantiles).transpose(0, 1)  # (S, K, N, D)
    return samples.reshape(-1, *samples.shape[2:])


def _language_model_draws(run, split: str, count: int) -> tuple[Tensor, Tensor]:
    """(S, N, V) next-symbol probabilities of the split's stream and the N symbols predicted,
    in the order of the evaluation's windows (step-major over the parallel sequences)."""
    from bayesrnn.app.run_data import check_data, read_run_data
    from bayesrnn.app.run_dir import RunDir
    from bayesrnn.app.setup import load_data, seed_everything
    from bayesrnn.data import reencode_corpus
    from bayesrnn.inference import evaluate_stream

    config, tr = run.config, run.config.trainer
    corpus = reencode_corpus(load_data(config), run.vocabulary)
    saved = read_run_data(RunDir(run.path))
    if saved is not None:
        check_data(saved, corpus, (split,), RunDir(run.path))
    ids = getattr(corpus, split)
    if config.evaluation.max_tokens is not None:
        ids = ids[: config.evaluation.max_tokens]
    draws, targets = [], []

    def collect(window_targets: Tensor, _mixture: Tensor, window_draws: Tensor | None) -> None:
        targets.append(window_targets.reshape(-1).cpu())
        probs = window_draws.exp().to("cpu", torch.float64)
        draws.append(probs.reshape(probs.shape[0], -1, probs.shape[-1]))

    seed_everything(tr.seed + 1)
    evaluate_stream(
        run.model,
        run.guide,
        ids,
        batch_size=max(1, min(tr.eval_batch_size, ids.numel() // 2)),
        bptt=tr.bptt,
        num_samples=count,
        on_window=collect,
        redraw="stream",
    )
    probs = torch.cat(draws, 1)
    return probs / probs.sum(-1, keepdim=True), torch.cat(targets)
