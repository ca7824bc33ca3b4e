"""``batch.writeall(target)`` writes to what the target is (issue 8, bug 11): an fd,
raw or buffered file, pipe or socket directly; any other object with ``write()``
through its own ``write()``, never behind its back through ``fileno()``. Before
the fix, ``writeall(gzip.open(path, "wb"))`` wrote the raw bytes to the gzip
file's descriptor, behind the compressor, and the file no longer decompressed."""

from __future__ import annotations

import gzip
import io
import os
import socket
import tempfile

import pytest

from conftest import WAIT

ITEMS = [b"first-", b"", b"second-", b"third"]
DATA = b"".join(ITEMS)


@pytest.fixture
def batch(make):
    d = make(max_buffered_bytes=1024)
    d.start()
    for item in ITEMS:
        d.enqueue(item)
    d._seal_now()
    with d.get_batch(timeout=WAIT) as b:
        yield b


def test_a_gzip_file_gets_the_bytes_through_its_compressor(batch, tmp_path):
    path = tmp_path / "out.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"head-")
        batch.writeall(f)
        f.write(b"-tail")
    assert gzip.decompress(path.read_bytes()) == b"head-" + DATA + b"-tail"


def test_a_bytesio_gets_the_bytes(batch):
    buf = io.BytesIO()
    buf.write(b">")
    batch.writeall(buf)
    assert buf.getvalue() == b">" + DATA


def test_a_text_wrappers_buffer_keeps_the_order(batch, tmp_path):
    path = tmp_path / "out.txt"
    with open(path, "w", encoding="ascii") as text:
        text.write("head-")
        text.flush()
        batch.writeall(text.buffer)
        text.write("-tail")
    assert path.read_bytes() == b"head-" + DATA + b"-tail"


def test_a_subclass_that_changes_write_is_used(batch, tmp_path):
    class Counting(io.BufferedWriter):
        calls = 0

        def write(self, data):
            Counting.calls += 1
            return super().write(bytes(data).upper())

    path = tmp_path / "out"
    with Counting(io.FileIO(path, "wb")) as f:
        batch.writeall(f)
    assert path.read_bytes() == DATA.upper()
    assert Counting.calls == 1


def test_a_raw_write_that_takes_part_is_resumed(batch):
    class Trickle:
        def __init__(self):
            self.out = bytearray()

        def write(self, data):
            self.out += bytes(data[:3])
            return min(3, len(data))

        def fileno(self):  # must not be used: write() decides
            raise AssertionError("writeall went behind write() through fileno()")

    sink = Trickle()
    batch.writeall(sink)
    assert bytes(sink.out) == DATA


@pytest.mark.parametrize("kind", ["fd", "raw", "buffered", "buffered-random", "pipe", "socket"])
def test_files_pipes_and_sockets_are_written_directly(batch, tmp_path, kind):
    path = tmp_path / "out"
    if kind in ("pipe", "socket"):
        if kind == "pipe":
            r, w = os.pipe()
            target, close = w, lambda: os.close(w)
        else:
            a, b = socket.socketpair()
            r, target, close = b.fileno(), a, a.close
        try:
            batch.writeall(target)
        finally:
            close()
        got = b""
        while chunk := os.read(r, 65536):
            got += chunk
        if kind == "pipe":
            os.close(r)
        else:
            b.close()
        assert got == DATA
        return
    opener = {
        "fd": lambda: os.open(path, os.O_WRONLY | os.O_CREAT),
        "raw": lambda: open(path, "wb", buffering=0),
        "buffered": lambda: open(path, "wb"),
        "buffered-random": lambda: open(path, "w+b"),
    }[kind]
    f = opener()
    try:
        if kind != "fd":
            f.write(b"head-")
        batch.writeall(f)
    finally:
        os.close(f) if kind == "fd" else f.close()
    assert path.read_bytes() == (b"" if kind == "fd" else b"head-") + DATA


def test_a_named_temporary_file_gets_the_bytes_in_order(batch):
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"head-")
        batch.writeall(f)
        f.write(b"-tail")
        f.flush()
        with open(f.name, "rb") as back:
            assert back.read() == b"head-" + DATA + b"-tail"


@pytest.mark.parametrize("target", [True, 1.5, "out.txt", object()], ids=repr)
def test_what_is_neither_a_file_nor_a_descriptor_is_a_type_error(batch, target):
    with pytest.raises(TypeError):
        batch.writeall(target)


def test_writing_a_released_batch_through_write_is_refused(batch):
    batch.release()
    with pytest.raises(ValueError, match="released"):
        batch.writeall(io.BytesIO())
