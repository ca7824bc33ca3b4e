"""The batchers ``tempo bench`` measures, behind one small interface.

``tempo``, ``tempo-many`` (tempo fed with ``enqueue_many`` in chunks),
``purepy`` (the pure-Python batcher in ``_purepy``), ``queue`` (a
``queue.Queue`` loop whose consumer forms the batches) and ``otel``
(OpenTelemetry SDK's ``BatchProcessor``, when installed). Each is built from
a ``Shape``, the same for every implementation of a case, so the comparison
is fair. The harness that drives them is ``_throughput``; the allocation
count is ``_alloc``.

The interface (``Impl``):

- ``impl.enqueue(p)`` raises ``impl.Full`` when there is no room now;
  ``impl.enqueue_blocking`` is ``None``, or a callable that waits for room;
- ``impl.get_batch(timeout)`` for the implementations whose consumer pulls;
  ``impl.start_consumer(handle, done)`` calls ``handle(batch)`` for every batch;
- ``impl.counter(sink)`` is the consumer that counts items and bytes;
- ``impl.close()``.
"""

from __future__ import annotations

import queue
import threading
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol

from tempo import MiB

if TYPE_CHECKING:
    import tempo

INTERVAL = 1.0
BATCH_ITEMS = 256  # max_batch_bytes = BATCH_ITEMS * S
MAX_BUFFERED = 64 * MiB
ALL_IMPLS = ("tempo", "tempo-many", "purepy", "queue", "otel")


class Shape(NamedTuple):
    """A dispatcher configuration (the same for every implementation of a case)."""

    interval: float
    max_batch_bytes: int
    max_buffered_bytes: int


def default_shape(size: int) -> Shape:
    """The configuration of ``tempo bench`` (and bench/compare.py) for payloads of ``size`` bytes."""
    return Shape(interval=INTERVAL, max_batch_bytes=BATCH_ITEMS * size, max_buffered_bytes=MAX_BUFFERED)


#: A consumer's callback. Its argument is the batch type of the implementation
#: that made it (``tempo.Batch``, or a ``list`` of ``bytes``), so the interface
#: shared by all of them takes ``Any``; each implementation annotates its own.
Handle = Callable[[Any], None]


class Sink:
    """What the consumer has accounted for; notes the moment ``target`` items were reached."""

    def __init__(self) -> None:
        self.items = self.nbytes = self.batches = 0
        self.target = float("inf")
        self.t_done = 0.0
        self.batches_done = 0
        self.done = threading.Event()

    def add(self, items: int, nbytes: int) -> None:
        self.items += items
        self.nbytes += nbytes
        self.batches += 1
        if self.items >= self.target:
            self.t_done = perf_counter()
            self.batches_done = self.batches
            self.target = float("inf")
            self.done.set()


class Impl(Protocol):
    """The interface above, as the harness uses it."""

    @property
    def Full(self) -> type[Exception]: ...
    @property
    def needs_copy(self) -> bool: ...
    @property
    def enqueue(self) -> Callable[[Any], object]: ...
    @property
    def enqueue_blocking(self) -> Callable[..., object] | None: ...
    def counter(self, sink: Sink) -> Handle: ...
    def start_consumer(self, handle: Handle, done: threading.Event) -> threading.Thread | None: ...
    def close(self) -> None: ...


class _PullSource(Protocol):
    """What ``start_consumer``'s thread needs: batches pulled with ``get_batch``."""

    @property
    def releases(self) -> bool: ...
    # Any: tempo.Batch or list[bytes], by implementation (see Handle).
    def get_batch(self, timeout: float | None, /) -> Any: ...


def _pull_consumer(
    get_batch: Callable[[float], Any], handle: Handle, done: threading.Event, release: bool
) -> None:
    while not done.is_set():
        try:
            batch = get_batch(0.2)
        except TimeoutError:
            continue
        handle(batch)
        if release:
            batch.release()


