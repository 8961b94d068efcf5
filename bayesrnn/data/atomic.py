"""Files written whole or not at all, with the permissions the user's umask gives.

Every file bayesrnn writes (configs, checkpoints, metrics, downloads) goes to a temporary
``.NAME.<pid>.<random>.tmp`` beside its destination and is renamed into place, so a reader or a
crash never leaves half a file under the real name; the temporary is removed on every failure.
``tempfile.mkstemp`` would create it 0o600: here it is 0o666 less the umask, like any file.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "is_temporary", "temporary_path"]


def temporary_path(path: Path) -> Path:
    """A fresh hidden name beside ``path`` ending in ``.tmp``, as stale-file cleanup expects."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


# .NAME.<pid>.<32 hex digits>.tmp: what temporary_path makes, and nothing a user would name
_TEMPORARY = re.compile(r"\..+\.[0-9]+\.[0-9a-f]{32}\.tmp")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is named exactly as :func:`temporary_path` names (a killed writer's
    leftover): a user's own ``.notes.tmp`` is not."""
    return _TEMPORARY.fullmatch(path.name) is not None


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a temporary file, fsync it and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
