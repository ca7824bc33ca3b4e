"""What ``enqueue`` accepts: any C-contiguous bytes-like object, copied once."""

from __future__ import annotations

import array

import pytest

import tempo


@pytest.mark.parametrize(
    "make_payload, expected",
    [
        (lambda: b"abc", b"abc"),
        (lambda: bytearray(b"abc"), b"abc"),
        (lambda: memoryview(b"abc"), b"abc"),
        (lambda: memoryview(bytearray(b"abcdef"))[1:4], b"bcd"),
        (lambda: array.array("B", [1, 2, 250]), bytes([1, 2, 250])),
        (lambda: array.array("i", [1, -2, 3]), array.array("i", [1, -2, 3]).tobytes()),
        (lambda: array.array("d", [0.5]), array.array("d", [0.5]).tobytes()),
        (lambda: memoryview(bytes(range(8))).cast("B", (2, 4)), bytes(range(8))),
        (lambda: memoryview(array.array("i", [7, 8])), array.array("i", [7, 8]).tobytes()),
    ],
    ids=[
        "bytes",
        "bytearray",
        "memoryview",
        "memoryview-slice",
        "array-B",
        "array-i",
        "array-d",
        "2d-memoryview",
        "memoryview-of-array",
    ],
)
def test_bytes_like_payloads_are_delivered_as_their_bytes(make, drain, make_payload, expected):
    d = make(max_buffered_bytes=1024)
    d.start()
    d.enqueue(make_payload())
    assert drain(d) == [[expected]]
    stats = d.stats()
    assert (stats.enqueued, stats.enqueued_bytes, stats.items) == (1, len(expected), 1)


def test_size_is_nbytes_not_len(make):
    # array('i', 3 items) is 12 bytes: len() would say 3.
    payload = array.array("i", [1, 2, 3])
    assert memoryview(payload).nbytes == 12
    d = make(max_buffered_bytes=11)
    with pytest.raises(tempo.PayloadTooLarge):
        d.enqueue(payload)
    d = make(max_buffered_bytes=12)
    d.enqueue(payload)
    assert d.stats().enqueued_bytes == 12
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"x")


def test_2d_payload_size_is_its_total_bytes(make):
    payload = memoryview(bytes(range(8))).cast("B", (2, 4))
    d = make(max_buffered_bytes=7)
    with pytest.raises(tempo.PayloadTooLarge):
        d.enqueue(payload)


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "",
        None,
        5,
        0,
        [1, 2, 3],
        3.0,
        object(),
    ],
    ids=["str", "empty-str", "None", "int", "zero", "list", "float", "object"],
)
def test_non_bytes_like_payloads_are_type_errors(make, drain, bad):
    d = make(max_buffered_bytes=1024)
    d.start()
    with pytest.raises(TypeError):
        d.enqueue(bad)
    d.enqueue(b"ok")
    assert drain(d) == [[b"ok"]]
    stats = d.stats()
    assert (stats.enqueued, stats.enqueued_bytes, stats.rejected_full, stats.rejected_too_large) == (
        1,
        2,
        0,
        0,
    )


def test_non_contiguous_buffer_is_a_buffer_error(make, drain):
    d = make(max_buffered_bytes=1024)
    d.start()
    strided = memoryview(b"abcdefgh")[::2]
    assert not strided.c_contiguous
    with pytest.raises(BufferError):
        d.enqueue(strided)
    d.enqueue(b"ok")
    assert drain(d) == [[b"ok"]]
    assert d.stats().enqueued == 1


def test_payload_is_copied_at_enqueue(make, drain):
    d = make(max_buffered_bytes=1024)
    d.start()
    source = bytearray(b"original")
    d.enqueue(source)
    source[:] = b"CHANGED!"
    view_source = bytearray(b"viewdata")
    d.enqueue(memoryview(view_source))
    view_source[0:4] = b"XXXX"
    assert drain(d) == [[b"original", b"viewdata"]]


def test_enqueue_does_not_keep_the_payload_exported(make):
    # After enqueue returns, tempo holds no buffer export of the caller's object:
    # a bytearray can be resized again.
    d = make(max_buffered_bytes=1024)
    source = bytearray(b"abc")
    d.enqueue(source)
    source.extend(b"def")
    assert source == bytearray(b"abcdef")


@pytest.mark.parametrize(
    "empty",
    [b"", bytearray(), memoryview(b""), array.array("i")],
    ids=["bytes", "bytearray", "memoryview", "array"],
)
def test_empty_payload_is_accepted_and_delivered_as_an_empty_item(make, drain, empty):
    d = make(max_buffered_bytes=16)
    d.start()
    d.enqueue(empty)
    assert drain(d) == [[b""]]
    stats = d.stats()
    assert (stats.enqueued, stats.enqueued_bytes, stats.items, stats.batches) == (1, 0, 1, 1)


def test_empty_payloads_keep_their_place_among_others(make, drain):
    d = make(max_buffered_bytes=64)
    d.start()
    for p in (b"", b"a", b"", b"", b"bc", b""):
        d.enqueue(p)
    assert drain(d) == [[b"", b"a", b"", b"", b"bc", b""]]
