"""The raw memory-copy floor of this machine, for comparison with tempo.

Run: ``.venv/bin/python bench/memfloor.py [--sizes 16,256,10240]`` (about
10 s for the default sizes); ``make bench`` runs it.  ``--quick`` measures one
size, 64 KiB, unless ``--sizes`` is given (about 1 s: a smoke test);
``--out PATH`` writes the JSON lines elsewhere.

tempo's contract makes ``enqueue`` copy every payload once into its arena, so
no implementation of that contract can move payloads faster than the machine
copies memory.  This compiles ``bench/memfloor.c`` with the C compiler
(``$CC``, else ``cc``; ``-O3`` like tempo's extension) and times, per payload
size, the copy alone into a 64 MiB ring, with no Python, locking or
bookkeeping:

- ``memcpy/anon/pool``: ``memcpy`` into a plain anonymous ring, sources
  cycling through a 32 MiB pool of distinct payloads (what ``compare.py``'s
  producers hand over with ``--payload bytes``);
- ``tempo_copy/mirror/pool``: tempo's own copy routine (``tempo_copy`` in
  ``tempo/_mirror.h``: ``memcpy`` under 4 KiB, non-temporal stores above)
  into tempo's own kind of arena (a memfd mapped twice), same pool;
- ``tempo_copy/mirror/hot``: the same from one source that stays in the
  cache (``--payload bytearray``: W1b's reused buffer);
- ``memcpy/mirror/hot``: plain ``memcpy`` from the hot source.

Each figure is the median of 7 passes of 256 MiB (and at least 256 payloads).
Results: a table on stdout, JSON lines in ``bench/results/memfloor.jsonl``
(also on stdout with the prefix ``MEMFLOOR_JSON``).  Without a C compiler it
says so and exits 0 (``make bench`` goes on).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SOURCE = BENCH_DIR / "memfloor.c"
JSON_PREFIX = "MEMFLOOR_JSON "
DEFAULT_SIZES = (16, 64, 256, 1024, 4096, 10240, 16384, 65536, 262144, 1048576)
QUICK_SIZES = (65536,)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def compile_floor(out_dir: Path) -> Path | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        log("note: no C compiler found; no memory-copy floor")
        return None
    exe = out_dir / "memfloor"
    cmd = [cc, "-O3", "-o", str(exe), str(SOURCE)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        log(f"note: compiling the memory-copy floor failed:\n{proc.stderr.strip()}")
        return None
    return exe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=None, help="payload sizes in bytes (default: 16 B - 1 MiB)")
    ap.add_argument("--quick", action="store_true", help="one size (64 KiB) unless --sizes: a smoke test")
    ap.add_argument("--out", default=str(RESULTS_DIR / "memfloor.jsonl"), help="where the JSON lines go")
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = ",".join(map(str, QUICK_SIZES if args.quick else DEFAULT_SIZES))
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]

    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tempo-memfloor-") as tmp:
        exe = compile_floor(Path(tmp))
        if exe is None:
            return 0
        log(f"memory-copy floor: {len(sizes)} sizes x 4 variants ...")
        started = time.monotonic()
        proc = subprocess.run([str(exe), *map(str, sizes)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        log(f"memfloor failed ({proc.returncode}): {proc.stderr.strip()}")
        return 1
    rows = []
    for line in proc.stdout.splitlines():
        size, variant, med, best, gbs = line.split()
        rows.append(
            {
                "size": int(size),
                "variant": variant,
                "ns_per_payload": float(med),
                "ns_per_payload_min": float(best),
                "gb_per_s": float(gbs),
                "items_per_s": 1e9 / float(med),
            }
        )
    log(f"done in {time.monotonic() - started:.0f} s; results in {out_path}")
    with out_path.open("w") as f:
        for r in rows:
            line = json.dumps(r)
            f.write(line + "\n")
            print(JSON_PREFIX + line)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    print("\nMemory-copy floor into a 64 MiB ring (ns per payload, median; GB/s = 10^9 B/s)")
    print(f"{'size':>8} |" + "".join(f" {v:>26} |" for v in variants))
    for size in sizes:
        cells = []
        for v in variants:
            r = next((r for r in rows if r["size"] == size and r["variant"] == v), None)
            cells.append(f" {r['ns_per_payload']:>9.1f} ns {r['gb_per_s']:>7.2f} GB/s |" if r else f" {'-':>26} |")
        print(f"{size:>8} |" + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
