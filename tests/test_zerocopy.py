"""The whole batch without copying: ``data``, ``offsets``, ``to_arrow()``,
``sendmmsg()`` and ``tempo.IOV_MAX`` (CONTRACT, third round: "The whole
batch, zero-copy", "Arrow", "Datagrams")."""

from __future__ import annotations

import errno
import importlib.util
import os
import signal
import socket
import sys
import threading
import time

import pytest

import tempo

WAIT = 5.0
ITEMS = [b"alpha", b"", b"bc", b"\x00\xff"]  # 9 bytes

needs_pyarrow = pytest.mark.skipif(
    importlib.util.find_spec("pyarrow") is None,
    reason="pyarrow is not installed (no wheel for this interpreter, or pip install "
           "'tempo-batcher[arrow]')")


def one_batch(make, items, **kwargs):
    """A dispatcher whose first batch holds exactly ``items``, and that batch."""
    total = sum(len(p) for p in items)
    kwargs.setdefault("max_buffered_bytes", max(total, 1) * 4 + 4096)
    kwargs.setdefault("max_batch_items", len(items))
    d = make(max_batch_bytes=max(total, 1), **kwargs)
    d.start()
    for p in items:
        d.enqueue(p)
    batch = d.get_batch(timeout=WAIT)
    assert batch.tolist() == list(items)
    return d, batch


def expected_offsets(items):
    out = [0]
    for p in items:
        out.append(out[-1] + len(p))
    return out


# -- data and offsets -------------------------------------------------------------------


def test_data_is_all_the_bytes_in_order_as_one_read_only_view(make):
    _, batch = one_batch(make, ITEMS)
    data = batch.data
    assert type(data) is memoryview
    assert (data.format, data.itemsize, data.ndim, data.readonly) == ("B", 1, 1, True)
    assert len(data) == batch.nbytes == 9
    assert data.tobytes() == b"".join(ITEMS)
    assert data.c_contiguous
    with pytest.raises(TypeError):
        data[0] = 1


def test_offsets_are_the_item_boundaries_as_int64(make):
    _, batch = one_batch(make, ITEMS)
    offsets = batch.offsets
    assert type(offsets) is memoryview
    assert (offsets.format, offsets.itemsize, offsets.ndim, offsets.readonly) == ("q", 8, 1, True)
    assert offsets.shape == (len(ITEMS) + 1,) and offsets.strides == (8,)
    assert offsets.tolist() == [0, 5, 5, 7, 9]
    assert offsets.nbytes == 8 * (len(ITEMS) + 1)
    data = batch.data
    assert [data[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(batch))] == ITEMS
    # As bytes, in native order (what pyarrow and numpy read).
    assert offsets.cast("B").tobytes() == b"".join(
        o.to_bytes(8, sys.byteorder) for o in [0, 5, 5, 7, 9])


@needs_pyarrow
def test_offsets_are_made_once_per_batch(make):
    import pyarrow

    _, batch = one_batch(make, ITEMS)
    first, second = batch.offsets, batch.offsets
    assert first is not second
    assert pyarrow.py_buffer(first).address == pyarrow.py_buffer(second).address


def test_a_batch_of_empty_items_has_empty_data_and_flat_offsets(make):
    _, batch = one_batch(make, [b"", b"", b""], max_buffered_bytes=4096)
    assert batch.nbytes == 0
    assert batch.data.tobytes() == b"" and len(batch.data) == 0
    assert batch.offsets.tolist() == [0, 0, 0, 0]


def test_a_one_item_batch_over_max_batch_bytes_is_its_payload(make):
    payload = bytes(range(256)) * 40  # 10240 bytes, over max_batch_bytes
    d = make(max_batch_bytes=1000, max_buffered_bytes=64 * 1024)
    d.start()
    d.enqueue(payload)
    batch = d.get_batch(timeout=WAIT)
    assert len(batch) == 1
    assert batch.data.tobytes() == payload
    assert batch.offsets.tolist() == [0, len(payload)]


