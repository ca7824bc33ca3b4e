"""Beyond the Go API: ``enqueue(timeout=...)``, ``flush(timeout)`` and ``stats()``."""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import pytest

import tempo
from conftest import STATS_FIELDS, wait_blocked_on_state

WAIT = 5.0
#: How long a call must stay blocked for us to believe it is waiting.
BLOCKED = 0.2


FULL = b"0123456789"


def full(make, *, start=True):
    """A dispatcher whose whole budget (10 bytes) is one sealed, undelivered batch."""
    d = make(interval=60, max_buffered_bytes=10, max_batch_bytes=10)
    if start:
        d.start()
    d.enqueue(FULL)
    return d


def waiting_enqueue(spawn, d, payload=b"x", **kwargs):
    """Start ``d.enqueue(payload, **kwargs)`` in a thread; return once the thread
    is about to call it."""
    about_to_call = threading.Event()

    def call():
        about_to_call.set()
        return d.enqueue(payload, **kwargs)

    task = spawn(call)
    assert about_to_call.wait(WAIT)
    return task


def counters(d) -> dict:
    """The counters of ``d.stats()``: every field but ``oldest_wait``, an age
    that moves on by itself."""
    stats = dataclasses.asdict(d.stats())
    del stats["oldest_wait"]
    return stats


# --- enqueue(payload, timeout=...) ----------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"timeout": 0}, {"timeout": 0.0}])
def test_enqueue_without_timeout_fails_at_once_when_full(make, kwargs):
    d = full(make)
    t0 = time.monotonic()
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"x", **kwargs)
    with pytest.raises(tempo.QueueFull):
        d.enqueue(bytearray(b"x"), **kwargs)
    assert time.monotonic() - t0 < 1.0
    assert d.stats().rejected_full == 2
    assert d.stats().enqueued == 1


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_enqueue_with_timeout_waits_for_a_release(make, spawn, kind):
    d = full(make)
    batch = d.get_batch(timeout=WAIT)
    task = waiting_enqueue(spawn, d, kind(b"next"), timeout=WAIT * 2)
    assert not task.wait(BLOCKED), "enqueue returned although the queue is still full"
    batch.release()
    assert task.result() is None
    stats = d.stats()
    assert (stats.enqueued, stats.enqueued_bytes, stats.rejected_full) == (2, 14, 0)
    assert stats.buffered_bytes == 4
    consumer = spawn(d.get_batch, timeout=WAIT)
    d.flush(timeout=WAIT)
    with consumer.result() as got:
        assert got.tolist() == [b"next"]


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_enqueue_times_out_with_queue_full(make, kind):
    d = full(make)
    t0 = time.monotonic()
    with pytest.raises(tempo.QueueFull):
        d.enqueue(kind(b"x"), timeout=0.3)
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 0.3 + WAIT
    assert d.stats().rejected_full == 1
    assert d.stats().enqueued == 1


def test_enqueue_timeout_counts_from_the_call_not_per_wakeup(make, spawn):
    # Hand-offs wake a waiting producer without freeing space: it must go back to
    # waiting on the same deadline, and fail once it passes.
    d = make(interval=60, max_buffered_bytes=10, max_batch_bytes=5)
    d.start()
    d.enqueue(b"aaaaa")
    d.enqueue(b"bbbbb")
    held = d.get_batch(timeout=WAIT)  # [aaaaa], kept: the queue stays full
    t0 = time.monotonic()
    task = waiting_enqueue(spawn, d, b"c", timeout=0.5)
    with d.get_batch(timeout=WAIT) as second:  # a hand-off, but releases nothing
        assert second.tolist() == [b"bbbbb"]
        # The tail is still held by ``held``: nothing comes back yet.
        with pytest.raises(tempo.QueueFull):
            task.result()
    assert time.monotonic() - t0 >= 0.5
    held.release()


def test_enqueue_none_waits_until_space(make, spawn):
    d = full(make)
    batch = d.get_batch(timeout=WAIT)
    task = waiting_enqueue(spawn, d, b"x", timeout=None)
    assert not task.wait(BLOCKED * 2)
    assert d.stats().rejected_full == 0
    batch.release()
    assert task.result() is None
    assert d.stats().enqueued == 2


