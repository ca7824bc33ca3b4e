"""``QueueFull`` says which limit was hit, and ``stats()`` shows both (issue 15,
item 6): a dispatcher refuses a payload when its bytes would go over
``max_buffered_bytes`` *or* when every item slot is in use. Before, both read
"tempo: dispatcher queue full", and stats() showed only the bytes: a 4 MiB
bound full of 19-byte payloads (131,071 of them, 2.36 of 4.19 MB used)
looked like a full byte budget."""

from __future__ import annotations

import pytest

import tempo

PREFIX = "tempo: dispatcher queue full"


def test_a_full_byte_budget_says_so_with_the_numbers(make):
    d = make(max_buffered_bytes=100)
    d.enqueue(b"x" * 60)
    d.enqueue(b"y" * 30)
    with pytest.raises(tempo.QueueFull) as excinfo:
        d.enqueue(b"z" * 11)
    assert str(excinfo.value) == (
        f"{PREFIX}: payload bytes: 90 owned + a payload of 11 > max_buffered_bytes=100")
    assert d.stats().rejected_full == 1


def test_full_item_slots_say_so_with_the_numbers(make):
    limit = 4 * tempo.MiB
    d = make(max_buffered_bytes=limit)
    capacity = d.stats().max_buffered_items
    assert capacity == 131_071
    payload = b"p" * 19
    assert d.enqueue_many([payload] * (capacity + 1)) == capacity
    stats = d.stats()
    assert (stats.buffered_items, stats.buffered_bytes) == (capacity, 19 * capacity)
    with pytest.raises(tempo.QueueFull) as excinfo:
        d.enqueue(payload)
    assert str(excinfo.value) == (
        f"{PREFIX}: item slots: {capacity} items owned, the item capacity "
        f"(stats().max_buffered_items); {19 * capacity} of max_buffered_bytes={limit} "
        "bytes owned")


def test_queue_full_from_a_wait_that_timed_out_names_the_limit_too(make):
    d = make(max_buffered_bytes=10)
    d.enqueue(b"0123456789")
    with pytest.raises(tempo.QueueFull) as excinfo:
        d.enqueue(b"a", timeout=0.01)
    assert str(excinfo.value) == (
        f"{PREFIX}: payload bytes: 10 owned + a payload of 1 > max_buffered_bytes=10")


def test_stats_show_the_items_owned_and_the_item_capacity(make):
    d = make(max_buffered_bytes=tempo.MiB, max_batch_items=2)
    stats = d.stats()
    assert (stats.buffered_items, stats.max_buffered_items) == (0, d._max_items)
    d.start()
    d.enqueue_many([b"a", b"b", b"c"])  # [a b] sealed, [c] open
    assert d.stats().buffered_items == 3
    batch = d.get_batch(timeout=0)
    view = batch[0]
    batch.release()  # the view pins it: still owned
    assert d.stats().buffered_items == 3
    del view
    assert d.stats().buffered_items == 1


def _refused_size(exc):
    message = str(exc)
    assert message.startswith(f"{PREFIX}: payload bytes: 1000 owned + a payload of "), message
    return int(message.split("a payload of ")[1].split(" ")[0])


def test_each_queue_full_tells_its_own_refusal_whichever_way_it_was_refused(make):
    d = make(max_buffered_bytes=1000)
    d.enqueue(b"f" * 1000)
    tries = [
        (3, lambda: d.enqueue(b"b" * 3)),
        (5, lambda: d.enqueue(bytearray(5))),
        (7, lambda: d.enqueue(memoryview(b"m" * 7), timeout=0.001)),
        (9, lambda: d._try_enqueue(b"t" * 9, True)),
        (2, lambda: d.enqueue(b"b" * 2)),
    ]
    for size, attempt in tries:
        with pytest.raises(tempo.QueueFull) as excinfo:
            attempt()
        assert _refused_size(excinfo.value) == size
    assert d.stats().rejected_full == len(tries)


def test_queue_full_messages_of_parallel_producers_tell_their_own_refusals(make):
    # The refusal's numbers were kept in the dispatcher and read again after
    # its lock was let go: with producers in parallel (free-threaded build) a
    # message could tell another thread's payload.
    import threading

    d = make(max_buffered_bytes=1000)
    d.enqueue(b"f" * 1000)
    threads, rounds = 4, 3000
    start = threading.Barrier(threads)
    wrong: list[tuple[int, int]] = []

    def produce(size):
        payload = b"p" * size
        start.wait()
        for _ in range(rounds):
            try:
                d.enqueue(payload)
            except tempo.QueueFull as exc:
                told = _refused_size(exc)
                if told != size:
                    wrong.append((size, told))

    workers = [threading.Thread(target=produce, args=(1 + i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert wrong == []
    assert d.stats().rejected_full == threads * rounds
