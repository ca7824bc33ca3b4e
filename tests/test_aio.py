"""asyncio: ``aget_batch``, ``abatches`` and ``ashutdown`` wait on the event loop,
never block it, spend no thread per waiting call, and lose no batch to a
cancelled waiter."""

from __future__ import annotations

import asyncio
import math
import os
import queue
import random
import threading
import time

import pytest

import tempo
import tempo._aio
from conftest import async_waiters, until_async_blocked

WAIT = 5.0
#: Overall bound on one event-loop run, so a hang fails instead of stalling.
RUN_LIMIT = 20.0


def _uvloop_factory():
    uvloop = pytest.importorskip("uvloop")
    return uvloop.new_event_loop


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """``run(coro_fn)`` runs ``coro_fn()`` to completion on a fresh event loop
    (the default asyncio loop, and uvloop if it is importable)."""
    factory = None if request.param == "asyncio" else _uvloop_factory()

    def _run(coro_fn, *args):
        main = asyncio.wait_for(coro_fn(*args), RUN_LIMIT)
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main)

    return _run


def in_thread(fn, *args, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


class Ticker:
    """Counts how often the event loop got to run a 10 ms sleeper."""

    def __init__(self):
        self.ticks = 0
        self.task = asyncio.create_task(self._tick())

    async def _tick(self):
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1

    def stop(self) -> int:
        self.task.cancel()
        return self.ticks


# --- aget_batch -----------------------------------------------------------------------


def test_aget_batch_returns_a_batch_sealed_from_another_thread(make, run):
    d = make(interval=60)
    d.start()

    def produce():
        d.enqueue(b"a")
        d.enqueue(b"b")
        d.flush(timeout=WAIT)

    async def main():
        task = asyncio.create_task(d.aget_batch(timeout=WAIT))
        await until_async_blocked(d)
        assert not task.done()
        thread = in_thread(produce)
        batch = await task
        try:
            assert batch.tolist() == [b"a", b"b"]
        finally:
            batch.release()
        await asyncio.to_thread(thread.join, WAIT)
        assert not thread.is_alive()

    run(main)
    assert d.stats().batches == 1


def test_aget_batch_returns_a_batch_sealed_by_the_interval(make, run):
    d = make(interval=0.05)
    d.start()

    async def main():
        task = asyncio.create_task(d.aget_batch(timeout=WAIT))
        await asyncio.sleep(0)
        d.enqueue(b"tick")
        with await task as batch:
            assert batch.tolist() == [b"tick"]

    run(main)


def test_aget_batch_waits_for_start(make, run):
    d = make(interval=60, max_batch_bytes=1)
    d.enqueue(b"early")  # sealed before start: not handed out yet

    async def main():
        task = asyncio.create_task(d.aget_batch(timeout=WAIT))
        await until_async_blocked(d)
        assert not task.done()
        in_thread(d.start)
        with await task as batch:
            assert batch.tolist() == [b"early"]

    run(main)


def test_aget_batch_returns_a_ready_batch_at_once(make, run):
    d = make(interval=60, max_batch_bytes=1)
    d.start()
    d.enqueue(b"a")

    async def main():
        with await d.aget_batch(timeout=0) as batch:
            assert batch.tolist() == [b"a"]

    run(main)


@pytest.mark.parametrize("timeout", [0, 0.2])
def test_aget_batch_times_out(make, run, timeout):
    d = make(interval=60)
    d.start()
    d.enqueue(b"open")  # not due for a minute

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await d.aget_batch(timeout=timeout)
        elapsed = loop.time() - t0
        assert timeout <= elapsed + 0.01
        assert elapsed < timeout + WAIT

    run(main)
    assert d.stats().dropped == 0


def test_aget_batch_does_not_block_the_event_loop(make, run):
    d = make(interval=60)
    d.start()

    async def main():
        ticker = Ticker()
        with pytest.raises(TimeoutError):
            await d.aget_batch(timeout=0.3)
        ticks = ticker.stop()
        # ~30 expected; a loop blocked for the 0.3 s wait would give 0 or 1.
        assert ticks >= 5

    run(main)


def test_aget_batch_raises_stopped(make, run):
    d = make(interval=60)
    d.start()

    async def main():
        task = asyncio.create_task(d.aget_batch())
        await until_async_blocked(d)
        assert not task.done()
        in_thread(d.stop)
        with pytest.raises(tempo.Stopped):
            await asyncio.wait_for(task, WAIT)
        with pytest.raises(tempo.Stopped):
            await d.aget_batch(timeout=WAIT)
        with pytest.raises(tempo.Stopped):
            await d.aget_batch()

    run(main)


def test_aget_batch_gets_the_rest_then_stopped_after_a_shutdown(make, run):
    d = make(interval=60)
    d.start()
    d.enqueue(b"last")

    async def main():
        shutdown = asyncio.create_task(asyncio.to_thread(d.shutdown, WAIT))
        with await d.aget_batch(timeout=WAIT) as batch:
            assert batch.tolist() == [b"last"]
        await shutdown
        with pytest.raises(tempo.Stopped):
            await d.aget_batch(timeout=WAIT)

    run(main)


@pytest.mark.parametrize("ready", [False, True], ids=["nothing-ready", "batch-ready"])
@pytest.mark.parametrize(
    "timeout, error", [(-1, ValueError), (math.nan, ValueError), ("x", TypeError)]
)
def test_aget_batch_bad_timeout(make, run, timeout, error, ready):
    # Validated like get_batch(): whether or not a batch is ready.
    d = make(interval=60, max_batch_bytes=1)
    d.start()
    if ready:
        d.enqueue(b"a")
        with pytest.raises(error):
            d.get_batch(timeout=timeout)

    async def main():
        with pytest.raises(error):
            await d.aget_batch(timeout=timeout)

    run(main)
    if ready:  # the batch was not taken by the failed call
        with d.get_batch(timeout=0) as batch:
            assert batch.tolist() == [b"a"]


# --- cancellation loses no batch --------------------------------------------------------


def test_cancel_while_a_batch_arrives_loses_nothing(make, run):
    # Deterministic: the batch is sealed (and the waiter's wake-up fired) before
    # the waiting task gets to run again, then the task is cancelled.
    d = make(interval=60, max_batch_bytes=1)
    d.start()

    async def main():
        task = asyncio.create_task(d.aget_batch())
        await until_async_blocked(d)
        d.enqueue(b"a")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with await d.aget_batch(timeout=WAIT) as batch:
            assert batch.tolist() == [b"a"]

    run(main)
    assert d.stats().batches == 1


def test_cancel_races_lose_no_batch(make, run):
    d = make(interval=60, max_batch_bytes=6)
    d.start()
    rng = random.Random(1234)
    n = 300
    payloads = [b"%06d" % i for i in range(n)]
    feed: "queue.Queue[bytes | None]" = queue.Queue()

    def producer():
        while (payload := feed.get()) is not None:
            time.sleep(rng.choice([0, 0, 0.0005, 0.001, 0.002]))
            d.enqueue(payload)  # six bytes: sealed at once

    async def main():
        counts = {"cancelled": 0, "returned": 0}
        got = []
        for i, payload in enumerate(payloads):
            feed.put(payload)
            task = asyncio.create_task(d.aget_batch(timeout=rng.choice([None, WAIT])))
            how = rng.randrange(4)
            if how == 1:
                await asyncio.sleep(0)
            elif how == 2:
                await asyncio.sleep(rng.uniform(0, 0.002))
            elif how == 3:
                await asyncio.sleep(0.005)
            task.cancel()
            try:
                batch = await task
                counts["returned"] += 1
            except asyncio.CancelledError:
                counts["cancelled"] += 1
                # The batch stayed available to the next consumer.
                if i % 2:
                    batch = await d.aget_batch(timeout=WAIT)
                else:
                    batch = d.get_batch(timeout=WAIT)
            with batch:
                got.append(batch.tolist())
        return counts, got

    thread = in_thread(producer)
    try:
        counts, got = run(main)
    finally:
        feed.put(None)
        thread.join(WAIT)
    assert got == [[p] for p in payloads]
    assert counts["cancelled"] > 0 and counts["returned"] > 0, counts
    stats = d.stats()
    assert (stats.batches, stats.items, stats.dropped, stats.buffered_bytes) == (n, n, 0, 0)
    with pytest.raises(TimeoutError):
        d.get_batch(timeout=0)


def test_cancelled_waiters_do_not_steal_from_later_ones(make, run):
    d = make(interval=60, max_batch_bytes=1)
    d.start()

    async def main():
        doomed = [asyncio.create_task(d.aget_batch()) for _ in range(10)]
        survivor = asyncio.create_task(d.aget_batch(timeout=WAIT))
        await until_async_blocked(d, 11)
        for task in doomed:
            task.cancel()
        d.enqueue(b"z")
        results = await asyncio.gather(*doomed, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        with await survivor as batch:
            assert batch.tolist() == [b"z"]

    run(main)


# --- abatches -------------------------------------------------------------------------


def test_abatches_releases_each_batch_when_the_loop_asks_for_the_next(make, run):
    d = make(interval=60, max_batch_bytes=1)
    d.start()
    for payload in (b"a", b"b", b"c"):
        d.enqueue(payload)

    async def main():
        seen = []
        previous = None
        async for batch in d.abatches():
            assert not batch.released
            if previous is not None:
                assert previous.released
            seen.append(batch.tolist())
            previous = batch
            if len(seen) == 3:
                d.shutdown(timeout=WAIT)  # everything is handed out: returns at once
        assert previous is not None and previous.released
        return seen

    assert run(main) == [[b"a"], [b"b"], [b"c"]]
    assert d.stats().buffered_bytes == 0


def test_abatches_ends_when_the_dispatcher_finishes(make, run):
    d = make(interval=60)
    d.start()

    def produce():
        d.enqueue(b"x")
        d.enqueue(b"y")
        d.shutdown(timeout=WAIT)

    async def main():
        seen = []
        async for batch in d.abatches():
            seen.append(batch.tolist())
        return seen

    async def with_producer():
        consumer = asyncio.create_task(main())
        await until_async_blocked(d)
        assert not consumer.done()
        thread = in_thread(produce)
        seen = await consumer
        await asyncio.to_thread(thread.join, WAIT)
        return seen

    assert run(with_producer) == [[b"x", b"y"]]
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"z")


def test_abatches_ends_on_stop(make, run):
    d = make(interval=60)
    d.start()

    async def main():
        async def consume():
            return [batch.tolist() async for batch in d.abatches()]

        consumer = asyncio.create_task(consume())
        await until_async_blocked(d)
        in_thread(d.stop)
        return await asyncio.wait_for(consumer, WAIT)

    assert run(main) == []


# --- ashutdown ------------------------------------------------------------------------


def test_ashutdown_drains_to_an_async_consumer(make, run):
    d = make(interval=60, max_batch_bytes=4)
    d.start()
    payloads = [bytes([65 + i % 26]) * (1 + i % 3) for i in range(40)]
    for payload in payloads:
        d.enqueue(payload)

    async def main():
        async def consume():
            return [batch.tolist() async for batch in d.abatches()]

        consumer = asyncio.create_task(consume())
        await d.ashutdown(timeout=WAIT)
        with pytest.raises(tempo.Stopped):
            d.enqueue(b"late")
        return await asyncio.wait_for(consumer, WAIT)

    batches = run(main)
    assert [item for batch in batches for item in batch] == payloads
    assert all(sum(map(len, batch)) <= 4 for batch in batches)
    stats = d.stats()
    assert (stats.dropped, stats.items, stats.buffered_bytes) == (0, len(payloads), 0)


def test_ashutdown_times_out_when_nobody_consumes(make, run):
    d = make(interval=60, max_batch_bytes=2)
    d.start()
    for payload in (b"aa", b"b", b"c"):
        d.enqueue(payload)

    async def main():
        ticker = Ticker()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await d.ashutdown(timeout=0.3)
        assert 0.29 <= loop.time() - t0 < 0.3 + WAIT
        assert ticker.stop() >= 5  # the loop kept running while it waited

    run(main)
    stats = d.stats()
    assert (stats.dropped, stats.batches, stats.buffered_bytes) == (3, 0, 0)
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"x")
    with pytest.raises(tempo.Stopped):
        d.get_batch(timeout=0)


