"""``enqueue_many``: one call, the same outcome as a loop of ``enqueue`` that
stops at the first ``QueueFull``: accepted count, batches, stats, exceptions."""

from __future__ import annotations

import array
import dataclasses
import gc
import sys
import threading
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tempo
from conftest import WAIT, wait_blocked_on_state
from strategies import payload

# -- the reference: a loop of enqueue -----------------------------------------------


def loop_of_enqueue(d, payloads, timeout=0):
    """What ``d.enqueue_many(payloads, timeout)`` promises to do, in Python."""
    deadline = None if timeout is None else time.monotonic() + timeout
    n = 0
    for p in payloads:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            d.enqueue(p, timeout=left)
        except tempo.QueueFull:
            return n, None
        except Exception as exc:  # noqa: BLE001 - compared with enqueue_many's
            return n, exc
        n += 1
    return n, None


def call_enqueue_many(d, payloads, **kwargs):
    try:
        return d.enqueue_many(payloads, **kwargs), None
    except Exception as exc:  # noqa: BLE001 - compared with the loop's
        return exc.accepted, exc


def counters(d) -> dict:
    stats = dataclasses.asdict(d.stats())
    del stats["oldest_wait"]  # an age: it moves on by itself
    return stats


def outcome(d, result):
    """Everything observable after a call: its result, the counters, then the
    batches (every open one sealed by a shutdown)."""
    n, exc = result
    error = None if exc is None else (type(exc), str(exc))
    before = counters(d)
    batches = []
    consumer = threading.Thread(target=lambda: batches.extend(b.tolist() for b in d.batches()))
    consumer.start()
    d.shutdown(timeout=WAIT)
    consumer.join(WAIT)
    assert not consumer.is_alive()
    return n, error, before, batches, counters(d)


# -- Hypothesis: the same inputs through both ---------------------------------------

KINDS = ["bytes", "bytearray", "memoryview", "array", "strided", "str", "int"]


def make_payload(kind: str, index: int, size: int):
    data = payload(index, size)
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    if kind == "array":
        return array.array("B", data)
    if kind == "strided":  # not C-contiguous unless it has at most one byte
        return memoryview(data * 2)[::2]
    if kind == "str":
        return data.decode("latin-1")
    return size  # an int: not bytes-like


items = st.tuples(
    st.sampled_from(KINDS[:4] * 6 + KINDS[4:]),  # mostly valid payloads
    st.one_of(st.integers(0, 8), st.integers(0, 40), st.integers(0, 600)),
)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(items, max_size=40),
    container=st.sampled_from(["list", "tuple", "iter"]),
    prefill=st.integers(0, 300),
    limit=st.one_of(st.integers(1, 512), st.just(4096)),
    max_batch_bytes=st.one_of(st.just(0), st.integers(1, 64)),
    max_batch_items=st.one_of(st.just(0), st.integers(1, 5)),
    started=st.booleans(),
)
@example(  # full half-way: stops there; then an oversized payload is never reached
    items=[("bytes", 10), ("bytes", 10), ("bytes", 10), ("bytes", 600)],
    container="list", prefill=0, limit=25, max_batch_bytes=0, max_batch_items=0, started=True,
)
@example(  # a payload that can never fit raises after the ones before it
    items=[("bytes", 1), ("bytearray", 2), ("bytes", 600), ("bytes", 1)],
    container="tuple", prefill=0, limit=512, max_batch_bytes=4, max_batch_items=2, started=False,
)
@example(
    items=[("memoryview", 3), ("str", 2), ("bytes", 1)],
    container="iter", prefill=0, limit=512, max_batch_bytes=0, max_batch_items=0, started=True,
)
@example(
    items=[("array", 3), ("strided", 4), ("bytes", 1)],
    container="list", prefill=0, limit=512, max_batch_bytes=0, max_batch_items=0, started=True,
)
def test_enqueue_many_matches_a_loop_of_enqueue(
    items, container, prefill, limit, max_batch_bytes, max_batch_items, started
):
    config = dict(
        interval=60,
        max_buffered_bytes=limit,
        max_batch_bytes=max_batch_bytes,
        max_batch_items=max_batch_items,
    )
    results = []
    for method in ("loop", "many"):
        d = tempo.Dispatcher(**config)
        try:
            if started:
                d.start()
            if prefill <= limit:
                d.enqueue(b"p" * prefill)
            payloads = [make_payload(kind, i, size) for i, (kind, size) in enumerate(items)]
            seq = {"list": payloads, "tuple": tuple(payloads), "iter": iter(payloads)}[container]
            if method == "loop":
                result = loop_of_enqueue(d, seq)
            else:
                result = call_enqueue_many(d, seq)
            results.append(outcome(d, result))
        finally:
            d.stop()
    assert results[1] == results[0]


