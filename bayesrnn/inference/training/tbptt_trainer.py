"""SVI over the truncated-BPTT windows of one long stream: :class:`SVITrainer` with
:class:`~bayesrnn.inference.StreamWindows`, validated by perplexity or NLL per value."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from bayesrnn.data.streams import check_token_ids
from bayesrnn.inference.prediction.predictive import StreamEvaluation, evaluate_stream, observed_nll
from bayesrnn.inference.training.batching import StreamWindows
from bayesrnn.inference.training.optimisers import OptimizerSpec, SchedulerSpec
from bayesrnn.inference.training.trainer import SVITrainer
from bayesrnn.inference.training.trainer_config import TrainerConfig

__all__ = ["TBPTTTrainer"]


class TBPTTTrainer(SVITrainer):
    """SVI over truncated-BPTT windows of a stream: :class:`SVITrainer` with
    :class:`StreamWindows`, validated by perplexity (token streams) or NLL per value (real-valued
    (N, F) streams) of ``valid``.

    ``model(tokens, targets, state=state)`` must return ``(output, new_state)``. Model and guide
    get each window as (T, B) token tensors, or (B, T) when the model has ``batch_first=True``;
    the carried state is (layers, B, H) either way. Works with the bayesrnn guides and with Pyro
    autoguides. ``checkpoint_path`` with ``checkpoint_every`` writes a checkpoint every N
    windows (and at each epoch's end); ``fit(resume=True)`` continues from it and gives the same
    numbers as an uninterrupted run with the same seed. ``optimizer``, ``scheduler`` and early
    stopping are :class:`SVITrainer`'s; keyword ``overrides`` replace config fields.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        guide: Callable,
        train: torch.Tensor,
        valid: torch.Tensor | None = None,
        config: TrainerConfig | None = None,
        *,
        checkpoint_path: str | Path | None = None,
        optimizer: OptimizerSpec = None,
        scheduler: SchedulerSpec = None,
        **overrides,
    ) -> None:
        config = config or TrainerConfig()
        if isinstance(optimizer, str):  # a name is the config's optimiser (TrainerConfig.optimizer)
            overrides["optimizer"], optimizer = optimizer, None
        if overrides:
            config = TrainerConfig.from_dict({**asdict(config), **overrides})
        vocab = getattr(model, "vocab_size", None)
        self._tokens = not (isinstance(train, torch.Tensor) and train.is_floating_point())
        for name, stream in (("train", train), ("valid", valid)):
            if stream is not None and vocab is not None and self._tokens:
                check_token_ids(stream, vocab, name)
        batching = StreamWindows(train, config.batch_size, config.bptt, config.variable_bptt)
        super().__init__(
            model,
            guide,
            batching,
            config,
            checkpoint_path=checkpoint_path,
            validate=None if valid is None else self._validate,
            baseline_nll=_baseline_nll(vocab, self._tokens),
            unit="token" if self._tokens else "value",
            optimizer=optimizer,
            scheduler=scheduler,
        )
        self.valid = valid
        # real values: spiky training windows alone do not stop a run whose validation is
        # healthy (a heteroscedastic forecaster can score many nats on a few outliers)
        self.guard.defer = not self._tokens and valid is not None

    def _value_squares(self, batch) -> tuple[float, float] | None:
        """(Σ y², count) over the target columns of a real-valued window, else None."""
        if self._tokens:
            return None
        outputs = int(getattr(self.model, "output_size", 1))
        values = batch.args[1][..., :outputs].detach()
        return float(values.double().pow(2).sum()), float(values.numel())

    @property
    def train_data(self) -> torch.Tensor:
        """The batchified training stream, (steps, B) or (steps, B, F)."""
        return self.batching.data

    def _validate(self) -> dict[str, float]:
        result = self.evaluate(self.valid)
        if self._tokens:
            return {"valid_perplexity": result.perplexity}
        return {"valid_nll": result.nll_per_token}

    def evaluate(self, stream: torch.Tensor, **kwargs) -> StreamEvaluation:
        """Posterior-mean perplexity of a token stream (keyword arguments go to
        evaluate_stream), or the NLL per value of a real-valued one (``observed_nll``)."""
        options = {
            "batch_size": self.config.eval_batch_size,
            "bptt": self.config.bptt,
            # every process validates together, each its share of the sequences (when they
            # split evenly; else each scores all of them, the same numbers, no collective)
            "ranks": self.ranks if self.config.eval_batch_size % self.ranks.world == 0 else None,
        } | kwargs
        if not self._tokens:
            return observed_nll(self.model, self.guide, stream.to(self.device), **options)
        return evaluate_stream(self.model, self.guide, stream.to(self.device), **options)


def _baseline_nll(vocab: int | None, tokens: bool) -> float | None:
    """log V for tokens (a uniform predictor; none below two ids or without a vocabulary), or
    ½log(2πe), the NLL of N(0, 1) on a standardised real series."""
    if not tokens:
        return 0.5 * math.log(2 * math.pi * math.e)
    return math.log(vocab) if vocab is not None and vocab >= 2 else None
