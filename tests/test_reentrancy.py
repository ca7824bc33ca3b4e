"""Python code that runs inside tempo's calls (garbage-collector finalizers,
signal handlers) can neither make a view show reused bytes nor lose a batch.

Creating a memoryview allocates, and on CPython <= 3.11 an allocation may run
the garbage collector, and so any ``__del__``, right there.
"""

from __future__ import annotations

import gc
import signal
import sysconfig
import threading

import pytest

import tempo
from conftest import WAIT, wait_until


def _collect_inside_next_allocation(finalizer):
    """Arrange for ``finalizer`` to run from the next GC-tracked allocation."""

    class Junk:
        def __del__(self):
            finalizer()

    gc.collect()
    gc.disable()
    junk = Junk()
    junk.self = junk  # cyclic garbage with a finalizer
    del junk
    gc.enable()
    gc.set_threshold(1)


#: The free-threaded collector runs only once the young objects outnumber a
#: quarter of the long-lived ones, so ``gc.set_threshold(1)`` does not make the
#: next allocation collect: the finalizer these tests plant would not run inside
#: the call under test. (The state it could break is under the dispatcher's
#: lock there; docs/internals.md.)
needs_gc_on_allocation = pytest.mark.skipif(
    bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    reason="the free-threaded collector does not run on the next allocation")


@pytest.fixture
def restore_gc():
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.enable()


@needs_gc_on_allocation
def test_a_batch_released_while_its_view_is_made_never_shows_reused_bytes(make, restore_gc):
    d = make(interval=60, max_buffered_bytes=4096, max_batch_bytes=4096)
    d.start()
    d.enqueue(b"A" * 4096)
    batch = d.get_batch(timeout=WAIT)
    refused = []

    def release_and_reuse():
        batch.release()
        try:
            d.enqueue(b"B" * 4096)
        except tempo.QueueFull:
            refused.append(True)

    _collect_inside_next_allocation(release_and_reuse)
    try:
        view = batch[0]
    except ValueError:
        pass  # released before the view existed: refused, as for any released batch
    else:
        assert bytes(view) == b"A" * 4096  # made first: it pins the bytes
        assert refused == [True]


@needs_gc_on_allocation
def test_tolist_copies_the_batch_even_if_released_meanwhile(make, restore_gc):
    d = make(interval=60, max_buffered_bytes=4096, max_batch_bytes=4096)
    d.start()
    d.enqueue(b"A" * 4096)
    batch = d.get_batch(timeout=WAIT)

    def release_and_reuse():
        batch.release()
        try:
            d.enqueue(b"B" * 4096)
        except tempo.QueueFull:
            pass

    _collect_inside_next_allocation(release_and_reuse)
    try:
        copied = batch.tolist()
    except ValueError:
        assert batch.released  # released before tolist() began: refused
    else:
        assert copied == [b"A" * 4096]  # never the reused bytes


@needs_gc_on_allocation
def test_indexing_the_same_batch_from_a_finalizer_gives_each_call_its_item(make, restore_gc):
    d = make(interval=60, max_buffered_bytes=1 << 20)
    d.start()
    d.enqueue(b"x")
    d.enqueue(b"y")
    d._seal_now()
    batch = d.get_batch(timeout=WAIT)
    inner = []
    _collect_inside_next_allocation(lambda: inner.append(bytes(batch[1])))
    assert bytes(batch[0]) == b"x"
    assert inner == [b"y"]


def test_a_signal_that_interrupts_the_woken_consumer_passes_the_wake_up_on(make, spawn):
    # A seal wakes one consumer. If that is the main thread and a signal
    # handler raises, another consumer must still get the batch.
    class Boom(Exception):
        pass

    def handler(signum, frame):
        raise Boom

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        for _ in range(5):
            d = make(interval=60, max_buffered_bytes=1 << 20, max_batch_bytes=4)
            d.start()
            got = []

            def consume():
                try:
                    got.append(d.get_batch(timeout=WAIT).tolist())
                except tempo.Stopped:
                    pass

            def act():
                wait_until(lambda: d._waiters()[0] >= 1, what="main waiting")
                spawn(consume)
                wait_until(lambda: d._waiters()[0] >= 2, what="both waiting")
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
                d.enqueue(b"full")  # reaches max_batch_bytes: sealed, one waiter signalled

            spawn(act)
            try:
                batch = d.get_batch(timeout=WAIT)
            except Boom:
                wait_until(lambda: got == [[b"full"]], what="the other consumer getting it")
            else:
                assert batch.tolist() == [b"full"]
            d.stop()
    finally:
        signal.signal(signal.SIGUSR1, previous)
