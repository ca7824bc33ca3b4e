"""StatsD-style metrics -> tempo.Pipeline -> UDP, one datagram per metric, with ``sendmmsg``.

A StatsD (or DogStatsD) agent reads one metric per UDP datagram:
``api.requests:1|c``, ``api.latency:42|ms``, ``queue.depth:7|g``. Sending
them one ``sock.send()`` at a time costs a system call and a trip through the
GIL per metric. Here the application enqueues metrics into a
``tempo.Pipeline``; its worker sends each batch with
``batch.sendmmsg(sock)``: every item its own datagram, in order, up to 1024
per system call, straight from tempo's memory and without holding the GIL,
so the threads that produce metrics keep running while a batch goes out.

UDP gives no delivery guarantee (a receiver that falls behind loses what
its buffer cannot hold: the producer here makes ``--rate`` metrics per
second, as an application serving requests would) and a resend could count a metric twice, so
the pipeline does not retry (``Retry(attempts=1)``); a batch the kernel
refuses part of (``OSError`` with ``exc.sent`` items already gone) is logged
by ``on_failure``. The "agent" here is a second process on 127.0.0.1 that
aggregates what it receives; the example checks its totals against what was
sent, exactly, so it fails if the agent's receive buffer overflowed: send
no more metrics than that buffer holds, or at a rate the agent keeps up
with.

    python examples/statsd_udp.py --metrics 100000
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import socket
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection

import tempo

END = b"#end"  # sent last, on the same socket: UDP on loopback keeps the order


RECEIVE_BUFFER = 4 * tempo.MiB
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux's; Python does not name it


def agent_socket() -> socket.socket:
    """The agent's UDP socket on 127.0.0.1, with room for bursts while the
    agent is busy: the kernel drops datagrams that find the receive buffer
    full. SO_RCVBUF is capped at net.core.rmem_max (often 208 KiB: a few
    hundred small datagrams); SO_RCVBUFFORCE, allowed with CAP_NET_ADMIN,
    is not."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:  # not permitted
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.bind(("127.0.0.1", 0))
    return sock


def agent(sock: socket.socket, report: Connection) -> None:
    """A minimal StatsD agent (its own process): sums counters, counts
    timings, keeps gauges; reports them once it reads END."""
    datagrams = 0
    counters: Counter[bytes] = Counter()
    timings: Counter[bytes] = Counter()
    gauges: dict[bytes, int] = {}
    report.send("ready")
    with sock:
        while (datagram := sock.recv(1500)) != END:
            datagrams += 1
            name, _, rest = datagram.partition(b":")
            value, _, kind = rest.partition(b"|")
            if kind == b"c":
                counters[name] += int(value)
            elif kind == b"ms":
                timings[name] += 1
            elif kind == b"g":
                gauges[name] = int(value)
    report.send((datagrams, dict(counters), dict(timings), gauges))


def report_failure(batch: tempo.Batch, exc: BaseException) -> None:
    sent = getattr(exc, "sent", 0)
    print(f"dropped {len(batch) - sent} of {len(batch)} metrics: {exc!r}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description="StatsD metrics -> tempo.Pipeline -> UDP.")
    parser.add_argument("--metrics", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=50_000,
                        help="metrics per second the application makes")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    results, report = ctx.Pipe(duplex=False)
    with agent_socket() as listener:
        process = ctx.Process(target=agent, args=(listener, report), daemon=True)
        process.start()
        report.close()  # the agent's end: if it dies, results.recv() raises EOFError
        if results.recv() != "ready":
            return 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(listener.getsockname())  # sendmmsg sends to the connected address

    def send(batch: tempo.Batch) -> None:
        batch.sendmmsg(sock)  # one datagram per item, no copy, no GIL

    rng = random.Random(1)
    requests = 0
    with tempo.Pipeline(
        send,
        interval=0.01,  # metrics leave at most 10 ms after they are made
        max_batch_items=512,
        max_batch_bytes=64 * tempo.KiB,
        max_buffered_bytes=1 * tempo.MiB,
        retry=tempo.Retry(attempts=1),
        on_failure=report_failure,
    ) as p:
        start = time.monotonic()
        for i in range(args.metrics):
            if i % 500 == 0:
                # An application makes metrics as it serves requests; UDP
                # drops what a busy agent cannot read in time.
                time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            if i % 10 == 9:
                metric = b"queue.depth:%d|g" % (i % 97)
            elif i % 2:
                metric = b"api.latency:%d|ms" % int(rng.lognormvariate(3, 1))
            else:
                metric = b"api.requests:1|c"
                requests += 1
            p.enqueue(metric, timeout=5.0)
    stats = p.stats()
    try:
        sock.send(END)
        while not results.poll(0.5):
            sock.send(END)  # again if it was lost
        datagrams, counters, timings_seen, _ = results.recv()
    except EOFError:
        process.join()
        print(f"FAILED: the agent died (exit code {process.exitcode})")
        return 1
    process.join()
    sock.close()

    timings = args.metrics - requests - args.metrics // 10
    expected = ({b"api.requests": requests}, {b"api.latency": timings})
    if (counters, timings_seen) != expected:
        print(f"FAILED: the agent got {datagrams:,} of {args.metrics:,} metrics: "
              f"{counters} {timings_seen}, expected {expected}")
        return 1
    print(f"OK: {datagrams:,} metrics sent as datagrams in "
          f"{stats.delivered_batches:,} sendmmsg batches; the agent counted "
          f"{requests:,} requests and {timings:,} timings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
