"""Pieces the language model and the classifier share: the cell choice and the embedding step."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pyro.nn import PyroModule
from torch import Tensor

from bayesrnn.models.bayesian import PriorSpec, bayesianize
from bayesrnn.models.layers import Embedding, Linear
from bayesrnn.models.regularisers import Regularisers, masks_active, word_type_mask
from bayesrnn.models.rnn import BayesianGRU, BayesianLSTM, BayesianRNN, BayesianRNNBase
from bayesrnn.models.validation import check_token_ids

CELLS: dict[str, type[BayesianRNNBase]] = {
    "lstm": BayesianLSTM,
    "gru": BayesianGRU,
    "rnn": BayesianRNN,
    "rnn_tanh": BayesianRNN,
}


def make_rnn(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    regularisers: Regularisers | Mapping[str, float] | None,
) -> BayesianRNNBase:
    """A plain-parameter RNN stack (always time-major inside the models)."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    return CELLS[cell](input_size, hidden_size, num_layers, prior=None, regularisers=regularisers)


def reinitialise(module: torch.nn.Module, init_range: float | None) -> None:
    """Zaremba/Gal-style U(−r, r) initialisation of all parameters (None keeps torch's)."""
    if init_range is None:
        return
    if not init_range > 0:
        raise ValueError(f"init_range must be positive, got {init_range!r}")
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(-init_range, init_range)


def embed_tokens(
    embedding: Embedding, rnn: BayesianRNNBase, tokens: Tensor, name: str, batch_dim: int
) -> Tensor:
    """Validate ``tokens`` and embed them, dropping word types when embedding dropout is on."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 2:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"{name} must be a 2-D tensor of token ids, got {shape}")
    check_token_ids(name, tokens, embedding.num_embeddings)
    embedded = embedding(tokens)
    regs = rnn.regularisers
    if regs.embedding_dropout > 0 and masks_active(rnn):
        if embedded.dim() == tokens.dim() + 2:  # S weight draws: each its own word-type mask
            draws = embedded.shape[0]
            repeated = torch.cat([tokens] * draws, dim=batch_dim)
            mask = word_type_mask(
                repeated,
                embedding.num_embeddings,
                regs.embedding_dropout,
                regs.mask_scope,
                batch_dim,
                embedded,
            )
            shape = list(tokens.shape)
            shape[batch_dim : batch_dim + 1] = [draws, tokens.shape[batch_dim]]
            mask = mask.reshape(*shape, 1).movedim(batch_dim, 0)
        else:
            mask = word_type_mask(
                tokens,
                embedding.num_embeddings,
                regs.embedding_dropout,
                regs.mask_scope,
                batch_dim,
                embedded,
            )
        embedded = embedded * mask
    return embedded


class EmbeddedRNN(PyroModule):
    """Embedding → RNN stack → decoder, the frame the language model and classifier share.

    Parameters are built plain, re-initialised, then turned into sample sites (``prior=None``
    keeps them plain); the regularisers live on the RNN, where the masks are drawn.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        num_layers: int,
        cell: str,
        outputs: int,
        *,
        prior: PriorSpec | None,
        deterministic,
        regularisers,
        init_range: float | None,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        self.mc_dropout = False
        self.embedding = Embedding(vocab_size, embedding_size)
        self.rnn = make_rnn(cell, embedding_size, hidden_size, num_layers, regularisers)
        self.decoder = Linear(hidden_size, outputs)
        reinitialise(self, init_range)
        if tie_weights:
            del self.decoder.weight
        if prior is not None:
            bayesianize(self, prior, deterministic)

    @property
    def regularisers(self) -> Regularisers:
        return self.rnn.regularisers

    @regularisers.setter
    def regularisers(self, value: Regularisers | Mapping[str, float] | None) -> None:
        self.rnn.regularisers = value
