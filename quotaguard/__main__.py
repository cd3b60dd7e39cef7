"""``python -m quotaguard``: the operator command line (see `quotaguard.cli`)."""

import sys

from quotaguard.cli import main

sys.exit(main())
