"""The side-by-side snapshot on this machine: tempo against the pure-Python
batcher and a queue.Queue loop (OpenTelemetry's BatchProcessor too when it is
installed, and tempo fed with enqueue_many), same workload, same run.

The workload is bench/compare.py's W1: one producer thread enqueues a pool of
distinct `bytes` payloads, one consumer thread takes the batches and counts
items and bytes; interval 1 s, max_batch_bytes 256 x the payload size,
max_buffered_bytes 64 MiB. Each run is a fresh process with an untimed warm-up;
each case runs --repeat times, implementations interleaved so machine noise
hits them alike, and the median is reported with its spread. Allocations per
payload are Python-heap blocks still held per enqueued payload (fresh `bytes`
per enqueue, as an application serialising events hands them over), measured
with sys.getallocatedblocks() in another fresh process.

Columns: items/s and bytes/s (medians); "tempo/x" is tempo's items/s divided
by that implementation's (above 1: tempo is faster); "spread" is the standard
deviation over the runs as a share of the mean. Runs that vary too much are
flagged, as pyperf would flag them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

from tempo import MiB

from . import _alloc, _peers, _throughput, _util
from .cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, add_json_flag, out_file_arg, positive_int_arg

DEFAULT_SIZES = "16,256,10KiB"
WORKLOAD = "W1"
CASE_TIMEOUT = 300.0
# W1's pool holds at least 256 distinct payloads and its buffer is 64 MiB:
# past 1 MiB a case is a memory hog measuring a buffer that holds a few items.
MAX_SIZE = MiB


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"payload sizes, comma-separated (default {DEFAULT_SIZES})")
    p.add_argument("--quick", action="store_true", help="1/16 of the payloads, one run each: a quick look, noisy")
    p.add_argument("--repeat", type=positive_int_arg, default=None, help="runs per case (default 3; 1 with --quick)")
    p.add_argument("--impls", default=None,
                   help="comma-separated subset of tempo,tempo-many,purepy,queue,otel (default: all available)")
    p.add_argument("--no-alloc", action="store_true", help="skip the allocations-per-payload measurement")
    p.add_argument("--zerocopy", action="store_true",
                   help="instead: to_arrow() and sendmmsg() against the item-list path and the C floor")
    p.add_argument("--out", type=out_file_arg, metavar="FILE", help="also write the result as JSON to FILE")
    add_json_flag(p)


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n = _util.parse_size(part)
        except ValueError as e:
            raise UsageError(f"--sizes: {e}") from None
        if n <= 0:
            raise UsageError(f"--sizes: {part!r} must be greater than zero")
        if n > MAX_SIZE:
            raise UsageError(f"--sizes: {_util.format_size(n)} is over {_util.format_size(MAX_SIZE)}, the largest "
                             f"W1 is built for (a pool of 256 distinct payloads, a "
                             f"{_util.format_size(_peers.MAX_BUFFERED)} buffer)")
        sizes.append(n)
    if not sizes:
        raise UsageError("--sizes: no size given")
    return sizes


def choose_impls(arg: str | None) -> tuple[list[str], list[str]]:
    known = _peers.ALL_IMPLS
    names = [x.strip() for x in arg.split(",") if x.strip()] if arg else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--impls: unknown {', '.join(unknown)} (choose from {', '.join(known)})")
    chosen, skipped = [], []
    for name in names:
        ok, why = _peers.impl_available(name)
        if ok:
            chosen.append(name)
        elif arg:  # asked for by name: say why not
            skipped.append(f"{name}: {why}")
    return chosen, skipped


def run_child(module: str, args: list[str], prefix: str) -> dict[str, Any]:
    """One measurement of ``module`` in a fresh process."""
    cmd, env = _util.module_command(module)
    return _util.run_json_child([*cmd, *args], prefix, CASE_TIMEOUT, env)


def stability_warnings(label: str, runs: list[float], elapsed: list[float]) -> list[str]:
    """pyperf's checks (pyperf/_cli.py format_checks), applied to our runs."""
    out = []
    if len(runs) >= 2:
        mean = statistics.mean(runs)
        stdev = statistics.stdev(runs)
        if stdev >= 0.10 * mean:
            out.append(f"{label}: the standard deviation is {stdev / mean:.0%} of the mean")
        for kind, value in (("minimum", min(runs)), ("maximum", max(runs))):
            off = (value - mean) / mean
            if abs(off) >= 0.5:
                out.append(f"{label}: the {kind} is {abs(off):.0%} {'above' if off > 0 else 'below'} the mean")
    if elapsed and min(elapsed) < 0.05:
        out.append(f"{label}: the shortest run took only {min(elapsed) * 1e3:.1f} ms")
    return out


