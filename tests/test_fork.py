"""After ``os.fork()``: the child's inherited dispatcher is a fresh, empty one with
the same config (running if the parent's was); the parent's buffered payloads
stay the parent's, and neither process's writes show through the other's views."""

from __future__ import annotations

import asyncio
import dataclasses
import mmap
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback

import pytest

import tempo
from conftest import until_async_blocked, wait_until

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

WAIT = 5.0
CHILD_LIMIT = 20.0


class Child:
    """``fn(child)`` run in a forked child; its return value (or traceback) comes
    back through a pipe. The child may call ``child.ready()`` and
    ``child.wait_go()`` to hand-shake with the parent."""

    def __init__(self, fn):
        result_r, result_w = os.pipe()
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            status = 3
            try:
                os.close(result_r)
                os.close(ready_r)
                os.close(go_w)
                self._ready_w, self._go_r = ready_w, go_r
                try:
                    outcome = ("ok", fn(self))
                except BaseException:  # noqa: BLE001 - reported to the parent
                    outcome = ("error", traceback.format_exc())
                data = pickle.dumps(outcome)
                view = memoryview(data)
                while view:
                    view = view[os.write(result_w, view):]
                status = 0
            finally:
                os._exit(status)
        os.close(result_w)
        os.close(ready_w)
        os.close(go_r)
        self.pid = pid
        self._result_r, self._ready_r, self._go_w = result_r, ready_r, go_w
        self._deadline = time.monotonic() + CHILD_LIMIT

    # -- in the child --

    def ready(self):
        os.write(self._ready_w, b"r")

    def wait_go(self):
        assert os.read(self._go_r, 1) == b"g"

    # -- in the parent --

    def _read_within(self, fd, n=None):
        chunks = []
        while True:
            left = self._deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(left, 0))
            if not readable:
                self._kill()
                pytest.fail(f"forked child did not answer within {CHILD_LIMIT} s")
            chunk = os.read(fd, 65536 if n is None else n)
            if not chunk or n is not None:
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)

    def _kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        self._close()

    def _close(self):
        for fd in (self._result_r, self._ready_r, self._go_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def wait_ready(self):
        assert self._read_within(self._ready_r, 1) == b"r", "child died before ready()"

    def go(self):
        os.write(self._go_w, b"g")

    def result(self):
        data = self._read_within(self._result_r)
        _, status = os.waitpid(self.pid, 0)
        self._close()
        assert data, f"child died without reporting (wait status {status})"
        kind, value = pickle.loads(data)
        if kind == "error":
            pytest.fail(f"in the forked child:\n{value}")
        assert os.waitstatus_to_exitcode(status) == 0
        return value


def in_child(fn):
    return Child(lambda child: fn()).result()


def zero_stats(max_buffered_bytes):
    return tempo.Stats(0, 0, 0, 0, 0, 0, 0, 0, max_buffered_bytes, 0, max_items(max_buffered_bytes),
                       0, 0, 0.0)


def max_items(max_buffered_bytes):
    return tempo.Dispatcher(interval=1, max_buffered_bytes=max_buffered_bytes)._max_items


def take(d):
    """Seal the open batch and take it (a consumer thread plus ``flush``)."""
    box = {}

    def consume():
        box["batch"] = d.get_batch(timeout=WAIT)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    d.flush(timeout=WAIT)
    consumer.join(WAIT)
    return box["batch"]


def take_list(d):
    with take(d) as batch:
        return batch.tolist()


# --- the child's dispatcher -------------------------------------------------------------


def test_child_gets_an_empty_running_dispatcher_with_the_same_config(make):
    d = make(interval=60, max_buffered_bytes=100, max_batch_bytes=10)
    d.start()
    d.enqueue(b"S" * 10)  # sealed (reached max_batch_bytes), not handed out
    d.enqueue(b"open")
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"F" * 90)
    with pytest.raises(tempo.PayloadTooLarge):
        d.enqueue(b"L" * 101)
    parent_stats = d.stats()
    assert parent_stats.buffered_bytes == 14

    def child():
        out = {"stats": d.stats(), "config": d.config}
        t0 = time.monotonic()
        try:
            d.get_batch(timeout=0.1)
            out["get_batch"] = "returned a batch"
        except TimeoutError:
            out["get_batch"] = "timeout"
        out["get_batch_took"] = time.monotonic() - t0
        # The whole budget is the child's: the parent's 14 bytes are not counted.
        d.enqueue(b"c" * 10)  # sealed at max_batch_bytes
        d.enqueue(b"hild")
        d.enqueue(b"x" * 86)  # seals [hild], then is sealed alone
        out["batches"] = []
        for _ in range(3):
            with d.get_batch(timeout=WAIT) as batch:
                out["batches"].append(batch.tolist())
        out["after"] = d.stats()
        return out

    out = in_child(child)
    assert out["stats"] == zero_stats(100)
    assert out["config"] == d.config == tempo.Config(
        interval=60.0, max_batch_bytes=10, max_buffered_bytes=100
    )
    assert out["get_batch"] == "timeout"
    assert out["get_batch_took"] < WAIT
    assert out["batches"] == [[b"c" * 10], [b"hild"], [b"x" * 86]]
    assert out["after"] == tempo.Stats(3, 100, 0, 0, 3, 3, 0, 0, 100, 0, max_items(100), 0, 0, 0.0)
    # The parent is unaffected by what the child did.
    # (Only the age of the oldest waiting payload moved on meanwhile.)
    after = d.stats()
    assert after.oldest_wait >= parent_stats.oldest_wait > 0.0
    assert dataclasses.replace(after, oldest_wait=0.0) == dataclasses.replace(
        parent_stats, oldest_wait=0.0
    )
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"S" * 10]
    assert take_list(d) == [b"open"]
    with pytest.raises(TimeoutError):
        d.get_batch(timeout=0)


