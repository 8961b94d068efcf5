"""Which of a minibatch's sequences this process runs, so per-sequence noise is one process's.

Under ``torch.distributed`` each process runs a share of a minibatch's B sequences, and every
process holds the same random stream (same seed, same draws). Noise drawn per sequence (Gal's
locked masks, word-type masks, Zaremba's dropout, zoneout) is therefore drawn for all B
sequences and each process keeps its own rows: global sequence i gets the noise one process
would give it, bit for bit, whatever the number of processes, the processes' sequences get
independent noise, and the random stream advances as one process's does.

The trainer and the sharded evaluation enter :func:`sequence_share`; the noise-drawing code
calls :func:`per_sequence`. Outside a share (one process) nothing changes.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import Tensor

__all__ = ["SequenceShare", "per_sequence", "sequence_share", "sharing_sequences"]


@dataclass(frozen=True)
class SequenceShare:
    """This process's rows ``start:stop`` of a minibatch of ``total`` sequences."""

    total: int
    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop <= self.total:
            raise ValueError(
                f"a share of sequences must satisfy 0 <= start < stop <= total, got "
                f"start={self.start}, stop={self.stop}, total={self.total}"
            )

    @property
    def size(self) -> int:
        return self.stop - self.start


_SHARE: contextvars.ContextVar[SequenceShare | None] = contextvars.ContextVar(
    "bayesrnn_sequence_share", default=None
)


@contextlib.contextmanager
def sequence_share(share: SequenceShare | None) -> Iterator[None]:
    """Within this block the model's calls run ``share``'s rows of the minibatch (None: all)."""
    if share is not None and share.size == share.total:
        share = None  # the whole minibatch: nothing to slice
    token = _SHARE.set(share)
    try:
        yield
    finally:
        _SHARE.reset(token)


def sharing_sequences() -> bool:
    """True inside :func:`sequence_share` with a proper share: other processes run the rest."""
    return _SHARE.get() is not None


def per_sequence(draw: Callable[[int], Tensor], batch: int, dim: int = 0) -> Tensor:
    """``draw(n)``: noise for n sequences along ``dim``. Returns the noise of this call's
    ``batch`` sequences: under a share, drawn for the whole minibatch and this process's rows
    kept. A batch of G·b sequences (G weight draws run together, draw-major, b this process's
    share) keeps its rows in each of the G groups."""
    share = _SHARE.get()
    if share is None:
        return draw(batch)
    groups, rest = divmod(batch, share.size)
    if rest or groups == 0:
        raise ValueError(
            f"a model call over {batch} sequences inside a share of {share.size} of "
            f"{share.total} sequences: the batch must be a multiple of the share"
        )
    full = draw(groups * share.total)
    grouped = full.unflatten(dim, (groups, share.total))
    return grouped.narrow(dim + 1, share.start, share.size).flatten(dim, dim + 1)
