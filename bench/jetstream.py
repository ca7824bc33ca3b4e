"""Events/s into a 3-replica JetStream stream: tempo's batches against one publish per event.

Side by side in one run, against one 3-node cluster on 127.0.0.1, 256 B
events, each way writing into a freshly created R3 stream (file storage, acks
from a quorum) and counted only once every publish is acked:

- ``publish``: ``await js.publish(subject, event)`` per event, in a loop: the
  way a user writes it without tempo (one round trip per event).
- ``publish_async``: nats-py's ``js.publish_async`` per event (acks awaited
  together, at most 4000 in flight: nats-py's default), then every ack
  awaited: the fastest way without batching.
- ``tempo``: a producer thread enqueues into a ``tempo.Pipeline`` whose async
  sink (examples/jetstream.py) publishes each batch as one framed message
  with a ``Nats-Msg-Id`` and waits for its ack; timed from the first enqueue
  to the end of ``aclose()``.

Each way runs ``--repeat`` times, alternating; the median events/s is
reported with its ratio to ``publish``. The stream is checked afterwards to
hold every event (``publish``: one message each; ``tempo``: the frames hold
them all).

    .venv/bin/python bench/jetstream.py            # starts (and stops) a cluster
    TEMPO_NATS_CLUSTER="$(bash .ci/nats.sh)" .venv/bin/python bench/jetstream.py

Needs nats-server on PATH (or ``$TEMPO_NATS_CLUSTER``) and nats-py.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import nats

import tempo

ROOT = Path(__file__).resolve().parent.parent
STREAM = "TEMPO_BENCH"


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("jetstream_example", ROOT / "examples" / "jetstream.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()


def _events(n: int, size: int) -> list[bytes]:
    return [(b"%012d " % i).ljust(size, b"x") for i in range(n)]


async def _check(js: Any, expected: int, framed: bool) -> None:
    messages = await example.read_stream(js, STREAM)
    got = sum(len(example.unframe(m)) for m in messages) if framed else len(messages)
    assert got == expected, f"the stream holds {got} events, {expected} were sent"


async def run_publish(js: Any, events: list[bytes]) -> float:
    subject = f"{STREAM}.events"
    start = time.perf_counter()
    for event in events:
        await js.publish(subject, event)
    return time.perf_counter() - start


async def run_publish_async(js: Any, events: list[bytes]) -> float:
    subject = f"{STREAM}.events"
    start = time.perf_counter()
    futures = [await js.publish_async(subject, event) for event in events]
    await asyncio.gather(*futures)
    return time.perf_counter() - start


async def run_tempo(js: Any, events: list[bytes], max_payload: int) -> float:
    sink = example.JetStreamSink(js, f"{STREAM}.events", stream=STREAM, max_payload=max_payload)
    start = time.perf_counter()
    async with tempo.Pipeline(sink, interval=0.01, max_batch_bytes=256 * tempo.KiB,
                              max_batch_items=4096, max_buffered_bytes=16 * tempo.MiB,
                              retry=tempo.Retry(attempts=15, backoff=0.1, max_backoff=1.0)) as p:

        def produce() -> None:
            for event in events:
                p.enqueue(event, timeout=None)

        producer = threading.Thread(target=produce)
        producer.start()
        await asyncio.to_thread(producer.join)
    return time.perf_counter() - start


async def main_async(urls: list[str], counts: dict[str, int], size: int, repeat: int) -> None:
    nc = await nats.connect(urls, connect_timeout=5)
    js = nc.jetstream()
    rates: dict[str, list[float]] = {name: [] for name in counts}
    try:
        for _ in range(repeat):
            for name, n in counts.items():
                events = _events(n, size)
                await example.recreate_stream(js, STREAM, replicas=3)
                if name == "publish":
                    seconds = await run_publish(js, events)
                elif name == "publish_async":
                    seconds = await run_publish_async(js, events)
                else:
                    seconds = await run_tempo(js, events, nc.max_payload)
                await _check(js, n, framed=name == "tempo")
                rates[name].append(n / seconds)
                print(f"  {name:14} {n:>9,} events in {seconds:6.2f} s: {n / seconds:>10,.0f} events/s",
                      flush=True)
        await js.delete_stream(STREAM)
    finally:
        await nc.close()
    base = statistics.median(rates["publish"])
    print(f"\n{size} B events into an R3 stream, median of {repeat}:\n")
    print("| way | events/s | vs one publish per event |")
    print("|---|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:,.0f} | {median / base:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--events", type=int, default=200_000, help="events per tempo run")
    parser.add_argument("--publish-events", type=int, default=10_000,
                        help="events per run of the one-publish-per-event ways")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    counts = {"publish": args.publish_events, "publish_async": args.publish_events * 4,
              "tempo": args.events}
    cluster = os.environ.get("TEMPO_NATS_CLUSTER")
    own = not cluster
    if own:
        cluster = subprocess.run(["bash", str(ROOT / ".ci" / "nats.sh")], check=True,
                                 capture_output=True, text=True).stdout.strip()
    try:
        urls = (Path(cluster) / "urls").read_text().strip().split(",")
        asyncio.run(main_async(urls, counts, args.size, args.repeat))
    finally:
        if own:
            subprocess.run(["bash", str(ROOT / ".ci" / "nats.sh"), "stop", cluster], check=True)


if __name__ == "__main__":
    main()