def test_ashutdown_with_a_thread_consumer(make, run, collector):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    consumer = collector(d)

    async def main():
        await d.ashutdown(timeout=WAIT)

    run(main)
    assert consumer.result() == [[b"a"]]


def test_ashutdown_on_a_finished_dispatcher_returns_at_once(make, run):
    d = make(interval=60)
    d.start()
    d.stop()

    async def main():
        await asyncio.wait_for(d.ashutdown(timeout=None), WAIT)

    run(main)


def test_stop_during_ashutdown_raises_stopped(make, run):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")

    async def main():
        shutdown = asyncio.create_task(d.ashutdown())
        await until_async_blocked(d)
        assert not shutdown.done()
        in_thread(d.stop)
        with pytest.raises(tempo.Stopped):
            await asyncio.wait_for(shutdown, WAIT)

    run(main)
    assert d.stats().dropped == 1


@pytest.mark.parametrize(
    "timeout, error", [(-1, ValueError), (math.nan, ValueError), ("x", TypeError)]
)
def test_ashutdown_bad_timeout_changes_nothing(make, run, timeout, error):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")

    async def main():
        with pytest.raises(error):
            await d.ashutdown(timeout=timeout)

    run(main)
    # Still running, nothing sealed: the bad call did not half-apply.
    d.enqueue(b"b")
    with pytest.raises(TimeoutError):
        d.get_batch(timeout=0.05)
    assert d.stats().enqueued == 2


