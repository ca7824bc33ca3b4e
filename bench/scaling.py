"""Scaling: how tempo's throughput and memory change with one parameter at a time.

``make bench`` runs this (``.venv/bin/python bench/scaling.py``, about 3-4
minutes); ``--quick`` is a smoke test (about 40 s), ``--smoke`` a quicker one
(a few seconds: the first point of each sweep, 1 MiB for ``rss``, a few
thousand payloads per run, one run each; the figures mean nothing).

Sweeps (``--sweeps``), each point run in a fresh subprocess ``--repeat`` times
(default 3, implementations interleaved), the median reported:

``size``
    Items/s and MB/s (MB = 10**6 bytes) against the payload size S: 16 B, 64 B,
    256 B, 1 KiB, 4 KiB, 16 KiB, 64 KiB, 256 KiB, 1 MiB.  ``compare.py``'s W1:
    one producer thread, one consumer thread counting items and bytes;
    ``interval = 1 s``, ``max_buffered_bytes = 64 MiB``,
    ``max_batch_bytes = 256*S`` capped at ``max_buffered_bytes / 4`` (so 64
    items per batch at 256 KiB, 16 at 1 MiB).  Payloads: a pool of distinct
    ``bytes`` (32 MiB of them, at least 16), cycled, as in ``compare.py``.
``batch``
    Items/s against ``max_batch_bytes`` for 256 B payloads: 0 (no size
    sealing: every batch is sealed by the interval, here ``interval =
    10 ms``), 1 KiB (4 items per batch), 4 KiB, 64 KiB, 1 MiB (4096 items);
    ``interval = 1 s`` for the others.  With ``max_batch_bytes = 0`` the
    figure includes up to 10 ms for the last batch to be sealed.
``producers``
    Items/s against the number of producer threads (1, 2, 4, 8, 16, 32, 64),
    256 B payloads, ``max_batch_bytes = 64 KiB``, sharing the same total.
``rss``
    Peak resident-memory growth against ``max_buffered_bytes`` (1, 4, 16, 64,
    256 MiB) while 4x that many payload bytes churn through: one producer
    makes a fresh ``bytes`` per payload (64 B - 16 KiB, a fixed pseudo-random
    sequence) and waits while the buffer is full; one consumer pauses 0.5 ms
    after each batch, so the buffer stays full and the bound is what limits
    memory.  ``max_batch_bytes = min(256 KiB, max_buffered_bytes / 4)``,
    ``interval = 50 ms``.  Growth = ``VmHWM`` at the end minus ``VmRSS``
    before the dispatcher was made (the peak is reset first through
    ``/proc/self/clear_refs``).

Implementations (``--impls``): ``tempo``, and ``purepy`` (``tempo/tools/_purepy.py``)
with fewer payloads per run where it is slow (its cost per payload hardly
depends on S: it keeps a reference to each ``bytes`` and never copies it).
Both use the same producer loop as ``compare.py``: tempo waits for room with
``enqueue(p, timeout=None)``, purepy retries every 100 us.  Each throughput run
pushes an untimed warm-up through the same instance first (1.25 x the buffer
bound or 1/8 of the run, at most 0.3 s).

Output: progress on stderr; a table per sweep on stdout; one JSON line per
point in ``bench/results/scaling.jsonl`` (with every run's figures; also on
stdout, prefixed ``SCALING_JSON``); a four-panel chart (matplotlib, Agg) in
``docs/performance-scaling.png`` (``--png PATH`` to change, ``--png ''`` for
none).  ``--chart-only`` redraws the chart from ``scaling.jsonl``.  When
``bench/results/memfloor.jsonl`` exists (``bench/memfloor.py``), the size
panel also draws the machine's raw memory-copy floor.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for _p in (str(BENCH_DIR), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import compare  # noqa: E402  (the implementations, producers and consumer of compare.py)
from _common import churn_rss  # noqa: E402
from compare import Shape, Sink  # noqa: E402
from tempo import GiB, KiB, MiB  # noqa: E402
from tempo.tools._util import run_json_child  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_PNG = REPO / "docs" / "performance-scaling.png"
JSON_PREFIX = "SCALING_JSON "
POINT_PREFIX = "POINT_RESULT "

MAX_BUFFERED = 64 * MiB
SIZES = (16, 64, 256, KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB)
BATCH_LIMITS = (0, KiB, 4 * KiB, 64 * KiB, MiB)
PRODUCER_COUNTS = (1, 2, 4, 8, 16, 32, 64)
BUFFER_BOUNDS = (MiB, 4 * MiB, 16 * MiB, 64 * MiB, 256 * MiB)
SWEEPS = ("size", "batch", "producers", "rss")
WARMUP_MAX_S = 0.3
RSS_PAUSE_S = 0.0005
SMOKE_ITEMS = 4096  # payloads per run with --smoke


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_size(n: int) -> str:
    for unit, div in (("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------
# The points of each sweep.


def throughput_points(sweeps, quick: bool) -> list[dict]:
    """Every throughput point: its sweep, its x value, and how to run it."""
    points = []
    if "size" in sweeps:
        for s in SIZES:
            mbb = min(256 * s, MAX_BUFFERED // 4)
            points.append(dict(sweep="size", x=s, size=s, producers=1, interval=1.0, max_batch_bytes=mbb))
    if "batch" in sweeps:
        for mbb in BATCH_LIMITS:
            points.append(
                dict(sweep="batch", x=mbb, size=256, producers=1, interval=0.01 if mbb == 0 else 1.0,
                     max_batch_bytes=mbb)
            )
    if "producers" in sweeps:
        for n in PRODUCER_COUNTS:
            points.append(dict(sweep="producers", x=n, size=256, producers=n, interval=1.0, max_batch_bytes=64 * KiB))
    for p in points:
        p["max_buffered_bytes"] = MAX_BUFFERED
    return points


def items_for(point: dict, impl: str, quick: bool) -> int:
    """Payloads per measured run: about 0.2-0.5 s of work, a whole number of
    batches per producer (so every batch is sealed by size, never by the
    interval, except with max_batch_bytes = 0)."""
    s = point["size"]
    if impl == "tempo":
        n = min(1 << 22, max(1024, (2 * GiB) // s))
    else:
        n = min(1 << 18, max(1024, (2 * GiB) // s))
    if point["sweep"] == "batch" and impl == "tempo" and point["max_batch_bytes"] and point["max_batch_bytes"] <= 4 * KiB:
        n //= 4  # a batch per 4-16 payloads: slower
    if quick:
        n //= 8
    unit = point["producers"] * chunk_for(point)
    return max(unit, n // unit * unit)


def chunk_for(point: dict) -> int:
    """Payloads per batch when batches are sealed by size (the producer loop's unit)."""
    mbb = point["max_batch_bytes"]
    if mbb == 0:
        return 256
    return max(1, mbb // point["size"])


def make_pool(size: int) -> list[bytes]:
    """Distinct payloads, about 32 MiB of them (at least 16, at most 8192)."""
    count = max(16, min(8192, (32 * MiB) // size))
    rng = random.Random(size)
    return [rng.randbytes(size) for _ in range(count)]


def run_throughput(point: dict, impl_name: str, items: int) -> dict:
    """One throughput run in this (fresh) process."""
    size, nprod = point["size"], point["producers"]
    shape = Shape(point["interval"], point["max_batch_bytes"], point["max_buffered_bytes"])
    chunk = chunk_for(point)
    unit = nprod * chunk
    pool = make_pool(size)
    impl = compare.make_impl(impl_name, size, "native", shape)
    sink = Sink()
    consumer = impl.start_consumer(impl.counter(sink), sink.done)
    warm = max(items // 8, -(-(point["max_buffered_bytes"] * 5 // 4) // size))
    warm = max(unit, -(-warm // unit) * unit)
    try:
        figures = compare.timed_run(impl, sink, pool, nprod, items, size, warm, WARMUP_MAX_S, chunk=chunk)
    finally:
        impl.close()
        if consumer is not None:
            consumer.join(5)
    del figures["cpu_s"]  # not among this script's per-run figures
    return figures


# ---------------------------------------------------------------------------
# The rss sweep.


class _RssTarget:
    """The dispatcher of the rss sweep, for ``churn_rss``: tempo waits for room
    with ``enqueue(p, timeout=None)``, purepy retries every 100 us."""

    def __init__(self, impl_name: str, bound: int, mbb: int) -> None:
        if impl_name == "tempo":
            import tempo

            d = tempo.Dispatcher(interval=0.05, max_buffered_bytes=bound, max_batch_bytes=mbb)
            d.start()

            def enqueue_wait(p):
                d.enqueue(p, timeout=None)

            self.release = lambda b: b.release()
            self.nbytes = lambda b: b.nbytes
        else:
            from tempo.tools import _purepy as purepy

            d = purepy.Batcher(interval=0.05, max_buffered_bytes=bound, max_batch_bytes=mbb)
            Full, enqueue_nowait = purepy.QueueFull, d.enqueue

            def enqueue_wait(p):
                while True:
                    try:
                        return enqueue_nowait(p)
                    except Full:
                        time.sleep(100e-6)

            self.release = lambda b: None
            self.nbytes = lambda b: sum(map(len, b))
        self.enqueue_wait = enqueue_wait
        self.get_batch = d.get_batch
        self.close = d.stop


def run_rss(bound: int, impl_name: str, quick: bool) -> dict:
    """Churn 4 x ``bound`` bytes through a dispatcher bounded to ``bound``; peak RSS growth."""
    churn = 4 * bound // (8 if quick else 1)
    mbb = min(256 * KiB, bound // 4)
    r = churn_rss(lambda: _RssTarget(impl_name, bound, mbb), churn, pause=RSS_PAUSE_S, poll=0.005, reset_hwm=True)
    after, base = r["after"], r["rss_before_kib"]
    return {
        "churned_bytes": r["churned_bytes"],
        "payloads": r["payloads"],
        "elapsed_s": r["elapsed_s"],
        "mb_per_s": r["mb_per_s"],
        "peak_reset": r["peak_reset"],
        "rss_before_kib": base,
        "peak_growth_kib": after.get("VmHWM", 0) - base,
        "end_growth_kib": after.get("VmRSS", 0) - base,
        "max_batch_bytes": mbb,
    }


# ---------------------------------------------------------------------------
# Orchestration.


def run_child(spec: dict, timeout: float = 300) -> dict:
    return run_json_child([sys.executable, str(Path(__file__).resolve()), "--point", json.dumps(spec)], POINT_PREFIX,
                          timeout)


def child_main(spec: dict) -> dict:
    if spec["sweep"] == "rss":
        return run_rss(spec["x"], spec["impl"], spec.get("quick", False))
    return run_throughput(spec["point"], spec["impl"], spec["items"])


def median_of(runs: list[dict], key: str):
    vals = [r[key] for r in runs if "error" not in r and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def tempo_ok() -> bool:
    ok, why = compare.impl_available("tempo")
    if not ok:
        log(f"note: skipping tempo: {why}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs, one repeat: a smoke test")
    ap.add_argument("--sweeps", default=",".join(SWEEPS), help="size,batch,producers,rss")
    ap.add_argument("--impls", default="tempo,purepy", help="tempo,purepy")
    ap.add_argument("--repeat", type=int, default=None, help="runs per point (default 3; 1 with --quick)")
    ap.add_argument(
        "--png",
        default=None,
        help=f"chart path ('' for none; default {DEFAULT_PNG.relative_to(REPO)}, none with --quick/--smoke)",
    )
    ap.add_argument("--chart-only", action="store_true", help="redraw the chart from the results in --out")
    ap.add_argument(
        "--smoke", action="store_true", help="one tiny point per sweep, one run (implies --quick): a smoke test"
    )
    ap.add_argument("--out", default=str(RESULTS_DIR / "scaling.jsonl"), help="where the JSON lines go")
    ap.add_argument("--point", help=argparse.SUPPRESS)  # internal: one run, JSON spec
    args = ap.parse_args(argv)

    if args.point:
        result = child_main(json.loads(args.point))
        print(POINT_PREFIX + json.dumps(result), flush=True)
        return 0

    if args.smoke:
        args.quick = True
    if args.png is None:
        # A smoke run must not overwrite the published chart.
        args.png = "" if args.quick else str(DEFAULT_PNG)
    out_path = Path(args.out)
    if args.chart_only:
        rows = [json.loads(line) for line in out_path.read_text().splitlines() if line.strip()]
        write_chart(rows, Path(args.png))
        return 0

    sweeps = [s for s in args.sweeps.split(",") if s]
    bad = [s for s in sweeps if s not in SWEEPS]
    if bad:
        ap.error(f"unknown sweep(s): {bad}")
    impls = [i for i in args.impls.split(",") if i in ("tempo", "purepy")]
    if "tempo" in impls and not tempo_ok():
        impls.remove("tempo")
    if not impls:
        log("nothing to run")
        return 1
    repeat = args.repeat or (1 if args.quick else 3)
    env = compare.env_info()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("")

    jobs = []  # (sweep, x, impl, spec)
    for point in throughput_points(sweeps, args.quick):
        if args.smoke and any(p["sweep"] == point["sweep"] for p, _, _ in jobs):
            continue  # one point per sweep
        for impl in impls:
            items = items_for(point, impl, args.quick)
            if args.smoke:
                unit = point["producers"] * chunk_for(point)
                items = max(unit, SMOKE_ITEMS // unit * unit)
            spec = {"sweep": point["sweep"], "x": point["x"], "impl": impl, "point": point, "items": items}
            jobs.append((point, impl, spec))
    if "rss" in sweeps:
        for bound in BUFFER_BOUNDS[:1] if args.smoke else BUFFER_BOUNDS:
            point = {"sweep": "rss", "x": bound, "max_buffered_bytes": bound,
                     "max_batch_bytes": min(256 * KiB, bound // 4), "interval": 0.05}
            for impl in impls:
                jobs.append((point, impl, {"sweep": "rss", "x": bound, "impl": impl, "quick": args.quick}))
    total = len(jobs) * repeat
    log(f"tempo scaling: {len(jobs)} (point, impl) pairs x {repeat} repeats = {total} runs, each in a fresh process")
    started = time.monotonic()
    rows = []
    k = 0
    # Group the jobs by point; repeats interleave the implementations.
    by_point: dict = {}
    for point, impl, spec in jobs:
        by_point.setdefault((point["sweep"], point["x"]), (point, []))[1].append((impl, spec))
    for (sweep, x), (point, pairs) in by_point.items():
        runs = {impl: [] for impl, _ in pairs}
        for _ in range(repeat):
            for impl, spec in pairs:
                k += 1
                r = run_child(spec)
                runs[impl].append(r)
                if "error" in r:
                    log(f"[{k}/{total}] {sweep} x={x} {impl}: error: {r['error']}")
                elif sweep == "rss":
                    log(
                        f"[{k}/{total}] rss bound={fmt_size(x)} {impl}: peak +{r['peak_growth_kib'] / 1024:.1f} MiB, "
                        f"{r['churned_bytes'] / MiB:.0f} MiB churned in {r['elapsed_s']:.2f} s"
                    )
                else:
                    log(
                        f"[{k}/{total}] {sweep} x={x} {impl}: {compare.fmt_rate(r['items_per_s'])} items/s, "
                        f"{r['mb_per_s']:.0f} MB/s ({r['items']} payloads, {r['elapsed_s']:.2f} s)"
                    )
        for impl, spec in pairs:
            ok = [r for r in runs[impl] if "error" not in r]
            row = {"sweep": sweep, "x": x, "impl": impl, "repeat": repeat, "ok_runs": len(ok),
                   "config": {k2: v for k2, v in point.items() if k2 not in ("sweep", "x")},
                   "quick": args.quick, "env": env}
            if sweep == "rss":
                for key in ("peak_growth_kib", "end_growth_kib", "mb_per_s", "churned_bytes"):
                    row[key] = median_of(ok, key)
            else:
                row["size"] = point["size"]
                row["producers"] = point["producers"]
                row["items"] = spec["items"]
                for key in ("items_per_s", "mb_per_s", "cpu_ns_per_item", "elapsed_s"):
                    row[key] = median_of(ok, key)
            row["runs"] = runs[impl]
            rows.append(row)
            line = json.dumps(row)
            print(JSON_PREFIX + line, flush=True)
            with out_path.open("a") as f:
                f.write(line + "\n")
    log(f"done in {time.monotonic() - started:.0f} s; results in {out_path}")
    print_tables(rows)
    if args.png:
        try:
            write_chart(rows, Path(args.png))
        except ImportError:
            log("note: matplotlib not installed; no chart")
    return 1 if any(r["ok_runs"] == 0 for r in rows) else 0


# ---------------------------------------------------------------------------
# Output.


def _get(rows, sweep, x, impl, key):
    for r in rows:
        if r["sweep"] == sweep and r["x"] == x and r["impl"] == impl:
            return r.get(key)
    return None


def print_tables(rows: list[dict]) -> None:
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    titles = {
        "size": "Throughput vs payload size (1 producer; max_batch_bytes = min(256*S, 16 MiB))",
        "batch": "Throughput vs max_batch_bytes (256 B payloads; 0 = interval only, 10 ms)",
        "producers": "Throughput vs producer threads (256 B payloads, max_batch_bytes 64 KiB)",
    }
    for sweep, title in titles.items():
        xs = list(dict.fromkeys(r["x"] for r in rows if r["sweep"] == sweep))
        if not xs:
            continue
        print(f"\n{title}; median; MB = 10^6 bytes")
        print(f"{'x':>9} |" + "".join(f" {i + ' items/s':>15} {'MB/s':>9} |" for i in impls) + " tempo/purepy")
        for x in xs:
            label = fmt_size(x) if sweep != "producers" else str(x)
            row = f"{label:>9} |"
            for impl in impls:
                ips, mbs = _get(rows, sweep, x, impl, "items_per_s"), _get(rows, sweep, x, impl, "mb_per_s")
                row += f" {compare.fmt_rate(ips):>15} {mbs if mbs is not None else float('nan'):>9.1f} |"
            t, p = _get(rows, sweep, x, "tempo", "items_per_s"), _get(rows, sweep, x, "purepy", "items_per_s")
            row += f" {t / p:>8.2f}x" if t and p else f" {'n/a':>9}"
            print(row)
    xs = list(dict.fromkeys(r["x"] for r in rows if r["sweep"] == "rss"))
    if xs:
        print("\nPeak RSS growth vs max_buffered_bytes (4x the bound churned, buffer kept full; MiB, median)")
        print(f"{'bound':>9} |" + "".join(f" {i:>10} |" for i in impls) + " 1.1*bound+8")
        for x in xs:
            row = f"{fmt_size(x):>9} |"
            for impl in impls:
                v = _get(rows, "rss", x, impl, "peak_growth_kib")
                row += f" {v / 1024 if v is not None else float('nan'):>10.1f} |"
            print(row + f" {1.1 * x / MiB + 8:>11.1f}")


def _floor_rows() -> list[dict]:
    path = RESULTS_DIR / "memfloor.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"tempo": dict(color="C0", marker="o"), "purepy": dict(color="C1", marker="s")}
    impls = [i for i in ("tempo", "purepy") if any(r["impl"] == i for r in rows)]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))

    def series(sweep, impl, key):
        pts = sorted((r["x"], r.get(key)) for r in rows if r["sweep"] == sweep and r["impl"] == impl)
        return [x for x, y in pts if y is not None], [y for x, y in pts if y is not None]

    # (a) payload size: items/s (left) and MB/s (right).
    ax = axes[0][0]
    ax2 = ax.twinx()
    for impl in impls:
        xs, ys = series("size", impl, "items_per_s")
        ax.plot(xs, ys, linestyle="-", label=f"{impl} items/s", **styles[impl])
        xs, ys = series("size", impl, "mb_per_s")
        ax2.plot(xs, ys, linestyle="--", label=f"{impl} MB/s", markerfacecolor="none", **styles[impl])
    floor = [r for r in _floor_rows() if r["variant"] == "tempo_copy/mirror/pool"]
    if floor and any(r["sweep"] == "size" for r in rows):
        floor.sort(key=lambda r: r["size"])
        ax2.plot([r["size"] for r in floor], [r["gb_per_s"] * 1e3 for r in floor], color="grey",
                 linestyle=":", label="memory-copy floor MB/s (C, no Python)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax2.set_yscale("log")
    ax.set_xticks(list(SIZES), [fmt_size(s).replace(" ", "") for s in SIZES], fontsize=8)
    ax.set_xlabel("payload size")
    ax.set_ylabel("items/s (solid)")
    ax2.set_ylabel("MB/s (dashed)")
    ax.set_title("throughput vs payload size (W1: 1 producer)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    l2 = [label + " (references, no copy)" if label.startswith("purepy") else label for label in l2]
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    ax.grid(True, which="major", alpha=0.3)

    # (b) max_batch_bytes.
    ax = axes[0][1]
    xs_all = [x for x in BATCH_LIMITS if any(r["sweep"] == "batch" and r["x"] == x for r in rows)]
    width = 0.8 / max(1, len(impls))
    for j, impl in enumerate(impls):
        ys = [_get(rows, "batch", x, impl, "items_per_s") or 0 for x in xs_all]
        ax.bar([i + j * width for i in range(len(xs_all))], ys, width, label=impl, color=styles[impl]["color"])
    labels = ["0 (10 ms\ninterval)" if x == 0 else fmt_size(x) for x in xs_all]
    ax.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(xs_all))], labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("max_batch_bytes (256 B payloads)")
    ax.set_ylabel("items/s")
    ax.set_title("throughput vs max_batch_bytes")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)

    # (c) producer threads.
    ax = axes[1][0]
    for impl in impls:
        xs, ys = series("producers", impl, "items_per_s")
        ax.plot(xs, ys, label=impl, **styles[impl])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(PRODUCER_COUNTS), [str(n) for n in PRODUCER_COUNTS])
    ax.set_xlabel("producer threads (256 B payloads, same total)")
    ax.set_ylabel("items/s")
    ax.set_title("throughput vs producer threads")
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)

    # (d) peak RSS growth vs max_buffered_bytes.
    ax = axes[1][1]
    for impl in impls:
        xs, ys = series("rss", impl, "peak_growth_kib")
        ax.plot([x / MiB for x in xs], [y / 1024 for y in ys], label=f"{impl} peak RSS growth", **styles[impl])
    bounds = [b / MiB for b in BUFFER_BOUNDS]
    ax.plot(bounds, bounds, color="black", linestyle=":", label="max_buffered_bytes")
    ax.plot(bounds, [1.1 * b + 8 for b in bounds], color="red", linestyle="--", linewidth=1,
            label="1.1 x bound + 8 MiB")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(bounds, [fmt_size(b).replace(" ", "") for b in BUFFER_BOUNDS])
    ax.set_xlabel("max_buffered_bytes (4x churned through, buffer kept full)")
    ax.set_ylabel("MiB")
    ax.set_title("peak RSS growth vs max_buffered_bytes")
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)

    env = next((r.get("env") for r in rows if r.get("env")), {}) or {}
    fig.suptitle(
        f"tempo scaling (median of {rows[0]['repeat'] if rows else '?'} fresh-process runs; "
        f"Python {env.get('python', '?')}, {env.get('cpus', '?')} CPUs; MB = 10^6 B)",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    log(f"chart written to {path}")


if __name__ == "__main__":
    sys.exit(main())
