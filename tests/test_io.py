"""I/O straight from the arena: ``batch.sendall(sock)``, ``batch.writeall(fd)``,
and batches handed to ``socket.sendmsg`` / ``os.writev`` directly."""

from __future__ import annotations

import errno
import os
import random
import socket
import threading
import time

import pytest

import tempo

WAIT = 5.0

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "socketpair") or os.name != "posix", reason="needs POSIX I/O"
)


def take_batch(make, payloads, **config):
    """A started dispatcher and one handed-out batch holding ``payloads``."""
    config.setdefault("max_buffered_bytes", max(sum(map(len, payloads)), 1) * 2)
    d = make(interval=60, **config)
    d.start()
    for payload in payloads:
        d.enqueue(payload)
    return d, seal_and_take(d)


def seal_and_take(d):
    with pytest.raises(TimeoutError):
        d.flush(timeout=0)  # seals; nobody has taken it yet
    return d.get_batch(timeout=WAIT)


class Reader:
    """Reads ``n`` bytes (or to EOF) from a socket or fd in a thread."""

    def __init__(self, source, n):
        self.source = source
        self.n = n
        self.data = bytearray()
        self.error = None
        self.got_some = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _read(self, size):
        if isinstance(self.source, socket.socket):
            return self.source.recv(size)
        return os.read(self.source, size)

    def _run(self):
        try:
            while len(self.data) < self.n:
                chunk = self._read(min(65536, self.n - len(self.data)))
                if not chunk:
                    break
                self.data += chunk
                self.got_some.set()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self.got_some.set()

    def result(self):
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "reader did not finish"
        if self.error is not None:
            raise self.error
        return bytes(self.data)


def drain_nonblocking(source) -> bytes:
    """Everything readable right now from a socket or fd (without blocking)."""
    out = bytearray()
    if isinstance(source, socket.socket):
        read = lambda: source.recv(65536, socket.MSG_DONTWAIT)  # noqa: E731
    else:
        read = lambda: os.read(source, 65536)  # noqa: E731
        was_blocking = os.get_blocking(source)
        os.set_blocking(source, False)
    try:
        while True:
            try:
                chunk = read()
            except BlockingIOError:
                return bytes(out)
            if not chunk:
                return bytes(out)
            out += chunk
    finally:
        if not isinstance(source, socket.socket):
            os.set_blocking(source, was_blocking)


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def pipe():
    r, w = os.pipe()
    fds = [r, w]
    yield fds
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class FileNo:
    def __init__(self, fd):
        self._fd = fd

    def fileno(self):
        return self._fd


def random_bytes(n, seed=0):
    return random.Random(seed).randbytes(n)


PAYLOAD_SETS = {
    "one": [b"hello"],
    "several": [b"alpha", b"beta", b"gamma"],
    "with-empty-items": [b"", b"a", b"", b"", b"bc", b""],
    "only-empty-items": [b"", b"", b""],
    "many-items": [b"%05d|" % i for i in range(3000)],  # more than IOV_MAX
    "one-big": [random_bytes(1 << 20, seed=1)],
    "big-and-small": [b"head", random_bytes(300_000, seed=2), b"", b"tail"] * 3,
}


# --- sendall -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PAYLOAD_SETS))
def test_sendall_sends_every_byte_in_order(make, sockpair, name):
    a, b = sockpair
    payloads = PAYLOAD_SETS[name]
    expected = b"".join(payloads)
    d, batch = take_batch(make, payloads)
    assert batch.nbytes == len(expected)
    reader = Reader(b, len(expected))
    assert batch.sendall(a) is None
    assert reader.result() == expected
    assert drain_nonblocking(b) == b""
    # sendall neither releases nor changes the batch.
    assert not batch.released
    assert batch.tolist() == payloads
    batch.release()
    assert d.stats().buffered_bytes == 0


