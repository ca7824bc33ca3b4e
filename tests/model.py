"""A pure-Python model of tempo's contract, for the model-based tests.

The model knows nothing of arenas, slots or memoryviews: it keeps payloads as
``bytes`` in lists and answers, for each public operation, what the contract
says must happen (a value, or the exception class to raise) and what every
``stats()`` field must read afterwards. ``tests/test_model.py`` drives it and
a real ``tempo.Dispatcher`` side by side.

Time is taken out: the dispatcher under test has an interval far longer than
any test, so batches are sealed only by size, ``flush()``, ``shutdown()`` and
``stop()``.

Ownership (README, "Ownership" and "Memory") is modelled as the contract
states it: a batch's bytes stay owned until the batch is released (or its
last reference dropped, or it was dropped by ``stop()``) *and* no view of it
is alive; space comes back in order, so an owned batch also keeps every later
batch's bytes owned. The bookkeeping bound ("a bounded number of payloads at
once", README "Memory") is ``max_items``: admission also refuses a payload
when that many are owned.

To extend it (new ``Dispatcher`` methods or ``Stats`` fields): add a method
returning an ``Outcome`` and, for a new counter, a key in ``stats()``; the
state machine compares every key of ``stats()`` with the real snapshot.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import tempo

NEW, RUNNING, SHUTTING_DOWN, FINISHED = "new", "running", "shutting down", "finished"


@dataclass
class Outcome:
    """What a call must do: return ``value``, or raise ``error`` (a class)."""

    value: object = None
    error: Optional[type] = None
    #: The error's message, where it is not the class's default message.
    message: Optional[str] = None


OK = Outcome()


def fails(error: type) -> Outcome:
    return Outcome(error=error)


@dataclass(eq=False)
class MBatch:
    """A sealed batch in the model."""

    items: list[bytes]
    nbytes: int
    since: object = None  # when its first payload arrived (opaque to the model)
    delivered: bool = False
    dropped: bool = False
    released: bool = False
    referenced: bool = True  # the consumer still holds the Batch object
    views: int = 0  # kept memoryviews (and slices) of its items

    @property
    def returned(self) -> bool:
        """True once the contract lets tempo reuse the batch's space."""
        if self.dropped:
            return True
        return self.delivered and (self.released or not self.referenced) and self.views == 0


