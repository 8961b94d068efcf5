"""bayesrnn: Bayesian recurrent neural networks in Pyro.

``bayesrnn.load_run(path)`` opens a trained run directory and ``bayesrnn.run_predictive(run)``
reads its per-draw predictive on a split; the library lives in
``bayesrnn.models``, ``bayesrnn.inference``, ``bayesrnn.evaluation`` and ``bayesrnn.data``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bayesrnn.version import __version__

__all__ = ["RunPredictive", "TrainedRun", "__version__", "load_run", "run_predictive"]

# Log records go to logging.getLogger("bayesrnn") and its children; a library adds no output of
# its own (configure logging to see them; the bayesrnn command writes INFO and up to stderr).
logging.getLogger(__name__).addHandler(logging.NullHandler())


class _NoCudaHomeNotice(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." notice: torch logs it when
    ``torch.compile`` loads its C++ toolchain on a machine that has CUDA files but no GPU, and
    on such a CPU run it says nothing the user can act on. Every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


logging.getLogger("torch.utils.cpp_extension").addFilter(_NoCudaHomeNotice())

if TYPE_CHECKING:
    from bayesrnn.app.run_draws import RunPredictive, run_predictive
    from bayesrnn.app.trained_run import TrainedRun, load_run


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import bayesrnn`` (and the CLI's --help) stays free of torch.
    if name in ("load_run", "TrainedRun"):
        from bayesrnn.app import trained_run

        return getattr(trained_run, name)
    if name in ("run_predictive", "RunPredictive"):
        from bayesrnn.app import run_draws

        return getattr(run_draws, name)
    raise AttributeError(f"module 'bayesrnn' has no attribute {name!r}")
