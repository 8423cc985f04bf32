"""``python -m nclab``: the ``nclab`` command."""

import sys

from nclab.cli import main

sys.exit(main())