class ListImpl:
    """Shared parts of the implementations whose batches are lists of ``bytes``."""

    name = ""
    Full: type[Exception]
    enqueue: Callable[[Any], object]
    enqueue_blocking: Callable[..., object] | None = None
    releases = False
    #: Whether a producer handing over a reused (mutable) buffer must copy it
    #: first: True for the batchers that keep references to what they are given.
    needs_copy = True

    def counter(self, sink: Sink) -> Callable[[list[bytes]], None]:
        add = sink.add

        def handle(batch: list[bytes]) -> None:
            add(len(batch), sum(map(len, batch)))

        return handle

    # self is any _PullSource: TempoImpl shares this method.
    def start_consumer(self: _PullSource, handle: Handle, done: threading.Event) -> threading.Thread | None:
        t = threading.Thread(
            target=_pull_consumer, args=(self.get_batch, handle, done, self.releases), daemon=True
        )
        t.start()
        return t


class PurePyImpl(ListImpl):
    name = "purepy"
    needs_copy = False  # its enqueue copies anything that is not bytes

    def __init__(self, size: int, shape: Shape) -> None:
        from . import _purepy as purepy

        self.b = purepy.Batcher(
            interval=shape.interval,
            max_buffered_bytes=shape.max_buffered_bytes,
            max_batch_bytes=shape.max_batch_bytes,
        )
        self.Full = purepy.QueueFull
        self.enqueue = self.b.enqueue
        self.get_batch = self.b.get_batch

    def close(self) -> None:
        self.b.stop()


