"""Summarise the benchmark results as Markdown: the tables of docs/performance.md.

Run: ``.venv/bin/python bench/report.py`` (``make bench`` runs it last).  It
reads what the other scripts wrote to ``bench/results/`` (``--results DIR``
for another folder) and prints, as
Markdown, whatever of these it finds:

- the main throughput table (``latest.jsonl``, from ``compare.py``);
- the performance targets with the measured values and pass/fail
  (``latest.jsonl``, ``alloc.jsonl``);
- tempo against the machine's memory-copy floor (``memfloor.jsonl``);
- the micro-benchmarks (``micro.json``, from ``make bench-micro``).

The targets are judged on W1 (one producer, ``bytes`` payloads: the headline
workload); the W1b, W2 and W3 figures are shown beside them.  Nothing is
measured here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))

from tempo import KiB  # noqa: E402

IMPLS = ("tempo", "purepy", "queue", "otel")
WORKLOAD_ORDER = ("W1", "W1b", "W2", "W2b", "W3", "W3b")

#: size -> (minimum items/s, minimum ratio to purepy) on W1
THROUGHPUT_TARGETS = {16: (10e6, 3.0), 256: (6e6, 2.5), 10240: (1.3e6, 1.5)}
RSS_BOUND_MIB = 1.1 * 64 + 8
LATENESS_P99_MS = 3.0
W2_VS_W1 = 0.8


def load_jsonl(name: str) -> list[dict]:
    path = RESULTS_DIR / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rate(x: float | None) -> str:
    if x is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.3g}"


def mbs(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def size_label(s: int) -> str:
    return f"{s // KiB} KiB" if s >= KiB and s % KiB == 0 else f"{s} B"


def ok(flag: bool) -> str:
    return "**pass**" if flag else "**FAIL**"


class Compare:
    def __init__(self, rows: list[dict]) -> None:
        self.by = {(r["workload"], r["size"], r["impl"]): r for r in rows}
        self.workloads = sorted({r["workload"] for r in rows}, key=lambda w: WORKLOAD_ORDER.index(w) if w in WORKLOAD_ORDER else 99)
        self.sizes = sorted({r["size"] for r in rows})
        self.impls = [i for i in IMPLS if any(r["impl"] == i for r in rows)]

    def get(self, w, s, impl, key="items_per_s"):
        r = self.by.get((w, s, impl))
        return None if r is None else r.get(key)

    def ratio(self, w, s, other="purepy"):
        t, p = self.get(w, s, "tempo"), self.get(w, s, other)
        return t / p if t and p else None


def main_table(c: Compare) -> str:
    others = [i for i in c.impls if i not in ("tempo", "purepy")]
    head = ["workload", "size", "tempo items/s", "tempo MB/s", "purepy items/s", "purepy MB/s", "tempo / purepy"]
    for o in others:
        head += [f"{o} items/s", f"tempo / {o}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in c.workloads:
        for s in c.sizes:
            r = c.ratio(w, s)
            cells = [
                w,
                size_label(s),
                rate(c.get(w, s, "tempo")),
                mbs(c.get(w, s, "tempo", "mb_per_s")),
                rate(c.get(w, s, "purepy")),
                mbs(c.get(w, s, "purepy", "mb_per_s")),
                f"**{r:.2f}x**" if r else "-",
            ]
            for o in others:
                ro = c.ratio(w, s, o)
                cells += [rate(c.get(w, s, o)), f"{ro:.1f}x" if ro else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_table(c: Compare) -> str:
    """Per-run figures of tempo and purepy: how noisy each median is."""
    lines = ["| workload | size | tempo runs (M items/s) | purepy runs (M items/s) | tempo CPU ns/item |", "|---|---|---|---|---|"]
    for w in c.workloads:
        for s in c.sizes:
            cells = [w, size_label(s)]
            for impl in ("tempo", "purepy"):
                r = c.by.get((w, s, impl)) or {}
                runs = [x["items_per_s"] / 1e6 for x in r.get("runs", []) if "items_per_s" in x]
                cells.append(", ".join(f"{v:.2f}" for v in runs) or "-")
            cpu = c.get(w, s, "tempo", "cpu_ns_per_item")
            cells.append(f"{cpu:.0f}" if cpu else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def alloc_results() -> dict:
    out: dict = {}
    for row in load_jsonl("alloc.jsonl"):
        out.setdefault(row["section"], {})[row["impl"]] = row["result"]
    return out


def targets_table(c: Compare | None, alloc: dict) -> str:
    lines = ["| target | measured | result |", "|---|---|---|"]
    if c is not None:
        for s, (min_rate, min_ratio) in THROUGHPUT_TARGETS.items():
            t, r = c.get("W1", s, "tempo"), c.ratio("W1", s)
            if t is None:
                continue
            extra = f"{size_label(s)}: >= {rate(min_rate)} items/s"
            if s == 10240:
                extra += f" ({min_rate * s / 1e9:.1f} GB/s)"
            lines.append(
                f"| W1 {extra} | {rate(t)} items/s ({c.get('W1', s, 'tempo', 'mb_per_s') / 1e3:.2f} GB/s) | {ok(t >= min_rate)} |"
            )
            if r is not None:
                lines.append(f"| W1 {size_label(s)}: >= {min_ratio:g}x purepy | {r:.2f}x | {ok(r >= min_ratio)} |")
    blocks = alloc.get("blocks", {}).get("tempo")
    if blocks and "error" not in blocks:
        held = max(v["held_blocks_per_enqueue"] for v in blocks.values())
        peak = max(v.get("transient_peak_bytes_max", v.get("transient_peak_bytes_per_round", 0)) for v in blocks.values())
        lines.append(
            f"| 0 allocations per enqueue | {held:g} blocks held per enqueue; {peak:g} B allocated even "
            f"transiently per round of 400 (worst of {len(blocks)} cases) | {ok(held == 0 and peak <= 0)} |"
        )
    for section, who in (("rss", "fast consumer"), ("rss-slow", "slow consumer, buffer full")):
        r = alloc.get(section, {}).get("tempo")
        if r and "error" not in r:
            growth = r["hwm_growth_kib"] / 1024
            lines.append(
                f"| peak RSS growth < 1.1 x 64 MiB + 8 MiB = {RSS_BOUND_MIB:.1f} MiB ({who}) | "
                f"{growth:.1f} MiB while {r['churned_bytes'] / 2**30:.1f} GiB churned | {ok(growth < RSS_BOUND_MIB)} |"
            )
    r = alloc.get("interval", {}).get("tempo")
    if r and "error" not in r:
        lines.append(
            f"| interval = 10 ms: p99 lateness < {LATENESS_P99_MS:g} ms | p99 {r['p99_ms']:.2f} ms "
            f"(p50 {r['p50_ms']:.2f}, max {r['max_ms']:.2f}; {r['batches']} batches) | {ok(r['p99_ms'] < LATENESS_P99_MS)} |"
        )
    if c is not None:
        for s in c.sizes:
            w1, w2 = c.get("W1", s, "tempo"), c.get("W2", s, "tempo")
            if w1 and w2:
                lines.append(
                    f"| W2 within 20 % of W1 ({size_label(s)}) | W2 {rate(w2)} vs W1 {rate(w1)} items/s "
                    f"({w2 / w1 - 1:+.0%}) | {ok(w2 >= W2_VS_W1 * w1)} |"
                )
    return "\n".join(lines)


def floor_table(c: Compare | None, floor: list[dict]) -> str:
    fl = {(r["size"], r["variant"]): r for r in floor}
    lines = [
        "| size | copy floor, pool (tempo_copy) | copy floor, pool (memcpy) | tempo W1 ns/item | W1: floor / tempo | "
        "copy floor, hot source | tempo W1b ns/item | W1b: floor / tempo |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sizes = c.sizes if c is not None else sorted({r["size"] for r in floor})
    for s in sizes:
        fp, fm, fh = fl.get((s, "tempo_copy/mirror/pool")), fl.get((s, "memcpy/anon/pool")), fl.get((s, "tempo_copy/mirror/hot"))
        if not fp:
            continue
        t1 = c.get("W1", s, "tempo") if c else None
        tb = c.get("W1b", s, "tempo") if c else None
        ns1 = 1e9 / t1 if t1 else None
        nsb = 1e9 / tb if tb else None
        cells = [
            size_label(s),
            f"{fp['ns_per_payload']:.0f} ns ({fp['gb_per_s']:.1f} GB/s)",
            f"{fm['ns_per_payload']:.0f} ns ({fm['gb_per_s']:.1f} GB/s)" if fm else "-",
            f"{ns1:.0f} ns" if ns1 else "-",
            f"{fp['ns_per_payload'] / ns1:.0%}" if ns1 else "-",
            f"{fh['ns_per_payload']:.0f} ns ({fh['gb_per_s']:.1f} GB/s)" if fh else "-",
            f"{nsb:.0f} ns" if nsb else "-",
            f"{fh['ns_per_payload'] / nsb:.0%}" if (nsb and fh) else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def micro_table() -> str:
    path = RESULTS_DIR / "micro.json"
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    rows = {}
    for b in data.get("benchmarks", []):
        name = b["name"]  # e.g. test_enqueue[tempo-16B]
        test, _, params = name.partition("[")
        impl, _, size = params.rstrip("]").partition("-")
        rows[(test, size, impl)] = b["stats"]
    per_op = {"test_enqueue": 1000, "test_get_batch_release": 10, "test_sendall": 1}
    unit = {"test_enqueue": "ns per enqueue", "test_get_batch_release": "ns per get_batch + release",
            "test_sendall": "us per batch of 100 sent"}
    lines = ["| benchmark | size | tempo (median) | purepy (median) | purepy / tempo |", "|---|---|---|---|---|"]
    for test in per_op:
        for size in ("16B", "256B", "10240B"):
            t, p = rows.get((test, size, "tempo")), rows.get((test, size, "purepy"))
            if not t and not p:
                continue
            scale = 1e6 if test == "test_sendall" else 1e9 / per_op[test]
            tv = t["median"] * scale if t else None
            pv = p["median"] * scale if p else None
            fmt = (lambda v: f"{v:.1f}") if test == "test_sendall" else (lambda v: f"{v:.0f}")
            lines.append(
                f"| {unit[test]} | {size[:-1]} B | {fmt(tv) if tv else '-'} | {fmt(pv) if pv else '-'} | "
                f"{pv / tv:.1f}x |" if tv and pv else f"| {unit[test]} | {size} | {tv} | {pv} | - |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    global RESULTS_DIR
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(RESULTS_DIR), help="the folder of results to read")
    args = ap.parse_args(argv)
    RESULTS_DIR = Path(args.results)
    rows = load_jsonl("latest.jsonl")
    c = Compare(rows) if rows else None
    alloc = alloc_results()
    floor = load_jsonl("memfloor.jsonl")
    if c is not None:
        env = rows[0].get("env", {})
        print(f"## Throughput (compare.py; {env.get('time', '?')}, git {env.get('git', '?')}, "
              f"extension {env.get('tempo_ext', '?')}; median of {rows[0].get('repeat')} runs)\n")
        print(main_table(c))
        print("\n### Per-run figures\n")
        print(spread_table(c))
    print("\n## Targets\n")
    print(targets_table(c, alloc))
    if floor:
        print("\n## tempo against the memory-copy floor\n")
        print(floor_table(c, floor))
    micro = micro_table()
    if micro:
        print("\n## Micro-benchmarks (pytest-benchmark)\n")
        print(micro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
