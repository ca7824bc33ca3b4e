"""Producers on one dispatcher against producers with a dispatcher each, in one process.

    .venv-ft/bin/python bench/sharding.py [--size 256] [--items 4194304] [--producers 2]
                                          [--repeat 5] [--quick] [--out PATH]

Three layouts, run alternately in this process (``--repeat`` rounds, medians
reported), each timing ``--items`` payloads from the producers' start to the
last enqueue returning, then draining:

``one``
    one producer, one dispatcher, one consumer (compare.py's W1);
``shared``
    ``--producers`` producers on one dispatcher, one consumer (W2);
``sharded``
    the same producers, each with a dispatcher of its own and its own
    consumer: nothing of tempo's is shared between them.

Each producer runs ``tempo.tools._throughput``'s own loop (``enqueue(p,
timeout=None)`` over distinct ``bytes`` from a 32 MiB pool, from its own
starting point); the dispatchers are configured as in compare.py
(``interval = 1 s``, ``max_batch_bytes = 256 * size``, ``max_buffered_bytes
= 64 MiB``) and warmed up (one lap of the arena) before the first round.
``sharded`` against ``one`` says how far the interpreter and the machine let
producers run in parallel; ``shared`` against ``sharded`` is what sharing one
dispatcher costs (its one open batch and exact admission are decided per
payload under one lock). Prints a table and one ``SHARDING_JSON {...}`` line,
which ``--out`` also appends to a JSON-lines file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tempo
from tempo.tools._throughput import produce_blocking

LAYOUTS = ("one", "shared", "sharded")
POOL_BYTES = 32 * tempo.MiB


def consume(d: tempo.Dispatcher) -> None:
    for batch in d.batches():
        batch.release()


def run(dispatchers: list[tempo.Dispatcher], producers: int, pool: list[bytes], items: int) -> float:
    """Items/s of ``producers`` threads, producer i on dispatchers[i % len]."""
    per = items // producers
    chunk = 256
    start = threading.Barrier(producers + 1)
    out: list = [None] * producers
    threads = []
    for i in range(producers):
        k = (i * 997) % len(pool)
        payloads = itertools.cycle(pool[k:] + pool[:k])
        d = dispatchers[i % len(dispatchers)]
        threads.append(threading.Thread(
            target=produce_blocking,
            args=(d.enqueue, tempo.QueueFull, payloads, per // chunk, None, out, i, start, chunk)))
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    first = min(r[0] for r in out)
    last = max(r[1] for r in out)
    return sum(r[3] for r in out) / (last - first)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--items", type=int, default=1 << 22, help="payloads per run")
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small runs and arenas, 1 round: a smoke test")
    ap.add_argument("--out", type=Path, help="append the JSON line to this file")
    args = ap.parse_args(argv)
    if args.size < 1 or args.items < 1 or args.producers < 1 or args.repeat < 1:
        ap.error("--size, --items, --producers and --repeat must be positive")
    items, repeat = (1 << 16, 1) if args.quick else (args.items, args.repeat)
    bound = 4 * tempo.MiB if args.quick else 64 * tempo.MiB
    pool = [os.urandom(args.size) for _ in range(max(16, (bound // 2 if args.quick else POOL_BYTES) // args.size))]
    config = {"interval": 1.0, "max_batch_bytes": 256 * args.size, "max_buffered_bytes": bound}
    layouts = {
        "one": (1, 1),
        "shared": (args.producers, 1),
        "sharded": (args.producers, args.producers),
    }
    made = {name: [tempo.Dispatcher(**config) for _ in range(n)] for name, (_, n) in layouts.items()}
    consumers = []
    for ds in made.values():
        for d in ds:
            d.start()
            consumers.append(threading.Thread(target=consume, args=(d,), daemon=True))
            consumers[-1].start()
            for p in itertools.islice(itertools.cycle(pool), bound // args.size):
                d.enqueue(p, timeout=None)  # one lap of the arena: its pages are in
    rates: dict[str, list[float]] = {name: [] for name in layouts}
    for r in range(repeat):
        for name, (producers, _) in layouts.items():
            rates[name].append(run(made[name], producers, pool, items))
            print(f"round {r + 1}/{repeat} {name:>7}: {rates[name][-1] / 1e6:6.2f} M items/s",
                  file=sys.stderr, flush=True)
    for ds in made.values():
        for d in ds:
            d.shutdown()
    for t in consumers:
        t.join()
    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"{args.size} B, {args.producers} producers, {items} payloads a run, medians of {repeat}:")
    for name in layouts:
        print(f"  {name:>7}: {med[name] / 1e6:6.2f} M items/s  {med[name] / med['one']:.2f}x one  "
              f"runs {[round(x / 1e6, 2) for x in rates[name]]}")
    line = {"size": args.size, "producers": args.producers, "items": items, "repeat": repeat,
            "python": sys.version.split()[0], "gil": getattr(sys, "_is_gil_enabled", lambda: True)(),
            "medians": med, "runs": rates, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print("SHARDING_JSON " + json.dumps(line))
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
