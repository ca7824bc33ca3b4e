"""Two builds of tempo side by side: the same compare.py cases, alternated.

Each checkout runs its own ``bench/compare.py --case ...`` (so its own build
of the extension) in a fresh process; runs alternate A, B, A, B, ... so that
machine noise hits both alike; the medians and B/A are printed. Use it to
check that a change leaves a workload's speed alone, e.g. the GIL build's hot
path before and after a core change::

    git worktree add /tmp/base <commit> && make -C /tmp/base build
    .venv/bin/python bench/ab.py --a /tmp/base --b . --cases W1:tempo:16,W1:tempo:256

``--python`` runs both with another interpreter (its build of the extension
must exist in both checkouts, e.g. ``build/ft`` via ``--pythonpath-subdir``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PREFIX = "CASE_RESULT "


def run(checkout: Path, case: str, items: int, python: str, subdir: str, producers: int | None,
        backpressure: str = "native") -> dict:
    cmd = [python, str(checkout / "bench" / "compare.py"), "--case", case, "--items", str(items),
           "--backpressure", backpressure]
    if producers is not None:
        cmd += ["--producers", str(producers)]
    env = dict(os.environ)
    if subdir:
        env["PYTHONPATH"] = str(checkout / subdir)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX):])
    raise RuntimeError(f"{checkout} {case}: {proc.stderr.strip().splitlines()[-3:]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, type=Path, help="checkout A (the reference)")
    ap.add_argument("--b", required=True, type=Path, help="checkout B")
    ap.add_argument("--cases", default="W1:tempo:16,W1:tempo:256", help="WORKLOAD:IMPL:SIZE, comma-separated")
    ap.add_argument("--items", type=int, default=1 << 20, help="payloads per run (a multiple of 1024)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per case and checkout")
    ap.add_argument("--python", default=sys.executable, help="interpreter for both")
    ap.add_argument("--pythonpath-subdir", default="", help="e.g. build/ft: put CHECKOUT/SUBDIR on PYTHONPATH")
    ap.add_argument("--producers", type=int, default=None, help="W2's producers (B only: A may predate it)")
    ap.add_argument("--a-producers", type=int, default=None,
                    help="W2's producers for A too (when A's compare.py takes --producers)")
    ap.add_argument("--backpressure", choices=("native", "retry"), default="native",
                    help="native: enqueue(p, timeout=None); retry: enqueue(p), sleep and retry when full")
    args = ap.parse_args(argv)
    print(f"A = {args.a}, B = {args.b}, {args.repeat} alternated runs each, {args.items} payloads, "
          f"backpressure {args.backpressure}")
    for case in args.cases.split(","):
        rates = {"A": [], "B": []}
        cpu = {"A": [], "B": []}
        for _ in range(args.repeat):
            for name, checkout in (("A", args.a), ("B", args.b)):
                producers = args.producers if name == "B" else args.a_producers
                r = run(checkout.resolve(), case, args.items, args.python, args.pythonpath_subdir, producers,
                        args.backpressure)
                rates[name].append(r["items_per_s"])
                cpu[name].append(r["cpu_ns_per_item"])
        a, b = statistics.median(rates["A"]), statistics.median(rates["B"])
        ca, cb = min(cpu["A"]), min(cpu["B"])
        # On a busy machine the best run (least disturbed) and the CPU time
        # per item are steadier than the median wall-clock rate.
        print(f"{case:>18}: median A {a / 1e6:6.2f}, B {b / 1e6:6.2f} M items/s, B/A {b / a:.3f}; "
              f"best B/A {max(rates['B']) / max(rates['A']):.3f}; "
              f"CPU ns/item (least) A {ca:.0f}, B {cb:.0f}, A/B {ca / cb:.3f}", flush=True)
        print(f"{'':>18}  A runs {[round(r / 1e6, 2) for r in rates['A']]}, "
              f"B runs {[round(r / 1e6, 2) for r in rates['B']]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
