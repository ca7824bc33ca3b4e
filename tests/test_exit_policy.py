"""The exit policy (CONTRACT "Exit", issue 8, bugs 6, 7 and 8): tempo never drops
an accepted payload to make exit happen while a consumer could still take it.

- A non-daemon thread waiting in ``enqueue``, ``flush`` or ``shutdown``, or
  running an event loop, is working: tempo leaves its dispatcher alone.
- At exit, dispatchers still running are drained within a bound, so daemon
  consumers take the last batches; what is left is dropped, counted and
  reported once on the ``tempo`` logger.

Each case runs in a fresh interpreter (tests/exit_scripts.py)."""

from __future__ import annotations

import sys

import pytest

import tempo
from exit_scripts import run_script

FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()

WORKING_NON_DAEMON_THREADS = {
    # Each waits in tempo until a daemon helper, started only after tempo's
    # exit watcher had its chance, gives it what it waits for.
    "enqueue-waiting-for-space": (
        """
        d.enqueue(b"x" * 100)
        def worker():
            d.enqueue(b"y", timeout=None)
            d.shutdown(timeout=5)
        def helper():
            for batch in d.batches():
                got.extend(batch.tolist())
        """
    ),
    "flush": (
        """
        d.enqueue(b"x")
        def worker():
            d.flush()
            d.enqueue(b"y")
            d.shutdown(timeout=5)
        def helper():
            for batch in d.batches():
                got.extend(batch.tolist())
        """
    ),
    "shutdown": (
        """
        d.enqueue(b"x")
        d.enqueue(b"y")
        def worker():
            d.shutdown(timeout=30)
        def helper():
            for batch in d.batches():
                got.extend(batch.tolist())
        """
    ),
    "aget_batch": (
        """
        def worker():
            async def main():
                while True:
                    try:
                        got.extend((await d.aget_batch()).tolist())
                    except tempo.Stopped:
                        return
            asyncio.run(main())
        def helper():
            d.enqueue(b"x")
            d.enqueue(b"y")
            d.shutdown(timeout=5)
        """
    ),
    "abatches": (
        """
        def worker():
            async def main():
                async for batch in d.abatches():
                    got.extend(batch.tolist())
            asyncio.run(main())
        def helper():
            d.enqueue(b"x")
            d.enqueue(b"y")
            d.shutdown(timeout=5)
        """
    ),
}


@pytest.mark.parametrize("kind", list(WORKING_NON_DAEMON_THREADS))
def test_a_thread_waiting_elsewhere_in_tempo_is_working_and_left_alone(kind):
    out = run_script(
        """
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=100, max_batch_bytes=1)
        d.start()
        got = []
        """
        + WORKING_NON_DAEMON_THREADS[kind]
        + """
        def run_worker():
            try:
                worker()
                print("worker:", [g[:1] for g in got], d.stats().dropped, flush=True)
            except tempo.TempoError as exc:
                print("worker:", type(exc).__name__, flush=True)

        def run_helper():
            let_tempo_look(d)
            helper()

        threading.Thread(target=run_worker).start()
        threading.Thread(target=run_helper, daemon=True).start()
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out.splitlines() == ["worker: [b'x', b'y'] 0"]


def test_a_non_daemon_shutdown_waits_for_a_slow_daemon_consumer():
    # Bug 6: with the main thread ended, a thread in shutdown(timeout=30)
    # while a slow daemon consumer drained: tempo saw "nothing moved for
    # 0.1 s", stopped the dispatcher, shutdown raised Stopped, 4 of 5 dropped.
    out = run_script(
        """
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=1000, max_batch_bytes=5)
        d.start()
        got = []

        def slow_consumer():  # each batch takes "long": until tempo had its look
            for batch in d.batches():
                got.extend(batch.tolist())
                let_tempo_look(d, rounds=2)

        def worker():
            for i in range(5):
                d.enqueue(b"item%d" % i)
            try:
                d.shutdown(timeout=30)
                print("shutdown returned", got, d.stats().dropped, flush=True)
            except tempo.Stopped:
                print("Stopped", d.stats().dropped, flush=True)

        threading.Thread(target=slow_consumer, daemon=True).start()
        threading.Thread(target=worker).start()
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out == (
        "shutdown returned [b'item0', b'item1', b'item2', b'item3', b'item4'] 0\n"
    )


