"""Exit never hangs, whatever other libraries' exit hooks do first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


@pytest.mark.parametrize("import_first", [False, True], ids=["futures-after", "futures-before"])
def test_a_thread_pool_worker_blocked_in_batches_does_not_hang_exit(import_first):
    # concurrent.futures joins its workers in an exit hook; imported after
    # tempo started, that hook runs before tempo's own.
    code = textwrap.dedent(
        f"""
        import sys
        {"import concurrent.futures.thread" if import_first else ""}
        import tempo

        d = tempo.Dispatcher(interval=0.05, max_buffered_bytes=1000)
        d.start()
        import concurrent.futures as cf
        pool = cf.ThreadPoolExecutor(1)

        def work():
            n = 0
            for batch in d.batches():
                n += len(batch)
            return n

        pool.submit(work)
        d.enqueue(b"x")
        print("main done", flush=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"main done\n"


def _run(code: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, timeout=20
    )


def test_a_never_started_dispatcher_with_a_pool_consumer_does_not_hang_exit():
    # No driver thread runs for it; main ends before start().
    proc = _run(
        """
        import concurrent.futures as cf
        import tempo

        d = tempo.Dispatcher(interval=0.05, max_buffered_bytes=1000)
        pool = cf.ThreadPoolExecutor(1)
        pool.submit(lambda: [b.tolist() for b in d.batches()])
        print("main done", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"main done\n"


@pytest.mark.skipif(
    sys.version_info[:2] == (3, 12),
    reason="CPython 3.12 starts no thread once the main thread has ended: this "
    "test's own consumer thread cannot start there (nor tempo's driver)",
)
def test_a_working_thread_that_outlives_main_drains_with_its_explicit_shutdown():
    # Python waits for a non-daemon thread; tempo must not cut its work
    # short just because the main thread has finished.
    proc = _run(
        """
        import threading, time
        import tempo

        def worker():
            d = tempo.Dispatcher(interval=0.01, max_buffered_bytes=1 << 16)
            d.start()
            got = []
            consumer = threading.Thread(target=lambda: [got.extend(b.tolist()) for b in d.batches()])
            consumer.start()
            for i in range(50):
                d.enqueue(b"%d" % i)
                time.sleep(0.01)   # still working well after main has returned
            d.shutdown()
            consumer.join()
            print(len(got), d.stats().dropped, flush=True)

        threading.Thread(target=worker).start()
        """
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"50 0\n"
