"""Micro-benchmarks of tempo's hot paths, with the pure-Python batcher alongside.

Run with ``make bench-micro`` (``pytest bench/ --benchmark-enable``).  The normal
test suite does not collect this file (``testpaths`` is ``tests/``), and with
the project's default ``--benchmark-disable`` each benchmark runs once, as a
smoke test.

What each benchmark times (``benchmark.pedantic`` with an untimed ``setup``, so
one round measures exactly the operation named and nothing else):

- ``test_enqueue``: 1000 ``enqueue`` calls of 16 B / 256 B / 10 KiB payloads
  (1000 distinct pre-built ``bytes``) into a dispatcher that never fills: the
  setup drains the previous round's 10 batches (``max_batch_bytes = 100 * S``,
  so the 1000 payloads seal themselves) and releases them.  Divide by 1000 for
  the cost of one enqueue.  ``max_buffered_bytes`` is two rounds' worth (at
  least 4 MiB) and twice that is cycled through before timing starts, so
  tempo's arena pages are already touched, as in a long-running process.
- ``test_get_batch_release``: 10 ``get_batch`` + ``release`` of ready batches
  (of 100 payloads each); the setup enqueues them.  Divide by 10 for one batch.
- ``test_enqueue_many_vs_loop``: 10,000 payloads of 16 B from a list, by
  ``d.enqueue_many(payloads)`` (one C call) and by a Python loop of
  ``enqueue``, in one group so the two appear side by side (tempo only; issue
  9 asks enqueue_many for 3x the loop). Same dispatcher shape and untimed
  drain as ``test_enqueue``.  ``bench/enqueue_many.py`` prints the ratio.
- ``test_sendall``: send one ready batch of 100 payloads over an ``AF_UNIX``
  socketpair whose other end a thread drains: ``batch.sendall(sock)`` for tempo
  (skipped if it does not exist), ``sock.sendmsg`` of the list (chunked at
  IOV_MAX, partial sends resumed) for the pure-Python batcher.

Benchmarks are grouped by operation and size, so ``tempo`` and ``purepy`` appear
next to each other.  The interval is an hour: the timer never fires during a
benchmark.
"""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent
for _p in (str(BENCH_DIR), str(BENCH_DIR.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from tempo.tools import _purepy as purepy  # noqa: E402
from _workloads import sendmsg_all  # noqa: E402  (the one copy, shared with compare.py)

from tempo import MiB  # noqa: E402
SIZES = [16, 256, 10240]
PER_ROUND = 1000  # enqueues per round of test_enqueue
PER_BATCH = 100  # payloads per batch
ROUNDS = 200


def _tempo():
    try:
        import tempo

        tempo.Dispatcher  # noqa: B018
        return tempo
    except Exception:  # noqa: BLE001 - any failure to import means no build to measure
        return None


TEMPO = _tempo()
IMPLS = [
    pytest.param(
        "tempo",
        marks=pytest.mark.skipif(TEMPO is None, reason="tempo extension not built (make build)"),
    ),
    "purepy",
]


class Subject:
    """One dispatcher of either implementation, behind the same four calls."""

    def __init__(self, impl: str, size: int) -> None:
        # Room for two rounds: never full, yet small enough that the warm-up below
        # touches every page of tempo's arena (first-touch faults are not what we time).
        self.max_buffered = max(4 * MiB, 2 * PER_ROUND * size)
        kwargs = dict(interval=3600.0, max_buffered_bytes=self.max_buffered, max_batch_bytes=PER_BATCH * size)
        self.impl = impl
        if impl == "tempo":
            self.d = TEMPO.Dispatcher(**kwargs)
            self.d.start()
            self.release = _release_tempo
        else:
            self.d = purepy.Batcher(**kwargs)
            self.release = _release_list
        self.enqueue = self.d.enqueue
        self.get_batch = self.d.get_batch
        self.payloads = [bytes([i % 251]) * size for i in range(PER_ROUND)]
        self.pending = 0  # sealed batches not yet taken
        self.warm_up()

    def warm_up(self) -> None:
        """Cycle twice the buffer bound through the dispatcher (enqueue, drain)."""
        moved = 0
        while moved < 2 * self.max_buffered:
            self.fill()
            self.drain()
            moved += PER_ROUND * len(self.payloads[0])

    def fill(self, count: int = PER_ROUND) -> None:
        enqueue = self.enqueue
        for p in self.payloads[:count]:
            enqueue(p)
        self.pending += count // PER_BATCH

    def drain(self) -> None:
        while self.pending:
            self.release(self.get_batch(timeout=5))
            self.pending -= 1

    def close(self) -> None:
        self.drain()
        self.d.stop()


def _release_tempo(batch) -> None:
    batch.release()


def _release_list(batch) -> None:
    pass


@pytest.fixture
def subject_factory():
    made = []

    def make(impl: str, size: int) -> Subject:
        s = Subject(impl, size)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
@pytest.mark.parametrize("impl", IMPLS)
def test_enqueue(benchmark, subject_factory, impl, size):
    """1000 enqueues into a dispatcher drained between rounds (untimed)."""
    s = subject_factory(impl, size)
    benchmark.group = f"enqueue x{PER_ROUND}, {size} B"
    payloads = s.payloads
    enqueue = s.enqueue

    def setup():
        s.drain()

    def enqueue_all():
        for p in payloads:
            enqueue(p)

    def run():
        enqueue_all()
        s.pending += PER_ROUND // PER_BATCH

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=5)
    s.drain()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
@pytest.mark.parametrize("impl", IMPLS)
def test_get_batch_release(benchmark, subject_factory, impl, size):
    """10 x (get_batch + release) of ready batches of 100 payloads."""
    s = subject_factory(impl, size)
    benchmark.group = f"get_batch+release x{PER_ROUND // PER_BATCH}, {PER_BATCH} x {size} B"
    get_batch, release = s.get_batch, s.release
    n = PER_ROUND // PER_BATCH

    def setup():
        s.fill()

    def run():
        for _ in range(n):
            release(get_batch(timeout=5))
        s.pending -= n

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=5)


