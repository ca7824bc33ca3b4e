"""A forked child starts with none of the parent's exit or thread state, and never
shares the parent's memory, even when its fresh buffer cannot be made (issue 8,
bugs 2, 4 and 5). Each case forks inside a fresh interpreter."""

from __future__ import annotations

import os
import sys

import pytest

from exit_scripts import run_script

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

under_asan = "asan" in os.environ.get("LD_PRELOAD", "")


def test_a_child_that_cannot_make_its_buffer_never_writes_into_the_parents():
    # Bug 2: memfd_create fails in the child (no fd left). Before the fix the
    # error was swallowed by the fork hook and the child kept the parent's
    # shared mapping: its enqueue overwrote the parent's next payload.
    out = run_script(
        """
        import resource
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Lowered around the fork, so the child starts with no fd to spare.
        os.register_at_fork(
            before=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (0, hard)),
            after_in_parent=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
        a = tempo.Dispatcher(interval=60, max_buffered_bytes=4096)
        b = tempo.Dispatcher(interval=60, max_buffered_bytes=4096)
        a.start()
        a.enqueue(b"parent-1")
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            os.read(go_r, 1)  # the parent has enqueued parent-2
            lines = [f"child: {a._state_name()} {b._state_name()} {a.stats()}"]
            for d in (a, b):
                try:
                    d.enqueue(b"CHILD!!!")
                    lines.append("child: enqueue accepted")
                except tempo.Stopped:
                    lines.append("child: enqueue Stopped")
                try:
                    lines.append(f"child: got {d.get_batch(timeout=0).tolist()}")
                except tempo.Stopped:
                    lines.append("child: get_batch Stopped")
                except TimeoutError:
                    lines.append("child: get_batch TimeoutError")
            print(*lines, sep="\\n", flush=True)
            os._exit(0)
        a.enqueue(b"parent-2")
        os.write(go_w, b"g")
        _, status = os.waitpid(pid, 0)
        a._seal_now()
        print("parent:", a.get_batch(timeout=5).tolist(), os.waitstatus_to_exitcode(status))
        """
    )
    assert out.returncode == 0, out
    zero = "Stats(enqueued=0, enqueued_bytes=0, rejected_full=0, rejected_too_large=0, " \
           "batches=0, items=0, dropped=0, buffered_bytes=0, max_buffered_bytes=4096, " \
           "buffered_items=0, max_buffered_items=8191, " \
           "waiting_batches=0, held_batches=0, oldest_wait=0.0)"
    assert out.out.splitlines() == [
        f"child: finished finished {zero}",
        "child: enqueue Stopped",
        "child: get_batch Stopped",
        "child: enqueue Stopped",
        "child: get_batch Stopped",
        "parent: [b'parent-1', b'parent-2'] 0",
    ]
    # Told once per dispatcher, by name, on the tempo logger.
    warnings = sorted(line for line in out.err.splitlines() if "after fork" in line)
    assert [w.split(":")[0] for w in warnings] == ["dispatcher 'dispatcher-1'",
                                                   "dispatcher 'dispatcher-2'"], out.err
    assert all("its buffer could not be made in the child" in w and "stopped in this process" in w
               for w in warnings)


@pytest.mark.skipif(under_asan, reason="an address-space limit breaks AddressSanitizer")
def test_the_other_dispatchers_are_reset_when_one_buffer_cannot_be_made():
    # Only the big dispatcher's buffer fails (address space), in any order of
    # the dispatchers: the small ones are fresh and running in the child.
    out = run_script(
        """
        import resource
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = [tempo.Dispatcher(interval=60, max_buffered_bytes=4096) for _ in range(3)]
        big = tempo.Dispatcher(interval=60, max_buffered_bytes=1 << 30)
        ds.insert(1, big)
        for d in ds:
            d.start()
            d.enqueue(b"parent")
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        os.register_at_fork(
            before=lambda: resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), hard)),
            after_in_parent=lambda: resource.setrlimit(resource.RLIMIT_AS, (soft, hard)))
        pid = os.fork()
        if pid == 0:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            states = [d._state_name() for d in ds]
            got = []
            for d in ds:
                if d is big:
                    continue
                d.enqueue(b"child")
                d._seal_now()
                got.append(d.get_batch(timeout=5).tolist())
            print(states, got, big.stats().enqueued, flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("parent:", [d.stats().enqueued for d in ds], os.waitstatus_to_exitcode(status))
        """
    )
    assert out.returncode == 0, out
    assert out.out.splitlines() == [
        "['running', 'finished', 'running', 'running'] "
        "[[b'child'], [b'child'], [b'child']] 0",
        "parent: [1, 1, 1, 1] 0",
    ]
    assert "could not be made in the child" in out.err