@pytest.mark.parametrize("name", list(PAYLOAD_SETS))
@pytest.mark.parametrize("how", ["int", "fileno-object", "file-object"])
def test_writeall_writes_every_byte_in_order(make, pipe, name, how):
    r, w = pipe
    payloads = PAYLOAD_SETS[name]
    expected = b"".join(payloads)
    d, batch = take_batch(make, payloads)
    reader = Reader(r, len(expected))  # the big sets exceed the pipe buffer
    if how == "int":
        assert batch.writeall(w) is None
    elif how == "fileno-object":
        assert batch.writeall(FileNo(w)) is None
    else:
        with os.fdopen(w, "wb", buffering=0, closefd=False) as f:
            assert batch.writeall(f) is None
    assert reader.result() == expected
    assert batch.tolist() == payloads


def test_writeall_to_a_socket_fd(make, sockpair):
    a, b = sockpair
    d, batch = take_batch(make, [b"via", b" ", b"fd"])
    batch.writeall(a.fileno())
    batch.writeall(a)  # has fileno()
    assert b.recv(12, socket.MSG_WAITALL) == b"via fdvia fd"


def test_sendmsg_and_writev_take_a_batch_directly(make, sockpair, pipe):
    a, b = sockpair
    r, w = pipe
    payloads = [b"one", b"", b"two", b"three"]
    d, batch = take_batch(make, payloads)
    assert a.sendmsg(batch) == batch.nbytes == 11
    assert b.recv(11, socket.MSG_WAITALL) == b"onetwothree"
    assert os.writev(w, batch) == 11
    assert os.read(r, 100) == b"onetwothree"
    # memoryviews of the batch stay usable for I/O until released.
    assert a.sendmsg(list(batch)) == 11
    assert b.recv(11, socket.MSG_WAITALL) == b"onetwothree"


@pytest.mark.parametrize("method", ["sendall", "writeall", "sendmsg", "writev"])
def test_io_of_batches_that_wrap_around_the_ring(make, sockpair, pipe, method):
    # A 4 KiB budget, about 600 KiB pumped through it, the previous batch kept
    # until the next is taken: batch regions start everywhere in the ring and
    # many straddle its end.
    a, b = sockpair
    r, w = pipe
    d = make(interval=60, max_buffered_bytes=4096)
    d.start()
    rng = random.Random(f"wrap-{method}")
    sizes = [0, 1, 3, 64, 333, 500, 1000, 1500]
    previous = None
    pumped = 0
    for round_ in range(500):
        budget = 4096 - (previous.nbytes if previous is not None else 0)
        items = []
        for _ in range(rng.randint(1, 6)):
            size = rng.choice(sizes)
            if size > budget:
                break
            budget -= size
            items.append(rng.randbytes(size))
        if not items:
            items.append(b"")
        for item in items:
            d.enqueue(item)
        batch = seal_and_take(d)
        if previous is not None:
            previous.release()
        expected = b"".join(items)
        if method == "sendall":
            batch.sendall(a)
            got = drain_nonblocking(b)
        elif method == "writeall":
            batch.writeall(w)
            got = drain_nonblocking(r)
        elif method == "sendmsg":
            assert a.sendmsg(batch) == len(expected)
            got = drain_nonblocking(b)
        else:
            assert os.writev(w, batch) == len(expected)
            got = drain_nonblocking(r)
        assert got == expected, f"round {round_}"
        assert batch.tolist() == items
        pumped += len(expected)
        previous = batch
    previous.release()
    assert pumped > 100 * 4096
    assert d.stats().buffered_bytes == 0


# --- partial writes, timeouts, errors ---------------------------------------------------------


def small_buffers(a, b):
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def test_nonblocking_socket_that_would_block_raises_with_the_bytes_sent(make, sockpair):
    a, b = sockpair
    small_buffers(a, b)
    a.setblocking(False)
    data = random_bytes(1 << 20, seed=3)
    d, batch = take_batch(make, [data[:1000], data[1000:]])
    with pytest.raises(BlockingIOError) as info:
        batch.sendall(a)
    written = info.value.characters_written
    assert 0 < written < len(data)
    assert drain_nonblocking(b) == data[:written]
    assert batch.tolist() == [data[:1000], data[1000:]]


