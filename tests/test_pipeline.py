"""tempo.Pipeline and tempo.Retry: delivery, retries, dead letters, lifecycle, stats."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading

import pytest

import tempo
from conftest import STATS_FIELDS, WAIT, wait_until

PIPELINE_FIELDS = ["delivered_batches", "delivered_items", "failed_batches", "failed_items",
                   "retries"]
NO_WAIT = tempo.Retry(attempts=3, backoff=0, max_backoff=0)


def counters(p: tempo.Pipeline) -> dict[str, int]:
    stats = p.stats()
    return {name: getattr(stats, name) for name in PIPELINE_FIELDS}


# -- delivery -----------------------------------------------------------------------


def test_every_payload_reaches_the_sink_in_order_and_stats_are_exact(pipe):
    seen: list[list[bytes]] = []
    p = pipe(lambda batch: seen.append(batch.tolist()), max_batch_bytes=10)
    payloads = [b"%04d" % i for i in range(100)]  # 4 bytes: two per batch
    for payload in payloads:
        p.enqueue(payload)
    p.close()

    assert [item for batch in seen for item in batch] == payloads
    assert all(len(batch) == 2 for batch in seen)
    stats = p.stats()
    assert isinstance(stats, tempo.PipelineStats) and isinstance(stats, tempo.Stats)
    assert [f.name for f in dataclasses.fields(stats)] == STATS_FIELDS + PIPELINE_FIELDS
    assert counters(p) == {"delivered_batches": 50, "delivered_items": 100,
                           "failed_batches": 0, "failed_items": 0, "retries": 0}
    assert (stats.enqueued, stats.batches, stats.items, stats.dropped, stats.buffered_bytes) == (
        100, 50, 100, 0, 0)
    with pytest.raises(tempo.Stopped):
        p.enqueue(b"after close")


def test_dispatcher_settings_pass_through(pipe):
    p = pipe(lambda batch: None, max_batch_bytes=10, max_batch_items=3, prefault=True)
    config = p.dispatcher.config
    assert (config.max_batch_bytes, config.max_batch_items, config.prefault) == (10, 3, True)
    assert p.dispatcher._populated == tempo.MiB  # the whole (page-rounded) arena


def test_the_batch_is_released_after_the_sink_returned(pipe):
    kept: list[tempo.Batch] = []
    p = pipe(kept.append)
    p.enqueue(b"abc")
    p.flush()
    (batch,) = kept
    with pytest.raises(ValueError):
        batch[0]
    assert p.stats().buffered_bytes == 0
    p.close()


def test_flush_waits_until_the_sink_processed_the_batches(pipe, spawn):
    entered, release = threading.Event(), threading.Event()
    seen: list[bytes] = []

    def sink(batch):
        entered.set()
        assert release.wait(WAIT)
        seen.extend(batch.tolist())

    p = pipe(sink)
    p.enqueue(b"one")
    flush = spawn(p.flush)
    assert entered.wait(WAIT)
    # The batch was handed out (the dispatcher's flush is done), yet flush() waits.
    wait_until(lambda: p._waiting == 1, what="flush() waiting for the sink")
    assert not flush.done()
    release.set()
    flush.result()
    assert seen == [b"one"]
    assert p.stats().delivered_items == 1
    p.close()


def test_flush_times_out_without_dropping(pipe):
    release = threading.Event()
    p = pipe(lambda batch: release.wait(WAIT))
    p.enqueue(b"slow")
    with pytest.raises(TimeoutError):
        p.flush(timeout=0.05)
    release.set()
    p.close()
    assert counters(p)["delivered_items"] == 1
    assert p.stats().dropped == 0


def test_workers_call_the_sink_concurrently(pipe):
    barrier = threading.Barrier(3, timeout=WAIT)
    p = pipe(lambda batch: barrier.wait(), workers=3, max_batch_bytes=1)
    for i in range(3):
        p.enqueue(b"%d" % i)
    p.close()  # a BrokenBarrierError would show as failed batches
    assert counters(p)["delivered_batches"] == 3
    assert counters(p)["failed_batches"] == 0


def test_enqueue_is_the_dispatchers_own_method(pipe):
    p = pipe(lambda batch: None)
    assert p.enqueue == p.dispatcher.enqueue  # no Python frame of the pipeline per payload
    assert isinstance(p.dispatcher, tempo.Dispatcher)
    p.close()


# -- retries and dead letters ---------------------------------------------------------


def test_a_failing_sink_is_retried_with_the_same_batch(pipe, tempo_log):
    calls: list[list[bytes]] = []

    def sink(batch):
        calls.append(batch.tolist())
        if len(calls) < 3:
            raise ConnectionError("down")

    p = pipe(sink, retry=NO_WAIT)
    p.enqueue(b"a")
    p.enqueue(b"b")
    p.close()
    assert calls == [[b"a", b"b"]] * 3
    assert counters(p) == {"delivered_batches": 1, "delivered_items": 2,
                           "failed_batches": 0, "failed_items": 0, "retries": 2}
    assert tempo_log == []  # a retry that succeeds is not an error


def test_a_batch_that_exhausts_its_attempts_goes_to_on_failure(pipe, tempo_log):
    dead: list[tuple[list[bytes], BaseException]] = []
    error = ConnectionError("still down")

    def sink(batch):
        raise error

    p = pipe(sink, retry=NO_WAIT, on_failure=lambda batch, exc: dead.append((batch.tolist(), exc)))
    p.enqueue(b"x")
    p.enqueue(b"y")
    p.close()
    assert dead == [([b"x", b"y"], error)]
    assert counters(p) == {"delivered_batches": 0, "delivered_items": 0,
                           "failed_batches": 1, "failed_items": 2, "retries": 2}
    assert p.stats().dropped == 0
    (record,) = tempo_log
    assert record.levelno == logging.ERROR and record.exc_info[1] is error
    assert "a batch of 2 items was given up after 3 attempts" in record.getMessage()


def test_an_unretryable_error_goes_to_on_failure_at_once_and_the_next_batch_is_delivered(
        pipe, tempo_log):
    dead: list[tuple[list[bytes], BaseException]] = []
    delivered: list[list[bytes]] = []
    error = tempo.Unretryable("too large for the far side")

    def sink(batch):
        if batch[0] == b"big":
            raise error
        delivered.append(batch.tolist())

    # A minute between attempts: a retry would outlast close().
    p = pipe(sink, max_batch_items=1, retry=tempo.Retry(attempts=5, backoff=60, max_backoff=60),
             on_failure=lambda batch, exc: dead.append((batch.tolist(), exc)))
    p.enqueue(b"big")
    p.enqueue(b"small")
    p.close(timeout=WAIT)
    assert dead == [([b"big"], error)] and delivered == [[b"small"]]
    assert counters(p) == {"delivered_batches": 1, "delivered_items": 1,
                           "failed_batches": 1, "failed_items": 1, "retries": 0}
    assert "a batch of 1 item was given up after 1 attempt" in tempo_log[0].getMessage()


def test_an_async_sink_that_raises_unretryable_is_not_retried():
    calls = 0
    dead: list[BaseException] = []

    async def sink(batch):
        nonlocal calls
        calls += 1
        raise tempo.Unretryable("no") from ValueError("cause")

    async def main():
        async with tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB,
                                  retry=tempo.Retry(attempts=5, backoff=60, max_backoff=60),
                                  on_failure=lambda b, e: dead.append(e)) as p:
            p.enqueue(b"a")
        return p

    p = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert calls == 1 and [type(e) for e in dead] == [tempo.Unretryable]
    assert isinstance(dead[0].__cause__, ValueError)
    assert counters(p)["retries"] == 0 and counters(p)["failed_items"] == 1


def test_a_failure_streak_is_logged_once_and_its_end_once(pipe, tempo_log):
    healthy = threading.Event()

    def sink(batch):
        if not healthy.is_set():
            raise OSError("disk full")

    p = pipe(sink, retry=tempo.Retry(attempts=1), max_batch_bytes=1)
    for i in range(50):
        p.enqueue(b"%d" % (i % 10))
    p.flush()
    assert counters(p)["failed_batches"] == 50
    assert [r.levelno for r in tempo_log] == [logging.ERROR]
    healthy.set()
    p.enqueue(b"ok")
    p.close()
    assert [r.levelno for r in tempo_log] == [logging.ERROR, logging.WARNING]
    assert "after 50 failed batches" in tempo_log[1].getMessage()


def test_an_error_in_on_failure_is_logged_and_the_worker_goes_on(pipe, tempo_log):
    def sink(batch):
        if batch[0] == b"bad":
            raise ValueError("bad batch")

    def on_failure(batch, exc):
        raise RuntimeError("spill file gone")

    seen: list[bytes] = []
    p = pipe(lambda b: (sink(b), seen.extend(b.tolist())), retry=tempo.Retry(attempts=1),
             on_failure=on_failure, max_batch_bytes=1)
    p.enqueue(b"bad")
    p.enqueue(b"good")
    p.close()
    assert seen == [b"good"]
    assert counters(p)["failed_batches"] == 1 and counters(p)["delivered_batches"] == 1
    messages = [r.getMessage() for r in tempo_log]
    assert any("on_failure raised" in m for m in messages), messages
    assert any(isinstance(r.exc_info[1], RuntimeError) for r in tempo_log if r.exc_info)


def test_stop_ends_a_retry_wait_at_once(pipe):
    failed = threading.Event()
    dead = threading.Event()
    got: list[BaseException] = []
    error = TimeoutError("upstream")

    def sink(batch):
        failed.set()
        raise error

    def on_failure(batch, exc):
        got.append(exc)
        dead.set()

    # The first retry would come after an hour at the earliest.
    p = pipe(sink, retry=tempo.Retry(attempts=5, backoff=3600, max_backoff=3600),
             on_failure=on_failure)
    p.enqueue(b"x")
    p.dispatcher.flush()
    assert failed.wait(WAIT)
    p.stop()
    assert dead.wait(WAIT), "the retry wait did not end on stop()"
    assert got == [error]
    wait_until(lambda: counters(p)["failed_batches"] == 1)
    assert counters(p) == {"delivered_batches": 0, "delivered_items": 0,
                           "failed_batches": 1, "failed_items": 1, "retries": 0}


def test_retry_waits_grow_with_jitter_within_the_bounds(monkeypatch):
    # Seeded: unseeded, about one run in twenty had more than 100 of the 200
    # waits at the cap (so equal), and the distinct-count assertion failed.
    import random

    monkeypatch.setattr(tempo._pipeline, "random", random.Random(20261129))
    retry = tempo.Retry(attempts=10, backoff=0.1, max_backoff=2.0)
    wait, waits = retry.backoff, []
    for _ in range(200):
        wait = retry._next_wait(wait)
        waits.append(wait)
    assert all(0.1 <= w <= 2.0 for w in waits)
    assert len(set(waits)) > 100  # jitter: no lockstep
    assert max(waits) > 1.0  # they grow past the first waits
    assert tempo.Retry(backoff=0, max_backoff=0)._next_wait(0.0) == 0.0


# -- lifecycle --------------------------------------------------------------------------


def test_close_waits_for_the_sink(pipe, spawn):
    entered, release = threading.Event(), threading.Event()
    done: list[bytes] = []

    def sink(batch):
        entered.set()
        assert release.wait(WAIT)
        done.extend(batch.tolist())

    p = pipe(sink)
    p.enqueue(b"last")
    closing = spawn(p.close)
    assert entered.wait(WAIT)

    def finished() -> bool:
        try:
            p.dispatcher.enqueue(b"probe")
        except tempo.Stopped:
            return True
        except tempo.ShuttingDown:
            return False
        raise AssertionError("the dispatcher accepted a payload while closing")

    wait_until(finished, what="the dispatcher to finish")
    # Every batch was handed out: close() now waits only for the sink.
    assert not closing.done()
    release.set()
    closing.result()
    assert done == [b"last"]
    assert counters(p)["delivered_items"] == 1


def test_close_timeout_stops_and_reports(pipe):
    release = threading.Event()
    p = pipe(lambda batch: release.wait(WAIT), max_batch_bytes=1)
    p.enqueue(b"1")
    p.enqueue(b"2")
    p.enqueue(b"3")
    wait_until(lambda: p.stats().batches == 1)
    with pytest.raises(TimeoutError):
        p.close(timeout=0.05)
    assert p.stats().dropped == 2  # the batches no worker had taken
    release.set()
    wait_until(lambda: counters(p)["delivered_batches"] == 1)
    p.close()  # the worker is done now
    with pytest.raises(tempo.Stopped):
        p.enqueue(b"x")


def test_with_block_closes_gracefully_even_when_it_raises():
    seen: list[bytes] = []
    with pytest.raises(KeyError):
        with tempo.Pipeline(lambda b: seen.extend(b.tolist()), interval=60,
                            max_buffered_bytes=tempo.MiB) as p:
            p.enqueue(b"accepted before the error")
            raise KeyError("unrelated")
    assert seen == [b"accepted before the error"]
    assert p.stats().dropped == 0


def test_stop_drops_what_no_worker_took(pipe):
    release = threading.Event()
    p = pipe(lambda batch: release.wait(WAIT), max_batch_bytes=1)
    for i in range(4):
        p.enqueue(b"%d" % i)
    wait_until(lambda: p.stats().batches == 1)
    p.stop()
    p.stop()  # twice is fine
    release.set()
    p.close()  # returns once the worker finished its batch
    stats = p.stats()
    assert (stats.delivered_batches, stats.dropped) == (1, 3)


def test_close_twice_and_after_stop(pipe):
    p = pipe(lambda batch: None)
    p.close()
    p.close()
    q = pipe(lambda batch: None)
    q.stop()
    q.close()


def test_repr_names_the_sink(pipe):
    def my_sink(batch):
        pass

    p = pipe(my_sink, workers=2)
    assert "my_sink" in repr(p) and "workers=2" in repr(p)
    p.close()


# -- asyncio ------------------------------------------------------------------------------


def test_an_async_sink_runs_on_the_callers_loop():
    seen: list[bytes] = []
    loops: set[asyncio.AbstractEventLoop] = set()

    async def sink(batch):
        loops.add(asyncio.get_running_loop())
        await asyncio.sleep(0)
        seen.extend(batch.tolist())

    async def main():
        async with tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB,
                                  max_batch_bytes=4, workers=2) as p:
            for i in range(20):
                p.enqueue(b"%02d" % i)
        assert loops == {asyncio.get_running_loop()}
        return p

    p = asyncio.run(main())
    assert sorted(seen) == [b"%02d" % i for i in range(20)]
    assert counters(p) == {"delivered_batches": 10, "delivered_items": 20,
                           "failed_batches": 0, "failed_items": 0, "retries": 0}


def test_an_async_sink_is_retried_and_gives_up_to_on_failure():
    calls = 0
    dead: list[list[bytes]] = []

    async def sink(batch):
        nonlocal calls
        calls += 1
        raise ConnectionError("nope")

    async def main():
        async with tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB, retry=NO_WAIT,
                                  on_failure=lambda b, e: dead.append(b.tolist())) as p:
            p.enqueue(b"a")
        return p

    p = asyncio.run(main())
    assert calls == 3 and dead == [[b"a"]]
    assert counters(p)["retries"] == 2 and counters(p)["failed_items"] == 1


def test_stop_ends_an_async_retry_wait_at_once():
    async def main():
        failed = asyncio.Event()
        dead: list[BaseException] = []

        async def sink(batch):
            failed.set()
            raise OSError("down")

        p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB,
                           max_batch_bytes=1,  # sealed at once
                           retry=tempo.Retry(attempts=5, backoff=3600, max_backoff=3600),
                           on_failure=lambda b, e: dead.append(e))
        async with p:
            p.enqueue(b"x")
            await asyncio.wait_for(failed.wait(), WAIT)
            p.stop()
        # aclose() returned: the wait ended and the batch went to on_failure.
        return p, dead

    p, dead = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert [type(e) for e in dead] == [OSError]
    assert counters(p)["failed_batches"] == 1 and counters(p)["retries"] == 0


def test_an_async_pipeline_refuses_the_blocking_forms():
    async def sink(batch):
        pass

    p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB)
    try:
        with pytest.raises(TypeError, match="async with"):
            with p:
                pass
        with pytest.raises(TypeError, match="aclose"):
            p.close()
        with pytest.raises(TypeError, match="aflush"):
            p.flush()
    finally:
        p.stop()


def test_a_threaded_pipeline_works_in_async_with():
    seen: list[bytes] = []

    async def main():
        async with tempo.Pipeline(lambda b: seen.extend(b.tolist()), interval=60,
                                  max_buffered_bytes=tempo.MiB) as p:
            p.enqueue(b"from a coroutine")
            await p.aflush(WAIT)
            assert seen == [b"from a coroutine"]

    asyncio.run(main())


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"workers": 0}, tempo.ConfigError),
        ({"workers": -1}, tempo.ConfigError),
        ({"workers": 1.5}, TypeError),
        ({"workers": True}, TypeError),
        ({"retry": 3}, TypeError),
        ({"on_failure": "spill"}, TypeError),
        ({"interval": 0}, tempo.ConfigError),
        ({"max_buffered_bytes": 0}, tempo.ConfigError),
        ({"max_batch_bytes": -1}, tempo.ConfigError),
        ({"interval": "1s"}, TypeError),
    ],
)
def test_bad_pipeline_arguments(kwargs, error):
    options = {"interval": 1.0, "max_buffered_bytes": tempo.MiB, **kwargs}
    with pytest.raises(error):
        tempo.Pipeline(lambda batch: None, **options)


def test_the_sink_must_be_callable():
    with pytest.raises(TypeError, match="sink must be callable"):
        tempo.Pipeline(b"not a sink", interval=1, max_buffered_bytes=tempo.MiB)
    with pytest.raises(TypeError):
        tempo.Pipeline(lambda b: None, 1, tempo.MiB)  # keyword-only


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((0,), tempo.ConfigError, "attempts must be at least 1"),
        ((1.5,), TypeError, "attempts must be an int"),
        ((True,), TypeError, "attempts must be an int"),
        ((3, -0.1), tempo.ConfigError, "backoff must be a finite"),
        ((3, math.nan), tempo.ConfigError, "backoff must be a finite"),
        ((3, math.inf), tempo.ConfigError, "backoff must be a finite"),
        ((3, "1"), TypeError, "backoff must be a number"),
        ((3, 1.0, 0.5), tempo.ConfigError, "max_backoff must not be less than backoff"),
        ((3, 0.0, math.inf), tempo.ConfigError, "max_backoff must be a finite"),
    ],
)
def test_bad_retry_arguments(args, error, message):
    with pytest.raises(error, match=message):
        tempo.Retry(*args)


def test_retry_defaults_and_equality():
    assert tempo.Retry() == tempo.Retry(attempts=5, backoff=0.1, max_backoff=5.0)
    assert tempo.Retry(2, 1, 3) == tempo.Retry(attempts=2, backoff=1.0, max_backoff=3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tempo.Retry().attempts = 3  # type: ignore[misc]


# -- interpreter exit -------------------------------------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_exit_hook_runs_registered_drains():
    probe = run_python(
        "import tempo, tempo._lifecycle\n"
        "class D:\n"
        "    def drain(self, deadline): print('drained', flush=True)\n"
        "d = D()\n"
        "tempo._lifecycle.register_exit_drain(d.drain)\n"
        "tempo.Dispatcher(interval=1, max_buffered_bytes=1024).start()\n"
    )
    assert probe.stdout == "drained\n"


def test_exit_drain_closes_the_pipeline_by_the_deadline(pipe, tempo_log):
    seen: list[bytes] = []
    p = pipe(lambda batch: seen.extend(batch.tolist()), max_batch_bytes=2)
    for i in range(10):
        p.enqueue(b"%d" % i)
    p.enqueue(b"open batch")  # not sealed yet: the drain seals it
    p._drain_at_exit(time.monotonic() + WAIT)
    assert seen == [b"%d" % i for i in range(10)] + [b"open batch"]
    assert tempo_log == []

    release = threading.Event()
    q = pipe(lambda batch: release.wait(WAIT), max_batch_bytes=1)
    q.enqueue(b"1")
    q.enqueue(b"2")
    wait_until(lambda: q.stats().batches == 1)
    q._drain_at_exit(time.monotonic())  # no time left: reported, not raised
    release.set()
    assert q.stats().dropped == 1
    (record,) = tempo_log
    assert record.levelno == logging.WARNING
    assert "was not drained at exit: 1 payload dropped unprocessed" in record.getMessage()


EXIT_SCRIPT = """
import sys, time, tempo
out = open(sys.argv[1], "ab", buffering=0)
def sink(batch):
    time.sleep(0.02)  # slow: batches are still queued when the main thread ends
    batch.writeall(out)
