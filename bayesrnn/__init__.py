"""bayesrnn: Bayesian recurrent neural networks in Pyro.

``bayesrnn.load_run(path)`` opens a trained run directory; the library lives in
``bayesrnn.models``, ``bayesrnn.inference``, ``bayesrnn.evaluation`` and ``bayesrnn.data``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["TrainedRun", "__version__", "load_run"]

# Log records go to logging.getLogger("bayesrnn") and its children; a library adds no output of
# its own (configure logging to see them; the bayesrnn command writes INFO and up to stderr).
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from bayesrnn.app.trained_run import TrainedRun, load_run


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import bayesrnn`` (and the CLI's --help) stays free of torch.
    if name in ("load_run", "TrainedRun"):
        from bayesrnn.app import trained_run

        return getattr(trained_run, name)
    raise AttributeError(f"module 'bayesrnn' has no attribute {name!r}")
