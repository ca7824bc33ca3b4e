"""Leaks: thousands of dispatcher lifecycles and millions of payloads leave
resident memory, Python objects, file descriptors and threads where they were.

Each test warms up first (allocator pools, caches, lazily imported modules),
takes a baseline, runs the workload, and compares. The bounds are generous
(allocator and interpreter noise) but real: leaking one object, one fd or one
thread per lifecycle, or one arena, would cross them many times over.

``make test`` runs a few thousand lifecycles and two million (2**21) payloads;
``make test-long`` (``TEMPO_LONG``) eight times more.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import sys
import threading

import tempo
from conftest import WAIT, wait_until

LONG = bool(os.environ.get("TEMPO_LONG"))
SCALE = 8 if LONG else 1
LIFECYCLES = 2_000 * SCALE
ASYNC_LIFECYCLES = 500 * SCALE
PAYLOADS = (1 << 21) * SCALE  # whole batches of 256
WARMUP = 1 << 17

PAGE = os.sysconf("SC_PAGE_SIZE")
#: Resident memory may grow this much (allocator arenas, fragmentation)...
RSS_SLACK = 24 * tempo.MiB
#: ...any one type's tracked objects this much, and the Python heap this many
#: blocks (per test: well under one per lifecycle; measured growth is about
#: 100 blocks for the lifecycles, 200 for the asyncio ones, whatever their
#: number).
TYPE_SLACK = 100


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def type_counts() -> collections.Counter:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


class Snapshot:
    def __init__(self):
        gc.collect()
        # Driver threads end on their own once their dispatcher is finished.
        self.threads = threading.active_count()
        self.fds = fds()
        self.blocks = sys.getallocatedblocks()
        self.types = type_counts()
        self.live = len(tempo._lifecycle.live())
        self.rss = rss()

    def assert_flat(self, baseline: "Snapshot", what: str, block_slack: int) -> None:
        assert self.threads <= baseline.threads, f"{what}: threads {baseline.threads} -> {self.threads}"
        assert self.fds <= baseline.fds, f"{what}: fds {baseline.fds} -> {self.fds}"
        assert self.live <= baseline.live, f"{what}: live dispatchers {baseline.live} -> {self.live}"
        grown = {t: n - baseline.types.get(t, 0) for t, n in self.types.items()}
        worst = sorted(grown.items(), key=lambda kv: -kv[1])[:5]
        assert worst[0][1] <= TYPE_SLACK, f"{what}: tracked objects grew: {worst}"
        blocks = self.blocks - baseline.blocks
        assert blocks <= block_slack, f"{what}: {blocks} more Python heap blocks; {worst}"
        grown_rss = self.rss - baseline.rss
        assert grown_rss <= RSS_SLACK, f"{what}: RSS grew by {grown_rss / tempo.MiB:.1f} MiB"


def settle(baseline_threads: int) -> None:
    wait_until(lambda: threading.active_count() <= baseline_threads, timeout=WAIT,
               what="driver threads to end")


def lifecycle(i: int) -> None:
    """One dispatcher's whole life, a different path each time: payloads in
    every state, batches released or dropped, views kept and dropped, and
    every way to end (stop, shutdown, the context manager, the collector)."""
    kind = i % 5
    d = tempo.Dispatcher(interval=60, max_buffered_bytes=tempo.MiB, max_batch_bytes=4096)
    big = bytes(512 * tempo.KiB)  # touches the arena's pages
    if kind == 0:  # stop with everything still buffered
        d.start()
        d.enqueue(big)
        d.enqueue(b"x" * 100)
        d.stop()
    elif kind == 1:  # a batch and a view outlive a graceful shutdown
        d.start()
        d.enqueue(big)
        batch = d.get_batch(timeout=WAIT)
        view = batch[0][10:20]
        d.enqueue(b"y" * 5000)
        try:
            d.shutdown(timeout=0)
        except TimeoutError:
            pass
        batch.release()
        assert bytes(view) == bytes(10)
        del view, batch
    elif kind == 2:  # the context manager, drained by this thread meanwhile
        with d:
            d.enqueue(big)
            with d.get_batch(timeout=WAIT) as batch:
                assert batch.nbytes == len(big)
    elif kind == 3:  # never started, never stopped: collected
        d.enqueue(b"z" * 4096)
        try:
            d.enqueue(bytes(2 * tempo.MiB))
        except tempo.PayloadTooLarge:
            pass
    else:  # started and dropped while running: the driver lets it go
        d.start()
        d.enqueue(big)
        d.enqueue(b"w")


def test_lifecycles_leak_nothing():
    for i in range(200):
        lifecycle(i)
    before = Snapshot()
    settle(before.threads)
    for i in range(LIFECYCLES):
        lifecycle(i)
    settle(before.threads)
    Snapshot().assert_flat(before, f"{LIFECYCLES} lifecycles", block_slack=LIFECYCLES // 2)


async def async_lifecycle(i: int) -> None:
    """An asyncio consumer (its wake-up fd registered and removed) and ashutdown."""
    d = tempo.Dispatcher(interval=60, max_buffered_bytes=64 * tempo.KiB, max_batch_bytes=4096)
    d.start()

    async def consume():
        return [batch.tolist() async for batch in d.abatches()]

    d.enqueue(b"a" * 100)
    d.enqueue(b"b" * 5000)  # seals "a", then itself
    if i % 2:
        await d.aget_batch(timeout=WAIT)  # "a", taken here and released on collection
    task = asyncio.ensure_future(consume())
    await d.ashutdown(timeout=WAIT)
    got = await asyncio.wait_for(task, WAIT)
    assert got == ([[b"b" * 5000]] if i % 2 else [[b"a" * 100], [b"b" * 5000]])


def test_async_lifecycles_leak_nothing():
    for i in range(20):
        asyncio.run(async_lifecycle(i))
    before = Snapshot()
    for i in range(ASYNC_LIFECYCLES):
        asyncio.run(async_lifecycle(i))
    settle(before.threads)
    Snapshot().assert_flat(before, f"{ASYNC_LIFECYCLES} asyncio lifecycles",
                           block_slack=ASYNC_LIFECYCLES * 3 // 4)


def test_payloads_leak_nothing():
    d = tempo.Dispatcher(interval=60, max_buffered_bytes=4 * tempo.MiB,
                         max_batch_bytes=4 * tempo.KiB)
    d.start()
    payloads = [bytes([i]) * 16 for i in range(256)]
    enqueue, get_batch = d.enqueue, d.get_batch

    def pump(count: int) -> int:
        delivered = 0
        kept = None
        for i in range(count):
            enqueue(payloads[i & 255])
            if i & 255 == 255:  # 256 x 16 bytes: a batch is sealed
                with get_batch(timeout=WAIT) as batch:
                    delivered += len(batch)
                    if i & 0xFFFF == 0xFFFF:
                        assert batch.tolist()[1] == payloads[1]
                        kept = batch[7]  # a view that outlives its batch
                    elif i & 0x3FFF == 0x3FFF:
                        kept = None  # noqa: F841 - dropping the view is the point
        return delivered

    pump(WARMUP)
    before = Snapshot()
    assert pump(PAYLOADS) == PAYLOADS
    after = Snapshot()
    # One block per batch (8,192 of them) would show.
    after.assert_flat(before, f"{PAYLOADS} payloads", block_slack=1_000)
    stats = d.stats()
    assert (stats.enqueued, stats.items, stats.dropped) == (PAYLOADS + WARMUP,) * 2 + (0,)
    assert stats.buffered_bytes == 0
    d.stop()
