"""A pure-Python byte batcher with tempo's batching semantics: the honest competitor.

This is what a careful Python programmer would write instead of using tempo, and
what ``tempo bench`` and the scripts in bench/ measure tempo against.
It is meant to be good, not a strawman:

- one ``threading.Lock`` shared by two ``Condition`` s (consumers wait on one,
  the interval timer on the other, so a notify never wakes the wrong kind of
  waiter);
- the open batch is a plain ``list`` of ``bytes``; sealed batches are
  ``(list, nbytes)`` pairs in a ``collections.deque``;
- payloads that are already ``bytes`` are kept by reference (they are
  immutable, so no copy is needed); other bytes-like objects are copied once;
- the timer thread sleeps until the open batch's deadline (re-checking it on
  waking, since a size seal may have opened a newer batch) and is notified only
  when a batch opens while it is idle, never per payload.

Semantics (same as tempo's core):

- ``max_batch_bytes > 0``: a payload that would push a non-empty batch over the
  limit seals it first; a batch that reaches the limit is sealed at once; a
  payload larger than the limit goes alone.  ``0`` turns shaping off.
- ``interval``: the open batch is sealed ``interval`` seconds after its first
  payload, by the timer thread.
- ``max_buffered_bytes``: admission control.  Bytes count from ``enqueue`` until
  a consumer takes their batch with ``get_batch``; a payload that does not fit
  now raises ``QueueFull`` (one that can never fit raises ``PayloadTooLarge``).
- ``get_batch(timeout)`` returns a ``list`` of ``bytes`` (enqueue order), raises
  ``TimeoutError`` if nothing is sealed in time and ``Stopped`` after ``stop()``.
"""

from __future__ import annotations

import threading
from collections import deque
from time import monotonic

__all__ = ["Batcher", "QueueFull", "PayloadTooLarge", "Stopped"]


class QueueFull(Exception):
    """The payload would fit within ``max_buffered_bytes``, but not now."""


class PayloadTooLarge(ValueError):
    """The payload is larger than ``max_buffered_bytes``."""


class Stopped(Exception):
    """The batcher was stopped."""


class Batcher:
    """Batch byte payloads by size and by time; see the module docstring."""

    def __init__(self, *, interval: float, max_buffered_bytes: int, max_batch_bytes: int = 0):
        if not interval > 0 or max_buffered_bytes <= 0 or max_batch_bytes < 0:
            raise ValueError("invalid configuration")
        self.interval = float(interval)
        self.max_buffered_bytes = max_buffered_bytes
        self.max_batch_bytes = max_batch_bytes
        lock = threading.Lock()
        self._ready = threading.Condition(lock)  # consumers wait here
        self._timer_cv = threading.Condition(lock)  # the timer thread waits here
        self._open: list[bytes] = []
        self._open_bytes = 0
        self._deadline = 0.0
        self._sealed: deque[tuple[list[bytes], int]] = deque()
        self._buffered = 0  # bytes enqueued and not yet taken by a consumer
        self._stopped = False
        self._timer_idle = False  # True while the timer waits for a batch to open
        self._timer = threading.Thread(target=self._run_timer, name="purepy-timer", daemon=True)
        self._timer.start()

    def enqueue(self, payload: bytes | bytearray | memoryview) -> None:
        """Add one payload to the open batch, or raise ``QueueFull``."""
        if type(payload) is not bytes:
            payload = bytes(payload)  # mutable buffers must be copied once
        n = len(payload)
        if n > self.max_buffered_bytes:
            raise PayloadTooLarge("payload exceeds configured buffered byte limit")
        limit = self.max_batch_bytes
        with self._ready:
            if self._stopped:
                raise Stopped("batcher stopped")
            if self._buffered + n > self.max_buffered_bytes:
                raise QueueFull("batcher queue full")
            self._buffered += n
            if limit and self._open and self._open_bytes + n > limit:
                self._seal()
            if not self._open:
                self._deadline = monotonic() + self.interval
                if self._timer_idle:  # only an idle timer needs waking
                    self._timer_idle = False
                    self._timer_cv.notify()
            self._open.append(payload)
            self._open_bytes += n
            if limit and self._open_bytes >= limit:
                self._seal()

    def get_batch(self, timeout: float | None = None) -> list[bytes]:
        """Take the oldest sealed batch, waiting up to ``timeout`` seconds."""
        with self._ready:
            if not self._sealed:
                deadline = None if timeout is None else monotonic() + timeout
                while not self._sealed:
                    if self._stopped:
                        raise Stopped("batcher stopped")
                    remaining = None if deadline is None else deadline - monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError("no batch ready")
                    self._ready.wait(remaining)
            batch, nbytes = self._sealed.popleft()
            self._buffered -= nbytes
            return batch

    def stop(self) -> None:
        """Drop everything buffered, wake every waiter; idempotent."""
        with self._ready:
            self._stopped = True
            self._open = []
            self._open_bytes = 0
            self._sealed.clear()
            self._buffered = 0
            self._ready.notify_all()
            self._timer_cv.notify_all()

    # Internals: called with the lock held.

    def _seal(self) -> None:
        self._sealed.append((self._open, self._open_bytes))
        self._open = []
        self._open_bytes = 0
        self._ready.notify()

    def _run_timer(self) -> None:
        with self._timer_cv:
            while not self._stopped:
                if not self._open:
                    self._timer_idle = True
                    self._timer_cv.wait()
                    continue
                remaining = self._deadline - monotonic()
                if remaining > 0:
                    self._timer_cv.wait(remaining)
                else:
                    self._seal()
