"""Many producer and consumer threads."""

from __future__ import annotations

import collections
import struct
import threading
import time

import pytest

import tempo
from conftest import wait_until

WAIT = 5.0


def make_payload(producer: int, seq: int) -> bytes:
    # 8-byte header, then 0-12 bytes of filler derived from the header.
    header = struct.pack(">II", producer, seq)
    return header + bytes([(producer * 31 + seq) % 256]) * (seq % 13)


def parse(item: bytes) -> tuple[int, int]:
    producer, seq = struct.unpack(">II", item[:8])
    assert item == make_payload(producer, seq), "payload bytes were corrupted"
    return producer, seq


def produce(d, producer: int, count: int) -> int:
    """Enqueue ``count`` payloads, retrying on QueueFull; return the retries."""
    retries = 0
    for seq in range(count):
        p = make_payload(producer, seq)
        while True:
            try:
                d.enqueue(p)
                break
            except tempo.QueueFull:
                retries += 1
                time.sleep(0.0002)  # back off; consumers free space
    return retries


def consume(d) -> list[list[bytes]]:
    got = []
    for batch in d.batches():
        got.append(batch.tolist())
    return got


@pytest.mark.parametrize(
    "producers, consumers, count, config",
    [
        (4, 3, 5000, {"interval": 0.005, "max_batch_bytes": 256, "max_buffered_bytes": 64 * 1024}),
        (3, 2, 700, {"interval": 0.002, "max_batch_bytes": 48, "max_buffered_bytes": 96}),
        (2, 4, 1000, {"interval": 0.01, "max_batch_bytes": 0, "max_buffered_bytes": 512}),
    ],
    ids=["roomy", "tight", "interval-only"],
)
def test_every_payload_is_delivered_exactly_once_in_producer_order(
    make, spawn, producers, consumers, count, config
):
    d = make(**config)
    d.start()
    consumer_tasks = [spawn(consume, d) for _ in range(consumers)]
    producer_tasks = [spawn(produce, d, p, count) for p in range(producers)]
    for task in producer_tasks:
        task.result(timeout=30)
    d.shutdown(timeout=WAIT)
    per_consumer = [task.result() for task in consumer_tasks]

    max_batch = config["max_batch_bytes"]
    seen = collections.Counter()
    total_batches = 0
    for batches in per_consumer:
        last_seq = {}
        for batch in batches:
            total_batches += 1
            assert batch, "an empty batch was delivered"
            if max_batch > 0 and len(batch) > 1:
                assert sum(map(len, batch)) <= max_batch
            for item in batch:
                producer, seq = parse(item)
                seen[producer, seq] += 1
                # A consumer sees batches in delivery order, and batches keep
                # enqueue order: per producer, sequence numbers only grow.
                assert seq > last_seq.get(producer, -1)
                last_seq[producer] = seq
    expected = {(p, s) for p in range(producers) for s in range(count)}
    assert set(seen) == expected
    assert set(seen.values()) == {1}

    stats = d.stats()
    total = producers * count
    assert (stats.enqueued, stats.items, stats.dropped) == (total, total, 0)
    assert stats.batches == total_batches
    assert stats.buffered_bytes == 0
    assert stats.enqueued_bytes == sum(
        len(make_payload(p, s)) for p in range(producers) for s in range(count)
    )


def test_single_consumer_sees_global_order_per_producer(make, spawn):
    d = make(interval=0.003, max_batch_bytes=100, max_buffered_bytes=4096)
    d.start()
    consumer = spawn(consume, d)
    producer_tasks = [spawn(produce, d, p, 1500) for p in range(3)]
    for task in producer_tasks:
        task.result(timeout=30)
    d.shutdown(timeout=WAIT)
    items = [parse(item) for batch in consumer.result() for item in batch]
    for p in range(3):
        assert [s for q, s in items if q == p] == list(range(1500))


def test_concurrent_get_batch_hands_each_batch_to_one_consumer(make, spawn):
    # Batches are sealed up front; many consumers race for them.
    d = make(interval=60, max_batch_bytes=4, max_buffered_bytes=4096)
    for i in range(400):
        d.enqueue(i.to_bytes(4, "big"))
    go = threading.Event()

    def race():
        go.wait(WAIT)
        got = []
        while True:
            try:
                batch = d.get_batch(timeout=0.2)
            except TimeoutError:
                return got
            got.extend(batch.tolist())
            batch.release()

    tasks = [spawn(race) for _ in range(6)]
    d.start()
    go.set()
    results = [task.result(timeout=30) for task in tasks]
    numbers = sorted(int.from_bytes(x, "big") for got in results for x in got)
    assert numbers == list(range(400))
    for got in results:
        values = [int.from_bytes(x, "big") for x in got]
        assert values == sorted(values)