class QueueImpl(ListImpl):
    """``queue.Queue`` of payloads; the consumer forms the batches."""

    name = "queue"
    Full = queue.Full

    def __init__(self, size: int, shape: Shape) -> None:
        # Payloads in a run all have the same size, so an item bound is a byte bound.
        self.q: queue.Queue[bytes] = queue.Queue(maxsize=max(1, shape.max_buffered_bytes // max(size, 1)))
        self.enqueue = self.q.put_nowait
        self.limit = shape.max_batch_bytes
        self.interval = shape.interval
        self._carry: bytes | None = None  # payload that would have overflowed the previous batch

    def get_batch(self, timeout: float | None) -> list[bytes]:
        q, limit = self.q, self.limit
        if self._carry is not None:
            first, self._carry = self._carry, None
        else:
            try:
                first = q.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError from None
        deadline = monotonic() + self.interval
        batch = [first]
        nbytes = len(first)
        while not limit or nbytes < limit:
            remaining = deadline - monotonic()
            if remaining <= 0:
                break
            try:
                p = q.get(timeout=remaining)
            except queue.Empty:
                break
            if limit and nbytes + len(p) > limit:
                self._carry = p
                break
            batch.append(p)
            nbytes += len(p)
        return batch

    def close(self) -> None:
        pass


class OTelImpl(ListImpl):
    """OpenTelemetry SDK's BatchProcessor with an exporter that calls our handler."""

    name = "otel"

    class Full(Exception):
        pass

    def __init__(self, size: int, shape: Shape) -> None:
        import inspect

        # opentelemetry-sdk is the optional bench extra, absent where the tools are
        # type-checked; where it is installed the ignore is unused (not an error).
        from opentelemetry.sdk import _shared_internal as si  # type: ignore[import-not-found, unused-ignore]

        cap = max(1, shape.max_buffered_bytes // max(size, 1))
        batch_items = max(1, shape.max_batch_bytes // max(size, 1)) if shape.max_batch_bytes else 512
        slack = 64  # emit() past capacity drops the oldest item: keep room for racing producers
        # Positional, built at run time: the parameters differ between SDK
        # versions (``metrics`` is newer), so no one signature types them.
        args: list[Any] = [_OTelExporter(self), shape.interval * 1000, batch_items, 30_000, cap + slack, "Bench"]
        if "metrics" in inspect.signature(si.BatchProcessor).parameters:
            from opentelemetry.sdk._shared_internal._processor_metrics import (  # type: ignore[import-not-found, unused-ignore]
                NoOpProcessorMetrics,
            )

            args.append(NoOpProcessorMetrics())
        self._handle: Handle = lambda batch: None
        self.proc: si.BatchProcessor[bytes] = si.BatchProcessor(*args)
        q, emit, Full = self.proc._queue, self.proc.emit, self.Full

        def enqueue(p: bytes) -> None:
            if len(q) >= cap:
                raise Full
            emit(p)

        self.enqueue = enqueue

    def start_consumer(self, handle: Handle, done: threading.Event) -> None:
        self._handle = handle  # the processor's worker thread is the consumer
        return None

    def close(self) -> None:
        self.proc.shutdown(timeout_millis=1000)


# At module level, not local to OTelImpl.__init__: stubtest reports a local class
# that mypy analyses as a module attribute missing at run time.
class _OTelExporter:
    """The exporter of OTelImpl's processor: each batch goes to the impl's handler."""

    def __init__(self, impl: OTelImpl) -> None:
        self._impl = impl

    def export(self, batch: list[Any]) -> None:
        self._impl._handle(batch)

    def shutdown(self, *args: object, **kwargs: object) -> None:
        pass


class TempoImpl:
    name = "tempo"
    releases = True
    needs_copy = False  # enqueue always copies into the arena

    def __init__(self, size: int, shape: Shape, backpressure: str) -> None:
        import tempo

        self.d = tempo.Dispatcher(
            interval=shape.interval,
            max_buffered_bytes=shape.max_buffered_bytes,
            max_batch_bytes=shape.max_batch_bytes,
        )
        self.d.start()
        self.Full: type[Exception] = tempo.QueueFull
        self.enqueue: Callable[..., object] = self.d.enqueue
        # "native": producers wait for room with enqueue(p, timeout=None);
        # "retry": the same sleep-and-retry loop as the others.
        self.enqueue_blocking: Callable[..., object] | None = self.d.enqueue if backpressure == "native" else None
        self.get_batch = self.d.get_batch

    def counter(self, sink: Sink) -> Callable[[tempo.Batch], None]:
        add = sink.add

        def handle(batch: tempo.Batch) -> None:
            add(len(batch), batch.nbytes)

        return handle

    start_consumer = ListImpl.start_consumer

    def close(self) -> None:
        self.d.stop()


class TempoManyImpl(TempoImpl):
    """tempo, with each producer handing over whole chunks with ``enqueue_many``."""

    name = "tempo-many"

    def __init__(self, size: int, shape: Shape, backpressure: str) -> None:
        super().__init__(size, shape, backpressure)
        self.enqueue_many = self.d.enqueue_many


def impl_available(name: str) -> tuple[bool, str]:
    """Whether ``name`` can run here, and if not, why."""
    if name == "otel":
        try:
            from opentelemetry.sdk import _shared_internal as si

            si.BatchProcessor  # noqa: B018
        except Exception as e:  # noqa: BLE001 - any import failure means the peer is unavailable; said in the result
            return False, f"opentelemetry-sdk BatchProcessor not available ({type(e).__name__}: {e})"
        return True, ""
    return name in ALL_IMPLS, "unknown implementation"


def make_impl(name: str, size: int, backpressure: str = "native", shape: Shape | None = None) -> Impl:
    """A started implementation; ``shape`` defaults to ``default_shape(size)``."""
    if shape is None:
        shape = default_shape(size)
    if name == "tempo":
        return TempoImpl(size, shape, backpressure)
    if name == "tempo-many":
        return TempoManyImpl(size, shape, backpressure)
    impls: dict[str, Callable[[int, Shape], Impl]] = {"purepy": PurePyImpl, "queue": QueueImpl, "otel": OTelImpl}
    return impls[name](size, shape)