def test_enqueue_none_in_the_main_thread_waits_until_space(make, spawn):
    d = full(make)
    batch = d.get_batch(timeout=WAIT)
    released = threading.Event()

    def release_later():
        wait_blocked_on_state(d)
        released.set()
        batch.release()

    spawn(release_later)
    d.enqueue(b"x", timeout=None)
    assert released.is_set()
    assert d.stats().enqueued == 2


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_stop_wakes_a_waiting_enqueue_with_stopped(make, spawn, timeout):
    d = full(make)
    task = waiting_enqueue(spawn, d, b"x", timeout=timeout)
    assert not task.wait(BLOCKED)
    t0 = time.monotonic()
    d.stop()
    assert isinstance(task.exception(), tempo.Stopped)
    assert time.monotonic() - t0 < WAIT
    stats = d.stats()
    assert (stats.enqueued, stats.rejected_full, stats.dropped) == (1, 0, 1)


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_shutdown_wakes_a_waiting_enqueue_with_shutting_down(make, spawn, collector, timeout):
    # The queue is full of an undelivered batch and no consumer is there yet, so
    # the shutdown is in progress (waiting for one) when the producer wakes.
    d = full(make)
    producer = waiting_enqueue(spawn, d, b"x", timeout=timeout)
    assert not producer.wait(BLOCKED)
    shutdown = spawn(d.shutdown, timeout=30.0)
    error = producer.exception(timeout=2.0)
    assert isinstance(error, tempo.ShuttingDown), (
        "a producer waiting for space was not woken by shutdown() "
        f"(got {error!r} instead of ShuttingDown)"
    )
    assert not shutdown.done()
    # The shutdown still completes once a consumer comes, and the payload that was
    # refused is not delivered.
    consumer = collector(d)
    assert shutdown.result() is None
    assert consumer.result() == [[FULL]]
    assert d.stats().enqueued == 1


def test_shutdown_wakes_a_waiting_enqueue_in_the_main_thread(make, spawn, collector):
    d = full(make)
    go = threading.Event()

    def shut_down():
        go.wait(WAIT)
        wait_blocked_on_state(d)  # the main thread is blocked in enqueue
        d.shutdown(timeout=30.0)

    shutdown = spawn(shut_down)
    go.set()
    with pytest.raises(tempo.ShuttingDown):
        d.enqueue(b"x", timeout=None)
    consumer = collector(d)
    assert shutdown.result() is None
    assert consumer.result() == [[FULL]]


def test_payload_too_large_never_waits(make, spawn):
    d = full(make)
    task = spawn(d.enqueue, b"y" * 11, timeout=None)
    assert isinstance(task.exception(timeout=2.0), tempo.PayloadTooLarge)
    task = spawn(d.enqueue, bytearray(11), timeout=30.0)
    assert isinstance(task.exception(timeout=2.0), tempo.PayloadTooLarge)
    stats = d.stats()
    assert (stats.rejected_too_large, stats.rejected_full, stats.enqueued) == (2, 0, 1)


@pytest.mark.parametrize("queue_full", [False, True], ids=["room", "full"])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize(
    "timeout, error",
    [
        (-1, ValueError),
        (-0.001, ValueError),
        (-math.inf, ValueError),
        (math.nan, ValueError),
        ("x", TypeError),
        ("1", TypeError),
        ([1], TypeError),
        (True, TypeError),
    ],
)
def test_bad_timeout_is_rejected_and_nothing_is_accepted(make, kind, timeout, error, queue_full):
    d = make(interval=60, max_buffered_bytes=10)
    if queue_full:
        d.enqueue(FULL)
    before = counters(d)
    with pytest.raises(error):
        d.enqueue(kind(b"ab"), timeout=timeout)
    # A call that raised must not have accepted the payload.
    assert counters(d) == before


def test_infinite_timeout_is_like_none(make, spawn):
    d = full(make)
    batch = d.get_batch(timeout=WAIT)
    task = waiting_enqueue(spawn, d, b"x", timeout=math.inf)
    assert not task.wait(BLOCKED)
    batch.release()
    assert task.result() is None


