"""The names of what the compiled core and the Python layer say to each other.

The core reports a dispatcher's state as a string (``Core._state_name()``)
and the outcome of a wait for hand-offs as a small int
(``Core._wait_delivered``); the Python layer reads them only through the
enums below, so a new state or outcome is one edit here, found by a type
checker, not a string compared at seven call sites. The one validator of a
``timeout=`` argument is the core's (``timeout_seconds``): the Python layer
uses it too, so a timeout means the same thing everywhere.
"""

from __future__ import annotations

import enum
import threading
from typing import Optional

from . import _core

__all__ = ["Delivery", "State", "state", "timeout_seconds", "wait_arg"]


class State(enum.Enum):
    """A dispatcher's lifecycle state, as ``Core._state_name()`` names it."""

    NEW = "new"
    RUNNING = "running"
    SHUTTING_DOWN = "shutting down"
    FINISHED = "finished"


class Delivery(enum.IntEnum):
    """What ``Core._wait_delivered(target, timeout)`` returns."""

    #: Every batch sealed before ``target`` was handed to a consumer.
    DELIVERED = 0
    #: ``stop()`` came first (or the dispatcher finished without them).
    STOPPED = 1
    #: The timeout passed first.
    TIMED_OUT = 2


def state(core: _core.Core) -> State:
    """The dispatcher's state now (one aligned read in the core, no lock)."""
    return State(core._state_name())


#: ``timeout=`` as seconds: ``inf`` for None or a value beyond the clock;
#: ``TypeError`` / ``ValueError`` for a bad one. The core's own, used everywhere.
timeout_seconds = _core._timeout_seconds


def wait_arg(seconds: float) -> Optional[float]:
    """Seconds (from ``timeout_seconds``) as the argument of a blocking wait
    of ``threading`` or ``concurrent.futures``: None (for ever) beyond what
    the OS clock can wait, never negative."""
    if seconds > threading.TIMEOUT_MAX:
        return None
    return max(0.0, seconds)
