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
