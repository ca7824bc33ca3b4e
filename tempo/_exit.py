"""Interpreter exit: the bounded drain that runs once the non-daemon threads ended.

This module is the one place that decides what happens to buffered payloads
when the process exits (see docs/fork-and-exit.md). Other parts of tempo that
own consumers (``tempo.Pipeline``) register a drain here; the exit hook calls
each of them with a shared deadline before it drains the remaining
dispatchers, so the whole exit stays within one bound.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

__all__ = ["exit_timeout", "register_exit_drain"]

#: The default bound, in seconds, on the drain at interpreter exit.
DEFAULT_EXIT_TIMEOUT = 5.0

_timeout = DEFAULT_EXIT_TIMEOUT
_lock = threading.Lock()
_drains: "list[weakref.WeakMethod[Callable[[float], Any]]]" = []


def exit_timeout() -> float:
    """The bound, in seconds, on the whole drain at interpreter exit."""
    return _timeout


def register_exit_drain(method: Callable[[float], Any]) -> None:
    """Call the bound method ``method(deadline)`` at exit, before the dispatchers
    are drained; ``deadline`` is a ``time.monotonic()`` value it must not pass.

    The method is held weakly: an object that is collected drops out.
    """
    with _lock:
        _drains[:] = [ref for ref in _drains if ref() is not None]
        _drains.append(weakref.WeakMethod(method))  # type: ignore[arg-type, unused-ignore]


def _registered_drains() -> list[Callable[[float], Any]]:
    with _lock:
        return [m for m in (ref() for ref in _drains) if m is not None]
