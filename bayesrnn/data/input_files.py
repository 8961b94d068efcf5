"""Reading a user's input file: a regular file of bounded size, or a one-line DataError.

A FIFO named as ``--data`` or ``--config`` would block the read forever, and ``/dev/zero``
would fill memory until a MemoryError. Every input file bayesrnn reads whole (text corpora,
series CSVs, config files, ``score`` and ``--ood`` files, forecast covariates) is therefore
checked with ``stat`` before it is opened, opened with ``O_NONBLOCK`` (a FIFO swapped in
between cannot block) and checked again on the open descriptor; what is read is bounded by
:func:`input_limit`: ``BAYESRNN_MAX_INPUT_BYTES`` from the environment (a number of bytes, or
with a K, M or G suffix for 2¹⁰, 2²⁰, 2³⁰), 2 GiB when unset.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

from bayesrnn.data.checksums import DataError

__all__ = [
    "DEFAULT_MAX_INPUT_BYTES",
    "MAX_INPUT_BYTES_ENV",
    "input_limit",
    "open_regular",
    "read_input_bytes",
]

MAX_INPUT_BYTES_ENV = "BAYESRNN_MAX_INPUT_BYTES"
DEFAULT_MAX_INPUT_BYTES = 2 * 2**30
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}
_LIMIT = re.compile(r"\s*([0-9]+)\s*([KMG]?)(?:I?B)?\s*", re.IGNORECASE)


def input_limit() -> int:
    """The most bytes an input file may hold (``BAYESRNN_MAX_INPUT_BYTES``, else 2 GiB)."""
    raw = os.environ.get(MAX_INPUT_BYTES_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_INPUT_BYTES
    match = _LIMIT.fullmatch(raw)
    if match is None or int(match.group(1)) < 1:
        raise DataError(
            f"{MAX_INPUT_BYTES_ENV} must be a positive number of bytes, optionally with a K, M or "
            f"G suffix (e.g. 4G), got {raw!r}"
        )
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((words for test, words in kinds if test(mode)), "not a regular file")


def _size_words(count: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{count} bytes"


def _too_large(path: Path, what: str, size: int, limit: int) -> DataError:
    return DataError(
        f"{what} {path} holds {_size_words(size)}, above the {_size_words(limit)} an input file "
        f"may hold; raise {MAX_INPUT_BYTES_ENV} (e.g. {MAX_INPUT_BYTES_ENV}=8G) to read it"
    )


def _refuse_non_regular(path: Path, what: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise DataError(f"{what} {path} is {_kind(mode)}, not a regular file; name a file")


def open_regular(path: str | os.PathLike[str], what: str, limit: int | None = None) -> BinaryIO:
    """``path`` opened for binary reading once it is known to be a regular file of at most
    ``limit`` bytes (None: any size, for a reader that streams). ``what`` names the file in
    messages ("data file", "config file"). A missing file is the OS's FileNotFoundError."""
    path = Path(path)
    _refuse_non_regular(path, what, os.stat(path).st_mode)  # before open: a FIFO would block
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)  # the file opened, should it have been swapped since the stat
        _refuse_non_regular(path, what, info.st_mode)
        if limit is not None and info.st_size > limit:
            raise _too_large(path, what, info.st_size, limit)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_input_bytes(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of a regular file of at most :func:`input_limit` bytes (see module)."""
    limit = input_limit()
    with open_regular(path, what, limit) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:  # grew while being read
        raise _too_large(Path(path), what, len(data), limit)
    return data
