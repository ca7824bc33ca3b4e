"""Events -> tempo -> a TCP collector, one ``batch.sendall(sock)`` per batch.

Frames are newline-delimited: each payload is one JSON line ending in b"\\n", so
a batch sent as it is, item after item, is a valid stream of frames and needs no
header of its own. ``batch.sendall`` hands tempo's buffer to the kernel without
copying it. The collector is a second process listening on 127.0.0.1; it parses
every frame and reports the frame count and byte total, which the example checks
against what tempo accepted (``d.stats()``).

    python examples/tcp_collector.py --events 50000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


def send_batches(d: tempo.Dispatcher, sock: socket.socket) -> int:
    """The consumer: send each batch whole; return the batch count."""
    batches = 0
    try:
        for batch in d.batches():  # ends once the dispatcher is finished
            batch.sendall(sock)  # every item, in order, no copy
            batches += 1
    except BaseException:
        d.stop()  # wake the producer: its enqueue raises tempo.Stopped
        raise
    return batches


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
    with sock, ThreadPoolExecutor(max_workers=1) as pool:
        with tempo.Dispatcher(interval=0.02, max_batch_bytes=64 * tempo.KiB,
                              max_buffered_bytes=1 * tempo.MiB) as d:
            sender = pool.submit(send_batches, d, sock)
            for seq in range(args.events):
                try:
                    d.enqueue(make_event(seq, rng), timeout=5.0)
                except tempo.Stopped:
                    break  # the sender failed: sender.result() raises its error
        batches = sender.result()
        sock.shutdown(socket.SHUT_WR)  # EOF: the collector reports

    try:
        frames, nbytes, leftover = results.recv()
    except EOFError:
        collector.join()
        print(f"FAILED: the collector died (exit code {collector.exitcode})")
        return 1
    collector.join()

    stats = d.stats()
    print(f"sent {stats.enqueued:,} frames ({stats.enqueued_bytes:,} bytes), "
          f"batches: {batches:,}")
    if (frames, nbytes, leftover) != (stats.enqueued, stats.enqueued_bytes, 0):
        print(f"FAILED: the collector got {frames:,} frames, {nbytes:,} bytes, "
              f"{leftover} bytes of a partial frame")
        return 1
    print(f"OK: collector received {frames:,} frames, {nbytes:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