def test_data_is_contiguous_across_the_end_of_the_ring(make):
    # The arena is one page (4096 bytes): the second batch starts at byte
    # 3000 and runs past the ring's end into the mirror.
    d = make(max_batch_bytes=3000, max_buffered_bytes=4096)
    d.start()
    d.enqueue(b"x" * 3000)
    d.get_batch(timeout=WAIT).release()
    items = [bytes([65 + i]) * 500 for i in range(6)]  # 3000 bytes from offset 3000
    for p in items:
        d.enqueue(p)
    batch = d.get_batch(timeout=WAIT)
    assert batch.tolist() == items
    assert batch.data.tobytes() == b"".join(items)
    assert batch.offsets.tolist() == expected_offsets(items)


def test_a_memoryview_of_the_batch_itself_is_still_refused(make):
    _, batch = one_batch(make, ITEMS)
    with pytest.raises(BufferError, match="use batch"):
        memoryview(batch)


@pytest.mark.parametrize("what", ["data", "offsets", "to_arrow", "sendmmsg"])
def test_a_released_batch_refuses_the_whole_batch_operations(make, what):
    if what == "to_arrow" and importlib.util.find_spec("pyarrow") is None:
        pytest.skip("pyarrow is not installed")
    _, batch = one_batch(make, ITEMS)
    batch.release()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b, pytest.raises(ValueError, match="released batch"):
        if what == "sendmmsg":
            batch.sendmmsg(a)
        elif what == "to_arrow":
            batch.to_arrow()
        else:
            getattr(batch, what)
    assert (len(batch), batch.nbytes) == (4, 9)


# -- pins -------------------------------------------------------------------------------


def keep(batch, how):
    """Something made from the batch that must pin its bytes."""
    if how == "data":
        return batch.data
    if how == "slice of data":
        return batch.data[2:4]
    if how == "offsets":
        return batch.offsets
    if how == "offsets cast to bytes":
        return batch.offsets.cast("B")
    if how == "arrow array":
        return batch.to_arrow()
    if how == "slice of an arrow array":
        return batch.to_arrow()[1:3]
    if how == "arrow value buffer":
        return batch.to_arrow().buffers()[2]
    if how == "arrow table":
        import pyarrow

        return pyarrow.table({"payload": batch.to_arrow()})
    raise AssertionError(how)


def contents(kept):
    if isinstance(kept, memoryview):
        return kept.tolist() if kept.format == "q" else kept.tobytes()
    if hasattr(kept, "to_pybytes"):  # a pyarrow.Buffer
        return kept.to_pybytes()
    if hasattr(kept, "column"):  # a pyarrow.Table
        return kept.column(0).to_pylist()
    return kept.to_pylist()


ARROW = {"arrow array", "slice of an arrow array", "arrow value buffer", "arrow table"}


@pytest.mark.parametrize("how", ["data", "slice of data", "offsets", "offsets cast to bytes",
                                 *sorted(ARROW)])
def test_what_is_made_from_the_batch_pins_its_bytes_until_it_dies(make, how):
    if how in ARROW and importlib.util.find_spec("pyarrow") is None:
        pytest.skip("pyarrow is not installed")
    items = [b"a" * 20, b"b" * 30]
    d = make(max_batch_bytes=50, max_buffered_bytes=100)
    d.start()
    for p in items:
        d.enqueue(p)
    batch = d.get_batch(timeout=WAIT)
    kept = keep(batch, how)
    batch.release()
    del batch
    assert d.stats().buffered_bytes == 50
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"c" * 60)  # 50 pinned + 60 > 100
    assert contents(kept) == {
        "slice of data": b"aa", "offsets": [0, 20, 50], "slice of an arrow array": items[1:],
        "offsets cast to bytes": b"".join(o.to_bytes(8, sys.byteorder) for o in [0, 20, 50]),
    }.get(how, b"".join(items) if how in ("data", "arrow value buffer") else items)
    del kept
    assert d.stats().buffered_bytes == 0
    d.enqueue(b"c" * 60)


def test_threads_taking_whole_batch_views_at_once_agree_and_give_the_bytes_back(make):
    # Free-threaded builds: the offsets array is made once however many
    # threads ask first, and every view's pin is counted.
    import threading

    items = [b"%03d" % i * (i % 7) for i in range(300)]
    d, batch = one_batch(make, items)
    want_offsets, want_data = expected_offsets(items), b"".join(items)
    start = threading.Barrier(4)
    errors = []

    def read():
        try:
            start.wait()
            for _ in range(200):
                offsets, data = batch.offsets, batch.data
                assert offsets.tolist() == want_offsets and data.tobytes() == want_data
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors and not any(t.is_alive() for t in threads)
    batch.release()
    assert d.stats().buffered_bytes == 0


