"""End-to-end throughput: tempo against the batchers a Python programmer would use.

``make bench`` runs this (``.venv/bin/python bench/compare.py``).

What it measures
----------------
Items/s and MB/s (MB = 10**6 bytes) of payloads moving from producer threads to
a consumer, timed from the first enqueue of the measured run until the consumer
has accounted for every payload (W3: until the reader process confirmed every
byte).  Every case uses the same configuration: ``interval=1 s``,
``max_batch_bytes=256*S``, ``max_buffered_bytes=64 MiB``, for payloads of S bytes.

Workloads:

- ``W1``: one producer thread, one consumer thread that counts items and bytes of
  every batch (``len(batch)`` and ``batch.nbytes`` for tempo; ``len(list)`` and
  ``sum(map(len, list))`` for the others).
- ``W2``: as W1 with four producer threads sharing the same total
  (``--producers N`` for another count).
- ``W3``: as W1, but the consumer writes every batch to a loopback TCP socket
  (127.0.0.1 only) read by a separate process that just counts bytes.  tempo
  uses ``batch.sendall(sock)`` when it exists, else ``sock.sendmsg``; the others
  use ``sock.sendmsg`` on their list of ``bytes``, chunked at IOV_MAX (1024) and
  resuming partial sends.
- ``W1b`` (and ``W2b``, ``W3b``): the same workload with ``bytearray``
  payloads (below).  The default run is W1, W1b, W2, W3.

Payload kinds (``--payload``, or a ``b`` after the workload's name):

- ``bytes`` (default): a pool of distinct, pre-built ``bytes`` (about 32 MiB,
  at most 8192 of them), cycled; every implementation gets the same objects.
- ``bytearray``: the allocation-free producer.  Each producer thread owns ONE
  preallocated ``bytearray`` of S bytes and rewrites it before every enqueue
  (a sequence number packed at offset 0 with ``struct.pack_into``; 1-7 byte
  payloads get its low bytes).  Since the buffer changes right after, every
  implementation must copy it: tempo and purepy are handed the bytearray and
  copy it in ``enqueue`` (purepy copies anything that is not ``bytes``), the
  ``queue`` and ``otel`` producers hand over ``bytes(buf)``.

Implementations (``--impls``):

- ``tempo``: the library (skipped with a note until the extension is built).
- ``purepy``: ``bench/purepy.py``, a careful pure-Python batcher with the same
  semantics (Condition + list + deque + timer thread).
- ``queue``: producers ``put_nowait`` each payload into a ``queue.Queue`` bounded
  to ``max_buffered_bytes // S`` items; the consumer ``get``s items and forms
  batches of up to ``max_batch_bytes`` with the interval as a timeout.
- ``otel``: OpenTelemetry SDK's ``BatchProcessor`` (the engine of
  ``BatchSpanProcessor``/``BatchLogRecordProcessor``) with a counting exporter,
  ``max_export_batch_size=256``, queue capacity ``max_buffered_bytes // S``.  It
  drops on overflow instead of refusing, so the producer checks the queue length
  first and treats "full" like the others' QueueFull.  Skipped if
  ``opentelemetry-sdk`` is not installed.

Fairness rules: all implementations get the same payload objects (a pool of
distinct, pre-built ``bytes``, cycled, or the reused bytearrays), the same
producer loop and the same
retry loop on a full buffer (sleep 100 us, retry).  tempo, when it supports
``enqueue(p, timeout=None)``, waits for space that way instead (its documented
way to apply backpressure); ``--backpressure retry`` forces the retry loop on
it too.  Since every payload in a run has the same size and the payload count
is a multiple of 256 (times the producer count), every batch is sealed by size
at exactly 256 items; interval seals only happen if a producer stalls for a
whole second, and the ``batches`` field shows it.  Each run first pushes an
untimed warm-up through the same instance: 1/8 of the payloads or 80 MiB
(enough to touch every page of a 64 MiB buffer), whichever is more, but for at
most one second (0.1 s with ``--quick``).  ``cpu_ns_per_item`` (process CPU
time of the measured part, reader process excluded) is recorded too; on a noisy
machine it is often the steadier figure.

Reading the results: the pure-Python batchers keep a reference to each
(immutable) ``bytes`` payload and never copy it, so in W1/W2 their cost per
payload does not depend on its size, while tempo copies every payload into its
arena once (that copy is what buys the bounded, contiguous, zero-copy-out
buffer).  In W1b every implementation copies every payload once.  W3 is where
bytes actually move, ``bench/memfloor.py`` measures what copying alone costs
on the machine, and ``bench/alloc.py`` shows what holding payload objects
costs in memory.

Each run is a fresh subprocess (``compare.py --case ...``); each case is run
``--repeat`` times (default 3), interleaving implementations so that machine
noise hits all of them alike, and the median is reported.

Output: progress on stderr; a table at the end (absolute figures per
implementation, and tempo / purepy); one JSON line per case on stdout, prefixed
``BENCH_JSON``, also written to ``bench/results/latest.jsonl`` (``--out``; every run's
figures, the medians, the configuration and the machine).  ``--chart [PATH]``
also draws the MB/s medians with matplotlib (default
``bench/results/latest.png``).
"""

