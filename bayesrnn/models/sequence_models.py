"""Pieces the language model and the classifier share: the cell choice and the embedding step."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pyro.nn import PyroModule
from torch import Tensor

from bayesrnn.models.bayesian import PriorSpec, bayesianize, weight_sites
from bayesrnn.models.draws import draw_dims, flatten, plate_draws
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
    embedding: Embedding,
    rnn: BayesianRNNBase,
    tokens: Tensor,
    name: str,
    batch_dim: int,
    draws: torch.Size = torch.Size(),
) -> Tensor:
    """Validate ``tokens`` and embed them, dropping word types when embedding dropout is on.

    With weight ``draws`` the result is (*draws, …tokens, E), each draw with its own word-type
    mask; an embedding without draws of its own is expanded to them.
    """
    if not isinstance(tokens, Tensor) or tokens.dim() != 2:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"{name} must be a 2-D tensor of token ids, got {shape}")
    check_token_ids(name, tokens, embedding.num_embeddings)
    embedded = embedding(tokens)
    if draws:
        embedded = flatten(embedded, tokens.dim() + 1, draws)  # (N, …tokens, E)
    regs = rnn.regularisers
    if regs.embedding_dropout > 0 and masks_active(rnn):
        if draws:  # each draw its own word-type mask
            n = embedded.shape[0]
            repeated = torch.cat([tokens] * n, dim=batch_dim)
            mask = word_type_mask(
                repeated,
                embedding.num_embeddings,
                regs.embedding_dropout,
                regs.mask_scope,
                batch_dim,
                embedded,
            )
            shape = list(tokens.shape)
            shape[batch_dim : batch_dim + 1] = [n, tokens.shape[batch_dim]]
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
    return embedded.reshape(*draws, *embedded.shape[1:]) if draws else embedded


def model_draws(module: torch.nn.Module, nesting: int) -> tuple[torch.Size, torch.Size]:
    """The draw dims of ``module``'s weight sites in this call, and its outputs' lead dims.

    Reading the sites here draws them; Pyro caches each value for the rest of the call, so
    the layers see the same draws. ``nesting`` is the number of plate dims the data fill.
    """
    pairs = []
    for site, initial in weight_sites(module).items():
        owner_path, _, local = site.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        pairs.append((getattr(owner, local), initial.dim()))
    draws = draw_dims(pairs)
    return draws, plate_draws(draws, pairs, nesting)


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
        self.init_range = init_range  # how the weights were drawn: ensemble members redraw them
        self.tie_weights = bool(tie_weights)
        if tie_weights:
            del self.decoder.weight
        if prior is not None:
            bayesianize(self, prior, deterministic)

    def rows_read(self, site: str, tokens: object = None, *args, **kwargs) -> Tensor | None:
        """The rows of ``site`` that a call on ``tokens`` reads, or None for all of them.

        Only the embedding is read by rows, and only when the decoder does not share it. A
        guide may sample just these rows for a window: the others cannot change its output.
        """
        if site != "embedding.weight" or self.tie_weights or not isinstance(tokens, Tensor):
            return None
        return torch.unique(tokens)

    @property
    def regularisers(self) -> Regularisers:
        return self.rnn.regularisers

    @regularisers.setter
    def regularisers(self, value: Regularisers | Mapping[str, float] | None) -> None:
        self.rnn.regularisers = value