def test_nonblocking_pipe_that_would_block_raises_with_the_bytes_written(make, pipe):
    r, w = pipe
    os.set_blocking(w, False)
    data = random_bytes(1 << 20, seed=4)
    d, batch = take_batch(make, [data])
    with pytest.raises(BlockingIOError) as info:
        batch.writeall(w)
    written = info.value.characters_written
    assert 0 < written < len(data)
    assert drain_nonblocking(r) == data[:written]


def test_nonblocking_socket_with_room_sends_everything(make, sockpair):
    a, b = sockpair
    a.setblocking(False)
    d, batch = take_batch(make, [b"fits", b" easily"])
    batch.sendall(a)
    assert drain_nonblocking(b) == b"fits easily"


def test_socket_timeout_raises_timeout_error_when_the_peer_never_reads(make, sockpair):
    a, b = sockpair
    small_buffers(a, b)
    a.settimeout(0.3)
    data = random_bytes(1 << 20, seed=5)
    d, batch = take_batch(make, [data])
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        batch.sendall(a)
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 0.3 + WAIT
    # What did go out is an in-order prefix.
    sent = drain_nonblocking(b)
    assert 0 < len(sent) < len(data)
    assert sent == data[: len(sent)]


def test_socket_timeout_is_enough_when_the_peer_reads(make, sockpair):
    a, b = sockpair
    small_buffers(a, b)
    a.settimeout(WAIT)
    data = random_bytes(1 << 20, seed=6)
    d, batch = take_batch(make, [data])
    reader = Reader(b, len(data))
    batch.sendall(a)
    assert reader.result() == data


def test_sendall_to_a_closed_peer_raises(make, sockpair):
    a, b = sockpair
    b.close()
    d, batch = take_batch(make, [b"nobody listens"])
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        batch.sendall(a)


def test_sendall_when_the_peer_closes_midway_raises(make, sockpair):
    a, b = sockpair
    small_buffers(a, b)
    data = random_bytes(1 << 20, seed=7)
    d, batch = take_batch(make, [data])

    def read_a_little_then_close():
        got = b.recv(1000)
        b.close()
        return got

    closer = threading.Thread(target=read_a_little_then_close, daemon=True)
    closer.start()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        batch.sendall(a)
    closer.join(WAIT)


def test_writeall_to_a_pipe_without_reader_raises_broken_pipe(make, pipe):
    r, w = pipe
    os.close(r)
    d, batch = take_batch(make, [b"x" * 10])
    with pytest.raises(BrokenPipeError):
        batch.writeall(w)


def test_writeall_to_a_bad_fd_raises_oserror(make, pipe):
    r, w = pipe
    os.close(w)
    d, batch = take_batch(make, [b"x"])
    with pytest.raises(OSError) as info:
        batch.writeall(w)
    assert info.value.errno == errno.EBADF


def test_io_on_a_released_batch_raises_value_error(make, sockpair, pipe):
    a, b = sockpair
    r, w = pipe
    d, batch = take_batch(make, [b"gone"])
    batch.release()
    with pytest.raises(ValueError):
        batch.sendall(a)
    with pytest.raises(ValueError):
        batch.writeall(w)
    assert drain_nonblocking(b) == b""
    assert drain_nonblocking(r) == b""