def test_a_coroutine_waiting_in_abatches_does_not_make_its_loop_idle():
    # Bug 7: one coroutine waiting in abatches() marked its whole event-loop
    # thread as blocked, so a sibling coroutine still working (sleeping, then
    # enqueuing and calling ashutdown) got Stopped.
    out = run_script(
        """
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=1000)
        d.start()

        def loop_thread():
            got = []

            async def consume():
                async for batch in d.abatches():
                    got.extend(batch.tolist())

            async def produce():
                threading.main_thread().join(10)
                passes = lambda: getattr(tempo._lifecycle, "_passes", 0)  # noqa: E731
                start = passes()
                while passes() < start + 3 and d._state_name() != "finished":
                    await asyncio.sleep(0.005)  # working: asleep, not waiting in tempo
                try:
                    d.enqueue(b"late")
                    await d.ashutdown(timeout=5)
                except tempo.Stopped:
                    print("Stopped", flush=True)

            async def main():
                await asyncio.gather(consume(), produce())
                print("loop:", got, d.stats().dropped, flush=True)

            asyncio.run(main())

        threading.Thread(target=loop_thread).start()
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out == "loop: [b'late'] 0\n"


def test_a_daemon_consumer_takes_the_last_payloads_at_exit():
    # Bug 8: with a running daemon consumer and no shutdown(), the process
    # exited and the consumer got 0 of 100 payloads; nothing was logged.
    out = run_script(
        """
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=1 << 16, max_batch_bytes=64)
        d.start()

        def consumer():
            for batch in d.batches():
                for item in batch:
                    print(bytes(item).decode(), flush=True)

        threading.Thread(target=consumer, daemon=True).start()
        for i in range(100):
            d.enqueue(b"%03d" % i)
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out.splitlines() == ["%03d" % i for i in range(100)]


def test_what_no_consumer_takes_within_the_bound_is_dropped_counted_and_logged_once():
    out = run_script(
        """
        import atexit
        import logging
        logging.basicConfig(format="%(levelname)s %(name)s %(message)s")
        tempo.set_exit_timeout(0.2)
        ds = [tempo.Dispatcher(interval=60, max_buffered_bytes=1000, max_batch_bytes=1)
              for _ in range(2)]
        stuck = threading.Event()

        def consumer():  # takes one batch, then never comes back
            with ds[0].get_batch():
                stuck.set()
                threading.Event().wait()

        for d in ds:
            d.start()
            for i in range(3):
                d.enqueue(b"%d" % i)
        threading.Thread(target=consumer, daemon=True).start()
        stuck.wait(5)
        after_tempo(lambda: print("dropped", [d.stats().dropped for d in ds], flush=True))
        """,
    )
    assert out.returncode == 0, out
    assert out.out == "dropped [2, 3]\n"
    assert out.err.splitlines() == [
        # One "tempo" under a format that shows the logger's name; the record
        # names each dispatcher and its count.
        "WARNING tempo tempo dropped 5 payloads at exit (dispatcher-1: 2, dispatcher-2: 3): "
        "consumers did not take them within 0.2 s (tempo.set_exit_timeout)"
    ]
    assert out.seconds < 10


def test_a_consumer_waiting_on_a_never_started_dispatcher_gets_its_payloads_at_exit():
    # shutdown() hands a never-started dispatcher's batches to its consumers;
    # so does the drain at exit when one waits. It dropped them, saying "no
    # thread was left to consume them" while a consumer was waiting.
    out = run_script(
        """
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=1000)
        got = []

        def consumer():
            for batch in d.batches():
                got.extend(batch.tolist())

        threading.Thread(target=consumer, daemon=True).start()
        while d._waiters()[0] != 1:
            time.sleep(0.001)
        d.enqueue(b"a")
        d.enqueue(b"b")
        after_tempo(lambda: print("after:", got, d.stats().dropped, flush=True))
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out == "after: [b'a', b'b'] 0\n"


def test_dropped_at_exit_is_counted_in_stats():
    out = run_script(
        """
        import atexit
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=1000)
        d.start()
        d.enqueue(b"a")
        d.enqueue(b"b")
        after_tempo(lambda: print("dropped", d.stats().dropped, d._state_name(), flush=True))
        """
    )
    assert out.returncode == 0, out
    assert out.out == "dropped 2 finished\n"
    assert out.err == (
        "tempo dropped 2 payloads at exit (dispatcher-1: 2): no thread was left to consume them\n"
    )


def test_registered_drains_run_first_with_the_shared_deadline():
    out = run_script(
        """
        import tempo._lifecycle
        tempo.set_exit_timeout(3)

        class Owner:
            def drain(self, deadline):
                left = deadline - time.monotonic()
                print("drain called", 2.5 < left <= 3, d._state_name(), flush=True)

        owner = Owner()
        tempo._lifecycle.register_exit_drain(owner.drain)
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=1000)
        d.start()
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out == "drain called True running\n"


