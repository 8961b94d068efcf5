"""Log lines of the ``bayesrnn`` command: the library's log records, on stderr, between tqdm bars.

The package logs through ``logging.getLogger("bayesrnn")`` and its children (one per module,
e.g. ``bayesrnn.inference.training.trainer`` for the epoch lines) and, as a library should, adds no
handler but a ``NullHandler``: a Python user sees nothing until they configure logging, e.g.
``logging.basicConfig(level=logging.INFO)``. The command line installs :class:`TqdmHandler` on
the ``bayesrnn`` logger for the duration of a command, at INFO, or WARNING with ``--quiet``,
and removes it afterwards (so calling ``main`` in-process leaves logging as it found it).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from tqdm.auto import tqdm

__all__ = ["LOGGER_NAME", "TqdmHandler", "cli_logging"]

LOGGER_NAME = "bayesrnn"


class TqdmHandler(logging.Handler):
    """Writes each record as a line on the current ``sys.stderr`` through ``tqdm.write``, so a
    progress bar on the terminal is cleared and redrawn below the line rather than torn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging's convention: a failing handler must not stop the program
            self.handleError(record)


class _PlainFormatter(logging.Formatter):
    """The message alone for INFO and below; ``warning: ...`` and ``error: ...`` above."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


@contextlib.contextmanager
def cli_logging(quiet: bool = False) -> Iterator[logging.Logger]:
    """The ``bayesrnn`` logger writing to stderr for the block: INFO, or WARNING if ``quiet``."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = TqdmHandler()
    handler.setFormatter(_PlainFormatter("%(message)s"))
    previous = logger.level
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