@dataclass
class Model:
    max_buffered_bytes: int
    max_batch_bytes: int
    max_items: int
    max_batch_items: int = 0
    #: Whether Stats has waiting_batches and held_batches (the api branch).
    batch_counts: bool = False
    state: str = NEW
    open: list[bytes] = field(default_factory=list)
    # Every sealed batch whose space is not yet back, in seal order (the
    # front is the oldest: while it is owned, so is everything after it).
    ring: deque[MBatch] = field(default_factory=deque)
    undelivered: deque[MBatch] = field(default_factory=deque)
    enqueued: int = 0
    enqueued_bytes: int = 0
    rejected_full: int = 0
    rejected_too_large: int = 0
    batches: int = 0
    items: int = 0
    dropped: int = 0
    # Running totals of the ring and the open batch (bursts of thousands of
    # payloads must not make the model quadratic).
    ring_bytes: int = 0
    ring_items: int = 0
    open_bytes: int = 0
    open_since: object = None

    # -- what is owned ----------------------------------------------------------

    def _trim(self) -> None:
        while self.ring and self.ring[0].returned:
            batch = self.ring.popleft()
            self.ring_bytes -= batch.nbytes
            self.ring_items -= len(batch.items)

    def owned_bytes(self) -> int:
        self._trim()
        return self.ring_bytes + self.open_bytes

    def owned_items(self) -> int:
        self._trim()
        return self.ring_items + len(self.open)

    def stats(self) -> dict[str, int]:
        """Every ``tempo.Stats`` field, as the contract says it must read now
        (``oldest_wait``, a time, is checked against ``oldest_since()``)."""
        counts = {}
        if self.batch_counts:
            self._trim()
            counts = {
                "waiting_batches": len(self.undelivered),
                "held_batches": sum(1 for b in self.ring if b.delivered),
            }
        return {
            "enqueued": self.enqueued,
            "enqueued_bytes": self.enqueued_bytes,
            "rejected_full": self.rejected_full,
            "rejected_too_large": self.rejected_too_large,
            "batches": self.batches,
            "items": self.items,
            "dropped": self.dropped,
            "buffered_bytes": self.owned_bytes(),
            "max_buffered_bytes": self.max_buffered_bytes,
            "buffered_items": self.owned_items(),
            "max_buffered_items": self.max_items,
            **counts,
        }

    def oldest_since(self) -> object:
        """When the oldest payload not yet handed out arrived (None if none)."""
        if self.undelivered:
            return self.undelivered[0].since
        return self.open_since if self.open else None

    # -- operations -------------------------------------------------------------

    def _seal(self) -> None:
        if self.open:
            batch = MBatch(self.open, self.open_bytes, self.open_since)
            self.open = []
            self.open_bytes = 0
            self.ring.append(batch)
            self.ring_bytes += batch.nbytes
            self.ring_items += len(batch.items)
            self.undelivered.append(batch)

    def admits(self, size: int) -> Outcome:
        """Whether ``enqueue`` of a valid payload of ``size`` bytes succeeds now."""
        if self.state == FINISHED:
            return fails(tempo.Stopped)
        if self.state == SHUTTING_DOWN:
            return fails(tempo.ShuttingDown)
        if size > self.max_buffered_bytes:
            return fails(tempo.PayloadTooLarge)
        owned, items = self.owned_bytes(), self.owned_items()
        limit = self.max_buffered_bytes
        # QueueFull says which limit was hit, with the numbers.
        if owned + size > limit:
            return Outcome(error=tempo.QueueFull, message=(
                f"tempo: dispatcher queue full: payload bytes: {owned} owned + "
                f"a payload of {size} > max_buffered_bytes={limit}"))
        if items >= self.max_items:
            return Outcome(error=tempo.QueueFull, message=(
                f"tempo: dispatcher queue full: item slots: {items} items owned, the item "
                f"capacity (stats().max_buffered_items); {owned} of "
                f"max_buffered_bytes={limit} bytes owned"))
        return OK

    def enqueue(self, payload: bytes, when: object = None) -> Outcome:
        """``enqueue(payload, timeout=0)`` of a valid (contiguous bytes-like)
        payload; ``when`` is recorded as its arrival time."""
        outcome = self.admits(len(payload))
        if outcome.error is tempo.QueueFull:
            self.rejected_full += 1
        elif outcome.error is tempo.PayloadTooLarge:
            self.rejected_too_large += 1
        if outcome.error is None:
            self._push(payload, when)
        return outcome

    def _push(self, payload: bytes, when: object) -> None:
        limit = self.max_batch_bytes
        if limit and self.open and self.open_bytes + len(payload) > limit:
            self._seal()
        if not self.open:
            self.open_since = when
        self.open.append(bytes(payload))
        self.open_bytes += len(payload)
        self.enqueued += 1
        self.enqueued_bytes += len(payload)
        if ((limit and self.open_bytes >= limit)
                or (self.max_batch_items and len(self.open) >= self.max_batch_items)):
            self._seal()

    def enqueue_many(self, payloads: list, when: object = None) -> Outcome:
        """``enqueue_many(payloads, timeout=0)``. An entry is ``bytes`` (a valid
        payload's contents) or the exception class ``enqueue`` raises for it
        (an invalid buffer: ``TypeError``, ``BufferError``). The outcome's
        value is the count accepted (also when it raises: ``exc.accepted``)."""
        accepted = 0
        for p in payloads:
            if isinstance(p, type):
                return Outcome(value=accepted, error=p)
            outcome = self.admits(len(p))
            if outcome.error is tempo.QueueFull:
                self.rejected_full += 1  # once, and the call returns
                break
            if outcome.error is tempo.PayloadTooLarge:
                self.rejected_too_large += 1
            if outcome.error is not None:
                return Outcome(value=accepted, error=outcome.error)
            self._push(p, when)
            accepted += 1
        return Outcome(value=accepted)

    def start(self) -> Outcome:
        if self.state == FINISHED:
            return fails(tempo.Stopped)
        if self.state == NEW:
            self.state = RUNNING
        return OK

    def get_batch(self) -> Outcome:
        """``get_batch(timeout=0)``: the next batch (an ``MBatch``) or an error."""
        if self.state != NEW and self.undelivered:
            batch = self.undelivered.popleft()
            batch.delivered = True
            self.batches += 1
            self.items += len(batch.items)
            return Outcome(value=batch)
        if self.state == FINISHED:
            return fails(tempo.Stopped)
        return fails(TimeoutError)

    def stop(self) -> Outcome:
        if self.state != FINISHED:
            self._seal()
            for batch in self.undelivered:
                batch.dropped = True
                self.dropped += len(batch.items)
            self.undelivered.clear()
            self.state = FINISHED
        return OK

    def seal_for_flush(self) -> Outcome:
        """The first half of ``flush()``: Stopped if finished, else seal."""
        if self.state == FINISHED:
            return fails(tempo.Stopped)
        self._seal()
        return OK

    def flush(self) -> Outcome:
        """``flush(timeout=0)``: seal, then TimeoutError unless all was handed out."""
        outcome = self.seal_for_flush()
        if outcome.error is None and self.undelivered:
            return fails(TimeoutError)
        return outcome

    def begin_shutdown(self) -> bool:
        """The first half of ``shutdown()``; False if it returns at once."""
        if self.state == FINISHED:
            return False
        self.state = SHUTTING_DOWN
        self._seal()
        return True

    def shutdown(self) -> Outcome:
        """``shutdown(timeout=0)``: finished if all was handed out, else drop and
        raise TimeoutError."""
        if not self.begin_shutdown():
            return OK
        if self.undelivered:
            self.stop()
            return fails(TimeoutError)
        self.state = FINISHED
        return OK

    def finish_if_drained(self) -> bool:
        """A waiting graceful ``shutdown()`` returns once all was handed out."""
        if self.state == SHUTTING_DOWN and not self.undelivered:
            self.state = FINISHED
            return True
        return False
