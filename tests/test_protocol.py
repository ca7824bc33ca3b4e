"""The core <-> Python protocol has names, and the lifecycle one owner (issue 15).

- States and wait outcomes are enums (``tempo._protocol``), not strings and
  bare ints compared at call sites; ``Stats`` is built in one place.
- ``tempo._lifecycle`` registers the one set of fork hooks, and calls them in
  an explicit order: dispatchers, then pipelines.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import tempo
from tempo import _lifecycle, _protocol
from tempo._protocol import Delivery, State, state
from exit_scripts import run_script

PACKAGE = Path(tempo.__file__).parent


def test_every_state_the_core_reports_has_a_name(make, spawn):
    d = make(interval=60, max_buffered_bytes=100)
    seen = [state(d)]
    d.start()
    seen.append(state(d))
    d.enqueue(b"x")
    consumer = spawn(lambda: d.get_batch().release())
    d._begin_shutdown()
    seen.append(state(d))
    consumer.result()
    d.shutdown()
    seen.append(state(d))
    assert seen == [State.NEW, State.RUNNING, State.SHUTTING_DOWN, State.FINISHED]
    assert [s.value for s in State] == ["new", "running", "shutting down", "finished"]


def test_every_wait_outcome_has_a_name(make):
    d = make(interval=60, max_buffered_bytes=100)
    d.start()
    assert d._wait_delivered(d._seal_now(), 0) == Delivery.DELIVERED
    d.enqueue(b"x")
    assert d._wait_delivered(d._seal_now(), 0) == Delivery.TIMED_OUT
    d.stop()
    assert d._wait_delivered(d._seal_now() + 1, 0) == Delivery.STOPPED


def test_stats_are_built_in_one_place(make):
    d = make(interval=60, max_buffered_bytes=100)
    d.enqueue(b"abc")
    d.enqueue(b"de")
    stats = tempo.Stats._of(d)
    assert isinstance(stats, tempo.Stats)
    assert stats.oldest_wait > 0
    assert dataclasses.replace(stats, oldest_wait=0.0) == dataclasses.replace(
        d.stats(), oldest_wait=0.0)
    assert (stats.enqueued, stats.enqueued_bytes, stats.buffered_bytes) == (2, 5, 5)


def _sources() -> "dict[str, str]":
    files = list(PACKAGE.glob("*.py")) + list(PACKAGE.glob("*.pyx")) + list(PACKAGE.glob("*.pxi"))
    return {f.name: f.read_text() for f in files}


def test_the_protocol_is_read_only_through_its_names():
    sources = _sources()
    compared = {name for name, text in sources.items()
                if re.search(r"_state_name\(\)\s*[!=]=", text)}
    assert compared == set()
    counters = {name for name, text in sources.items() if "._counters()" in text}
    assert counters == {"_stats.py"}
    # The core keeps no books of asyncio's wakers: only fds.
    assert [name for name, text in sources.items() if "_wakers" in text] == ["_aio.py"]
    # One timeout validator: the core's, which _protocol names.
    assert _protocol.timeout_seconds is tempo._core._timeout_seconds
    assert [name for name, text in sources.items()
            if re.search(r"^def _?timeout\w*\(", text, re.M)] == []


def test_the_fork_hooks_are_registered_once_by_the_lifecycle():
    hooks = {name for name, text in _sources().items() if "register_at_fork(" in text}
    assert hooks == {"_lifecycle.py"}


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_the_fork_hooks_run_dispatchers_then_pipelines_in_each_phase():
    out = run_script(
        """
        import warnings
        warnings.filterwarnings("ignore", "This process", DeprecationWarning)  # 3.12+
        order = []

        class D(tempo.Dispatcher):
            def _before_fork(self):
                order.append("d-before")

            def _after_fork_in_parent(self):
                order.append("d-parent")

            def _reset_after_fork(self, running):
                order.append("d-child")
                super()._reset_after_fork(running)

        real = tempo.Pipeline._after_fork_in_child

        def pipeline_after_fork(self):
            # Its dispatcher is fresh already when the pipeline's turn comes.
            order.append(f"p-child {self.dispatcher.stats().enqueued}")
            real(self)

        tempo.Pipeline._after_fork_in_child = pipeline_after_fork
        p = tempo.Pipeline(lambda b: None, interval=60, max_buffered_bytes=1000)
        d = D(interval=60, max_buffered_bytes=1000)
        d.start()
        p.enqueue(b"x")
        pid = os.fork()
        if pid == 0:
            print("child", order, flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent", order, flush=True)
        p.close()
        """
    )
    assert (out.returncode, out.err) == (0, ""), out
    lines = sorted(out.out.splitlines())
    assert lines == [
        "child ['d-before', 'd-child', 'p-child 0']",
        "parent ['d-before', 'd-parent']",
    ]


def test_the_lifecycle_knows_every_live_dispatcher_and_pipeline(make):
    p = tempo.Pipeline(lambda b: None, interval=60, max_buffered_bytes=1000)
    try:
        assert p in _lifecycle.live_pipelines()
        assert p.dispatcher in _lifecycle.live()
    finally:
        p.stop()