# -- Arrow ------------------------------------------------------------------------------


@needs_pyarrow
def test_to_arrow_is_a_large_binary_array_over_the_batchs_memory(make):
    import pyarrow

    _, batch = one_batch(make, ITEMS)
    arr = batch.to_arrow()
    assert isinstance(arr, pyarrow.Array) and arr.type == pyarrow.large_binary()
    assert arr.to_pylist() == ITEMS and len(arr) == 4 and arr.null_count == 0
    arr.validate(full=True)
    validity, offsets, values = arr.buffers()
    assert validity is None
    # No copy: the value buffer is the batch's memory, the offsets its offsets.
    assert values.address == pyarrow.py_buffer(batch.data).address
    assert values.size == batch.nbytes
    assert offsets.address == pyarrow.py_buffer(batch.offsets).address


@needs_pyarrow
def test_to_arrow_survives_release_and_goes_to_parquet(make, tmp_path):
    import pyarrow
    import pyarrow.parquet as pq

    items = [b"event-%d" % i * (i % 5) for i in range(300)]
    _, batch = one_batch(make, items)
    arr = batch.to_arrow()
    batch.release()
    pq.write_table(pyarrow.table({"payload": arr}), tmp_path / "b.parquet")
    assert pq.read_table(tmp_path / "b.parquet").column("payload").to_pylist() == items


def test_to_arrow_without_pyarrow_names_the_extra(make, monkeypatch):
    _, batch = one_batch(make, ITEMS)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow fails
    with pytest.raises(ModuleNotFoundError, match=r'pip install "tempo-batcher\[arrow\]"') as info:
        batch.to_arrow()
    assert info.value.name == "pyarrow"
    assert not batch.released and batch.tolist() == ITEMS


# -- sendmmsg ---------------------------------------------------------------------------


def udp_pair(family=socket.AF_INET, host="127.0.0.1"):
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    sender = socket.socket(family, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname()[:2])
    receiver.settimeout(WAIT)
    return sender, receiver


def receive(sock, count, size=65536):
    return [sock.recv(size) for _ in range(count)]


def receive_ready(sock, size=65536):
    """Every datagram already queued on ``sock``."""
    out = []
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(size))
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(timeout)


def small_pair():
    """A unix datagram socket pair whose sender holds only a few datagrams
    in flight (the smallest send buffer), so its queue fills quickly."""
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
    return sender, receiver


DATAGRAMS = [b"metric.a:1|c", b"", b"metric.b:250|ms", b"x" * 1000]


def test_sendmmsg_sends_every_item_as_one_udp_datagram_in_order(make):
    _, batch = one_batch(make, DATAGRAMS)
    sender, receiver = udp_pair()
    with sender, receiver:
        assert batch.sendmmsg(sender) == 4
        assert receive(receiver, 4) == DATAGRAMS
        assert receive_ready(receiver) == []


def test_sendmmsg_over_ipv6(make):
    try:
        sender, receiver = udp_pair(socket.AF_INET6, "::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    _, batch = one_batch(make, DATAGRAMS)
    with sender, receiver:
        assert batch.sendmmsg(sender) == 4
        assert receive(receiver, 4) == DATAGRAMS


def test_sendmmsg_over_a_unix_datagram_socket(make, tmp_path):
    _, batch = one_batch(make, DATAGRAMS)
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "sock"))
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.connect(str(tmp_path / "sock"))
    with sender, receiver:
        assert batch.sendmmsg(sender) == 4
        assert receive_ready(receiver) == DATAGRAMS


def test_sendmmsg_passes_flags(make):
    _, batch = one_batch(make, DATAGRAMS)
    sender, receiver = udp_pair()
    with sender, receiver:
        assert batch.sendmmsg(sender, socket.MSG_DONTWAIT) == 4
        assert receive(receiver, 4) == DATAGRAMS


def test_sendmmsg_sends_more_than_1024_items_in_chunks_in_order(make, spawn):
    # The sender holds a few datagrams in flight: the kernel takes part of
    # each call, tempo waits for room and resumes where it stopped, while a
    # thread drains the other end.
    items = [b"%05d" % i for i in range(3000)]
    _, batch = one_batch(make, items, max_batch_items=0)
    assert len(batch) == 3000
    sender, receiver = small_pair()
    receiver.settimeout(WAIT)
    with sender, receiver:
        got = spawn(receive, receiver, 3000, 16)
        assert batch.sendmmsg(sender) == 3000
        assert got.result() == items
        assert receive_ready(receiver) == []


