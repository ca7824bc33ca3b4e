"""The exception hierarchy: one root, each class named by what happened.

Messages are exactly the Go package's, so logs read the same in both.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "PayloadTooLarge",
    "QueueFull",
    "ShuttingDown",
    "Stopped",
    "TempoError",
]


class TempoError(Exception):
    """Base class of every error tempo raises on purpose."""

    #: The message used when the error is raised without arguments.
    default_message = "tempo: error"

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or (self.default_message,)))


class ConfigError(TempoError, ValueError):
    """A configuration value is out of range (a wrong type is a ``TypeError``)."""

    default_message = "tempo: invalid config"


class QueueFull(TempoError):
    """The payload would fit within ``max_buffered_bytes``, but not now.

    Retry after consumers release batches, or pass ``enqueue(..., timeout=...)``
    to wait for space.
    """

    default_message = "tempo: dispatcher queue full"


class PayloadTooLarge(TempoError, ValueError):
    """The payload is larger than ``max_buffered_bytes``; it can never fit."""

    default_message = "tempo: payload exceeds configured buffered byte limit"


class ShuttingDown(TempoError):
    """``enqueue`` was called while ``shutdown()`` is draining the dispatcher."""

    default_message = "tempo: dispatcher shutting down"


class Stopped(TempoError):
    """The dispatcher is finished: stopped, or shut down; nothing more will come."""

    default_message = "tempo: dispatcher stopped"


def _count(n: int, one: str, many: "str | None" = None) -> str:
    """``"1 item"``, ``"2 items"``: a count with its noun in log and error text."""
    return f"{n} {one if n == 1 else many or one + 's'}"
