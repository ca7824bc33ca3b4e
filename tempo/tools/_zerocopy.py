"""``tempo bench --zerocopy``: the whole batch without copying, measured side
by side in one run (docs/performance.md, "The whole batch, zero-copy").

- **Parquet**: 256 B JSON events (all distinct), batches of 4,096, each
  written as one Parquet file to ``/dev/null`` through ``batch.to_arrow()``
  against the item-list path (``pyarrow.array(batch.tolist(),
  large_binary())``); the same batch for both, interleaved. Headline: the
  plainest write (no compression, dictionary or statistics), where the way
  in matters most; pyarrow's defaults (snappy, dictionary) beside it, and
  the conversion alone.
- **Datagrams**: 128 B items, batches of 8,192, to a UDP socket on
  127.0.0.1 whose receiver never reads (every datagram takes the whole send
  path and is dropped at the receiving socket, alike for all): ``sendmmsg``
  against the C floor (``bench/sendmmsg_floor.c``, compiled at run time with
  ``$CC``; only in a checkout) and a Python loop of ``sock.send(item)``.
- **GIL**: how much Python work a producer thread gets done while the main
  thread sends batches with ``sendmmsg`` (the GIL released during the
  calls) or with the ``send`` loop, as a share of what it does alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import tempo

from . import _util

#: The Parquet write at its cheapest (no compression, dictionary or
#: statistics): what is left to compare is the way in.
PLAIN: dict[str, Any] = {"compression": "none", "use_dictionary": False, "write_statistics": False}
EVENT_SIZE = 256
EVENTS_PER_BATCH = 4096
DATAGRAM_SIZE = 128
DATAGRAMS_PER_BATCH = 8192
FLOOR_SOURCE = Path(__file__).resolve().parents[2] / "bench" / "sendmmsg_floor.c"


def _batch(payloads: list[bytes]) -> tuple[tempo.Dispatcher, tempo.Batch]:
    """A dispatcher holding exactly ``payloads`` as one batch, and the batch."""
    total = sum(map(len, payloads))
    d = tempo.Dispatcher(interval=3600, max_batch_bytes=total, max_buffered_bytes=2 * total,
                         max_batch_items=len(payloads))
    d.start()
    d.enqueue_many(payloads)
    return d, d.get_batch(timeout=10)


def _event(seq: int, rng: random.Random) -> bytes:
    """A JSON telemetry event of exactly EVENT_SIZE bytes (all distinct)."""
    head = (f'{{"seq":{seq},"ts":{1.7e9 + seq / 1e3:.3f},"host":"web-{rng.randrange(64):02d}",'
            f'"type":"{rng.choice(["page_view", "click", "error", "heartbeat"])}",'
            f'"duration_ms":{rng.lognormvariate(2.5, 1.0):.2f},"trace":"{rng.getrandbits(128):032x}",'
            f'"pad":"').encode()
    return head + b"x" * (EVENT_SIZE - len(head) - 2) + b'"}'


def _per_item_ns(fn: Callable[[], object], items: int, tries: int = 3) -> float:
    """The best of `tries` back-to-back calls, per item: the same for every
    case (the C floor too), so a preempted call does not decide a round."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter_ns()
        fn()
        best = min(best, time.perf_counter_ns() - start)
    return best / items