def test_child_dispatcher_runs_its_own_interval(make):
    d = make(interval=0.05)
    d.start()
    d.enqueue(b"parent")

    def child():
        d.enqueue(b"child")
        with d.get_batch(timeout=WAIT) as batch:  # sealed by the child's driver
            return batch.tolist()

    assert in_child(child) == [b"child"]
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"parent"]


@pytest.mark.parametrize("how", ["stop", "shutdown"])
def test_a_finished_dispatcher_stays_finished_in_the_child(make, drain, how):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    if how == "stop":
        d.stop()
    else:
        assert drain(d) == [[b"a"]]

    def child():
        out = {}
        for name, call in [
            ("enqueue", lambda: d.enqueue(b"x")),
            ("get_batch", lambda: d.get_batch(timeout=WAIT)),
            ("start", d.start),
            ("flush", lambda: d.flush(timeout=WAIT)),
        ]:
            try:
                call()
                out[name] = "returned"
            except tempo.Stopped:
                out[name] = "Stopped"
        d.shutdown(timeout=WAIT)  # returns at once on a finished dispatcher
        out["stats"] = d.stats()
        return out

    out = in_child(child)
    assert out == {
        "enqueue": "Stopped",
        "get_batch": "Stopped",
        "start": "Stopped",
        "flush": "Stopped",
        "stats": zero_stats(tempo.MiB),
    }


def test_a_never_started_dispatcher_is_new_in_the_child(make):
    d = make(interval=60)
    d.enqueue(b"parent")

    def child():
        out = {"stats": d.stats()}
        d.enqueue(b"child")
        with pytest.raises(TimeoutError):
            d.flush(timeout=0)
        try:  # not started: nothing is handed out
            d.get_batch(timeout=0.1)
            out["before_start"] = "batch"
        except TimeoutError:
            out["before_start"] = "timeout"
        d.start()
        with d.get_batch(timeout=WAIT) as batch:
            out["after_start"] = batch.tolist()
        return out

    out = in_child(child)
    assert out == {
        "stats": zero_stats(tempo.MiB),
        "before_start": "timeout",
        "after_start": [b"child"],
    }
    d.start()
    assert take_list(d) == [b"parent"]


def test_a_consumer_blocked_in_the_parent_does_not_hang_the_child(make, spawn):
    d = make(interval=60)
    d.start()
    parked = spawn(d.get_batch, timeout=WAIT * 2)
    wait_until(lambda: d._waiters()[0] == 1, what="the consumer blocking")

    def child():
        d.enqueue(b"child")
        return take_list(d)

    assert in_child(child) == [b"child"]
    d.enqueue(b"parent")
    d.flush(timeout=WAIT)
    with parked.result() as batch:
        assert batch.tolist() == [b"parent"]


