"""Events -> tempo.Pipeline -> NATS JetStream, one message per batch, stored once.

Producers enqueue events; the pipeline's ``async def`` sink publishes each
batch to a JetStream stream as ONE message and waits for the stream's ack
before the batch counts as delivered. If the publish fails (no ack in time, a
leader election, a lost connection), the pipeline retries the same batch with
the same de-duplication id (the ``Nats-Msg-Id`` header), so a retry whose first
attempt was stored after all is answered "duplicate" instead of being stored
twice. docs/scaling-out.md explains the framing, the id and the settings.

The framing (``frame`` / ``unframe`` below), all integers unsigned 32-bit
big-endian::

    count | length[0] ... length[count-1] | item[0] item[1] ... item[count-1]

A consumer splits a message with the lengths alone, never parsing a payload.

The stream (``--stream``, 3 replicas, subject ``<stream>.events``) is deleted
and recreated on every run. Without a reachable server the example says so
and exits 0 (skipped).

    python examples/jetstream.py --urls nats://127.0.0.1:4222,nats://127.0.0.1:4223
    export TEMPO_NATS_CLUSTER="$(bash .ci/nats.sh)"; python examples/jetstream.py

Needs nats-py (``pip install nats-py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import uuid
from pathlib import Path
from typing import Optional

import nats
from nats.js import JetStreamContext

import tempo

_U32 = struct.Struct(">I")
#: The largest frame this framing can describe (lengths are u32).
_U32_MAX = 0xFFFF_FFFF


def frame(batch: tempo.Batch) -> bytes:
    """The batch as one message: count, the lengths, then the items back to back.

    One copy of the payload bytes (the join); the items are read as the
    batch's memoryviews.
    """
    items = batch[:]
    count = len(items)
    return b"".join((struct.pack(f">I{count}I", count, *map(len, items)), *items))


def unframe(message: bytes) -> list[memoryview]:
    """Split a message made by ``frame`` into its items (views into ``message``).

    Raises ``ValueError`` if the message is not a whole frame.
    """
    view = memoryview(message)
    if len(view) < 4:
        raise ValueError("not a tempo frame: shorter than its count")
    (count,) = _U32.unpack_from(view, 0)
    start = 4 + 4 * count
    if len(view) < start:
        raise ValueError(f"not a tempo frame: {count} lengths do not fit in {len(view)} bytes")
    items = []
    for length in struct.unpack_from(f">{count}I", view, 4):
        items.append(view[start:start + length])
        start += length
    if start != len(view):
        raise ValueError(f"not a tempo frame: the lengths cover {start} of {len(view)} bytes")
    return items


def header_bytes(headers: dict[str, str]) -> int:
    """The bytes ``headers`` add to a message: the server counts them against
    ``max_payload`` with the payload (``NATS/1.0\\r\\n``, ``Key: value\\r\\n``
    per header, ``\\r\\n``)."""
    return len(b"NATS/1.0\r\n\r\n") + sum(
        len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


class JetStreamSink:
    """A pipeline sink: one JetStream publish per batch, acked, with a stable id.

    The id of a batch is ``<producer>-<seq>``: ``producer`` is random per sink
    and per process, ``seq`` is ``batch.seq``, the batch's number in its
    dispatcher, fixed for the life of the batch, so every retry carries it.

    One sink serves ONE pipeline with ``workers=1``: the stream keeps the
    batches in the order they are published, so one publish at a time, and
    the ``seq`` of one dispatcher only. The sink enforces it rather than store
    a batch twice or out of order: it publishes a batch only while no other
    publish is in flight, and only if it is a retry of the last batch (the
    same object: the sink holds it, so no other batch can be it) or comes
    after it (a higher ``seq``). Anything else, a second worker or a second
    pipeline sharing the sink, raises ``tempo.Unretryable``: the batch goes to
    ``on_failure`` at once, with its id still ``msg_id(batch)``.
    """

    def __init__(self, js: JetStreamContext, subject: str, *, stream: Optional[str] = None,
                 timeout: float = 2.0, max_payload: int = 1024 * 1024) -> None:
        self.js = js
        self.subject = subject
        self.stream = stream      # the publish fails unless it lands in this stream
        self.timeout = timeout    # seconds to wait for the ack of one attempt
        self.max_payload = max_payload
        self.duplicates = 0       # acks that said "already stored": retries after a lost ack
        self._pid = -1
        self._producer = ""
        self._last: Optional[tempo.Batch] = None
        self._last_seq = 0
        self._publishing = False

    def _this_process(self) -> None:
        if self._pid != os.getpid():  # first use, or a forked child: a fresh producer
            self._pid, self._producer = os.getpid(), uuid.uuid4().hex
            self._last, self._last_seq = None, 0

    def msg_id(self, batch: tempo.Batch) -> str:
        """The batch's de-duplication id: new for a new batch, the same on a retry."""
        self._this_process()
        return f"{self._producer}-{batch.seq}"

    def headers(self, batch: tempo.Batch) -> dict[str, str]:
        """The headers of the batch's message."""
        headers = {"Nats-Msg-Id": self.msg_id(batch)}
        if self.stream is not None:  # the publish fails unless it lands in this stream
            headers["Nats-Expected-Stream"] = self.stream
        return headers

    def _admit(self, batch: tempo.Batch) -> None:
        self._this_process()
        if self._publishing:
            raise tempo.Unretryable(
                "JetStreamSink: a second publish while one is in flight: the sink needs "
                "workers=1 and a pipeline of its own (the stream keeps publish order)")
        if batch is not self._last:
            if batch.seq <= self._last_seq:
                raise tempo.Unretryable(
                    f"JetStreamSink: batch {batch.seq} after batch {self._last_seq}: the sink "
                    "needs workers=1 and a pipeline of its own (ids are batch.seq)")
            self._last, self._last_seq = batch, batch.seq

    async def __call__(self, batch: tempo.Batch) -> None:
        self._admit(batch)
        headers = self.headers(batch)
        message = frame(batch)
        size = len(message) + header_bytes(headers)
        if size > self.max_payload or len(message) > _U32_MAX:
            # The server would close the connection; retrying cannot help.
            raise tempo.Unretryable(self._too_large(batch, len(message), size))
        self._publishing = True
        try:
            ack = await self.js.publish(self.subject, message, timeout=self.timeout,
                                        headers=headers)
        finally:
            self._publishing = False
        if ack.duplicate:
            self.duplicates += 1

    def _too_large(self, batch: tempo.Batch, framed: int, size: int) -> str:
        if len(batch) == 1:
            # One event is a batch of its own when it is over max_batch_bytes:
            # no batch setting makes it fit.
            largest = self.max_payload - (size - batch.nbytes)
            return (f"JetStreamSink: one event of {batch.nbytes} bytes is a message of {size} "
                    f"bytes (framing and headers included), over the server's max_payload "
                    f"({self.max_payload}): refuse events over {largest} bytes where they "
                    f"are made, or raise max_payload")
        return (f"JetStreamSink: a batch of {len(batch)} events is a message of {size} bytes "
                f"({framed} framed, the rest headers), over the server's max_payload "
                f"({self.max_payload}): lower max_batch_bytes / max_batch_items")