def bench_parquet(rounds: int) -> dict[str, Any]:
    try:
        # Untyped (no stubs, no py.typed), and optional.
        import pyarrow as pa  # type: ignore[import-untyped,import-not-found,unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ModuleNotFoundError:
        return {"skipped": 'pyarrow is not installed (pip install "tempo-batcher[arrow]")'}
    rng = random.Random(1)
    events = [_event(seq, rng) for seq in range(EVENTS_PER_BATCH)]
    d, batch = _batch(events)

    def write(arr: Any, **options: Any) -> None:
        with pa.OSFile(os.devnull, "wb") as sink:
            pq.write_table(pa.table({"event": arr}), sink, **options)

    def through_arrow() -> None:
        write(batch.to_arrow(), **PLAIN)

    def through_list() -> None:
        write(pa.array(batch.tolist(), type=pa.large_binary()), **PLAIN)

    def through_arrow_defaults() -> None:
        write(batch.to_arrow())

    def through_list_defaults() -> None:
        write(pa.array(batch.tolist(), type=pa.large_binary()))

    def convert_arrow() -> None:
        batch.to_arrow()

    def convert_list() -> None:
        pa.array(batch.tolist(), type=pa.large_binary())

    cases = {"to_arrow": through_arrow, "tolist": through_list,
             "to_arrow (snappy, dictionary)": through_arrow_defaults,
             "tolist (snappy, dictionary)": through_list_defaults,
             "to_arrow (conversion only)": convert_arrow, "tolist (conversion only)": convert_list}
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in cases.items():
            runs[name].append(_per_item_ns(fn, EVENTS_PER_BATCH))
    batch.release()
    d.stop()
    med = {name: statistics.median(r) for name, r in runs.items()}
    return {"event_size": EVENT_SIZE, "events_per_batch": EVENTS_PER_BATCH, "rounds": rounds,
            "ns_per_event": med,
            "speedup": med["tolist"] / med["to_arrow"],
            "speedup_writer_defaults": med["tolist (snappy, dictionary)"] / med["to_arrow (snappy, dictionary)"],
            "conversion_speedup": med["tolist (conversion only)"] / med["to_arrow (conversion only)"]}


def _compile_floor(tmp: Path) -> tuple[Optional[Path], str]:
    if not FLOOR_SOURCE.is_file():
        return None, f"no {FLOOR_SOURCE.name} (the C floor needs a checkout of tempo)"
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None, "no C compiler (set $CC)"
    exe = tmp / "sendmmsg_floor"
    proc = subprocess.run([cc, "-O2", "-o", str(exe), str(FLOOR_SOURCE)], capture_output=True, text=True)
    if proc.returncode:
        return None, "compiling the C floor failed: " + proc.stderr.strip()[:200]
    return exe, ""


def _receiver() -> socket.socket:
    # Never read, and small: past the first few datagrams every one is
    # dropped on arrival, the same for every sender measured against it.
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    r.bind(("127.0.0.1", 0))
    return r