def test_a_child_thread_reusing_a_parent_thread_id_is_not_taken_for_a_waiting_one():
    # Bug 4: the record of threads waiting in tempo survived the fork. The
    # child's new threads reuse the stacks (so the idents) of the parent's
    # threads that were waiting; before the fix such a thread, busy working,
    # was taken for a waiting one, and its dispatcher stopped under it at exit.
    out = run_script(
        """
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=4096)
        d.start()
        waiting = [threading.Thread(target=lambda: list(d.batches()), daemon=True)
                   for _ in range(4)]
        for t in waiting:
            t.start()
        while d._waiters()[0] < 4:
            time.sleep(0.001)
        parent_idents = {t.ident for t in waiting}
        pid = os.fork()
        if pid == 0:
            got = []
            consumer = threading.Thread(
                target=lambda: [got.extend(b.tolist()) for b in d.batches()], daemon=True)
            consumer.start()

            def work():
                let_tempo_look(d)
                try:
                    d.enqueue(b"late")
                    d.shutdown(timeout=5)
                    consumer.join(5)
                    print("worker:", got, d.stats().dropped, flush=True)
                except tempo.Stopped:
                    print("worker: Stopped", flush=True)
                os._exit(0)

            workers = [threading.Thread(target=work if i == 0 else lambda: None)
                       for i in range(4)]
            for w in workers:
                w.start()
            reused = workers[0].ident in parent_idents
            print("reused" if reused else "not reused", flush=True)
            if not reused:
                os._exit(0)
        else:
            _, status = os.waitpid(pid, 0)
            print("parent:", os.waitstatus_to_exitcode(status))
            d.stop()
        """
    )
    if out.out.startswith("not reused"):
        pytest.skip("this C library did not reuse the parent's thread ids")
    assert out.returncode == 0, out
    assert out.out.splitlines() == ["reused", "worker: [b'late'] 0", "parent: 0"], out


@pytest.mark.skipif(
    sys.version_info[:2] == (3, 12),
    reason="CPython 3.12 refuses os.fork() once the main thread has ended "
    "(RuntimeError: can't fork at interpreter shutdown): the scenario cannot exist there",
)
def test_a_child_forked_after_the_parents_main_ended_does_not_inherit_the_exit():
    # Bug 5: forked by a non-daemon thread once the parent's main thread had
    # ended, the child inherited "the exit has begun" and its dispatcher was
    # stopped about 0.1 s after its consumer went idle.
    out = run_script(
        """
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=4096)
        d.start()

        def forker():
            threading.main_thread().join(10)  # the parent's exit has begun
            pid = os.fork()
            if pid == 0:
                got = []
                consumer = threading.Thread(
                    target=lambda: [got.extend(b.tolist()) for b in d.batches()])
                consumer.start()
                while d._waiters()[0] < 1:
                    time.sleep(0.001)
                let_tempo_look(d, after_main=False)
                code = 1
                try:
                    for i in range(3):
                        d.enqueue(b"child-%d" % i)
                    d.shutdown(timeout=5)
                    consumer.join(5)
                    print("child:", got, d.stats().dropped, flush=True)
                    code = 0
                except tempo.Stopped:
                    print("child: Stopped", flush=True)
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            print("parent:", os.waitstatus_to_exitcode(status), flush=True)

        threading.Thread(target=forker).start()
        """
    )
    assert out.returncode == 0, out
    assert out.out.splitlines() == [
        "child: [b'child-0', b'child-1', b'child-2'] 0",
        "parent: 0",
    ]