def test_an_event_loop_waiting_in_the_parent_and_asyncio_in_the_child(make):
    d = make(interval=60, max_batch_bytes=1)
    d.start()
    result = {}
    waiting = threading.Event()

    async def parent_consumer():
        task = asyncio.create_task(d.aget_batch(timeout=WAIT * 2))
        await until_async_blocked(d)
        waiting.set()
        with await task as batch:
            return batch.tolist()

    def loop_thread():
        result["parent"] = asyncio.run(parent_consumer())

    thread = threading.Thread(target=loop_thread, daemon=True)
    thread.start()
    assert waiting.wait(WAIT)

    def child():
        async def main():
            task = asyncio.create_task(d.aget_batch(timeout=WAIT))
            await until_async_blocked(d)
            d.enqueue(b"c")
            with await task as batch:
                return batch.tolist()

        return asyncio.run(main())

    assert in_child(child) == [b"c"]
    d.enqueue(b"p")
    thread.join(WAIT)
    assert result["parent"] == [b"p"]


# --- shared arena memory ----------------------------------------------------------------------

PATTERN = bytes(range(256)) * 16  # 4 KiB


def test_child_writes_do_not_reach_the_parents_batches(make):
    d = make(interval=60, max_buffered_bytes=16 * tempo.KiB)
    d.start()
    d.enqueue(PATTERN)
    held = take(d)  # handed out, held across the fork
    view = held[0]
    piece = view[100:200]
    d.enqueue(PATTERN[::-1])
    with pytest.raises(TimeoutError):
        d.flush(timeout=0)  # sealed, not handed out
    d.enqueue(b"open")

    def child():
        # Cycle a lot of other bytes through the child's dispatcher, wrapping
        # its ring many times over.
        filler = b"\xee" * 3000
        for _round in range(200):
            for _ in range(4):
                d.enqueue(filler)
            with take(d) as batch:
                assert batch.tolist() == [filler] * 4
        assert bytes(view) == PATTERN and bytes(piece) == PATTERN[100:200]
        return d.stats().enqueued_bytes

    assert in_child(child) == 200 * 4 * 3000
    assert bytes(view) == PATTERN
    assert bytes(piece) == PATTERN[100:200]
    assert held.tolist() == [PATTERN]
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [PATTERN[::-1]]
    assert take_list(d) == [b"open"]


def test_a_view_held_by_the_child_keeps_its_bytes_while_the_parent_reuses_the_space(make):
    d = make(interval=60, max_buffered_bytes=8 * tempo.KiB)
    d.start()
    d.enqueue(PATTERN)
    d.enqueue(b"second")
    batch = take(d)
    view = batch[0]
    piece = view[4000:]

    def child(child):
        child.ready()
        child.wait_go()  # the parent has overwritten the shared space by now
        out = {
            "view": bytes(view),
            "piece": bytes(piece),
            "tolist": batch.tolist(),
        }
        batch.release()
        out["stats"] = d.stats()  # the inherited batch is not the child's to count
        return out

    proc = Child(child)
    proc.wait_ready()
    # The parent releases its batch and reuses every byte of the shared arena.
    view = piece = None  # the parent's views die (the child has its own)
    batch.release()
    assert d.stats().buffered_bytes == 0
    filler = bytes([0x5A]) * 2048
    for _ in range(16):  # 32 KiB through an 8 KiB ring
        for _ in range(4):
            d.enqueue(filler)
        assert take_list(d) == [filler] * 4
    proc.go()
    out = proc.result()
    assert out["view"] == PATTERN
    assert out["piece"] == PATTERN[4000:]
    assert out["tolist"] == [PATTERN, b"second"]
    assert out["stats"] == zero_stats(8 * tempo.KiB)


