"""``Dispatcher``: the lifecycle around the compiled core.

The hot path (``enqueue``, ``get_batch``, batch release) is ``tempo._core.Core``,
inherited unchanged, so calling it costs one C method call. This module adds
what is not hot: starting the driver thread, ``stop``/``shutdown``/``flush``,
iteration, the context manager and asyncio. Fork and interpreter exit have
their own modules, tempo._fork and tempo._exit.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Optional

from . import _core, _exit, _fork  # noqa: F401 - _fork installs the fork hook
from ._core import Batch
from ._config import Config, Interval
from ._errors import Stopped
from ._stats import Stats

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Dispatcher"]


class Dispatcher(_core.Core):
    """Batches byte payloads: ``enqueue`` one at a time, take sealed batches out.

    Arguments are keyword-only:

    - ``interval``: seconds (``int``/``float``) or a ``datetime.timedelta``,
      greater than zero. A batch is sealed ``interval`` seconds after its first
      payload arrived, if nothing sealed it first.
    - ``max_buffered_bytes``: the hard bound on payload bytes tempo owns
      (buffered, or handed out and not yet released).
    - ``max_batch_bytes``: optional batch shaping; 0 (the default) turns it
      off. A batch is sealed before a payload would push it over this size,
      and as soon as it reaches it.
    - ``max_batch_items``: optional cap on items per batch; 0 (the default)
      turns it off. A batch is sealed as soon as it holds this many.
    - ``prefault``: ``True`` faults in every page of the buffer here, so
      that no ``enqueue`` pays a page fault on the first lap through it (see
      docs/internals.md, "The first lap"); resident memory is
      ``max_buffered_bytes`` from the start, and making the dispatcher takes
      the time to fault it in (about 1 s per GiB on a small VM). ``False``
      (the default): the driver thread faults pages in a bounded distance
      ahead of the writer, and resident memory grows with use.

    Raises ``ConfigError`` (a ``ValueError``) for values out of range and
    ``TypeError`` for values of the wrong type. A dispatcher is initialised
    once: calling ``__init__`` again raises ``TypeError`` and changes nothing.
    It cannot be pickled or copied.
    """

    def __init__(
        self,
        *,
        interval: Interval,
        max_buffered_bytes: int,
        max_batch_bytes: int = 0,
        max_batch_items: int = 0,
        prefault: bool = False,
    ) -> None:
        if "_config" in self.__dict__:
            raise TypeError(_core._INIT_ONCE)
        config = Config(
            interval=interval,
            max_buffered_bytes=max_buffered_bytes,
            max_batch_bytes=max_batch_bytes,
            max_batch_items=max_batch_items,
            prefault=prefault,
        )
        super().__init__(
            config.interval,
            config.max_batch_bytes,
            config.max_buffered_bytes,
            config.max_batch_items,
            config.prefault,
        )
        self._config = config
        self._driver: Optional[threading.Thread] = None
        _exit.track(self)

    def __repr__(self) -> str:
        c = self._config
        return (
            f"<tempo.Dispatcher {self._state_name()} interval={c.interval!r} "
            f"max_batch_bytes={c.max_batch_bytes} max_buffered_bytes={c.max_buffered_bytes}"
            f"{f' max_batch_items={c.max_batch_items}' if c.max_batch_items else ''}"
            f"{' prefault=True' if c.prefault else ''}>"
        )

    def __reduce__(self) -> Any:
        """Refuse pickling and copying: a dispatcher owns a driver thread and a
        memory buffer that cannot be duplicated. Make a new one with the same
        config instead: ``Dispatcher(**dataclasses.asdict(d.config))``."""
        raise TypeError(
            "a Dispatcher cannot be pickled or copied: it owns threads and a memory "
            "buffer; make a new one with the same config instead"
        )

    @property
    def config(self) -> Config:
        """The validated configuration (a frozen ``tempo.Config``)."""
        return self._config

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start dispatching: batches go to consumers, intervals are timed.

        Returns at once. A second call is a no-op; after the dispatcher is
        finished it raises ``Stopped``.
        """
        if self._start():
            self._spawn_driver()

    def _spawn_driver(self) -> None:
        # A daemon: tempo never keeps the interpreter from exiting. It holds
        # the dispatcher only weakly between steps, so a dispatcher nobody
        # references any more is collected and its driver ends.
        driver = threading.Thread(
            target=_run_driver, args=(weakref.ref(self),), name="tempo-driver", daemon=True
        )
        self._driver = driver
        driver.start()

    def stop(self) -> None:
        """Stop at once: drop what is buffered and not handed out.

        New enqueues raise ``Stopped``; every waiting consumer is woken (and
        gets ``Stopped``); a waiting ``shutdown()`` raises ``Stopped``. Batches
        already handed out stay valid. Safe to call twice, and before
        ``start()``.
        """
        self._stop()

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Graceful stop: seal the open batch and drain it to consumers.

        New enqueues raise ``ShuttingDown`` at once. Returns when every sealed
        batch has been handed to a consumer; the dispatcher is then finished
        (enqueue raises ``Stopped``). If ``timeout`` seconds pass first, what
        is left is dropped, the dispatcher stops, and ``TimeoutError`` is
        raised. If ``stop()`` is called meanwhile, raises ``Stopped``. On a
        finished dispatcher it returns at once.
        """
        _core._timeout_seconds(timeout)  # a bad timeout must not half-apply
        if not self._begin_shutdown():
            return
        outcome = self._wait_delivered(self._seal_now(), timeout)
        if outcome == 0:
            self._finish()
        elif outcome == 1:
            raise Stopped()
        else:
            self._stop()
            raise TimeoutError("tempo: shutdown timed out; undelivered payloads were dropped")

    def flush(self, timeout: Optional[float] = None) -> None:
        """Seal the open batch now and wait until every batch sealed so far
        was handed to a consumer. The dispatcher keeps running.

        Raises ``TimeoutError`` if that takes longer than ``timeout`` seconds
        (nothing is dropped), ``Stopped`` if the dispatcher is finished or
        ``stop()`` is called while it waits. Before ``start()`` nothing is
        handed out, so a flush waits for ``start()`` (or times out).
        """
        _core._timeout_seconds(timeout)  # a bad timeout must not half-apply
        if self._state_name() == "finished":
            raise Stopped()
        outcome = self._wait_delivered(self._seal_now(), timeout)
        if outcome == 1:
            raise Stopped()
        if outcome == 2:
            raise TimeoutError("tempo: flush timed out; the batches are still queued")

    def batches(self) -> Iterator[Batch]:
        """Iterate over batches until the dispatcher is finished.

        Each batch is released when the loop asks for the next one (or when
        the loop ends): keep a copy (``bytes(item)``, ``batch.tolist()``) of
        anything you need afterwards.
        """
        while True:
            try:
                batch = self.get_batch()
            except Stopped:
                return
            try:
                yield batch
            finally:
                batch.release()

    def stats(self) -> Stats:
        """A snapshot of the dispatcher's counters (a frozen ``tempo.Stats``)."""
        c = self._counters()
        return Stats(*c[:9], buffered_items=c[12], max_buffered_items=c[13],
                     waiting_batches=c[9], held_batches=c[10], oldest_wait=_core._age(c[11]))

    def __enter__(self) -> "Dispatcher":
        """``with Dispatcher(...) as d:`` starts the dispatcher."""
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Leaving the block: ``shutdown()`` (waits for consumers to take every
        batch), or ``stop()`` if the block raised."""
        if exc_type is None:
            self.shutdown()
        else:
            self.stop()

    # -- asyncio ----------------------------------------------------------------

    async def aget_batch(self, timeout: Optional[float] = None) -> Batch:
        """``get_batch`` for asyncio: waits without blocking the event loop.

        Cancelling the waiting task loses no batch: a batch is either
        returned or stays queued for the next consumer.
        """
        from ._aio import get_batch

        return await get_batch(self, timeout)

    async def abatches(self) -> AsyncIterator[Batch]:
        """``batches()`` for asyncio: ``async for batch in d.abatches()``.

        Ends once the dispatcher is finished. Each batch is released when the
        loop asks for the next one; after a ``break`` the generator (and so
        the last batch) is closed only when it is collected, so wrap it in
        ``contextlib.aclosing`` to release at once.
        """
        while True:
            try:
                batch = await self.aget_batch()
            except Stopped:
                return
            try:
                yield batch
            finally:
                batch.release()

    async def ashutdown(self, timeout: Optional[float] = None) -> None:
        """``shutdown`` for asyncio: waits without blocking the event loop.

        Same outcomes as ``shutdown()``. If the awaiting task is cancelled the
        dispatcher stays shutting down (new enqueues keep failing); call
        ``stop()`` or ``shutdown()`` to finish it.
        """
        from ._aio import shutdown

        await shutdown(self, timeout)

    async def aenqueue(self, payload: Buffer, timeout: Optional[float] = None) -> None:
        """``enqueue`` for asyncio: waits for space without blocking the loop.

        ``timeout`` is how long to wait when the queue is full: ``None`` (the
        default) waits as long as it takes, ``0`` fails at once. Raises what
        ``enqueue`` raises (``QueueFull`` once the timeout passes). The
        payload is copied when it is accepted, not before; cancelling the
        waiting task leaves it not enqueued.
        """
        from ._aio import enqueue

        await enqueue(self, payload, timeout)

    async def aflush(self, timeout: Optional[float] = None) -> None:
        """``flush`` for asyncio: waits without blocking the event loop.

        Same outcomes as ``flush()``; cancelling the awaiting task cancels
        only the wait (the batches stay queued).
        """
        from ._aio import flush

        await flush(self, timeout)

    async def __aenter__(self) -> "Dispatcher":
        """``async with Dispatcher(...) as d:`` starts the dispatcher."""
        self.start()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Leaving the block: ``await ashutdown()`` (waits for consumers to
        take every batch), or ``stop()`` if the block raised."""
        if exc_type is None:
            await self.ashutdown()
        else:
            self.stop()


# -- the driver thread -----------------------------------------------------------

#: The longest the driver sleeps before looking whether its dispatcher is
#: still referenced.
_DRIVER_CHECK = 0.25


def _run_driver(ref: "weakref.ref[Dispatcher]") -> None:
    while True:
        dispatcher = ref()
        if dispatcher is None or not dispatcher._drive(_DRIVER_CHECK):
            return
        del dispatcher
