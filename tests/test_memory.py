"""Bounded memory: bookkeeping, arena residency, and placement of admitted payloads."""

from __future__ import annotations

import gc
import os
import random

import pytest

import tempo
from strategies import payload

WAIT = 5.0
PAGE = os.sysconf("SC_PAGE_SIZE")
#: "A small constant": page rounding, bookkeeping, allocator noise.
SLACK = 8 * tempo.MiB


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@pytest.mark.parametrize("interval", [60, 0.001], ids=["one-open-batch", "many-sealed-batches"])
def test_flood_of_empty_payloads_never_grows_memory(make, drain, interval):
    flood = 1_000_000
    gc.collect()
    before = rss()
    d = make(interval=interval, max_buffered_bytes=64 * tempo.KiB, max_batch_bytes=0)
    d.start()
    enqueue = d.enqueue
    empty = b""
    accepted = rejected = 0
    for _ in range(flood):
        try:
            enqueue(empty)
        except tempo.QueueFull:
            rejected += 1
        else:
            accepted += 1
    grown = rss() - before
    assert accepted + rejected == flood
    assert accepted > 0
    assert grown < 64 * tempo.KiB + SLACK, f"RSS grew by {grown / tempo.MiB:.1f} MiB"
    stats = d.stats()
    assert (stats.enqueued, stats.enqueued_bytes, stats.rejected_full) == (accepted, 0, rejected)
    # Everything accepted is delivered.
    batches = drain(d)
    assert sum(len(b) for b in batches) == accepted
    assert {item for b in batches for item in b} == {b""}


def test_byte_traffic_keeps_resident_memory_within_the_bound(make):
    limit = 4 * tempo.MiB
    chunk = 64 * tempo.KiB
    gc.collect()
    before = rss()
    d = make(interval=60, max_buffered_bytes=limit, max_batch_bytes=chunk)
    d.start()
    body = bytes(chunk - 8)
    for i in range(1024):  # 64 MiB through a 4 MiB bound
        d.enqueue(i.to_bytes(8, "little") + body)
        with d.get_batch(timeout=WAIT) as batch:
            assert len(batch) == 1
            assert batch.nbytes == chunk
            assert bytes(batch[0][:8]) == i.to_bytes(8, "little")
    grown = rss() - before
    assert grown < limit + SLACK, f"RSS grew by {grown / tempo.MiB:.1f} MiB"
    assert d.stats().buffered_bytes == 0


def test_full_arena_stays_within_the_bound(make, drain):
    limit = 2 * tempo.MiB
    gc.collect()
    before = rss()
    d = make(interval=60, max_buffered_bytes=limit, max_batch_bytes=0)
    d.start()
    size = 512
    accepted = 0
    for i in range(limit // size + 100):
        try:
            d.enqueue(payload(i, size))
        except tempo.QueueFull:
            continue
        accepted += 1
    grown = rss() - before
    assert accepted == limit // size
    assert d.stats().buffered_bytes == limit
    assert grown < limit + SLACK, f"RSS grew by {grown / tempo.MiB:.1f} MiB"
    batches = drain(d)
    assert batches == [[payload(i, size) for i in range(accepted)]]


def _check_contents(held, pinned):
    # A function, so that no loop variable keeps a view alive in the test.
    for batch, p in held:
        assert bytes(batch[0]) == p
    for view, expected in pinned:
        assert bytes(view) == expected


@pytest.mark.parametrize("seed", range(5))
def test_admission_follows_the_byte_accounting_exactly(make, seed):
    """QueueFull iff owned + size > max_buffered_bytes: a payload the accounting
    admits is always placed (the arena is never too fragmented to take it), and
    no view ever shows bytes of another payload."""
    rng = random.Random(seed)
    limit = 256
    # max_batch_bytes=1: every non-empty payload is sealed alone, at once.
    d = make(interval=60, max_buffered_bytes=limit, max_batch_bytes=1)
    d.start()
    held = []  # (batch, payload): handed out, not released
    pinned = []  # (view, bytes): views kept after their batch was released
    placed = refused = 0
    for step in range(1500):
        action = rng.random()
        if action < 0.5:
            p = payload(step, rng.randint(1, 120))
            owned = d.stats().buffered_bytes
            if owned + len(p) <= limit:
                d.enqueue(p)
                placed += 1
                got = d.get_batch(timeout=WAIT)
                assert got.tolist() == [p]
                held.append((got, p))
                del got
            else:
                with pytest.raises(tempo.QueueFull):
                    d.enqueue(p)
                refused += 1
        elif action < 0.85 and held:
            batch, p = held.pop(rng.randrange(len(held)))
            if rng.random() < 0.3:
                start = rng.randrange(len(p))
                stop = rng.randrange(start, len(p) + 1)
                pinned.append((batch[0][start:stop], p[start:stop]))
            batch.release()
            del batch
        elif pinned:
            pinned.pop(rng.randrange(len(pinned)))
        _check_contents(held, pinned)
        owned = d.stats().buffered_bytes
        assert owned <= limit
        assert owned >= sum(len(p) for _, p in held) + sum(len(e) for _, e in pinned)
    assert placed > 100
    assert refused > 0
    held.clear()
    pinned.clear()
    assert d.stats().buffered_bytes == 0
    d.enqueue(b"w" * limit)
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"w" * limit]
