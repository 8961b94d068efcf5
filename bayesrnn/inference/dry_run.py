"""The trainer's dry run: one guide call, before training, that only creates parameters.

Pyro's autoguides create their parameters on their first call, so the trainer calls the guide
once before it builds the optimiser and throws the values away. A guide with costly work whose
result only shapes the values (posterior sharpening's gradient pass) may skip that work here;
it must still draw the same random numbers, so a seeded run trains exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_dry_run: ContextVar[bool] = ContextVar("bayesrnn_dry_run", default=False)


@contextmanager
def dry_run() -> Iterator[None]:
    """Mark guide calls inside as parameter-creating only: their values are discarded."""
    token = _dry_run.set(True)
    try:
        yield
    finally:
        _dry_run.reset(token)


def in_dry_run() -> bool:
    """True inside :func:`dry_run`."""
    return _dry_run.get()
