"""``python -m bayesrnn ...``: the ``bayesrnn`` command (also under ``torchrun -m bayesrnn``)."""

import sys

from bayesrnn.app.cli import main

sys.exit(main())
