"""bench/compare.py's workloads, on the measurement ``tempo bench`` uses.

The engine (implementations, the producer loop over a pool of ``bytes``, the
timed run) is in the package, shared with ``tempo bench``:
``tempo/tools/_peers.py`` and ``tempo/tools/_throughput.py``. This module adds
what only the full comparison runs:

- **W1**: one producer; **W2**: ``PRODUCERS["W2"]`` producers (``--producers``);
  **W3**: one producer, the consumer sends every batch to a reader process over
  loopback TCP (tempo with ``batch.sendall``, the others with ``sendmsg`` in
  ``IOV_MAX`` chunks), timed until the reader has counted every byte.
- Payload kinds: ``bytes`` (a pool of distinct payloads) or ``bytearray`` (the
  ``b`` workloads, W1b...: one buffer per producer, rewritten in place before
  every enqueue, copied first for the batchers that keep references).

``python bench/_workloads.py`` is W3's reader process.
"""

from __future__ import annotations

import random
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from time import perf_counter
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tempo.tools._peers import BATCH_ITEMS, Impl, Sink, TempoImpl  # noqa: E402
from tempo.tools._throughput import (  # noqa: E402
    RETRY_SLEEP, ProducerResult, count_items, own_binding, pool_loop, run_case, warmup_for,
)

IOV_MAX = 1024

DEFAULT_SIZES = (16, 256, 10240)
DEFAULT_WORKLOADS = ("W1", "W1b", "W2", "W3")
PAYLOAD_KINDS = ("bytes", "bytearray")
PRODUCERS = {"W1": 1, "W2": 4, "W3": 1}  # W2's count: --producers


def split_workload(name: str) -> tuple[str, str]:
    """``"W1"`` -> ``("W1", "bytes")``; ``"W1b"`` -> ``("W1", "bytearray")``."""
    if name.endswith("b") and name[:-1] in PRODUCERS:
        return name[:-1], "bytearray"
    if name in PRODUCERS:
        return name, "bytes"
    raise ValueError(f"unknown workload {name!r}")


def workload_name(base: str, payload: str) -> str:
    return base + ("b" if payload == "bytearray" else "")


def run_workload(workload: str, size: int, impl_name: str, items: int, backpressure: str,
                 warm: int | None, warm_max_s: float) -> dict[str, Any]:
    """One case of ``workload`` in this (fresh) process."""
    base, payload = split_workload(workload)
    reused = payload == "bytearray"
    if warm is None:  # in whole units of every workload's producer count
        warm = warmup_for(size, items, PRODUCERS["W2"])
    result = run_case(
        impl_name, size, items, producers=PRODUCERS[base], backpressure=backpressure, warm=warm,
        warm_max_s=warm_max_s, pool=make_reused(size, PRODUCERS[base]) if reused else None,
        loop_for=reused_loop if reused else pool_loop, consume=send_to_reader if base == "W3" else count_items,
    )
    return {"workload": workload, "base_workload": base, "payload": payload, **result}


# ---------------------------------------------------------------------------
# bytearray payloads (the "b" workloads)

# The allocation-free producer: one bytearray per producer, rewritten in place
# (a sequence number packed at offset 0) before every enqueue.  Batchers that
# keep references (queue.Queue, OpenTelemetry) must be handed a copy,
# ``bytes(buf)``, since the buffer changes right after; tempo and purepy are
# handed the buffer itself and copy it in their enqueue.

_SEQ = struct.Struct("<Q")


def make_reused(size: int, nprod: int) -> list[bytearray]:
    """One preallocated bytearray per producer (random contents, rewritten in place)."""
    rng = random.Random(size)
    return [bytearray(rng.randbytes(size)) for _ in range(nprod)]


