"""The ``bayesrnn`` console script's entry point (the command lives in :mod:`bayesrnn.app.cli`)."""

import sys

from bayesrnn.app.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
