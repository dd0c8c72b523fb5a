"""``python -m af2`` (also ``torchrun -m af2 ...``) runs the command line."""

import sys

from af2.cli import main

sys.exit(main())