# --- no threads, no leaks, several loops ------------------------------------------------------


def test_waiting_coroutines_use_no_threads(make, run):
    d = make(interval=60, max_batch_bytes=2)
    d.start()
    n = 50

    def new_threads():
        # Threads of earlier tests may end meanwhile; none may start.
        return set(threading.enumerate()) - before

    async def main():
        tasks = [asyncio.create_task(d.aget_batch(timeout=WAIT * 2)) for _ in range(n)]
        await until_async_blocked(d, n)
        assert not any(task.done() for task in tasks)
        assert new_threads() == set()
        for i in range(n):
            d.enqueue(b"%02d" % i)
        batches = await asyncio.gather(*tasks)
        assert new_threads() == set()
        items = []
        for batch in batches:
            items.extend(batch.tolist())
            batch.release()
        return items

    before = set(threading.enumerate())
    items = run(main)
    # Each batch went to exactly one waiter.
    assert sorted(items) == [b"%02d" % i for i in range(n)]
    assert d.stats().batches == n


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_waiting_leaks_no_file_descriptors(make, run):
    d = make(interval=60, max_batch_bytes=1)
    d.start()

    async def main():
        for _ in range(20):
            with pytest.raises(TimeoutError):
                await d.aget_batch(timeout=0.001)
            task = asyncio.create_task(d.aget_batch())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        d.enqueue(b"a")
        with await d.aget_batch(timeout=WAIT) as batch:
            assert batch.tolist() == [b"a"]

    run(main)  # warm-up: imports, executor, etc.
    before = set(os.listdir("/proc/self/fd"))
    run(main)
    run(main)
    assert set(os.listdir("/proc/self/fd")) - before == set()