def test_a_release_during_sendall_does_not_free_the_bytes_being_sent(make, sockpair):
    # The batch is released (from another thread) while sendall is still
    # sending it; new payloads must not land on the bytes being sent.
    a, b = sockpair
    small_buffers(a, b)
    data = random_bytes(1 << 20, seed=8)
    d, batch = take_batch(make, [data], max_buffered_bytes=2 * len(data))
    received = bytearray()
    released = threading.Event()
    fills = []

    def slow_reader():
        received.extend(b.recv(4096, socket.MSG_WAITALL))
        batch.release()
        # Try to fill the whole budget with other bytes: whatever is admitted
        # must not overwrite the region sendall is still sending from.
        filled = 0
        try:
            while True:
                d.enqueue(b"\xee" * 65536)
                filled += 65536
        except tempo.QueueFull:
            pass
        fills.append(filled)
        released.set()
        while len(received) < len(data):
            chunk = b.recv(65536)
            if not chunk:
                break
            received.extend(chunk)

    thread = threading.Thread(target=slow_reader, daemon=True)
    thread.start()
    batch.sendall(a)
    thread.join(WAIT)
    assert released.is_set()
    # While sendall ran, its region stayed owned: only the rest was admitted.
    assert fills == [len(data)]
    assert bytes(received) == data
    # Once sendall is done the region comes back.
    stats = d.stats()
    assert stats.buffered_bytes == stats.enqueued_bytes - len(data)


def test_sendall_to_a_tls_socket_never_bypasses_tls(make, sockpair):
    # An ssl.SSLSocket is a socket whose fileno() is the raw TCP stream:
    # writing the payload there would put plaintext on an encrypted
    # connection. sendall must go through TLS or refuse; never leak.
    ssl = pytest.importorskip("ssl")
    a, b = sockpair
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_socket(a, do_handshake_on_connect=False)
    tls.settimeout(0.3)  # the plain peer never answers a handshake
    secret = b"top-secret-token"
    d, batch = take_batch(make, [secret])
    try:
        batch.sendall(tls)
    except (TypeError, ValueError, OSError):
        pass  # refusing (or failing the handshake) is fine
    finally:
        tls.detach()
    assert secret not in drain_nonblocking(b)


class SocketSubclass(socket.socket):
    """A user's socket subclass (it may frame or count what it sends)."""

    sent = 0

    def sendall(self, data, *args):
        self.sent += memoryview(data).nbytes
        return super().sendall(data, *args)


def test_sendall_through_a_socket_subclass(make, sockpair):
    a, b = sockpair
    sub = SocketSubclass(fileno=a.detach())
    try:
        payloads = PAYLOAD_SETS["big-and-small"]
        expected = b"".join(payloads)
        d, batch = take_batch(make, payloads)
        reader = Reader(b, len(expected))
        batch.sendall(sub)
        assert reader.result() == expected
        assert sub.sent == len(expected)  # through its own sendall
        batch.release()
        with pytest.raises(ValueError):
            batch.sendall(sub)
        assert sub.sent == len(expected)
    finally:
        sub.close()


class BareSocketSubclass(socket.socket):
    pass


def test_nonblocking_socket_subclass_that_would_block_raises_with_the_bytes_sent(make, sockpair):
    # The contract's BlockingIOError.characters_written holds for any socket:
    # without it the caller cannot know where to resume.
    a, b = sockpair
    small_buffers(a, b)
    sub = BareSocketSubclass(fileno=a.detach())
    try:
        sub.setblocking(False)
        data = random_bytes(1 << 20, seed=9)
        d, batch = take_batch(make, [data])
        with pytest.raises(BlockingIOError) as info:
            batch.sendall(sub)
        sent = drain_nonblocking(b)
        assert 0 < len(sent) < len(data)
        assert sent == data[: len(sent)]
        assert getattr(info.value, "characters_written", None) == len(sent)
    finally:
        sub.close()


def test_writeall_to_a_buffered_file_keeps_what_it_buffered_first(make, tmp_path):
    d, batch = take_batch(make, [b"BAT", b"CH"])
    with open(tmp_path / "out", "wb") as f:  # buffered: holds b"head-" until flushed
        f.write(b"head-")
        batch.writeall(f)
        f.write(b"-tail")
    assert (tmp_path / "out").read_bytes() == b"head-BATCH-tail"