def run(args: argparse.Namespace) -> int:
    if args.zerocopy:
        from . import _zerocopy  # its own module: pyarrow and a C compiler are optional

        return _zerocopy.run(args)
    sizes = parse_sizes(args.sizes)
    impls, skipped = choose_impls(args.impls)
    if "tempo" not in impls and "tempo-many" in impls:
        impls.insert(0, "tempo")  # enqueue_many is reported against enqueue
    if not impls:
        raise UsageError("nothing to run: " + "; ".join(skipped))
    repeat = args.repeat or (1 if args.quick else 3)
    alloc_impls = [] if args.no_alloc else [i for i in impls if i in ("tempo", "purepy", "queue")]
    total = len(sizes) * (repeat * len(impls) + len(alloc_impls))
    for note in skipped:
        _util.say(f"tempo bench: skipping {note}")
    progress = _util.Progress(total, "bench")
    cases: dict[tuple[int, str], dict[str, Any]] = {}
    warnings: list[str] = []
    done = 0
    with _util.Interrupt() as intr:
        _util.say(f"tempo bench: started: {len(sizes)} sizes x {len(impls)} implementations x {repeat} runs "
                  f"({', '.join(impls)}), each in a fresh process")
        for size in sizes:
            if intr.requested:
                break
            items = _throughput.items_for(size, args.quick)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in impls}
            for _ in range(repeat):
                for name in impls:
                    case = ["--case", f"{name}:{size}", "--items", str(items)]
                    if args.quick:
                        case += ["--warmup-max-s", "0.1"]
                    if intr.requested:
                        break
                    r = run_child("tempo.tools._throughput", case, _throughput.CASE_PREFIX)
                    if intr.requested and "error" in r:
                        break  # Ctrl-C reached the child too: not a result
                    runs[name].append(r)
                    done += 1
                    progress.update(done, f"{_util.format_size(size)} {name}: " + (
                        r["error"][:40] if "error" in r else f"{_util.format_rate(r['items_per_s'])} items/s"),
                        force=True)
            for name in impls:
                if not runs[name]:
                    continue
                ok = [r for r in runs[name] if "error" not in r]
                rates = [r["items_per_s"] for r in ok]
                label = f"{_util.format_size(size)} {name}"
                warnings += [f"{label}: {r['error']}" for r in runs[name] if "error" in r]
                warnings += stability_warnings(label, rates, [r["elapsed_s"] for r in ok])
                cases[(size, name)] = {
                    "size": size,
                    "impl": name,
                    "items": items,
                    "runs": len(runs[name]),
                    "ok_runs": len(ok),
                    "items_per_s": statistics.median(rates) if ok else None,
                    "bytes_per_s": statistics.median(rates) * size if ok else None,
                    "spread": statistics.stdev(rates) / statistics.mean(rates) if len(ok) >= 2 else None,
                    "cpu_ns_per_item": statistics.median(r["cpu_ns_per_item"] for r in ok) if ok else None,
                    "per_run_items_per_s": rates,
                }
            for name in alloc_impls:
                if intr.requested or (size, name) not in cases:
                    break
                rounds = 30 if args.quick else 100
                r = run_child("tempo.tools._alloc", ["--blocks", f"{name}:{size}:fresh:{rounds}"],
                              _alloc.BLOCKS_PREFIX)
                if intr.requested and "error" in r:
                    break
                done += 1
                progress.update(done, f"{_util.format_size(size)} {name}: allocations", force=True)
                if "error" in r:
                    warnings.append(f"{_util.format_size(size)} {name} allocations: {r['error']}")
                else:
                    cases[(size, name)]["held_blocks_per_payload"] = r["held_blocks_per_enqueue"]
                    cases[(size, name)]["transient_bytes_per_payload"] = max(
                        r["transient_peak_bytes_per_round"] / r["enqueues_per_round"], 0.0)
        interrupted = intr.requested
    progress.close()

    for (size, name), c in cases.items():
        t = cases.get((size, "tempo"), {}).get("items_per_s")
        if name != "tempo" and t and c["items_per_s"]:
            c["tempo_ratio"] = t / c["items_per_s"]
        if name == "tempo-many" and t and c["items_per_s"]:
            c["enqueue_many_speedup"] = c["items_per_s"] / t  # above 1: enqueue_many is faster
    result = {
        "tool": "bench",
        "interrupted": interrupted,
        "workload": WORKLOAD,
        "config": {"interval": _peers.INTERVAL, "max_batch_bytes": f"{_peers.BATCH_ITEMS} x size",
                   "max_buffered_bytes": _peers.MAX_BUFFERED, "producers": 1, "consumers": 1},
        "sizes": sizes,
        "repeat": repeat,
        "quick": args.quick,
        "implementations": impls,
        "results": list(cases.values()),
        "warnings": warnings,
        "skipped": skipped,
        "machine": _util.machine_info(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    if args.out:
        _util.write_json(args.out, result)
    if interrupted:
        return EXIT_INTERRUPTED
    failed = any(c["ok_runs"] == 0 for c in cases.values())
    return EXIT_FAILED if failed else EXIT_OK


def print_table(r: dict[str, Any]) -> None:
    fr, fs = _util.format_rate, _util.format_size
    print(f"{'interrupted: ' if r['interrupted'] else ''}W1: 1 producer, 1 consumer; median of {r['repeat']} "
          f"run(s) each; interval 1 s, max_batch_bytes 256 x size, max_buffered_bytes 64 MiB")
    head = f"{'size':>8}  {'implementation':<14} {'items/s':>9} {'bytes/s':>11} {'tempo/x':>8} {'spread':>7} " \
           f"{'allocs/payload':>14}"
    print(head)
    print("-" * len(head))
    for c in r["results"]:
        ratio = "" if c["impl"] in ("tempo", "tempo-many") else (
            f"{c['tempo_ratio']:.2f}x" if c.get("tempo_ratio") else "-")
        ips = fr(c["items_per_s"]) if c["items_per_s"] else "error"
        bps = fs(c["bytes_per_s"]) + "/s" if c["bytes_per_s"] else "-"
        spread = f"{c['spread']:.0%}" if c["spread"] is not None else "-"
        allocs = f"{c['held_blocks_per_payload']:.2f}" if "held_blocks_per_payload" in c else "-"
        print(f"{fs(c['size']):>8}  {c['impl']:<14} {ips:>9} {bps:>11} {ratio:>8} {spread:>7} {allocs:>14}")
    for c in r["results"]:
        if c.get("enqueue_many_speedup"):
            print(f"{fs(c['size'])}: enqueue_many (chunks of 256) vs a loop of enqueue: "
                  f"{c['enqueue_many_speedup']:.2f}x the items/s")
    for w in r["warnings"]:
        print(f"warning: {w}")
    if r["warnings"]:
        print("(unstable figures: rerun with more --repeat, or on a quieter machine)")
    sys.stdout.flush()