def test_sendmmsg_from_another_thread_blocks_in_the_kernel_and_resumes(make, spawn):
    # Off the main thread with no timeout, the calls block in the kernel
    # (no poll) whenever the queue is full.
    items = [b"%05d" % i for i in range(2500)]
    _, batch = one_batch(make, items, max_batch_items=0)
    sender, receiver = small_pair()
    receiver.settimeout(WAIT)
    with sender, receiver:
        sent = spawn(batch.sendmmsg, sender)
        assert receive(receiver, 2500, 16) == items
        assert sent.result() == 2500


def test_an_item_the_kernel_refuses_raises_its_error_with_the_count_sent(make):
    items = [b"a", b"b", b"x" * 70000, b"c"]  # over the 65507-byte UDP maximum
    _, batch = one_batch(make, items)
    sender, receiver = udp_pair()
    with sender, receiver:
        with pytest.raises(OSError) as info:
            batch.sendmmsg(sender)
        assert info.value.errno == errno.EMSGSIZE
        assert info.value.sent == 2
        assert receive_ready(receiver) == [b"a", b"b"]


def test_the_first_item_refused_reports_none_sent(make):
    _, batch = one_batch(make, [b"x" * 70000, b"a"])
    sender, receiver = udp_pair()
    with sender, receiver:
        with pytest.raises(OSError) as info:
            batch.sendmmsg(sender)
        assert (info.value.errno, info.value.sent) == (errno.EMSGSIZE, 0)
        assert receive_ready(receiver) == []


def test_an_unconnected_socket_is_an_error_with_nothing_sent(make):
    _, batch = one_batch(make, DATAGRAMS)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(OSError) as info:
            batch.sendmmsg(sock)
        assert (info.value.errno, info.value.sent) == (errno.EDESTADDRREQ, 0)


def test_a_nonblocking_socket_sends_what_fits_then_raises_blocking_io_error(make):
    items = [b"%04d" % i for i in range(200)]
    _, batch = one_batch(make, items)
    sender, receiver = small_pair()
    sender.setblocking(False)
    with sender, receiver:
        with pytest.raises(BlockingIOError) as info:
            batch.sendmmsg(sender)
        sent = info.value.sent
        assert 0 < sent < 200
        assert info.value.characters_written == 4 * sent
        assert receive_ready(receiver) == items[:sent]


def test_a_socket_timeout_raises_timeout_error_with_the_count_sent(make):
    items = [b"%04d" % i for i in range(200)]
    _, batch = one_batch(make, items)
    sender, receiver = small_pair()
    sender.settimeout(0.2)
    with sender, receiver:
        start = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            batch.sendmmsg(sender)
        assert time.monotonic() - start >= 0.2
        sent = info.value.sent
        assert 0 < sent < 200
        assert receive_ready(receiver) == items[:sent]


def test_a_stream_socket_is_a_type_error_pointing_at_sendall(make):
    _, batch = one_batch(make, DATAGRAMS)
    a, b = socket.socketpair()
    with a, b, pytest.raises(TypeError, match=r"sendall\(\)"):
        batch.sendmmsg(a)


@pytest.mark.parametrize("target", [3, None, b"sock"])
def test_sendmmsg_takes_only_a_socket(make, target):
    _, batch = one_batch(make, DATAGRAMS)
    with pytest.raises(TypeError, match="takes a socket.socket"):
        batch.sendmmsg(target)


def test_a_closed_socket_is_an_os_error(make):
    _, batch = one_batch(make, DATAGRAMS)
    sender, receiver = udp_pair()
    sender.close()
    with receiver, pytest.raises(OSError) as info:
        batch.sendmmsg(sender)
    assert (info.value.errno, info.value.sent) == (errno.EBADF, 0)


def test_a_descriptor_that_is_not_a_socket_is_an_os_error_with_nothing_sent(make, tmp_path):
    _, batch = one_batch(make, DATAGRAMS)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with open(tmp_path / "file", "wb") as file, sock:
        os.dup2(file.fileno(), sock.fileno())  # the socket's fd now names the file
        with pytest.raises(OSError) as info:
            batch.sendmmsg(sock)
    assert (info.value.errno, info.value.sent) == (errno.ENOTSOCK, 0)


