"""Word- or character-level language model: embedding → stacked Bayesian RNN → decoder."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyro
from torch import Tensor

from bayesrnn.models.bayesian import PriorSpec
from bayesrnn.models.likelihood import TokenCategorical, recording
from bayesrnn.models.priors import GaussianPrior
from bayesrnn.models.regularisers import Regularisers
from bayesrnn.models.rnn import State
from bayesrnn.models.sequence_models import EmbeddedRNN, embed_tokens, model_draws
from bayesrnn.models.validation import check_positive_int, check_token_ids


class LanguageModel(EmbeddedRNN):
    """A Pyro model of next-token prediction.

    ``forward(tokens, targets=None, state=None)`` returns ``(logits, state)``; with ``targets``
    it observes them at the categorical site ``obs`` inside the plates ``sequences`` and
    ``steps``; without, under a Pyro trace (``Predictive``), it samples the next tokens there
    and records the logits at the deterministic site ``logits``. Weight sites with draw dims
    in front (vectorised ``Predictive``, ``vectorize_particles``, stacked posterior draws) run
    as one batched call: logits (*draws, T, B, V), the state (layers, N·B, hidden).

    Embedding, RNN and decoder weights are sample sites (``embedding.weight``,
    ``rnn.weight_ih_l0``, ``decoder.weight``, ``decoder.bias``) unless named in
    ``deterministic``; ``prior=None`` gives a plain (non-Bayesian) network for baselines.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        num_layers: int = 2,
        cell: str = "lstm",
        tie_weights: bool = False,
        batch_first: bool = False,
        *,
        prior: PriorSpec | None = GaussianPrior(1.0),
        deterministic: Iterable[str] = (),
        regularisers: Regularisers | Mapping[str, float] | None = None,
        init_range: float | None = None,
    ) -> None:
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("embedding_size", embedding_size)
        check_positive_int("hidden_size", hidden_size)
        if tie_weights and hidden_size != embedding_size:
            raise ValueError(
                f"tie_weights needs hidden_size == embedding_size, got {hidden_size} "
                f"and {embedding_size}"
            )
        super().__init__(
            vocab_size,
            embedding_size,
            hidden_size,
            num_layers,
            cell,
            vocab_size,
            prior=prior,
            deterministic=deterministic,
            regularisers=regularisers,
            init_range=init_range,
            tie_weights=tie_weights,
        )
        self.vocab_size = vocab_size
        self.cell = cell
        self.tie_weights = bool(tie_weights)
        self.batch_first = bool(batch_first)

    def forward(
        self, tokens: Tensor, targets: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:
        batch_dim = 0 if self.batch_first else 1
        draws, lead = model_draws(self, nesting=2)
        embedded = embed_tokens(self.embedding, self.rnn, tokens, "tokens", batch_dim, draws)
        if self.batch_first:
            embedded = embedded.transpose(-3, -2)
        output, state = self.rnn(embedded, state)
        if draws and output.dim() == 3:  # only the decoder has draws: every draw sees h
            output = output.expand(*draws, *output.shape)
        if self.batch_first:
            output = output.transpose(-3, -2)
        weight = self.embedding.weight if self.tie_weights else None
        logits = self.decoder(output, weight)
        if draws:  # (*draws, T, B, V) → left of the model's plates, where Pyro put the draws
            logits = logits.reshape(*lead, *logits.shape[-3:])
        if targets is not None:
            self._check_targets(tokens, targets)
            observe_tokens(logits, targets, batch_dim)
        elif recording():  # Predictive and traces: next tokens are sampled at ``obs``
            pyro.deterministic("logits", logits)
            observe_tokens(logits, None, batch_dim)
        return logits, state

    def _check_targets(self, tokens: Tensor, targets: Tensor) -> None:
        if not isinstance(targets, Tensor) or targets.shape != tokens.shape:
            got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets)
            raise ValueError(
                f"targets must have the shape of tokens {tuple(tokens.shape)}, got {got}"
            )
        check_token_ids("targets", targets, self.vocab_size)


def observe_tokens(logits: Tensor, targets: Tensor | None, batch_dim: int) -> None:
    """The likelihood: one categorical per token, the batch in plate ``sequences``.

    ``targets=None`` samples the next tokens (``logits`` may carry draw dims in front).
    """
    steps_dim = 1 - batch_dim
    shape = logits.shape[-3:-1]
    with (
        pyro.plate("sequences", shape[batch_dim], dim=batch_dim - 2),
        pyro.plate("steps", shape[steps_dim], dim=steps_dim - 2),
    ):
        # targets were range-checked by the model (check_token_ids): no second scan here.
        pyro.sample("obs", TokenCategorical(logits, validate_args=False), obs=targets)
