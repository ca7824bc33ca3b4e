"""``Stats``: a frozen snapshot of a dispatcher's counters."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Stats"]


@dataclass(frozen=True)
class Stats:
    """Counters of one dispatcher, read at one moment (``Dispatcher.stats()``).

    - ``enqueued``, ``enqueued_bytes``: payloads (and their bytes) accepted.
    - ``rejected_full``: ``enqueue`` calls that raised ``QueueFull``.
    - ``rejected_too_large``: ``enqueue`` calls that raised ``PayloadTooLarge``.
    - ``batches``, ``items``: batches (and the payloads in them) handed to consumers.
    - ``dropped``: payloads dropped by ``stop()`` or a timed-out ``shutdown()``.
    - ``buffered_bytes``: payload bytes tempo owns now (buffered, or handed out
      and not yet released).
    - ``max_buffered_bytes``: the configured bound on ``buffered_bytes``.
    """

    enqueued: int
    enqueued_bytes: int
    rejected_full: int
    rejected_too_large: int
    batches: int
    items: int
    dropped: int
    buffered_bytes: int
    max_buffered_bytes: int
