"""Deterministic regularisers of the RNN literature, as baselines beside the Bayesian posteriors.

Each is switched on by name and rate through :class:`Regularisers`:

========================  ==========================================================  ========
name                      what it does                                                source
========================  ==========================================================  ========
``naive_dropout``         fresh mask at every step on each layer's input and on the    Zaremba
                          last layer's output; never on h or c
``locked_input``          one mask per sequence, shared over time, on each layer's     Gal/AWD
                          input
``locked_hidden``         one mask per sequence on h_{t-1} entering the recurrence     Gal
``locked_output``         one mask per sequence on the last layer's output             Gal/AWD
``embedding_dropout``     drops word types: a word's whole embedding row, for every    Gal/AWD
                          occurrence in the sequence; kept rows scaled by 1/(1−p)
``zoneout_c``/``_h``      keep the previous c / h with this probability, fresh masks   Krueger
                          each step; at evaluation the expectation z·prev + (1−z)·new
``weight_drop``           DropConnect on hidden-to-hidden weights, one mask per call   Merity
========================  ==========================================================  ========

``mask_scope`` chooses whether locked and embedding masks are drawn per sequence (Gal's method)
or once per minibatch (AWD's embedding dropout; lets the fused kernel run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields

import torch

from bayesrnn.models.sequence_share import per_sequence, sharing_sequences

MASK_SCOPES = ("sequence", "batch")


def check_rate(name: str, value: float) -> float:
    """A dropout-like rate must lie in [0, 1)."""
    if not isinstance(value, int | float) or not (0.0 <= float(value) < 1.0):
        raise ValueError(f"{name} must be a rate in [0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Regularisers:
    """Rates of the deterministic regularisers (all off by default)."""

    naive_dropout: float = 0.0
    locked_input: float = 0.0
    locked_hidden: float = 0.0
    locked_output: float = 0.0
    embedding_dropout: float = 0.0
    zoneout_c: float = 0.0
    zoneout_h: float = 0.0
    weight_drop: float = 0.0
    mask_scope: str = "sequence"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "mask_scope":
                check_rate(f.name, getattr(self, f.name))
        if self.mask_scope not in MASK_SCOPES:
            raise ValueError(f"mask_scope must be one of {MASK_SCOPES}, got {self.mask_scope!r}")

    @classmethod
    def from_mapping(cls, rates: Mapping[str, float] | None) -> Regularisers:
        """Build from ``{name: rate}``; an unknown name is a ValueError listing the known ones."""
        rates = dict(rates or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(rates) - known)
        if unknown:
            raise ValueError(f"regularisers: unknown names {unknown}; known: {sorted(known)}")
        return cls(**rates)

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)

    @property
    def needs_time_loop(self) -> bool:
        """Per-sequence hidden masks and zoneout act inside the recurrence, step by step."""
        per_sequence_hidden = self.locked_hidden > 0 and self.mask_scope == "sequence"
        return per_sequence_hidden or self.zoneout_c > 0 or self.zoneout_h > 0


def bernoulli_mask(shape: tuple[int, ...], rate: float, like: torch.Tensor) -> torch.Tensor:
    """Inverted-dropout mask: 0 with probability ``rate``, else 1/(1−rate)."""
    keep = 1.0 - rate
    return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(keep).div_(keep)


def locked_mask(batch: int, features: int, rate: float, scope: str, like: torch.Tensor):
    """One mask per sequence (B, F), or one for the whole minibatch (1, F); shared over time.
    Per-sequence masks are those of the sequences' rows in the whole distributed minibatch."""
    if scope != "sequence":
        return bernoulli_mask((1, features), rate, like)
    return per_sequence(lambda n: bernoulli_mask((n, features), rate, like), batch)


def word_type_mask(
    tokens: torch.Tensor, vocab_size: int, rate: float, scope: str, batch_dim: int, like
) -> torch.Tensor:
    """Multiplier for each token's embedding that drops word *types*, not tokens.

    Every occurrence of a word in a sequence (or, with scope ``"batch"``, in the minibatch) gets
    the same factor, 0 or 1/(1−p). Returns a tensor shaped like ``tokens`` plus a trailing 1.
    """
    batch = tokens.shape[batch_dim]
    rows = batch if scope == "sequence" else 1
    if rows == 1:
        per_type = bernoulli_mask((1, vocab_size), rate, like)
    else:  # each sequence's row of the whole distributed minibatch
        per_type = per_sequence(lambda n: bernoulli_mask((n, vocab_size), rate, like), batch)
    index = tokens.movedim(batch_dim, 0).reshape(batch, -1)
    picked = per_type[0][index] if rows == 1 else per_type.gather(1, index)
    return picked.reshape(tokens.movedim(batch_dim, 0).shape).movedim(0, batch_dim).unsqueeze(-1)


def zoneout(
    previous: torch.Tensor, new: torch.Tensor, rate: float, stochastic: bool
) -> torch.Tensor:
    """Krueger et al.: keep ``previous`` with probability ``rate`` (fresh mask per call).

    At evaluation (``stochastic`` false) the expectation rate·previous + (1−rate)·new.
    """
    if rate == 0.0:
        return new
    if stochastic:  # ``new`` is (sequences, H): each sequence's row of the whole minibatch
        uniform = per_sequence(
            lambda n: torch.rand((n, *new.shape[1:]), dtype=new.dtype, device=new.device),
            new.shape[0],
        )
        return torch.where(uniform < rate, previous, new)
    return torch.lerp(new, previous, rate)


def naive_dropout(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Zaremba's dropout of a time-major (T, sequences, F) input, a fresh mask per element.

    Inside a :func:`~bayesrnn.models.sequence_share.sequence_share` the mask is drawn for the
    whole distributed minibatch and this process's sequences keep theirs (the same values
    ``dropout`` gives one process).
    """
    if rate == 0.0:
        return x
    if not sharing_sequences():
        return torch.nn.functional.dropout(x, rate, training=True)
    steps, _, features = x.shape

    def mask(n: int) -> torch.Tensor:
        return torch.nn.functional.dropout(x.new_ones((steps, n, features)), rate, training=True)

    return x * per_sequence(mask, x.shape[1], dim=1)


def drop_connect(weight: torch.Tensor, rate: float) -> torch.Tensor:
    """AWD weight-drop: one inverted-dropout mask over a weight matrix."""
    if rate == 0.0:
        return weight
    return weight * bernoulli_mask(tuple(weight.shape), rate, weight)


def set_mc_dropout(module: torch.nn.Module, enabled: bool) -> None:
    """Keep dropout-type masks on in evaluation mode (MC dropout)."""
    for sub in module.modules():
        sub.mc_dropout = enabled


@contextlib.contextmanager
def mc_dropout(module: torch.nn.Module, enabled: bool = True) -> Iterator[torch.nn.Module]:
    """Context in which ``module``'s masks are drawn even in ``eval()`` mode."""
    before = {sub: getattr(sub, "mc_dropout", False) for sub in module.modules()}
    set_mc_dropout(module, enabled)
    try:
        yield module
    finally:
        for sub, value in before.items():
            sub.mc_dropout = value


def masks_active(module: torch.nn.Module) -> bool:
    """Masks are drawn in training mode, or in evaluation under :func:`mc_dropout`."""
    return module.training or getattr(module, "mc_dropout", False)


__all__ = [
    "MASK_SCOPES",
    "Regularisers",
    "bernoulli_mask",
    "check_rate",
    "drop_connect",
    "locked_mask",
    "masks_active",
    "mc_dropout",
    "naive_dropout",
    "word_type_mask",
    "zoneout",
]