def test_chained_stages_drain_in_order():
    # Two non-daemon stages: the first consumes d1 and feeds d2. Sealing d1
    # must not close d2 to the first stage's last payloads.
    out = run_script(
        """
        d1 = tempo.Dispatcher(interval=60, max_buffered_bytes=1000)
        d2 = tempo.Dispatcher(interval=60, max_buffered_bytes=1000)
        d1.start()
        d2.start()
        got = []

        def stage1():
            for batch in d1.batches():
                for item in batch:
                    d2.enqueue(bytes(item).upper())

        def stage2():
            for batch in d2.batches():
                got.extend(batch.tolist())
            print("stage2:", got, d1.stats().dropped, d2.stats().dropped, flush=True)

        threading.Thread(target=stage1).start()
        threading.Thread(target=stage2).start()
        d1.enqueue(b"a")
        d1.enqueue(b"b")
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out == "stage2: [b'A', b'B'] 0 0\n"


def test_a_stage_not_yet_woken_by_the_last_look_does_not_close_the_next_stage():
    # Two looks of the exit watcher come before the stages wake up to take
    # what the first look sealed (a loaded machine: 20 ms apart). A batch
    # still waiting for its consumer is not "fed again": closing d2 then made
    # stage1's last payload fail with ShuttingDown, and it was lost.
    out = run_script(
        """
        d1 = tempo.Dispatcher(interval=60, max_buffered_bytes=1000)
        d2 = tempo.Dispatcher(interval=60, max_buffered_bytes=1000)
        d1.start()
        d2.start()
        got = []

        def stage1():
            for batch in d1.batches():
                for item in batch:
                    d2.enqueue(bytes(item).upper())

        def stage2():
            for batch in d2.batches():
                got.extend(batch.tolist())
            print("stage2:", got, d1.stats().dropped, d2.stats().dropped, flush=True)

        threading.Thread(target=stage1).start()
        threading.Thread(target=stage2).start()
        while d1._waiters()[0] != 1 or d2._waiters()[0] != 1:
            time.sleep(0.001)
        d1.enqueue(b"a")
        d2.enqueue(b"x")
        # The watcher's two looks, done here so that the stages cannot take
        # the GIL (and their batches) in between. The main thread is never
        # counted as a consumer, so this is what the watcher sees at exit.
        sys.setswitchinterval(2.0)
        tempo._lifecycle._settle_idle_threads()
        tempo._lifecycle._settle_idle_threads()
        sys.setswitchinterval(0.005)
        print("d2:", d2._state_name(), flush=True)
        """
    )
    assert (out.returncode, out.err) == (0, "")
    if FREE_THREADED:
        # Without the GIL the switch interval cannot keep the stages from
        # running between the two looks: stage1 may forward "A" in between,
        # and then d2 is rightly closed (it still delivers everything). What
        # must never happen is the loss: "A" refused with ShuttingDown.
        assert out.out in ("d2: running\nstage2: [b'x', b'A'] 0 0\n",
                           "d2: shutting down\nstage2: [b'x', b'A'] 0 0\n"), out.out
    else:
        assert out.out == "d2: running\nstage2: [b'x', b'A'] 0 0\n"


def test_a_daemon_producer_feeding_an_idle_consumer_does_not_hold_the_exit():
    # The consumer is idle each time tempo looks, but a daemon keeps feeding
    # its dispatcher: tempo closes it to new payloads, the consumer gets every
    # accepted one, and the process ends.
    out = run_script(
        """
        d = tempo.Dispatcher(interval=0.01, max_buffered_bytes=1 << 16)
        d.start()
        got = []

        def producer():
            i = 0
            while True:
                try:
                    d.enqueue(b"%d" % i)
                    i += 1
                except tempo.ShuttingDown:
                    pass
                except tempo.Stopped:
                    return
                time.sleep(0.001)

        def consumer():
            for batch in d.batches():
                got.extend(batch.tolist())
            s = d.stats()
            print("consumer:", len(got) == s.enqueued, s.dropped, flush=True)

        threading.Thread(target=producer, daemon=True).start()
        threading.Thread(target=consumer).start()
        while d.stats().items < 10:
            time.sleep(0.001)
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out == "consumer: True 0\n"


def test_a_daemon_producer_sealing_every_payload_does_not_hold_the_exit():
    # Each payload is a batch of its own, so a batch has often just been
    # sealed for the idle consumer when tempo looks: being fed again since
    # tempo sealed is what closes the dispatcher, not "nothing waiting".
    out = run_script(
        """
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=1 << 16, max_batch_items=1)
        d.start()
        got = []

        def producer():
            while True:
                try:
                    d.enqueue(b"p", timeout=None)
                except tempo.ShuttingDown:
                    continue
                except tempo.Stopped:
                    return
                # Slower than the consumer, which is idle between payloads
                # (one always busy is working: Python would wait for it).
                time.sleep(0.0005)

        def consumer():
            for batch in d.batches():
                got.extend(batch.tolist())
            s = d.stats()
            print("consumer:", len(got) == s.enqueued, s.dropped, flush=True)

        threading.Thread(target=producer, daemon=True).start()
        threading.Thread(target=consumer).start()
        while d.stats().items < 10:
            time.sleep(0.001)
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out == "consumer: True 0\n"


@pytest.mark.parametrize("bad", [-1, -(10**400), float("-inf"), float("nan"), "5", None, True],
                         ids=repr)
def test_set_exit_timeout_refuses_bad_values(bad):
    # -(10**400) overflowed float() and was taken for inf.
    before = tempo.exit_timeout()
    with pytest.raises(TypeError if not isinstance(bad, (int, float)) or bad is True
                       else tempo.ConfigError):
        tempo.set_exit_timeout(bad)
    assert tempo.exit_timeout() == before


def test_set_exit_timeout_sets_the_bound():
    before = tempo.exit_timeout()
    assert before == 5.0
    try:
        tempo.set_exit_timeout(0)
        assert tempo.exit_timeout() == 0.0
        tempo.set_exit_timeout(10**400)
        assert tempo.exit_timeout() == float("inf")
    finally:
        tempo.set_exit_timeout(before)


@pytest.mark.parametrize("entered", [True, False])
def test_an_async_pipeline_whose_loop_has_ended_is_dropped_at_once_at_exit(entered):
    # Its tasks cannot run any more: the buffered payloads can never move.
    # The drain's two looks compared oldest_wait too, which grows while they
    # wait, so they never agreed: the exit took the whole bound (for ever
    # with math.inf; ~6 s for a pipeline never entered).
    out = run_script(
        f"""
        import logging, math
        logging.basicConfig(format="%(levelname)s %(message)s")
        tempo.set_exit_timeout(math.inf)

        async def sink(batch):
            pass

        p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=1 << 16, name="P")

        async def main():
            if {entered}:
                await p.__aenter__()
            for i in range(100):
                p.enqueue(b"x")

        asyncio.run(main())
        t0 = time.monotonic()
        after_tempo(lambda: print("dropped", p.stats().dropped, time.monotonic() - t0 < 2,
                                  flush=True))
        """
    )
    assert out.returncode == 0
    assert out.out.splitlines() == ["dropped 100 True"]
    assert out.err.splitlines() == [
        "WARNING tempo dropped 100 payloads at exit (P: 100): no thread was left to consume them"
    ]


def test_a_logging_handler_that_raises_does_not_abort_the_drain_at_exit():
    # The exit's reports were logged with plain logger calls: a handler that
    # raised ended the drain there, and the next pipeline was never drained.
    out = run_script(
        """
        import logging

        class Raising(logging.Handler):
            def emit(self, record):
                raise RuntimeError("handler down")

        logging.getLogger("tempo").addHandler(Raising())
        tempo.set_exit_timeout(0.2)
        got = []
        stuck = tempo.Pipeline(lambda b: time.sleep(3600), interval=60,
                               max_buffered_bytes=1 << 16, max_batch_items=1, name="stuck")
        stuck.enqueue(b"a")
        stuck.enqueue(b"b")
        while stuck._in_sink() == 0:
            time.sleep(0.001)
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=1 << 16, name="D")
        d.enqueue(b"x")
        after_tempo(lambda: print("stuck dropped", stuck.stats().dropped, "D",
                                  d._state_name(), d.stats().dropped, flush=True))
        """
    )
    assert out.returncode == 0
    assert out.out.splitlines() == ["stuck dropped 1 D finished 1"]
    assert [line for line in out.err.splitlines() if "handler" in line] == [
        "tempo: a logging handler raised RuntimeError: handler down (while logging: "
        "pipeline 'stuck' was not drained at exit: 1 payload dropped unprocessed, 1 still "
        "in the sink or on_failure (0 batches failed in all))",
        "tempo: a logging handler raised RuntimeError: handler down (while logging: "
        "tempo dropped 1 payload at exit (D: 1): no thread was left to consume them)",
    ]