from __future__ import annotations

import argparse
import itertools
import math
import json
import os
import platform
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
from pathlib import Path
from time import monotonic, perf_counter
from typing import NamedTuple

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for _p in (str(BENCH_DIR), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

KiB = 1024
MiB = 1024 * KiB

INTERVAL = 1.0
BATCH_ITEMS = 256  # max_batch_bytes = BATCH_ITEMS * S
MAX_BUFFERED = 64 * MiB
IOV_MAX = 1024
RETRY_SLEEP = 100e-6  # seconds a producer sleeps after a "full" answer

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

JSON_PREFIX = "BENCH_JSON "
CASE_PREFIX = "CASE_RESULT "
RESULTS_DIR = BENCH_DIR / "results"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def sendmsg_all(sock: socket.socket, bufs: list) -> None:
    """Send every byte of ``bufs`` with ``sendmsg``: IOV_MAX chunks, partial sends resumed.

    The fast path (the whole chunk went out) costs one ``sum(map(len, chunk))``;
    only a partial send walks the buffers.  ``bufs`` is not modified.
    """
    i, n, head = 0, len(bufs), None
    while i < n:
        chunk = bufs[i : i + IOV_MAX]
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


def _pull_consumer(get_batch, handle, done: threading.Event, release: bool) -> None:
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
    enqueue_blocking = None
    releases = False
    #: Whether a producer handing over a reused (mutable) buffer must copy it
    #: first: True for the batchers that keep references to what they are given.
    needs_copy = True

    def counter(self, sink: Sink):
        add = sink.add

        def handle(batch):
            add(len(batch), sum(map(len, batch)))

        return handle

    def sender(self, sink: Sink, sock: socket.socket):
        add = sink.add

        def handle(batch):
            sendmsg_all(sock, batch)
            add(len(batch), sum(map(len, batch)))

        return handle

    def start_consumer(self, handle, done: threading.Event) -> threading.Thread:
        t = threading.Thread(
            target=_pull_consumer, args=(self.get_batch, handle, done, self.releases), daemon=True
        )
        t.start()
        return t


class PurePyImpl(ListImpl):
    name = "purepy"
    needs_copy = False  # its enqueue copies anything that is not bytes

    def __init__(self, size: int, shape: Shape) -> None:
        import purepy

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
        self.q = queue.Queue(maxsize=max(1, shape.max_buffered_bytes // max(size, 1)))
        self.enqueue = self.q.put_nowait
        self.limit = shape.max_batch_bytes
        self.interval = shape.interval
        self._carry = None  # payload that would have overflowed the previous batch

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

        from opentelemetry.sdk import _shared_internal as si

        cap = max(1, shape.max_buffered_bytes // max(size, 1))
        batch_items = max(1, shape.max_batch_bytes // max(size, 1)) if shape.max_batch_bytes else 512
        slack = 64  # emit() past capacity drops the oldest item: keep room for racing producers
        outer = self

        class Exporter:
            def export(self, batch):
                outer._handle(batch)

            def shutdown(self, *args, **kwargs):
                pass

        args = [Exporter(), shape.interval * 1000, batch_items, 30_000, cap + slack, "Bench"]
        if "metrics" in inspect.signature(si.BatchProcessor).parameters:
            from opentelemetry.sdk._shared_internal._processor_metrics import NoOpProcessorMetrics

            args.append(NoOpProcessorMetrics())
        self._handle = lambda batch: None
        self.proc = si.BatchProcessor(*args)
        q, emit, Full = self.proc._queue, self.proc.emit, self.Full

        def enqueue(p):
            if len(q) >= cap:
                raise Full
            emit(p)

        self.enqueue = enqueue

    def start_consumer(self, handle, done):
        self._handle = handle  # the processor's worker thread is the consumer
        return None

    def close(self) -> None:
        self.proc.shutdown(timeout_millis=1000)


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
        self.Full = tempo.QueueFull
        self.enqueue = self.d.enqueue
        self.enqueue_blocking = None
        if backpressure == "native" and tempo_supports_blocking_enqueue():
            self.enqueue_blocking = self.d.enqueue
        self.get_batch = self.d.get_batch

    def counter(self, sink: Sink):
        add = sink.add

        def handle(batch):
            add(len(batch), batch.nbytes)

        return handle

    def sender(self, sink: Sink, sock: socket.socket):
        add = sink.add

        def handle(batch):
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
    if name == "tempo":
        try:
            import tempo

            tempo.Dispatcher  # noqa: B018
        except Exception as e:  # ImportError, or the extension not built yet
            return False, f"tempo not importable ({type(e).__name__}: {e}); run `make build`"
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


def make_impl(name: str, size: int, backpressure: str, shape: Shape | None = None):
    """A started implementation; ``shape`` defaults to compare.py's configuration."""
    if shape is None:
        shape = default_shape(size)
    if name == "tempo":
        return TempoImpl(size, shape, backpressure)
    return {"purepy": PurePyImpl, "queue": QueueImpl, "otel": OTelImpl}[name](size, shape)


# ---------------------------------------------------------------------------
# Producers.


def produce_retry(enqueue, Full, payloads, chunks, deadline, out, i, start, chunk=BATCH_ITEMS) -> None:
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


def produce_blocking(enqueue, Full, payloads, chunks, deadline, out, i, start, chunk=BATCH_ITEMS) -> None:
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


def _packer(size: int):
    """``pack(buf, seq)`` writes ``seq`` at offset 0 of a ``size``-byte buffer."""
    if size >= 8:
        pack_into = _SEQ.pack_into
        return lambda buf, seq: pack_into(buf, 0, seq)

    def pack_small(buf, seq):
        buf[:size] = (seq & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    return pack_small if size else (lambda buf, seq: None)


def produce_retry_reused(enqueue, Full, buf, chunks, deadline, out, i, start, chunk=BATCH_ITEMS, copy=False, seq=0) -> None:
    """``produce_retry`` for one reused bytearray (copied first if ``copy``)."""
    retries = n = 0
    sleep = time.sleep
    size = len(buf)
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


def produce_blocking_reused(enqueue, Full, buf, chunks, deadline, out, i, start, chunk=BATCH_ITEMS, copy=False, seq=0) -> None:
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


def own_binding(fn):
    """The same bound method as a new object, one per producer thread. On a
    free-threaded build, threads calling one shared method object contend on
    its reference count (every call takes and drops a reference), which is
    the benchmark's cost, not the batcher's; a thread that writes
    ``d.enqueue(p)`` itself never shares one."""
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", None)
    if owner is None or name is None or not hasattr(owner, name):
        return fn
    return getattr(owner, name)


def run_producers(impl, pool, nprod: int, total: int, offset: int, deadline=None, chunk: int = BATCH_ITEMS):
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
    enqueue = impl.enqueue_blocking if blocking else impl.enqueue
    reused = bool(pool) and isinstance(pool[0], bytearray)
    out: list = [None] * nprod
    start = threading.Barrier(nprod)
    threads = []
    for i in range(nprod):
        if reused:
            loop = produce_blocking_reused if blocking else produce_retry_reused
            args = (own_binding(enqueue), impl.Full, pool[i], chunks, deadline, out, i, start, chunk,
                    impl.needs_copy, offset + i * (total // nprod))
        else:
            loop = produce_blocking if blocking else produce_retry
            # Each producer cycles through the pool from its own starting point.
            k = (offset + i * 997) % len(pool)
            payloads = itertools.cycle(pool[k:] + pool[:k])
            args = (own_binding(enqueue), impl.Full, payloads, chunks, deadline, out, i, start, chunk)
        threads.append(threading.Thread(target=loop, args=args))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (
        min(o[0] for o in out),
        max(o[1] for o in out),
        sum(o[2] for o in out),
        sum(o[3] for o in out),
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


def start_reader():
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--reader"], stdout=subprocess.PIPE, text=True
    )
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


def timed_run(impl, sink: Sink, pool, nprod: int, items: int, size: int, warm: int, warm_max_s: float,
              chunk: int = BATCH_ITEMS, finish=None) -> dict:
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
) -> dict:
    base, payload = split_workload(workload)
    nprod = PRODUCERS[base]
    if warm is None:
        warm = warmup_for(size, items)
    pool = make_reused(size, nprod) if payload == "bytearray" else make_pool(size)
    impl = make_impl(impl_name, size, backpressure)
    sink = Sink()
    reader = sock = None
    if base == "W3":
        reader, sock = start_reader()
        handle = impl.sender(sink, sock)
    else:
        handle = impl.counter(sink)
    consumer = impl.start_consumer(handle, sink.done)
    finish = None
    if sock is not None:

        def finish(warmed):
            sock.shutdown(socket.SHUT_WR)
            received = int.from_bytes(recv_exact(sock, 8), "little")
            t_end = perf_counter()
            if received != (warmed + items) * size:
                raise RuntimeError(f"reader got {received} bytes, expected {(warmed + items) * size}")
            return t_end

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


def env_info() -> dict:
    info = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        )
        info["git"] = rev.stdout.strip() or None
    except Exception:
        info["git"] = None
    info["tempo_ext"] = tempo_ext_id()
    return info


def tempo_ext_id() -> str | None:
    """Which build of the extension ran: the first 12 hex digits of its SHA-256."""
    import hashlib

    for so in sorted((REPO / "tempo").glob("_core*.so")):
        return hashlib.sha256(so.read_bytes()).hexdigest()[:12]
    return None


def run_child(workload, size, impl, items, backpressure, timeout, quick) -> dict:
    from _common import run_json_child

    cmd = [
        str(Path(__file__).resolve()),
        "--case",
        f"{workload}:{impl}:{size}",
        "--items",
        str(items),
        "--backpressure",
        backpressure,
        "--producers",
        str(PRODUCERS["W2"]),
    ]
    if quick:
        cmd += ["--warmup-max-s", "0.1"]
    return run_json_child(cmd, CASE_PREFIX, timeout)


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def fmt_size(size: int) -> str:
    return f"{size // KiB} KiB" if size >= KiB and size % KiB == 0 else f"{size} B"


def print_table(summaries: dict, workloads, sizes, impls) -> None:
    head = f"{'':4} {'size':>7} |" + "".join(f" {name:>19} |" for name in impls) + " tempo/purepy"
    sub = f"{'':4} {'':>7} |" + "".join(f" {'items/s':>9} {'MB/s':>9} |" for _ in impls)
    lines = [head, sub, "-" * len(head)]
    for w in workloads:
        for s in sizes:
            row = f"{w:4} {fmt_size(s):>7} |"
            for name in impls:
                c = summaries.get((w, s, name))
                if c is None or c.get("items_per_s") is None:
                    row += f" {'skipped' if c is None else 'error':>19} |"
                else:
                    row += f" {fmt_rate(c['items_per_s']):>9} {c['mb_per_s']:>9.1f} |"
            t, p = summaries.get((w, s, "tempo")), summaries.get((w, s, "purepy"))
            if t and p and t.get("items_per_s") and p.get("items_per_s"):
                row += f" {t['items_per_s'] / p['items_per_s']:>8.2f}x"
            else:
                row += f" {'n/a':>9}"
            lines.append(row)
    print("\n".join(lines))


def write_chart(summaries: dict, workloads, sizes, impls, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, s in zip(axes[0], sizes):
        width = 0.8 / len(impls)
        for j, name in enumerate(impls):
            ys = [(summaries.get((w, s, name)) or {}).get("mb_per_s") or 0 for w in workloads]
            xs = [i + j * width for i in range(len(workloads))]
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(workloads))], workloads)
        ax.set_title(f"payload {fmt_size(s)}")
        ax.set_ylabel("MB/s (median)")
    axes[0][0].legend()
    fig.suptitle(
        "tempo vs alternatives, MB/s (median). W1/W2/W3: immutable bytes, which purepy, queue and otel "
        "keep by reference while tempo copies them once; W1b: a reused bytearray, everyone copies",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    log(f"chart written to {path}")


def parse_list(text: str, conv=str) -> list:
    return [conv(x.strip()) for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs, one repeat: a smoke test")
    ap.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help="e.g. W1,W3; a 'b' suffix (W1b, W2b, W3b) means bytearray payloads",
    )
    ap.add_argument(
        "--payload",
        choices=PAYLOAD_KINDS,
        default="bytes",
        help="bytes: a pool of distinct immutable bytes; bytearray: one reused, rewritten "
        "bytearray per producer (turns W1 into W1b, etc.)",
    )
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="payload sizes in bytes")
    ap.add_argument("--impls", default=",".join(ALL_IMPLS), help="tempo,purepy,queue,otel")
    ap.add_argument("--repeat", type=int, default=None, help="runs per case (default 3; 1 with --quick)")
    ap.add_argument(
        "--backpressure",
        choices=("native", "retry"),
        default="native",
        help="native: tempo waits with enqueue(timeout=None) if it can; retry: the same retry loop for all",
    )
    ap.add_argument("--items", type=int, default=None, help="payloads per run (overrides the per-size default)")
    ap.add_argument("--producers", type=int, default=PRODUCERS["W2"], help="producer threads of W2 (default 4)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds before a run is abandoned")
    ap.add_argument("--chart", nargs="?", const=str(RESULTS_DIR / "latest.png"), help="write a PNG chart")
    ap.add_argument("--out", default=str(RESULTS_DIR / "latest.jsonl"), help="where the JSON lines go")
    ap.add_argument(
        "--chart-only", action="store_true", help="redraw the --chart from the results in --out; run nothing"
    )
    ap.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)  # internal, with --case
    ap.add_argument("--warmup-max-s", type=float, default=None, help=argparse.SUPPRESS)  # internal
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: WORKLOAD:IMPL:SIZE
    ap.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)  # internal: W3 reader
    args = ap.parse_args(argv)
    if args.producers < 1:
        ap.error("--producers must be at least 1")
    PRODUCERS["W2"] = args.producers

    if args.reader:
        reader_main()
        return 0
    if args.case:
        workload, impl, size = args.case.split(":")
        warm_max_s = args.warmup_max_s if args.warmup_max_s is not None else WARMUP_MAX_S
        result = run_case(workload, int(size), impl, args.items, args.backpressure, args.warmup, warm_max_s)
        print(CASE_PREFIX + json.dumps(result), flush=True)
        return 0

    if args.chart_only:
        rows = [json.loads(line) for line in Path(args.out).read_text().splitlines() if line.strip()]
        summaries = {(r["workload"], r["size"], r["impl"]): r for r in rows}
        order = {name: i for i, name in enumerate(("W1", "W1b", "W2", "W2b", "W3", "W3b"))}
        workloads = sorted({r["workload"] for r in rows}, key=lambda w: order.get(w, 99))
        sizes = sorted({r["size"] for r in rows})
        impls = [i for i in ALL_IMPLS if any(r["impl"] == i for r in rows)]
        write_chart(summaries, workloads, sizes, impls, Path(args.chart or RESULTS_DIR / "latest.png"))
        return 0

    workloads = parse_list(args.workloads)
    sizes = parse_list(args.sizes, int)
    repeat = args.repeat or (1 if args.quick else 3)
    bad = []
    named = []
    for w in workloads:
        try:
            base, payload = split_workload(w)
        except ValueError:
            bad.append(w)
            continue
        if args.payload == "bytearray":
            payload = "bytearray"
        name = workload_name(base, payload)
        if name not in named:
            named.append(name)
    if bad:
        ap.error(f"unknown workload(s): {bad}")
    workloads = named
    impls = []
    for name in parse_list(args.impls):
        ok, why = impl_available(name)
        if ok:
            impls.append(name)
        else:
            log(f"note: skipping {name}: {why}")
    if not impls:
        log("nothing to run")
        return 1

    env = env_info()
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("")
    total_runs = len(workloads) * len(sizes) * repeat * len(impls)
    log(
        f"tempo bench: {len(workloads)} workloads x {len(sizes)} sizes x {len(impls)} impls "
        f"x {repeat} repeats = {total_runs} runs (each in a fresh process)"
    )
    started = monotonic()
    summaries: dict = {}
    k = 0
    for w in workloads:
        for s in sizes:
            unit = item_unit()
            items = max(unit, args.items // unit * unit) if args.items else items_for(s, args.quick)
            runs: dict = {name: [] for name in impls}
            for rep in range(repeat):
                for name in impls:
                    k += 1
                    log(f"[{k}/{total_runs}] {w} S={fmt_size(s)} {name} run {rep + 1}/{repeat} ({items} payloads) ...")
                    r = run_child(w, s, name, items, args.backpressure, args.timeout, args.quick)
                    runs[name].append(r)
                    if "error" in r:
                        log(f"    error: {r['error']}")
                    else:
                        log(
                            f"    {fmt_rate(r['items_per_s'])} items/s, {r['mb_per_s']:.1f} MB/s, "
                            f"{r['elapsed_s']:.2f} s, cpu {r['cpu_s']:.2f} s, {r['full_retries']} retries"
                        )
            for name in impls:
                ok = [r for r in runs[name] if "error" not in r]
                summary = {
                    "workload": w,
                    "size": s,
                    "impl": name,
                    "items": items,
                    "repeat": repeat,
                    "ok_runs": len(ok),
                    "items_per_s": statistics.median(r["items_per_s"] for r in ok) if ok else None,
                    "mb_per_s": statistics.median(r["mb_per_s"] for r in ok) if ok else None,
                    "elapsed_s": statistics.median(r["elapsed_s"] for r in ok) if ok else None,
                    "cpu_s": statistics.median(r["cpu_s"] for r in ok) if ok else None,
                    "cpu_ns_per_item": statistics.median(r["cpu_ns_per_item"] for r in ok) if ok else None,
                    "payload": split_workload(w)[1],
                    "runs": runs[name],
                    "config": {
                        "interval_s": INTERVAL,
                        "max_batch_bytes": BATCH_ITEMS * s,
                        "max_buffered_bytes": MAX_BUFFERED,
                        "producers": PRODUCERS[split_workload(w)[0]],
                        "payload": split_workload(w)[1],
                        "backpressure": args.backpressure,
                        "quick": args.quick,
                    },
                    "env": env,
                }
                summaries[(w, s, name)] = summary
            base = summaries.get((w, s, "purepy"))
            for name in impls:
                summary = summaries[(w, s, name)]
                if base and base["items_per_s"] and summary["items_per_s"]:
                    summary["ratio_vs_purepy"] = summary["items_per_s"] / base["items_per_s"]
                line = json.dumps(summary)
                print(JSON_PREFIX + line, flush=True)
                with out_path.open("a") as f:
                    f.write(line + "\n")
    log(f"done in {monotonic() - started:.0f} s; results in {out_path}")
    print()
    print(
        f"Median of {repeat} run(s); MB = 10^6 bytes; interval 1 s, max_batch_bytes 256*S, "
        f"max_buffered_bytes 64 MiB; backpressure: {args.backpressure}"
    )
    print_table(summaries, workloads, sizes, impls)
    if args.chart:
        try:
            write_chart(summaries, workloads, sizes, impls, Path(args.chart))
        except ImportError:
            log("note: matplotlib not installed; no chart")
    failed = sum(1 for s in summaries.values() if s["ok_runs"] == 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
