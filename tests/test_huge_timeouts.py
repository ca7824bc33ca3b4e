"""Timeouts too large for the clock (issue 8, bug 3): any finite timeout >= 0 is
accepted, and one too large for the OS clock waits as ``None`` does. Before the
fix, ``get_batch(timeout=sys.maxsize)`` overflowed ``time_t`` in the condition
wait, which returned at once, so the caller spun a full core.

A spinning waiter is caught by its CPU time: a thread blocked for real uses
next to none while it waits."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

import tempo

from conftest import WAIT, wait_blocked_on_state, wait_until

HUGE = [sys.maxsize, 2**63, 10**400, 1e300, 1e18, float("inf")]
#: How long the waiter is watched, and the CPU it may use meanwhile. A spinning
#: waiter uses a good part of a core even on a loaded machine.
WATCH = 0.3
MAX_CPU = 0.03

needs_thread_clock = pytest.mark.skipif(
    not hasattr(time, "pthread_getcpuclockid"), reason="needs per-thread CPU clocks"
)


def cpu_seconds(thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def assert_waits_idle(thread) -> None:
    before = cpu_seconds(thread)
    time.sleep(WATCH)  # nothing to wait for: this measures a thread that must stay idle
    used = cpu_seconds(thread) - before
    assert used < MAX_CPU, f"the waiting thread used {used:.3f} s of CPU in {WATCH} s"


@needs_thread_clock
@pytest.mark.parametrize("timeout", HUGE, ids=repr)
def test_get_batch_with_a_huge_timeout_waits_without_spinning(make, spawn, timeout):
    d = make()
    d.start()
    consumer = spawn(d.get_batch, timeout=timeout)
    wait_until(lambda: d._waiters()[0] == 1, what="the consumer blocking")
    assert_waits_idle(consumer.thread)
    d.enqueue(b"x")
    d.flush(timeout=timeout)  # the flush's huge timeout is accepted too
    assert consumer.result().tolist() == [b"x"]


@needs_thread_clock
@pytest.mark.parametrize("call", ["enqueue", "flush", "shutdown"])
def test_state_waits_with_a_huge_timeout_wait_without_spinning(make, spawn, call):
    d = make(max_buffered_bytes=4)
    d.start()
    d.enqueue(b"full")
    if call == "enqueue":
        waiter = spawn(d.enqueue, b"more", timeout=sys.maxsize)
    else:
        waiter = spawn(getattr(d, call), timeout=sys.maxsize)
    wait_blocked_on_state(d)
    assert_waits_idle(waiter.thread)
    d._seal_now()  # (flush and shutdown sealed it already)
    with d.get_batch(timeout=WAIT) as batch:  # hands the batch out, then frees the room
        assert batch.tolist() == [b"full"]
    assert waiter.result() is None
    assert d.stats().dropped == 0


@pytest.mark.parametrize("timeout", HUGE, ids=repr)
def test_every_blocking_call_accepts_a_huge_timeout(make, timeout):
    d = make()
    d.start()
    d.enqueue(b"a", timeout=timeout)
    d._seal_now()
    assert d.get_batch(timeout=timeout).tolist() == [b"a"]
    d.flush(timeout=timeout)
    d.shutdown(timeout=timeout)


def test_asyncio_calls_accept_a_huge_timeout(make):
    d = make()
    d.start()

    async def main():
        d.enqueue(b"a")
        d._seal_now()
        batch = await d.aget_batch(timeout=10**400)
        await d.ashutdown(timeout=sys.maxsize)
        return batch.tolist()

    assert asyncio.run(main()) == [b"a"]


@pytest.mark.parametrize("timeout", [-1, -(10**400), -1e300, float("-inf"), float("nan")],
                         ids=repr)
def test_negative_and_nan_timeouts_are_still_refused(make, timeout):
    d = make()
    with pytest.raises(tempo.ConfigError):
        d.get_batch(timeout=timeout)
    with pytest.raises(tempo.ConfigError):
        d.enqueue(b"x", timeout=timeout)
    assert d.stats().enqueued == 0