def bench_datagrams(rounds: int) -> dict[str, Any]:
    payloads = [bytes([65 + i % 26]) * DATAGRAM_SIZE for i in range(DATAGRAMS_PER_BATCH)]
    d, batch = _batch(payloads)
    receiver = _receiver()
    port = receiver.getsockname()[1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    send = sock.send

    def send_loop() -> None:
        for item in batch:
            send(item)

    runs: dict[str, list[float]] = {"sendmmsg": [], "send loop": [], "C sendmmsg": []}
    with tempfile.TemporaryDirectory(prefix="tempo-zerocopy-") as tmp:
        exe, why = _compile_floor(Path(tmp))
        batch.sendmmsg(sock)  # warm-up
        for _ in range(rounds):
            runs["sendmmsg"].append(_per_item_ns(lambda: batch.sendmmsg(sock), DATAGRAMS_PER_BATCH))
            runs["send loop"].append(_per_item_ns(send_loop, DATAGRAMS_PER_BATCH))
            if exe is not None:
                out = subprocess.run([str(exe), str(port), str(DATAGRAMS_PER_BATCH), str(DATAGRAM_SIZE), "4"],
                                     capture_output=True, text=True, timeout=60)
                if out.returncode:
                    exe, why = None, "the C floor failed: " + out.stderr.strip()[:200]
                else:
                    # The first round warms up, as batch.sendmmsg's did.
                    runs["C sendmmsg"].append(min(float(x) for x in out.stdout.split()[1:]))
    batch.release()
    d.stop()
    sock.close()
    receiver.close()
    med = {name: statistics.median(r) for name, r in runs.items() if r}
    result: dict[str, Any] = {"datagram_size": DATAGRAM_SIZE, "datagrams_per_batch": DATAGRAMS_PER_BATCH,
                              "rounds": rounds, "ns_per_datagram": med,
                              "vs_send_loop": med["send loop"] / med["sendmmsg"]}
    if "C sendmmsg" in med:
        result["vs_c_floor"] = med["C sendmmsg"] / med["sendmmsg"]  # above 0.9: the goal
    else:
        result["c_floor_skipped"] = why
    return result


def bench_gil(seconds: float) -> dict[str, Any]:
    payloads = [b"m" * DATAGRAM_SIZE] * DATAGRAMS_PER_BATCH
    d, batch = _batch(payloads)
    receiver = _receiver()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(receiver.getsockname())
    send = sock.send

    def producer(stop: threading.Event, count: list[int]) -> None:
        n = 0
        while not stop.is_set():
            for _ in range(1000):
                n += 1
        count.append(n)

    def measure(consumer: Optional[Callable[[], None]]) -> tuple[float, float]:
        stop, count = threading.Event(), []  # type: ignore[var-annotated]
        t = threading.Thread(target=producer, args=(stop, count))
        t.start()
        sent = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if consumer is None:
                time.sleep(0.01)
            else:
                consumer()
                sent += DATAGRAMS_PER_BATCH
        elapsed = time.monotonic() - start
        stop.set()
        t.join()
        return count[0] / elapsed, sent / elapsed

    def send_loop() -> None:
        for item in batch:
            send(item)

    def consumer_alone(consumer: Callable[[], None]) -> float:
        sent = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            consumer()
            sent += DATAGRAMS_PER_BATCH
        return sent / (time.monotonic() - start)

    def sendmmsg() -> None:
        batch.sendmmsg(sock)

    mmsg_alone = consumer_alone(sendmmsg)
    loop_alone = consumer_alone(send_loop)
    alone, _ = measure(None)
    with_mmsg, mmsg_rate = measure(sendmmsg)
    with_loop, loop_rate = measure(send_loop)
    batch.release()
    d.stop()
    sock.close()
    receiver.close()
    return {"seconds": seconds, "producer_alone_per_s": alone,
            "producer_share_during_sendmmsg": with_mmsg / alone,
            "producer_share_during_send_loop": with_loop / alone,
            "datagrams_per_s_sendmmsg": mmsg_rate, "datagrams_per_s_send_loop": loop_rate,
            "datagrams_per_s_sendmmsg_alone": mmsg_alone, "datagrams_per_s_send_loop_alone": loop_alone,
            "cpus": os.cpu_count()}


def run(args: argparse.Namespace) -> int:
    rounds = args.repeat or (5 if args.quick else 31)
    result = {"tool": "bench", "mode": "zerocopy", "python": sys.version.split()[0],
              "parquet": bench_parquet(rounds), "datagrams": bench_datagrams(rounds),
              "gil": bench_gil(0.5 if args.quick else 3.0)}
    if getattr(args, "out", None):
        _util.write_json(args.out, result)
    if getattr(args, "json", False):
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


def print_table(r: dict[str, Any]) -> None:
    p, dg, g = r["parquet"], r["datagrams"], r["gil"]
    if "skipped" in p:
        print(f"Parquet: skipped: {p['skipped']}")
    else:
        print(f"Parquet, {p['event_size']} B events, batches of {p['events_per_batch']:,} "
              f"(ns per event, median of {p['rounds']}):")
        for name, ns in p["ns_per_event"].items():
            print(f"  {name:<28} {ns:8.1f}")
        print(f"  to_arrow() vs the item list: {p['speedup']:.1f}x to Parquet (plain write), "
              f"{p['speedup_writer_defaults']:.1f}x with pyarrow's defaults, "
              f"{p['conversion_speedup']:.0f}x the conversion alone")
    print(f"Datagrams, {dg['datagram_size']} B to UDP 127.0.0.1, batches of {dg['datagrams_per_batch']:,} "
          f"(ns per datagram, median of {dg['rounds']}):")
    for name, ns in dg["ns_per_datagram"].items():
        print(f"  {name:<28} {ns:8.1f}")
    if "vs_c_floor" in dg:
        print(f"  sendmmsg: {dg['vs_c_floor']:.2f}x the C floor's rate, "
              f"{dg['vs_send_loop']:.2f}x the send loop's")
    else:
        print(f"  sendmmsg: {dg['vs_send_loop']:.2f}x the send loop's rate (no C floor: "
              f"{dg['c_floor_skipped']})")
    print(f"A busy producer thread beside the sender ({g['cpus']} CPUs):")
    for name, key in (("sendmmsg", "sendmmsg"), ("send loop", "send_loop")):
        print(f"  {name:<10} the sender keeps {g['datagrams_per_s_' + key]:>10,.0f} datagrams/s "
              f"(alone {g['datagrams_per_s_' + key + '_alone']:,.0f}), the producer keeps "
              f"{g['producer_share_during_' + key]:.0%} of its rate alone")
    sys.stdout.flush()