def test_enqueue_with_timeout_and_room_does_not_wait(make):
    d = make(interval=60, max_buffered_bytes=10)
    t0 = time.monotonic()
    d.enqueue(b"abc", timeout=30)
    d.enqueue(bytearray(b"de"), timeout=None)
    assert time.monotonic() - t0 < 1.0
    assert d.stats().enqueued == 2


# --- flush(timeout) -------------------------------------------------------------------


def test_flush_seals_the_open_batch_and_returns_once_handed_out(make, spawn):
    d = make(interval=60)
    d.start()
    consumer = spawn(d.get_batch, timeout=WAIT)
    d.enqueue(b"a")
    d.enqueue(b"b")
    t0 = time.monotonic()
    d.flush(timeout=WAIT)
    assert time.monotonic() - t0 < WAIT
    # Handed out before flush returned.
    assert d.stats().batches == 1
    with consumer.result() as batch:
        assert batch.tolist() == [b"a", b"b"]


def test_flush_waits_for_every_sealed_batch(make, spawn):
    d = make(interval=60, max_batch_bytes=2)
    d.start()
    for payload in (b"aa", b"bb", b"c"):
        d.enqueue(payload)
    seen = []
    taken = threading.Event()

    def consume(n):
        for _ in range(n):
            with d.get_batch(timeout=WAIT) as batch:
                seen.append(batch.tolist())
            taken.set()

    flush = spawn(d.flush, timeout=WAIT)
    assert not flush.wait(BLOCKED)
    consumer = spawn(consume, 3)
    assert flush.result() is None
    assert d.stats().batches == 3
    consumer.result()
    assert seen == [[b"aa"], [b"bb"], [b"c"]]


def test_flush_does_not_wait_for_batches_sealed_after_it_began(make, spawn):
    # A steady producer must not starve flush(): it waits for what was sealed
    # when it was called, not for what comes later.
    d = make(interval=60, max_batch_bytes=1)
    d.start()
    d.enqueue(b"a")  # sealed
    flush = spawn(d.flush, timeout=WAIT * 2)
    assert not flush.wait(BLOCKED)
    d.enqueue(b"b")  # sealed after flush began
    d.enqueue(b"c")
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"a"]
    assert flush.result() is None
    assert d.stats().batches == 1
    for expected in (b"b", b"c"):
        with d.get_batch(timeout=WAIT) as batch:
            assert batch.tolist() == [expected]


def test_flush_with_nothing_pending_returns_at_once(make):
    d = make(interval=60)
    d.start()
    t0 = time.monotonic()
    d.flush(timeout=WAIT)
    d.flush(timeout=0)
    d.flush()
    assert time.monotonic() - t0 < 1.0
    assert d.stats().batches == 0


def test_flush_timeout_drops_nothing_and_keeps_running(make, spawn):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        d.flush(timeout=0.2)
    assert time.monotonic() - t0 >= 0.2
    assert d.stats().dropped == 0
    # The sealed batch is still delivered afterwards ...
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"a"]
    # ... and the dispatcher keeps running.
    d.enqueue(b"b")
    consumer = spawn(d.get_batch, timeout=WAIT)
    d.flush(timeout=WAIT)
    with consumer.result() as batch:
        assert batch.tolist() == [b"b"]
    assert d.stats().dropped == 0


def test_flush_timeout_zero_on_pending_batch_raises(make):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    with pytest.raises(TimeoutError):
        d.flush(timeout=0)
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"a"]


def test_flush_keeps_the_interval_clock_running(make):
    d = make(interval=0.05)
    d.start()
    d.enqueue(b"a")
    with pytest.raises(TimeoutError):
        d.flush(timeout=0)
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"a"]
    d.enqueue(b"b")  # sealed by the interval, no flush needed
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"b"]