# -- the rules, one by one ------------------------------------------------------------


def test_returns_the_count_and_each_payload_is_its_own_item(make, drain):
    d = make(max_batch_items=0)
    assert d.enqueue_many([b"a", bytearray(b"bc"), memoryview(b"def"), b""]) == 4
    assert d.enqueue_many(()) == 0
    assert d.enqueue_many(p for p in [b"g"]) == 1
    assert drain(d) == [[b"a", b"bc", b"def", b"", b"g"]]
    stats = d.stats()
    assert (stats.enqueued, stats.enqueued_bytes, stats.rejected_full) == (5, 7, 0)


def test_stops_at_the_first_payload_that_does_not_fit_without_raising(make, drain):
    d = make(max_buffered_bytes=10)
    payloads = [b"1234", b"5678", b"abcd", b"x"]
    assert d.enqueue_many(payloads) == 2
    # The rest can be retried from where it stopped; it is counted once.
    assert d.stats().rejected_full == 1
    assert d.enqueue_many(payloads[2:]) == 0
    assert d.stats().rejected_full == 2
    assert drain(d) == [[b"1234", b"5678"]]


def test_a_payload_that_never_fits_raises_with_the_count_accepted_before_it(make, drain):
    d = make(max_buffered_bytes=10)
    with pytest.raises(tempo.PayloadTooLarge) as info:
        d.enqueue_many([b"ab", b"c", b"x" * 11, b"d"])
    assert info.value.accepted == 2
    assert str(info.value) == "tempo: payload exceeds configured buffered byte limit"
    assert d.stats().rejected_too_large == 1
    assert drain(d) == [[b"ab", b"c"]]


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ("text", TypeError, "payload must be bytes-like, not 'str' (encode it first)"),
        (7, TypeError, "payload must be a bytes-like object, not 'int'"),
        (memoryview(b"abcd")[::2], BufferError, "payload must be C-contiguous"),
    ],
    ids=["str", "int", "strided"],
)
def test_a_payload_of_the_wrong_kind_raises_as_enqueue_does(make, drain, bad, error, message):
    d = make()
    with pytest.raises(error) as info:
        d.enqueue_many([b"a", bad, b"b"])
    assert info.value.accepted == 1
    assert str(info.value).startswith(message)
    with pytest.raises(error) as direct:
        d.enqueue(bad)
    assert str(direct.value) == str(info.value)
    assert drain(d) == [[b"a"]]


@pytest.mark.parametrize("payloads", ["text", b"bytes", bytearray(b"ba")])
def test_one_payload_instead_of_an_iterable_is_a_type_error(make, payloads):
    d = make()
    with pytest.raises(TypeError, match="iterable of payloads") as info:
        d.enqueue_many(payloads)
    assert info.value.accepted == 0
    assert d.stats().enqueued == 0


def test_not_an_iterable_is_a_type_error(make):
    d = make()
    with pytest.raises(TypeError) as info:
        d.enqueue_many(5)
    assert info.value.accepted == 0


def test_an_iterator_that_raises_keeps_what_it_gave_and_says_how_many(make, drain):
    d = make()

    def payloads():
        yield b"a"
        yield b"b"
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed") as info:
        d.enqueue_many(payloads())
    assert info.value.accepted == 2
    assert drain(d) == [[b"a", b"b"]]


def test_shutting_down_and_stopped_raise_with_accepted(make, spawn):
    d = make()
    d.enqueue(b"x")
    d._begin_shutdown()
    with pytest.raises(tempo.ShuttingDown) as info:
        d.enqueue_many([b"a"])
    assert info.value.accepted == 0
    d.stop()
    with pytest.raises(tempo.Stopped) as info:
        d.enqueue_many([b"a"])
    assert info.value.accepted == 0
    # Nothing to enqueue: nothing refused, as with a loop of enqueue.
    assert d.enqueue_many([]) == 0