def reused_loop(
    impl: Impl, pool: list[bytearray], i: int, nprod: int, total: int, offset: int, chunks: int,
    deadline: float | None, out: list[ProducerResult | None], start: threading.Barrier, chunk: int,
) -> tuple[Callable[..., None], tuple[object, ...]]:
    """Producer ``i`` rewrites and enqueues ``pool[i]`` again and again (``_throughput.run_producers``)."""
    blocking = impl.enqueue_blocking is not None
    loop = produce_blocking_reused if blocking else produce_retry_reused
    enqueue = impl.enqueue_blocking if impl.enqueue_blocking is not None else impl.enqueue
    return loop, (own_binding(enqueue), impl.Full, pool[i], chunks, deadline, out, i, start, chunk, impl.needs_copy,
                  offset + i * (total // nprod))


def _packer(size: int) -> Callable[[bytearray, int], None]:
    """``pack(buf, seq)`` writes ``seq`` at offset 0 of a ``size``-byte buffer."""
    if size >= 8:
        pack_into = _SEQ.pack_into
        return lambda buf, seq: pack_into(buf, 0, seq)

    def pack_small(buf: bytearray, seq: int) -> None:
        buf[:size] = (seq & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    return pack_small if size else (lambda buf, seq: None)


def produce_retry_reused(
    enqueue: Callable[[Any], object], Full: type[Exception], buf: bytearray, chunks: int,
    deadline: float | None, out: list[ProducerResult | None], i: int, start: threading.Barrier,
    chunk: int = BATCH_ITEMS, copy: bool = False, seq: int = 0,
) -> None:
    """``produce_retry`` for one reused bytearray (copied first if ``copy``).

    Its retry loop is inlined in each branch, as in ``produce_retry``: a shared
    helper would add a Python call per payload to what is measured."""
    retries = n = 0
    sleep = time.sleep
    size = len(buf)
    p: bytes | bytearray
    pack_into = _SEQ.pack_into if size >= 8 else None
    pack = _packer(size)
    start.wait()
    t0 = perf_counter()
    for _ in range(chunks):
        end = seq + chunk
        if pack_into is not None and not copy:  # the hot loops, without a branch per payload
            while seq < end:
                pack_into(buf, 0, seq)
                seq += 1
                while True:
                    try:
                        enqueue(buf)
                        break
                    except Full:
                        retries += 1
                        sleep(RETRY_SLEEP)
        elif pack_into is not None:
            while seq < end:
                pack_into(buf, 0, seq)
                seq += 1
                p = bytes(buf)
                while True:
                    try:
                        enqueue(p)
                        break
                    except Full:
                        retries += 1
                        sleep(RETRY_SLEEP)
        else:
            while seq < end:
                pack(buf, seq)
                seq += 1
                p = bytes(buf) if copy else buf
                while True:
                    try:
                        enqueue(p)
                        break
                    except Full:
                        retries += 1
                        sleep(RETRY_SLEEP)
        n += chunk
        if deadline is not None and perf_counter() >= deadline:
            break
    out[i] = (t0, perf_counter(), retries, n)


def produce_blocking_reused(
    enqueue: Callable[..., object], Full: type[Exception], buf: bytearray, chunks: int,
    deadline: float | None, out: list[ProducerResult | None], i: int, start: threading.Barrier,
    chunk: int = BATCH_ITEMS, copy: bool = False, seq: int = 0,
) -> None:
    """``produce_blocking`` for one reused bytearray (tempo copies it itself)."""
    n = 0
    pack = _packer(len(buf))
    pack_into = _SEQ.pack_into if len(buf) >= 8 else None
    start.wait()
    t0 = perf_counter()
    for _ in range(chunks):
        end = seq + chunk
        if pack_into is not None and not copy:
            while seq < end:
                pack_into(buf, 0, seq)
                seq += 1
                enqueue(buf, timeout=None)
        else:
            while seq < end:
                pack(buf, seq)
                seq += 1
                enqueue(bytes(buf) if copy else buf, timeout=None)
        n += chunk
        if deadline is not None and perf_counter() >= deadline:
            break
    out[i] = (t0, perf_counter(), 0, n)




# ---------------------------------------------------------------------------
# W3: batches sent to a reader process over loopback TCP


def sendmsg_all(sock: socket.socket, bufs: list[bytes] | list[memoryview]) -> None:
    """Send every byte of ``bufs`` with ``sendmsg``: IOV_MAX chunks, partial sends resumed.

    The fast path (the whole chunk went out) costs one ``sum(map(len, chunk))``;
    only a partial send walks the buffers.  ``bufs`` is not modified.
    """
    i, n = 0, len(bufs)
    head: memoryview | None = None
    while i < n:
        # The caller's buffers, and in front the memoryview of a partly sent one.
        chunk: list[Any] = bufs[i : i + IOV_MAX]
        if head is not None:
            chunk[0] = head  # the unsent tail of a partly sent buffer
        sent = sock.sendmsg(chunk)
        if sent == sum(map(len, chunk)):
            i += len(chunk)
            head = None
            continue
        for b in chunk:  # skip the buffers that went out whole ...
            if sent < len(b):
                break
            sent -= len(b)
            i += 1
        head = memoryview(b)[sent:]  # ... and resume inside the first one that did not


def send_to_reader(impl: Impl, sink: Sink) -> tuple[Callable[[Any], None], Callable[[int], float], Callable[[], None]]:
    """W3's consumer: every batch goes to a reader process; the run ends when
    the reader has counted every byte (warm-up and timed payloads)."""
    reader, sock = start_reader()
    add = sink.add
    if isinstance(impl, TempoImpl):

        def handle(batch: Any) -> None:
            batch.sendall(sock)  # one contiguous region
            add(len(batch), batch.nbytes)

    else:

        def handle(batch: Any) -> None:
            sendmsg_all(sock, batch)
            add(len(batch), sum(map(len, batch)))

    def finish(warmed: int) -> float:
        sock.shutdown(socket.SHUT_WR)
        received = int.from_bytes(recv_exact(sock, 8), "little")
        t_end = perf_counter()
        # Every batch was sent before the sink counted it: the consumer's
        # byte count is what the reader must have seen.
        if received != sink.nbytes:
            raise RuntimeError(f"reader got {received} bytes, expected {sink.nbytes}")
        return t_end

    def cleanup() -> None:
        sock.close()
        reader.wait(10)

    return handle, finish, cleanup


def reader_main() -> None:
    """Accept one loopback connection, count bytes until EOF, reply with the count."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        print(srv.getsockname()[1], flush=True)
        conn, _ = srv.accept()
    with conn:
        buf = bytearray(1 << 20)
        total = 0
        recv_into = conn.recv_into
        while True:
            n = recv_into(buf)
            if not n:
                break
            total += n
        conn.sendall(total.to_bytes(8, "little"))


def start_reader() -> tuple[subprocess.Popen[str], socket.socket]:
    proc = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None  # stdout=PIPE
    port = int(proc.stdout.readline())
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return proc, sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("reader closed early")
        buf += chunk
    return buf


if __name__ == "__main__":
    reader_main()
