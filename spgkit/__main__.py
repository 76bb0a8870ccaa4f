"""``python -m spgkit`` (and ``torchrun -m spgkit``) runs the command line."""

import sys

from spgkit.cli import main

sys.exit(main())
