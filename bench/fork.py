"""The cost of ``os.fork()`` with tempo's fork hooks (docs/fork-and-exit.md).

The cases, alternated in one process so they see the same machine: one
started dispatcher (``max_buffered_bytes`` 16 MiB, or twice the largest
``--held`` size) holding nothing; the same holding one batch of each
``--held`` size in MiB (1 unless told; a view of it kept).
For each fork it records how long ``os.fork()`` took to return in the parent
(the parent's before- and after-fork hooks, the fork itself) and in the child
(the fork, then the child's hooks: a fresh arena, the held bytes put in
place), on the system-wide monotonic clock; and, without forking, the
parent's two hooks alone (``Dispatcher._before_fork`` and
``_after_fork_in_parent``). Prints medians and 10th-90th percentiles in
microseconds.

    .venv/bin/python bench/fork.py [--forks N] [--held MIB [MIB ...]]
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import threading
import time
import warnings

import tempo
from tempo import MiB


def one_fork() -> tuple[float, float]:
    r, w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.write(w, struct.pack("d", time.monotonic() - t0))
        os._exit(0)
    parent = time.monotonic() - t0
    os.close(w)
    child = struct.unpack("d", os.read(r, 8))[0]
    os.close(r)
    os.waitpid(pid, 0)
    return parent, child


def held_batch(d: tempo.Dispatcher, mib: int) -> tempo.Batch:
    d.enqueue(b"\x5a" * (mib * MiB))
    box = {}
    consumer = threading.Thread(target=lambda: box.update(batch=d.get_batch(timeout=5)))
    consumer.start()
    d.flush(timeout=5)
    consumer.join()
    return box["batch"]


def hooks_only(d: tempo.Dispatcher, n: int) -> list[float]:
    """The parent's share alone: _before_fork + _after_fork_in_parent, no fork."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        d._before_fork()
        d._after_fork_in_parent()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=200, help="forks per case")
    parser.add_argument("--held", type=int, nargs="+", default=[1], metavar="MIB",
                        help="the held batch's size in MiB, one case each (default 1)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
    bound = max(16, 2 * max(args.held))
    d = tempo.Dispatcher(interval=60, max_buffered_bytes=bound * MiB)
    d.start()
    sizes = {"nothing held": 0, **{f"{mib} MiB held": mib for mib in args.held}}
    forks: dict[str, list[tuple[float, float]]] = {case: [] for case in sizes}
    hooks: dict[str, list[float]] = {case: [] for case in sizes}
    for _ in range(args.forks):
        for case in forks:
            batch = held_batch(d, sizes[case]) if sizes[case] else None
            view = batch[0] if batch is not None else None
            forks[case].append(one_fork())
            hooks[case] += hooks_only(d, 10)
            del view
            if batch is not None:
                batch.release()
    d.stop()
    us = 1e6
    print(f"os.fork() with one started dispatcher ({bound} MiB bound), {args.forks} forks per case, "
          "alternated; microseconds, median [p10-p90]")
    print(f"{'case':<14} {'fork, parent':>22} {'fork, child':>22} {'parent hooks alone':>24}")
    for case in forks:
        cols = []
        for values in ([p for p, _ in forks[case]], [c for _, c in forks[case]], hooks[case]):
            qs = statistics.quantiles([v * us for v in values], n=10)
            cols.append(f"{statistics.median(values) * us:.0f} [{qs[0]:.0f}-{qs[-1]:.0f}]")
        print(f"{case:<14} {cols[0]:>22} {cols[1]:>22} {cols[2]:>24}")


if __name__ == "__main__":
    main()
