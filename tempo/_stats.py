"""``Stats``: a frozen snapshot of a dispatcher's counters."""

from __future__ import annotations

from dataclasses import dataclass

from . import _core

__all__ = ["Stats"]


@dataclass(frozen=True)
class Stats:
    """Counters of one dispatcher, read at one moment (``Dispatcher.stats()``).

    - ``enqueued``, ``enqueued_bytes``: payloads (and their bytes) accepted.
    - ``rejected_full``: payloads refused for want of space: ``enqueue``
      calls that raised ``QueueFull``, plus one for each ``enqueue_many``
      that stopped at a payload that did not fit.
    - ``rejected_too_large``: ``enqueue`` calls that raised ``PayloadTooLarge``.
    - ``batches``, ``items``: batches (and the payloads in them) handed to consumers.
    - ``dropped``: payloads dropped by ``stop()`` or a timed-out ``shutdown()``.
    - ``buffered_bytes``: payload bytes tempo owns now (buffered, or handed out
      and not yet released).
    - ``max_buffered_bytes``: the configured bound on ``buffered_bytes``.
    - ``buffered_items``: payloads tempo owns now (counted as
      ``buffered_bytes`` is: buffered, or handed out and not yet back).
    - ``max_buffered_items``: the item capacity, the most payloads owned at
      once (a bound of the bookkeeping, set by ``max_buffered_bytes``; see
      docs/rules.md). ``QueueFull`` comes from whichever of the two limits,
      bytes or items, a payload would pass, and its message says which.
    - ``waiting_batches``: batches sealed and not yet handed to a consumer.
    - ``held_batches``: batches handed out whose bytes are not back yet (not
      released, pinned by a view, or released behind one that is not).
    - ``oldest_wait``: seconds the oldest payload not yet handed out (sealed
      or still in the open batch) has waited; 0.0 if there is none.
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
    buffered_items: int
    max_buffered_items: int
    waiting_batches: int
    held_batches: int
    oldest_wait: float

    @classmethod
    def _of(cls, core: "_core.Core") -> "Stats":
        """The one place a ``Stats`` is built from the core's counters
        (``Core._counters()``: the fields in order, then when the oldest
        payload not handed out arrived, which becomes ``oldest_wait``)."""
        (enqueued, enqueued_bytes, rejected_full, rejected_too_large, batches, items,
         dropped, buffered_bytes, max_buffered_bytes, waiting_batches, held_batches,
         oldest, buffered_items, max_buffered_items) = core._counters()
        return cls(
            enqueued=enqueued,
            enqueued_bytes=enqueued_bytes,
            rejected_full=rejected_full,
            rejected_too_large=rejected_too_large,
            batches=batches,
            items=items,
            dropped=dropped,
            buffered_bytes=buffered_bytes,
            max_buffered_bytes=max_buffered_bytes,
            buffered_items=buffered_items,
            max_buffered_items=max_buffered_items,
            waiting_batches=waiting_batches,
            held_batches=held_batches,
            oldest_wait=_core._age(oldest),
        )
