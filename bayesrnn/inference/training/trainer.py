"""SVI over truncated-BPTT windows with the KL split over the windows of an epoch.

The stream is split into B parallel sequences; each epoch walks them in windows of T steps,
carrying the hidden state (detached) from window to window and resetting it at the epoch's
start. Window c of an epoch with C windows minimises

    −log p(y_c | θ, x_c, s_{c−1}) + KL[q‖p] / C

(Fortunato et al. 2017, eqs. 4–5): the likelihood summed over the window's B·T tokens, the KL
through :func:`bayesrnn.inference.scale_kl`. The optimiser sees this divided by B, the
per-sequence normalisation that Zaremba's lr = 1 and clipping at 5 assume.

A run that diverges stops with :class:`NonFiniteLossError`: at once for a NaN or infinite loss,
gradient or parameter, and as its subclass :class:`DivergenceError` when the NLL per token stays
above ``divergence_factor`` × log V (V the vocabulary) for ``divergence_patience`` windows in a
row. Checkpoints are written only once their weights have scored a window within that ceiling
(or when ``fit`` returns), so a diverged run leaves the last good checkpoint on disk. Real
values have a per-window ceiling and a verdict that waits for validation
(:mod:`bayesrnn.inference.training.divergence`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pyro import poutine
from tqdm.auto import tqdm

from bayesrnn.inference.estimators.elbo import window_terms
from bayesrnn.inference.estimators.scaling import epoch_kl_scales, scale_kl
from bayesrnn.inference.runtime.distributed import (
    all_reduce_gradients,
    all_reduce_sum,
    current_ranks,
)
from bayesrnn.inference.runtime.tbptt import detach_state
from bayesrnn.inference.training.batching import Batch, SequenceBatches, StreamWindows
from bayesrnn.inference.training.checkpoint import cpu_copy, load_checkpoint, save_checkpoint
from bayesrnn.inference.training.divergence import (
    DivergenceError,
    DivergenceGuard,
    NonFiniteLossError,
    gaussian_ceiling_basis,
    training_stopped,
)
from bayesrnn.inference.training.early_stopping import EarlyStopping, best_checkpoint_path
from bayesrnn.inference.training.kl_weight import kl_warmup_weight, weighted_kl_scales
from bayesrnn.inference.training.optimisers import (
    OptimizerSpec,
    SchedulerSpec,
    build_optimizer,
    build_scheduler,
    check_optimizer_spec,
    check_scheduler_spec,
    needs_metric,
    step_scheduler,
)
from bayesrnn.inference.training.trainer_checkpoint import TrainerCheckpoints
from bayesrnn.inference.training.trainer_config import OPTIMIZERS, History, TrainerConfig
from bayesrnn.models.sequence_share import sequence_share

__all__ = [
    "OPTIMIZERS",
    "DivergenceError",
    "History",
    "NonFiniteLossError",
    "SVITrainer",
    "TrainerConfig",
]

Validate = Callable[[], dict[str, float]]

logger = logging.getLogger(__name__)


class SVITrainer(TrainerCheckpoints):
    """Trains a Pyro (model, guide) pair by SVI, one ``batching`` step at a time.

    ``batching`` is a :class:`~bayesrnn.inference.StreamWindows` (TBPTT over a stream,
    the model called as ``model(inputs, targets, state=state)`` returning ``(output, state)``)
    or a :class:`~bayesrnn.inference.SequenceBatches` (padded labelled sequences,
    ``model(tokens, labels, lengths)``). Each of an epoch's C steps minimises its NLL plus β·KL/C,
    divided by the strategy's divisor; β is 1 unless ``config.kl_warmup_epochs`` or
    ``config.kl_weight`` say otherwise (:mod:`bayesrnn.inference.training.kl_weight`), and
    ``history.kl_weight`` records it per step. Both share checkpointing with exact resume,
    divergence handling, progress and history. ``validate()`` runs after each epoch and returns
    ``{history field: value}`` (e.g. ``{"valid_perplexity": 93.1}``). ``baseline_nll`` is the
    NLL per item of a trivial predictor (log K for K outcomes, ½log(2πe) for standardised
    values); the divergence ceiling is ``divergence_factor`` times it (none without one: then
    only non-finite losses stop the run).

    ``config.progress`` shows a tqdm bar, on a terminal only. Each epoch logs an INFO line (steps,
    seconds, items/s, train NLL per item) and one with the validation results, on the
    ``bayesrnn.inference.training.trainer`` logger: configure ``logging`` to see them (the
    ``bayesrnn`` command writes them to stderr).

    ``optimizer`` and ``scheduler`` replace the config's optimiser and epoch schedule (see
    :mod:`bayesrnn.inference.training.optimisers`: a class or factory, stepped once per epoch). With
    ``config.early_stopping_patience`` set, training stops after that many epochs without
    validation improvement, the best epoch is also written to ``checkpoint.best.pt`` beside the
    checkpoint, and when ``fit`` returns the model and guide hold the best epoch's parameters
    (the checkpoint too, with the final position); :attr:`history` says which epoch and why.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        guide: Callable,
        batching: StreamWindows | SequenceBatches,
        config: TrainerConfig | None = None,
        *,
        checkpoint_path: str | Path | None = None,
        validate: Validate | None = None,
        baseline_nll: float | None = None,
        unit: str = "item",
        optimizer: OptimizerSpec = None,
        scheduler: SchedulerSpec = None,
    ) -> None:
        config = config or TrainerConfig()
        check_optimizer_spec(optimizer)
        check_scheduler_spec(scheduler)
        if (optimizer is not None or scheduler is not None) and config.lr_decay != 1.0:
            raise ValueError(
                f"lr_decay={config.lr_decay} is the config's own schedule; with optimizer= or "
                "scheduler= the learning rate is theirs: leave lr_decay at 1 and schedule with "
                "scheduler="
            )
        if config.early_stopping_patience is not None and validate is None:
            raise ValueError("early stopping needs validation: give validation data")
        self.config = config
        self._specs = (optimizer, scheduler)
        self.scheduler = None
        self.early = EarlyStopping(
            config.early_stopping_patience,
            min_delta=config.early_stopping_min_delta,
            monitor=config.monitor,
        )
        self._best: dict | None = None  # the best epoch's parameters, on CPU
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        self.guide = guide.to(self.device) if isinstance(guide, torch.nn.Module) else guide
        self.ranks = current_ranks()
        self.batching = batching.shard(self.ranks).to(self.device)
        self.validate = validate
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.history = History()
        self.optimizer: torch.optim.Optimizer | None = None
        self._position = (0, 0)  # (epoch, next step)
        self._state = None
        self._plan: list | None = None
        factor = config.divergence_factor
        ceiling = None if baseline_nll is None or factor is None else factor * baseline_nll
        self.guard = DivergenceGuard(
            ceiling,
            config.divergence_patience,
            unit=unit,
            steps=f"{batching.step_name}s",
            checkpoint=self.checkpoint_path,
        )
        self._pending: dict | None = None  # a checkpoint waiting for its weights to score
        # JSON-safe values the caller wants in every checkpoint (a run's vocabulary fingerprint)
        self.checkpoint_tags: dict = {}

    # ------------------------------------------------------------------------------------
    def parameters(self) -> list[torch.nn.Parameter]:
        params = list(self.model.parameters())
        if isinstance(self.guide, torch.nn.Module):
            params += list(self.guide.parameters())
        return [p for p in dict.fromkeys(params) if p.requires_grad]

    def _call_kwargs(self) -> dict:
        return {"state": self._state} if self.batching.carries_state else {}

    def _build_optimizer(self) -> None:
        # Autoguides create their parameters on first call: run the guide once beforehand.
        first = self.batching.first(self.model)
        state = {"state": None} if self.batching.carries_state else {}
        # traced: a guide's factor sites warn when run bare; the share keeps the random stream
        # (masks drawn by a guide that runs the model) in step with one process's
        with torch.no_grad(), sequence_share(first.share):
            poutine.trace(self.guide).get_trace(*first.args, **state)
        spec, scheduler = self._specs
        self.optimizer, brought = build_optimizer(spec, self.parameters(), self.config)
        if scheduler is not None and brought is not None:
            raise ValueError("scheduler= given twice: by a pyro.optim scheduler and by scheduler=")
        self.scheduler = build_scheduler(scheduler or brought, self.optimizer)
        if needs_metric(self.scheduler) and self.validate is None:
            raise ValueError("ReduceLROnPlateau needs a validation metric: give validation data")

    def fit(self, resume: bool = False) -> History:
        """Train for ``config.epochs`` epochs (or ``max_windows`` steps in all, or until early
        stopping)."""
        torch.manual_seed(self.config.seed)
        self._build_optimizer()
        if resume and self.checkpoint_path is not None and self.checkpoint_path.is_file():
            self._restore(load_checkpoint(self.checkpoint_path, map_location=self.device))
        cfg = self.config
        epoch, start = self._position
        self._pending = None
        try:
            while epoch < cfg.epochs and self.history.stop_reason is None:
                if self._plan is None or start == 0:
                    self._plan = self.batching.plan(self.generator)
                    self._state = None
                stopped = self._run_epoch(epoch, start)
                if stopped:
                    break
                epoch, start = epoch + 1, 0
                self._position = (epoch, 0)
                self._checkpoint_due()
        except BaseException:
            self._pending = None  # never vouched for: a stopped run leaves the file on disk
            raise
        if self._best is not None and self.history.best_epoch != len(self.history.epoch_lr):
            self.model.load_state_dict(self._best["model"])
            if isinstance(self.guide, torch.nn.Module):
                self.guide.load_state_dict(self._best["guide"])
            if self.ranks.is_main:
                logger.info("restored the best parameters, epoch %d's", self.history.best_epoch)
            self._pending = None
            self.save_checkpoint()  # the final position, with the best parameters
        self._write_pending()
        return self.history

    def _run_epoch(self, epoch: int, start: int) -> bool:
        cfg = self.config
        plan = self._plan
        # KL/C per step (or k/C every k-th step), summed over the ranks, times the KL weight
        weights = [
            cfg.kl_weight * kl_warmup_weight(epoch, i, len(plan), cfg.kl_warmup_epochs)
            for i in range(len(plan))
        ]
        split = [float(s) / self.ranks.world for s in epoch_kl_scales(len(plan), cfg.kl_every)]
        scales = weighted_kl_scales(split, weights)
        share = 1.0 / (len(plan) * self.ranks.world)
        groups = self.optimizer.param_groups
        if self._specs == (None, None):  # the config's own schedule
            for group in groups:
                group["lr"] = cfg.learning_rate(epoch)
        lr = groups[0]["lr"]
        began, seen = time.perf_counter(), 0
        bar = tqdm(
            total=len(plan),
            initial=start,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            # a bar on a terminal only: a log file gets one line per epoch instead
            disable=not cfg.progress or not self.ranks.is_main or not sys.stderr.isatty(),
            mininterval=0.1,
            leave=False,
            dynamic_ncols=True,
        )
        self.model.train()
        if isinstance(self.guide, torch.nn.Module):
            self.guide.train()
        for index in range(start, len(plan)):
            if cfg.max_windows is not None and len(self.history.elbo) >= cfg.max_windows:
                bar.close()
                return True
            batch = self.batching.batch(self.model, plan[index])
            rates = [group["lr"] for group in groups]
            for group, rate in zip(groups, rates, strict=True):
                group["lr"] = rate * batch.lr_factor  # variable windows: length/bptt
            try:
                nll, kl, items = self._step(batch, scales[index], epoch, index)
                kl = self._kl_share(kl, scales[index], share)
            finally:
                for group, rate in zip(groups, rates, strict=True):
                    group["lr"] = rate
            if self.guard.suspect:  # the pending checkpoint's weights scored above the ceiling
                self._pending = None
            else:
                self._write_pending()
            self._record(nll, kl, items)
            self.history.kl_weight.append(weights[index])
            ratio = getattr(self.guide, "diagnostics", {}).get("sharpening_step_ratio")
            if ratio is not None:
                self.history.sharpening_step_ratio.append(ratio)
            seen += items
            bar.update(1)
            bar.set_postfix(
                elbo=f"{-(nll + kl):.4g}",
                nll=f"{nll / items:.3f}",
                kl=f"{kl:.4g}",
            )
            self._position = (epoch, index + 1)
            if cfg.checkpoint_every and len(self.history.elbo) % cfg.checkpoint_every == 0:
                self._checkpoint_due()
        bar.close()
        elapsed = time.perf_counter() - began
        self.history.epoch_lr.append(lr)
        self.history.epoch_seconds.append(elapsed)
        self.history.epoch_steps.append(len(plan))
        self.history.tokens_per_second.append(seen / elapsed if elapsed > 0 else float("nan"))
        if self.ranks.is_main:
            done = range(len(self.history.nll) - (len(plan) - start), len(self.history.nll))
            nll = sum(self.history.nll[i] for i in done) / max(
                1, sum(self.history.tokens[i] for i in done)
            )
            logger.info(
                "epoch %d/%d: %d %ss in %.1f s (%.0f items/s), train NLL %.4f per item",
                epoch + 1,
                cfg.epochs,
                len(done),
                self.batching.step_name,
                elapsed,
                seen / max(elapsed, 1e-9),
                nll,
            )
        if self.validate is not None:
            results = self.validate()
            for key, value in results.items():
                getattr(self.history, key).append(value)
            if self.ranks.is_main:
                shown = ", ".join(
                    f"{k.replace('_', ' ')} {v:.2f}" if "perplexity" in k else f"{k} {v:.4f}"
                    for k, v in results.items()
                )
                logger.info("epoch %d: %s", epoch + 1, shown)
            self._settle_divergence(epoch, results)
            if results and self._after_validation(epoch, results):
                return True
        else:
            self._settle_divergence(epoch, None)
        step_scheduler(self.scheduler, self.early.latest)
        return False

    def _settle_divergence(self, epoch: int, results: dict[str, float] | None) -> None:
        """A deferred divergence verdict stands or falls with the epoch's validation NLL."""
        valid = None if results is None else results.get("valid_nll")
        if self.guard.settle(valid, f"epoch {epoch + 1}") and self.ranks.is_main:
            logger.warning(
                "epoch %d: %d %ss in a row scored above the divergence ceiling, but the "
                "validation NLL %.4f per value is within it: training goes on",
                epoch + 1,
                self.config.divergence_patience,
                self.batching.step_name,
                valid,
            )

    def _after_validation(self, epoch: int, results: dict[str, float]) -> bool:
        """Track the best epoch (keep and write it under early stopping); True: stop now."""
        improved, stop = self.early.update(epoch, results)
        history, patience = self.history, self.config.early_stopping_patience
        if self.early.best_epoch is not None:
            history.best_epoch, history.best_valid = self.early.best_epoch + 1, self.early.best
        if patience is None:
            return False
        if improved and not self.guard.suspect:
            self._best = cpu_copy(self._parameters())
            if self.checkpoint_path is not None:
                payload = self._payload()  # a collective: every rank calls it
                if self.ranks.is_main:
                    save_checkpoint(best_checkpoint_path(self.checkpoint_path), payload)
        if not stop or epoch + 1 >= self.config.epochs:
            return False
        history.stopped_epoch = epoch + 1
        history.stop_reason = (
            f"early stopping: {self.early.metric} did not improve for {patience} epoch(s) "
            f"after epoch {history.best_epoch}"
        )
        if self.ranks.is_main:
            logger.info("epoch %d: %s", epoch + 1, history.stop_reason)
        return True

    def _parameters(self) -> dict:
        guide = self.guide.state_dict() if isinstance(self.guide, torch.nn.Module) else {}
        return {"model": self.model.state_dict(), "guide": guide}

    def _step(self, batch: Batch, scale: float, epoch: int, index: int) -> tuple[float, float, int]:
        cfg = self.config
        where = f"epoch {epoch + 1}, {self.batching.step_name} {index + 1}"
        self.optimizer.zero_grad(set_to_none=True)
        nll = kl = 0.0
        state = None
        for _ in range(cfg.num_particles):
            try:
                with sequence_share(batch.share):  # per-sequence masks: one process's
                    terms = window_terms(
                        scale_kl(self.model, scale),
                        scale_kl(self.guide, scale),
                        *batch.args,
                        **self._call_kwargs(),
                    )
            except ValueError as error:  # distribution validation rejects non-finite weights
                if self._parameters_finite():
                    raise
                raise training_stopped(
                    where, "non-finite parameters", self.checkpoint_path
                ) from error
            loss = (terms.nll + terms.kl) / (batch.divisor * cfg.num_particles)
            if not self.ranks.distributed and not bool(torch.isfinite(loss)):
                raise training_stopped(
                    where, f"non-finite loss ({float(loss.detach())})", self.checkpoint_path
                )
            loss.backward()
            # an ensemble's loss sums its members; what is recorded is one member's share
            per_record = cfg.num_particles * getattr(self.guide, "members", 1)
            nll += float(terms.nll.detach()) / per_record
            kl += float(terms.kl.detach()) / per_record
            if self.batching.carries_state:
                state = terms.result[1] if isinstance(terms.result, tuple) else None
        # every rank sees the sums over ranks, so all stop (or go on) together
        squares = self._value_squares(batch)
        sums = all_reduce_sum(
            [nll, kl, float(batch.items), *(() if squares is None else squares)], self.ranks
        )
        nll, kl, items = sums[0], sums[1], int(sums[2])
        if not math.isfinite(nll + kl):
            raise training_stopped(where, f"non-finite loss ({nll + kl})", self.checkpoint_path)
        ceiling = None
        if squares is not None and self.config.divergence_factor is not None:
            values = int(sums[4])  # D per item: the basis is per value, the NLL per item
            basis = gaussian_ceiling_basis(sums[3], values) * values / max(items, 1)
            ceiling = self.config.divergence_factor * basis
        self.guard.update(nll / items, where, ceiling)  # scores the weights of the last step
        all_reduce_gradients(self.parameters(), self.ranks)
        max_norm = cfg.clip_norm if cfg.clip_norm is not None else float("inf")
        clip_members = getattr(self.guide, "clip_member_gradients", None)
        if clip_members is not None:  # an ensemble: each member clipped alone, as K runs are
            grad_norm = clip_members(max_norm)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)
        if not bool(torch.isfinite(grad_norm)):
            raise training_stopped(where, "non-finite gradient", self.checkpoint_path)
        self.optimizer.step()
        self._state = detach_state(state)
        return nll, kl, items

    def _value_squares(self, batch: Batch) -> tuple[float, float] | None:
        """(Σ y², count) of the standardised real values a step predicts, for a per-window
        divergence ceiling; None for tokens and labels (their ceiling is fixed)."""
        return None

    def _kl_share(self, kl: float, scale: float, share: float) -> float:
        """The KL recorded for a step: its 1/C share of the epoch's KL. With ``kl_every`` = k
        the KL is computed on the first step of each k; the others record that value."""
        if scale > 0:
            return kl * share / scale
        return self.history.kl[-1] if self.history.kl else 0.0

    def _parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())

    def _record(self, nll: float, kl: float, items: int) -> None:
        self.history.elbo.append(-(nll + kl))
        self.history.nll.append(nll)
        self.history.kl.append(kl)
        self.history.tokens.append(items)
