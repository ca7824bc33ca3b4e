"""Exit drains to quiescence (CONTRACT, third round; issue 15, item 2).

At exit, every live dispatcher and pipeline is drained *together*: intake
closes only once nothing is buffered, sealed, held or in a sink anywhere, so
chained stages deliver everything whatever order they were made in. Each case
runs in a fresh interpreter (tests/exit_scripts.py)."""

from __future__ import annotations

import re

import pytest

from exit_scripts import run_script

N = 100

PIPELINES = {
    # B made first, then A, whose sink forwards into B: the old drain closed
    # B first (creation order), so A's 100 payloads failed with Stopped.
    "downstream made first": """
        b = tempo.Pipeline(sink_b, interval=60, max_buffered_bytes=1 << 16)
        a = tempo.Pipeline(sink_a, interval=60, max_buffered_bytes=1 << 16)
        """,
    "upstream made first": """
        a = tempo.Pipeline(sink_a, interval=60, max_buffered_bytes=1 << 16)
        b = tempo.Pipeline(sink_b, interval=60, max_buffered_bytes=1 << 16)
        """,
}


@pytest.mark.parametrize("order", list(PIPELINES))
def test_a_pipeline_feeding_another_delivers_everything_at_exit(order):
    out = run_script(
        """
        got = []

        def sink_b(batch):
            got.extend(batch.tolist())

        def sink_a(batch):
            for item in batch:
                b.enqueue(bytes(item).upper())
        """
        + PIPELINES[order]
        + f"""
        for i in range({N}):
            a.enqueue(b"a%03d" % i)

        def report():
            sa, sb = a.stats(), b.stats()
            print("b got", len(got), got == [b"A%03d" % i for i in range({N})], flush=True)
            print("a", sa.delivered_items, sa.failed_items, sa.dropped, flush=True)
            print("b", sb.delivered_items, sb.failed_items, sb.dropped, flush=True)

        after_tempo(report)
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out.splitlines() == [f"b got {N} True", f"a {N} 0 0", f"b {N} 0 0"]


def test_a_daemon_consumer_forwarding_into_a_pipeline_delivers_everything_at_exit():
    # The old drain closed the pipeline (empty then) before it drained the
    # dispatcher: the consumer's forwards raised, 0 of 100 arrived, and
    # nothing was logged.
    out = run_script(
        f"""
        got = []
        p = tempo.Pipeline(lambda batch: got.extend(batch.tolist()),
                           interval=60, max_buffered_bytes=1 << 16)
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=1 << 16, max_batch_items=7)
        d.start()

        def consumer():
            for batch in d.batches():
                for item in batch:
                    p.enqueue(bytes(item))

        threading.Thread(target=consumer, daemon=True).start()
        for i in range({N}):
            d.enqueue(b"%03d" % i)

        def report():
            print("p got", len(got), sorted(got) == [b"%03d" % i for i in range({N})], flush=True)
            print("dropped", d.stats().dropped, p.stats().dropped, flush=True)

        after_tempo(report)
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out.splitlines() == [f"p got {N} True", "dropped 0 0"]


