"""Many producer threads, several consumers, random payload sizes: checks that
every accepted payload is delivered exactly once and in order per producer.

Each payload carries its producer's id and sequence number (8 bytes) and a
filler whose bytes are derived from both (a run of the byte values 0-255 from
a start the two choose), so a consumer can tell a payload that arrived twice,
one that never arrived, one out of order, and one whose bytes, any of them,
are not its own. Producers wait for space (``enqueue(p, timeout=...)``),
so every payload is eventually accepted. Exit code 0 only if everything was
delivered exactly once and in order; 1 with a precise report otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import threading
import time
from typing import Any

import tempo

from . import _util
from .cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, add_json_flag, dispatcher_memory_error, out_file_arg, \
    positive_duration_arg, positive_int_arg, positive_size_arg, size_arg, thread_count_arg

HEADER = struct.Struct("<II")  # producer id, sequence number
MAX_ISSUES = 20  # listed in the report; all are counted


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--producers", type=thread_count_arg, default=256, help="producer threads (default 256)")
    p.add_argument("--items", type=positive_int_arg, default=2000, help="payloads per producer (default 2000)")
    p.add_argument("--consumers", type=thread_count_arg, default=4, help="consumer threads (default 4)")
    p.add_argument("--min-size", type=size_arg, default=8, help="smallest payload (default 8B; at least 8B)")
    p.add_argument("--max-size", type=positive_size_arg, default=4 * tempo.KiB, help="largest payload (default 4KiB)")
    p.add_argument("--max-buffered-bytes", type=positive_size_arg, default=4 * tempo.MiB,
                   help="the dispatcher's bound (default 4MiB: small, so producers wait for space)")
    p.add_argument("--max-batch-bytes", type=size_arg, default=64 * tempo.KiB, help="default 64KiB")
    p.add_argument("--interval", type=positive_duration_arg, default=0.005, help="default 5ms")
    p.add_argument("--seed", type=int, default=None, help="random seed for the payload sizes (default: random)")
    p.add_argument("--out", type=out_file_arg, metavar="FILE", help="also write the report as JSON to FILE")
    add_json_flag(p)


def filler_pattern(max_size: int) -> bytes:
    """Every payload's filler is a slice of this, from its own start: one
    comparison (C speed) checks all of a payload's bytes."""
    return bytes(range(256)) * (max_size // 256 + 2)


def filler_start(pid: int, seq: int) -> int:
    return (pid * 131 + seq * 7) & 0xFF


def payload(pid: int, seq: int, size: int, pattern: bytes) -> bytes:
    start = filler_start(pid, seq)
    return HEADER.pack(pid, seq) + pattern[start:start + size - HEADER.size]


def first_wrong_byte(item: Any, pattern: bytes, start: int) -> int:
    """Where ``item`` first differs from its own bytes (for the report)."""
    body = bytes(item)[HEADER.size:]
    expect = pattern[start:start + len(body)]
    return HEADER.size + next((i for i, (a, b) in enumerate(zip(body, expect, strict=False)) if a != b), len(expect))


def run(args: argparse.Namespace) -> int:
    min_size = max(args.min_size, HEADER.size)
    max_size = max(args.max_size, min_size)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    from .cli import UsageError

    try:
        d = tempo.Dispatcher(interval=args.interval, max_buffered_bytes=args.max_buffered_bytes,
                             max_batch_bytes=args.max_batch_bytes)
    except ValueError as e:  # tempo's limits (ConfigError and its kin)
        raise UsageError(f"--max-buffered-bytes, --max-batch-bytes or --interval: {e}") from None
    except MemoryError as e:
        raise dispatcher_memory_error(e) from None
    if min_size > args.max_buffered_bytes:
        raise UsageError("--min-size is larger than --max-buffered-bytes: such payloads can never be accepted")
    if max_size > args.max_buffered_bytes:
        raise UsageError("--max-size is larger than --max-buffered-bytes: such payloads can never be accepted")
    stop = threading.Event()
    accepted = [0] * args.producers
    full_waits = [0]
    pattern = filler_pattern(max_size)
    consumer_ranges: list[list[tuple[int, int, int]]] = [[] for _ in range(args.consumers)]
    consumer_issues: list[list[str]] = [[] for _ in range(args.consumers)]
    delivered = [0] * args.consumers
    errors: list[str] = []

    def produce(pid: int) -> None:
        rng = random.Random(seed * 1_000_003 + pid)
        enqueue = d.enqueue
        try:
            for seq in range(args.items):
                p = payload(pid, seq, rng.randint(min_size, max_size), pattern)
                while True:
                    if stop.is_set():
                        return
                    try:
                        enqueue(p, timeout=0.5)
                        break
                    except tempo.QueueFull:
                        full_waits[0] += 1  # a rough count: racy increments are fine here
                accepted[pid] = seq + 1
        except tempo.TempoError as e:  # Stopped / ShuttingDown after Ctrl-C
            if not stop.is_set():
                errors.append(f"producer {pid}: {type(e).__name__}: {e}")

    def consume(cid: int) -> None:
        ranges, issues = consumer_ranges[cid], consumer_issues[cid]
        unpack, own_bytes, skip = HEADER.unpack_from, pattern.startswith, HEADER.size
        count = 0
        last_seq: dict[int, int] = {}  # per producer, the last seq this consumer saw
        for batch in d.batches():
            open_runs: dict[int, list[int]] = {}
            for item in batch:
                pid, seq = unpack(item)
                start = filler_start(pid, seq)
                if not own_bytes(item[skip:], start):
                    issues.append(f"producer {pid} seq {seq}: payload bytes are not its own (byte "
                                  f"{first_wrong_byte(item, pattern, start)} of {len(item)} differs)")
                r = open_runs.get(pid)
                if r is None:
                    open_runs[pid] = [seq, seq]
                elif seq == r[1] + 1:
                    r[1] = seq
                else:
                    issues.append(f"producer {pid}: seq {seq} follows seq {r[1]} within one batch")
                    ranges.append((pid, r[0], r[1]))
                    open_runs[pid] = [seq, seq]
                count += 1
            del item
            # One consumer gets its batches in the order they were sealed, so
            # each producer's runs must keep rising from batch to batch (the
            # coverage check in verify() cannot see order across batches).
            for pid, (a, b) in open_runs.items():
                if pid in last_seq and a <= last_seq[pid]:
                    issues.append(f"producer {pid}: seq {a}-{b} arrived after seq {last_seq[pid]} "
                                  f"at consumer {cid}: out of order")
                last_seq[pid] = b
                ranges.append((pid, a, b))
            delivered[cid] = count

    producers = [threading.Thread(target=produce, args=(i,), name=f"stress-producer-{i}", daemon=True)
                 for i in range(args.producers)]
    consumers = [threading.Thread(target=consume, args=(i,), name=f"stress-consumer-{i}", daemon=True)
                 for i in range(args.consumers)]
    total = args.producers * args.items
    progress = _util.Progress(total, "stress")
    with _util.Interrupt() as intr:
        t0 = time.monotonic()
        d.start()
        for t in consumers:
            t.start()
        for t in producers:
            t.start()
        _util.say(f"tempo stress: started: {args.producers} producers x {args.items} payloads, "
                  f"{args.consumers} consumers, sizes {min_size}-{max_size} B, seed {seed}")
        for t in producers:
            while t.is_alive():
                if intr.requested:
                    stop.set()
                t.join(0.1)
                rate = sum(delivered) / max(time.monotonic() - t0, 1e-9)
                progress.update(sum(delivered), f"{_util.format_rate(rate)} items/s")
        produce_s = time.monotonic() - t0
        shutdown_error = None
        try:
            d.shutdown(timeout=60)
        except (TimeoutError, tempo.Stopped) as e:
            shutdown_error = f"shutdown: {type(e).__name__}: {e}"
        except KeyboardInterrupt:
            # Ctrl-C (again) while draining: drop the rest, still verify and report.
            intr.requested = True
            stop.set()
            d.stop()
            shutdown_error = "shutdown: drain aborted by Ctrl-C"
        interrupted = intr.requested
    for t in consumers:
        t.join(10)
    elapsed = time.monotonic() - t0
    progress.close()

    report = verify(args.producers, accepted, consumer_ranges, consumer_issues)
    stats = d.stats()
    if stats.dropped:
        report["issues"].insert(0, f"{stats.dropped} payloads dropped")
        report["ok"] = False
    if shutdown_error:
        report["issues"].insert(0, shutdown_error)
        report["ok"] = False
    if errors:
        report["issues"][:0] = errors
        report["ok"] = False
    report["issue_count"] = len(report["issues"])
    result = {
        "tool": "stress",
        "ok": report["ok"],
        "interrupted": interrupted,
        "producers": args.producers,
        "items_per_producer": args.items,
        "consumers": args.consumers,
        "min_size": min_size,
        "max_size": max_size,
        "seed": seed,
        "config": {"interval": d.config.interval, "max_batch_bytes": d.config.max_batch_bytes,
                   "max_buffered_bytes": d.config.max_buffered_bytes},
        "accepted": sum(accepted),
        "delivered": sum(delivered),
        "batches": stats.batches,
        "queue_full_waits": full_waits[0],
        "elapsed_s": round(elapsed, 3),
        "items_per_s": round(sum(delivered) / produce_s, 1) if produce_s > 0 else None,
        "issue_count": report["issue_count"],
        "issues": report["issues"][:MAX_ISSUES],
        "machine": _util.machine_info(),
    }
    print_result(result, args.json)
    if args.out:
        _util.write_json(args.out, result)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if result["ok"] else EXIT_FAILED


def verify(nprod: int, accepted: list[int], consumer_ranges: list[list[tuple[int, int, int]]],
           consumer_issues: list[list[str]]) -> dict[str, Any]:
    """Every producer's accepted sequence numbers 0..n-1 must be covered by the
    delivered runs exactly once. Each batch holds one contiguous, increasing run
    per producer (its payloads were appended in order, and batches are sealed in
    order), so overlapping runs mean duplicates and holes mean losses."""
    issues: list[str] = [i for per in consumer_issues for i in per]
    per_producer: list[list[tuple[int, int]]] = [[] for _ in range(nprod)]
    for ranges in consumer_ranges:
        for pid, a, b in ranges:
            if 0 <= pid < nprod:
                per_producer[pid].append((a, b))
            else:
                issues.append(f"a payload names producer {pid}, which does not exist")
    for pid, runs in enumerate(per_producer):
        runs.sort()
        expect = 0
        for a, b in runs:
            if a > expect:
                issues.append(f"producer {pid}: seq {expect}-{a - 1} accepted but never delivered"
                              if a - 1 > expect else f"producer {pid}: seq {expect} accepted but never delivered")
            elif a < expect:
                issues.append(f"producer {pid}: seq {a}-{min(b, expect - 1)} delivered more than once")
            expect = max(expect, b + 1)
        if expect < accepted[pid]:
            issues.append(f"producer {pid}: seq {expect}-{accepted[pid] - 1} accepted but never delivered")
        elif expect > accepted[pid]:
            issues.append(f"producer {pid}: seq {accepted[pid]}-{expect - 1} delivered but never accepted")
    return {"ok": not issues, "issue_count": len(issues), "issues": issues}


def print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    state = "interrupted: " if result["interrupted"] else ""
    verdict = "OK" if result["ok"] else "FAILED"
    print(f"{state}{verdict}: {result['delivered']:,} of {result['accepted']:,} accepted payloads delivered "
          f"({result['producers']} producers, {result['consumers']} consumer{'s' if result['consumers'] != 1 else ''}, "
          f"{result['batches']:,} batches, "
          f"{result['elapsed_s']:.2f} s, {_util.format_rate(result['items_per_s'] or 0)} items/s)")
    if result["ok"]:
        print("every accepted payload delivered exactly once, in order per producer, with its own bytes")
    else:
        print(f"{result['issue_count']} issue(s):")
        for line in result["issues"]:
            print("  " + line)
        if result["issue_count"] > len(result["issues"]):
            print(f"  ... and {result['issue_count'] - len(result['issues'])} more")
    sys.stdout.flush()