def test_stop_during_a_wait_raises_stopped_with_the_count_so_far(make, spawn):
    d = make(max_buffered_bytes=4)
    d.enqueue(b"1234")
    task = spawn(call_enqueue_many, d, [b"a", b"b"], timeout=None)
    wait_blocked_on_state(d)
    d.stop()
    n, exc = task.result()
    assert (n, type(exc)) == (0, tempo.Stopped)


def test_generator_that_stops_the_dispatcher_midway(make):
    d = make()

    def payloads():
        yield b"a"
        d.stop()
        yield b"b"

    with pytest.raises(tempo.Stopped) as info:
        d.enqueue_many(payloads())
    assert info.value.accepted == 1
    assert d.stats().dropped == 1


def test_timeout_is_one_deadline_for_the_whole_call(make, spawn):
    d = make(max_buffered_bytes=4, max_batch_items=1)
    d.start()
    d.enqueue(b"1234")
    started = time.monotonic()
    # Each payload would fit after a release that never comes: the call
    # gives up at its one deadline, not after 0.2 s per payload.
    assert d.enqueue_many([b"a", b"b", b"c"], timeout=0.2) == 0
    took = time.monotonic() - started
    assert 0.2 <= took < 0.2 + WAIT / 2
    assert d.stats().rejected_full == 1


def test_waiting_for_space_takes_each_payload_as_it_fits(make, spawn):
    d = make(max_buffered_bytes=4, max_batch_items=1)
    d.start()
    d.enqueue(b"1234")
    task = spawn(d.enqueue_many, [b"ab", b"cd", b"efgh"], timeout=WAIT)
    wait_blocked_on_state(d)
    got = []
    while len(got) < 4:
        with d.get_batch(timeout=WAIT) as batch:
            got.extend(batch.tolist())
    assert got == [b"1234", b"ab", b"cd", b"efgh"]
    assert task.result() == 3
    assert d.stats().rejected_full == 0


def test_bad_timeout_is_rejected_before_anything_is_accepted(make):
    d = make()
    for timeout, error in [(-1, ValueError), ("1", TypeError)]:
        with pytest.raises(error):
            d.enqueue_many([b"a"], timeout=timeout)
    assert d.stats().enqueued == 0


@pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ in Python needs 3.12")
def test_a_list_changed_by_a_payload_is_read_as_it_is_now(make, drain):
    # A buffer exporter written in Python runs code in the middle of the call.
    d = make()
    payloads: list = []

    class Grows:
        def __buffer__(self, flags):
            payloads.append(b"late")
            return memoryview(b"g")

    payloads.extend([b"a", Grows()])
    assert d.enqueue_many(payloads) == 3
    assert drain(d) == [[b"a", b"g", b"late"]]


def test_a_list_shrunk_while_waiting_is_safe(make, spawn):
    d = make(max_buffered_bytes=4, max_batch_items=1)
    d.start()
    d.enqueue(b"1234")
    payloads = [b"a" * 3, b"b"]
    task = spawn(d.enqueue_many, payloads, timeout=WAIT)
    wait_blocked_on_state(d)
    payloads.clear()  # the waiting payload is held by the call itself
    got = []
    with d.get_batch(timeout=WAIT) as batch:
        got.extend(batch.tolist())
    assert task.result() == 1
    with d.get_batch(timeout=WAIT) as batch:
        got.extend(batch.tolist())
    assert got == [b"1234", b"aaa"]


@pytest.mark.parametrize("kind", ["bytes-list", "bytes-tuple", "bytearray-list"])
def test_allocates_no_python_object_per_payload(make, kind):
    d = make(max_buffered_bytes=tempo.MiB, max_batch_bytes=1600)
    d.start()
    count = 10_000
    payloads = [bytes([i % 251]) * 16 for i in range(count)]
    if kind == "bytes-tuple":
        payloads = tuple(payloads)
    elif kind == "bytearray-list":
        payloads = [bytearray(p) for p in payloads]

    def drain():
        while True:
            try:
                batch = d.get_batch(timeout=0)
            except TimeoutError:
                return
            batch.release()

    assert d.enqueue_many(payloads) == count  # warm up
    drain()
    gc.disable()
    try:
        before = sys.getallocatedblocks()
        assert d.enqueue_many(payloads) == count
        grown = sys.getallocatedblocks() - before
    finally:
        gc.enable()
    assert grown < count // 100, f"{grown} blocks allocated for {count} payloads"
