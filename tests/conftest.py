"""Shared fixtures for the tempo test suite.

- ``spawn(fn, *args, **kwargs)`` runs ``fn`` in a daemon thread and returns a
  ``Task``; ``task.result(timeout)`` / ``task.exception(timeout)`` fail the test
  (instead of hanging it) when the call does not finish in time.
- ``make(**config)`` builds a ``tempo.Dispatcher``; every dispatcher it made is
  stopped at teardown, before the spawned threads are joined, so a blocked
  consumer never outlives its test.
- ``collector(d)`` starts a consumer thread that iterates ``d.batches()`` to its
  end and returns the batches it saw (lists of ``bytes``).
- ``drain(d)`` attaches a consumer, calls ``d.shutdown()`` and returns every batch
  it handed out, as a list of lists of ``bytes``.
- ``interruptible_children()``: children started inside it can be stopped
  with SIGINT even when the suite itself runs with SIGINT ignored.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator

import pytest

import tempo

#: How long to wait for something that must happen "soon": generous for slow CI.
WAIT = 5.0


@contextlib.contextmanager
def interruptible_children() -> Iterator[None]:
    """Start children with SIGINT at its default inside this block.

    A suite run with SIGINT ignored (a background job of a non-interactive
    shell) passes that on to every child, and a Python child that starts
    with SIGINT ignored never raises KeyboardInterrupt, by design: a test
    that interrupts one would then wait for nothing. A Python handler in
    this process becomes the default in the exec'd child.
    """
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

#: The contract's ``tempo.Stats`` fields, in order.
STATS_FIELDS = [
    "enqueued",
    "enqueued_bytes",
    "rejected_full",
    "rejected_too_large",
    "batches",
    "items",
    "dropped",
    "buffered_bytes",
    "max_buffered_bytes",
    "buffered_items",
    "max_buffered_items",
    "waiting_batches",
    "held_batches",
    "oldest_wait",
]


class Task:
    """A call running in a daemon thread."""

    def __init__(self, fn, args, kwargs):
        self._done = threading.Event()
        self._value = None
        self._error = None
        self.thread = threading.Thread(
            target=self._run, args=(fn, args, kwargs), daemon=True
        )
        self.thread.start()

    def _run(self, fn, args, kwargs):
        try:
            self._value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self._error = exc
        finally:
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float = WAIT) -> bool:
        """True once the call finished (waits up to ``timeout``)."""
        return self._done.wait(timeout)

    def result(self, timeout: float = WAIT):
        """The call's return value; re-raises what it raised."""
        assert self._done.wait(timeout), f"background call did not finish within {timeout} s"
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout: float = WAIT):
        """What the call raised (None if it returned)."""
        assert self._done.wait(timeout), f"background call did not finish within {timeout} s"
        return self._error


@pytest.fixture
def spawn():
    tasks: list[Task] = []

    def _spawn(fn, *args, **kwargs) -> Task:
        task = Task(fn, args, kwargs)
        tasks.append(task)
        return task

    yield _spawn
    for task in tasks:
        task.thread.join(WAIT)
    stuck = [task for task in tasks if task.thread.is_alive()]
    assert not stuck, f"{len(stuck)} background thread(s) still blocked after teardown"


@pytest.fixture
def make(spawn):
    # Depends on ``spawn`` so that it is torn down first: dispatchers are stopped
    # (waking every blocked consumer) before spawned threads are joined.
    made: list[tempo.Dispatcher] = []

    def _make(*, interval=60.0, max_buffered_bytes=tempo.MiB, **kwargs) -> tempo.Dispatcher:
        d = tempo.Dispatcher(
            interval=interval, max_buffered_bytes=max_buffered_bytes, **kwargs
        )
        made.append(d)
        return d

    yield _make
    for d in made:
        d.stop()


def consume_all(d) -> list[list[bytes]]:
    """Iterate ``d.batches()`` to its end, copying every batch."""
    out = []
    for batch in d.batches():
        out.append(batch.tolist())
    return out


@pytest.fixture
def collector(spawn):
    """``collector(d)`` starts a consumer thread running ``consume_all(d)``."""

    def _collector(d) -> Task:
        return spawn(consume_all, d)

    return _collector


@pytest.fixture
def drain(spawn):
    def _drain(d, timeout: float = WAIT) -> list[list[bytes]]:
        consumer = spawn(consume_all, d)
        d.shutdown(timeout=timeout)
        return consumer.result()

    return _drain


def wait_until(predicate, timeout: float = WAIT, what: str = "condition") -> None:
    """Wait until ``predicate()`` holds (polling a condition, not a guess)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.001)


def wait_blocked_on_state(d, n: int = 1) -> None:
    """Wait until ``n`` threads block in a waiting enqueue, flush or shutdown."""
    wait_until(lambda: d._waiters()[1] >= n, what=f"{n} thread(s) blocking")


def async_waiters(d) -> int:
    """How many coroutines are waiting on ``d`` (aget_batch, ashutdown)."""
    import tempo._aio

    return tempo._aio.waiting_futures(d)


async def until_async_blocked(d, n: int = 1) -> None:
    """Let tasks run until ``n`` coroutines are waiting on ``d``."""
    import asyncio

    deadline = time.monotonic() + WAIT
    while async_waiters(d) < n:
        assert time.monotonic() < deadline, f"{n} coroutine(s) did not start waiting"
        await asyncio.sleep(0)


@pytest.fixture
def pipe():
    """``pipe(sink, **options)`` makes a pipeline that is stopped at teardown."""
    made: list[tempo.Pipeline] = []

    def _pipe(sink, **options) -> tempo.Pipeline:
        options.setdefault("interval", 60.0)
        options.setdefault("max_buffered_bytes", tempo.MiB)
        p = tempo.Pipeline(sink, **options)
        made.append(p)
        return p

    yield _pipe
    for p in made:
        p.stop()


@pytest.fixture
def tempo_log():
    """The records logged on the ``tempo`` logger during the test."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("tempo")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