def test_stop_under_load_loses_nothing_silently(make, spawn):
    # Everything accepted is either handed to a consumer or counted as dropped.
    d = make(interval=0.002, max_batch_bytes=64, max_buffered_bytes=2048)
    d.start()
    stop_producing = threading.Event()

    def hammer(producer):
        accepted = 0
        for seq in range(10**9):
            if stop_producing.is_set():
                return accepted
            try:
                d.enqueue(make_payload(producer, seq))
            except tempo.QueueFull:
                time.sleep(0.0001)
                continue
            except tempo.Stopped:
                return accepted
            accepted += 1
        return accepted

    def count_items():
        n = 0
        while True:
            try:
                batch = d.get_batch(timeout=WAIT)
            except tempo.Stopped:
                return n
            for item in batch.tolist():  # copies: a kept view would pin space
                parse(item)
            n += len(batch)
            batch.release()

    consumers = [spawn(count_items) for _ in range(2)]
    producers = [spawn(hammer, p) for p in range(3)]
    # Let traffic flow until plenty was delivered, then stop mid-stream.
    deadline = time.monotonic() + WAIT
    while d.stats().items < 1000 and time.monotonic() < deadline:
        time.sleep(0.005)
    d.stop()
    stop_producing.set()
    accepted = sum(task.result(timeout=WAIT) for task in producers)
    delivered = sum(task.result(timeout=WAIT) for task in consumers)
    stats = d.stats()
    assert stats.items >= 1000
    assert stats.enqueued == accepted
    assert stats.items == delivered
    assert stats.enqueued == stats.items + stats.dropped
    assert stats.buffered_bytes == 0


def test_stop_and_shutdown_from_many_threads_at_once(make, spawn):
    d = make(interval=60, max_batch_bytes=8)
    d.start()
    for i in range(50):
        d.enqueue(i.to_bytes(8, "big"))
    go = threading.Event()

    def call(fn):
        go.wait(WAIT)
        try:
            fn()
        except (tempo.Stopped, TimeoutError) as exc:
            return type(exc)
        return None

    tasks = [spawn(call, d.stop) for _ in range(4)]
    tasks += [spawn(call, lambda: d.shutdown(timeout=1.0)) for _ in range(4)]
    go.set()
    outcomes = [task.result(timeout=WAIT) for task in tasks]
    # stop() never raises; shutdown() either returns, raises Stopped (stopped while
    # waiting) or TimeoutError (nobody consumes).
    assert outcomes[:4] == [None] * 4
    assert set(outcomes[4:]) <= {None, tempo.Stopped, TimeoutError}
    with pytest.raises(tempo.Stopped):
        d.enqueue(b"x")
    stats = d.stats()
    assert stats.enqueued == stats.items + stats.dropped == 50
    assert stats.items == 0


def _enqueue_bytes(d, p: bytes) -> None:
    d.enqueue(p)


def _enqueue_bytearray(d, p: bytes) -> None:
    d.enqueue(bytearray(p))


def _enqueue_many(d, p: bytes) -> None:
    assert d.enqueue_many([p]) == 1


def _enqueue_waiting(d, p: bytes) -> None:
    d.enqueue(p, timeout=None)


@pytest.mark.parametrize(
    "admit", [_enqueue_bytes, _enqueue_bytearray, _enqueue_many, _enqueue_waiting],
    ids=["bytes", "buffer", "enqueue_many", "waiting"],
)
def test_a_batch_sealed_by_size_wakes_a_consumer_blocked_in_get_batch(make, spawn, admit):
    # Admission seals a batch and wakes its consumer only after letting go
    # of the dispatcher's lock (Core._signal_ready). The interval is an
    # hour and the consumer is not the main thread, so (on a GIL build) its
    # wait is not sliced: only that wake-up can end it.
    d = make(interval=3600.0, max_batch_bytes=8)
    d.start()
    consumer = spawn(d.get_batch)
    wait_until(lambda: d._waiters()[0] == 1, what="the consumer blocking")
    producer = spawn(admit, d, b"12345678")
    batch = consumer.result(timeout=WAIT)
    assert producer.result() is None
    assert batch.tolist() == [b"12345678"]
    batch.release()


def test_a_producer_that_waited_for_room_and_seals_wakes_the_blocked_consumer(make, spawn):
    # The same through the waiting admission: the batch it seals is sealed
    # after a wait for room, then its consumer is woken after the unlock.
    d = make(interval=3600.0, max_batch_bytes=8, max_buffered_bytes=16)
    d.start()
    d.enqueue(b"aaaaaaaa")
    d.enqueue(b"bbbbbbbb")
    first, second = d.get_batch(timeout=WAIT), d.get_batch(timeout=WAIT)
    producer = spawn(d.enqueue, b"cccccccc", timeout=None)
    wait_until(lambda: d._waiters()[1] == 1, what="the producer waiting for room")
    consumer = spawn(d.get_batch)
    wait_until(lambda: d._waiters()[0] == 1, what="the consumer blocking")
    first.release()
    batch = consumer.result(timeout=WAIT)
    assert producer.result() is None
    assert batch.tolist() == [b"cccccccc"]
    batch.release()
    second.release()
