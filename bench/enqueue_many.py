"""``enqueue_many`` beside a Python loop of ``enqueue``, side by side in one process.

    .venv/bin/python bench/enqueue_many.py [--size 16] [--count 10000] [--reps 30] [--quick]
                                           [--out PATH]

Each repetition times one call of ``d.enqueue_many(payloads)`` and one loop
``for p in payloads: enqueue(p)`` over the same list of ``--count`` distinct
``bytes`` of ``--size`` bytes (order alternating between repetitions), into a
dispatcher drained between timings (untimed) whose arena pages were touched
beforehand, as in a long-running process. Batches of 100 payloads seal
themselves (``max_batch_bytes = 100 * size``), so the seal path is timed too.
Prints items/s (median and best of the repetitions) for both and the ratio
of the medians, then the same as one ``ENQUEUE_MANY_JSON {...}`` line, which
``--out`` also appends to a JSON-lines file. ``--quick`` is 3 repetitions (a
smoke test). Issue 9's target: at 16 B, enqueue_many at least 3x the loop and
at least 50 M items/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tempo

PER_BATCH = 100


def drain(d: tempo.Dispatcher) -> None:
    while True:
        try:
            batch = d.get_batch(timeout=0)
        except TimeoutError:
            return
        batch.release()


def measure(size: int, count: int, reps: int) -> dict[str, object]:
    payloads = [bytes([i % 251]) * size for i in range(count)]
    limit = max(4 * tempo.MiB, 4 * size * count)
    d = tempo.Dispatcher(
        interval=3600.0, max_buffered_bytes=limit, max_batch_bytes=PER_BATCH * size
    )
    d.start()
    enqueue, enqueue_many = d.enqueue, d.enqueue_many

    def loop() -> None:
        for p in payloads:
            enqueue(p)

    def many() -> None:
        if enqueue_many(payloads) != count:
            raise RuntimeError("enqueue_many stopped early: the arena is too small")

    # Touch every page of the arena twice over (first-touch faults are not
    # what we time), and warm both code paths.
    moved = 0
    while moved < 2 * limit:
        many()
        d._seal_now()
        drain(d)
        moved += size * count
    times: dict[str, list[float]] = {"loop": [], "enqueue_many": []}
    for rep in range(reps):
        order = [("loop", loop), ("enqueue_many", many)]
        if rep % 2:
            order.reverse()
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            d._seal_now()
            drain(d)
    d.stop()
    result: dict[str, object] = {"size": size, "count": count, "reps": reps}
    for name, ts in times.items():
        result[name] = {
            "median_items_per_s": count / statistics.median(ts),
            "best_items_per_s": count / min(ts),
        }
    result["ratio_median"] = statistics.median(times["loop"]) / statistics.median(
        times["enqueue_many"]
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="3 repetitions")
    parser.add_argument("--out", type=Path, help="append the JSON line to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 3
    r = measure(args.size, args.count, args.reps)
    print(f"{args.count} x {args.size} B from a list, {args.reps} repetitions:")
    for name in ("loop", "enqueue_many"):
        f = r[name]
        assert isinstance(f, dict)
        print(
            f"  {name:13s} median {f['median_items_per_s'] / 1e6:7.1f} M items/s"
            f"   best {f['best_items_per_s'] / 1e6:7.1f} M items/s"
        )
    print(f"  ratio (median enqueue_many / median loop): {r['ratio_median']:.2f}x")
    line = json.dumps(r)
    print("ENQUEUE_MANY_JSON " + line)
    if args.out:
        with args.out.open("a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
