"""``python -m modiff`` is the ``modiff`` command."""

import sys

from .cli import main

sys.exit(main())
