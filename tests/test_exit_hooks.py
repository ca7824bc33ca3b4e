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
