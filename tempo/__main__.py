"""``python -m tempo``: the same as the ``tempo`` command."""

import sys

from tempo.tools.cli import main

sys.exit(main())
