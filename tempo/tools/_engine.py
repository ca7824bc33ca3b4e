"""The throughput measurement behind ``tempo bench`` and ``bench/compare.py``.

One producer loop, one consumer loop and one timed run, shared by every
implementation so the comparison is fair: ``tempo``, ``tempo-many`` (tempo fed
with ``enqueue_many`` in chunks, where the dispatcher has it), ``purepy`` (the
pure-Python batcher in ``_purepy``), ``queue`` (a ``queue.Queue`` loop) and
``otel`` (OpenTelemetry SDK's ``BatchProcessor``, when installed). A run
pushes an untimed warm-up, then times ``items`` payloads from the first
enqueue until the consumer has accounted for the last one.
``bench/compare.py``'s docstring describes the workloads, payload kinds and
fairness rules in full. ``blocks_per_enqueue`` is ``bench/alloc.py``'s
Python-heap allocation measurement.

Each run belongs in a fresh process:
``python -m tempo.tools._engine --case W1:tempo:256 --items N`` prints one
``CASE_RESULT {json}`` line; ``--blocks tempo:256`` prints ``BLOCKS_RESULT``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import queue
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from array import array
from pathlib import Path
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple, Protocol, Sequence, TypeVar, Union

if TYPE_CHECKING:
    import tempo

    from . import _purepy

KiB = 1024
MiB = 1024 * KiB

INTERVAL = 1.0
BATCH_ITEMS = 256  # max_batch_bytes = BATCH_ITEMS * S
MAX_BUFFERED = 64 * MiB
IOV_MAX = 1024
RETRY_SLEEP = 100e-6  # seconds a producer sleeps after a "full" answer

#: What a producer loop reports: (start, end, full retries, payloads enqueued).
ProducerResult = tuple[float, float, int, int]
_F = TypeVar("_F", bound=Callable[..., object])

DEFAULT_SIZES = (16, 256, 10240)
DEFAULT_WORKLOADS = ("W1", "W1b", "W2", "W3")
ALL_IMPLS = ("tempo", "purepy", "queue", "otel")
PRODUCERS = {"W1": 1, "W2": 4, "W3": 1}  # W2's count: --producers


def item_unit() -> int:
    """Payload counts are multiples of this, so each of W2's producers enqueues
    whole batches' worth."""
    return BATCH_ITEMS * math.lcm(4, PRODUCERS["W2"])
PAYLOAD_KINDS = ("bytes", "bytearray")

class Shape(NamedTuple):
    """A dispatcher configuration (the same for every implementation of a case)."""

    interval: float
    max_batch_bytes: int
    max_buffered_bytes: int


def split_workload(name: str) -> tuple[str, str]:
    """``"W1"`` -> ``("W1", "bytes")``; ``"W1b"`` -> ``("W1", "bytearray")``."""
    if name.endswith("b") and name[:-1] in PRODUCERS:
        return name[:-1], "bytearray"
    if name in PRODUCERS:
        return name, "bytes"
    raise ValueError(f"unknown workload {name!r}")


def workload_name(base: str, payload: str) -> str:
    return base + ("b" if payload == "bytearray" else "")

#: Payloads per measured run, by size: about a second for the pure-Python batcher
#: (W1), a fraction of that for tempo, several seconds for the queue.Queue loop.
ITEMS = {16: 1 << 21, 256: 1 << 20, 10240: 1 << 18}
QUICK_DIVISOR = 16

CASE_PREFIX = "CASE_RESULT "

