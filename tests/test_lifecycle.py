"""Lifecycle: start, stop, shutdown, get_batch, batches(), the context manager."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import tempo

WAIT = 5.0
QUIET = 0.1


def wait_until_shutting_down(d) -> int:
    """Poll ``enqueue(b"")`` until it raises ShuttingDown; return how many empty
    payloads were accepted before that (they must still be delivered)."""
    accepted = 0
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            d.enqueue(b"")
        except tempo.ShuttingDown:
            return accepted
        accepted += 1
        time.sleep(0.001)
    raise AssertionError("enqueue never raised ShuttingDown")


# --- start / stop ------------------------------------------------------------------


def test_start_twice_is_a_no_op(make, drain):
    d = make(interval=60, max_batch_bytes=2)
    d.start()
    threads = set(threading.enumerate())
    d.start()
    assert set(threading.enumerate()) - threads == set()
    d.enqueue(b"ab")
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"ab"]
    assert drain(d) == []
    assert d.stats().batches == 1


def test_start_returns_at_once(make):
    d = make(interval=60)
    t0 = time.monotonic()
    d.start()
    assert time.monotonic() - t0 < WAIT


def test_stop_before_start_is_fine_and_final(make, spawn):
    d = make(interval=60)
    d.stop()
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"x")
    with pytest.raises(tempo.Stopped):
        d.start()
    assert isinstance(spawn(d.get_batch).exception(), tempo.Stopped)


def test_stop_twice_is_safe(make):
    d = make(interval=60)
    d.start()
    d.enqueue(b"x")
    d.stop()
    d.stop()
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"x")
    assert d.stats().dropped == 1


def test_start_after_shutdown_raises_stopped(make, drain):
    d = make(interval=60)
    d.start()
    assert drain(d) == []
    with pytest.raises(tempo.Stopped):
        d.start()
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"x")


# --- before start ---------------------------------------------------------------------


def test_enqueue_before_start_waits_and_the_clock_runs_from_the_enqueue(make):
    interval = 1.0
    d = make(interval=interval, max_batch_bytes=0)
    d.enqueue(b"early")
    t_enqueue = time.monotonic()
    # Nothing is handed out before start(), even past the interval.
    with pytest.raises(TimeoutError):
        d.get_batch(timeout=interval + 0.2)
    t_start = time.monotonic()
    d.start()
    with d.get_batch(timeout=WAIT) as batch:
        arrived = time.monotonic()
        assert batch.tolist() == [b"early"]
    # The clock started at the enqueue, so the batch is due at once; a clock
    # started by start() would hold it another full interval.
    assert arrived - t_start < 0.8 * interval
    assert arrived - t_enqueue >= interval


def test_size_sealed_batches_before_start_are_handed_out_after_start(make):
    d = make(interval=60, max_batch_bytes=3)
    d.enqueue(b"abc")
    d.enqueue(b"def")
    with pytest.raises(TimeoutError):
        d.get_batch(timeout=QUIET)
    d.start()
    with d.get_batch(timeout=WAIT) as first, d.get_batch(timeout=WAIT) as second:
        assert (first.tolist(), second.tolist()) == ([b"abc"], [b"def"])


def test_shutdown_of_a_never_started_dispatcher_hands_out_its_batches(make, collector):
    d = make(interval=60, max_batch_bytes=3)
    consumer = collector(d)
    d.enqueue(b"abc")
    d.enqueue(b"d")
    d.shutdown(timeout=WAIT)
    assert consumer.result() == [[b"abc"], [b"d"]]
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"x")


# --- get_batch ---------------------------------------------------------------------------


def test_get_batch_times_out(make):
    d = make(interval=60)
    d.start()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        d.get_batch(timeout=0.2)
    elapsed = time.monotonic() - t0
    assert 0.18 <= elapsed < WAIT


def test_get_batch_times_out_while_the_open_batch_is_not_due(make):
    d = make(interval=60, max_batch_bytes=100)
    d.start()
    d.enqueue(b"not sealed yet")
    with pytest.raises(TimeoutError):
        d.get_batch(timeout=QUIET)
    assert d.stats().batches == 0


def test_get_batch_raises_stopped_after_stop(make):
    d = make(interval=60, max_batch_bytes=1)
    d.start()
    d.enqueue(b"a")  # sealed, never taken
    d.stop()
    with pytest.raises(tempo.Stopped):
        d.get_batch()
    with pytest.raises(tempo.Stopped):
        d.get_batch(timeout=WAIT)


def test_get_batch_raises_stopped_after_shutdown(make, drain):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    assert drain(d) == [[b"a"]]
    with pytest.raises(tempo.Stopped):
        d.get_batch()


# --- batches() -------------------------------------------------------------------------


def test_batches_ends_once_the_dispatcher_is_finished(make, collector):
    d = make(interval=60, max_batch_bytes=2)
    d.start()
    consumer = collector(d)
    for p in (b"ab", b"cd", b"e"):
        d.enqueue(p)
    d.shutdown(timeout=WAIT)
    assert consumer.result() == [[b"ab"], [b"cd"], [b"e"]]


def test_batches_ends_after_stop(make, collector):
    d = make(interval=60)
    d.start()
    consumer = collector(d)
    assert not consumer.wait(QUIET)  # blocked waiting for a batch
    d.stop()
    assert consumer.result() == []


def test_batches_releases_each_batch_when_the_loop_asks_for_the_next(make):
    d = make(interval=60, max_batch_bytes=10, max_buffered_bytes=20)
    d.start()
    d.enqueue(b"A" * 10)
    d.enqueue(b"B" * 10)
    it = d.batches()
    first = next(it)
    assert first.tolist() == [b"A" * 10]
    assert d.stats().buffered_bytes == 20
    second = next(it)
    # Asking for the second released the first.
    with pytest.raises(ValueError):
        first[0]
    assert len(first) == 1
    assert first.nbytes == 10
    assert d.stats().buffered_bytes == 10
    assert second.tolist() == [b"B" * 10]
    d.enqueue(b"C" * 10)  # the freed space is usable
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"D")
    d.stop()
    with pytest.raises(StopIteration):
        next(it)
    # Asking for the next (and learning there is none) released the second.
    with pytest.raises(ValueError):
        second[0]


# --- the context manager ------------------------------------------------------------------


def test_context_manager_starts_and_shuts_down(make, collector):
    d = make(interval=60, max_batch_bytes=4)
    with d as entered:
        assert entered is d
        d.enqueue(b"abcd")
        # Started on enter: the size-sealed batch is handed out.
        with d.get_batch(timeout=WAIT) as batch:
            assert batch.tolist() == [b"abcd"]
        d.enqueue(b"e")
        d.enqueue(b"f")
        consumer = collector(d)
    # The exit waited for the consumer to take the open batch.
    assert consumer.result() == [[b"e", b"f"]]
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"g")
    assert d.stats().dropped == 0


def test_context_manager_stops_when_the_block_raises(make, spawn):
    d = make(interval=60, max_batch_bytes=2)

    def block():
        with d:
            d.enqueue(b"ab")  # sealed, never taken
            d.enqueue(b"c")  # open
            raise RuntimeError("boom")

    # No consumer: a shutdown() would wait forever; stop() returns at once.
    error = spawn(block).exception()
    assert isinstance(error, RuntimeError)
    assert str(error) == "boom"
    stats = d.stats()
    assert (stats.dropped, stats.items, stats.buffered_bytes) == (2, 0, 0)
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"x")
    assert isinstance(spawn(d.get_batch).exception(), tempo.Stopped)


# --- shutdown --------------------------------------------------------------------------------


def test_shutdown_drains_then_enqueue_raises_stopped(make, drain):
    d = make(interval=60, max_batch_bytes=3)
    d.start()
    for p in (b"abc", b"de", b"f", b"gh"):
        d.enqueue(p)
    assert drain(d) == [[b"abc"], [b"de", b"f"], [b"gh"]]
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"x")
    stats = d.stats()
    assert (stats.enqueued, stats.items, stats.batches, stats.dropped) == (4, 4, 3, 0)


def test_shutdown_of_an_empty_dispatcher_returns(make, spawn):
    d = make(interval=60)
    d.start()
    assert spawn(d.shutdown).result() is None
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"x")


def test_shutdown_waits_for_a_consumer_but_not_for_release(make, spawn):
    d = make(interval=60)
    d.start()
    d.enqueue(b"payload")
    shutdown = spawn(d.shutdown)
    assert not shutdown.wait(QUIET)  # no consumer yet
    batch = d.get_batch(timeout=WAIT)
    # Handed out: shutdown returns although the batch is still held.
    assert shutdown.result() is None
    assert batch.tolist() == [b"payload"]
    assert d.stats().buffered_bytes == 7
    batch.release()
    assert d.stats().buffered_bytes == 0
    with pytest.raises(tempo.Stopped):
        d.get_batch()


def test_enqueue_during_shutdown_raises_shutting_down(make, spawn):
    d = make(interval=60)
    d.start()
    d.enqueue(b"first")
    shutdown = spawn(d.shutdown)
    accepted = wait_until_shutting_down(d)
    with pytest.raises(tempo.ShuttingDown):
        d.enqueue(b"late")
    assert not shutdown.done()
    # Everything accepted before shutdown() began is still delivered.
    delivered = []
    while True:
        try:
            batch = d.get_batch(timeout=WAIT)
        except tempo.Stopped:
            break
        delivered.extend(batch.tolist())
        batch.release()
    assert shutdown.result() is None
    assert delivered == [b"first"] + [b""] * accepted
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"after")


def test_shutdown_timeout_drops_and_stops(make):
    d = make(interval=60, max_batch_bytes=4)
    d.start()
    d.enqueue(b"abcd")  # sealed
    d.enqueue(b"ef")  # open
    d.enqueue(b"g")  # open
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        d.shutdown(timeout=0.2)
    elapsed = time.monotonic() - t0
    assert 0.18 <= elapsed < WAIT
    stats = d.stats()
    assert (stats.dropped, stats.items, stats.batches, stats.buffered_bytes) == (3, 0, 0, 0)
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"x")
    with pytest.raises(tempo.Stopped):
        d.get_batch(timeout=WAIT)
    with pytest.raises(tempo.Stopped):
        d.start()


def test_shutdown_timeout_keeps_what_was_handed_out(make):
    d = make(interval=60, max_batch_bytes=4)
    d.start()
    d.enqueue(b"abcd")
    d.enqueue(b"efgh")
    held = d.get_batch(timeout=WAIT)
    with pytest.raises(TimeoutError):
        d.shutdown(timeout=QUIET)
    assert held.tolist() == [b"abcd"]
    stats = d.stats()
    assert (stats.dropped, stats.items) == (1, 1)
    # The held batch is still owned; the dropped bytes behind it may be held
    # back with it (the arena reuses space in order).
    assert 4 <= stats.buffered_bytes <= 8
    held.release()
    assert d.stats().buffered_bytes == 0


@pytest.mark.parametrize("finish", ["stop", "shutdown", "timed-out-shutdown"])
def test_shutdown_on_a_finished_dispatcher_returns_at_once(make, spawn, drain, finish):
    d = make(interval=60)
    d.start()
    if finish == "stop":
        d.stop()
    elif finish == "shutdown":
        drain(d)
    else:
        d.enqueue(b"never taken")
        with pytest.raises(TimeoutError):
            d.shutdown(timeout=QUIET)
    t0 = time.monotonic()
    assert spawn(d.shutdown).result() is None
    assert spawn(d.shutdown, timeout=10).result() is None
    assert time.monotonic() - t0 < WAIT


def test_stop_while_shutdown_waits_makes_shutdown_raise_stopped(make, spawn):
    d = make(interval=60)
    d.start()
    d.enqueue(b"nobody takes this")
    shutdown = spawn(d.shutdown)  # no timeout: waits for a consumer
    wait_until_shutting_down(d)
    assert not shutdown.done()
    d.stop()
    assert isinstance(shutdown.exception(timeout=WAIT), tempo.Stopped)
    assert d.stats().dropped >= 1
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"x")


# --- stop ------------------------------------------------------------------------------------


def test_stop_drops_buffered_and_undelivered_batches(make, spawn):
    d = make(interval=60, max_batch_bytes=2)
    d.start()
    for p in (b"ab", b"cd", b"e"):  # two sealed batches, one open
        d.enqueue(p)
    assert d.stats().buffered_bytes == 5
    d.stop()
    stats = d.stats()
    assert (stats.dropped, stats.items, stats.batches, stats.buffered_bytes) == (3, 0, 0, 0)
    assert (stats.enqueued, stats.enqueued_bytes) == (3, 5)
    assert isinstance(spawn(d.get_batch).exception(), tempo.Stopped)


def test_stop_wakes_every_waiting_consumer(make, spawn):
    d = make(interval=60)
    d.start()
    waiters = [spawn(d.get_batch) for _ in range(3)]
    waiters.append(spawn(d.get_batch, timeout=30))
    waiters.append(spawn(lambda: list(d.batches())))
    for w in waiters:
        assert not w.wait(QUIET / 5)
    t0 = time.monotonic()
    d.stop()
    for w in waiters[:4]:
        assert isinstance(w.exception(timeout=WAIT), tempo.Stopped)
    assert waiters[4].result() == []
    assert time.monotonic() - t0 < WAIT


def test_batches_handed_out_before_stop_stay_valid(make):
    d = make(interval=60, max_batch_bytes=5)
    d.start()
    d.enqueue(b"hello")
    d.enqueue(b"world")
    batch = d.get_batch(timeout=WAIT)
    view = batch[0]
    d.stop()
    assert bytes(batch[0]) == b"hello"
    assert bytes(view) == b"hello"
    assert batch.tolist() == [b"hello"]
    stats = d.stats()
    assert (stats.dropped, stats.items) == (1, 1)
    assert 5 <= stats.buffered_bytes <= 10  # dropped bytes may be held back behind it
    del view
    batch.release()
    assert d.stats().buffered_bytes == 0


def test_a_dispatcher_made_without_init_refuses_instead_of_crashing():
    d = tempo.Dispatcher.__new__(tempo.Dispatcher)
    calls = [
        lambda: d.enqueue(b"x"),
        lambda: d.get_batch(timeout=0),
        d.start,
        d.stop,
        d.stats,
        d.shutdown,
        d.flush,
    ]
    for call in calls:
        with pytest.raises(TypeError, match="not initialised"):
            call()


def test_a_pipelines_helper_threads_count_as_tempos_own():
    # An aflush() cancelled leaves its flush() waiting in a helper thread:
    # it is no consumer of anyone's, so it must not keep the exit waiting
    # for consumers that cannot come (_consumers_possible).
    release = threading.Event()
    p = tempo.Pipeline(lambda b: release.wait(WAIT), interval=60, max_buffered_bytes=tempo.MiB)
    try:
        p.enqueue(b"x")

        async def main():
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(p.aflush(), 0.05)

        asyncio.run(main())
        helpers = [t for t in threading.enumerate() if t.name == "tempo-pipeline-aflush"]
        assert len(helpers) == 1
        assert helpers[0] in tempo._lifecycle._own_threads()
    finally:
        release.set()
        p.close(WAIT)
