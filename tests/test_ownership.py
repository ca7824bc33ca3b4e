"""Ownership: bytes stay owned (and count toward max_buffered_bytes) until the
arena can reuse them; views never show another payload's bytes."""

from __future__ import annotations

import pytest

import tempo
from strategies import payload

WAIT = 5.0
PAYLOAD = b"0123456789"


def full_dispatcher(make):
    """A started dispatcher whose whole budget (10 bytes) is one sealed batch."""
    d = make(interval=60, max_buffered_bytes=10, max_batch_bytes=10)
    d.start()
    d.enqueue(PAYLOAD)
    return d


# --- a batch owns its bytes until released ---------------------------------------


def test_handed_out_batch_owns_its_bytes_until_release(make):
    d = full_dispatcher(make)
    batch = d.get_batch(timeout=WAIT)
    assert d.stats().buffered_bytes == 10
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"x")
    batch.release()
    assert d.stats().buffered_bytes == 0
    d.enqueue(b"y" * 10)


def test_leaving_the_with_block_releases(make):
    d = full_dispatcher(make)
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [PAYLOAD]
        with pytest.raises(tempo.QueueFull):
            d.enqueue(b"x")
    assert d.stats().buffered_bytes == 0
    d.enqueue(b"y" * 10)


def test_dropping_the_last_reference_releases(make):
    d = full_dispatcher(make)
    batch = d.get_batch(timeout=WAIT)
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"x")
    del batch
    assert d.stats().buffered_bytes == 0
    d.enqueue(b"y" * 10)


def test_tolist_copies_and_does_not_pin(make):
    d = full_dispatcher(make)
    batch = d.get_batch(timeout=WAIT)
    copied = batch.tolist()
    batch.release()
    assert d.stats().buffered_bytes == 0
    d.enqueue(b"y" * 10)
    with d.get_batch(timeout=WAIT) as other:
        assert other.tolist() == [b"y" * 10]
    assert copied == [PAYLOAD]


# --- views kept past release pin their bytes ---------------------------------------


def _keep(batch, how):
    if how == "item":
        return batch[0]
    if how == "negative-index":
        return batch[-1]
    if how == "iteration":
        return next(iter(batch))
    if how == "slice":
        return batch[0][3:7]
    if how == "slice-of-slice":
        return batch[0][2:9][1:3]
    if how == "memoryview-of-item":
        return memoryview(batch[0])
    if how == "cast":
        return batch[0].cast("c")
    raise AssertionError(how)


EXPECTED_KEPT = {
    "item": PAYLOAD,
    "negative-index": PAYLOAD,
    "iteration": PAYLOAD,
    "slice": PAYLOAD[3:7],
    "slice-of-slice": PAYLOAD[2:9][1:3],
    "memoryview-of-item": PAYLOAD,
    "cast": PAYLOAD,
}


def _release(d, keep, how):
    """Get the batch, keep a view of it (``keep``), release the batch (``how``)."""
    if how == "with":
        with d.get_batch(timeout=WAIT) as batch:
            view = _keep(batch, keep)
        return view
    batch = d.get_batch(timeout=WAIT)
    view = _keep(batch, keep)
    if how == "release":
        batch.release()
    elif how == "del":
        del batch
    else:
        raise AssertionError(how)
    return view


@pytest.mark.parametrize("release", ["release", "with", "del"])
@pytest.mark.parametrize("keep", sorted(EXPECTED_KEPT))
def test_view_kept_past_release_pins_until_it_dies(make, keep, release):
    d = full_dispatcher(make)
    view = _release(d, keep, release)
    # The view still shows its bytes, and they are still owned.
    assert bytes(view) == EXPECTED_KEPT[keep]
    assert d.stats().buffered_bytes >= len(EXPECTED_KEPT[keep])
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"x" * 10)
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"x")
    assert bytes(view) == EXPECTED_KEPT[keep]
    del view
    # The view died: the space returns.
    assert d.stats().buffered_bytes == 0
    d.enqueue(b"y" * 10)
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"y" * 10]


