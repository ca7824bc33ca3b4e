"""Interpreter exit: tempo never keeps the interpreter from exiting by itself; idle
consumers are shut down gracefully, and what no consumer can take is dropped,
counted and reported once; an explicit shutdown delivers everything. Each case
runs in a subprocess. (The rules against the bugs of issue 8 are in
test_exit_policy.py.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

#: The whole subprocess (start-up included) must be done within this.
EXIT_LIMIT = 5.0

PRELUDE = """\
import asyncio
import sys
import threading
import tempo
"""


def run_child(body: str):
    """Run ``body`` in a fresh interpreter; return (seconds, returncode, out, err)."""
    code = PRELUDE + textwrap.dedent(body)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=EXIT_LIMIT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"the interpreter did not exit within {EXIT_LIMIT} s\n"
            f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}"
        )
    return time.monotonic() - t0, proc.returncode, proc.stdout, proc.stderr


DROPPED_NO_THREAD = "tempo dropped {} at exit ({}): no thread was left to consume them\n"


def test_buffered_payloads_without_a_consumer_do_not_delay_exit_and_are_reported():
    elapsed, rc, out, err = run_child(
        """
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=tempo.MiB, max_batch_bytes=4)
        d.start()
        d.enqueue(b"aaaa")          # sealed, handed out, never released
        held = d.get_batch(timeout=5)
        d.enqueue(b"bbbb")          # sealed, never handed out
        d.enqueue(b"cc")            # open, its interval a minute away
        print("done", flush=True)
        """
    )
    assert (rc, out, err) == (0, "done\n", DROPPED_NO_THREAD.format("2 payloads", "dispatcher-1: 2"))
    assert elapsed < EXIT_LIMIT


def test_many_dispatchers_in_every_state_exit_cleanly():
    elapsed, rc, out, err = run_child(
        """
        new = tempo.Dispatcher(interval=60, max_buffered_bytes=100)
        new.enqueue(b"never started")
        running = tempo.Dispatcher(interval=0.01, max_buffered_bytes=100)
        running.start()
        running.enqueue(b"x")
        stopped = tempo.Dispatcher(interval=60, max_buffered_bytes=100)
        stopped.start()
        stopped.stop()
        shutting = tempo.Dispatcher(interval=60, max_buffered_bytes=100)
        shutting.start()
        shutting.enqueue(b"y")
        try:
            shutting.shutdown(timeout=0.01)
        except TimeoutError:
            pass
        garbage = [tempo.Dispatcher(interval=60, max_buffered_bytes=100) for _ in range(5)]
        for g in garbage:
            g.start()
        del garbage
        print("done", flush=True)
        """
    )
    # "never started" and the running one's "x"; the timed-out shutdown
    # dropped "y" before the exit (counted there).
    assert (rc, out, err) == (
        0, "done\n", DROPPED_NO_THREAD.format("2 payloads", "dispatcher-1: 1, dispatcher-2: 1")
    )


IDLE_NON_DAEMON_THREADS = {
    "batches": """
        def consumer():
            for batch in d.batches():
                print("got", batch.tolist(), flush=True)
            print("consumer done", flush=True)
    """,
    "get_batch": """
        def consumer():
            print("got", d.get_batch().tolist(), flush=True)
            try:
                d.get_batch()
            except tempo.Stopped:
                print("consumer done", flush=True)
    """,
    "get_batch-timeout": """
        def consumer():
            print("got", d.get_batch(timeout=600).tolist(), flush=True)
            try:
                d.get_batch(timeout=600)
            except tempo.Stopped:
                print("consumer done", flush=True)
    """,
}


@pytest.mark.parametrize("kind", list(IDLE_NON_DAEMON_THREADS))
def test_a_consumer_waiting_for_a_batch_gets_the_rest_and_ends(kind):
    # Once the main thread has ended and the only non-daemon thread waits for
    # a batch, the dispatcher is shut down gracefully: the open batch goes to
    # the consumer, then its loop ends.
    body = "".join(
        textwrap.dedent(part)
        for part in (
            """
            d = tempo.Dispatcher(interval=60, max_buffered_bytes=100)
            d.start()
            """,
            IDLE_NON_DAEMON_THREADS[kind],
            """
            thread = threading.Thread(target=consumer, daemon=False)
            thread.start()
            d.enqueue(b"last")  # open: its interval is a minute away
            print("main done", flush=True)
            """,
        )
    )
    elapsed, rc, out, err = run_child(body)
    assert (rc, err) == (0, "")
    assert out == "main done\ngot [b'last']\nconsumer done\n"
    assert elapsed < EXIT_LIMIT


def test_an_uncaught_exception_with_a_blocked_consumer_exits_promptly():
    elapsed, rc, out, err = run_child(
        """
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=100)
        d.start()
        d.enqueue(b"lost")
        thread = threading.Thread(target=lambda: list(d.batches()), daemon=False)
        thread.start()
        raise RuntimeError("boom")
        """
    )
    assert rc == 1
    assert err.rstrip().splitlines()[-1] == "RuntimeError: boom"
    assert elapsed < EXIT_LIMIT


def test_explicit_shutdown_delivers_every_payload_before_exit():
    elapsed, rc, out, err = run_child(
        """
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=4096, max_batch_bytes=64)
        d.start()

        def consumer():
            for batch in d.batches():
                for item in batch:
                    print(bytes(item).decode())
                del item

        thread = threading.Thread(target=consumer)
        thread.start()
        for i in range(2000):
            d.enqueue(b"payload-%04d" % i, timeout=5)
        d.shutdown()
        thread.join()
        """
    )
    assert (rc, err) == (0, "")
    assert out.splitlines() == ["payload-%04d" % i for i in range(2000)]


def test_a_with_block_delivers_every_payload_before_exit():
    elapsed, rc, out, err = run_child(
        """
        def consumer(d):
            for batch in d.batches():
                print(*[bytes(x).decode() for x in batch.tolist()], sep="\\n")

        with tempo.Dispatcher(interval=60, max_buffered_bytes=1024) as d:
            thread = threading.Thread(target=consumer, args=(d,))
            thread.start()
            for i in range(100):
                d.enqueue(b"%03d" % i)
        thread.join()
        """
    )
    assert (rc, err) == (0, "")
    assert out.splitlines() == ["%03d" % i for i in range(100)]


def test_without_shutdown_the_waiting_consumer_still_gets_the_open_batch():
    # The main thread ends with a payload in the open batch: the consumer,
    # waiting for a batch, is handed it before its loop ends.
    elapsed, rc, out, err = run_child(
        """
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=100, max_batch_bytes=5)
        d.start()
        got = []
        taken = threading.Event()

        def consumer():
            for batch in d.batches():
                got.extend(batch.tolist())
                taken.set()
            print("consumer saw", got, flush=True)

        d.enqueue(b"first")  # sealed
        thread = threading.Thread(target=consumer)
        thread.start()
        assert taken.wait(5)
        d.enqueue(b"open")  # sealed at exit, handed to the consumer
        """
    )
    assert (rc, err) == (0, "")
    assert out == "consumer saw [b'first', b'open']\n"
    assert elapsed < EXIT_LIMIT
