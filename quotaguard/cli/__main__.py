"""``python -m quotaguard.cli``: the ``quotaguard`` command."""

import sys

from quotaguard.cli.run import main

sys.exit(main())