@pytest.mark.parametrize("how", ["stop", "shutdown"])
def test_flush_on_a_finished_dispatcher_raises_stopped(make, how):
    d = make(interval=60)
    d.start()
    if how == "stop":
        d.stop()
    else:
        d.shutdown(timeout=WAIT)
    with pytest.raises(tempo.Stopped):
        d.flush(timeout=WAIT)
    with pytest.raises(tempo.Stopped):
        d.flush(timeout=0)


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_stop_during_a_waiting_flush_raises_stopped_promptly(make, spawn, timeout):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    flush = spawn(d.flush, timeout=timeout)
    assert not flush.wait(BLOCKED)
    t0 = time.monotonic()
    d.stop()
    assert isinstance(flush.exception(timeout=2.0), tempo.Stopped)
    assert time.monotonic() - t0 < 2.0
    assert d.stats().dropped == 1


def test_stop_during_a_waiting_flush_in_the_main_thread(make, spawn):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")

    def stop_later():
        wait_blocked_on_state(d)
        d.stop()

    spawn(stop_later)
    with pytest.raises(tempo.Stopped):
        d.flush(timeout=30.0)


BAD_TIMEOUTS = [(-1, ValueError), (math.nan, ValueError), ("x", TypeError)]


@pytest.mark.parametrize("timeout, error", BAD_TIMEOUTS)
def test_flush_bad_timeout_changes_nothing(make, timeout, error):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    with pytest.raises(error):
        d.flush(timeout=timeout)
    # The call that raised did not seal the open batch either.
    with pytest.raises(TimeoutError):
        d.get_batch(timeout=0.05)
    d.enqueue(b"b")
    with pytest.raises(TimeoutError):
        d.flush(timeout=0)
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"a", b"b"]


@pytest.mark.parametrize("timeout, error", BAD_TIMEOUTS)
def test_shutdown_bad_timeout_changes_nothing(make, timeout, error):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    with pytest.raises(error):
        d.shutdown(timeout=timeout)
    # Still running: the bad call did not begin a shutdown it cannot finish.
    d.enqueue(b"b")
    assert d.stats().enqueued == 2


# --- stats() --------------------------------------------------------------------------


def test_stats_is_a_frozen_dataclass_with_the_contract_fields(make):
    assert dataclasses.is_dataclass(tempo.Stats)
    assert [f.name for f in dataclasses.fields(tempo.Stats)] == STATS_FIELDS
    d = make(interval=60, max_buffered_bytes=1234)
    stats = d.stats()
    assert type(stats) is tempo.Stats
    assert dataclasses.asdict(stats) == {
        **{name: 0 for name in STATS_FIELDS},
        "max_buffered_bytes": 1234,
        "max_buffered_items": d._max_items,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.enqueued = 5  # type: ignore[misc]
    assert all(type(getattr(stats, name)) is int for name in STATS_FIELDS[:-1])
    assert type(stats.oldest_wait) is float


def test_stats_is_a_snapshot(make):
    d = make(interval=60)
    before = d.stats()
    d.enqueue(b"abc")
    assert before.enqueued == 0
    assert d.stats().enqueued == 1
    assert counters(d) == counters(d)
    first = d.stats()
    assert d.stats().oldest_wait >= first.oldest_wait > 0.0


def test_stats_counts_enqueued_and_rejections(make):
    d = make(interval=60, max_buffered_bytes=10)
    d.enqueue(b"abc")
    d.enqueue(b"")
    d.enqueue(bytearray(b"defg"))
    assert counters(d) == {
        "enqueued": 3,
        "enqueued_bytes": 7,
        "rejected_full": 0,
        "rejected_too_large": 0,
        "batches": 0,
        "items": 0,
        "dropped": 0,
        "buffered_bytes": 7,
        "max_buffered_bytes": 10,
        "buffered_items": 3,
        "max_buffered_items": d._max_items,
        "waiting_batches": 0,
        "held_batches": 0,
    }
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"xyzw")
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"xyzw", timeout=0.05)
    with pytest.raises(tempo.PayloadTooLarge):
        d.enqueue(b"x" * 11)
    stats = d.stats()
    assert (stats.enqueued, stats.enqueued_bytes) == (3, 7)
    assert (stats.rejected_full, stats.rejected_too_large) == (2, 1)
    assert stats.buffered_bytes == 7
    d.enqueue(b"xyz")  # exactly fills the budget
    stats = d.stats()
    assert (stats.enqueued, stats.enqueued_bytes, stats.buffered_bytes) == (4, 10, 10)


