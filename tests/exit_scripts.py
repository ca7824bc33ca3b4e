"""Running a short script in a fresh interpreter, for the exit and fork tests.

``run_script(body)`` prepends ``PRELUDE`` and runs the script with a bound on
the whole process; ``let_tempo_look(d)`` (in the prelude) lets tempo's exit
watcher look at the threads a few times, so that a test can show tempo left
a working thread alone: it returns once the watcher has made ``rounds`` more
rounds, or once ``d`` is finished (what tempo before issue 8 did, wrongly,
within a few rounds: the test then fails on its outcome). ``after_tempo(hook)``
runs ``hook`` at exit after tempo's drain.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

#: The whole subprocess (start-up included) must be done within this.
LIMIT = 20.0

PRELUDE = """\
import asyncio
import os
import sys
import threading
import time
import tempo
import tempo._lifecycle


def after_tempo(hook):
    # atexit runs its hooks last-in, first-out: registered before tempo's own
    # (moved to the end here), the hook runs after tempo's drain at exit.
    import atexit
    atexit.unregister(tempo._lifecycle._drain_at_exit)
    atexit.register(hook)
    atexit.register(tempo._lifecycle._drain_at_exit)


def let_tempo_look(d, rounds=3, after_main=True):
    if after_main:
        threading.main_thread().join(10)
    watcher = tempo._lifecycle
    start = getattr(watcher, "_passes", 0)
    deadline = time.monotonic() + 10
    while getattr(watcher, "_passes", 0) < start + rounds and d._state_name() != "finished":
        assert time.monotonic() < deadline, "tempo's exit watcher made no rounds"
        time.sleep(0.005)
"""


class Outcome:
    def __init__(self, seconds: float, returncode: int, out: str, err: str):
        self.seconds, self.returncode, self.out, self.err = seconds, returncode, out, err

    def __repr__(self) -> str:
        return f"Outcome(rc={self.returncode}, out={self.out!r}, err={self.err!r})"


def run_script(body: str, limit: float = LIMIT) -> Outcome:
    code = PRELUDE + textwrap.dedent(body)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=limit
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"the interpreter did not exit within {limit} s\n"
            f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}"
        )
    return Outcome(time.monotonic() - t0, proc.returncode, proc.stdout, proc.stderr)