def test_closing_the_socket_mid_call_stops_before_the_next_chunk_not_on_a_reused_fd(
    make, spawn
):
    # The worker blocks in the kernel inside the first 1024-item chunk; the
    # socket is closed and its fd number handed to a new socket. The chunk
    # in the kernel completes; nothing goes to the new socket.
    items = [b"%05d" % i for i in range(3000)]
    _, batch = one_batch(make, items, max_batch_items=0)
    sender, receiver = small_pair()
    receiver.settimeout(WAIT)
    fd = sender.fileno()
    with receiver:
        sent = spawn(batch.sendmmsg, sender)
        first = receiver.recv(16)  # the worker is inside the first chunk
        sender.close()
        other, unrelated = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with other, unrelated:
            assert other.fileno() == fd
            got = [first, *receive(receiver, 1023, 16)]
            error = sent.exception()
            assert receive_ready(unrelated) == []
        assert got == items[:1024]
        assert receive_ready(receiver) == []
        assert isinstance(error, OSError)
        assert (error.errno, error.sent) == (errno.EBADF, 1024)


def test_msg_dontwait_never_waits_even_on_the_main_thread_with_a_timeout(make):
    items = [b"%04d" % i for i in range(200)]
    _, batch = one_batch(make, items)
    sender, receiver = small_pair()
    sender.settimeout(WAIT)
    with sender, receiver:
        start = time.monotonic()
        with pytest.raises(BlockingIOError) as info:
            batch.sendmmsg(sender, socket.MSG_DONTWAIT)
        assert time.monotonic() - start < WAIT
        sent = info.value.sent
        assert 0 < sent < 200
        assert info.value.characters_written == 4 * sent
        assert receive_ready(receiver) == items[:sent]


class Interrupted(Exception):
    pass


def test_what_a_signal_handler_raises_mid_call_carries_the_count_sent(make, spawn):
    # A thread takes 100 datagrams, then signals the main thread and stops
    # reading: the handler's exception ends the call waiting for room.
    items = [b"%05d" % i for i in range(3000)]
    _, batch = one_batch(make, items, max_batch_items=0)
    sender, receiver = small_pair()
    receiver.settimeout(WAIT)

    def take_then_signal():
        got = receive(receiver, 100, 16)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
        return got

    def handler(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with sender, receiver:
            taken = spawn(take_then_signal)
            with pytest.raises(Interrupted) as info:
                batch.sendmmsg(sender)
            got = taken.result() + receive_ready(receiver, 16)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert got == items[: info.value.sent]


def test_sendmmsg_pins_the_batch_while_it_sends(make, spawn):
    # A thread releases the batch while sendmmsg waits for room: the bytes
    # stay put until the call returns, then go back.
    items = [b"%05d" % i for i in range(100)]
    d, batch = one_batch(make, items)
    sender, receiver = small_pair()
    receiver.settimeout(WAIT)
    with sender, receiver:
        sent = spawn(batch.sendmmsg, sender)
        first = receiver.recv(16)  # the sender is running; the queue is full
        batch.release()
        assert d.stats().buffered_bytes == 500
        rest = receive(receiver, 99, 16)
        assert sent.result() == 100
        assert [first, *rest] == items
        assert d.stats().buffered_bytes == 0


# -- IOV_MAX ----------------------------------------------------------------------------


def test_iov_max_is_where_sendmsg_and_writev_of_a_batch_stop_working(make):
    limit = tempo.IOV_MAX
    assert limit == os.sysconf("SC_IOV_MAX") == 1024
    _, batch = one_batch(make, [b"z"] * (limit + 1), max_batch_items=0,
                         max_buffered_bytes=64 * 1024)
    a, b = socket.socketpair()
    with a, b:
        assert a.sendmsg(batch[:limit]) == limit
        with pytest.raises(OSError) as info:
            a.sendmsg(batch[:])
        assert info.value.errno == errno.EMSGSIZE
        r, w = os.pipe()
        try:
            assert os.writev(w, batch[:limit]) == limit
            with pytest.raises(OSError) as info:
                os.writev(w, batch[:])
            assert info.value.errno == errno.EINVAL
        finally:
            os.close(r)
            os.close(w)
        batch.sendall(a)  # one region: no limit
        assert b.recv(limit + 1, socket.MSG_WAITALL) == b"z" * (limit + 1)


# -- tempo bench --zerocopy -------------------------------------------------------------


def test_bench_zerocopy_quick_json_reports_every_comparison():
    import json
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "tempo", "bench", "--zerocopy", "--quick", "--repeat", "1", "--json"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.splitlines()[-1])
    assert r["mode"] == "zerocopy"
    dg = r["datagrams"]
    assert set(dg["ns_per_datagram"]) >= {"sendmmsg", "send loop"}
    assert dg["vs_send_loop"] > 0
    assert "vs_c_floor" in dg or dg["c_floor_skipped"]
    if importlib.util.find_spec("pyarrow") is not None:
        assert r["parquet"]["speedup"] > 0 and r["parquet"]["conversion_speedup"] > 1
    else:
        assert "pyarrow" in r["parquet"]["skipped"]
    assert 0 < r["gil"]["producer_share_during_sendmmsg"]