def test_refusals_by_lifecycle_are_not_counted(make, spawn):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    shutdown = spawn(d.shutdown, timeout=WAIT)
    deadline = time.monotonic() + WAIT
    while True:  # wait until the shutdown is in progress
        try:
            d.enqueue(b"")
        except tempo.ShuttingDown:
            break
        assert time.monotonic() < deadline
        time.sleep(0.001)
    extra = d.stats().enqueued - 1
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"a"] + [b""] * extra
    shutdown.result()
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"b")
    stats = d.stats()
    assert (stats.rejected_full, stats.rejected_too_large, stats.dropped) == (0, 0, 0)
    assert stats.enqueued == 1 + extra


def test_stats_batches_and_items_count_hand_offs(make):
    d = make(interval=60, max_batch_bytes=3)
    d.start()
    for payload in (b"a", b"b", b"c", b"dd", b"e"):
        d.enqueue(payload)
    # Two sealed ([a, b, c], [dd, e] is open) but none handed out yet.
    stats = d.stats()
    assert (stats.batches, stats.items) == (0, 0)
    first = d.get_batch(timeout=WAIT)
    assert first.tolist() == [b"a", b"b", b"c"]
    stats = d.stats()
    assert (stats.batches, stats.items) == (1, 3)
    with pytest.raises(TimeoutError):
        d.flush(timeout=0)
    second = d.get_batch(timeout=WAIT)
    assert second.tolist() == [b"dd", b"e"]
    stats = d.stats()
    assert (stats.batches, stats.items) == (2, 5)
    # Releasing does not change hand-off counters.
    first.release()
    second.release()
    stats = d.stats()
    assert (stats.batches, stats.items, stats.buffered_bytes) == (2, 5, 0)


def test_stats_buffered_bytes_before_and_after_release(make):
    d = make(interval=60, max_buffered_bytes=100, max_batch_bytes=5)
    d.start()
    d.enqueue(b"12345")  # sealed
    d.enqueue(b"678")  # open
    assert d.stats().buffered_bytes == 8
    batch = d.get_batch(timeout=WAIT)
    assert d.stats().buffered_bytes == 8  # handed out, still owned
    view = batch[0]
    batch.release()
    assert d.stats().buffered_bytes == 8  # pinned by the view
    view.release()
    assert d.stats().buffered_bytes == 3
    assert d.stats().max_buffered_bytes == 100


def test_stats_dropped_by_stop(make):
    d = make(interval=60, max_batch_bytes=2)
    d.start()
    for payload in (b"aa", b"bb", b"cc", b"d"):
        d.enqueue(payload)
    kept = d.get_batch(timeout=WAIT)  # [aa], handed out: not dropped
    d.stop()
    stats = d.stats()
    assert (stats.dropped, stats.batches, stats.items) == (3, 1, 1)
    # Space comes back in order: the dropped bytes sit behind the handed-out
    # batch, so they stay owned until it is released.
    assert stats.buffered_bytes == 7
    assert kept.tolist() == [b"aa"]
    kept.release()
    assert d.stats().buffered_bytes == 0
    d.stop()
    assert d.stats().dropped == 3


def test_stats_dropped_by_a_timed_out_shutdown(make):
    d = make(interval=60, max_batch_bytes=2)
    d.start()
    for payload in (b"aa", b"b", b"c"):
        d.enqueue(payload)
    with pytest.raises(TimeoutError):
        d.shutdown(timeout=0.1)
    stats = d.stats()
    assert (stats.enqueued, stats.dropped, stats.batches, stats.buffered_bytes) == (3, 3, 0, 0)


def test_stats_nothing_dropped_by_a_complete_shutdown(make, drain):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    assert drain(d) == [[b"a"]]
    stats = d.stats()
    assert (stats.dropped, stats.batches, stats.items, stats.buffered_bytes) == (0, 1, 1, 0)
