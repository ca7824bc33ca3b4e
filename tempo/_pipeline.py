"""``Pipeline``: the managed consumer (a dispatcher, its workers, retries, dead letters).

Built only on the public ``Dispatcher`` API: the workers take batches with
``get_batch()``/``aget_batch()`` like any consumer would, so everything the
contract says about a dispatcher holds for a pipeline's dispatcher too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Callable, Optional

from . import _lifecycle
from ._config import Interval, _name
from ._core import Batch
from ._dispatcher import Dispatcher
from ._errors import ConfigError, Stopped, _count
from ._protocol import timeout_seconds, wait_arg
from ._stats import Stats

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Pipeline", "PipelineStats", "Retry", "Unretryable"]

_log = logging.getLogger("tempo")

#: What ``Pipeline`` accepts as a sink: ``sink(batch)``, plain or ``async def``.
#: What a plain sink returns is ignored (``sock.sendmsg`` returns a count),
#: hence ``object``.
Sink = Callable[[Batch], object]
#: ``on_failure(batch, exc)``: called with a batch that exhausted its attempts.
OnFailure = Callable[[Batch, BaseException], object]

#: Failure reports of one pipeline are at least this many seconds apart: a
#: flapping sink is counted in ``stats()``, not logged once per batch.
_REPORT_GAP = 60.0

#: The most workers a pipeline may have: each is a thread (or a task), and a
#: sink that needs more in flight at once is better served by batching more.
MAX_WORKERS = 1024


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        seconds = math.inf
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ConfigError(f"tempo: retry {name} must be a finite number of seconds >= 0")
    return seconds


def _left(deadline: float) -> Optional[float]:
    """Seconds until ``deadline`` for a blocking wait: None (forever) when it is
    beyond what the OS clock can wait, never negative."""
    return wait_arg(deadline - time.monotonic())


_log_safely = _lifecycle.log_safely


@dataclass(frozen=True)
class Retry:
    """How a ``Pipeline`` retries a sink that raised.

    - ``attempts``: calls of the sink per batch, the first included (1 = no
      retry). Default 5.
    - ``backoff``: seconds, the shortest wait before a retry. Default 0.1.
    - ``max_backoff``: seconds, the longest wait before a retry. Default 5.0.

    The waits grow exponentially, with jitter ("decorrelated jitter"): each
    is a random time between ``backoff`` and three times the previous wait,
    capped at ``max_backoff``, so many pipelines failing together do not
    retry in lockstep. A wait ends at once when the pipeline is stopped.

    Raises ``ConfigError`` (a ``ValueError``) for values out of range and
    ``TypeError`` for values of the wrong type.
    """

    attempts: int
    backoff: float
    max_backoff: float

    def __init__(self, attempts: int = 5, backoff: float = 0.1, max_backoff: float = 5.0) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"attempts must be an int, not {type(attempts).__name__!r}")
        if attempts < 1:
            raise ConfigError("tempo: retry attempts must be at least 1")
        low = _seconds("backoff", backoff)
        high = _seconds("max_backoff", max_backoff)
        if high < low:
            raise ConfigError("tempo: retry max_backoff must not be less than backoff")
        object.__setattr__(self, "attempts", attempts)
        object.__setattr__(self, "backoff", low)
        object.__setattr__(self, "max_backoff", high)

    def _next_wait(self, previous: float) -> float:
        return min(self.max_backoff, random.uniform(self.backoff, previous * 3))


class Unretryable(Exception):
    """Raised by a sink for a batch that no retry can deliver (it is too large
    for the far side, say): the batch goes to ``on_failure`` at once, with this
    exception, whatever ``Retry.attempts`` allows.

    Raise it ``from`` the original error to keep that in the traceback.
    """


@dataclass(frozen=True)
class PipelineStats(Stats):
    """A pipeline's counters: its dispatcher's ``tempo.Stats``, plus

    - ``delivered_batches``, ``delivered_items``: batches (and their payloads)
      the sink returned from, at the first attempt or after retries.
    - ``failed_batches``, ``failed_items``: batches that exhausted their
      attempts (or were given up by ``stop()``) and went to ``on_failure``.
    - ``retries``: sink calls after a first attempt raised.

    A batch is counted once its sink (and ``on_failure``) returned and the
    batch was released.
    """

    delivered_batches: int
    delivered_items: int
    failed_batches: int
    failed_items: int
    retries: int


class _Counts:
    """One worker's counters: only that worker writes them, so no lock."""

    __slots__ = ("delivered_batches", "delivered_items", "failed_batches", "failed_items", "retries")

    def __init__(self) -> None:
        self.delivered_batches = 0
        self.delivered_items = 0
        self.failed_batches = 0
        self.failed_items = 0
        self.retries = 0

    def add(self, delivered: bool, items: int) -> None:
        if delivered:
            self.delivered_batches += 1
            self.delivered_items += items
        else:
            self.failed_batches += 1
            self.failed_items += items


