"""``python -m deepstrata`` (and ``torchrun -m deepstrata``) runs the CLI."""

import sys

from deepstrata.cli import run

sys.exit(run())
