"""Sequence classifier: embedding → Bayesian RNN → final state or masked mean → class logits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from bayesrnn.models.bayesian import PriorSpec
from bayesrnn.models.likelihood import recording
from bayesrnn.models.priors import GaussianPrior
from bayesrnn.models.regularisers import Regularisers
from bayesrnn.models.sequence_models import EmbeddedRNN, embed_tokens, model_draws
from bayesrnn.models.validation import check_lengths, check_positive_int

POOLINGS = ("last", "mean")


class SequenceClassifier(EmbeddedRNN):
    """A Pyro model of one label per (variable-length) sequence.

    ``forward(tokens, labels=None, lengths=None)`` returns class logits (B, C); with ``labels``
    it observes them at the categorical site ``obs`` in the plate ``sequences`` (without, under
    a Pyro trace such as ``Predictive``, it samples labels there and records ``logits``).
    Weight sites with draw dims in front run as one batched call: logits (*draws, B, C). ``pooling``
    ``"last"`` reads the last layer's output at each sequence's final real step (its hidden
    state there, with the output dropout applied), ``"mean"`` the mean of the outputs over the
    real steps.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_size: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        batch_first: bool = False,
        *,
        pooling: str = "last",
        prior: PriorSpec | None = GaussianPrior(1.0),
        deterministic: Iterable[str] = (),
        regularisers: Regularisers | Mapping[str, float] | None = None,
        init_range: float | None = None,
    ) -> None:
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("num_classes", num_classes)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        super().__init__(
            vocab_size,
            embedding_size,
            hidden_size,
            num_layers,
            cell,
            num_classes,
            prior=prior,
            deterministic=deterministic,
            regularisers=regularisers,
            init_range=init_range,
        )
        self.num_classes = num_classes
        self.pooling = pooling
        self.batch_first = bool(batch_first)

    def forward(
        self, tokens: Tensor, labels: Tensor | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        batch_dim = 0 if self.batch_first else 1
        draws, lead = model_draws(self, nesting=1)
        embedded = embed_tokens(self.embedding, self.rnn, tokens, "tokens", batch_dim, draws)
        if self.batch_first:
            embedded = embedded.transpose(-3, -2)
        steps, batch = embedded.shape[-3:-1]
        if lengths is not None:
            lengths = check_lengths(lengths, batch, steps)
        output, _ = self.rnn(embedded, lengths=lengths)
        if draws and output.dim() == 3:  # only the decoder has draws: every draw sees h
            output = output.expand(*draws, *output.shape)
        rows = torch.arange(batch, device=output.device)
        if self.pooling == "last":
            # The last layer's output at each sequence's last real step: h[-1] of the final
            # state, but after the RNN's output dropout, which the final state never sees.
            last = torch.full((batch,), steps - 1) if lengths is None else lengths - 1
            features = output[..., last.to(output.device), rows, :]
        else:
            count = torch.full((batch,), steps) if lengths is None else lengths
            features = output.sum(-3) / count.to(output).unsqueeze(-1)
        logits = self.decoder(features)
        if draws:  # (*draws, B, C) → left of the plate ``sequences``, where Pyro put the draws
            logits = logits.reshape(*lead, *logits.shape[-2:])
        if labels is not None:
            if not isinstance(labels, Tensor) or labels.shape != (batch,):
                got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels)
                raise ValueError(f"labels must have shape ({batch},), got {got}")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(
                    f"labels must lie in [0, {self.num_classes}), got {labels.tolist()}"
                )
        if labels is not None or recording():  # without labels, Predictive samples them
            if labels is None:
                pyro.deterministic("logits", logits)
            with pyro.plate("sequences", batch, dim=-1):
                pyro.sample("obs", dist.Categorical(logits=logits), obs=labels)
        return logits
