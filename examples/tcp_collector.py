"""Events -> tempo.Pipeline -> a TCP collector, one ``batch.sendall(sock)`` per batch.

Frames are newline-delimited: each payload is one JSON line ending in b"\\n", so
a batch sent as it is, item after item, is a valid stream of frames and needs no
header of its own. ``batch.sendall`` hands tempo's buffer to the kernel without
copying it. The collector is a second process listening on 127.0.0.1; it parses
every frame and reports the frame count and byte total, which the example checks
against what tempo accepted (``p.stats()``).

A stream cannot resume a batch that failed halfway, so this pipeline does not
retry (``Retry(attempts=1)``): a batch whose send fails goes straight to
``on_failure``, which copies it to a spill file to be resent later (a dead
letter), and the failure is counted and logged once.

    python examples/tcp_collector.py --events 50000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import tempo


def collect(listener: socket.socket, report: Connection) -> None:
    """The collector process: read frames until EOF, report (frames, bytes, leftover)."""
    conn, _ = listener.accept()
    frames = nbytes = 0
    pending = b""
    with conn:
        while chunk := conn.recv(256 * 1024):
            nbytes += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                json.loads(line)  # every frame is one whole JSON document
            frames += len(lines)
    report.send((frames, nbytes, len(pending)))


def make_event(seq: int, rng: random.Random) -> bytes:
    event = {"seq": seq, "ts": time.time(), "cpu": round(rng.uniform(0, 100), 1),
             "host": f"node-{rng.randrange(16):02d}", "tags": ["prod", "eu-west-1"]}
    return json.dumps(event).encode() + b"\n"  # the frame delimiter


def batch_sender(sock: socket.socket) -> Callable[[tempo.Batch], None]:
    """The sink: send each batch whole."""

    def send(batch: tempo.Batch) -> None:
        batch.sendall(sock)  # every item, in order, no copy

    return send


def main() -> int:
    parser = argparse.ArgumentParser(description="Events -> tempo -> TCP collector.")
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    results, report = ctx.Pipe(duplex=False)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        collector = ctx.Process(target=collect, args=(listener, report), daemon=True)
        collector.start()
        report.close()  # the collector's end: if it dies, results.recv() raises EOFError
        sock = socket.create_connection(listener.getsockname(), timeout=30)

    rng = random.Random(1)
    with sock, tempfile.TemporaryFile() as spill:

        def spill_batch(batch: tempo.Batch, exc: BaseException) -> None:
            batch.writeall(spill)  # the frames, kept for a later resend

        with tempo.Pipeline(batch_sender(sock), interval=0.02, max_batch_bytes=64 * tempo.KiB,
                            max_buffered_bytes=1 * tempo.MiB,
                            retry=tempo.Retry(attempts=1), on_failure=spill_batch) as p:
            for seq in range(args.events):
                p.enqueue(make_event(seq, rng), timeout=5.0)
        sock.shutdown(socket.SHUT_WR)  # EOF: the collector reports
        spilled = spill.tell()

    try:
        frames, nbytes, leftover = results.recv()
    except EOFError:
        collector.join()
        print(f"FAILED: the collector died (exit code {collector.exitcode})")
        return 1
    collector.join()

    stats = p.stats()
    print(f"sent {stats.delivered_items:,} frames ({stats.enqueued_bytes:,} bytes), "
          f"batches: {stats.delivered_batches:,}, spilled: {spilled:,} bytes")
    if spilled or (frames, nbytes, leftover) != (stats.enqueued, stats.enqueued_bytes, 0):
        print(f"FAILED: the collector got {frames:,} frames, {nbytes:,} bytes, "
              f"{leftover} bytes of a partial frame")
        return 1
    print(f"OK: collector received {frames:,} frames, {nbytes:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
