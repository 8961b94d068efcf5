"""How the SVI trainer walks the training data: two batching strategies, one interface.

:class:`StreamWindows` cuts one long stream (tokens, or real-valued rows) into B parallel
sequences and walks them in truncated-BPTT windows, the hidden state carried between windows
(Fortunato et al. 2017, eqs. 4–5: each of an epoch's C windows carries KL/C).
:class:`SequenceBatches` draws shuffled minibatches of variable-length labelled sequences, padded,
no state carried (each of an epoch's C batches carries KL/C).

A strategy gives the trainer an epoch's plan (drawn from the trainer's generator, stored in
checkpoints so a resumed epoch replays it), the model's arguments for each step of the plan,
how many items the step predicts, the loss divisor and a learning-rate factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bayesrnn.data.polarity import pad_batch
from bayesrnn.data.streams import batchify
from bayesrnn.inference.runtime.distributed import Ranks, shard, take_columns
from bayesrnn.inference.runtime.tbptt import Window, model_window, plan_windows
from bayesrnn.models.sequence_share import SequenceShare

__all__ = ["Batch", "SequenceBatches", "StreamWindows"]


@dataclass(frozen=True)
class Batch:
    """One step's model arguments, the items it predicts, its loss divisor and lr factor, and
    which rows of the whole distributed minibatch its sequences are (None: all of them)."""

    args: tuple
    items: int
    divisor: float
    lr_factor: float = 1.0
    share: SequenceShare | None = None


class StreamWindows:
    """Truncated BPTT over ``batch_size`` parallel sequences of a stream (state carried).

    ``variable`` draws AWD-style window lengths (base ``bptt`` w.p. 0.95 else ``bptt/2``, plus
    N(0, 5²)), each window's learning rate scaled by length/``bptt``. The loss is divided by
    ``batch_size``: the per-sequence normalisation that Zaremba's lr = 1 and clipping assume.
    """

    carries_state = True
    step_name = "window"

    def __init__(self, stream: Tensor, batch_size: int, bptt: int, variable: bool = False):
        self.data = batchify(stream, batch_size)
        self.batch_size, self.bptt, self.variable = batch_size, bptt, variable
        self.columns = slice(0, batch_size)
        plan_windows(self.data.shape[0], bptt)  # a window longer than the data fails here

    def shard(self, ranks: Ranks) -> StreamWindows:
        """Keep this rank's B/R parallel sequences (the loss divisor stays B)."""
        self.columns = shard(self.batch_size, ranks, "trainer.batch_size")
        self.data = self.data[:, self.columns].contiguous()
        return self

    @property
    def share(self) -> SequenceShare:
        """This process's columns of the B parallel sequences."""
        return SequenceShare(self.batch_size, self.columns.start, self.columns.stop)

    def local_state(self, state):
        """This rank's columns of a carried state saved for all B sequences."""
        return take_columns(state, self.columns)

    def to(self, device: torch.device) -> StreamWindows:
        self.data = self.data.to(device)
        return self

    def plan(self, generator: torch.Generator) -> list[Window]:
        return plan_windows(
            self.data.shape[0], self.bptt, variable=self.variable, generator=generator
        )

    def batch(self, model, step: Window) -> Batch:
        inputs, targets = model_window(model, self.data, step)
        factor = step.length / self.bptt if self.variable else 1.0
        items = math.prod(targets.shape[:2])
        return Batch((inputs, targets), items, self.batch_size, factor, self.share)

    def first(self, model) -> Batch:
        inputs, targets = model_window(model, self.data, Window(0, 1))
        return Batch((inputs, targets), targets.numel(), self.batch_size, share=self.share)

    @staticmethod
    def encode(plan: list[Window]) -> Tensor:
        return torch.tensor([[w.start, w.length] for w in plan], dtype=torch.long)

    @staticmethod
    def decode(stored: Tensor) -> list[Window]:
        return [Window(int(s), int(n)) for s, n in stored.tolist()]


class SequenceBatches:
    """Shuffled minibatches of padded variable-length sequences and their labels.

    Model arguments are ``(tokens (T, B), labels (B,), lengths (B,))``; the order of an epoch is
    ``torch.randperm`` under the trainer's generator. The loss is divided by the batch's label
    count (the batch mean), as Gal's sentiment code trains.
    """

    carries_state = False
    step_name = "batch"

    def __init__(
        self, sequences: Sequence[Tensor], labels: Tensor, batch_size: int, pad_id: int = 0
    ) -> None:
        if len(sequences) != labels.numel():
            raise ValueError(f"{len(sequences)} sequences but {labels.numel()} labels")
        if len(sequences) == 0:
            raise ValueError("no training sequences")
        self.sequences, self.labels = list(sequences), labels
        self.batch_size, self.pad_id = batch_size, pad_id
        self.device = torch.device("cpu")
        self.ranks = Ranks()

    def shard(self, ranks: Ranks) -> SequenceBatches:
        """Each minibatch is split over the ranks (the loss divisor stays its full size)."""
        self.ranks = ranks
        return self

    def local_state(self, state):
        return state

    def to(self, device: torch.device) -> SequenceBatches:
        self.device = device
        return self

    def plan(self, generator: torch.Generator) -> list[Tensor]:
        order = torch.randperm(len(self.sequences), generator=generator)
        return list(order.split(self.batch_size))

    def batch(self, model, step: Tensor) -> Batch:
        parts = step.tensor_split(self.ranks.world)
        local = parts[self.ranks.rank]
        if local.numel() == 0:
            raise ValueError(
                f"a minibatch of {step.numel()} sequences cannot feed {self.ranks.world} "
                "processes; use fewer processes or a training set that leaves no tiny last batch"
            )
        tokens, lengths = pad_batch([self.sequences[i] for i in local.tolist()], self.pad_id)
        labels = self.labels[local]
        args = (tokens.to(self.device), labels.to(self.device), lengths)
        start = sum(part.numel() for part in parts[: self.ranks.rank])
        share = SequenceShare(step.numel(), start, start + local.numel())
        return Batch(args, int(labels.numel()), float(step.numel()), share=share)

    def first(self, model) -> Batch:
        return self.batch(model, torch.arange(min(2, len(self.sequences))))

    def encode(self, plan: list[Tensor]) -> Tensor:
        return torch.cat(plan) if plan else torch.zeros(0, dtype=torch.long)

    def decode(self, stored: Tensor) -> list[Tensor]:
        return list(stored.long().split(self.batch_size))