def items_for(size: int, quick: bool) -> int:
    """Payloads per measured run: a multiple of ``item_unit()`` so every batch fills
    exactly."""
    n = ITEMS.get(size) or max(1 << 14, (256 * MiB) // max(size, 1))
    if quick:
        n //= QUICK_DIVISOR
    unit = item_unit()
    return max(unit, n // unit * unit)


# ---------------------------------------------------------------------------
# Sending a list of buffers over a socket, the way a careful programmer would.


def sendmsg_all(sock: socket.socket, bufs: list[bytes] | list[memoryview]) -> None:
    """Send every byte of ``bufs`` with ``sendmsg``: IOV_MAX chunks, partial sends resumed.

    The fast path (the whole chunk went out) costs one ``sum(map(len, chunk))``;
    only a partial send walks the buffers.  ``bufs`` is not modified.
    """
    i, n = 0, len(bufs)
    head: memoryview | None = None
    while i < n:
        # The caller's buffers, and in front the memoryview of a partly sent one.
        chunk: list[Any] = bufs[i : i + IOV_MAX]
        if head is not None:
            chunk[0] = head  # the unsent tail of a partly sent buffer
        sent = sock.sendmsg(chunk)
        if sent == sum(map(len, chunk)):
            i += len(chunk)
            head = None
            continue
        for b in chunk:  # skip the buffers that went out whole ...
            if sent < len(b):
                break
            sent -= len(b)
            i += 1
        head = memoryview(b)[sent:]  # ... and resume inside the first one that did not


# ---------------------------------------------------------------------------
# Implementations behind one small interface.
#
#   impl.enqueue(p)            raises impl.Full when there is no room now
#   impl.enqueue_blocking      None, or a callable waiting for room
#   impl.start_consumer(handle, done)   calls handle(batch) for every batch
#   impl.counter(sink) / impl.sender(sink, sock) -> handle(batch)
#   impl.close()

#: A consumer's callback. Its argument is the batch type of the implementation
#: that made it (``tempo.Batch``, or a ``list`` of ``bytes``), so the interface
#: shared by all of them takes ``Any``; each implementation annotates its own.
Handle = Callable[[Any], None]


class Impl(Protocol):
    """The interface above, as ``run_producers`` and ``run_case`` use it."""

    @property
    def Full(self) -> type[Exception]: ...
    @property
    def needs_copy(self) -> bool: ...
    @property
    def enqueue(self) -> Callable[[Any], object]: ...
    @property
    def enqueue_blocking(self) -> Callable[..., object] | None: ...
    def counter(self, sink: Sink) -> Handle: ...
    def sender(self, sink: Sink, sock: socket.socket) -> Handle: ...
    def start_consumer(self, handle: Handle, done: threading.Event) -> threading.Thread | None: ...
    def close(self) -> None: ...


class _PullSource(Protocol):
    """What ``start_consumer``'s thread needs: batches pulled with ``get_batch``."""

    @property
    def releases(self) -> bool: ...
    # Any: tempo.Batch or list[bytes], by implementation (see Handle).
    def get_batch(self, timeout: float | None, /) -> Any: ...


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

    def sender(self, sink: Sink, sock: socket.socket) -> Callable[[list[bytes]], None]:
        add = sink.add

        def handle(batch: list[bytes]) -> None:
            sendmsg_all(sock, batch)
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
        self.enqueue_blocking: Callable[..., object] | None = None
        if backpressure == "native" and tempo_supports_blocking_enqueue():
            self.enqueue_blocking = self.d.enqueue
        self.get_batch = self.d.get_batch

    def counter(self, sink: Sink) -> Callable[[tempo.Batch], None]:
        add = sink.add

        def handle(batch: tempo.Batch) -> None:
            add(len(batch), batch.nbytes)

        return handle

    def sender(self, sink: Sink, sock: socket.socket) -> Callable[[tempo.Batch], None]:
        add = sink.add

        def handle(batch: tempo.Batch) -> None:
            if hasattr(batch, "sendall"):
                batch.sendall(sock)
            else:
                sendmsg_all(sock, list(batch))
            add(len(batch), batch.nbytes)

        return handle

    start_consumer = ListImpl.start_consumer

    def close(self) -> None:
        self.d.stop()


def tempo_supports_blocking_enqueue() -> bool:
    import tempo

    d = tempo.Dispatcher(interval=1.0, max_buffered_bytes=1024)
    try:
        d.enqueue(b"x", timeout=None)
        return True
    except TypeError:
        return False
    finally:
        d.stop()


def impl_available(name: str) -> tuple[bool, str]:
    """Whether ``name`` can run here, and if not, why."""
    if name in ("tempo", "tempo-many"):
        try:
            import tempo

            tempo.Dispatcher  # noqa: B018
        except Exception as e:  # ImportError, or the extension not built yet
            return False, f"tempo not importable ({type(e).__name__}: {e}); run `make build`"
        if name == "tempo-many" and not tempo_has_enqueue_many():
            return False, "this tempo has no Dispatcher.enqueue_many"
        return True, ""
    if name == "otel":
        try:
            from opentelemetry.sdk import _shared_internal as si

            si.BatchProcessor  # noqa: B018
        except Exception as e:
            return False, f"opentelemetry-sdk BatchProcessor not available ({type(e).__name__}: {e})"
        return True, ""
    return name in ("purepy", "queue"), "unknown implementation"


def default_shape(size: int) -> Shape:
    """compare.py's configuration for payloads of ``size`` bytes."""
    return Shape(interval=INTERVAL, max_batch_bytes=BATCH_ITEMS * size, max_buffered_bytes=MAX_BUFFERED)


def make_impl(name: str, size: int, backpressure: str, shape: Shape | None = None) -> Impl:
    """A started implementation; ``shape`` defaults to compare.py's configuration."""
    if shape is None:
        shape = default_shape(size)
    if name == "tempo":
        return TempoImpl(size, shape, backpressure)
    if name == "tempo-many":
        return TempoManyImpl(size, shape, backpressure)
    impls: dict[str, Callable[[int, Shape], Impl]] = {"purepy": PurePyImpl, "queue": QueueImpl, "otel": OTelImpl}
    return impls[name](size, shape)


# ---------------------------------------------------------------------------
# Producers.


def produce_retry(
    enqueue: Callable[[Any], object], Full: type[Exception], payloads: Iterator[bytes | bytearray], chunks: int,
    deadline: float | None, out: list[ProducerResult | None], i: int, start: threading.Barrier,
    chunk: int = BATCH_ITEMS,
) -> None:
    """The shared producer loop: on a full buffer, sleep briefly and retry.

    Enqueues ``chunks`` chunks of ``chunk`` payloads from the iterator ``payloads``,
    stopping early (between chunks) once ``perf_counter()`` passes ``deadline``.
    """
    retries = n = 0
    sleep = time.sleep
    islice = itertools.islice
    start.wait()
    t0 = perf_counter()
    for _ in range(chunks):
        for p in islice(payloads, chunk):
            while True:
                try:
                    enqueue(p)
                    break
                except Full:
                    retries += 1
                    sleep(RETRY_SLEEP)
        n += chunk
        if deadline is not None and perf_counter() >= deadline:
            break
    out[i] = (t0, perf_counter(), retries, n)


def produce_blocking(
    enqueue: Callable[..., object], Full: type[Exception], payloads: Iterator[bytes | bytearray], chunks: int,
    deadline: float | None, out: list[ProducerResult | None], i: int, start: threading.Barrier,
    chunk: int = BATCH_ITEMS,
) -> None:
    """tempo's producer loop when ``enqueue(p, timeout=None)`` waits for room."""
    n = 0
    islice = itertools.islice
    start.wait()
    t0 = perf_counter()
    for _ in range(chunks):
        for p in islice(payloads, chunk):
            enqueue(p, timeout=None)
        n += chunk
        if deadline is not None and perf_counter() >= deadline:
            break
    out[i] = (t0, perf_counter(), 0, n)


# The allocation-free producer: one bytearray per producer, rewritten in place
# (a sequence number packed at offset 0) before every enqueue.  Batchers that
# keep references (queue.Queue, OpenTelemetry) must be handed a copy,
# ``bytes(buf)``, since the buffer changes right after; tempo and purepy are
# handed the buffer itself and copy it in their enqueue.

_SEQ = struct.Struct("<Q")


def _packer(size: int) -> Callable[[bytearray, int], None]:
    """``pack(buf, seq)`` writes ``seq`` at offset 0 of a ``size``-byte buffer."""
    if size >= 8:
        pack_into = _SEQ.pack_into
        return lambda buf, seq: pack_into(buf, 0, seq)

    def pack_small(buf: bytearray, seq: int) -> None:
        buf[:size] = (seq & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    return pack_small if size else (lambda buf, seq: None)


def produce_retry_reused(
    enqueue: Callable[[Any], object], Full: type[Exception], buf: bytearray, chunks: int,
    deadline: float | None, out: list[ProducerResult | None], i: int, start: threading.Barrier,
    chunk: int = BATCH_ITEMS, copy: bool = False, seq: int = 0,
) -> None:
    """``produce_retry`` for one reused bytearray (copied first if ``copy``)."""
    retries = n = 0
    sleep = time.sleep
    size = len(buf)
    p: bytes | bytearray
    pack_into = _SEQ.pack_into if size >= 8 else None
    pack = _packer(size)
    start.wait()
    t0 = perf_counter()
    for _ in range(chunks):
        end = seq + chunk
        if pack_into is not None and not copy:  # the hot loops, without a branch per payload
            while seq < end:
                pack_into(buf, 0, seq)
                seq += 1
                while True:
                    try:
                        enqueue(buf)
                        break
                    except Full:
                        retries += 1
                        sleep(RETRY_SLEEP)
        elif pack_into is not None:
            while seq < end:
                pack_into(buf, 0, seq)
                seq += 1
                p = bytes(buf)
                while True:
                    try:
                        enqueue(p)
                        break
                    except Full:
                        retries += 1
                        sleep(RETRY_SLEEP)
        else:
            while seq < end:
                pack(buf, seq)
                seq += 1
                p = bytes(buf) if copy else buf
                while True:
                    try:
                        enqueue(p)
                        break
                    except Full:
                        retries += 1
                        sleep(RETRY_SLEEP)
        n += chunk
        if deadline is not None and perf_counter() >= deadline:
            break
    out[i] = (t0, perf_counter(), retries, n)


def produce_blocking_reused(
    enqueue: Callable[..., object], Full: type[Exception], buf: bytearray, chunks: int,
    deadline: float | None, out: list[ProducerResult | None], i: int, start: threading.Barrier,
    chunk: int = BATCH_ITEMS, copy: bool = False, seq: int = 0,
) -> None:
    """``produce_blocking`` for one reused bytearray (tempo copies it itself)."""
    n = 0
    pack = _packer(len(buf))
    pack_into = _SEQ.pack_into if len(buf) >= 8 else None
    start.wait()
    t0 = perf_counter()
    for _ in range(chunks):
        end = seq + chunk
        if pack_into is not None and not copy:
            while seq < end:
                pack_into(buf, 0, seq)
                seq += 1
                enqueue(buf, timeout=None)
        else:
            while seq < end:
                pack(buf, seq)
                seq += 1
                enqueue(bytes(buf) if copy else buf, timeout=None)
        n += chunk
        if deadline is not None and perf_counter() >= deadline:
            break
    out[i] = (t0, perf_counter(), 0, n)


def own_binding(fn: _F) -> _F:
    """The same bound method as a new object, one per producer thread. On a
    free-threaded build, threads calling one shared method object contend on
    its reference count (every call takes and drops a reference), which is
    the benchmark's cost, not the batcher's; a thread that writes
    ``d.enqueue(p)`` itself never shares one."""
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", None)
    if owner is None or name is None or not hasattr(owner, name):
        return fn
    same: _F = getattr(owner, name)
    return same


def run_producers(
    impl: Impl, pool: list[bytes] | list[bytearray], nprod: int, total: int, offset: int,
    deadline: float | None = None, chunk: int = BATCH_ITEMS,
) -> ProducerResult:
    """Enqueue up to ``total`` payloads from ``nprod`` threads (all of them unless
    ``deadline`` passes first; always a multiple of ``chunk`` per producer).

    ``pool`` is either a list of ``bytes`` (each producer cycles through it from
    its own starting point) or a list of ``nprod`` bytearrays (producer ``i``
    rewrites and enqueues ``pool[i]`` again and again).

    Returns (first start, last end, retries, payloads enqueued).
    """
    assert total % (nprod * chunk) == 0
    chunks = total // nprod // chunk
    blocking = impl.enqueue_blocking is not None
    enqueue = impl.enqueue if impl.enqueue_blocking is None else impl.enqueue_blocking
    reused = bool(pool) and isinstance(pool[0], bytearray)
    out: list[ProducerResult | None] = [None] * nprod
    start = threading.Barrier(nprod)
    threads = []
    for i in range(nprod):
        # The loops take different arguments: each branch builds its own.
        loop: Callable[..., None]
        args: tuple[object, ...]
        if reused:
            loop = produce_blocking_reused if blocking else produce_retry_reused
            args = (own_binding(enqueue), impl.Full, pool[i], chunks, deadline, out, i, start, chunk,
                    impl.needs_copy, offset + i * (total // nprod))
        else:
            loop = produce_blocking if blocking else produce_retry
            # Each producer cycles through the pool from its own starting point.
            k = (offset + i * 997) % len(pool)
            payloads = itertools.cycle([*pool[k:], *pool[:k]])
            args = (own_binding(enqueue), impl.Full, payloads, chunks, deadline, out, i, start, chunk)
            enqueue_many = getattr(impl, "enqueue_many", None)  # only TempoManyImpl has it
            if enqueue_many is not None:
                loop = produce_many
                args = (enqueue_many, payloads, chunks, deadline, out, i, start, chunk)
        threads.append(threading.Thread(target=loop, args=args))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [o for o in out if o is not None]
    if len(results) != nprod:  # its thread printed the traceback
        raise RuntimeError(f"{nprod - len(results)} of {nprod} producer threads failed")
    return (
        min(o[0] for o in results),
        max(o[1] for o in results),
        sum(o[2] for o in results),
        sum(o[3] for o in results),
    )


def make_reused(size: int, nprod: int) -> list[bytearray]:
    """One preallocated bytearray per producer (random contents, rewritten in place)."""
    rng = random.Random(size)
    return [bytearray(rng.randbytes(size)) for _ in range(nprod)]


def make_pool(size: int) -> list[bytes]:
    """Distinct payloads (about 32 MiB, at most 8192), so memory traffic is realistic."""
    count = max(256, min(8192, (32 * MiB) // max(size, 1)))
    rng = random.Random(size)
    return [rng.randbytes(size) for _ in range(count)]


# ---------------------------------------------------------------------------
# The reader process of W3.


def reader_main() -> None:
    """Accept one loopback connection, count bytes until EOF, reply with the count."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        print(srv.getsockname()[1], flush=True)
        conn, _ = srv.accept()
    with conn:
        buf = bytearray(1 << 20)
        total = 0
        recv_into = conn.recv_into
        while True:
            n = recv_into(buf)
            if not n:
                break
            total += n
        conn.sendall(total.to_bytes(8, "little"))


def start_reader() -> tuple[subprocess.Popen[str], socket.socket]:
    cmd, env = engine_command()
    proc = subprocess.Popen([*cmd, "--reader"], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None  # stdout=PIPE
    port = int(proc.stdout.readline())
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return proc, sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("reader closed early")
        buf += chunk
    return buf


# ---------------------------------------------------------------------------
# One case, in this (fresh) process.


WARMUP_MAX_S = 1.0


def warmup_for(size: int, items: int) -> int:
    """Untimed warm-up payloads: 1/8 of the run, or enough bytes to cycle the whole
    64 MiB buffer once (+25%) so its pages are touched, whichever is more (the
    warm-up also stops after WARMUP_MAX_S seconds)."""
    unit = item_unit()
    by_bytes = -(-(MAX_BUFFERED * 5 // 4) // max(size, 1))
    warm = max(items // 8, by_bytes)
    return max(unit, -(-warm // unit) * unit)


def wait_for_items(sink: Sink, count: int, timeout: float) -> None:
    deadline = monotonic() + timeout
    while sink.items < count:
        if monotonic() > deadline:
            raise RuntimeError(f"consumer saw {sink.items} of {count} payloads")
        time.sleep(0.001)


def timed_run(impl: Impl, sink: Sink, pool: list[bytes] | list[bytearray], nprod: int, items: int, size: int,
              warm: int, warm_max_s: float, chunk: int = BATCH_ITEMS,
              finish: Callable[[int], float] | None = None) -> dict[str, Any]:
    """One measured run through a started ``impl`` whose consumer feeds ``sink``.

    An untimed warm-up of ``warm`` payloads (stopped between chunks after
    ``warm_max_s``; first-touch page faults, allocator and caches settle), then
    ``items`` payloads timed from the producers' start until the consumer has
    seen the last one.  ``finish(warmed)``, if given, runs after that and
    returns the end time to use instead (W3: the reader's byte count).  The
    caller closes ``impl`` and joins its consumer.
    """
    warm_deadline = perf_counter() + warm_max_s
    *_, warmed = run_producers(impl, pool, nprod, warm, offset=0, deadline=warm_deadline, chunk=chunk)
    wait_for_items(sink, warmed, 120)
    batches0 = sink.batches
    sink.target = warmed + items  # the consumer cannot pass it before we enqueue more
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0, t_prod, retries, _ = run_producers(impl, pool, nprod, items, offset=warmed, chunk=chunk)
    if not sink.done.wait(300):
        raise RuntimeError(f"consumer saw {sink.items - warmed} of {items} payloads")
    t_end = sink.t_done
    if finish is not None:
        t_end = finish(warmed)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = t_end - t0
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "items": items,
        "warmup_items": warmed,
        "elapsed_s": elapsed,
        "producer_s": t_prod - t0,
        "items_per_s": items / elapsed,
        "mb_per_s": items * size / elapsed / 1e6,
        "cpu_s": cpu,
        "cpu_ns_per_item": cpu / items * 1e9,
        "batches": sink.batches_done - batches0,
        "full_retries": retries,
    }


def run_case(
    workload: str,
    size: int,
    impl_name: str,
    items: int,
    backpressure: str,
    warm: int | None = None,
    warm_max_s: float = WARMUP_MAX_S,
) -> dict[str, Any]:
    base, payload = split_workload(workload)
    nprod = PRODUCERS[base]
    if warm is None:
        warm = warmup_for(size, items)
    pool: list[bytes] | list[bytearray] = make_reused(size, nprod) if payload == "bytearray" else make_pool(size)
    impl = make_impl(impl_name, size, backpressure)
    sink = Sink()
    reader: subprocess.Popen[str] | None = None
    sock: socket.socket | None = None
    if base == "W3":
        reader, sock = start_reader()
        handle = impl.sender(sink, sock)
    else:
        handle = impl.counter(sink)
    consumer = impl.start_consumer(handle, sink.done)
    finish: Callable[[int], float] | None = None
    if sock is not None:
        reader_sock = sock  # what the closure sees: narrowed, never None

        def finish_w3(warmed: int) -> float:
            reader_sock.shutdown(socket.SHUT_WR)
            received = int.from_bytes(recv_exact(reader_sock, 8), "little")
            t_end = perf_counter()
            if received != (warmed + items) * size:
                raise RuntimeError(f"reader got {received} bytes, expected {(warmed + items) * size}")
            return t_end

        finish = finish_w3

    try:
        figures = timed_run(impl, sink, pool, nprod, items, size, warm, warm_max_s, finish=finish)
    finally:
        impl.close()
        if consumer is not None:
            consumer.join(5)
        if sock is not None:
            sock.close()
        if reader is not None:
            reader.wait(10)
    return {
        "workload": workload,
        "base_workload": base,
        "payload": payload,
        "size": size,
        "impl": impl_name,
        "producers": nprod,
        **figures,
        "expected_batches": items // BATCH_ITEMS,
        "enqueue_mode": "blocking" if impl.enqueue_blocking is not None else "retry",
    }


# ---------------------------------------------------------------------------
# The orchestrating parent.



# ---------------------------------------------------------------------------
# Allocations per enqueue (bench/alloc.py's "blocks" section, and tempo bench).

# ---------------------------------------------------------------------------
# The two implementations behind one interface.


class Subject:
    """A started dispatcher: ``enqueue`` (waits while full), ``get_batch``, ``release``, ``close``."""

    def __init__(self, impl: str, *, interval: float, max_buffered_bytes: int, max_batch_bytes: int):
        self.impl = impl
        self.d: tempo.Dispatcher | _purepy.Batcher | _QueueSubject
        self.enqueue_nowait: Callable[[bytes | bytearray], object]
        self.Full: type[Exception]
        if impl == "tempo":
            import tempo

            self.d = tempo.Dispatcher(
                interval=interval, max_buffered_bytes=max_buffered_bytes, max_batch_bytes=max_batch_bytes
            )
            self.d.start()
            self.Full = tempo.QueueFull
        elif impl == "purepy":
            from . import _purepy as purepy

            self.d = purepy.Batcher(
                interval=interval, max_buffered_bytes=max_buffered_bytes, max_batch_bytes=max_batch_bytes
            )
            self.Full = purepy.QueueFull
        elif impl == "queue":
            # Bounded in items; with one-byte "items" the bound never binds here.
            self.d = _QueueSubject(Shape(interval, max_batch_bytes, max_buffered_bytes))
            self.Full = queue.Full
        else:
            raise ValueError(f"unknown implementation {impl!r}")
        self.enqueue_nowait = self.d.enqueue
        self.get_batch = self.d.get_batch
        self.retries = 0

    def enqueue_wait(self, payload: bytes | bytearray) -> None:
        """Enqueue, retrying every 100 us while the buffer is full."""
        while True:
            try:
                self.enqueue_nowait(payload)
                return
            except self.Full:
                self.retries += 1
                time.sleep(100e-6)

    # The pure-Python batchers' batches are lists of bytes; tempo's hold arena
    # space until released.
    def release(self, batch: tempo.Batch | list[bytes]) -> None:
        if not isinstance(batch, list):
            batch.release()

    def nbytes(self, batch: tempo.Batch | list[bytes]) -> int:
        return sum(map(len, batch)) if isinstance(batch, list) else batch.nbytes

    def first_item(self, batch: tempo.Batch | list[bytes]) -> bytes:
        return bytes(batch[0])

    def close(self) -> None:
        self.d.stop()




class _QueueSubject(QueueImpl):
    """``QueueImpl`` with the ``enqueue`` / ``stop`` a ``Subject`` calls."""

    def __init__(self, shape: Shape) -> None:
        super().__init__(1, shape)

    def stop(self) -> None:
        pass


BLOCKS_PER_BATCH = 100
REGIMES = ("shared", "fresh", "reused")
BLOCKS_ROUND = 4 * BLOCKS_PER_BATCH


def blocks_per_enqueue(impl: str, size: int, regime: str, rounds: int, warmup: int) -> dict[str, Any]:
    s = Subject(impl, interval=3600.0, max_buffered_bytes=256 * MiB, max_batch_bytes=BLOCKS_PER_BATCH * size)
    shared = [bytes([i % 251]) * size for i in range(BLOCKS_ROUND)]
    source = bytes(range(256)) * ((size + 2 * BLOCKS_ROUND) // 256 + 1)
    offsets = list(range(BLOCKS_ROUND))
    enqueue, get_batch, release = s.enqueue_nowait, s.get_batch, s.release
    nbatches = BLOCKS_ROUND // BLOCKS_PER_BATCH

    reused = [bytearray(shared[0])] * BLOCKS_ROUND  # one object, listed 400 times

    def make_fill(enqueue: Callable[[Any], object]) -> Callable[[], None]:
        if regime == "shared":

            def fill() -> None:
                for p in shared:
                    enqueue(p)

        elif regime == "reused":

            def fill() -> None:
                for p in reused:
                    enqueue(p)

        else:

            def fill() -> None:
                for o in offsets:
                    enqueue(source[o : o + size])  # a new bytes object each time

        return fill

    fill = make_fill(enqueue)
    # The same loop around a builtin that allocates nothing (``callable`` returns
    # a singleton): what the harness itself allocates in a round (the list
    # iterator, the slices of the fresh regime), subtracted from the peaks.
    fill_baseline = make_fill(callable)

    def drain() -> None:
        for _ in range(nbatches):
            b = get_batch(timeout=5)
            release(b)
            del b

    # Per-round figures go into preallocated arrays: storing them allocates nothing.
    held = array("d", bytes(8 * rounds))
    traced = []
    transient = []
    blocks = sys.getallocatedblocks
    gc.collect()
    gc.disable()
    try:
        for _ in range(warmup):
            fill()
            drain()
        start = blocks()
        for r in range(rounds):
            b0 = blocks()
            fill()
            b1 = blocks()
            drain()
            held[r] = b1 - b0
        drift = blocks() - start
        # tracemalloc slows everything down: a separate, shorter pass.
        tracemalloc.start()
        for r in range(10 + min(rounds, 50)):
            m0 = tracemalloc.get_traced_memory()[0]
            fill()
            m1 = tracemalloc.get_traced_memory()[0]
            drain()
            if r >= 10:
                traced.append((m1 - m0) / BLOCKS_ROUND)
        # Transient allocations: the peak during a round above the memory traced
        # after it (get_traced_memory reads both before it allocates its result).
        reset_peak, traced_memory = tracemalloc.reset_peak, tracemalloc.get_traced_memory
        baseline = []
        for r in range(10 + min(rounds, 50)):
            reset_peak()
            fill_baseline()
            cur, peak = traced_memory()
            if r >= 10:
                baseline.append(peak - cur)
            reset_peak()
            fill()
            cur, peak = traced_memory()
            drain()
            if r >= 10:
                transient.append(peak - cur)
        tracemalloc.stop()
    finally:
        gc.enable()
        s.close()
    return {
        "size": size,
        "regime": regime,
        "rounds": rounds,
        "enqueues_per_round": BLOCKS_ROUND,
        "held_blocks_per_enqueue": statistics.median(held) / BLOCKS_ROUND,
        "drift_blocks": drift,
        "drift_blocks_per_enqueue": drift / (rounds * BLOCKS_ROUND),
        "traced_bytes_per_enqueue": statistics.median(traced),
        "transient_peak_bytes_per_round": statistics.median(transient) - statistics.median(baseline),
        "transient_peak_bytes_max": max(transient) - min(baseline),
        "harness_peak_bytes_per_round": statistics.median(baseline),
    }




# ---------------------------------------------------------------------------
# tempo fed through enqueue_many (where the dispatcher has it).


def tempo_has_enqueue_many() -> bool:
    import tempo

    return hasattr(tempo.Dispatcher, "enqueue_many")


class TempoManyImpl(TempoImpl):
    """tempo, with each producer handing over whole chunks with ``enqueue_many``."""

    name = "tempo-many"

    def __init__(self, size: int, shape: Shape, backpressure: str) -> None:
        super().__init__(size, shape, backpressure)
        self.enqueue_many = self.d.enqueue_many


def produce_many(
    enqueue_many: Callable[..., int], payloads: Iterator[bytes | bytearray], chunks: int,
    deadline: float | None, out: list[ProducerResult | None], i: int, start: threading.Barrier,
    chunk: int = BATCH_ITEMS,
) -> None:
    """The producer loop for ``enqueue_many``: a list of ``chunk`` payloads per
    call, waiting for room (``timeout=None``) and resuming after the accepted prefix."""
    n = 0
    islice = itertools.islice
    start.wait()
    t0 = perf_counter()
    for _ in range(chunks):
        batch = list(islice(payloads, chunk))
        done = 0
        while done < chunk:
            done += enqueue_many(batch[done:] if done else batch, timeout=None)
        n += chunk
        if deadline is not None and perf_counter() >= deadline:
            break
    out[i] = (t0, perf_counter(), 0, n)


# ---------------------------------------------------------------------------
# Fresh processes


BLOCKS_PREFIX = "BLOCKS_RESULT "


def engine_command() -> tuple[list[str], dict[str, str]]:
    """How to start this module in a fresh interpreter that imports the same tempo."""
    import tempo

    root = str(Path(tempo.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return [sys.executable, "-m", "tempo.tools._engine"], env


def run_json_child(args: list[str], prefix: str, timeout: float) -> dict[str, Any]:
    """Run this module with ``args`` in a fresh process; its result is the JSON on
    the stdout line starting with ``prefix`` (else an ``error`` entry)."""
    cmd, env = engine_command()
    try:
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(prefix):
            result: dict[str, Any] = json.loads(line[len(prefix):])
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tempo.tools._engine", description="one measurement, in this process")
    ap.add_argument("--case", help="WORKLOAD:IMPL:SIZE")
    ap.add_argument("--items", type=int)
    ap.add_argument("--backpressure", choices=("native", "retry"), default="native")
    ap.add_argument("--warmup-max-s", type=float, default=WARMUP_MAX_S)
    ap.add_argument("--blocks", help="IMPL:SIZE[:REGIME[:ROUNDS]]")
    ap.add_argument("--reader", action="store_true")
    ap.add_argument("--producers", type=int, default=PRODUCERS["W2"], help="producer threads of W2")
    args = ap.parse_args(argv)
    PRODUCERS["W2"] = args.producers
    if args.reader:
        reader_main()
    elif args.case:
        workload, impl, size = args.case.split(":")
        result = run_case(workload, int(size), impl, args.items, args.backpressure, None, args.warmup_max_s)
        print(CASE_PREFIX + json.dumps(result), flush=True)
    elif args.blocks:
        impl, size, *more = args.blocks.split(":")
        regime = more[0] if more else "fresh"
        rounds = int(more[1]) if len(more) > 1 else 100
        result = blocks_per_enqueue(impl, int(size), regime, rounds, max(10, rounds // 4))
        print(BLOCKS_PREFIX + json.dumps(result), flush=True)
    else:
        ap.error("one of --case, --blocks, --reader")
    return 0


if __name__ == "__main__":
    sys.exit(main())