# -- at the process's descriptor limit ------------------------------------------------

# A child process (its descriptor limit is lowered) prints a JSON object.
FD_LIMIT_PRELUDE = r"""
import errno, json, os, resource, socket, sys, threading
import tempo

GIL = getattr(sys, "_is_gil_enabled", lambda: True)()


def batch_of(items):
    d = tempo.Dispatcher(interval=60, max_buffered_bytes=tempo.MiB, max_batch_items=len(items))
    d.start()
    for p in items:
        d.enqueue(p)
    return d, d.get_batch(timeout=5)


def small_pair():
    # A sender whose queue fills after a few datagrams: the call must wait for room.
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
    receiver.settimeout(5)
    return sender, receiver


def take_every_free_descriptor():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
    taken = []
    while True:
        try:
            taken.append(os.dup(0))
        except OSError as e:
            assert e.errno == errno.EMFILE
            return taken


def send(batch, sock):
    try:
        return batch.sendmmsg(sock)
    except OSError as e:
        return [e.errno, e.sent, str(e)]


many = [b"%05d" % i for i in range(3000)]
"""

AT_FD_LIMIT = FD_LIMIT_PRELUDE + r"""
small = [b"metric.a:1|c", b"", b"metric.b:250|ms", b"x" * 1000]
d1, b1 = batch_of(small)
d2, b2 = batch_of(many)
receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
receiver.bind(("127.0.0.1", 0))
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sender.connect(receiver.getsockname())
receiver.settimeout(5)
ux_sender, ux_receiver = small_pair()
got = []
reader = threading.Thread(target=lambda: got.extend(ux_receiver.recv(16) for _ in many))
reader.start()
taken = take_every_free_descriptor()
out = {"gil": GIL, "small": send(b1, sender), "many": send(b2, ux_sender)}
for fd in taken:
    os.close(fd)
if out["small"] == len(small):
    out["small_received"] = [receiver.recv(2000).decode("latin-1") for _ in small]
if out["many"] == len(many):
    reader.join()
    out["many_in_order"] = got == many
print(json.dumps(out))
os._exit(0)
"""

CLOSED_AT_FD_LIMIT = FD_LIMIT_PRELUDE + r"""
# As test_closing_the_socket_mid_call_stops_before_the_next_chunk_not_on_a_reused_fd,
# with no descriptor free: the call waits for room on the socket's own descriptor.
d, batch = batch_of(many)
sender, receiver = small_pair()
fd = sender.fileno()
taken = take_every_free_descriptor()
result = []
worker = threading.Thread(target=lambda: result.append(send(batch, sender)))
worker.start()
if GIL:
    got = [receiver.recv(16)]  # the worker is sending
else:  # it fails at once (see test_sendmmsg_works_when_no_descriptor_is_free)
    worker.join()
    got = []
sender.close()
os.close(taken.pop())  # with the sender's number, room for a new pair
other, unrelated = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
receiver.settimeout(0.05)
while worker.is_alive():  # room for the worker, until it ends
    try:
        got.append(receiver.recv(16))
    except TimeoutError:
        pass
receiver.setblocking(False)
try:
    while True:
        got.append(receiver.recv(16))
except BlockingIOError:
    pass
unrelated.setblocking(False)
try:
    unrelated.recv(16)
    reused = "got a datagram"
except BlockingIOError:
    reused = "nothing"
print(json.dumps({"gil": GIL, "reused_number": other.fileno() == fd, "result": result[0],
                  "in_order": [g.decode() for g in got] == [m.decode() for m in many[:len(got)]],
                  "received": len(got), "unrelated": reused}))
os._exit(0)
"""