def test_a_batch_held_by_the_child_across_the_rings_end_keeps_all_its_bytes(make):
    # The arena is one page; the ring's head is moved to 1000 bytes before its
    # end, so the held batch's items run across the end: A before it, B
    # straddling it, C after it (at the ring's start).
    size = mmap.PAGESIZE
    d = make(interval=60, max_buffered_bytes=size)
    d.start()
    d.enqueue(b"z" * (size - 1000))
    assert take_list(d) == [b"z" * (size - 1000)]
    items = [b"A" * 500, b"B" * 1000, b"C" * 500]
    for item in items:
        d.enqueue(item)
    batch = take(d)
    views = list(batch)
    assert batch.tolist() == items

    def child(child):
        child.ready()
        child.wait_go()
        return {
            "views": [bytes(v) for v in views],
            "items": [bytes(v) for v in batch],
            "tolist": batch.tolist(),
        }

    proc = Child(child)
    proc.wait_ready()
    views = None  # the parent's views die (the child has its own)
    batch.release()
    for _ in range(4):  # the parent reuses the whole ring
        d.enqueue(b"\x5a" * (size // 2))
        assert take_list(d) == [b"\x5a" * (size // 2)]
    proc.go()
    assert proc.result() == {"views": items, "items": items, "tolist": items}


# --- batches held at the moment of fork ------------------------------------------------------


class LateChildReset:
    """Holds a forked child's after-fork work for tempo's dispatchers until the
    parent says go, as a scheduler may: the parent runs ahead and reuses its
    arena before the child has done anything. The gate opens on ``go()`` (or
    when the parent closes it, so a failing parent never strands the child)."""

    def __init__(self, monkeypatch):
        self._r, self._w = os.pipe()
        original = tempo.Dispatcher._reset_after_fork
        gate = self

        def late_reset(dispatcher, running):
            if gate._r is not None:
                os.read(gate._r, 1)
                os.close(gate._r)
                gate._r = None
            return original(dispatcher, running)

        monkeypatch.setattr(tempo.Dispatcher, "_reset_after_fork", late_reset)

    def go(self):
        if self._w is not None:
            os.write(self._w, b"g")
            self.close()

    def close(self):
        for name in ("_r", "_w"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


@pytest.fixture
def late_child_reset(monkeypatch):
    gate = LateChildReset(monkeypatch)
    yield gate
    gate.close()


def hold_across_fork(d, items, *, head_before_end=None):
    """Put ``items`` in one batch and take it; with ``head_before_end``, the
    batch starts that many bytes before the ring's end (so it runs across)."""
    if head_before_end is not None:
        size = d.config.max_buffered_bytes
        d.enqueue(b"z" * (size - head_before_end))
        assert take_list(d) == [b"z" * (size - head_before_end)]
    for item in items:
        d.enqueue(item)
    return take(d)


def churn(d, rounds):
    """Release nothing of the caller's, but push ``rounds`` times the whole
    arena through ``d`` (in four payloads per batch), checking what comes out."""
    size = d.config.max_buffered_bytes
    chunk = size // 4
    for round_ in range(rounds):
        filler = bytes([round_ & 0xFF]) * chunk
        for _ in range(4):
            d.enqueue(filler)
        assert take_list(d) == [filler] * 4


def test_batches_held_in_the_parent_at_fork_keep_their_bytes_in_the_child_whatever_the_parent_does(
    make, late_child_reset
):
    # Two dispatchers (each is snapshotted on its own); in the first the held
    # batch runs across the ring's end. Held: whole batches, item views,
    # slices of views, and a view pinned after its batch was released.
    size = 16 * mmap.PAGESIZE
    d1 = make(interval=60, max_buffered_bytes=size)
    d2 = make(interval=60, max_buffered_bytes=size)
    d1.start()
    d2.start()
    items1 = [bytes([65 + i]) * 1500 + PATTERN[: 37 * i] for i in range(6)]
    items2 = [PATTERN, PATTERN[::-1], b""]
    b1 = hold_across_fork(d1, items1, head_before_end=4000)
    b2 = hold_across_fork(d2, items2)
    pinned_batch = hold_across_fork(d2, [b"pinned" * 500])
    held = {
        "b1": b1,
        "b2": b2,
        "views1": list(b1),
        "pieces1": [v[7:-7] for v in b1],
        "piece2": b2[1][100:3000],
        "pinned": pinned_batch[0],
    }
    pinned_batch.release()  # its view pins it
    del b1, b2, pinned_batch

    def child():
        return {
            "tolist1": held["b1"].tolist(),
            "tolist2": held["b2"].tolist(),
            "views1": [bytes(v) for v in held["views1"]],
            "pieces1": [bytes(v) for v in held["pieces1"]],
            "piece2": bytes(held["piece2"]),
            "pinned": bytes(held["pinned"]),
            "stats": (d1.stats(), d2.stats()),
        }

    proc = Child(lambda _: child())
    try:
        # The parent lets go of everything and wraps both arenas around
        # several times before the child's after-fork work begins.
        held.clear()
        assert d1.stats().buffered_bytes == d2.stats().buffered_bytes == 0
        churn(d1, 6)
        churn(d2, 6)
    finally:
        late_child_reset.go()
    out = proc.result()
    assert out["tolist1"] == out["views1"] == items1
    assert out["pieces1"] == [item[7:-7] for item in items1]
    assert out["tolist2"] == items2
    assert out["piece2"] == PATTERN[::-1][100:3000]
    assert out["pinned"] == b"pinned" * 500
    assert out["stats"] == (zero_stats(size), zero_stats(size))


def test_a_batch_held_in_the_parent_keeps_its_bytes_whatever_the_child_does(make):
    size = 8 * mmap.PAGESIZE
    d = make(interval=60, max_buffered_bytes=size)
    d.start()
    items = [PATTERN, b"middle", PATTERN[::-1]]
    batch = hold_across_fork(d, items, head_before_end=5000)
    views = list(batch)
    piece = views[2][1:-1]

    def child(child):
        # The child lets go of its copy of everything, then wraps its arena
        # around many times; the parent looks meanwhile and after.
        del child_held[:]
        churn(d, 40)
        child.ready()
        child.wait_go()
        churn(d, 40)
        return d.stats().enqueued

    child_held = [batch, views, piece]
    proc = Child(child)
    del child_held[:]
    proc.wait_ready()
    assert [bytes(v) for v in views] == items
    proc.go()
    assert proc.result() == 80 * 4
    assert [bytes(v) for v in views] == batch.tolist() == items
    assert bytes(piece) == PATTERN[::-1][1:-1]
    batch.release()
    assert [bytes(v) for v in views] == items


def test_nothing_is_handed_out_between_the_fork_snapshot_and_the_fork(make, spawn):
    # The before-fork hook snapshots the held bytes; a batch handed out after
    # it would reach the child with no copy of its bytes. So hand-outs wait
    # until the parent's after-fork hook, which wakes the waiting consumers.
    d = make(interval=60)
    d.start()
    d.enqueue(b"first")
    held = take(d)
    d.enqueue(b"second")
    d._seal_now()
    d._before_fork()
    try:
        with pytest.raises(TimeoutError):
            d.get_batch(timeout=0)
        waiting = spawn(d.get_batch, timeout=WAIT)
        wait_until(lambda: d._waiters()[0] == 1, what="the consumer blocking")
        held.release()  # releasing stays allowed
    finally:
        d._after_fork_in_parent()
    with waiting.result() as batch:
        assert batch.tolist() == [b"second"]
    assert d.stats().buffered_bytes == 0


def _interrupt_once_in_after_fork_hook():
    """A trace function raising ``KeyboardInterrupt`` (as a signal handler
    may) once, in tempo's after-fork hook in the parent, just before the
    first dispatcher's own hook runs."""
    import linecache

    from tempo import _lifecycle

    path = _lifecycle.__file__
    calls = ("dispatcher._after_fork_in_parent()", "hook(dispatcher)")
    armed, fired = [], []

    def local(frame, event, arg):
        if event == "line" and armed and not fired:
            line = linecache.getline(path, frame.f_lineno).strip()
            if line in calls:
                fired.append(True)
                raise KeyboardInterrupt
        return local

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != path:
            return None
        if frame.f_code.co_name == "_after_fork_in_parent":
            armed.append(True)
        return local

    return tracer, fired


def test_an_interrupt_in_the_after_fork_hook_leaves_no_dispatcher_blocked(make):
    # A signal handler may raise anywhere in the hooks; every dispatcher must
    # still be passed, the interrupted one too (the after-fork hook lifts the
    # hand-out block the before-fork hook set), and the interrupt is raised.
    ds = [make(interval=60) for _ in range(3)]
    for d in ds:
        d.start()
    tracer, fired = _interrupt_once_in_after_fork_hook()
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda info: unraisable.append(info.exc_type)
    sys.settrace(tracer)
    try:
        assert in_child(lambda: "forked") == "forked"
    finally:
        sys.settrace(None)
        sys.unraisablehook = old_hook
    assert fired == [True]
    assert unraisable == [KeyboardInterrupt]
    for i, d in enumerate(ds):
        d.enqueue(b"after %d" % i)
        d._seal_now()
        with d.get_batch(timeout=WAIT) as batch:
            assert batch.tolist() == [b"after %d" % i]


class ForkInFlight:
    """Another thread's ``os.fork()`` under way: its before-fork hook ran,
    its after-fork hook runs on ``finish()`` (tempo's own hooks, as
    ``os.fork()`` runs them in the thread that forks)."""

    def __init__(self):
        from tempo import _lifecycle

        self._entered = threading.Event()
        self._go = threading.Event()

        def fork_hooks():
            _lifecycle._before_fork()
            self._entered.set()
            self._go.wait(WAIT)
            _lifecycle._after_fork_in_parent()

        self._thread = threading.Thread(target=fork_hooks, daemon=True)
        self._thread.start()
        assert self._entered.wait(WAIT)

    def finish(self):
        self._go.set()
        self._thread.join(WAIT)
        assert not self._thread.is_alive()


class InterruptInForkHook:
    """Raise ``KeyboardInterrupt`` once, as a signal handler may between any
    two bytecodes, in tempo's fork hook ``hook`` (``_before_fork`` or
    ``_after_fork_in_parent``): on its very first line, or on the first line
    tempo's hooks run once the first dispatcher's own hook has returned."""

    def __init__(self, monkeypatch, hook, where):
        from tempo import _lifecycle

        self.fired = []
        armed = []
        path = _lifecycle.__file__
        if where == "after the first dispatcher":
            original = getattr(tempo.Dispatcher, hook)

            def wrapped(d):
                result = original(d)
                armed.append(True)
                return result

            monkeypatch.setattr(tempo.Dispatcher, hook, wrapped)

        def local(frame, event, arg):
            if event == "line" and not self.fired and (
                    armed if where == "after the first dispatcher"
                    else frame.f_code.co_name == hook):
                self.fired.append(frame.f_code.co_name)
                raise KeyboardInterrupt
            return local

        def tracer(frame, event, arg):
            return local if frame.f_code.co_filename == path else None

        self._tracer = tracer
        self._hook = getattr(_lifecycle, hook)

    def run(self):
        """Run the hook, traced; the interrupt reaches the caller."""
        sys.settrace(self._tracer)
        try:
            with pytest.raises(KeyboardInterrupt):
                self._hook()
        finally:
            sys.settrace(None)
        assert len(self.fired) == 1


def assert_hands_out_nothing(ds):
    for d in ds:
        with pytest.raises(TimeoutError):
            d.get_batch(timeout=0)


def assert_hands_out(ds):
    for i, d in enumerate(ds):
        with d.get_batch(timeout=WAIT) as batch:
            assert batch.tolist() == [b"sealed %d" % i]


def sealed_dispatchers(make, n):
    ds = [make(interval=60) for _ in range(n)]
    for i, d in enumerate(ds):
        d.start()
        d.enqueue(b"sealed %d" % i)
        d._seal_now()
    return ds


def interrupted_once_after(hook: str):
    """A started dispatcher holding one sealed batch whose fork hook ``hook``
    raises KeyboardInterrupt once, right after it ran (the interrupt tempo
    cannot tell from one before it); and the list that records it fired."""
    fired: list[bool] = []

    def run_then_interrupt(self):
        getattr(tempo.Dispatcher, hook)(self)
        if not fired:
            fired.append(True)
            raise KeyboardInterrupt

    d = type("InterruptedAfterItsHook", (tempo.Dispatcher,), {hook: run_then_interrupt})(
        interval=60, max_buffered_bytes=tempo.MiB)
    d.start()
    d.enqueue(b"sealed 0")
    d._seal_now()
    return d, fired


def test_a_retried_after_fork_hook_does_not_end_another_threads_fork_early(make):
    # Two forks under way, from two threads. An interrupt just after a
    # dispatcher's own after-fork hook ran makes tempo run it once more (it
    # cannot know it ran); that must not lift the hand-out block of the other
    # thread's fork, which has not happened yet: a batch handed out now would
    # reach its child with no copy of its bytes.
    from tempo import _lifecycle

    d, fired = interrupted_once_after("_after_fork_in_parent")
    try:
        other = ForkInFlight()
        try:
            _lifecycle._before_fork()
            with pytest.raises(KeyboardInterrupt):
                _lifecycle._after_fork_in_parent()
            assert fired == [True]
            assert_hands_out_nothing([d])
        finally:
            other.finish()
        assert_hands_out([d])
    finally:
        d.stop()


@pytest.mark.parametrize("where", ["first line", "after the first dispatcher"])
def test_an_interrupted_before_fork_hook_ends_no_other_threads_fork_early(make, monkeypatch, where):
    # Whatever dispatchers an interrupted before-fork hook reached, the
    # after-fork hook of the same fork ends exactly those: not the block
    # another thread's fork, still under way, set on the others.
    from tempo import _lifecycle

    ds = sealed_dispatchers(make, 3)
    other = ForkInFlight()
    try:
        InterruptInForkHook(monkeypatch, "_before_fork", where).run()
        monkeypatch.undo()
        _lifecycle._after_fork_in_parent()
        assert_hands_out_nothing(ds)
    finally:
        other.finish()
    assert_hands_out(ds)


@pytest.mark.parametrize("where", ["first line", "after the first dispatcher"])
def test_an_interrupt_anywhere_in_the_before_fork_hook_leaves_no_dispatcher_blocked(make, monkeypatch, where):
    from tempo import _lifecycle

    ds = sealed_dispatchers(make, 3)
    InterruptInForkHook(monkeypatch, "_before_fork", where).run()
    monkeypatch.undo()
    _lifecycle._after_fork_in_parent()
    assert_hands_out(ds)


def test_an_interrupt_between_dispatchers_in_the_after_fork_hook_leaves_none_blocked(make, monkeypatch):
    # The interrupt lands outside any dispatcher's own hook, once the first
    # was passed: the others still get theirs.
    from tempo import _lifecycle

    ds = sealed_dispatchers(make, 3)
    _lifecycle._before_fork()
    InterruptInForkHook(monkeypatch, "_after_fork_in_parent", "after the first dispatcher").run()
    monkeypatch.undo()
    assert_hands_out(ds)


def test_a_before_fork_hook_run_again_after_an_interrupt_counts_its_fork_once(make):
    # An interrupt just after a dispatcher's own before-fork hook ran makes
    # tempo run it once more; the one after-fork hook of that fork must still
    # end it (a fork counted twice would hand nothing out for ever).
    from tempo import _lifecycle

    d, fired = interrupted_once_after("_before_fork")
    try:
        with pytest.raises(KeyboardInterrupt):
            _lifecycle._before_fork()
        assert fired == [True]
        assert_hands_out_nothing([d])
        _lifecycle._after_fork_in_parent()
        assert_hands_out([d])
    finally:
        d.stop()


def test_an_interrupt_as_the_after_fork_hook_begins_leaves_no_dispatcher_blocked(make):
    # A signal handler runs at the first bytecode of a Python function too
    # (its entry checks for pending signals): an interrupt there, before
    # tempo's loop over the dispatchers is entered, must not leave every
    # dispatcher handing nothing out until this thread forks again.
    from tempo import _lifecycle

    ds = sealed_dispatchers(make, 3)
    hook = _lifecycle._after_fork_in_parent.__code__
    fired = []

    def local(frame, event, arg):
        if event == "line" and not fired:
            fired.append(frame.f_lineno)
            raise KeyboardInterrupt
        return local

    assert fork_traced(lambda frame: frame.f_code is hook, local) == [KeyboardInterrupt]
    assert len(fired) == 1
    assert_hands_out(ds)


def fork_traced(where, local):
    """``os.fork()`` with ``local`` tracing the parent's frames ``where``
    says; the exceptions its fork hooks raised (reported, not raised)."""
    parent = os.getpid()

    def tracer(frame, event, arg):
        return local if os.getpid() == parent and where(frame) else None

    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda info: unraisable.append(info.exc_type)
    sys.settrace(tracer)
    try:
        assert in_child(lambda: "forked") == "forked"
    finally:
        sys.settrace(None)
        sys.unraisablehook = old_hook
    return unraisable


def test_a_third_interrupt_in_the_after_fork_hook_skips_no_dispatcher_it_never_retried(make):
    # Two interrupts on one dispatcher's after-fork hook move on to the next
    # (it is left behind); an interrupt on the next one's first run must
    # still retry that one, not skip it as well.
    plan = []  # the dispatchers in the order the hook first reached them
    ended = []

    class Interrupted(tempo.Dispatcher):
        calls = 0

        def _after_fork_in_parent(self):
            if self not in plan:
                plan.append(self)
            self.calls += 1
            # The first reached: interrupted twice. The second: once.
            if (self is plan[0] and self.calls <= 2) or (
                    len(plan) > 1 and self is plan[1] and self.calls <= 1):
                raise KeyboardInterrupt
            super()._after_fork_in_parent()
            ended.append(self)

    from tempo import _lifecycle

    ds = [Interrupted(interval=60, max_buffered_bytes=tempo.MiB) for _ in range(3)]
    try:
        for i, d in enumerate(ds):
            d.start()
            d.enqueue(b"sealed %d" % i)
            d._seal_now()
        _lifecycle._before_fork()
        with pytest.raises(KeyboardInterrupt):
            _lifecycle._after_fork_in_parent()
        assert len(plan) == 3
        assert plan[0].calls == 2  # given up on after two interrupts
        assert plan[1].calls == 2  # retried once
        assert sorted(map(id, ended)) == sorted(map(id, plan[1:]))
        assert_hands_out_nothing(plan[:1])
    finally:
        _lifecycle._after_fork_in_parent()  # ends plan[0]'s fork
        for d in ds:
            d.stop()


@pytest.mark.skipif(sys.version_info >= (3, 12),
                    reason="from 3.12 an allocation only schedules the collection")
def test_a_collection_inside_a_dispatchers_first_before_fork_hook_loses_no_fork(make):
    # On 3.11 an allocation may run the cyclic collector at once, and with it
    # any finalizer, which may let another thread run (GIL builds: the
    # dispatcher's lock is nothing). The first before-fork hook of a
    # dispatcher makes its set of forking threads; another thread's fork
    # begun meanwhile must not be lost with a set made over it (then its
    # after-fork hook would end nothing, and nothing be handed out for ever).
    import gc

    d = make(interval=60)
    d.start()
    d.enqueue(b"sealed 0")
    d._seal_now()
    other = []
    ran = []

    class Finalized:
        def __init__(self):
            self.cycle = self

        def __del__(self):
            ran.append(True)
            other.append(ForkInFlight())

    # The collection comes at the first allocation of a tracked object
    # after the garbage is made: the set made inside d._before_fork().
    old = gc.get_threshold()
    gc.collect()
    try:
        Finalized()
        gc.set_threshold(gc.get_count()[0])
        d._before_fork()
    finally:
        gc.set_threshold(*old)
    gc.collect()  # if nothing in the hook allocated, the other fork begins now
    assert ran == [True] and len(other) == 1
    d._after_fork_in_parent()
    assert_hands_out_nothing([d])  # the other thread's fork is still under way
    other[0].finish()
    assert_hands_out([d])


def test_a_second_interrupt_as_the_hook_loop_goes_round_leaves_no_dispatcher_blocked(make):
    # An interrupt inside one dispatcher's after-fork hook makes tempo go
    # round its loop again; a second one landing as it does (a backward jump
    # runs pending signal handlers, outside the loop's try) must not leave
    # the rest behind.
    import inspect

    from tempo import _lifecycle

    fired = []

    class InterruptedOnce(tempo.Dispatcher):
        def _after_fork_in_parent(self):
            if not fired:
                fired.append("hook")
                raise KeyboardInterrupt
            super()._after_fork_in_parent()

    lines, first = inspect.getsourcelines(_lifecycle._each_dispatcher)
    loop = first + next(i for i, text in enumerate(lines)
                        if text.strip() == "while todo is None or todo:")

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == loop and fired == ["hook"]:
            fired.append("loop")
            raise KeyboardInterrupt
        return local

    ds = [InterruptedOnce(interval=60, max_buffered_bytes=tempo.MiB) for _ in range(3)]
    try:
        for i, d in enumerate(ds):
            d.start()
            d.enqueue(b"sealed %d" % i)
            d._seal_now()
        unraisable = fork_traced(
            lambda frame: frame.f_code is _lifecycle._each_dispatcher.__code__, local)
        assert fired == ["hook", "loop"]
        assert unraisable == [KeyboardInterrupt]
        assert_hands_out(ds)
    finally:
        for d in ds:
            d.stop()


def test_an_interrupt_in_the_childs_after_fork_hook_never_lets_the_child_write_the_parents_buffer(make):
    # Ctrl-C reaches the whole process group, so a child just forked may
    # take a KeyboardInterrupt in its after-fork hook. Whatever it skips, the
    # child must never write into the buffer it shares with the parent: the
    # parent's payloads would silently change under it.
    from tempo import _lifecycle

    d = make(interval=60)
    d.start()
    d.enqueue(b"first.")
    parent = os.getpid()
    hook = _lifecycle._after_fork_in_child.__code__

    def local(frame, event, arg):
        if event == "line":
            raise KeyboardInterrupt
        return None

    def tracer(frame, event, arg):
        return local if os.getpid() != parent and frame.f_code is hook else None

    def in_the_child(child):
        sys.settrace(None)
        child.ready()
        child.wait_go()
        try:
            d.enqueue(b"CHILD!")
        except Exception as exc:  # noqa: BLE001 - refusing is fine
            return type(exc).__name__
        return "enqueued"

    sys.settrace(tracer)
    try:
        child = Child(in_the_child)
    finally:
        sys.settrace(None)
    child.wait_ready()
    d.enqueue(b"second")  # where the child's next payload would go, too
    child.go()
    assert child.result() == "enqueued"  # into a buffer of its own
    d._seal_now()
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"first.", b"second"]
