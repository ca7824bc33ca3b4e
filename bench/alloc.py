"""Memory behaviour and timer precision: tempo against the pure-Python batcher.

Run: ``.venv/bin/python bench/alloc.py [--quick] [--impls tempo,purepy]
[--sections blocks,rss,rss-slow,interval]``.  Every (section, implementation) pair runs
in a fresh subprocess (peak RSS is a per-process figure).  The full run takes a
minute or two.  Results are printed
as tables, and as JSON lines (prefix ``ALLOC_JSON``) to stdout and
``bench/results/alloc.jsonl``.

Sections
--------
``blocks``: Python-heap blocks per enqueue at steady state (the measurement is
    ``tempo.tools._alloc.blocks_per_enqueue``, which ``tempo bench`` uses too).
    ``sys.getallocatedblocks()`` (live blocks of the interpreter's allocators,
    pymalloc and large objects alike) is read around rounds of 400 enqueues
    (4 batches of 100) into a dispatcher with a one-hour interval, the
    consumer (same thread) draining and releasing between rounds; GC is off
    while measuring, 50 warm-up rounds are not counted, the median of 200
    rounds is reported.  Two payload regimes:

    - *shared*: the same 400 pre-built ``bytes`` objects every round;
    - *fresh*: a new ``bytes`` per enqueue (sliced from a buffer), as an
      application serialising events would hand over;
    - *reused*: one ``bytearray`` enqueued 400 times (the allocation-free
      producer of ``compare.py --payload bytearray``; a batcher that keeps
      references must copy it, and purepy does).

    Columns: ``held/enq`` = blocks still alive after the enqueues, before the
    drain (what buffering costs per payload: payload objects kept alive, list
    and deque growth, bookkeeping objects); ``drift`` = blocks alive after all
    measured rounds minus before them (enqueue + drain + release should leave
    nothing: a steady climb here is a leak; a handful is noise);
    ``traced B/enq`` = the "held" figure in bytes, from ``tracemalloc``.
    These are *net* counts: an allocation freed before ``enqueue`` returns is
    not seen by them.  ``peak B/round`` catches those: ``tracemalloc``'s peak
    is reset before a round of 400 enqueues and read after it; the peak above
    the memory traced at the end is what was allocated and freed again during
    the round, minus the same figure for the same loop calling ``callable``
    (a builtin that allocates nothing) instead of ``enqueue``, which removes
    what the loop itself allocates (its list iterator; the fresh regime's
    slices).  0 there and 0 held means the enqueues allocated nothing at all,
    not even temporarily.  (A batcher that keeps the fresh regime's slices
    turns them from transient into held, so its figure there goes negative:
    read ``held/enq`` instead.)  Memory tempo takes with ``mmap`` (its arena) is not
    a Python-heap block and is covered by ``rss``.

``rss``: resident memory while ~2 GiB of payloads churn through one dispatcher
    with ``max_buffered_bytes = 64 MiB`` (``max_batch_bytes = 256 KiB``,
    ``interval = 50 ms``): one producer thread makes a fresh ``bytes`` per
    payload (sizes 64 B - 16 KiB, a fixed pseudo-random sequence) and waits
    or retries while full; one consumer thread takes and releases batches.
    Reports ``VmHWM`` (peak RSS) minus the ``VmRSS`` before the dispatcher was
    made, from ``/proc/self/status``, plus ``RssAnon``/``RssShmem`` and
    ``Pss`` (``/proc/self/smaps_rollup``, which counts a page mapped twice in
    the process once) at the end with the dispatcher still alive.

``rss-slow``: the same with a consumer that pauses 0.5 ms after each batch, so
    the buffer stays full and the producer waits: the bound is exercised, and
    a batcher that keeps payload objects holds ~64 MiB of them throughout.

``interval``: how late interval sealing is.  ``interval = 10 ms``, one payload
    every 15-30 ms (uniformly random), so every batch is sealed by the timer;
    for 200 batches, ``lateness = t(batch received by the consumer) -
    t(its first payload enqueued) - interval``; p50/p99/max in ms.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from time import perf_counter

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for _p in (str(BENCH_DIR), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _common import churn_rss  # noqa: E402
from tempo import GiB, KiB, MiB  # noqa: E402
# The blocks measurement and the implementations live in the package, shared
# with `tempo bench`.
from tempo.tools._alloc import REGIMES, blocks_per_enqueue  # noqa: E402
from tempo.tools._peers import Shape, make_impl  # noqa: E402

JSON_PREFIX = "ALLOC_JSON "
SECTION_PREFIX = "SECTION_RESULT "
RESULTS_DIR = BENCH_DIR / "results"
SIZES = (16, 256, 10240)


class Subject:
    """A started batcher from the package's implementations (``tempo``, ``purepy``
    or ``queue``), with what ``churn_rss`` and the interval section call:
    ``enqueue_wait`` (retries every 100 us while full), ``get_batch``,
    ``release``, ``nbytes``, ``first_item``, ``close``."""

    def __init__(self, impl: str, *, interval: float, max_buffered_bytes: int, max_batch_bytes: int):
        # size 1: the queue's item bound is then the byte bound, never binding
        # before the others' with payloads of one byte or more.
        self.impl = make_impl(impl, 1, "retry", Shape(interval, max_batch_bytes, max_buffered_bytes))
        self.enqueue_nowait = self.impl.enqueue
        self.get_batch = self.impl.get_batch  # all three pull their batches
        self.Full = self.impl.Full
        self.retries = 0

    def enqueue_wait(self, payload) -> None:
        while True:
            try:
                self.enqueue_nowait(payload)
                return
            except self.Full:
                self.retries += 1
                time.sleep(100e-6)

    # The pure-Python batchers' batches are lists of bytes; tempo's hold arena
    # space until released.
    def release(self, batch) -> None:
        if not isinstance(batch, list):
            batch.release()

    def nbytes(self, batch) -> int:
        return sum(map(len, batch)) if isinstance(batch, list) else batch.nbytes

    def first_item(self, batch) -> bytes:
        return bytes(batch[0])

    def close(self) -> None:
        self.impl.close()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Section: blocks per enqueue.


def blocks_section(impl: str, quick: bool) -> dict:
    rounds, warmup = (40, 10) if quick else (200, 50)
    out = {}
    for size in SIZES:
        for regime in REGIMES:
            out[f"{size}/{regime}"] = blocks_per_enqueue(impl, size, regime, rounds, warmup)
    return out


# ---------------------------------------------------------------------------
# Section: RSS while churning ~2 GiB.


def rss_section(impl: str, quick: bool, slow: bool = False) -> dict:
    churn = (256 * MiB) if quick else (2 * GiB)
    pause = 0.0005 if slow else 0.0  # the slow consumer's pause after each batch
    r = churn_rss(
        lambda: Subject(impl, interval=0.05, max_buffered_bytes=64 * MiB, max_batch_bytes=256 * KiB),
        churn,
        pause=pause,
        poll=0.01,
    )
    before, after, base = r["before"], r["after"], r["rss_before_kib"]
    return {
        "consumer": "slow" if slow else "fast",
        "churned_bytes": r["churned_bytes"],
        "payloads": r["payloads"],
        "elapsed_s": r["elapsed_s"],
        "mb_per_s": r["mb_per_s"],
        "retries": r["target"].retries,
        "rss_before_kib": base,
        "hwm_growth_kib": after.get("VmHWM", 0) - base,
        "rss_end_growth_kib": after.get("VmRSS", 0) - base,
        "rss_anon_end_kib": after.get("RssAnon", 0) - before.get("RssAnon", 0),
        "rss_shmem_end_kib": after.get("RssShmem", 0) - before.get("RssShmem", 0),
        "pss_end_growth_kib": after.get("Pss", 0) - before.get("Pss", 0),
    }


# ---------------------------------------------------------------------------
# Section: interval precision.


def interval_section(impl: str, quick: bool) -> dict:
    interval = 0.010
    count = 50 if quick else 200
    s = Subject(impl, interval=interval, max_buffered_bytes=64 * MiB, max_batch_bytes=1 * MiB)
    sent_at = [0.0] * count
    lateness, items = [], []

    def produce():
        rng = random.Random(3)
        for i in range(count):
            time.sleep(rng.uniform(0.015, 0.030))
            sent_at[i] = perf_counter()
            s.enqueue_nowait(i.to_bytes(4, "little"))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    seen = 0
    deadline = perf_counter() + count * 0.05 + 10
    while seen < count and perf_counter() < deadline:
        try:
            b = s.get_batch(timeout=1)
        except TimeoutError:
            continue
        t = perf_counter()
        n = len(b)
        first = int.from_bytes(s.first_item(b), "little")
        s.release(b)
        del b
        lateness.append((t - sent_at[first] - interval) * 1e3)
        items.append(n)
        seen += n
    producer.join(5)
    s.close()
    q = statistics.quantiles(lateness, n=100, method="inclusive")
    return {
        "interval_ms": interval * 1e3,
        "batches": len(lateness),
        "max_items_per_batch": max(items),
        "p50_ms": statistics.median(lateness),
        "p99_ms": q[98],
        "max_ms": max(lateness),
        "min_ms": min(lateness),
    }


def rss_slow_section(impl: str, quick: bool) -> dict:
    return rss_section(impl, quick, slow=True)


SECTIONS = {
    "blocks": blocks_section,
    "rss": rss_section,
    "rss-slow": rss_slow_section,
    "interval": interval_section,
}


# ---------------------------------------------------------------------------
# Orchestration.


def tempo_available() -> tuple[bool, str]:
    try:
        import tempo

        tempo.Dispatcher  # noqa: B018
        return True, ""
    except Exception as e:  # noqa: BLE001 - any failure is why it is unavailable, reported
        return False, f"{type(e).__name__}: {e}"


def run_child(section: str, impl: str, quick: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", f"{section}:{impl}"]
    if quick:
        cmd.append("--quick")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    for line in proc.stdout.splitlines():
        if line.startswith(SECTION_PREFIX):
            return json.loads(line[len(SECTION_PREFIX) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


def print_blocks(results: dict, impls: list[str]) -> None:
    print(
        "\nPython-heap blocks per enqueue (net; median of rounds of 400 enqueues; "
        "drift = blocks left after all rounds)"
    )
    print(
        f"{'size':>6} {'payloads':>8} | "
        + " | ".join(
            f"{i + ': held/enq':>15} {'drift':>9} {'traced B/enq':>12} {'peak B/round':>12}" for i in impls
        )
    )
    keys = [f"{s}/{r}" for s in SIZES for r in REGIMES]
    for key in keys:
        size, regime = key.split("/")
        row = f"{size:>6} {regime:>8} | "
        cells = []
        for impl in impls:
            r = results.get(impl, {})
            c = r.get(key) if "error" not in r else None
            if c is None:
                cells.append(f"{'n/a':>15} {'':>9} {'':>12} {'':>12}")
            else:
                cells.append(
                    f"{c['held_blocks_per_enqueue']:>15.3f} {c['drift_blocks']:>9d} "
                    f"{c['traced_bytes_per_enqueue']:>12.1f} {c.get('transient_peak_bytes_per_round', float('nan')):>12.0f}"
                )
        print(row + " | ".join(cells))


def print_rss(results: dict, impls: list[str], slow: bool = False) -> None:
    who = "slow consumer: buffer kept full" if slow else "fast consumer"
    print(f"\nResident memory growth while churning payloads through max_buffered_bytes = 64 MiB ({who}; MiB)")
    print(f"{'impl':>8} {'churned':>8} {'MB/s':>7} {'peak growth':>11} {'end RSS':>8} {'anon':>7} {'shmem':>7} {'PSS':>7} {'retries':>8}")
    for impl in impls:
        r = results.get(impl, {})
        if "error" in r or not r:
            print(f"{impl:>8} {r.get('error', 'n/a')}")
            continue
        print(
            f"{impl:>8} {r['churned_bytes'] / GiB:>6.2f}Gi {r['mb_per_s']:>7.0f} {r['hwm_growth_kib'] / 1024:>11.1f} "
            f"{r['rss_end_growth_kib'] / 1024:>8.1f} {r['rss_anon_end_kib'] / 1024:>7.1f} "
            f"{r['rss_shmem_end_kib'] / 1024:>7.1f} {r['pss_end_growth_kib'] / 1024:>7.1f} {r['retries']:>8}"
        )


def print_interval(results: dict, impls: list[str]) -> None:
    print("\nInterval sealing lateness (interval 10 ms; received - first payload - interval; ms)")
    print(f"{'impl':>8} {'batches':>7} {'p50':>7} {'p99':>7} {'max':>7} {'min':>7} {'items/batch max':>15}")
    for impl in impls:
        r = results.get(impl, {})
        if "error" in r or not r:
            print(f"{impl:>8} {r.get('error', 'n/a')}")
            continue
        print(
            f"{impl:>8} {r['batches']:>7} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['max_ms']:>7.2f} "
            f"{r['min_ms']:>7.2f} {r['max_items_per_batch']:>15}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, 256 MiB churn, 50 batches")
    ap.add_argument("--impls", default="tempo,purepy")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--out", default=str(RESULTS_DIR / "alloc.jsonl"), help="where the JSON lines go")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: SECTION:IMPL
    args = ap.parse_args(argv)

    if args.child:
        section, impl = args.child.split(":")
        result = SECTIONS[section](impl, args.quick)
        print(SECTION_PREFIX + json.dumps(result), flush=True)
        return 0

    impls = []
    for name in [x for x in args.impls.split(",") if x]:
        if name == "tempo":
            ok, why = tempo_available()
            if not ok:
                log(f"note: skipping tempo ({why}); run `make build`")
                continue
        impls.append(name)
    sections = [x for x in args.sections.split(",") if x]
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("")
    all_results: dict = {}
    for section in sections:
        all_results[section] = {}
        for impl in impls:
            log(f"{section}: {impl} ...")
            r = run_child(section, impl, args.quick)
            if "error" in r:
                log(f"    error: {r['error']}")
            all_results[section][impl] = r
            line = json.dumps({"section": section, "impl": impl, "quick": args.quick, "result": r})
            print(JSON_PREFIX + line, flush=True)
            with out_path.open("a") as f:
                f.write(line + "\n")
    printers = {
        "blocks": print_blocks,
        "rss": print_rss,
        "rss-slow": lambda results, impls: print_rss(results, impls, slow=True),
        "interval": print_interval,
    }
    for section in sections:
        printers[section](all_results[section], impls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