def test_two_event_loops_share_one_dispatcher(make):
    d = make(interval=60, max_batch_bytes=4)
    d.start()
    n = 400
    payloads = [b"%04d" % i for i in range(n)]
    results: dict[int, list[list[bytes]]] = {}
    ready = threading.Barrier(3)

    async def consume(k):
        out = []
        first = asyncio.create_task(d.aget_batch())
        await asyncio.sleep(0.02)
        ready.wait(WAIT)
        try:
            with await first as batch:
                out.append(batch.tolist())
        except tempo.Stopped:
            return out
        async for batch in d.abatches():
            out.append(batch.tolist())
        return out

    def loop_thread(k):
        results[k] = asyncio.run(asyncio.wait_for(consume(k), RUN_LIMIT))

    threads = [in_thread(loop_thread, k) for k in (0, 1)]
    ready.wait(WAIT)
    for payload in payloads:
        d.enqueue(payload, timeout=WAIT)
    d.shutdown(timeout=WAIT)
    for thread in threads:
        thread.join(WAIT)
    assert set(results) == {0, 1}
    # Every batch went to exactly one loop, and each loop saw them in order.
    for out in results.values():
        assert out == sorted(out)
    everything = sorted(results[0] + results[1])
    assert everything == [[p] for p in payloads]
    assert d.stats().dropped == 0


