"""Free-threaded CPython, and the first lap's pages.

On a free-threaded build (3.13t) importing tempo must leave the GIL off, and
every rule must hold with producers, consumers, views and the driver truly in
parallel: the storm below runs on every build (with the GIL it checks the same
invariants under thread switches). The first lap's pages are faulted in by the
driver a bounded distance ahead of the writer, never the whole arena at once.
"""

from __future__ import annotations

import inspect
import os
import struct
import subprocess
import sys
import sysconfig
import threading
import time
import types

import pytest

import tempo

from conftest import WAIT

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
AHEAD = 8 * tempo.MiB  # POPULATE_AHEAD in tempo/_arena.pxi


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded (--disable-gil) CPython")
def test_import_keeps_the_gil_off_without_a_warning():
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "import tempo\n"
        "d = tempo.Dispatcher(interval=1, max_buffered_bytes=4096)\n"
        "d.enqueue(b'x'); d.stop()\n"
        "print(sys._is_gil_enabled())\n"
    )
    env = dict(os.environ)
    env.pop("PYTHON_GIL", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout == "False\n"


def test_enqueue_is_a_builtin_method_with_its_signature(make):
    """A bound Cython function makes the interpreter take a reference to the
    dispatcher and to the function on every call: without the GIL, atomic
    writes to two objects every producer shares, which halved two producers'
    throughput. enqueue is a builtin method, called with the dispatcher as
    is; its signature still reads as the real one."""
    d = make(interval=1, max_buffered_bytes=4096)
    assert type(d.enqueue) is types.BuiltinMethodType
    assert d.enqueue.__self__ is d
    assert str(inspect.signature(d.enqueue)) == "(payload, timeout=0)"
    assert str(inspect.signature(tempo.Dispatcher.enqueue)) == "(self, /, payload, timeout=0)"
    d.enqueue(payload=b"ab", timeout=None)
    d.enqueue(b"c", 0)
    assert d.stats().enqueued == 2


def test_parallel_producers_consumers_and_views_lose_nothing(make):
    """4 producers, 3 consumers that read every item through views (some kept
    past the batch's release and dropped by another thread), stats read all
    along: every payload arrives exactly once, intact, in each producer's
    order, and every byte comes back."""
    producers, per_producer = 4, 3000
    d = make(interval=0.001, max_buffered_bytes=64 * tempo.KiB, max_batch_bytes=2 * tempo.KiB)
    d.start()
    received: list[list[tuple[int, int]]] = [[] for _ in range(3)]
    kept: list[memoryview] = []
    kept_lock = threading.Lock()
    errors: list[BaseException] = []

    def produce(pid: int) -> None:
        try:
            for seq in range(per_producer):
                # 8..263 bytes: a header, then a pattern the consumer checks.
                body = bytes([(pid + seq) & 0xFF]) * (seq % 256)
                d.enqueue(struct.pack("<II", pid, seq) + body, timeout=None)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def check(batch, k: int) -> None:
        # A function of its own: its views die when it returns (a view kept
        # by a consumer waiting for the next batch would pin the arena).
        for i, view in enumerate(batch):
            pid, seq = struct.unpack_from("<II", view)
            body = view[8:]
            assert len(body) == seq % 256
            assert body.tobytes() == bytes([(pid + seq) & 0xFF]) * len(body)
            received[k].append((pid, seq))
            if i == 0 and seq % 7 == 0:
                with kept_lock:
                    kept.append(view)  # outlives the batch's release, briefly

    def consume(k: int) -> None:
        try:
            for batch in d.batches():
                check(batch, k)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def drop_kept() -> None:
        while not done.is_set():
            with kept_lock:
                kept.clear()
            d.stats()

    done = threading.Event()
    threads = [threading.Thread(target=consume, args=(k,)) for k in range(3)]
    threads += [threading.Thread(target=drop_kept)]
    makers = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads + makers:
        t.start()
    for t in makers:
        t.join(60)
    d.shutdown(timeout=60)
    done.set()
    for t in threads:
        t.join(60)
    assert errors == []
    kept.clear()
    every = [item for part in received for item in part]
    assert sorted(every) == [(p, s) for p in range(producers) for s in range(per_producer)]
    for part in received:
        for p in range(producers):
            mine = [s for q, s in part if q == p]
            assert mine == sorted(mine)  # batches go out in order, items in order
    s = d.stats()
    assert (s.enqueued, s.items, s.dropped, s.buffered_bytes) == (
        producers * per_producer, producers * per_producer, 0, 0)


def test_batch_shared_between_threads_returns_its_bytes_once(make):
    """Threads taking views of one batch and releasing it concurrently: the
    region goes back exactly once, after the last view, and a released batch
    refuses new views."""
    d = make(interval=60, max_buffered_bytes=64 * tempo.KiB, max_batch_bytes=32 * 100)
    d.start()
    for _ in range(50):
        for i in range(32):  # sealed by size at the 32nd
            d.enqueue(bytes([i]) * 100)
        batch = d.get_batch(timeout=WAIT)
        assert len(batch) == 32
        barrier = threading.Barrier(4)
        seen = []

        def read(k: int) -> None:
            barrier.wait()
            for i in range(len(batch)):
                try:
                    view = batch[i]
                except ValueError:
                    seen.append("released")
                    return
                assert view.tobytes() == bytes([i]) * 100
                del view
            seen.append("read")

        def release() -> None:
            barrier.wait()
            batch.release()

        threads = [threading.Thread(target=read, args=(k,)) for k in range(3)]
        threads.append(threading.Thread(target=release))
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert len(seen) == 3
        assert batch.released
        assert d.stats().buffered_bytes == 0


def wait_until(predicate, timeout: float = WAIT * 6) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_driver_populates_a_bounded_window_ahead_of_the_writer(make):
    d = make(interval=60, max_buffered_bytes=256 * tempo.MiB, max_batch_bytes=0)
    assert d._populated == 0  # nothing before the driver runs
    d.start()
    assert wait_until(lambda: d._populated == AHEAD)
    # Nothing written: it stays there (the writer nudges the driver only
    # once it gets within half the window).
    time.sleep(0.05)  # nothing to wait for: it must NOT happen
    assert d._populated == AHEAD
    chunk = b"\0" * tempo.MiB
    for _ in range(6):  # 6 MiB: past the nudge at 4 MiB
        d.enqueue(chunk)
    assert wait_until(lambda: d._populated == 6 * tempo.MiB + AHEAD)


def shmem_kib() -> int:
    """This process's resident shared memory (the arenas' pages), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssShmem:"):
                return int(line.split()[1])
    raise AssertionError("no RssShmem in /proc/self/status")


def resident_growth_kib(prefault: bool) -> int:
    """How much a fresh process's resident shared memory grows when it makes
    a 32 MiB dispatcher (not started). A process of its own: in this one,
    earlier tests' arenas may be freed meanwhile and hide the growth."""
    code = (
        "import tempo\n"
        "def shmem():\n"
        "    with open('/proc/self/status') as f:\n"
        "        return next(int(l.split()[1]) for l in f if l.startswith('RssShmem:'))\n"
        "before = shmem()\n"
        f"d = tempo.Dispatcher(interval=60, max_buffered_bytes=32 * tempo.MiB, prefault={prefault})\n"
        "print(shmem() - before)\n"
        "d.stop()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_prefault_makes_the_whole_arena_resident_when_made(make):
    """prefault=True: every page is faulted in by the constructor, so the
    first lap costs no fault; the driver has nothing left to do."""
    assert 32 * 1024 <= resident_growth_kib(prefault=True) < 33 * 1024
    assert resident_growth_kib(prefault=False) < 1024
    d = make(interval=60, max_buffered_bytes=32 * tempo.MiB, prefault=True)
    assert d._populated == 32 * tempo.MiB
    d.start()
    chunk = b"\1" * tempo.MiB
    for _ in range(20):
        d.enqueue(chunk)
    assert d.stats().enqueued == 20
    assert d._populated == 32 * tempo.MiB


def test_without_prefault_resident_memory_grows_with_use(make):
    before = shmem_kib()
    d = make(interval=60, max_buffered_bytes=32 * tempo.MiB)
    assert d._populated == 0
    d.start()
    assert wait_until(lambda: d._populated == AHEAD)
    assert shmem_kib() - before < AHEAD // tempo.KiB + 1024


def test_a_forked_child_prefaults_its_fresh_arena(make):
    from test_fork import in_child

    d = make(interval=60, max_buffered_bytes=16 * tempo.MiB, prefault=True)
    d.start()
    d.enqueue(b"parent")

    def child():
        before = shmem_kib()
        populated = d._populated
        d.enqueue(b"x" * tempo.MiB)
        return populated, d.stats().enqueued, shmem_kib() - before

    populated, enqueued, grown = in_child(child)
    assert populated == 16 * tempo.MiB
    assert enqueued == 1  # the child's dispatcher is fresh: its own payload only
    assert grown < 1024  # its pages were already resident: the write faulted none


def test_small_arena_is_populated_whole(make):
    d = make(interval=60, max_buffered_bytes=1 * tempo.MiB, max_batch_bytes=0)
    d.start()
    assert wait_until(lambda: d._populated == tempo.MiB)
