"""C-level allocations per enqueue: counts every malloc/calloc/realloc call.

Run: ``.venv/bin/python bench/mallocs.py [--sizes 16,256,10240]`` (a few
seconds); ``make bench`` runs it. ``--out PATH`` writes the JSON lines
elsewhere (default ``bench/results/mallocs.jsonl``).

``alloc.py`` counts Python-heap blocks; this counts what reaches the C
allocator at all, pymalloc's own arenas included. It compiles
``bench/malloc_count.c`` into an ``LD_PRELOAD`` shim and, per payload size,
runs a child process that warms a dispatcher (64 MiB bound,
``max_batch_bytes=256*S``) with one consumer thread iterating
``batches()``, then reads the count around 200,000 more enqueues: the
figure includes the consumer taking and releasing the ~780 batches those
make. Without a C compiler it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "malloc_count.c"
RESULTS = HERE / "results" / "mallocs.jsonl"
N = 200_000

CHILD = r"""
import ctypes, json, sys, threading
count = ctypes.CDLL(None).tempo_malloc_count
count.restype = ctypes.c_long
import tempo

size, n = int(sys.argv[1]), int(sys.argv[2])
d = tempo.Dispatcher(interval=1, max_buffered_bytes=64 * tempo.MiB, max_batch_bytes=256 * size)
d.start()
payload = b"x" * size
enqueue = d.enqueue

def consume():
    for batch in d.batches():
        pass

consumer = threading.Thread(target=consume)
consumer.start()
for _ in range(n):  # warm-up: every arena page touched, freelists filled
    enqueue(payload, timeout=None)
d.flush()
before = count()
for _ in range(n):
    enqueue(payload, timeout=None)
after = count()
d.flush()
d.shutdown()
consumer.join()
print(json.dumps({"size": size, "enqueues": n, "batches": n // 256,
                  "malloc_calls": after - before, "before": before,
                  "per_enqueue": (after - before) / n}))
"""


def compile_shim(out_dir: Path) -> Path | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    lib = out_dir / "libmalloc_count.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(SOURCE), "-ldl"], check=True)
    return lib


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16,256,10240")
    ap.add_argument("--enqueues", type=int, default=N)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lib = compile_shim(Path(tmp))
        if lib is None:
            print("mallocs: no C compiler; skipped")
            return 0
        env = dict(os.environ, LD_PRELOAD=str(lib))
        rows = []
        for size in map(int, args.sizes.split(",")):
            print(f"mallocs: {size} B ...", file=sys.stderr)
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(size), str(args.enqueues)],
                env=env, capture_output=True, text=True, check=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            if row["before"] <= 0:
                raise RuntimeError("the malloc shim counted nothing: LD_PRELOAD did not take")
            rows.append(row)
            print(f"{size:>6} B: {row['malloc_calls']} malloc calls over {row['enqueues']:,} "
                  f"enqueues and {row['batches']} batches ({row['per_enqueue']:.4f} per enqueue)")
            print("MALLOCS_JSON " + json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