def test_a_waiting_coroutine_and_a_waiting_thread(make, run, spawn):
    d = make(interval=60, max_batch_bytes=1)
    d.start()
    thread_consumer = spawn(d.get_batch, timeout=WAIT)

    async def main():
        waiter = asyncio.create_task(d.aget_batch(timeout=WAIT))
        await until_async_blocked(d)
        d.enqueue(b"1")
        d.enqueue(b"2")
        with await waiter as batch:
            return batch.tolist()

    got_async = run(main)
    with thread_consumer.result() as batch:
        got_thread = batch.tolist()
    assert sorted(got_async + got_thread) == [b"1", b"2"]


# --- asyncio producers: aenqueue, aflush, async with ------------------------------------


def test_aenqueue_with_room_accepts_at_once(make, run):
    d = make(interval=60, max_buffered_bytes=10)

    async def main():
        await d.aenqueue(b"abc")
        await d.aenqueue(bytearray(b"de"), timeout=0)
        await d.aenqueue(memoryview(b"f"), timeout=WAIT)
        assert async_waiters(d) == 0
        assert tempo._aio.open_wakers(d) == 0  # no fd made

    run(main)
    stats = d.stats()
    assert (stats.enqueued, stats.enqueued_bytes, stats.rejected_full) == (3, 6, 0)


def test_aenqueue_waits_for_space_without_blocking_the_loop(make, run):
    d = make(interval=60, max_buffered_bytes=4, max_batch_items=1)
    d.start()
    d.enqueue(b"1234")

    async def main():
        ticker = Ticker()
        task = asyncio.create_task(d.aenqueue(b"next"))
        await until_async_blocked(d)
        await asyncio.sleep(0.2)
        assert not task.done()
        batch = d.get_batch(timeout=0)
        assert batch.tolist() == [b"1234"]
        batch.release()  # the space comes back: the waiting coroutine goes in
        await asyncio.wait_for(task, WAIT)
        assert ticker.stop() >= 5  # the loop ran while the coroutine waited

    run(main)
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"next"]
    stats = d.stats()
    assert (stats.enqueued, stats.rejected_full) == (2, 0)


def test_aenqueue_woken_by_a_release_in_another_thread(make, run, spawn):
    d = make(interval=60, max_buffered_bytes=4, max_batch_items=1)
    d.start()
    d.enqueue(b"1234")

    def consume_one():
        with d.get_batch(timeout=WAIT) as batch:
            return batch.tolist()

    async def main():
        task = asyncio.create_task(d.aenqueue(b"wxyz", timeout=WAIT))
        await until_async_blocked(d)
        consumer = spawn(consume_one)
        await asyncio.wait_for(task, WAIT)
        assert consumer.result() == [b"1234"]

    run(main)
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"wxyz"]


