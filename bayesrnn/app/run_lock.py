"""An OS file lock on a run directory, so two processes never write one run at once.

``fcntl.flock`` on ``DIR/.lock``: the kernel drops it when the holder exits or dies, so a lock
is never stale after a crash. The file names its holder (pid, host, command, start time) for the
error a second process gets. Platforms without ``fcntl`` run unlocked.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bayesrnn.app.run_dir import LOCK_NAME, JobError
from bayesrnn.data.atomic import is_temporary

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "lock_run_dir", "remove_stale_temporaries"]


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


def remove_stale_temporaries(root: Path) -> list[str]:
    """Delete the half-written files and evaluation folders of killed writers (only safe while
    holding the lock)."""
    removed = []
    for path in root.iterdir():
        if not is_temporary(path) or path.is_symlink():
            continue
        if path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            continue
        removed.append(path.name)
    return removed


def _is_unused(root: Path) -> bool:
    return all(p.name == LOCK_NAME for p in root.iterdir())


def _acquire(path: Path, root: Path) -> int:
    """An open descriptor of ``path`` holding its flock; the loop retries when the file was
    removed by its previous holder between our open and our lock."""
    while True:
        try:  # never through a link: the lock's text would overwrite the link's target
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError:
            if path.is_symlink():
                raise JobError(
                    f"{path} is a symbolic link; a run directory's lock is a plain file this "
                    "package makes: remove the link and run the command again"
                ) from None
            raise
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JobError(
                f"{root} is in use by {_holder(path)}; wait for it to finish or stop it"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def lock_run_dir(root: Path, command: str) -> Iterator[Path]:
    """Hold the run directory ``root`` (created if missing) for the ``with`` block.

    Raises :class:`JobError` naming the holder when another process has it. The lock file goes
    when the block ends, and a directory this call created and left without any run file is
    removed as well, so a start that failed leaves nothing behind.
    """
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    try:
        fd = _acquire(path, root)
    except BaseException:
        if created and _is_unused(root):
            (root / LOCK_NAME).unlink(missing_ok=True)
            root.rmdir()
        raise
    try:
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        host = socket.gethostname()
        os.write(fd, f"pid {os.getpid()} on {host} ({command}, since {stamp})\n".encode())
        remove_stale_temporaries(root)
        yield root
    finally:
        path.unlink(missing_ok=True)  # before the unlock: a waiter then sees a new inode
        if created and _is_unused(root):  # nothing was written: leave no trace
            root.rmdir()
        os.close(fd)  # closing releases the flock
