"""Batching rules 1-4: when batches are sealed, what is in them, admission."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import example, given, settings

import tempo
from strategies import configs, expected_batches, payload, payload_lists

WAIT = 5.0
#: How long to wait to see that something does NOT happen (a batch is not sealed).
QUIET = 0.1


def assert_nothing_ready(d, timeout=QUIET):
    with pytest.raises(TimeoutError):
        d.get_batch(timeout=timeout)


# --- rule 2: size ------------------------------------------------------------


def test_batch_is_sealed_at_once_when_it_reaches_max_batch_bytes(make):
    d = make(interval=60, max_batch_bytes=10)
    d.start()
    d.enqueue(b"aaaa")
    d.enqueue(b"bbbb")
    assert_nothing_ready(d)
    d.enqueue(b"cc")  # 10 bytes: reaches max_batch_bytes
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"aaaa", b"bbbb", b"cc"]
    assert_nothing_ready(d)


def test_single_payload_of_exactly_max_batch_bytes_is_sealed_alone(make):
    d = make(interval=60, max_batch_bytes=8)
    d.start()
    d.enqueue(b"12345678")
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"12345678"]


def test_payload_that_would_overflow_seals_the_batch_first(make, drain):
    d = make(interval=60, max_batch_bytes=10)
    d.start()
    d.enqueue(b"aaaaaa")
    d.enqueue(b"bbbbbb")  # 12 > 10: [a] is sealed, b starts a new batch
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"aaaaaa"]
    assert_nothing_ready(d)
    d.enqueue(b"cccc")  # 6 + 4 = 10: reaches the limit
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"bbbbbb", b"cccc"]
    d.enqueue(b"d")
    assert drain(d) == [[b"d"]]


def test_payload_larger_than_max_batch_bytes_is_delivered_alone(make, drain):
    d = make(interval=60, max_batch_bytes=10, max_buffered_bytes=100)
    d.start()
    big = bytes(range(25))
    d.enqueue(big)
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [big]
    d.enqueue(b"xyz")  # starts a fresh batch, not sealed yet
    assert_nothing_ready(d)
    assert drain(d) == [[b"xyz"]]


def test_oversized_payload_seals_the_open_batch_then_goes_alone(make, drain):
    d = make(interval=60, max_batch_bytes=10, max_buffered_bytes=100)
    d.start()
    d.enqueue(b"abc")
    big = b"B" * 40
    d.enqueue(big)
    with d.get_batch(timeout=WAIT) as first:
        assert first.tolist() == [b"abc"]
    with d.get_batch(timeout=WAIT) as second:
        assert second.tolist() == [big]
    d.enqueue(b"z")
    assert_nothing_ready(d)
    assert drain(d) == [[b"z"]]


def test_payload_as_large_as_max_buffered_bytes_is_delivered_alone(make):
    d = make(interval=60, max_batch_bytes=8, max_buffered_bytes=32)
    d.start()
    d.enqueue(b"q" * 32)
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"q" * 32]


def test_empty_payloads_do_not_seal_a_batch(make, drain):
    d = make(interval=60, max_batch_bytes=4)
    d.start()
    for _ in range(10):
        d.enqueue(b"")
    assert_nothing_ready(d)
    d.enqueue(b"abcd")  # 0 + 4 = 4: fits, and reaches the limit
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b""] * 10 + [b"abcd"]


@pytest.mark.parametrize("kwargs", [{"max_batch_bytes": 0}, {}], ids=["zero", "default"])
def test_max_batch_bytes_zero_means_interval_only(make, drain, kwargs):
    d = make(interval=60, max_buffered_bytes=tempo.MiB, **kwargs)
    d.start()
    payloads = [payload(i, 1024) for i in range(200)]
    for p in payloads:
        d.enqueue(p)
    assert_nothing_ready(d)
    assert drain(d) == [payloads]


# --- rule 1: interval ----------------------------------------------------------


def test_no_batch_without_payloads(make):
    d = make(interval=0.02, max_batch_bytes=0)
    d.start()
    assert_nothing_ready(d, timeout=0.2)
    assert d.stats().batches == 0


def test_interval_seals_a_partial_batch_no_earlier_than_interval(make):
    interval = 0.05
    d = make(interval=interval, max_batch_bytes=tempo.MiB)
    d.start()
    # Idle first: a clock that ticks regardless of payloads would be caught here.
    assert_nothing_ready(d, timeout=0.12)
    for i in range(3):
        p = payload(i, 10)
        t0 = time.monotonic()
        d.enqueue(p)
        with d.get_batch(timeout=WAIT) as batch:
            elapsed = time.monotonic() - t0
            assert batch.tolist() == [p]
        assert elapsed >= interval
        # Stagger the next enqueue against any fixed tick.
        assert_nothing_ready(d, timeout=0.013 * (i + 1))


def test_interval_clock_is_not_restarted_by_later_payloads(make, collector):
    # Payloads every ~20 ms with a 100 ms interval: if each payload restarted the
    # clock, the whole stream would end up in one batch.
    d = make(interval=0.1, max_batch_bytes=0)
    d.start()
    consumer = collector(d)
    sent = [payload(i, 8) for i in range(30)]
    for p in sent:
        d.enqueue(p)
        time.sleep(0.02)  # pacing the producer; nothing to wait for
    d.shutdown(timeout=WAIT)
    batches = consumer.result()
    assert [p for batch in batches for p in batch] == sent
    assert len(batches) >= 2


def test_batch_started_by_an_overflow_gets_a_fresh_clock(make):
    interval = 0.5
    d = make(interval=interval, max_batch_bytes=10)
    d.start()
    d.enqueue(b"aaaaaa")
    assert_nothing_ready(d, timeout=0.15)
    t1 = time.monotonic()
    d.enqueue(b"bbbbbb")  # seals [a]; [b] starts a batch whose clock starts now
    with d.get_batch(timeout=WAIT) as first:
        assert first.tolist() == [b"aaaaaa"]
    with d.get_batch(timeout=WAIT) as second:
        elapsed = time.monotonic() - t1
        assert second.tolist() == [b"bbbbbb"]
    assert elapsed >= interval


# --- rule 3: order ---------------------------------------------------------------


def test_order_within_and_across_batches(make, drain):
    d = make(interval=60, max_batch_bytes=16, max_buffered_bytes=4096)
    d.start()
    sizes = [3, 5, 8, 1, 20, 0, 7, 7, 2, 16, 4, 4, 4, 4, 9]
    sent = [payload(i, n) for i, n in enumerate(sizes)]
    for p in sent:
        d.enqueue(p)
    got = drain(d)
    assert got == expected_batches(sent, 16)
    assert got == [
        [sent[0], sent[1], sent[2]],  # 3 + 5 + 8 = 16
        [sent[3]],  # 1 + 20 > 16
        [sent[4]],  # 20 alone
        [sent[5], sent[6], sent[7], sent[8]],  # 0 + 7 + 7 + 2 = 16
        [sent[9]],  # 16
        [sent[10], sent[11], sent[12], sent[13]],  # 16
        [sent[14]],  # sealed by shutdown
    ]


@settings(max_examples=200, deadline=None)
@given(config=configs(), payloads=payload_lists())
@example(  # fills a batch exactly, overflows one, and an oversized payload
    config={"max_batch_bytes": 10, "max_buffered_bytes": 4096, "max_batch_items": 0},
    payloads=[payload(0, 6), payload(1, 4), payload(2, 3), payload(3, 8), payload(4, 25), b""],
)
@example(  # admission at the exact bound, then "now" and "ever" refusals
    config={"max_batch_bytes": 4, "max_buffered_bytes": 12, "max_batch_items": 0},
    payloads=[payload(0, 4), payload(1, 8), payload(2, 1), payload(3, 13), b""],
)
@example(  # the item cap and the byte cap, each sealing some batches
    config={"max_batch_bytes": 10, "max_buffered_bytes": 4096, "max_batch_items": 3},
    payloads=[payload(0, 1), b"", payload(2, 1), payload(3, 9), payload(4, 1), payload(5, 11)],
)
@example(  # one item per batch
    config={"max_batch_bytes": 0, "max_buffered_bytes": 12, "max_batch_items": 1},
    payloads=[payload(0, 4), payload(1, 8), payload(2, 1), payload(3, 13), b""],
)
def test_property_batches_concatenate_to_the_accepted_sequence(config, payloads):
    max_batch = config["max_batch_bytes"]
    max_items = config["max_batch_items"]
    limit = config["max_buffered_bytes"]
    d = tempo.Dispatcher(interval=60, **config)
    try:
        d.start()
        accepted = []
        owned = 0
        for p in payloads:
            if len(p) > limit:
                with pytest.raises(tempo.PayloadTooLarge):
                    d.enqueue(p)
            elif owned + len(p) > limit:
                with pytest.raises(tempo.QueueFull):
                    d.enqueue(p)
            else:
                d.enqueue(p)
                accepted.append(p)
                owned += len(p)
        assert d.stats().buffered_bytes == owned

        batches = []
        consumer = threading.Thread(
            target=lambda: batches.extend(b.tolist() for b in d.batches()), daemon=True
        )
        consumer.start()
        d.shutdown(timeout=WAIT)
        consumer.join(WAIT)
        assert not consumer.is_alive()

        assert [p for batch in batches for p in batch] == accepted
        for batch in batches:
            assert batch, "an empty batch was delivered"
            if max_batch > 0 and len(batch) > 1:
                assert sum(map(len, batch)) <= max_batch
            if max_items > 0:
                assert len(batch) <= max_items
        assert batches == expected_batches(accepted, max_batch, max_items)
        stats = d.stats()
        assert (stats.enqueued, stats.items, stats.batches, stats.dropped) == (
            len(accepted),
            len(accepted),
            len(batches),
            0,
        )
        assert stats.buffered_bytes == 0
    finally:
        d.stop()


# --- rule 4: admission -----------------------------------------------------------


def test_too_large_is_about_ever_and_full_is_about_now(make, drain):
    d = make(interval=60, max_buffered_bytes=100)
    d.start()
    with pytest.raises(tempo.PayloadTooLarge):
        d.enqueue(b"x" * 101)
    d.enqueue(b"a" * 100)  # exactly the bound
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"b")
    with pytest.raises(tempo.PayloadTooLarge):  # "ever" wins over "now"
        d.enqueue(b"x" * 101)
    stats = d.stats()
    assert (stats.enqueued, stats.enqueued_bytes, stats.buffered_bytes) == (1, 100, 100)
    assert (stats.rejected_full, stats.rejected_too_large) == (1, 2)
    assert drain(d) == [[b"a" * 100]]


def test_admission_counts_open_sealed_and_handed_out_bytes(make):
    d = make(interval=60, max_buffered_bytes=30, max_batch_bytes=10)
    d.start()
    d.enqueue(b"1" * 10)  # sealed
    d.enqueue(b"2" * 10)  # sealed
    d.enqueue(b"3" * 5)  # open
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"4" * 6)  # 25 + 6 > 30
    d.enqueue(b"4" * 5)  # 25 + 5 = 30: fits exactly, seals [3, 4]
    assert d.stats().buffered_bytes == 30
    first = d.get_batch(timeout=WAIT)
    assert first.tolist() == [b"1" * 10]
    with pytest.raises(tempo.QueueFull):  # handed out, not released: still owned
        d.enqueue(b"5")
    first.release()
    assert d.stats().buffered_bytes == 20
    d.enqueue(b"5" * 10)
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"6")
    stats = d.stats()
    assert (stats.rejected_full, stats.rejected_too_large, stats.enqueued) == (3, 0, 5)


def test_rejected_payloads_are_not_delivered(make, drain):
    d = make(interval=60, max_buffered_bytes=10)
    d.start()
    d.enqueue(b"keep")
    with pytest.raises(tempo.PayloadTooLarge):
        d.enqueue(b"L" * 11)
    d.enqueue(b"also!!")
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"F")
    assert drain(d) == [[b"keep", b"also!!"]]


def test_admission_applies_before_start(make, drain):
    d = make(interval=60, max_buffered_bytes=8)
    d.enqueue(b"12345678")
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"9")
    with pytest.raises(tempo.PayloadTooLarge):
        d.enqueue(b"123456789")
    d.start()
    assert drain(d) == [[b"12345678"]]