def cluster_urls() -> str:
    """``$TEMPO_NATS_URLS``, or the urls of the cluster ``$TEMPO_NATS_CLUSTER`` (.ci/nats.sh)."""
    urls = os.environ.get("TEMPO_NATS_URLS", "")
    cluster = os.environ.get("TEMPO_NATS_CLUSTER", "")
    if not urls and cluster:
        urls = (Path(cluster) / "urls").read_text().strip()
    return urls


async def recreate_stream(js: JetStreamContext, name: str, *, replicas: int = 3,
                          duplicate_window: float = 120.0) -> None:
    """Delete the stream ``name`` if it exists and create it afresh."""
    try:
        await js.delete_stream(name)
    except nats.js.errors.NotFoundError:
        pass
    await js.add_stream(name=name, subjects=[f"{name}.events"], num_replicas=replicas,
                        duplicate_window=duplicate_window)


async def read_stream(js: JetStreamContext, name: str, timeout: float = 10.0) -> list[bytes]:
    """Every message of the stream, in order (an ordered consumer, bounded waits)."""
    info = await js.stream_info(name)
    total = info.state.messages
    messages: list[bytes] = []
    if total == 0:
        return messages
    sub = await js.subscribe(f"{name}.events", ordered_consumer=True)
    try:
        while len(messages) < total:
            msg = await sub.next_msg(timeout=timeout)
            messages.append(msg.data)
    finally:
        await sub.unsubscribe()
    return messages


