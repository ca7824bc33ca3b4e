"""The first lap through a fresh arena against the laps after it.

A new dispatcher's arena is fresh shared memory: the first time each page is
written it costs a page fault. This measures what that does to ``enqueue``:
one producer thread enqueues ``--size``-byte payloads (distinct pre-built
``bytes``, about 32 MiB of them, cycled) as fast as it can, with
``timeout=None`` (waiting for space, never refused), into a dispatcher of
``--buffered`` bytes started just before; one consumer thread takes and
releases batches (``interval=1 s``, ``max_batch_bytes=256*S``). Each lap is
``--buffered`` bytes of payloads, so lap 1 is the one that meets fresh pages.

For each lap: ns per item (wall time of the lap / items), and the latency of
single ``enqueue`` calls (``perf_counter_ns`` around each; the timer's own
cost, ~50-100 ns, is in every figure alike): p50, p99, p99.9, max. Then
lap 1 / steady state (the median of the later laps), for time per item and
p99. ``--rate N`` paces the producer to N items/s instead (a service that is
not saturating), where the latencies are the interesting part.

Resident memory (VmRSS) is printed after the dispatcher was made and after
lap 1, to show the arena is not faulted in all at once. ``--prefault`` makes
the dispatcher with ``prefault=True`` (every page faulted in by the
constructor; the time that takes is printed too): lap 1 is then a lap like
the others.

Usage: ``.venv/bin/python bench/coldstart.py [--size 10240] [--laps 4]``;
``--json`` prints one JSON line instead of the table. Compare two builds
side by side by running it with each on ``PYTHONPATH``, alternating.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from array import array
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # PYTHONPATH picks the build

import tempo
from tempo import MiB


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pct(sorted_ns: array, q: float) -> int:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))]


def run(size: int, buffered: int, laps: int, rate: float, prefault: bool = False) -> dict:
    rng = random.Random(size)
    pool = [rng.randbytes(size) for _ in range(max(256, min(8192, 32 * MiB // size)))]
    per_lap = buffered // size
    rss0 = rss_kib()
    made0 = time.perf_counter()
    options = {"prefault": True} if prefault else {}
    d = tempo.Dispatcher(interval=1.0, max_buffered_bytes=buffered, max_batch_bytes=256 * size, **options)
    make_s = time.perf_counter() - made0
    rss_made = rss_kib()
    seen = [0]

    def consume():
        for batch in d.batches():
            seen[0] += len(batch)

    consumer = threading.Thread(target=consume, daemon=True)
    d.start()
    consumer.start()
    enqueue = d.enqueue
    clock = time.perf_counter_ns
    out = []
    k = 0
    npool = len(pool)
    gap = int(1e9 / rate) if rate else 0
    rss_lap1 = 0
    for lap in range(laps):
        lat = array("q", bytes(8 * per_lap))
        t0 = clock()
        nxt = t0
        for i in range(per_lap):
            p = pool[k]
            k += 1
            if k == npool:
                k = 0
            if gap:
                nxt += gap
                while clock() < nxt:
                    pass
            t = clock()
            enqueue(p, None)
            lat[i] = clock() - t
        elapsed = clock() - t0
        if lap == 0:
            rss_lap1 = rss_kib()
        s = array("q", sorted(lat))
        out.append({
            "lap": lap + 1,
            "ns_per_item": elapsed / per_lap,
            "p50_ns": pct(s, 0.50),
            "p99_ns": pct(s, 0.99),
            "p999_ns": pct(s, 0.999),
            "max_ns": s[-1],
        })
    d.shutdown()
    consumer.join()
    steady = sorted(out[1:], key=lambda r: r["ns_per_item"])[len(out[1:]) // 2] if laps > 1 else out[0]
    return {
        "size": size,
        "buffered": buffered,
        "rate": rate,
        "prefault": prefault,
        "make_s": make_s,
        "laps": out,
        "first_over_steady": out[0]["ns_per_item"] / steady["ns_per_item"],
        "p99_first_over_steady": out[0]["p99_ns"] / max(1, steady["p99_ns"]),
        "rss_kib": {"before": rss0, "made": rss_made, "after_lap1": rss_lap1},
        "python": sys.version.split()[0],
        "gil": getattr(sys, "_is_gil_enabled", lambda: True)(),
        "tempo": str(Path(tempo.__file__).parent),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=10240, help="payload bytes (default 10240)")
    ap.add_argument("--buffered", type=int, default=64 * MiB, help="max_buffered_bytes (default 64 MiB)")
    ap.add_argument("--laps", type=int, default=4, help="laps through the arena (default 4)")
    ap.add_argument("--rate", type=float, default=0.0, help="items/s to pace the producer to (0: flat out)")
    ap.add_argument("--prefault", action="store_true", help="Dispatcher(prefault=True)")
    ap.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    args = ap.parse_args(argv)
    r = run(args.size, args.buffered, args.laps, args.rate, args.prefault)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"tempo from {r['tempo']}, Python {r['python']}, GIL {'on' if r['gil'] else 'off'}; "
          f"S={args.size} B, max_buffered_bytes={args.buffered}, rate={args.rate or 'flat out'}, "
          f"prefault={args.prefault} (dispatcher made in {r['make_s'] * 1e3:.1f} ms)")
    print(f"{'lap':>3} {'ns/item':>9} {'p50':>8} {'p99':>8} {'p99.9':>8} {'max':>10}  (ns)")
    for lap in r["laps"]:
        print(f"{lap['lap']:>3} {lap['ns_per_item']:>9.0f} {lap['p50_ns']:>8} {lap['p99_ns']:>8} "
              f"{lap['p999_ns']:>8} {lap['max_ns']:>10}")
    rss = r["rss_kib"]
    print(f"first lap / steady: {r['first_over_steady']:.2f}x per item, p99 {r['p99_first_over_steady']:.2f}x; "
          f"RSS +{(rss['made'] - rss['before']) / 1024:.1f} MiB when made, "
          f"+{(rss['after_lap1'] - rss['before']) / 1024:.1f} MiB after lap 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
