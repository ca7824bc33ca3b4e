"""The pure-Python competitor, now in the package (``tempo.tools._purepy``) so
``tempo bench`` has it without a checkout; this name stays for the scripts here."""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tempo.tools._purepy import Batcher, PayloadTooLarge, QueueFull, Stopped  # noqa: E402

__all__ = ["Batcher", "QueueFull", "PayloadTooLarge", "Stopped"]
