"""Ctrl-C: blocking calls in the main thread are interruptible by SIGINT
(``KeyboardInterrupt``), checked in a subprocess."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import interruptible_children

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")

#: How long the child may take to start and print "ready".
START_LIMIT = 20.0
#: How long after SIGINT the child must have exited.
INTERRUPT_LIMIT = 2.5
#: Head start for the child to enter the blocking call after printing "ready"
#: (the test is correct either way: a SIGINT before the call also interrupts).
SETTLE = 0.2

DROPPED_AT_EXIT = "tempo dropped {} at exit ({}): no thread was left to consume them"

PRELUDE = """\
import asyncio
import sys
import tempo

d = tempo.Dispatcher(interval=60, max_buffered_bytes=16)
d.start()

def ready():
    print("ready", flush=True)
"""

# A 2 MiB batch in hand: more than any socket or pipe buffer takes.
BIG_BATCH = """
        import os, socket
        big = tempo.Dispatcher(interval=60, max_buffered_bytes=4 * tempo.MiB)
        big.start()
        big.enqueue(b"x" * (2 * tempo.MiB))
        try:
            big.flush(timeout=0)
        except TimeoutError:
            pass
        batch = big.get_batch(timeout=5)
"""

BLOCKING_CALLS = {
    "get_batch": """
        ready()
        d.get_batch()
    """,
    "get_batch-timeout": """
        ready()
        d.get_batch(timeout=600)
    """,
    "batches": """
        ready()
        for batch in d.batches():
            pass
    """,
    "shutdown": """
        d.enqueue(b"a")
        ready()
        d.shutdown()
    """,
    "shutdown-timeout": """
        d.enqueue(b"a")
        ready()
        d.shutdown(timeout=600)
    """,
    "flush": """
        d.enqueue(b"a")
        ready()
        d.flush()
    """,
    "enqueue-bytes": """
        d.enqueue(b"x" * 16)
        ready()
        d.enqueue(b"y", timeout=None)
    """,
    "enqueue-bytearray-timeout": """
        d.enqueue(b"x" * 16)
        ready()
        d.enqueue(bytearray(b"y"), timeout=600)
    """,
    "enqueue_many": """
        ready()
        d.enqueue_many([b"x" * 16, b"z"], timeout=None)
    """,
    "aenqueue": """
        d.enqueue(b"x" * 16)
        async def main():
            ready()
            await d.aenqueue(b"y")
        asyncio.run(main())
    """,
    "aflush": """
        d.enqueue(b"a")
        async def main():
            ready()
            await d.aflush()
        asyncio.run(main())
    """,
    "sendall-blocking-socket": BIG_BATCH + """
        a, b = socket.socketpair()
        ready()
        batch.sendall(a)
    """,
    "sendall-socket-with-timeout": BIG_BATCH + """
        a, b = socket.socketpair()
        a.settimeout(600)
        ready()
        batch.sendall(a)
    """,
    "writeall-pipe": BIG_BATCH + """
        r, w = os.pipe()
        ready()
        batch.writeall(w)
    """,
    "aget_batch": """
        async def main():
            ready()
            await d.aget_batch()
        asyncio.run(main())
    """,
    "abatches": """
        async def main():
            ready()
            async for batch in d.abatches():
                pass
        asyncio.run(main())
    """,
    "ashutdown": """
        d.enqueue(b"a")
        async def main():
            ready()
            await d.ashutdown()
        asyncio.run(main())
    """,
}


class Proc:
    def __init__(self, body: str):
        code = PRELUDE + textwrap.dedent(body)
        with interruptible_children():
            self.popen = subprocess.Popen(
                [sys.executable, "-c", code],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

    def wait_ready(self):
        readable, _, _ = select.select([self.popen.stdout], [], [], START_LIMIT)
        if not readable:
            self.kill()
            pytest.fail(f"child did not print 'ready' within {START_LIMIT} s")
        line = self.popen.stdout.readline()
        if line != "ready\n":
            out, err = self.kill()
            pytest.fail(f"child did not get ready: {line!r}\n{err}")

    def interrupt(self):
        """SIGINT; return (seconds until exit, stdout, stderr)."""
        time.sleep(SETTLE)
        t0 = time.monotonic()
        self.popen.send_signal(signal.SIGINT)
        try:
            out, err = self.popen.communicate(timeout=INTERRUPT_LIMIT)
        except subprocess.TimeoutExpired:
            out, err = self.kill()
            pytest.fail(
                f"child still running {INTERRUPT_LIMIT} s after SIGINT\n"
                f"stdout: {out}\nstderr: {err}"
            )
        return time.monotonic() - t0, out, err

    def kill(self):
        self.popen.kill()
        return self.popen.communicate()


@pytest.mark.parametrize("call", list(BLOCKING_CALLS))
def test_ctrl_c_interrupts_a_blocking_call(call):
    proc = Proc(BLOCKING_CALLS[call])
    proc.wait_ready()
    elapsed, out, err = proc.interrupt()
    assert elapsed < INTERRUPT_LIMIT
    assert "Traceback (most recent call last)" in err, err
    # What is left buffered is dropped at exit and reported after the traceback.
    lines = err.rstrip().splitlines()
    if lines[-1].startswith("tempo dropped "):
        assert lines.pop() == DROPPED_AT_EXIT.format("1 payload", "dispatcher-1: 1"), err
    assert lines[-1] == "KeyboardInterrupt", err
    # An uncaught KeyboardInterrupt ends the process by SIGINT.
    assert proc.popen.returncode == -signal.SIGINT, (proc.popen.returncode, err)
    assert out == ""


def test_children_are_interruptible_when_the_suite_runs_with_sigint_ignored():
    """Found running the suite as a background job (SIGINT ignored, which
    children inherit): the Ctrl-C tests' children never saw the signal, and
    one CLI test waited for ever."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = Proc(BLOCKING_CALLS[next(iter(BLOCKING_CALLS))])
    finally:
        signal.signal(signal.SIGINT, old)
    proc.wait_ready()
    elapsed, out, err = proc.interrupt()
    assert elapsed < INTERRUPT_LIMIT
    assert proc.popen.returncode == -signal.SIGINT, (proc.popen.returncode, err)


def test_an_interrupted_wait_loses_nothing():
    proc = Proc(
        """
        d.enqueue(b"x" * 16)
        ready()
        try:
            d.enqueue(b"y", timeout=None)
        except KeyboardInterrupt:
            print("enqueue interrupted; enqueued =", d.stats().enqueued, flush=True)
        else:
            print("enqueue returned", flush=True)
        # The dispatcher still works: the full batch is there, then room again.
        try:
            d.flush(timeout=0)
        except TimeoutError:
            pass
        with d.get_batch(timeout=5) as batch:
            print(batch.tolist(), flush=True)
        d.enqueue(b"y")
        print(d.stats().enqueued, d.stats().buffered_bytes, flush=True)
        """
    )
    proc.wait_ready()
    elapsed, out, err = proc.interrupt()
    assert elapsed < INTERRUPT_LIMIT
    assert proc.popen.returncode == 0, err
    assert err == DROPPED_AT_EXIT.format("1 payload", "dispatcher-1: 1") + "\n"  # the last "y": no consumer at exit
    assert out.splitlines() == [
        "enqueue interrupted; enqueued = 1",
        str([b"x" * 16]),
        "2 1",
    ]
