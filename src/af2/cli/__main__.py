"""``python -m af2.cli`` runs the command line (as ``python -m af2`` does)."""

import sys

from af2.cli import main

sys.exit(main())
