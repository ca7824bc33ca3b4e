"""The stats that explain back-pressure: ``waiting_batches`` (sealed, not yet
handed out), ``held_batches`` (handed out, bytes not yet back) and
``oldest_wait`` (age of the oldest payload not yet handed out)."""

from __future__ import annotations

import time

import pytest

import tempo
from conftest import WAIT

#: Long enough for an age to be seen growing (a measured age, not a wait for
#: an event: nothing signals "time has passed").
AGE = 0.05


def shape(d) -> tuple[int, int]:
    stats = d.stats()
    return stats.waiting_batches, stats.held_batches


def test_waiting_batches_counts_sealed_batches_not_handed_out(make):
    d = make(interval=60, max_batch_items=2)
    d.enqueue_many([b"a", b"b", b"c", b"d", b"e"])
    assert shape(d) == (2, 0)  # [a b] [c d] sealed; [e] open
    d._seal_now()
    assert shape(d) == (3, 0)
    d.start()
    first = d.get_batch(timeout=0)
    assert shape(d) == (2, 1)
    second = d.get_batch(timeout=0)
    third = d.get_batch(timeout=0)
    assert shape(d) == (0, 3)
    for batch in (first, second, third):
        batch.release()
    assert shape(d) == (0, 0)


def test_held_batches_counts_released_batches_until_their_bytes_are_back(make):
    d = make(interval=60, max_batch_items=1)
    d.start()
    d.enqueue_many([b"a", b"b", b"c"])
    first, second, third = (d.get_batch(timeout=0) for _ in range(3))
    assert shape(d) == (0, 3)
    # Released behind an unreleased batch: its bytes are not back yet.
    second.release()
    third.release()
    assert shape(d) == (0, 3)
    assert d.stats().buffered_bytes == 3
    view = first[0]  # pins the first batch's bytes after its release
    first.release()
    assert shape(d) == (0, 3)
    del view
    assert shape(d) == (0, 0)
    assert d.stats().buffered_bytes == 0


def test_stop_drops_waiting_batches_and_leaves_held_ones_held(make):
    d = make(interval=60, max_batch_items=1)
    d.start()
    d.enqueue_many([b"a", b"b", b"c"])
    held = d.get_batch(timeout=0)
    assert shape(d) == (2, 1)
    d.stop()
    # The dropped batches were never handed out: not held, though their
    # bytes wait behind the held one.
    stats = d.stats()
    assert (stats.waiting_batches, stats.held_batches, stats.dropped) == (0, 1, 2)
    assert stats.buffered_bytes == 3
    assert stats.oldest_wait == 0.0
    held.release()
    assert shape(d) == (0, 0)
    assert d.stats().buffered_bytes == 0


def test_shutdown_hands_everything_out(make, drain):
    d = make(interval=60, max_batch_items=1)
    d.start()
    d.enqueue_many([b"a", b"b"])
    assert drain(d) == [[b"a"], [b"b"]]
    stats = d.stats()
    assert (stats.waiting_batches, stats.held_batches, stats.oldest_wait) == (0, 0, 0.0)


def measure_age(d, since_before: float, since_after: float) -> float:
    """``d.stats().oldest_wait``, checked against the time window in which
    the oldest payload arrived."""
    before = time.monotonic()
    age = d.stats().oldest_wait
    after = time.monotonic()
    assert before - since_after <= age <= after - since_before
    return age


def test_oldest_wait_is_zero_with_nothing_waiting(make):
    d = make(interval=60)
    assert d.stats().oldest_wait == 0.0
    d.start()
    d.enqueue(b"a")
    d._seal_now()
    batch = d.get_batch(timeout=0)
    # Handed out, even if not released: nothing is waiting for a consumer.
    assert d.stats().oldest_wait == 0.0
    batch.release()
    assert d.stats().oldest_wait == 0.0
    assert type(d.stats().oldest_wait) is float


def test_oldest_wait_ages_the_open_batch_before_start(make):
    d = make(interval=60)
    t0 = time.monotonic()
    d.enqueue(b"a")
    t1 = time.monotonic()
    d.enqueue(b"b")  # later payloads of the batch do not reset the age
    time.sleep(AGE)
    age = measure_age(d, t0, t1)
    assert age >= AGE


def test_oldest_wait_follows_the_next_batch_once_one_is_handed_out(make):
    d = make(interval=60, max_batch_items=1)
    d.start()
    t0 = time.monotonic()
    d.enqueue(b"first")
    t1 = time.monotonic()
    time.sleep(AGE)
    t2 = time.monotonic()
    d.enqueue(b"second")
    t3 = time.monotonic()
    measure_age(d, t0, t1)
    with d.get_batch(timeout=0) as batch:
        assert batch.tolist() == [b"first"]
    # Now the second payload is the oldest not handed out.
    measure_age(d, t2, t3)
    with d.get_batch(timeout=0):
        pass
    assert d.stats().oldest_wait == 0.0


def test_oldest_wait_counts_from_the_first_payload_of_an_interval_batch(make):
    d = make(interval=0.2)
    d.start()
    d.enqueue(b"a")
    with d.get_batch(timeout=WAIT) as batch:  # sealed by the interval
        assert batch.tolist() == [b"a"]
    assert d.stats().oldest_wait == 0.0
    t2 = time.monotonic()
    d.enqueue(b"b")
    t3 = time.monotonic()
    measure_age(d, t2, t3)


def test_oldest_wait_stops_at_stop(make):
    d = make(interval=60)
    d.enqueue(b"a")
    d.stop()
    assert d.stats().oldest_wait == 0.0


def test_counts_survive_many_rounds_of_the_ring(make):
    # Slots and their timestamps are reused ring-wise: the counts stay exact.
    d = make(interval=60, max_buffered_bytes=64, max_batch_items=3)
    d.start()
    for round_ in range(200):
        assert d.enqueue_many([b"%02d" % (round_ % 100)] * 7) == 7
        assert shape(d) == (2, 0)
        held = [d.get_batch(timeout=0), d.get_batch(timeout=0)]
        assert shape(d) == (0, 2)
        d._seal_now()
        held.append(d.get_batch(timeout=0))
        assert shape(d) == (0, 3)
        for batch in reversed(held):
            batch.release()
        assert shape(d) == (0, 0)
        assert d.stats().oldest_wait == 0.0
    stats = d.stats()
    assert (stats.enqueued, stats.batches, stats.buffered_bytes) == (1400, 600, 0)


def test_stats_show_both_capacities_bytes_and_items(make):
    # The item slots are a second limit beside the bytes (docs/rules.md, "The
    # item-slot bound"); stats() shows both, so a QueueFull from either can
    # be read off it.
    d = make(interval=60, max_buffered_bytes=1000)
    stats = d.stats()
    assert (stats.buffered_bytes, stats.max_buffered_bytes) == (0, 1000)
    assert (stats.buffered_items, stats.max_buffered_items) == (0, 1023)
    assert d.enqueue_many([b""] * 1024) == 1023  # slots run out, no bytes used
    stats = d.stats()
    assert (stats.buffered_bytes, stats.buffered_items) == (0, 1023)
    with pytest.raises(tempo.QueueFull, match="item slots: 1023 items owned"):
        d.enqueue(b"")