p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB, max_batch_bytes=50)
for i in range(200):
    p.enqueue(b"%04d\\n" % i)
"""


def test_at_exit_an_open_pipeline_delivers_everything(tmp_path):
    out = tmp_path / "out.txt"
    result = run_python(EXIT_SCRIPT, str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == b"".join(b"%04d\n" % i for i in range(200))
    assert "tempo" not in result.stderr  # no warning: nothing was dropped


def test_nothing_a_sink_raises_kills_its_worker(pipe):
    def sink(batch):
        if batch[0] == b"exit":
            raise SystemExit(3)

    dead: list[type] = []
    p = pipe(sink, retry=tempo.Retry(attempts=1), max_batch_bytes=1,
             on_failure=lambda b, e: dead.append(type(e)))
    p.enqueue(b"exit")
    p.enqueue(b"x")
    p.close(timeout=WAIT)
    assert dead == [SystemExit]
    assert counters(p)["delivered_batches"] == 1 and counters(p)["failed_batches"] == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_fresh_workers(pipe):
    seen: list[bytes] = []
    p = pipe(lambda batch: seen.extend(batch.tolist()))
    p.enqueue(b"parent's")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own workers deliver its own payloads
        status = 1
        try:
            p.enqueue(b"child's")
            p.close(timeout=WAIT)
            os.write(write_fd, b"|".join(seen) + b";%d" % p.stats().delivered_items)
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        report = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == b"child's;1"
    p.close()
    assert seen == [b"parent's"]


def test_max_batch_items_and_enqueue_many_reach_the_dispatcher(pipe):
    seen: list[list[bytes]] = []
    p = pipe(lambda batch: seen.append(batch.tolist()), max_batch_items=3)
    assert p.dispatcher.config.max_batch_items == 3
    assert p.enqueue_many([b"%d" % i for i in range(7)]) == 7
    p.close()
    assert seen == [[b"0", b"1", b"2"], [b"3", b"4", b"5"], [b"6"]]


def test_aenqueue_waits_for_space_while_the_async_sink_drains():
    seen: list[bytes] = []

    async def sink(batch):
        await asyncio.sleep(0)
        seen.extend(batch.tolist())

    async def main():
        # Room for 4 payloads of 8 bytes: aenqueue must wait for the sink 25 times over.
        async with tempo.Pipeline(sink, interval=60, max_buffered_bytes=32,
                                  max_batch_items=2) as p:
            for i in range(100):
                await p.aenqueue(b"%08d" % i, timeout=WAIT)
            await p.aflush(WAIT)
            assert len(seen) == 100
        return p

    p = asyncio.run(main())
    assert seen == [b"%08d" % i for i in range(100)]
    assert p.stats().rejected_full == 0


def test_aclose_drains_an_async_pipeline_that_was_never_entered():
    seen: list[bytes] = []

    async def sink(batch):
        seen.extend(batch.tolist())

    p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB)
    p.enqueue(b"waiting since before the loop")

    async def main():
        await p.aclose(WAIT)

    asyncio.run(main())
    assert seen == [b"waiting since before the loop"]


# -- found in review: calls from inside the sink, odd callables, exit -------------------------


def test_the_sink_may_close_its_own_pipeline_with_batches_still_queued(pipe):
    seen: list[bytes] = []
    inside: list[object] = []
    # Without the GIL the worker runs while the test enqueues: it must not
    # close before all five are in (they would get ShuttingDown).
    queued = threading.Event()

    def sink(batch):
        seen.extend(batch.tolist())
        if batch[0] == b"0":
            assert queued.wait(WAIT)
            # The only worker is this one: close() cannot wait for it, so it
            # starts the close and returns; the rest is processed afterwards.
            p.close()
            try:
                p.enqueue(b"late")
            except tempo.TempoError as exc:
                inside.append(type(exc))

    p = pipe(sink, max_batch_items=1)
    for i in range(5):
        p.enqueue(b"%d" % i)
    queued.set()
    p.close(timeout=WAIT)
    assert inside == [tempo.ShuttingDown]
    assert seen == [b"%d" % i for i in range(5)]
    assert counters(p)["delivered_items"] == 5 and p.stats().dropped == 0
    with pytest.raises(tempo.Stopped):
        p.enqueue(b"after")


def test_an_async_sink_may_close_its_own_pipeline_with_batches_still_queued():
    seen: list[bytes] = []

    async def sink(batch):
        seen.extend(batch.tolist())
        if batch[0] == b"0":
            await p.aclose()

    p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB, max_batch_items=1)

    async def main():
        async with p:
            for i in range(5):
                p.enqueue(b"%d" % i)

    try:
        asyncio.run(asyncio.wait_for(main(), WAIT))
    finally:
        p.stop()
    assert seen == [b"%d" % i for i in range(5)]
    assert counters(p)["delivered_items"] == 5 and p.stats().dropped == 0


def test_flush_from_inside_the_sink_is_an_error_not_a_deadlock(pipe):
    errors: list[BaseException] = []

    def sink(batch):
        try:
            p.flush()  # would wait for this very call to return
        except RuntimeError as exc:
            errors.append(exc)

    p = pipe(sink, workers=2)
    p.enqueue(b"x")
    p.close(timeout=WAIT)
    assert len(errors) == 1 and "own sink" in str(errors[0])
    assert counters(p)["delivered_items"] == 1


def test_aflush_from_inside_an_async_sink_is_an_error_not_a_deadlock():
    errors: list[BaseException] = []

    async def sink(batch):
        try:
            await p.aflush()
        except RuntimeError as exc:
            errors.append(exc)

    p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB)

    async def main():
        async with p:
            p.enqueue(b"x")

    try:
        asyncio.run(asyncio.wait_for(main(), WAIT))
    finally:
        p.stop()
    assert len(errors) == 1 and "own sink" in str(errors[0])
    assert counters(p)["delivered_items"] == 1


def test_on_failure_raising_cancelled_error_does_not_kill_a_worker_thread(pipe, tempo_log):
    def sink(batch):
        raise OSError("down")

    def on_failure(batch, exc):
        raise asyncio.CancelledError()  # a BaseException: must not end the thread

    p = pipe(sink, retry=tempo.Retry(attempts=1), max_batch_items=1, on_failure=on_failure)
    for i in range(3):
        p.enqueue(b"%d" % i)
    p.close(timeout=WAIT)
    stats = p.stats()
    assert (stats.failed_batches, stats.failed_items, stats.dropped) == (3, 3, 0)
    assert any("on_failure raised" in r.getMessage() for r in tempo_log)


def test_a_plain_sink_that_returns_an_awaitable_is_a_failure_not_a_delivery(pipe, tempo_log):
    delivered: list[bytes] = []
    dead: list[tuple[list[bytes], BaseException]] = []

    async def real_sink(batch):
        delivered.extend(batch.tolist())

    # A lambda around an async function is not itself async: the coroutine it
    # returns would never run, and the batch would count as delivered.
    p = pipe(lambda batch: real_sink(batch), retry=tempo.Retry(attempts=1),
             on_failure=lambda batch, exc: dead.append((batch.tolist(), exc)))
    p.enqueue(b"x")
    p.close(timeout=WAIT)
    assert delivered == []
    assert [(items, type(exc)) for items, exc in dead] == [([b"x"], TypeError)]
    assert "async def" in str(dead[0][1])
    assert counters(p)["delivered_batches"] == 0 and counters(p)["failed_items"] == 1


def test_an_async_on_failure_is_refused():
    async def on_failure(batch, exc):
        pass

    with pytest.raises(TypeError, match="on_failure"):
        tempo.Pipeline(lambda b: None, interval=1, max_buffered_bytes=tempo.MiB,
                       on_failure=on_failure)


def test_an_on_failure_that_returns_an_awaitable_is_reported(pipe, tempo_log):
    async def keep(batch, exc):
        pass

    p = pipe(lambda b: 1 / 0, retry=tempo.Retry(attempts=1),
             on_failure=lambda batch, exc: keep(batch, exc))
    p.enqueue(b"x")
    p.close(timeout=WAIT)
    assert counters(p)["failed_items"] == 1
    errors = [r.exc_info[1] for r in tempo_log if "on_failure raised" in r.getMessage()]
    assert [type(e) for e in errors] == [TypeError]


def test_exit_drain_of_an_async_pipeline_whose_loop_is_busy_stops_and_reports(tempo_log):
    # The loop runs in another thread but is stuck: aclose() cannot even start.
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    unblock = threading.Event()

    async def sink(batch):
        pass

    p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB)
    try:
        asyncio.run_coroutine_threadsafe(p.__aenter__(), loop).result(WAIT)
        blocked = threading.Event()

        def hog():
            blocked.set()
            unblock.wait(WAIT)

        loop.call_soon_threadsafe(hog)
        assert blocked.wait(WAIT)
        p.enqueue(b"never processed")
        p._drain_at_exit(time.monotonic() + 0.05)
        # The drain ended at its deadline: what is left is dropped now, and said so.
        assert p.stats().dropped == 1
        with pytest.raises(tempo.Stopped):
            p.enqueue(b"after")
        assert any("was not drained at exit: 1 payload dropped" in r.getMessage()
                   for r in tempo_log)
    finally:
        unblock.set()
        p.stop()
        # Let the loop run what the drain left scheduled before it stops.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.01), loop).result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(WAIT)
        loop.close()


TYPED_USER_CODE = '''
import socket
import tempo
import tempo.logging

def send(sock: socket.socket) -> tempo.Pipeline:
    # A sink's return value is ignored, so a call that returns a count is a sink.
    return tempo.Pipeline(lambda batch: sock.sendmsg(batch), interval=0.5,
                          max_buffered_bytes=tempo.MiB)

def spill(batch: tempo.Batch, exc: BaseException) -> int:
    return len(batch.tolist())

async def post(batch: tempo.Batch) -> None: ...

p = tempo.Pipeline(lambda batch: batch.tolist(), interval=0.5, max_buffered_bytes=tempo.MiB,
                   on_failure=spill)
a = tempo.Pipeline(post, interval=0.5, max_buffered_bytes=tempo.MiB)
h = tempo.logging.BatchHandler(lambda batch: batch.tolist())
'''


def test_sinks_that_return_a_value_type_check(tmp_path):
    pytest.importorskip("mypy")
    script = tmp_path / "user.py"
    script.write_text(TYPED_USER_CODE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_aclose_timeout_holds_even_when_a_sink_delays_its_cancellation():
    dead: list[tuple[list[bytes], type]] = []

    async def main():
        let_go = asyncio.Event()
        entered = asyncio.Event()

        async def sink(batch):
            entered.set()
            if batch[0] == b"slow":
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    await let_go.wait()  # a long cleanup before giving in
                    raise
            else:
                await asyncio.sleep(3600)

        p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB, max_batch_items=1,
                           workers=2, on_failure=lambda b, e: dead.append((b.tolist(), type(e))))
        await p.__aenter__()
        p.enqueue(b"slow")
        p.enqueue(b"quick")
        p.enqueue(b"queued")
        await asyncio.wait_for(entered.wait(), WAIT)
        with pytest.raises(TimeoutError, match="pipeline close timed out"):
            # Must not wait for the slow cleanup: on timeout, aclose() returns.
            await asyncio.wait_for(p.aclose(0.05), WAIT)
        # The cancellation of a sink that gives in at once has been handled.
        assert dead == [([b"quick"], asyncio.CancelledError)]
        let_go.set()
        await asyncio.wait_for(asyncio.gather(*p._tasks, return_exceptions=True), WAIT)
        return p

    p = asyncio.run(main())
    assert sorted(dead) == sorted([([b"quick"], asyncio.CancelledError),
                                   ([b"slow"], asyncio.CancelledError)])
    stats = p.stats()
    assert (stats.enqueued, stats.failed_items, stats.dropped) == (3, 2, 1)


def test_a_worker_that_cannot_start_leaves_nothing_running(monkeypatch, tempo_log):
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(thread):
        if thread.name.startswith("tempo-pipeline-") and len(started) == 2:
            raise RuntimeError("can't start new thread")
        real_start(thread)
        if thread.name.startswith("tempo-pipeline-"):
            started.append(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    tracked: list[tempo.Pipeline] = []
    monkeypatch.setattr(tempo._lifecycle, "track_pipeline", tracked.append)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        tempo.Pipeline(lambda b: None, interval=60, max_buffered_bytes=tempo.MiB, workers=4)
    monkeypatch.undo()
    # The exit drain still runs for it: no error for the workers never started.
    (pipeline,) = tracked
    pipeline._drain_at_exit(time.monotonic() + WAIT)
    assert tempo_log == []
    # The workers that did start are not left blocked for ever on a pipeline
    # nobody can reach.
    for thread in started:
        thread.join(WAIT)
    assert [t.is_alive() for t in started] == [False, False]


def test_close_with_no_time_left_succeeds_when_nothing_is_in_flight(pipe):
    # Every batch was processed: the workers only have to notice the end, and
    # a close(0) (or an exit drain at its deadline) must not call that busy.
    p = pipe(lambda b: None, workers=2)
    p.enqueue(b"x")
    p.flush()
    p.close(timeout=0)
    assert counters(p)["delivered_items"] == 1 and p.stats().dropped == 0
    with pytest.raises(tempo.Stopped):
        p.enqueue(b"after")


def test_aclose_of_a_stopped_async_pipeline_never_entered_returns():
    # As close() of a stopped pipeline returns: nothing is left to wait for.
    async def sink(batch):
        pass

    p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB)
    p.enqueue(b"dropped by stop")
    p.stop()

    async def main():
        await p.aclose(WAIT)
        async with p:  # and entering it afterwards is as harmless as `with` is
            pass

    asyncio.run(main())
    assert p.stats().dropped == 1 and counters(p)["delivered_items"] == 0


def test_exit_drain_reports_a_batch_still_in_a_retry_wait_or_the_sink(pipe, tempo_log):
    # At its deadline the drain stops the pipeline: a batch waiting for a
    # retry is then handed to on_failure in a daemon thread, which the exit
    # may never let finish. That batch was neither dropped by the dispatcher
    # nor processed yet: the report must count it, not stay silent.
    failed, release = threading.Event(), threading.Event()

    def sink(batch):
        failed.set()
        raise ConnectionError("down")

    p = pipe(sink, retry=tempo.Retry(attempts=5, backoff=3600, max_backoff=3600),
             on_failure=lambda batch, exc: release.wait(WAIT))
    p.enqueue(b"a")
    p.enqueue(b"b")
    p.dispatcher.flush()
    assert failed.wait(WAIT)
    try:
        p._drain_at_exit(time.monotonic() + 0.05)
    finally:
        release.set()
    assert p.stats().dropped == 0
    (record,) = [r for r in tempo_log if r.levelno == logging.WARNING]
    assert "was not drained at exit: 0 payloads dropped unprocessed, 2 still in the sink " \
           "or on_failure" in record.getMessage()


def test_aflush_sees_a_batch_finished_just_after_it_looked():
    # The worker finishes its batch in the loop pass right after aflush()
    # found it unfinished and began to wait: that wake-up must not be lost.
    async def main():
        release = asyncio.get_running_loop().create_future()
        entered = asyncio.Event()

        async def sink(batch):
            entered.set()
            await release

        async with tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB) as p:
            p.enqueue(b"x")
            await p.dispatcher.aflush(WAIT)  # handed to the worker
            await asyncio.wait_for(entered.wait(), WAIT)
            release.set_result(None)  # the worker resumes first in the next pass...
            # ...after this looked and began waiting (awaited inline; a lost
            # wake-up would wait out the hour, so main() times out).
            await p.aflush(3600)
            assert p.stats().delivered_items == 1
        return p

    asyncio.run(asyncio.wait_for(main(), 2 * WAIT))


def test_a_generator_function_is_refused_as_a_sink():
    # Calling it only makes a generator: the body would never run, and every
    # batch would count as delivered.
    def sink(batch):
        yield batch.tolist()

    async def asink(batch):
        yield batch.tolist()

    for bad in (sink, asink):
        with pytest.raises(TypeError, match="generator"):
            tempo.Pipeline(bad, interval=1, max_buffered_bytes=tempo.MiB)


@pytest.mark.parametrize("call", ["aclose", "aflush"])
def test_an_interrupted_aclose_or_aflush_of_an_async_pipeline_leaves_a_later_aclose_working(call):
    # Cancelled (Ctrl-C in asyncio.run cancels the main task) while an async
    # sink was busy, aclose() left the pipeline shutting down with tasks of a
    # loop that then closed: a later aclose() hung for ever, aclose(2) waited
    # 2 s and raised "Event loop is closed".
    delivered: list[bytes] = []

    async def sink(batch):
        if batch[0] == b"busy":
            await asyncio.sleep(3600)
        delivered.extend(batch.tolist())

    p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB, max_batch_items=1)

    async def interrupted():
        await p.__aenter__()
        p.enqueue(b"busy")
        p.enqueue(b"left")
        while p._in_sink() == 0:
            await asyncio.sleep(0.001)
        task = asyncio.ensure_future(getattr(p, call)())
        await asyncio.sleep(0.01)  # let it start waiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(p.aclose(2), WAIT))
    assert time.monotonic() - t0 < 1
    stats = p.stats()
    if call == "aclose":
        # As __aexit__ and close() do: interrupted, the pipeline is stopped.
        assert (delivered, stats.failed_items, stats.dropped) == ([], 1, 1)
    else:
        # Not stopped: the later aclose() delivers what is left, on its loop.
        assert (delivered, stats.failed_items, stats.dropped) == ([b"left"], 1, 0)
    assert p.dispatcher._state_name() == "finished"


def test_on_failure_raising_cancelled_error_in_an_async_pipeline_is_called_once_per_batch(
        tempo_log):
    # _give_up re-raised the CancelledError, and the handler around the
    # delivery (there for a cancelled sink call) gave the batch up again:
    # on_failure ran twice, and the batch counted as failed twice.
    calls: list[list[bytes]] = []

    async def sink(batch):
        raise OSError("down")

    def on_failure(batch, exc):
        calls.append(batch.tolist())
        raise asyncio.CancelledError()

    async def main():
        p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB, max_batch_items=1,
                           retry=tempo.Retry(attempts=1), on_failure=on_failure)
        async with p:
            p.enqueue(b"x")
            while not calls:
                await asyncio.sleep(0.001)
        return p

    p = asyncio.run(asyncio.wait_for(main(), WAIT))
    stats = p.stats()
    assert calls == [[b"x"]]
    assert (stats.failed_batches, stats.failed_items, stats.delivered_items) == (1, 1, 0)
    if sys.version_info >= (3, 11):  # before, every CancelledError is a cancellation
        # Raised of its own accord, it is on_failure's failure, not the worker's.
        assert [r.getMessage() for r in tempo_log if "on_failure raised" in r.getMessage()]
        assert not [r for r in tempo_log if "outside the sink" in r.getMessage()]