def test_three_chained_stages_in_reverse_creation_order_deliver_everything_at_exit():
    # A dispatcher's daemon consumer feeds pipeline B, whose sink feeds
    # pipeline C; made last to first, with slow sinks: several rounds of
    # "nothing buffered here, but something still upstream".
    out = run_script(
        f"""
        got = []

        def sink_c(batch):
            time.sleep(0.01)
            got.extend(batch.tolist())

        def sink_b(batch):
            time.sleep(0.01)
            c.enqueue_many([bytes(item) for item in batch], timeout=None)

        c = tempo.Pipeline(sink_c, interval=60, max_buffered_bytes=1 << 16, max_batch_items=9)
        b = tempo.Pipeline(sink_b, interval=60, max_buffered_bytes=1 << 16, max_batch_items=5)
        d = tempo.Dispatcher(interval=60, max_buffered_bytes=1 << 16, max_batch_items=3)
        d.start()

        def consumer():
            for batch in d.batches():
                b.enqueue_many([bytes(item) for item in batch], timeout=None)

        threading.Thread(target=consumer, daemon=True).start()
        for i in range({N}):
            d.enqueue(b"%03d" % i)

        after_tempo(lambda: print(
            "c got", len(got), sorted(got) == [b"%03d" % i for i in range({N})],
            [s.stats().dropped for s in (d, b, c)], flush=True))
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out.splitlines() == [f"c got {N} True [0, 0, 0]"]


def test_a_stage_that_never_settles_is_cut_at_the_bound_and_reported_once():
    # A daemon producer that never stops: quiescence never comes, so the
    # bound ends the drain; what is left is dropped, counted and logged once.
    out = run_script(
        """
        import logging
        logging.basicConfig(format="%(levelname)s %(message)s")
        tempo.set_exit_timeout(0.5)
        got = []
        p = tempo.Pipeline(lambda batch: got.extend(batch.tolist()),
                           interval=60, max_buffered_bytes=1 << 20, max_batch_items=50)
        started = threading.Event()

        def producer():
            while True:
                try:
                    p.enqueue(b"x")
                except tempo.TempoError:
                    return
                started.set()
                time.sleep(0.0005)

        threading.Thread(target=producer, daemon=True).start()
        started.wait(5)
        t0 = time.monotonic()

        def report():
            s = p.stats()
            print("took", time.monotonic() - t0 < 4, flush=True)
            print("accounted", s.enqueued == s.delivered_items + s.dropped, flush=True)
        after_tempo(report)
        """
    )
    assert out.returncode == 0, out
    assert out.out.splitlines() == ["took True", "accounted True"]
    warnings = out.err.splitlines()
    assert len(warnings) <= 1, out.err
    # The pipeline's own report: "... was not drained at exit: N payloads dropped ..."
    assert all(re.match(r"WARNING pipeline 'pipeline-1' was not drained at exit: "
                        r"\d+ payloads? dropped", w) for w in warnings), out.err


def test_a_non_daemon_consumer_fed_by_a_pipeline_gets_everything_when_main_ends():
    # The exit watcher saw D fed again since it sealed it, took the pipeline's
    # daemon workers for a daemon producer and closed D: the sink's forwards
    # raised Stopped and D's consumer got 0 of 200.
    out = run_script(
        """
        d = tempo.Dispatcher(interval=0.02, name="D", max_buffered_bytes=1 << 16)
        d.start()
        got = []

        def consume():
            for batch in d.batches():
                got.extend(batch.tolist())
            print("consumer got", len(got), sorted(got) == sorted(b"%03d" % i for i in range(200)),
                  flush=True)

        threading.Thread(target=consume).start()

        def sink(batch):
            time.sleep(0.05)
            d.enqueue_many(batch.tolist(), timeout=None)

        p = tempo.Pipeline(sink, interval=0.01, max_batch_items=10, max_buffered_bytes=1 << 16)
        for i in range(200):
            p.enqueue(b"%03d" % i)
        after_tempo(lambda: print("p", p.stats().delivered_items, p.stats().failed_items,
                                  "dropped", d.stats().dropped, p.stats().dropped, flush=True))
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out.splitlines() == ["consumer got 200 True", "p 200 0 dropped 0 0"]


def test_a_non_daemon_consumer_fed_by_a_daemon_forwarder_gets_everything_when_main_ends():
    # D1's daemon consumer forwards into D2 (before releasing its batch); a
    # non-daemon thread drains D2. The watcher closed D2 while D1 still held
    # everything: 0 of 200 arrived, the forwarder died on Stopped.
    out = run_script(
        """
        d1 = tempo.Dispatcher(interval=0.02, name="D1", max_buffered_bytes=1 << 16,
                              max_batch_items=10)
        d2 = tempo.Dispatcher(interval=0.02, name="D2", max_buffered_bytes=1 << 16)
        d1.start()
        d2.start()
        got = []

        def forward():
            for batch in d1.batches():
                time.sleep(0.05)
                d2.enqueue_many(batch.tolist(), timeout=None)

        def consume():
            for batch in d2.batches():
                got.extend(batch.tolist())
            print("consumer got", len(got), sorted(got) == sorted(b"%03d" % i for i in range(200)),
                  flush=True)

        threading.Thread(target=forward, daemon=True).start()
        threading.Thread(target=consume).start()
        for i in range(200):
            d1.enqueue(b"%03d" % i)
        after_tempo(lambda: print("dropped", d1.stats().dropped, d2.stats().dropped, flush=True))
        """
    )
    assert (out.returncode, out.err) == (0, "")
    assert out.out.splitlines() == ["consumer got 200 True", "dropped 0 0"]


def test_a_busy_unrelated_stage_holds_an_idle_consumer_only_for_the_exit_bound():
    # A non-daemon consumer waits on D (everything handed out); an unrelated
    # pipeline is fed for ever by a daemon producer, so the rest of tempo
    # never settles. The watcher waited for it to settle with no bound: the
    # interpreter never exited. Now the rest gets the exit bound to settle.
    out = run_script(
        """
        tempo.set_exit_timeout(1.0)
        d = tempo.Dispatcher(interval=60.0, max_buffered_bytes=1 << 20, name="d1")
        got = []

        def consume():
            for b in d.batches():
                got.append(len(b))
            print("consumer ended, got", sum(got), flush=True)

        threading.Thread(target=consume).start()  # non-daemon
        for i in range(10):
            d.enqueue(b"x%d" % i)
        p = tempo.Pipeline(lambda batch: None, interval=0.01, max_buffered_bytes=1 << 20,
                           name="other")

        def feed():
            while True:
                try:
                    p.enqueue(b"y")
                except tempo.TempoError:
                    pass
                time.sleep(0.001)

        threading.Thread(target=feed, daemon=True).start()
        t0 = time.monotonic()
        after_tempo(lambda: print("exited within", time.monotonic() - t0 < 8, flush=True))
        """
    )
    assert out.returncode == 0, out
    assert out.out.splitlines() == ["consumer ended, got 10", "exited within True"]
