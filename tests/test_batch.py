"""The Batch object: a sequence of read-only memoryviews."""

from __future__ import annotations

import os
import socket

import pytest

WAIT = 5.0
ITEMS = [b"alpha", b"", b"bc"]  # 7 bytes


@pytest.fixture
def batch(make):
    d = make(interval=60, max_buffered_bytes=100, max_batch_bytes=7)
    d.start()
    for p in ITEMS:
        d.enqueue(p)
    b = d.get_batch(timeout=WAIT)
    yield b
    b.release()


def test_len_and_nbytes(batch):
    assert len(batch) == 3
    assert batch.nbytes == 7


def test_indexing(batch):
    assert [bytes(batch[i]) for i in range(3)] == ITEMS
    assert bytes(batch[-1]) == b"bc"
    assert bytes(batch[-2]) == b""
    assert bytes(batch[-3]) == b"alpha"
    assert isinstance(batch[1], memoryview)
    assert len(batch[1]) == 0


def test_slicing_gives_a_list_of_views(batch):
    views = batch[0:3:2]
    assert [bytes(v) for v in views] == [ITEMS[0], ITEMS[2]]
    assert all(isinstance(v, memoryview) and v.readonly for v in views)
    assert batch[5:9] == []
    del views
    batch.release()
    with pytest.raises(ValueError):
        batch[5:9]  # even an empty slice: the batch is released


@pytest.mark.parametrize("index", [3, 4, 100, -4, -100])
def test_index_out_of_range(batch, index):
    with pytest.raises(IndexError):
        batch[index]


def test_iteration(batch):
    views = list(batch)
    assert [type(v) for v in views] == [memoryview] * 3
    assert [v.tobytes() for v in views] == ITEMS
    assert all(v.readonly for v in views)
    del views
    # Iterating twice gives the same items.
    assert [bytes(v) for v in batch] == ITEMS


def test_nbytes_is_the_sum_of_item_lengths(batch):
    assert batch.nbytes == sum(len(v) for v in batch)


def test_tolist(batch):
    items = batch.tolist()
    assert type(items) is list
    assert items == ITEMS
    assert [type(x) for x in items] == [bytes] * 3


def test_release_is_idempotent(batch):
    batch.release()
    batch.release()
    assert len(batch) == 3
    assert batch.nbytes == 7
    with pytest.raises(ValueError):
        batch[0]


def test_context_manager_returns_the_batch_and_releases(make):
    d = make(interval=60, max_buffered_bytes=100, max_batch_bytes=2)
    d.start()
    d.enqueue(b"hi")
    b = d.get_batch(timeout=WAIT)
    with b as entered:
        assert entered is b
        assert bytes(entered[0]) == b"hi"
        assert d.stats().buffered_bytes == 2
    assert d.stats().buffered_bytes == 0
    with pytest.raises(ValueError):
        b[0]
    b.release()  # still fine after the with block released it


def test_context_manager_releases_when_the_block_raises(make):
    d = make(interval=60, max_buffered_bytes=100, max_batch_bytes=2)
    d.start()
    d.enqueue(b"hi")
    b = d.get_batch(timeout=WAIT)
    with pytest.raises(KeyError):
        with b:
            raise KeyError("boom")
    assert d.stats().buffered_bytes == 0
    with pytest.raises(ValueError):
        b[0]


def test_batch_counters(make):
    d = make(interval=60, max_buffered_bytes=100, max_batch_bytes=4)
    d.start()
    for p in (b"ab", b"cd", b"efgh", b"i"):
        d.enqueue(p)
    with d.get_batch(timeout=WAIT) as first, d.get_batch(timeout=WAIT) as second:
        assert first.tolist() == [b"ab", b"cd"]
        assert second.tolist() == [b"efgh"]
        stats = d.stats()
        assert (stats.batches, stats.items, stats.buffered_bytes) == (2, 3, 9)
    stats = d.stats()
    assert (stats.batches, stats.items, stats.buffered_bytes, stats.enqueued) == (2, 3, 1, 4)


def test_batch_goes_straight_to_os_writev(batch):
    r, w = os.pipe()
    try:
        assert os.writev(w, batch) == 7
        assert os.read(r, 100) == b"alphabc"
    finally:
        os.close(r)
        os.close(w)


def test_batch_goes_straight_to_socket_sendmsg(batch):
    a, b = socket.socketpair()
    with a, b:
        assert a.sendmsg(batch) == 7
        assert b.recv(100) == b"alphabc"