@pytest.mark.parametrize("timeout", [0, 0.2])
def test_aenqueue_times_out_with_queue_full_counted_once(make, run, timeout):
    d = make(interval=60, max_buffered_bytes=4)
    d.enqueue(b"1234")

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(tempo.QueueFull):
            await d.aenqueue(b"x", timeout=timeout)
        elapsed = loop.time() - t0
        assert timeout <= elapsed + 0.01
        assert elapsed < timeout + WAIT

    run(main)
    stats = d.stats()
    assert (stats.enqueued, stats.rejected_full) == (1, 1)


@pytest.mark.parametrize(
    "payload, error",
    [(b"x" * 5, tempo.PayloadTooLarge), ("text", TypeError), (memoryview(b"abcd")[::2], BufferError)],
    ids=["too-large", "str", "strided"],
)
def test_aenqueue_refuses_at_once_what_enqueue_refuses(make, run, payload, error):
    d = make(interval=60, max_buffered_bytes=4)
    d.enqueue(b"1234")  # full: the refusal must not wait for space first

    async def main():
        with pytest.raises(error):
            await asyncio.wait_for(d.aenqueue(payload), WAIT)

    run(main)
    assert d.stats().rejected_too_large == (1 if error is tempo.PayloadTooLarge else 0)


@pytest.mark.parametrize("timeout, error", [(-1, ValueError), ("x", TypeError)])
def test_aenqueue_bad_timeout_accepts_nothing(make, run, timeout, error):
    d = make(interval=60)

    async def main():
        with pytest.raises(error):
            await d.aenqueue(b"a", timeout=timeout)

    run(main)
    assert d.stats().enqueued == 0


def test_stop_during_aenqueue_raises_stopped(make, run):
    d = make(interval=60, max_buffered_bytes=4)
    d.enqueue(b"1234")

    async def main():
        task = asyncio.create_task(d.aenqueue(b"x"))
        await until_async_blocked(d)
        in_thread(d.stop)
        with pytest.raises(tempo.Stopped):
            await asyncio.wait_for(task, WAIT)

    run(main)
    stats = d.stats()
    assert (stats.enqueued, stats.rejected_full, stats.dropped) == (1, 0, 1)


def test_shutdown_during_aenqueue_raises_shutting_down(make, run, spawn):
    d = make(interval=60, max_buffered_bytes=4)
    d.enqueue(b"1234")

    async def main():
        task = asyncio.create_task(d.aenqueue(b"x"))
        await until_async_blocked(d)
        assert d._begin_shutdown()
        with pytest.raises(tempo.ShuttingDown):
            await asyncio.wait_for(task, WAIT)

    run(main)


def test_cancelled_aenqueue_enqueues_nothing_and_frees_its_waker(make, run):
    d = make(interval=60, max_buffered_bytes=4, max_batch_items=1)
    d.start()
    d.enqueue(b"1234")

    async def main():
        task = asyncio.create_task(d.aenqueue(b"x"))
        await until_async_blocked(d)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert tempo._aio.open_wakers(d) == 0
        d.get_batch(timeout=0).release()

    run(main)
    stats = d.stats()
    assert (stats.enqueued, stats.rejected_full, stats.buffered_bytes) == (1, 0, 0)


