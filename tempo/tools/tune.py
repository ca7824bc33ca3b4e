"""Probe this machine with real producer and consumer threads and recommend
settings (max_buffered_bytes, max_batch_bytes, interval, and prefault where it
helps a slow first lap) for one payload size.

How it decides (docs/tools.md has the long form): a first probe measures the
producers' top speed with a consumer that does nothing. Then, for consumer
delays from small to large (the consumer sleeps DELAY per 8 items of each
batch, standing in for the work a real sink does), one probe measures what
that consumer can take, and the producers then offer half of it, paced, while
buffer budgets are searched: smaller while a probe stays healthy, larger while
it does not. A probe is healthy when no enqueue met QueueFull and the
dispatcher drained within the bound afterwards. The first delay where both a
healthy and a pressured budget are seen gives the edge; the smallest healthy
budget there (the last healthy point before queue-full pressure) is
"recommended". If no edge is found within the probe budget, the best healthy
point seen is reported as "provisional". The whole run takes about 3-6 x
--duration.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

import tempo
from tempo import KiB, MiB

from . import _util
from .cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, add_json_flag, out_file_arg, \
    positive_duration_arg, positive_size_arg, thread_count_arg

DEFAULT_PAYLOAD = 10 * KiB
DEFAULT_OUT = "tempo-settings.json"
PROBE_INTERVAL = 0.005  # seconds; short, so a probe's batches are sealed by size or soon after
DELAYS = (10e-6, 50e-6, 200e-6, 1e-3, 2e-3)  # consumer sleep per 8 items of a batch
MAX_PROBES = 12  # including the top-speed probe: bounds the whole run
PROBES_PER_DURATION = 4  # each probe lasts --duration / 4
LOAD = 0.5  # offered load, as a fraction of what the consumer can take at a delay
FIRST_LAP_SLOW = 2.0  # lap 1 at least this many times steady state per item: a slow first lap
PREFAULT_HELPS = 0.5  # prefault=True's lap 1 at most this fraction of the default's: worth recommending
LAP_TIMED_BYTES = 64 * MiB  # how much of each lap is timed (lap 1: the arena's first pages)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--payload-bytes", type=positive_size_arg, default=None,
                   help="typical payload size (default 10KiB; asked for when on a terminal)")
    p.add_argument("--duration", type=positive_duration_arg, default=5.0,
                   help="probe time scale (default 5s): each probe lasts a quarter of it; "
                   "the whole run takes about 3-6 times it")
    p.add_argument("--producers", type=thread_count_arg, default=4, help="producer threads per probe (default 4)")
    p.add_argument("--out", type=out_file_arg, default=DEFAULT_OUT, metavar="FILE",
                   help=f"where the settings go (default ./{DEFAULT_OUT}; '' for none)")
    add_json_flag(p)


# ---------------------------------------------------------------------------
# Budgets (as the Go tuner sizes them)


def round_mib(n: int) -> int:
    return n if n <= MiB else -(-n // MiB) * MiB


PAYLOADS_PER_BUDGET = 128  # the smallest budget probed holds this many payloads


def budget_ceiling() -> int:
    """The largest budget the tuner will fill on this machine: 256 MiB, or an
    eighth of its memory if that is more (each probe fills its whole budget)."""
    mem = _util.total_memory()
    return max(256 * MiB, round_mib(mem // 8)) if mem else 256 * MiB


def budget_bounds(payload: int) -> tuple[int, int, int]:
    """(smallest, first, largest) buffer budget to probe for ``payload``-byte payloads."""
    mem = _util.total_memory()
    smallest = max(MiB, round_mib(payload * PAYLOADS_PER_BUDGET))
    largest = 256 * MiB
    if mem:
        largest = min(largest, max(smallest, round_mib(mem // 8)))
    first = min(max(16 * MiB, round_mib(payload * 4096)), 64 * MiB, largest)
    return smallest, max(first, smallest), max(largest, smallest)


def batch_bytes_for(payload: int, budget: int) -> int:
    """The Go tuner's batch shaping: several payloads per batch, 32 KiB - 4 MiB,
    at most a quarter of the budget; none for payloads over 256 KiB."""
    if payload > 256 * KiB:
        return 0
    items = 128 if payload <= KiB else 32 if payload <= 16 * KiB else 8 if payload <= 128 * KiB else 4
    batch = min(max(payload * items, 32 * KiB), 4 * MiB, budget // 4)
    batch = max(batch, payload * 2)
    if batch >= MiB:
        return -(-batch // MiB) * MiB
    if batch >= KiB:
        return -(-batch // KiB) * KiB
    return batch


def interval_for(batch_bytes: int, payload: int, bytes_per_s: float) -> float:
    """How long a partial batch may wait: long enough that at 1% of the observed
    rate a batch still fills before it is sealed by time; 50 ms - 1 s."""
    target = batch_bytes or payload * 32
    if bytes_per_s <= 0:
        return 0.25
    seconds = target / (0.01 * bytes_per_s)
    seconds = min(max(seconds, 0.05), 1.0)
    return float(f"{seconds:.2g}")


# ---------------------------------------------------------------------------
# One probe


def probe(payload: int, producers: int, delay: float, budget: int, seconds: float, drain_bound: float,
          rate: float | None = None, intr: _util.Interrupt | None = None) -> dict[str, Any]:
    """Producers enqueue for ``seconds``, flat out or paced to ``rate`` items/s in
    all; one consumer sleeps ``delay`` per 8 items of each batch. Then a shutdown
    bounded by ``drain_bound``. A paced producer drops a payload that meets
    QueueFull (counted) and keeps its schedule. ``intr.requested`` (Ctrl-C)
    ends the probe early."""
    intr = intr or _util.Interrupt()
    batch_bytes = batch_bytes_for(payload, budget)
    d = tempo.Dispatcher(interval=PROBE_INTERVAL, max_buffered_bytes=budget, max_batch_bytes=batch_bytes)
    data = b"x" * payload
    stop = threading.Event()
    rejected = [0] * producers
    delivered = [0]

    def produce(i: int) -> None:
        enqueue, Full, sleep, n = d.enqueue, tempo.QueueFull, time.sleep, 0
        if rate:
            n = produce_paced(i, rate / producers)
        while not rate and not stop.is_set():
            try:
                enqueue(data)
            except Full:
                n += 1
                sleep(0)  # let the consumer run (the Go tuner yields here too)
            except tempo.TempoError:
                break
        rejected[i] = n

    def produce_paced(i: int, per_s: float) -> int:
        enqueue, Full, sleep, clock = d.enqueue, tempo.QueueFull, time.sleep, time.monotonic
        step = 1.0 / per_s
        due = clock() + step * i / producers  # producers spread over one step
        n = 0
        while not stop.is_set():
            now = clock()
            if now < due:
                sleep(min(due - now, 0.05))  # short slices: a slow pace must not outlive the probe
                continue
            # Everything due now, in one burst; a producer that fell far behind
            # (a stalled machine) does not try to catch up more than 50 ms.
            count = min(int((now - due) / step) + 1, 4096)
            due = max(due + count * step, now - 0.05)
            for _ in range(count):
                try:
                    enqueue(data)
                except Full:
                    n += 1
                except tempo.TempoError:
                    return n
        return n

    warming = [True]

    def consume() -> None:
        sleep = time.sleep
        for batch in d.batches():
            n = len(batch)
            batch.release()
            if delay and not warming[0]:
                sleep(delay * ((n + 7) // 8))
            delivered[0] += n

    threads = [threading.Thread(target=produce, args=(i,), daemon=True) for i in range(producers)]
    consumer = threading.Thread(target=consume, daemon=True)
    peak_buffered = peak_rss = 0
    interrupted = False
    t0 = None
    elapsed = drain_s = 0.0
    delivered_in_time = 0
    timed_out = False
    try:
        d.start()
        consumer.start()
        # Warm-up: one pass of the whole budget through the arena, so first-touch
        # page faults (hundreds of MiB on a fresh dispatcher) are not measured.
        for _ in range(budget // payload):
            if intr.requested:
                break
            d.enqueue(data, timeout=None)
        d.flush(timeout=None)
        while d.stats().buffered_bytes:
            time.sleep(0.001)
        delivered[0] = 0
        warming[0] = False
        t0 = time.monotonic()
        for t in threads:
            t.start()
        while time.monotonic() - t0 < seconds and not intr.requested:
            time.sleep(0.02)
            peak_buffered = max(peak_buffered, d.stats().buffered_bytes)
            peak_rss = max(peak_rss, _util.read_memory()["rss"])
        interrupted = intr.requested
        elapsed = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join()
        delivered_in_time = delivered[0]
        timed_out = False
        t1 = time.monotonic()
        try:
            d.shutdown(timeout=drain_bound)
        except TimeoutError:
            timed_out = True
        drain_s = time.monotonic() - t1
        consumer.join(drain_bound + 5)
    except KeyboardInterrupt:
        # A second Ctrl-C: this probe is abandoned (its dispatcher stopped),
        # the ones before it are kept and the result is still written.
        intr.requested = interrupted = True
        stop.set()
        d.stop()
        for t in (*threads, consumer):
            if t.ident is not None:
                t.join(5)
        if t0 is not None and not elapsed:
            elapsed = time.monotonic() - t0
            delivered_in_time = delivered[0]
    peak_buffered = max(peak_buffered, d.stats().buffered_bytes)
    items_per_s = delivered_in_time / elapsed if elapsed > 0 else 0.0
    rejections = sum(rejected)
    return {
        "producers": producers,
        "offered_items_per_s": round(rate, 1) if rate else None,
        "consumer_delay": delay,
        "max_buffered_bytes": budget,
        "max_batch_bytes": batch_bytes,
        "seconds": round(elapsed, 3),
        "items_per_s": round(items_per_s, 1),
        "bytes_per_s": round(items_per_s * payload, 1),
        "peak_buffered_bytes": peak_buffered,
        "peak_rss": peak_rss,
        "rejections": rejections,
        "rejection_rate": round(rejections / (rejections + delivered[0]), 4) if rejections else 0.0,
        "drain_s": round(drain_s, 3),
        "drain_timed_out": timed_out,
        "healthy": rejections == 0 and not timed_out and not interrupted,
        "interrupted": interrupted,
    }


# ---------------------------------------------------------------------------
# The first lap (docs/performance.md, "The first lap")


def first_laps(payload: int, budget: int, prefault: bool, intr: _util.Interrupt) -> dict[str, Any] | None:
    """A fresh dispatcher of ``budget`` (``prefault`` as given), one producer
    flat out, a consumer that releases at once: microseconds per item over the
    first bytes of its first lap (pages never touched) and of its second (the
    arena warm: steady state), and the seconds making it took. None if
    interrupted."""
    t0 = time.perf_counter()
    d = tempo.Dispatcher(interval=PROBE_INTERVAL, max_buffered_bytes=budget,
                         max_batch_bytes=batch_bytes_for(payload, budget), prefault=prefault)
    make_s = time.perf_counter() - t0
    data = b"x" * payload
    timed = max(1, min(budget, LAP_TIMED_BYTES) // payload)
    untimed = max(0, budget // payload - timed)  # the rest of lap 1: lap 2 finds every page touched

    def consume() -> None:
        for batch in d.batches():
            batch.release()

    def lap(n: int) -> float:
        enqueue, clock = d.enqueue, time.perf_counter
        start = clock()
        for _ in range(n):
            enqueue(data, timeout=None)
        return (clock() - start) / n * 1e6 if n else 0.0

    consumer = threading.Thread(target=consume, daemon=True)
    try:
        d.start()
        consumer.start()
        first = lap(timed)
        if intr.requested:
            return None
        lap(untimed)
        if intr.requested:
            return None
        steady = lap(timed)
        if intr.requested:
            return None
        d.shutdown(timeout=10)
    except KeyboardInterrupt:  # a second Ctrl-C: this measurement is abandoned
        intr.requested = True
        return None
    finally:
        d.stop()
        if consumer.ident is not None:
            consumer.join(5)
    return {"prefault": prefault, "make_s": round(make_s, 4), "items_timed": timed,
            "lap1_us_per_item": round(first, 3), "steady_us_per_item": round(steady, 3),
            "ratio": round(first / steady, 2) if steady > 0 else None}


def first_lap(payload: int, budget: int, intr: _util.Interrupt) -> dict[str, Any] | None:
    """How slow the first lap is at ``budget``, and, if it is slow (lap 1 at
    least FIRST_LAP_SLOW x steady state), whether ``prefault=True`` helps:
    measured on the next fresh dispatcher, it helps if its lap 1 takes at most
    PREFAULT_HELPS of the default's per item."""
    default = first_laps(payload, budget, False, intr)
    if default is None:
        return None
    slow = default["ratio"] is not None and default["ratio"] >= FIRST_LAP_SLOW
    prefaulted = first_laps(payload, budget, True, intr) if slow else None
    helps = prefaulted is not None and \
        prefaulted["lap1_us_per_item"] <= PREFAULT_HELPS * default["lap1_us_per_item"]
    return {"max_buffered_bytes": budget, "slow": slow, "default": default, "prefault": prefaulted,
            "prefault_helps": helps}


