"""End-to-end throughput: tempo against the batchers a Python programmer would use.

``make bench`` runs this (``.venv/bin/python bench/compare.py``).

What it measures
----------------
Items/s and MB/s (MB = 10**6 bytes) of payloads moving from producer threads to
a consumer, timed from the first enqueue of the measured run until the consumer
has accounted for every payload (W3: until the reader process confirmed every
byte).  Every case uses the same configuration: ``interval=1 s``,
``max_batch_bytes=256*S``, ``max_buffered_bytes=64 MiB``, for payloads of S bytes.

Workloads:

- ``W1``: one producer thread, one consumer thread that counts items and bytes of
  every batch (``len(batch)`` and ``batch.nbytes`` for tempo; ``len(list)`` and
  ``sum(map(len, list))`` for the others).
- ``W2``: as W1 with four producer threads sharing the same total
  (``--producers N`` for another count).
- ``W3``: as W1, but the consumer writes every batch to a loopback TCP socket
  (127.0.0.1 only) read by a separate process that just counts bytes.  tempo
  uses ``batch.sendall(sock)`` when it exists, else ``sock.sendmsg``; the others
  use ``sock.sendmsg`` on their list of ``bytes``, chunked at IOV_MAX (1024) and
  resuming partial sends.
- ``W1b`` (and ``W2b``, ``W3b``): the same workload with ``bytearray``
  payloads (below).  The default run is W1, W1b, W2, W3.

Payload kinds (``--payload``, or a ``b`` after the workload's name):

- ``bytes`` (default): a pool of distinct, pre-built ``bytes`` (about 32 MiB,
  at most 8192 of them), cycled; every implementation gets the same objects.
- ``bytearray``: the allocation-free producer.  Each producer thread owns ONE
  preallocated ``bytearray`` of S bytes and rewrites it before every enqueue
  (a sequence number packed at offset 0 with ``struct.pack_into``; 1-7 byte
  payloads get its low bytes).  Since the buffer changes right after, every
  implementation must copy it: tempo and purepy are handed the bytearray and
  copy it in ``enqueue`` (purepy copies anything that is not ``bytes``), the
  ``queue`` and ``otel`` producers hand over ``bytes(buf)``.

Implementations (``--impls``):

- ``tempo``: the library.
- ``purepy``: ``tempo/tools/_purepy.py``, a careful pure-Python batcher with the same
  semantics (Condition + list + deque + timer thread).
- ``queue``: producers ``put_nowait`` each payload into a ``queue.Queue`` bounded
  to ``max_buffered_bytes // S`` items; the consumer ``get``s items and forms
  batches of up to ``max_batch_bytes`` with the interval as a timeout.
- ``otel``: OpenTelemetry SDK's ``BatchProcessor`` (the engine of
  ``BatchSpanProcessor``/``BatchLogRecordProcessor``) with a counting exporter,
  ``max_export_batch_size=256``, queue capacity ``max_buffered_bytes // S``.  It
  drops on overflow instead of refusing, so the producer checks the queue length
  first and treats "full" like the others' QueueFull.  Skipped if
  ``opentelemetry-sdk`` is not installed.

Fairness rules: all implementations get the same payload objects (a pool of
distinct, pre-built ``bytes``, cycled, or the reused bytearrays), the same
producer loop and the same
retry loop on a full buffer (sleep 100 us, retry).  tempo, when it supports
``enqueue(p, timeout=None)``, waits for space that way instead (its documented
way to apply backpressure); ``--backpressure retry`` forces the retry loop on
it too.  Since every payload in a run has the same size and the payload count
is a multiple of 256 (times the producer count), every batch is sealed by size
at exactly 256 items; interval seals only happen if a producer stalls for a
whole second, and the ``batches`` field shows it.  Each run first pushes an
untimed warm-up through the same instance: 1/8 of the payloads or 80 MiB
(enough to touch every page of a 64 MiB buffer), whichever is more, but for at
most one second (0.1 s with ``--quick``).  ``cpu_ns_per_item`` (process CPU
time of the measured part, reader process excluded) is recorded too; on a noisy
machine it is often the steadier figure.

Reading the results: the pure-Python batchers keep a reference to each
(immutable) ``bytes`` payload and never copy it, so in W1/W2 their cost per
payload does not depend on its size, while tempo copies every payload into its
arena once (that copy is what buys the bounded, contiguous, zero-copy-out
buffer).  In W1b every implementation copies every payload once.  W3 is where
bytes actually move, ``bench/memfloor.py`` measures what copying alone costs
on the machine, and ``bench/alloc.py`` shows what holding payload objects
costs in memory.

The measurement code (implementations, producer loops, timed run) is
``tempo/tools/_peers.py`` and ``tempo/tools/_throughput.py``, shared with ``tempo bench``
(the workloads beyond W1 are ``bench/_workloads.py``).  Each run is a fresh
subprocess (``compare.py --case ...``); each case is run
``--repeat`` times (default 3), interleaving implementations so that machine
noise hits all of them alike, and the median is reported.

Output: progress on stderr; a table at the end (absolute figures per
implementation, and tempo / purepy); one JSON line per case on stdout, prefixed
``BENCH_JSON``, also written to ``bench/results/latest.jsonl`` (``--out``; every run's
figures, the medians, the configuration and the machine).  ``--chart [PATH]``
also draws the MB/s medians with matplotlib (default
``bench/results/latest.png``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import platform
import os
from pathlib import Path
from time import monotonic

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for _p in (str(BENCH_DIR), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# The measurement itself lives in the package, shared with `tempo bench`
# (tempo/tools/_peers.py, _throughput.py); _workloads adds W1b, W2 and W3.
# scaling.py and pipeline.py reach it through these names too.
from tempo import KiB, MiB  # noqa: E402
from tempo.tools._peers import (  # noqa: E402
    BATCH_ITEMS,
    INTERVAL,
    MAX_BUFFERED,
    Shape,
    Sink,
    TempoImpl,
    default_shape,
    impl_available,
    make_impl,
)
from tempo.tools._throughput import (  # noqa: E402
    CASE_PREFIX,
    WARMUP_MAX_S,
    item_unit,
    items_for,
    make_pool,
    timed_run,
    warmup_for,
)
from tempo.tools._util import run_json_child  # noqa: E402
from _workloads import (  # noqa: E402
    DEFAULT_SIZES,
    DEFAULT_WORKLOADS,
    PAYLOAD_KINDS,
    PRODUCERS,
    reader_main,
    run_workload,
    split_workload,
    workload_name,
)

#: The implementations compared by default (tempo-many is bench/enqueue_many.py's and `tempo bench`'s).
ALL_IMPLS = ("tempo", "purepy", "queue", "otel")

JSON_PREFIX = "BENCH_JSON "
RESULTS_DIR = BENCH_DIR / "results"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)



def env_info() -> dict:
    info = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        )
        info["git"] = rev.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        info["git"] = None
    info["tempo_ext"] = tempo_ext_id()
    return info


def tempo_ext_id() -> str | None:
    """Which build of the extension ran: the first 12 hex digits of its SHA-256."""
    import hashlib

    for so in sorted((REPO / "tempo").glob("_core*.so")):
        return hashlib.sha256(so.read_bytes()).hexdigest()[:12]
    return None


def run_child(workload, size, impl, items, backpressure, timeout, quick) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--case",
        f"{workload}:{impl}:{size}",
        "--items",
        str(items),
        "--backpressure",
        backpressure,
        "--producers",
        str(PRODUCERS["W2"]),
    ]
    if quick:
        cmd += ["--warmup-max-s", "0.1"]
    return run_json_child(cmd, CASE_PREFIX, timeout)


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def fmt_size(size: int) -> str:
    return f"{size // KiB} KiB" if size >= KiB and size % KiB == 0 else f"{size} B"


def print_table(summaries: dict, workloads, sizes, impls) -> None:
    head = f"{'':4} {'size':>7} |" + "".join(f" {name:>19} |" for name in impls) + " tempo/purepy"
    sub = f"{'':4} {'':>7} |" + "".join(f" {'items/s':>9} {'MB/s':>9} |" for _ in impls)
    lines = [head, sub, "-" * len(head)]
    for w in workloads:
        for s in sizes:
            row = f"{w:4} {fmt_size(s):>7} |"
            for name in impls:
                c = summaries.get((w, s, name))
                if c is None or c.get("items_per_s") is None:
                    row += f" {'skipped' if c is None else 'error':>19} |"
                else:
                    row += f" {fmt_rate(c['items_per_s']):>9} {c['mb_per_s']:>9.1f} |"
            t, p = summaries.get((w, s, "tempo")), summaries.get((w, s, "purepy"))
            if t and p and t.get("items_per_s") and p.get("items_per_s"):
                row += f" {t['items_per_s'] / p['items_per_s']:>8.2f}x"
            else:
                row += f" {'n/a':>9}"
            lines.append(row)
    print("\n".join(lines))


def write_chart(summaries: dict, workloads, sizes, impls, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, s in zip(axes[0], sizes, strict=True):
        width = 0.8 / len(impls)
        for j, name in enumerate(impls):
            ys = [(summaries.get((w, s, name)) or {}).get("mb_per_s") or 0 for w in workloads]
            xs = [i + j * width for i in range(len(workloads))]
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(workloads))], workloads)
        ax.set_title(f"payload {fmt_size(s)}")
        ax.set_ylabel("MB/s (median)")
    axes[0][0].legend()
    fig.suptitle(
        "tempo vs alternatives, MB/s (median). W1/W2/W3: immutable bytes, which purepy, queue and otel "
        "keep by reference while tempo copies them once; W1b: a reused bytearray, everyone copies",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    log(f"chart written to {path}")


def parse_list(text: str, conv=str) -> list:
    return [conv(x.strip()) for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs, one repeat: a smoke test")
    ap.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help="e.g. W1,W3; a 'b' suffix (W1b, W2b, W3b) means bytearray payloads",
    )
    ap.add_argument(
        "--payload",
        choices=PAYLOAD_KINDS,
        default="bytes",
        help="bytes: a pool of distinct immutable bytes; bytearray: one reused, rewritten "
        "bytearray per producer (turns W1 into W1b, etc.)",
    )
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="payload sizes in bytes")
    ap.add_argument("--impls", default=",".join(ALL_IMPLS), help="tempo,purepy,queue,otel")
    ap.add_argument("--repeat", type=int, default=None, help="runs per case (default 3; 1 with --quick)")
    ap.add_argument(
        "--backpressure",
        choices=("native", "retry"),
        default="native",
        help="native: tempo waits with enqueue(timeout=None) if it can; retry: the same retry loop for all",
    )
    ap.add_argument("--items", type=int, default=None, help="payloads per run (overrides the per-size default)")
    ap.add_argument("--producers", type=int, default=PRODUCERS["W2"], help="producer threads of W2 (default 4)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds before a run is abandoned")
    ap.add_argument("--chart", nargs="?", const=str(RESULTS_DIR / "latest.png"), help="write a PNG chart")
    ap.add_argument("--out", default=str(RESULTS_DIR / "latest.jsonl"), help="where the JSON lines go")
    ap.add_argument(
        "--chart-only", action="store_true", help="redraw the --chart from the results in --out; run nothing"
    )
    ap.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)  # internal, with --case
    ap.add_argument("--warmup-max-s", type=float, default=None, help=argparse.SUPPRESS)  # internal
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: WORKLOAD:IMPL:SIZE
    ap.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)  # internal: W3 reader
    args = ap.parse_args(argv)
    if args.producers < 1:
        ap.error("--producers must be at least 1")
    PRODUCERS["W2"] = args.producers

    if args.reader:
        reader_main()
        return 0
    if args.case:
        workload, impl, size = args.case.split(":")
        warm_max_s = args.warmup_max_s if args.warmup_max_s is not None else WARMUP_MAX_S
        result = run_workload(workload, int(size), impl, args.items, args.backpressure, args.warmup, warm_max_s)
        print(CASE_PREFIX + json.dumps(result), flush=True)
        return 0

    if args.chart_only:
        rows = [json.loads(line) for line in Path(args.out).read_text().splitlines() if line.strip()]
        summaries = {(r["workload"], r["size"], r["impl"]): r for r in rows}
        order = {name: i for i, name in enumerate(("W1", "W1b", "W2", "W2b", "W3", "W3b"))}
        workloads = sorted({r["workload"] for r in rows}, key=lambda w: order.get(w, 99))
        sizes = sorted({r["size"] for r in rows})
        impls = [i for i in ALL_IMPLS if any(r["impl"] == i for r in rows)]
        write_chart(summaries, workloads, sizes, impls, Path(args.chart or RESULTS_DIR / "latest.png"))
        return 0

    workloads = parse_list(args.workloads)
    sizes = parse_list(args.sizes, int)
    repeat = args.repeat or (1 if args.quick else 3)
    bad = []
    named = []
    for w in workloads:
        try:
            base, payload = split_workload(w)
        except ValueError:
            bad.append(w)
            continue
        if args.payload == "bytearray":
            payload = "bytearray"
        name = workload_name(base, payload)
        if name not in named:
            named.append(name)
    if bad:
        ap.error(f"unknown workload(s): {bad}")
    workloads = named
    impls = []
    for name in parse_list(args.impls):
        ok, why = impl_available(name)
        if ok:
            impls.append(name)
        else:
            log(f"note: skipping {name}: {why}")
    if not impls:
        log("nothing to run")
        return 1

    env = env_info()
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("")
    total_runs = len(workloads) * len(sizes) * repeat * len(impls)
    log(
        f"tempo bench: {len(workloads)} workloads x {len(sizes)} sizes x {len(impls)} impls "
        f"x {repeat} repeats = {total_runs} runs (each in a fresh process)"
    )
    started = monotonic()
    summaries: dict = {}
    k = 0
    for w in workloads:
        for s in sizes:
            unit = item_unit(PRODUCERS["W2"])
            items = max(unit, args.items // unit * unit) if args.items else items_for(s, args.quick, PRODUCERS["W2"])
            runs: dict = {name: [] for name in impls}
            for rep in range(repeat):
                for name in impls:
                    k += 1
                    log(f"[{k}/{total_runs}] {w} S={fmt_size(s)} {name} run {rep + 1}/{repeat} ({items} payloads) ...")
                    r = run_child(w, s, name, items, args.backpressure, args.timeout, args.quick)
                    runs[name].append(r)
                    if "error" in r:
                        log(f"    error: {r['error']}")
                    else:
                        log(
                            f"    {fmt_rate(r['items_per_s'])} items/s, {r['mb_per_s']:.1f} MB/s, "
                            f"{r['elapsed_s']:.2f} s, cpu {r['cpu_s']:.2f} s, {r['full_retries']} retries"
                        )
            for name in impls:
                ok = [r for r in runs[name] if "error" not in r]
                summary = {
                    "workload": w,
                    "size": s,
                    "impl": name,
                    "items": items,
                    "repeat": repeat,
                    "ok_runs": len(ok),
                    "items_per_s": statistics.median(r["items_per_s"] for r in ok) if ok else None,
                    "mb_per_s": statistics.median(r["mb_per_s"] for r in ok) if ok else None,
                    "elapsed_s": statistics.median(r["elapsed_s"] for r in ok) if ok else None,
                    "cpu_s": statistics.median(r["cpu_s"] for r in ok) if ok else None,
                    "cpu_ns_per_item": statistics.median(r["cpu_ns_per_item"] for r in ok) if ok else None,
                    "payload": split_workload(w)[1],
                    "runs": runs[name],
                    "config": {
                        "interval_s": INTERVAL,
                        "max_batch_bytes": BATCH_ITEMS * s,
                        "max_buffered_bytes": MAX_BUFFERED,
                        "producers": PRODUCERS[split_workload(w)[0]],
                        "payload": split_workload(w)[1],
                        "backpressure": args.backpressure,
                        "quick": args.quick,
                    },
                    "env": env,
                }
                summaries[(w, s, name)] = summary
            base = summaries.get((w, s, "purepy"))
            for name in impls:
                summary = summaries[(w, s, name)]
                if base and base["items_per_s"] and summary["items_per_s"]:
                    summary["ratio_vs_purepy"] = summary["items_per_s"] / base["items_per_s"]
                line = json.dumps(summary)
                print(JSON_PREFIX + line, flush=True)
                with out_path.open("a") as f:
                    f.write(line + "\n")
    log(f"done in {monotonic() - started:.0f} s; results in {out_path}")
    print()
    print(
        f"Median of {repeat} run(s); MB = 10^6 bytes; interval 1 s, max_batch_bytes 256*S, "
        f"max_buffered_bytes 64 MiB; backpressure: {args.backpressure}"
    )
    print_table(summaries, workloads, sizes, impls)
    if args.chart:
        try:
            write_chart(summaries, workloads, sizes, impls, Path(args.chart))
        except ImportError:
            log("note: matplotlib not installed; no chart")
    failed = sum(1 for s in summaries.values() if s["ok_runs"] == 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