def test_many_aenqueue_producers_and_an_async_consumer_lose_nothing(make, run):
    d = make(interval=60, max_buffered_bytes=64, max_batch_bytes=16)
    d.start()
    producers, per_producer = 5, 100

    async def main():
        async def produce(k):
            for i in range(per_producer):
                await d.aenqueue(b"%d:%03d" % (k, i))

        async def consume():
            got = []
            async for batch in d.abatches():
                got.extend(batch.tolist())
            return got

        consumer = asyncio.create_task(consume())
        await asyncio.gather(*(produce(k) for k in range(producers)))
        await d.ashutdown(timeout=WAIT)
        return await asyncio.wait_for(consumer, WAIT)

    got = run(main)
    for k in range(producers):
        assert [p for p in got if p.startswith(b"%d:" % k)] == [
            b"%d:%03d" % (k, i) for i in range(per_producer)
        ]
    assert len(got) == producers * per_producer
    stats = d.stats()
    assert (stats.enqueued, stats.items, stats.rejected_full) == (len(got), len(got), 0)


def test_aflush_seals_and_waits_until_a_consumer_took_it(make, run):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    d.enqueue(b"b")

    async def main():
        flush = asyncio.create_task(d.aflush(timeout=WAIT))
        await until_async_blocked(d)
        assert not flush.done()
        assert d.stats().waiting_batches == 1  # sealed by aflush
        with await d.aget_batch(timeout=WAIT) as batch:
            assert batch.tolist() == [b"a", b"b"]
        await asyncio.wait_for(flush, WAIT)
        d.enqueue(b"c")  # still running

    run(main)
    assert d.stats().enqueued == 3


def test_aflush_with_nothing_queued_returns_at_once(make, run):
    d = make(interval=60)
    d.start()

    async def main():
        await asyncio.wait_for(d.aflush(timeout=0), WAIT)
        assert tempo._aio.open_wakers(d) == 0

    run(main)


def test_aflush_times_out_and_drops_nothing(make, run):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")

    async def main():
        ticker = Ticker()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError, match="flush timed out"):
            await d.aflush(timeout=0.3)
        assert 0.29 <= loop.time() - t0 < 0.3 + WAIT
        assert ticker.stop() >= 5

    run(main)
    with d.get_batch(timeout=0) as batch:
        assert batch.tolist() == [b"a"]
    assert d.stats().dropped == 0


def test_aflush_raises_stopped_when_finished_or_stopped_meanwhile(make, run):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")

    async def main():
        flush = asyncio.create_task(d.aflush())
        await until_async_blocked(d)
        in_thread(d.stop)
        with pytest.raises(tempo.Stopped):
            await asyncio.wait_for(flush, WAIT)
        with pytest.raises(tempo.Stopped):
            await d.aflush()

    run(main)


@pytest.mark.parametrize("timeout, error", [(-1, ValueError), (math.nan, ValueError), ("x", TypeError)])
def test_aflush_bad_timeout_seals_nothing(make, run, timeout, error):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")

    async def main():
        with pytest.raises(error):
            await d.aflush(timeout=timeout)

    run(main)
    assert d.stats().waiting_batches == 0


def test_async_with_starts_and_shuts_down_gracefully(run):
    async def main():
        async with tempo.Dispatcher(interval=60, max_buffered_bytes=100) as d:
            assert d._state_name() == "running"

            async def consume():
                return [batch.tolist() async for batch in d.abatches()]

            consumer = asyncio.create_task(consume())
            await d.aenqueue(b"a")
            d.enqueue_many([b"b", b"c"])
        # Leaving the block awaited ashutdown(): everything was handed out.
        assert d._state_name() == "finished"
        return d, await asyncio.wait_for(consumer, WAIT)

    d, batches = run(main)
    assert batches == [[b"a", b"b", b"c"]]
    stats = d.stats()
    assert (stats.dropped, stats.items) == (0, 3)


def test_async_with_stops_if_the_block_raises(run):
    async def main():
        with pytest.raises(KeyError):
            async with tempo.Dispatcher(interval=60, max_buffered_bytes=100) as d:
                await d.aenqueue(b"lost")
                raise KeyError("boom")
        return d

    d = run(main)
    assert d._state_name() == "finished"
    assert d.stats().dropped == 1