# ---------------------------------------------------------------------------
# The search


class Search:
    """The bounded search over consumer delays and budgets (see the module docstring)."""

    def __init__(self, payload: int, producers: int, duration: float, progress: _util.Progress,
                 intr: _util.Interrupt) -> None:
        self.intr = intr
        self.payload = payload
        self.producers = producers
        self.seconds = max(duration / PROBES_PER_DURATION, 0.05)
        self.drain_bound = max(self.seconds, 0.5)
        self.progress = progress
        self.runs: list[dict[str, Any]] = []
        self.interrupted = False

    def left(self) -> int:
        return 0 if self.interrupted or self.intr.requested else MAX_PROBES - len(self.runs)

    def run(self, delay: float, budget: int, rate: float | None = None, kind: str = "search") -> dict[str, Any]:
        r = probe(self.payload, self.producers, delay, budget, self.seconds, self.drain_bound, rate, self.intr)
        r["kind"] = kind
        self.runs.append(r)
        self.interrupted = r["interrupted"]
        verdict = f"{_util.format_rate(r['items_per_s'])} items/s" if kind != "search" else \
            "healthy" if r["healthy"] else "pressure"
        self.progress.update(len(self.runs), f"probe {len(self.runs)} ({kind}): delay {_util.format_duration(delay)}, "
                             f"budget {_util.format_size(budget)}: {verdict}", force=True)
        return r

    def search_delay(self, delay: float, rate: float, smallest: int, first: int,
                     largest: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(last healthy, first pressured) at ``delay``: quarter the budget while
        healthy, quadruple it while not, then two geometric bisection steps."""
        healthy: dict[str, Any] | None = None
        failed: dict[str, Any] | None = None
        r = self.run(delay, first, rate)
        if r["healthy"]:
            healthy = r
            budget = first
            while budget > smallest and self.left():
                budget = max(smallest, round_mib(budget // 4))
                r = self.run(delay, budget, rate)
                if not r["healthy"]:
                    failed = r
                    break
                healthy = r
        else:
            failed = r
            budget = first
            while budget < largest and self.left():
                budget = min(largest, round_mib(budget * 4))
                r = self.run(delay, budget, rate)
                if r["healthy"]:
                    healthy = r
                    break
                failed = r
        if healthy is None or failed is None:
            return healthy, failed
        for _ in range(2):
            lo, hi = failed["max_buffered_bytes"], healthy["max_buffered_bytes"]
            mid = round_mib(int(math.sqrt(lo * hi)))
            if not self.left() or hi - lo <= MiB or not lo < mid < hi:
                break
            r = self.run(delay, mid, rate)
            if r["healthy"]:
                healthy = r
            else:
                failed = r
        return healthy, failed


def tune(payload: int, producers: int, duration: float, progress: _util.Progress,
         intr: _util.Interrupt) -> dict[str, Any]:
    smallest, first, largest = budget_bounds(payload)
    s = Search(payload, producers, duration, progress, intr)
    chosen = failure = fallback = None
    top = s.run(0.0, first, kind="top speed")
    top_items = top["items_per_s"] or 1.0
    for delay in DELAYS:
        if s.left() < 3:
            break
        capacity = s.run(delay, first, kind="capacity")["items_per_s"]
        if not capacity:
            continue
        healthy, failed = s.search_delay(delay, LOAD * min(capacity, top_items), smallest, first, largest)
        if healthy is not None:
            fallback = healthy
        if healthy is not None and failed is not None:
            chosen, failure = healthy, failed
            break
    s.interrupted = s.interrupted or intr.requested
    base = chosen or fallback
    # Measured before the verdict: a Ctrl-C here makes the result provisional too.
    lap = first_lap(payload, base["max_buffered_bytes"], intr) if base is not None and not s.interrupted else None
    s.interrupted = s.interrupted or intr.requested
    status = "recommended" if chosen is not None and not s.interrupted else "provisional"
    notes = [
        "max_buffered_bytes is the safety bound: tempo never owns more payload bytes than this.",
        "max_batch_bytes is optional shaping; 0 (none) is fine if downstream batch size does not matter.",
    ]
    if chosen is not None:
        notes.append("recommended: the smallest healthy budget at the first consumer delay where "
                     "queue-full pressure appeared, i.e. the last healthy point before pressure.")
    else:
        notes.append("provisional: no edge between healthy and pressured budgets was found within "
                     f"{MAX_PROBES} probes; try a longer --duration or a larger --payload-bytes.")
    found_healthy = base is not None
    if base is None:
        # Nothing was healthy, not even the fast consumer: the largest budget, said plainly.
        base = dict(top, max_buffered_bytes=largest, max_batch_bytes=batch_bytes_for(payload, largest))
        notes.append("no probe was healthy; the largest budget probed is reported, measure again on a quieter machine")
    if s.interrupted:
        notes.append("interrupted: the search stopped early; these settings are provisional")
    top_bytes = top["bytes_per_s"]
    budget = base["max_buffered_bytes"]
    batch = batch_bytes_for(payload, budget)
    if lap is not None and lap["slow"]:
        d, p = lap["default"], lap["prefault"]
        if lap["prefault_helps"]:
            notes.append(f"prefault: the first lap took {d['ratio']}x steady state per item; with prefault=True "
                         f"{p['ratio']}x, for {_util.format_duration(p['make_s'])} more to make the dispatcher "
                         "and the whole budget resident from the start.")
        else:
            notes.append(f"the first lap took {d['ratio']}x steady state per item; prefault=True did not help "
                         "enough here to recommend it (see docs/performance.md, \"The first lap\").")
    settings: dict[str, Any] = {"prefault": True} if lap is not None and lap["prefault_helps"] else {}
    return {
        "interval": interval_for(batch, payload, top_bytes),
        "max_batch_bytes": batch,
        "max_buffered_bytes": budget,
        **settings,
        "payload_bytes": payload,
        "consumer_delay": base["consumer_delay"],
        "status": status,
        "machine": _util.machine_info(),
        "interrupted": s.interrupted,
        "healthy": found_healthy,
        "producers": producers,
        "buffered_items": budget // payload,
        "burst_headroom_s": round(budget / top_bytes, 4) if top_bytes else None,
        "top_speed": {"items_per_s": top["items_per_s"], "bytes_per_s": top["bytes_per_s"]},
        "observed": {k: base[k] for k in ("producers", "consumer_delay", "offered_items_per_s", "items_per_s",
                                          "bytes_per_s", "peak_rss", "peak_buffered_bytes", "rejections")},
        "first_pressure_budget": failure["max_buffered_bytes"] if failure else None,
        "probe_seconds": s.seconds,
        "probes": s.runs,
        "first_lap": lap,
        "notes": notes,
    }


def ask_payload_size() -> int:
    for _ in range(3):
        try:
            text = input(f"Typical payload size? [{_util.format_size(DEFAULT_PAYLOAD)}] ").strip()
        except EOFError:
            return DEFAULT_PAYLOAD
        if not text:
            return DEFAULT_PAYLOAD
        try:
            n = _util.parse_size(text)
            if n > 0:
                return n
            print("  it must be greater than zero")
        except ValueError as e:
            print(f"  {e}")
    raise UsageError("no valid payload size given")


def run(args: argparse.Namespace) -> int:
    payload = args.payload_bytes
    if payload is None:
        payload = ask_payload_size() if sys.stdin.isatty() and sys.stdout.isatty() else DEFAULT_PAYLOAD
    if round_mib(payload * PAYLOADS_PER_BUDGET) > budget_ceiling():
        raise UsageError(f"--payload-bytes {_util.format_size(payload)} is too large to tune on this machine: "
                         f"its probes would fill budgets of {PAYLOADS_PER_BUDGET} payloads "
                         f"({_util.format_size(payload * PAYLOADS_PER_BUDGET)}), over "
                         f"{_util.format_size(budget_ceiling())}")
    if args.out:
        # Where an unusable result goes is checked now, like --out itself, not
        # after minutes of probing.
        for mark in PARTIAL_MARKS:
            sibling = partial_path(args.out, mark)
            try:
                out_file_arg(sibling)
            except argparse.ArgumentTypeError as e:
                raise UsageError(f"--out {args.out}: an unusable result would go to {sibling}: {e}") from None
    seconds = max(args.duration / PROBES_PER_DURATION, 0.05)
    progress = _util.Progress(MAX_PROBES, "tune")
    with _util.Interrupt() as intr:
        _util.say(f"tempo tune: started: payload {_util.format_size(payload)}, {args.producers} producers, "
                  f"up to {MAX_PROBES} probes of {_util.format_duration(seconds)}")
        try:
            result = tune(payload, args.producers, args.duration, progress, intr)
        finally:
            progress.close()
    usable = result["healthy"] and not result["interrupted"]
    if args.out:
        # Settings no probe supported never take the place of a settings file
        # (the next soak, or load_settings, would use them): they go beside it.
        path = args.out if usable else partial_path(args.out, "interrupted" if result["interrupted"] else "unhealthy")
        to_write = dict(result)
        result["written_to"] = path
    # The report first: a file that cannot be written (a full disk) must not
    # take the result with it.
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    if args.out:
        sys.stdout.flush()
        _util.write_json(path, to_write)
    if args.out and usable:
        use = f"tempo.Dispatcher(**tempo.load_settings({json.dumps(result['written_to'])}))"
        if args.json:
            _util.say(f"tempo tune: to use these settings: {use}")
        else:
            print(f"to use these settings: {use}")
    if result["interrupted"]:
        return EXIT_INTERRUPTED
    return EXIT_OK if usable else EXIT_FAILED


PARTIAL_MARKS = ("interrupted", "unhealthy")


def partial_path(out: str, mark: str) -> str:
    """Where a result that must not be used goes: ``tempo-settings.json`` ->
    ``tempo-settings.interrupted.json`` (Ctrl-C) or ``tempo-settings.unhealthy.json``
    (no probe was healthy), in the same folder."""
    path = Path(out)
    return str(path.with_name(f"{path.stem}.{mark}{path.suffix or '.json'}"))


def print_report(r: dict[str, Any]) -> None:
    o = r["observed"]
    fs, fr, fd = _util.format_size, _util.format_rate, _util.format_duration
    lines = [
        f"Observed ({len(r['probes'])} probes of {fd(r['probe_seconds'])}, payload {fs(r['payload_bytes'])}):",
        f"  producers             {o['producers']}",
        f"  consumer delay        {fd(o['consumer_delay'])} per 8 items" if o["consumer_delay"] else
        "  consumer delay        none",
        f"  offered load          {fr(o['offered_items_per_s'])} items/s, paced" if o["offered_items_per_s"] else
        "  offered load          flat out",
        f"  items/s               {fr(o['items_per_s'])}",
        f"  bytes/s               {fs(o['bytes_per_s'])}/s",
        f"  peak RSS              {fs(o['peak_rss'])}",
        f"  peak buffered bytes   {fs(o['peak_buffered_bytes'])}",
        f"  rejections            {o['rejections']:,}",
        f"  top speed             {fr(r['top_speed']['items_per_s'])} items/s, {fs(r['top_speed']['bytes_per_s'])}/s",
        *first_lap_lines(r.get("first_lap")),
        "",
        f"{r['status'].capitalize()}{' (interrupted)' if r['interrupted'] else ''}:",
        f"  max_buffered_bytes    {r['max_buffered_bytes']:,} ({fs(r['max_buffered_bytes'])})",
        f"  max_batch_bytes       {r['max_batch_bytes']:,} ({fs(r['max_batch_bytes'])})" if r["max_batch_bytes"]
        else "  max_batch_bytes       none (0): payloads this large need no batch shaping",
        f"  interval              {r['interval']} s",
        f"  buffered items        {r['buffered_items']:,} payloads of {fs(r['payload_bytes'])}",
        f"  burst headroom        {fd(r['burst_headroom_s'])} at top speed" if r["burst_headroom_s"] else
        "  burst headroom        unknown",
    ]
    if r.get("prefault"):
        lines.append("  prefault              True: the first lap is slow without it (see first lap above)")
    lines += ["", *("note: " + n for n in r["notes"])]
    if r.get("written_to"):
        unusable = r["interrupted"] or not r["healthy"]
        lines.append(f"written to {r['written_to']}" + (" (not to be used as settings)" if unusable else ""))
    print("\n".join(lines))


def first_lap_lines(lap: dict[str, Any] | None) -> list[str]:
    if lap is None:
        return []
    d, p = lap["default"], lap["prefault"]
    line = (f"  first lap             {d['ratio']}x steady state per item "
            f"({d['lap1_us_per_item']} us against {d['steady_us_per_item']} us)")
    if p is not None:
        line += f"; with prefault=True {p['ratio']}x ({p['lap1_us_per_item']} us)"
    return [line]
