"""``batch.seq``: a batch's number in its dispatcher, the same for as long as the batch lives.

A sink that is called again with the same batch (a ``Pipeline`` retry) sees
the same number, so ``<process token>-<seq>`` is a de-duplication id that
survives retries (docs/scaling-out.md).
"""

from __future__ import annotations

import os

import pytest

import tempo

WAIT = 5.0


def test_seq_counts_the_batches_handed_out_from_one_and_survives_release(make):
    d = make(interval=60, max_buffered_bytes=100, max_batch_items=1)
    d.start()
    for p in (b"a", b"b", b"c"):
        d.enqueue(p)
    first = d.get_batch(timeout=WAIT)
    assert first.seq == 1 == d.stats().batches
    second = d.get_batch(timeout=WAIT)
    first.release()
    third = d.get_batch(timeout=WAIT)
    assert (first.seq, second.seq, third.seq) == (1, 2, 3) == (1, 2, d.stats().batches)
    assert first.released and first.seq == 1


def test_seq_is_read_only(make):
    d = make(interval=60, max_buffered_bytes=100, max_batch_items=1)
    d.start()
    d.enqueue(b"a")
    with d.get_batch(timeout=WAIT) as batch:
        with pytest.raises(AttributeError):
            batch.seq = 5  # type: ignore[misc]


def test_a_pipeline_retry_sees_the_same_seq_and_the_next_batch_the_next_one():
    seen: list[int] = []

    def sink(batch: tempo.Batch) -> None:
        seen.append(batch.seq)
        if len(seen) < 3:
            raise OSError("no ack")

    with tempo.Pipeline(sink, interval=60, max_buffered_bytes=100, max_batch_items=1,
                        retry=tempo.Retry(attempts=3, backoff=0)) as p:
        p.enqueue(b"a")
        p.enqueue(b"b")
    assert seen == [1, 1, 1, 2]
    assert p.stats().failed_batches == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_childs_dispatcher_counts_afresh(make):
    from test_fork import in_child

    d = make(interval=60, max_buffered_bytes=100, max_batch_items=1)
    d.start()
    d.enqueue(b"a")
    d.enqueue(b"b")
    with d.get_batch(timeout=WAIT), d.get_batch(timeout=WAIT):
        pass

    def child() -> int:
        d.enqueue(b"c")
        with d.get_batch(timeout=WAIT) as batch:
            return batch.seq

    assert in_child(child) == 1
    d.enqueue(b"d")
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.seq == 3