SHARES_THE_GIL_AT_FD_LIMIT = FD_LIMIT_PRELUDE + r"""
# Sent with the GIL held per chunk (no descriptor free): between chunks,
# another thread must get its turn, as after any switch interval.
import time
sys.setswitchinterval(0.001)
items = [b"x" * 64] * 100000
d = tempo.Dispatcher(interval=60, max_buffered_bytes=32 * tempo.MiB, max_batch_items=len(items))
d.start()
for p in items:
    d.enqueue(p)
batch = d.get_batch(timeout=5)
receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
receiver.bind(("127.0.0.1", 0))
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sender.connect(receiver.getsockname())
sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 24)
taken = take_every_free_descriptor()
stamps = []
stop = threading.Event()
ticking = threading.Event()

def tick():
    ticking.set()
    while not stop.is_set():
        stamps.append(time.perf_counter())

ticker = threading.Thread(target=tick)
ticker.start()
ticking.wait()
start = time.perf_counter()
result = send(batch, sender)
end = time.perf_counter()
stop.set()
ticker.join()
# Away from the call's ends, where a switch may come before or after it.
inside = sum(start + 0.02 < t < end - 0.02 for t in stamps)
print(json.dumps({"gil": GIL, "result": result, "call_s": end - start, "ticks_inside": inside}))
os._exit(0)
"""


def test_sendmmsg_at_the_fd_limit_lets_other_threads_run_between_chunks():
    out = run_at_fd_limit(SHARES_THE_GIL_AT_FD_LIMIT)
    if not out["gil"]:
        assert out["result"][:2] == [errno.EMFILE, 0]
        return
    assert out["result"] == 100000
    # The call takes a few hundred milliseconds; one that held the GIL
    # throughout let the other thread run not once in it.
    assert out["call_s"] > 0.1 and out["ticks_inside"] > 0, out


def run_at_fd_limit(script):
    import json
    import subprocess

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_sendmmsg_works_when_no_descriptor_is_free():
    # The call sends on a duplicate of the socket's descriptor; at the fd
    # limit there is none to be had. With the GIL it sends on the socket's
    # own descriptor (the GIL held from the closed-check to the send keeps a
    # close() by another thread out); a free-threaded build without the GIL
    # says which limit it hit.
    out = run_at_fd_limit(AT_FD_LIMIT)
    if out["gil"]:
        assert (out["small"], out["many"]) == (4, 3000), out
        assert out["small_received"] == [p.decode("latin-1") for p in DATAGRAMS]
        assert out["many_in_order"] is True
    else:
        for name in ("small", "many"):
            err, sent, text = out[name]
            assert (err, sent) == (errno.EMFILE, 0)
            assert "RLIMIT_NOFILE" in text


def test_closing_the_socket_mid_call_at_the_fd_limit_sends_nothing_to_the_reused_number():
    out = run_at_fd_limit(CLOSED_AT_FD_LIMIT)
    assert out["reused_number"] is True
    assert out["unrelated"] == "nothing"
    err, sent, _ = out["result"]
    if out["gil"]:
        assert err == errno.EBADF and 0 < sent == out["received"] < 3000, out
        assert out["in_order"] is True
    else:
        assert (err, sent, out["received"]) == (errno.EMFILE, 0, 0)


def test_every_type_error_from_sendmmsg_says_nothing_was_sent(make):
    _, batch = one_batch(make, DATAGRAMS)
    a, b = socket.socketpair()
    with a, b, pytest.raises(TypeError, match=r"sendall\(\)") as info:
        batch.sendmmsg(a)
    assert info.value.sent == 0
    with pytest.raises(TypeError, match="takes a socket.socket") as info:
        batch.sendmmsg(3)
    assert info.value.sent == 0


def test_sendmmsg_of_a_released_batch_says_nothing_was_sent(make):
    _, batch = one_batch(make, DATAGRAMS)
    batch.release()
    sender, receiver = udp_pair()
    with sender, receiver:
        with pytest.raises(ValueError) as info:
            batch.sendmmsg(sender)
        assert info.value.sent == 0
        assert receive_ready(receiver) == []