MANY = 10_000  # payloads per round of test_enqueue_many_vs_loop
MANY_SIZE = 16


@pytest.mark.skipif(TEMPO is None, reason="tempo extension not built (make build)")
@pytest.mark.parametrize("how", ["loop", "enqueue_many"])
def test_enqueue_many_vs_loop(benchmark, how):
    """10,000 x 16 B from a list: one enqueue_many call, or a loop of enqueue."""
    benchmark.group = f"enqueue {MANY} x {MANY_SIZE} B from a list"
    payloads = [bytes([i % 251]) * MANY_SIZE for i in range(MANY)]
    limit = max(4 * MiB, 4 * MANY * MANY_SIZE)
    d = TEMPO.Dispatcher(
        interval=3600.0, max_buffered_bytes=limit, max_batch_bytes=PER_BATCH * MANY_SIZE
    )
    d.start()
    enqueue, enqueue_many = d.enqueue, d.enqueue_many

    def drain():
        while True:
            try:
                batch = d.get_batch(timeout=0)
            except TimeoutError:
                return
            batch.release()

    def loop():
        for p in payloads:
            enqueue(p)

    def many():
        assert enqueue_many(payloads) == MANY

    for _ in range(2 * limit // (MANY * MANY_SIZE)):  # touch the arena's pages first
        many()
        drain()
    try:
        benchmark.pedantic(
            loop if how == "loop" else many,
            setup=drain,
            rounds=ROUNDS // 4,
            iterations=1,
            warmup_rounds=3,
        )
    finally:
        d.stop()


@pytest.fixture
def sockpair():
    """An AF_UNIX stream pair; a thread reads and discards everything sent."""
    a, b = socket.socketpair()

    def drain():
        buf = bytearray(1 << 20)
        while b.recv_into(buf):
            pass

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    yield a
    a.close()
    t.join(5)
    b.close()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
@pytest.mark.parametrize("impl", IMPLS)
def test_sendall(benchmark, subject_factory, sockpair, impl, size):
    """Send one batch of 100 payloads over a socketpair."""
    s = subject_factory(impl, size)
    benchmark.group = f"send batch, {PER_BATCH} x {size} B"
    if impl == "tempo":
        s.fill(PER_BATCH)
        probe = s.get_batch(timeout=5)
        s.pending -= 1
        has_sendall = hasattr(probe, "sendall")
        probe.release()
        if not has_sendall:
            pytest.skip("tempo Batch has no sendall()")

        def send(batch):
            batch.sendall(sockpair)

    else:

        def send(batch):
            sendmsg_all(sockpair, batch)

    held = []

    def setup():
        for b in held:
            s.release(b)
        held.clear()
        s.fill(PER_BATCH)
        batch = s.get_batch(timeout=5)
        s.pending -= 1
        held.append(batch)
        return (batch,), {}

    benchmark.pedantic(send, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=5)
    for b in held:
        s.release(b)
