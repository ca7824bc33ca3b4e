"""The demo (``make demo``): telemetry producers -> ``tempo.Pipeline`` -> SQLite,
through a database outage. It lives in the package as ``tempo.tools.demo``;
see that module for what it shows. ``python examples/demo.py --help`` lists
the options.
"""

from __future__ import annotations

import sys

from tempo.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