class _Reporter:
    """Logs a pipeline's failures on the ``tempo`` logger without flooding it.

    The first failed batch of a streak (failures with no delivery between
    them) is logged with its exception, unless another failure was logged in
    the last ``_REPORT_GAP`` seconds; the end of a logged streak is logged
    too. Everything else is only counted in ``stats()``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        # Each record names its pipeline in the text and, for log
        # processors, as the record attribute ``tempo_name``.
        self.subject = f"pipeline {name!r}"
        self.extra = {"tempo_name": name}
        self.lock = threading.Lock()
        self.in_streak = False
        self.streak_logged = False
        self.streak_batches = 0
        self.last_logged = -math.inf
        self.last_dead_letter_logged = -math.inf

    def failed(self, items: int, attempts: int, exc: BaseException) -> None:
        with self.lock:
            now = time.monotonic()
            log = not self.in_streak and now - self.last_logged >= _REPORT_GAP
            if not self.in_streak:
                self.in_streak = True
                self.streak_logged = log
                self.streak_batches = 0
            self.streak_batches += 1
            if log:
                self.last_logged = now
        if log:
            _log_safely(
                logging.ERROR,
                "%s: the sink failed; a batch of %s was given up after %s (%s: %s). "
                "Further failures are counted in stats(), not logged, until a batch "
                "is delivered again",
                self.subject, _count(items, "item"), _count(attempts, "attempt"),
                type(exc).__name__, exc,
                exc_info=(type(exc), exc, exc.__traceback__), extra=self.extra,
            )

    def delivered(self) -> None:
        if not self.in_streak:  # the common case: no lock
            return
        with self.lock:
            if not self.in_streak:
                return
            self.in_streak = False
            logged, batches = self.streak_logged, self.streak_batches
        if logged:
            _log_safely(
                logging.WARNING,
                "%s: the sink delivers again, after %s",
                self.subject, _count(batches, "failed batch", "failed batches"), extra=self.extra,
            )

    def dead_letter_failed(self, exc: BaseException) -> None:
        with self.lock:
            now = time.monotonic()
            log = now - self.last_dead_letter_logged >= _REPORT_GAP
            if log:
                self.last_dead_letter_logged = now
        if log:
            _log_safely(
                logging.ERROR,
                "%s: on_failure raised; the batch is counted in failed_batches "
                "(further on_failure errors within %g s are not logged)",
                self.subject, _REPORT_GAP, exc_info=(type(exc), exc, exc.__traceback__),
                extra=self.extra,
            )


def _is_async(sink: object) -> bool:
    # An instance whose __call__ is a coroutine function is async too.
    return inspect.iscoroutinefunction(sink) or inspect.iscoroutinefunction(
        getattr(sink, "__call__", None)  # noqa: B004 - the method itself, not callable()
    )


class Pipeline:
    """A dispatcher plus workers that call ``sink(batch)`` with every batch.

    ``sink`` is called with each sealed batch (a ``tempo.Batch``) and signals
    failure by raising (a plain sink that returns an awaitable fails too:
    make the sink itself ``async def``). A plain function runs in ``workers`` daemon threads,
    which start at once; an ``async def`` sink runs in ``workers`` tasks on the
    event loop of ``async with tempo.Pipeline(...)``. The batch is released
    when the sink (and ``on_failure``) returned: copy what you keep.

    Arguments are keyword-only, except ``sink``:

    - ``interval``, ``max_buffered_bytes``, ``max_batch_bytes``,
      ``max_batch_items``, ``prefault``: the dispatcher's (see
      ``tempo.Dispatcher``).
    - ``workers``: how many batches the sink may be processing at once
      (default 1, at most 1024). With more than one, batches may complete
      out of order.
    - ``retry``: a ``tempo.Retry``; a sink that raises is called again with
      the same batch after a backoff, up to ``retry.attempts`` calls.
    - ``on_failure``: ``on_failure(batch, exc)`` gets a batch that exhausted
      its attempts (or was waiting for a retry when ``stop()`` was called),
      with the last exception: a dead letter. It may copy the batch out
      (``batch.tolist()``, ``batch.writeall(f)``); if it raises, the error is
      logged and the worker goes on. It is a plain function, also for an
      async sink.
    - ``name``: a ``str`` that tells this pipeline apart in logs
      (``extra={"tempo_name": name}``), ``repr`` and metrics; its dispatcher
      gets the same name. ``None`` (the default) makes one: ``"pipeline-1"``,
      ``"pipeline-2"``, ...

    Failed batches are counted in ``stats()`` and logged on the ``tempo``
    logger: the first of a streak of failures, not each one.

    ``with tempo.Pipeline(...) as p:`` closes the pipeline on leaving the
    block (``close()``: every batch processed by the sink), also when the
    block raised: the payloads it accepted are not dropped for an unrelated
    error. Interrupting that wait (Ctrl-C) stops the pipeline. At interpreter
    exit, a pipeline still open is closed within tempo's exit bound.

    Raises ``ConfigError`` (a ``ValueError``) for values out of range and
    ``TypeError`` for values of the wrong type.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        interval: Interval,
        max_buffered_bytes: int,
        max_batch_bytes: int = 0,
        max_batch_items: int = 0,
        prefault: bool = False,
        workers: int = 1,
        retry: Optional[Retry] = None,
        on_failure: Optional[OnFailure] = None,
        name: Optional[str] = None,
    ) -> None:
        if not callable(sink):
            raise TypeError(f"sink must be callable, not {type(sink).__name__!r}")
        if inspect.isgeneratorfunction(sink) or inspect.isasyncgenfunction(sink):
            # Calling it would only make a generator: the body would never
            # run, and every batch would count as delivered.
            raise TypeError("sink must not be a generator function (it contains `yield`)")
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"workers must be an int, not {type(workers).__name__!r}")
        if not 1 <= workers <= MAX_WORKERS:
            raise ConfigError(f"tempo: workers must be from 1 to {MAX_WORKERS}")
        if retry is None:
            retry = Retry()
        elif not isinstance(retry, Retry):
            raise TypeError(f"retry must be a tempo.Retry, not {type(retry).__name__!r}")
        if on_failure is not None and not callable(on_failure):
            raise TypeError(f"on_failure must be callable or None, not {type(on_failure).__name__!r}")
        if on_failure is not None and _is_async(on_failure):
            # It runs inside the worker, with the batch still held: a coroutine
            # returned by it would never run and the dead letter would be lost.
            raise TypeError("on_failure must be a plain function, not 'async def'")
        name = _name(name, "pipeline")
        self._dispatcher = Dispatcher(
            interval=interval,
            max_buffered_bytes=max_buffered_bytes,
            max_batch_bytes=max_batch_bytes,
            max_batch_items=max_batch_items,
            prefault=prefault,
            name=name,
        )
        self._sink = sink
        self._async = _is_async(sink)
        self._workers = workers
        self._retry = retry
        self._on_failure = on_failure
        self._reporter = _Reporter(name)
        # Set by stop(): ends every retry wait at once.
        self._stopping = threading.Event()
        # flush() waiters: workers notify only while someone waits.
        self._progress = threading.Condition(threading.Lock())
        self._waiting = 0
        self._counts: list[_Counts] = []
        self._threads: list[threading.Thread] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._astop: Optional[asyncio.Event] = None
        # aflush() waiters, one future each, resolved by a worker task that
        # finished a batch (or ended).
        self._aflushes: set[asyncio.Future[None]] = set()
        # The producer's calls go straight to the compiled dispatcher: no
        # Python frame of ours per payload. The methods below document them.
        self.enqueue = self._dispatcher.enqueue  # type: ignore[method-assign]
        self.enqueue_many = self._dispatcher.enqueue_many  # type: ignore[method-assign]
        _lifecycle.track_pipeline(self)
        if not self._async:
            self._dispatcher.start()
            self._spawn_threads()

    def __repr__(self) -> str:
        kind = "async " if self._async else ""
        return (
            f"<tempo.Pipeline {self.name!r} {kind}sink={self._sink!r} workers={self._workers} "
            f"{self._dispatcher!r}>"
        )

    @property
    def name(self) -> str:
        """The name given as ``name=``, or the one made for it (its dispatcher's too)."""
        return self._dispatcher.name

    @property
    def dispatcher(self) -> Dispatcher:
        """The underlying ``tempo.Dispatcher`` (its workers are the only consumers)."""
        return self._dispatcher

    @property
    def retry(self) -> Retry:
        """The ``tempo.Retry`` policy."""
        return self._retry

    # -- producers (forwarded to the dispatcher) ------------------------------------

    def enqueue(self, payload: Buffer, timeout: Optional[float] = 0) -> None:
        """``Dispatcher.enqueue``: copy ``payload`` into the pipeline's buffer."""
        self._dispatcher.enqueue(payload, timeout)

    def enqueue_many(self, payloads: Iterable[Buffer], timeout: Optional[float] = 0) -> int:
        """``Dispatcher.enqueue_many``: accept a prefix of ``payloads``; return its length."""
        return self._dispatcher.enqueue_many(payloads, timeout)

    async def aenqueue(self, payload: Buffer, timeout: Optional[float] = None) -> None:
        """``Dispatcher.aenqueue``: wait for space without blocking the event loop."""
        await self._dispatcher.aenqueue(payload, timeout)

    def flush(self, timeout: Optional[float] = None) -> None:
        """Seal the open batch and wait until the sink has processed (delivered
        or given up) every batch sealed so far. The pipeline keeps running.

        Raises ``TimeoutError`` if that takes longer than ``timeout`` seconds
        (nothing is dropped), ``Stopped`` if the pipeline is stopped or closed,
        ``RuntimeError`` if called by the sink itself (it would wait for its
        own return). For an async sink, use ``await p.aflush()``.
        """
        self._not_async("flush", "aflush")
        deadline = time.monotonic() + timeout_seconds(timeout)
        if threading.current_thread() in self._threads:
            raise RuntimeError(_FLUSH_IN_SINK)
        self._dispatcher.flush(_left(deadline))
        target = self._dispatcher.stats().batches
        with self._progress:
            self._waiting += 1
            try:
                while self._processed() < target:
                    if not self._threads_alive():
                        raise Stopped()
                    left = _left(deadline)
                    if left == 0:
                        raise TimeoutError("tempo: flush timed out; the sink is still busy")
                    self._progress.wait(left)
            finally:
                self._waiting -= 1

    async def aflush(self, timeout: Optional[float] = None) -> None:
        """``flush()`` for asyncio: waits without blocking the event loop."""
        if not self._async:
            timeout_seconds(timeout)  # a bad timeout raises here, not in a thread
            # Cancelled (Ctrl-C in asyncio.run cancels the main task), the
            # wait ends at once; the flush in its thread ends with the
            # batches processed (or the pipeline closed), unseen.
            await _in_thread(self.flush, timeout, "tempo-pipeline-aflush")
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds(timeout)
        if asyncio.current_task() in self._tasks:
            raise RuntimeError(_FLUSH_IN_SINK)
        await self._dispatcher.aflush(max(0.0, deadline - loop.time()))
        target = self._dispatcher.stats().batches
        while True:
            # Registered before looking: a batch finished after this look
            # resolves it (an Event set and cleared by the worker could be
            # missed by a wait that had not started yet).
            waiter: asyncio.Future[None] = loop.create_future()
            self._aflushes.add(waiter)
            try:
                if self._processed() >= target:
                    return
                if not self._tasks or all(t.done() for t in self._tasks):
                    raise Stopped()
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError("tempo: flush timed out; the sink is still busy")
                try:
                    await asyncio.wait_for(waiter, None if math.isinf(left) else left)
                except asyncio.TimeoutError:
                    pass
            finally:
                self._aflushes.discard(waiter)

    # -- lifecycle -----------------------------------------------------------------

    def stats(self) -> PipelineStats:
        """A snapshot: the dispatcher's ``tempo.Stats`` plus the delivery counters."""
        totals = dict.fromkeys(_Counts.__slots__, 0)
        for counts in list(self._counts):
            for name in _Counts.__slots__:
                totals[name] += getattr(counts, name)
        return PipelineStats(**dataclasses.asdict(self._dispatcher.stats()), **totals)

    def stop(self) -> None:
        """Stop at once: drop what is buffered and not yet handed to a worker.

        A batch waiting for a retry goes to ``on_failure`` at once (counted as
        failed); a sink call in progress is not interrupted, and its worker
        ends after it. Returns without waiting. Safe to call twice.
        ``p.dispatcher.stop()`` does the same.
        """
        self._halt()
        self._dispatcher.stop()

    def _halt(self) -> None:
        """End every retry wait at once: the pipeline is stopped (by ``stop()``,
        or by its dispatcher's, through tempo._lifecycle.stopped)."""
        self._stopping.set()
        loop, astop = self._loop, self._astop
        if loop is not None and astop is not None:
            try:
                loop.call_soon_threadsafe(astop.set)
            except RuntimeError:  # the loop is closed: its tasks are gone
                pass

    def close(self, timeout: Optional[float] = None) -> None:
        """Graceful end: shut the dispatcher down, then wait until the sink has
        processed every batch (delivered, or given up after its retries).

        New enqueues raise ``ShuttingDown``, then ``Stopped``. If ``timeout``
        seconds pass first, the pipeline is stopped: what was not yet handed
        to a worker is dropped (counted in ``dropped``), a batch waiting for a
        retry goes to ``on_failure``, a sink call in progress finishes in the
        background; then ``TimeoutError`` is raised. Closing a closed or
        stopped pipeline returns once its workers are done. Called by the
        sink itself (or ``on_failure``), which cannot wait for its own
        worker, it starts the close and returns at once: the batches left are
        processed after the sink returns. For an async sink, use
        ``await p.aclose()``.
        """
        self._not_async("close", "aclose")
        deadline = time.monotonic() + timeout_seconds(timeout)
        if threading.current_thread() in self._threads:
            self._close_from_sink()
            return
        try:
            self._dispatcher.shutdown(_left(deadline))
        except Stopped:
            pass  # stop() was called: the workers end after their current batch
        except TimeoutError:
            self.stop()
            raise TimeoutError(
                "tempo: pipeline close timed out; undelivered payloads were dropped"
            ) from None
        for thread in self._threads:
            thread.join(_left(deadline))
            # Once every batch handed out was processed, a worker still alive
            # is only on its way out: nothing is in flight, the close is done.
            if thread.is_alive() and self._processed() < self._dispatcher.stats().batches:
                self.stop()
                raise TimeoutError("tempo: pipeline close timed out; the sink is still busy")

    async def aclose(self, timeout: Optional[float] = None) -> None:
        """``close()`` for asyncio: waits without blocking the event loop.

        With an async sink, on timeout the worker tasks are also cancelled:
        a batch whose sink call is cancelled goes to ``on_failure`` with the
        ``CancelledError``; a sink that delays its cancellation finishes in
        the background (``aclose()`` does not wait past its timeout).
        Cancelled or interrupted itself, it stops the pipeline (as
        ``__aexit__`` does). Called on a new loop after the pipeline's own
        loop has ended, it drains what is left with workers on the new loop.
        """
        if not self._async:
            timeout_seconds(timeout)  # a bad timeout raises here, not in a thread
            try:
                await _in_thread(self.close, timeout, "tempo-pipeline-aclose")
            except BaseException:
                # Cancelled (Ctrl-C in asyncio.run cancels the main task): as
                # close() on Ctrl-C, the pipeline stops; the caller does not
                # wait for the close going on in its thread.
                self.stop()
                raise
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds(timeout)
        if asyncio.current_task() in self._tasks:
            self._close_from_sink()
            return
        old = self._loop
        if old is None or (old is not loop and old.is_closed()):
            # Never entered, or its loop has ended (and its tasks with it):
            # workers on this loop drain what it holds.
            self._start_tasks(loop)
        try:
            await self._aclose_on(loop, deadline)
        except BaseException:
            # Cancelled (Ctrl-C in asyncio.run cancels the main task), or a
            # worker died: as __aexit__ and close() do, the pipeline stops,
            # so nothing is left half shut down for a later aclose().
            self.stop()
            raise

    async def _aclose_on(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        try:
            await self._dispatcher.ashutdown(max(0.0, deadline - loop.time()))
        except Stopped:
            pass
        except TimeoutError:
            self.stop()
            await self._cancel_tasks(deadline)
            raise TimeoutError(
                "tempo: pipeline close timed out; undelivered payloads were dropped"
            ) from None
        tasks = self._tasks
        if tasks:
            left = deadline - loop.time()
            _, pending = await asyncio.wait(tasks, timeout=None if math.isinf(left) else max(0.0, left))
            if pending:
                self.stop()
                await self._cancel_tasks(deadline)
                raise TimeoutError("tempo: pipeline close timed out; the sink is still busy")
        for task in tasks:  # a worker that died of a bug in tempo: say so
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    def _close_from_sink(self) -> None:
        # The sink cannot wait for batches that only its own worker (after
        # it returns) may take. Refuse new payloads and seal now, and leave
        # the rest of the shutdown (waiting for the hand-out, then finishing)
        # to a helper thread, off the worker and off any event loop.
        self._dispatcher._begin_shutdown()

        def finish() -> None:
            try:
                self._dispatcher.shutdown()
            except Stopped:
                pass  # stop() came first

        _lifecycle.helper_thread(
            threading.Thread(target=finish, name="tempo-pipeline-close", daemon=True)).start()

    def __enter__(self) -> "Pipeline":
        """``with tempo.Pipeline(...) as p:`` (plain sinks; the workers already run)."""
        self._not_async("with", "async with")
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        """Leaving the block: ``close()``, even if the block raised; ``stop()``
        if that wait is interrupted."""
        try:
            self.close()
        except BaseException:
            self.stop()
            raise

    async def __aenter__(self) -> "Pipeline":
        """``async with tempo.Pipeline(...) as p:`` starts an async sink's
        worker tasks on the running loop."""
        if self._async and self._loop is None:
            self._start_tasks(asyncio.get_running_loop())
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        """Leaving the block: ``await aclose()``, even if the block raised;
        ``stop()`` if that wait is cancelled or interrupted."""
        try:
            await self.aclose()
        except BaseException:
            self.stop()
            raise

    # -- the workers -------------------------------------------------------------------

    def _not_async(self, name: str, instead: str) -> None:
        if self._async:
            raise TypeError(f"tempo: a pipeline with an async sink: use {instead!r}, not {name!r}")

    def _spawn_threads(self) -> None:
        self._counts = [_Counts() for _ in range(self._workers)]
        self._threads = [
            threading.Thread(
                target=self._work, args=(counts,), name=f"tempo-pipeline-{i}", daemon=True
            )
            for i, counts in enumerate(self._counts)
        ]
        try:
            for thread in self._threads:
                thread.start()
        except BaseException:
            # Out of threads: the ones started would wait for ever on a
            # pipeline nobody holds (close() at exit joins only those).
            self._threads = [t for t in self._threads if t.ident is not None]
            self.stop()
            raise

    def _threads_alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _processed(self) -> int:
        return sum(c.delivered_batches + c.failed_batches for c in list(self._counts))

    def _work(self, counts: _Counts) -> None:
        get_batch = self._dispatcher.get_batch
        while True:
            try:
                batch = get_batch()
            except Stopped:
                break
            items = len(batch)
            delivered = False
            try:
                delivered = self._deliver(batch, counts)
            except BaseException as exc:  # noqa: BLE001 - a worker never dies
                # _deliver hands the sink's and on_failure's errors to the
                # batch; anything else is tempo's own fault: the batch is
                # counted as failed, said once, and the worker goes on.
                self._worker_fault(exc)
            finally:
                batch.release()
                counts.add(delivered, items)
                if self._waiting:
                    with self._progress:
                        self._progress.notify_all()
        with self._progress:  # a flush() waiting for a worker that is gone
            self._progress.notify_all()

    def _deliver(self, batch: Batch, counts: _Counts) -> bool:
        """Call the sink, retrying; False once the batch went to on_failure."""
        retry = self._retry
        wait = retry.backoff
        attempt = 1
        while True:
            try:
                result = self._sink(batch)
                if result is not None and inspect.isawaitable(result):
                    _discard(result)
                    raise TypeError(
                        "tempo: the sink returned an awaitable, which a worker thread cannot "
                        "run: make the sink itself `async def` and use `async with`"
                    )
            # Anything a sink raises in a worker thread is its failure (even a
            # SystemExit): a dead worker would leave close() waiting for ever.
            except BaseException as exc:  # noqa: BLE001 - see above
                if (attempt >= retry.attempts or isinstance(exc, Unretryable)
                        or self._stopping.is_set()):
                    self._give_up(batch, exc, attempt)
                    return False
                wait = retry._next_wait(wait)
                if self._stopping.wait(min(wait, threading.TIMEOUT_MAX)):
                    self._give_up(batch, exc, attempt)
                    return False
                counts.retries += 1
                attempt += 1
                continue
            self._reporter.delivered()
            return True

    def _worker_fault(self, exc: BaseException) -> None:
        _log_safely(
            logging.ERROR, "tempo: %s: a worker failed outside the sink; its batch is "
            "counted as failed", self._reporter.name, exc_info=(type(exc), exc, exc.__traceback__),
        )

    def _give_up(self, batch: Batch, exc: BaseException, attempts: int) -> None:
        self._reporter.failed(len(batch), attempts, exc)
        if self._on_failure is not None:
            try:
                result = self._on_failure(batch, exc)
                if result is not None and inspect.isawaitable(result):
                    _discard(result)
                    raise TypeError("tempo: on_failure returned an awaitable; it must be a "
                                    "plain function (the dead letter was not kept)")
            except Exception as error:  # noqa: BLE001 - on_failure's error is reported, and the batch counted
                self._reporter.dead_letter_failed(error)
            except BaseException as error:
                # Only an async worker is ever cancelled; in a worker thread
                # a CancelledError is just another error (a dead thread would
                # leave close() waiting for ever).
                if self._async and _cancelled(error):
                    raise
                self._reporter.dead_letter_failed(error)

    # -- async workers -----------------------------------------------------------------

    def _start_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._astop = asyncio.Event()
        if self._stopping.is_set():
            self._astop.set()
        try:
            self._dispatcher.start()
        except Stopped:
            pass  # stopped (or closed) before any loop came: the tasks end at once
        # Added to, not replaced: tasks of an ended loop (aclose() on a new
        # one) counted what they processed.
        counts = [_Counts() for _ in range(self._workers)]
        self._counts = self._counts + counts
        self._tasks = [
            loop.create_task(self._awork(c), name=f"tempo-pipeline-{i}")
            for i, c in enumerate(counts)
        ]

    async def _cancel_tasks(self, deadline: float) -> None:
        """Cancel the worker tasks; wait for them until ``deadline`` (loop time)
        at most: a sink that delays its cancellation finishes in the
        background, as a sink thread does."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            # Even past the deadline, one pass of the loop: a sink that gives
            # in at once has its batch in on_failure before aclose() raises.
            await asyncio.wait(tasks, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))

    async def _awork(self, counts: _Counts) -> None:
        aget_batch = self._dispatcher.aget_batch
        while True:
            try:
                batch = await aget_batch()
            except Stopped:
                break
            items = len(batch)
            delivered = False
            try:
                delivered = await self._adeliver(batch, counts)
            except BaseException as exc:
                if _cancelled(exc):
                    raise
                self._worker_fault(exc)
            finally:
                batch.release()
                counts.add(delivered, items)
                if self._aflushes:
                    self._wake_aflushes()
        self._wake_aflushes()  # an aflush() waiting for a worker that is gone

    def _wake_aflushes(self) -> None:
        for waiter in self._aflushes:
            if not waiter.done():
                waiter.set_result(None)

    async def _adeliver(self, batch: Batch, counts: _Counts) -> bool:
        retry = self._retry
        wait = retry.backoff
        attempt = 1
        astop = self._astop
        assert astop is not None
        sink: Callable[[Batch], Awaitable[None]] = self._sink  # type: ignore[assignment]
        try:
            while True:
                try:
                    await sink(batch)
                # Anything an async sink raises is its failure (a SystemExit
                # too), as in a worker thread; only a cancellation of the
                # worker task itself ends the worker.
                except BaseException as exc:
                    if _cancelled(exc):
                        raise
                    if (attempt >= retry.attempts or isinstance(exc, Unretryable)
                            or astop.is_set()):
                        failure = exc
                        break
                    wait = retry._next_wait(wait)
                    try:
                        await asyncio.wait_for(astop.wait(), wait)
                        failure = exc  # stop() ended the wait
                        break
                    except asyncio.TimeoutError:
                        pass
                    counts.retries += 1
                    attempt += 1
                    continue
                self._reporter.delivered()
                return True
        except asyncio.CancelledError as exc:
            self._give_up(batch, exc, attempt)
            raise
        # Outside the handler above: a cancellation while on_failure runs
        # must not give the batch up a second time.
        self._give_up(batch, failure, attempt)
        return False

    # -- exit and fork (called by tempo._lifecycle) ----------------------------------

    def _in_sink(self) -> int:
        """Payloads handed to the workers and not yet processed (in a sink
        call, a retry wait or on_failure)."""
        handed_out = self._dispatcher.stats().items
        processed = sum(c.delivered_items + c.failed_items for c in list(self._counts))
        return handed_out - processed

    def _can_work(self) -> bool:
        """The workers are there to take and process batches."""
        if not self._async:
            return self._threads_alive()
        loop = self._loop
        return (loop is not None and loop.is_running() and not loop.is_closed()
                and not all(task.done() for task in self._tasks))

    def _worker_threads(self) -> "list[threading.Thread]":
        return list(self._threads)

    def _drain_at_exit(self, deadline: float) -> None:
        """Close the pipeline by ``deadline`` (``time.monotonic()``), at interpreter exit."""
        dropped = self._dispatcher.stats().dropped
        try:
            if not self._async:
                self.close(_left(deadline))
            else:
                loop = self._loop
                if loop is None or loop.is_closed() or not loop.is_running():
                    return  # nothing can run an async sink now; tempo's own drain reports it
                if loop is _running_loop():
                    return  # cannot wait here for our own loop
                future = asyncio.run_coroutine_threadsafe(self.aclose(_left(deadline)), loop)
                try:
                    future.result(_left(deadline))
                # Before Python 3.11 this is not the built-in TimeoutError.
                except concurrent.futures.TimeoutError:
                    # The loop did not finish the close in time (it may be
                    # busy, or not even have started it): the bound is the
                    # bound, so drop the rest now and report it below.
                    future.cancel()
                    self.stop()
        except (TimeoutError, Stopped):
            pass  # reported below
        except Exception:  # noqa: BLE001 - at exit, a report beats a traceback nobody asked for
            _log_safely(logging.ERROR, "%s: draining at exit failed", self._reporter.subject,
                        exc_info=True, extra=self._reporter.extra)
        # Whatever ended the drain (the bound, a stop() from elsewhere), a
        # payload dropped now is reported, never silent; so is one still in
        # a sink call or a retry wait (then on_failure), which daemon worker
        # threads may not get to finish once the interpreter goes down.
        stats = self.stats()
        unfinished = stats.items - stats.delivered_items - stats.failed_items
        if stats.dropped > dropped or unfinished:
            _log_safely(
                logging.WARNING,
                "%s was not drained at exit: %s dropped unprocessed, %d still in the "
                "sink or on_failure (%s failed in all)",
                self._reporter.subject, _count(stats.dropped - dropped, "payload"), unfinished,
                _count(stats.failed_batches, "batch", "batches"), extra=self._reporter.extra,
            )

    def _after_fork_in_child(self) -> None:
        # The workers did not come along; the dispatcher is fresh and (if it
        # was running) running again. An async pipeline's loop stays the
        # parent's: the child enters its own ``async with``.
        self._progress = threading.Condition(threading.Lock())
        self._waiting = 0
        self._reporter = _Reporter(self._reporter.name)
        if self._async:
            self._loop = self._astop = None
            self._aflushes = set()
            self._tasks = []
            self._counts = []
        elif not self._stopping.is_set():
            self._spawn_threads()


_FLUSH_IN_SINK = (
    "tempo: flush() called by the pipeline's own sink would wait for that very "
    "call to return; flush from outside the sink"
)


def _discard(awaitable: object) -> None:
    """Close a coroutine nobody will await (no "never awaited" warning)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def _cancelled(exc: BaseException) -> bool:
    """``exc`` is the cancellation of the running task, not a
    ``CancelledError`` a sink raised of its own accord (Python 3.11+ can
    tell; before, every ``CancelledError`` counts as one)."""
    if not isinstance(exc, asyncio.CancelledError):
        return False
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return cancelling is None or cancelling() > 0


async def _in_thread(call: Callable[[Optional[float]], None], timeout: Optional[float],
                     name: str) -> None:
    """``await`` ``call(timeout)`` run in a daemon thread of its own. Unlike
    ``asyncio.to_thread``, cancelling the wait returns at once, and the end of
    ``asyncio.run`` does not wait for the call either (it waits for its
    default executor's threads)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def settle(error: Optional[BaseException]) -> None:
        if future.done():
            return  # cancelled meanwhile
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def run() -> None:
        error: Optional[BaseException] = None
        try:
            call(timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            error = exc
        try:
            loop.call_soon_threadsafe(settle, error)
        except RuntimeError:  # the loop is closed: nobody awaits it any more
            pass

    _lifecycle.helper_thread(threading.Thread(target=run, name=name, daemon=True)).start()
    await future


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
