"""How the ``bayesrnn`` command meets faults: one line per fault a user can fix (rank 0 alone
under torchrun), Ctrl-C held back during imports, the libraries' warnings held until the
command's outcome is known, and an exit that skips a broken teardown."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn

__all__ = [
    "exit_now",
    "failed_netcdf_write",
    "ignore_interrupts",
    "interrupts_held",
    "one_line",
    "rank_speaks",
    "user_errors",
    "warnings_held",
]


def rank_speaks(error: BaseException) -> bool:
    """Under torchrun every rank meets the same fault in the same inputs: rank 0 says it, once.
    A lost peer is each rank's own news (rank 0 may be the one gone)."""
    import os

    from bayesrnn.inference.runtime.distributed import PeerLostError

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or isinstance(error, PeerLostError):
        return True
    return os.environ.get("RANK", "0") == "0"


def one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        where = f"{error.filename}" + (f" -> {error.filename2}" if error.filename2 else "")
        return f"{where}: {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


def user_errors() -> tuple[type[BaseException], ...]:
    """Faults a user can fix: the package's own errors, and the OS refusing a file."""
    from bayesrnn.app.config import ConfigError
    from bayesrnn.app.pipeline import JobError
    from bayesrnn.data import ChecksumError, DataError, DataNotFoundError, DownloadError
    from bayesrnn.inference import NonFiniteLossError
    from bayesrnn.inference.runtime.distributed import PeerLostError
    from bayesrnn.inference.training.checkpoint import CheckpointError

    return (
        ConfigError,
        JobError,
        DataError,
        DataNotFoundError,
        ChecksumError,
        DownloadError,
        CheckpointError,
        NonFiniteLossError,
        PeerLostError,
        OSError,
    )


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C back during the block (imports), and raise it once the block is done."""
    import signal
    import threading

    # not from a thread, and not when the process was started with Ctrl-C ignored (nohup, `&`)
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    ):
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: pending.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


@contextlib.contextmanager
def warnings_held() -> Iterator[None]:
    """Hold the libraries' warnings (numpy's overflow, xarray's) back until the command ends:
    shown once it succeeds (or before a bug's traceback), dropped when it stops at a fault a
    user can fix or at Ctrl-C, so that the one error line stands alone (such warnings are the
    fault's symptoms: an overflow while scoring the very values the error names)."""
    import warnings

    held: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            try:
                yield
            except (*user_errors(), KeyboardInterrupt):
                caught.clear()
                raise
            finally:
                held = list(caught)
    finally:
        for warning in held:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno, warning.file
            )


def exit_now(status: int) -> NoReturn:
    """Exit with ``status`` at once, skipping interpreter shutdown (files are closed by now).

    Returning 130 normally, 2 of 59 interrupts (SIGINT 0.1 s to 5.9 s into a run) still ended
    with status −2, as if killed by SIGINT, after bayesrnn had caught the interrupt; with this
    exit, none did. The cause is not pinned down: CPython's flag for an unhandled
    KeyboardInterrupt, set inside an extension, is the suspect.
    """
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def failed_netcdf_write() -> bool:
    """Whether a ``posterior.nc`` write failed in this process (see bayesrnn.app.export)."""
    export = sys.modules.get("bayesrnn.app.export")
    return bool(export is not None and getattr(export, "_FAILED_WRITES", None))


def ignore_interrupts() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