def test_every_view_must_die_before_the_space_returns(make):
    d = full_dispatcher(make)
    batch = d.get_batch(timeout=WAIT)
    first, second, part = batch[0], batch[0], batch[0][5:]
    batch.release()
    del first
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"x")
    del second
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"x")
    assert bytes(part) == b"56789"
    del part
    d.enqueue(b"x" * 10)


def test_released_memoryview_unpins(make):
    d = full_dispatcher(make)
    batch = d.get_batch(timeout=WAIT)
    view = batch[0]
    batch.release()
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"x")
    view.release()
    assert d.stats().buffered_bytes == 0
    d.enqueue(b"x" * 10)


def test_pinned_view_keeps_its_bytes_through_heavy_traffic(make):
    limit = 1024
    # max_batch_bytes=1: every non-empty payload is sealed alone at once.
    d = make(interval=60, max_buffered_bytes=limit, max_batch_bytes=1)
    d.start()
    original = b"PINNED-" + bytes(range(33))
    d.enqueue(original)
    batch = d.get_batch(timeout=WAIT)
    view = batch[0]
    tail = batch[0][-5:]
    batch.release()
    del batch

    accepted = 0
    accepted_bytes = 0
    for i in range(4000):
        p = payload(i + 1, 1 + (i * 7) % 61)
        try:
            d.enqueue(p)
        except tempo.QueueFull:
            continue
        accepted += 1
        accepted_bytes += len(p)
        with d.get_batch(timeout=WAIT) as got:
            assert got.tolist() == [p]
        assert bytes(view) == original
        stats = d.stats()
        assert len(original) <= stats.buffered_bytes <= limit
    assert bytes(view) == original
    assert bytes(tail) == original[-5:]
    # With 40 bytes pinned, at least the other 984 bytes were available.
    assert accepted_bytes >= limit - len(original) - 60
    assert accepted > 0
    del view, tail
    assert d.stats().buffered_bytes == 0
    d.enqueue(b"z" * limit)  # the whole budget is usable again
    with d.get_batch(timeout=WAIT) as got:
        assert got.tolist() == [b"z" * limit]


# --- released batches ------------------------------------------------------------


def test_indexing_a_released_batch_raises_value_error(make):
    d = make(interval=60, max_buffered_bytes=100, max_batch_bytes=7)
    d.start()
    for p in (b"alpha", b"", b"bc"):
        d.enqueue(p)
    batch = d.get_batch(timeout=WAIT)
    batch.release()
    for i in (0, 1, 2, -1, -3):
        with pytest.raises(ValueError):
            batch[i]
    assert len(batch) == 3
    assert batch.nbytes == 7


def test_views_are_read_only_bytes(make):
    d = make(interval=60, max_buffered_bytes=100, max_batch_bytes=8)
    d.start()
    d.enqueue(memoryview(bytes(range(8))).cast("B", (2, 4)))
    with d.get_batch(timeout=WAIT) as batch:
        views = [batch[0], batch[-1], next(iter(batch))]
        for view in views:
            assert isinstance(view, memoryview)
            assert view.readonly
            assert view.format == "B"
            assert view.itemsize == 1
            assert len(view) == view.nbytes == 8
            assert view.tobytes() == bytes(range(8))
            with pytest.raises(TypeError):
                view[0] = 1
            with pytest.raises(TypeError):
                view[0:2] = b"zz"
        del view, views
        assert batch.tolist() == [bytes(range(8))]


def test_views_cannot_be_written_through_a_new_memoryview(make):
    d = make(interval=60, max_buffered_bytes=100, max_batch_bytes=3)
    d.start()
    d.enqueue(b"abc")
    with d.get_batch(timeout=WAIT) as batch:
        wrapped = memoryview(batch[0])
        assert wrapped.readonly
        with pytest.raises(TypeError):
            wrapped[0] = ord("z")
        with pytest.raises(TypeError):
            batch[0].cast("B")[0] = 1
        del wrapped
        assert batch.tolist() == [b"abc"]
