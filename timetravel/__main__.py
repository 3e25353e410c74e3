"""``python -m timetravel``: the same command line as ``timetravel``."""

import sys

from timetravel.cli import main

sys.exit(main())