async def read_back(js: JetStreamContext, name: str, seconds: float = 60.0) -> list[bytes]:
    """``read_stream``, again from the start while it fails (a node was lost
    and the stream is electing a leader), for ``seconds`` at most."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await read_stream(js, name)
        except nats.errors.Error:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _one_line(exc: Exception) -> None:
    """nats-py's error callback: one line, not a traceback per reconnect attempt."""
    print(f"nats: {exc!r}", file=sys.stderr)


async def run(urls: str, stream: str, events: int) -> int:
    try:
        # Reconnect for ever, as docs/scaling-out.md recommends: the pipeline's
        # retries ride out a lost server. nats-py also retries the first
        # connect for ever then, hence the bound on it.
        nc = await asyncio.wait_for(
            nats.connect(urls.split(","), connect_timeout=2, reconnect_time_wait=0.5,
                         max_reconnect_attempts=-1, error_cb=_one_line), 6)
    except (OSError, nats.errors.Error, asyncio.TimeoutError) as exc:
        print(f"SKIPPED: cannot reach NATS at {urls}: {exc!r}")
        return 0
    try:
        js = nc.jetstream()
        await recreate_stream(js, stream)
        sink = JetStreamSink(js, f"{stream}.events", stream=stream,
                             max_payload=nc.max_payload)
        async with tempo.Pipeline(
            sink, interval=0.05, max_batch_bytes=256 * tempo.KiB, max_batch_items=4096,
            max_buffered_bytes=8 * tempo.MiB,
            # About 30 s of retries: a leader election takes a few seconds;
            # the stream's 120 s duplicate window covers them all.
            retry=tempo.Retry(attempts=15, backoff=0.1, max_backoff=1.0),
        ) as p:
            for seq in range(events):
                await p.aenqueue(b'{"seq": %d, "kind": "click"}' % seq, timeout=10.0)
        stats = p.stats()

        seqs = [int(bytes(item).split(b" ")[1].rstrip(b",}"))
                for message in await read_back(js, stream) for item in unframe(message)]
    finally:
        await nc.close()
    if seqs != list(range(events)) or stats.failed_batches:
        print(f"FAILED: {len(seqs):,} events read back for {events:,} sent "
              f"({len(set(seqs)):,} distinct), {stats.failed_batches} failed batches")
        return 1
    print(f"OK: {events:,} events in {stats.delivered_batches:,} JetStream message(s), "
          f"each once, in order")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Events -> tempo -> NATS JetStream.")
    parser.add_argument("--urls", default=cluster_urls(),
                        help="comma-separated server URLs (default: $TEMPO_NATS_URLS, "
                             "or the cluster in $TEMPO_NATS_CLUSTER)")
    parser.add_argument("--stream", default="TEMPO_EXAMPLE")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    if not args.urls:
        print("SKIPPED: no NATS server; pass --urls or set TEMPO_NATS_URLS")
        return 0
    return asyncio.run(run(args.urls, args.stream, args.events))


if __name__ == "__main__":
    sys.exit(main())
