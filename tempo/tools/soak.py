"""Sustained overload with a telemetry-shaped payload mix, to prove a set of
settings: the dispatcher stays live, delivers everything it accepted exactly
once, drains and shuts down cleanly, and keeps memory understandable.

Producer threads enqueue JSON events (page views, form inputs, clicks,
scrolls, heartbeats; 80 B to 2 KiB) as fast as they can; one consumer takes
batches and sleeps --consumer-delay per 8 items, so the producers outrun it
and meet QueueFull (they count it, back off 100 us and go on). Every event
carries its producer's id and a sequence number that advances only when the
event was accepted; the consumer checks that each producer's events arrive as
0, 1, 2, ... with no gap and no repeat.

About once a second a sample goes to DIR/soak-<timestamp>.jsonl; at the end
DIR/soak-<timestamp>-results.json gets the totals, rates, peaks, drain and
shutdown durations and an assessment (correctness, pressure, memory, drain,
overall: pass, warn or fail). Settings come from --settings FILE, else from
./tempo-settings.json (written by `tempo tune`) if there is one, else safe
defaults; the command says which. Exit code 0 unless the assessment failed
(1); 130 when interrupted (results are still written, marked interrupted).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import tempo
from tempo import KiB, MiB, _settings

from . import _util
from .cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_WRITE, MAX_THREADS, UsageError, add_json_flag, \
    dispatcher_memory_error, duration_arg, positive_duration_arg, require, thread_count_arg

DEFAULT_SETTINGS_FILE = "tempo-settings.json"
SAFE_DEFAULTS = {"interval": 0.25, "max_batch_bytes": 256 * KiB, "max_buffered_bytes": 32 * MiB}
DEFAULT_CONSUMER_DELAY = 200e-6
FULL_BACKOFF = 100e-6  # a producer's pause after QueueFull: overload without burning the machine
SAMPLE_PERIOD = 1.0
STALL_FAIL_S = 5.0  # the consumer made no progress this long while there was a backlog: not live
RSS_ALLOWANCE = 64 * MiB  # interpreter, threads, event pool: growth beyond the bound we still call normal
# The header every event starts with: fixed width, so the consumer reads it
# without parsing JSON; space-padded numbers keep the event valid JSON.
HEADER = b'{"p":%4d,"n":%12d,'
HEADER_LEN = len(HEADER % (0, 0))
STATUS_ORDER = {"pass": 0, "warn": 1, "fail": 2}


MAX_PRODUCERS = MAX_THREADS  # the header's producer id has 4 digits
assert MAX_PRODUCERS <= 9999
#: The longest consumer sleep per 8 items: a slower consumer proves nothing more
#: (and a day per 8 items overflowed time.sleep in the consumer thread).
MAX_CONSUMER_DELAY = 1.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=positive_duration_arg, default=300.0, help="how long to drive load (default 5m)")
    p.add_argument("--settings", metavar="FILE",
                   help=f"settings JSON (as `tempo tune` writes); default ./{DEFAULT_SETTINGS_FILE} if present, "
                   "else safe defaults")
    p.add_argument("--producers", type=thread_count_arg, default=4,
                   help=f"producer threads (default 4, at most {MAX_PRODUCERS})")
    p.add_argument("--consumer-delay", type=duration_arg, default=None,
                   help="consumer sleep per 8 items of a batch, at most 1s (default: the settings' consumer_delay, "
                   "else 200us)")
    p.add_argument("--drain-timeout", type=positive_duration_arg, default=30.0,
                   help="bound on the final drain (default 30s); past it the drain fails")
    p.add_argument("--out", default=".", metavar="DIR", help="where the files go (default: the current directory)")
    p.add_argument("--plot", action="store_true", help="also write DIR/soak-<timestamp>.png (needs matplotlib)")
    add_json_flag(p)


# ---------------------------------------------------------------------------
# Settings


def load_settings(path: str) -> dict[str, Any]:
    """The settings in ``path``, validated; ``UsageError`` saying what is wrong.

    Read as ``tempo.load_settings`` reads them (one reader, one set of
    rules), with the soak's own keys beside them (``consumer_delay``, ...).
    """
    try:
        raw = _settings._read_document(path)
        config = tempo.Config(**_settings._settings_of(raw, path))
    except FileNotFoundError:
        raise UsageError(f"settings file {path} not found") from None
    except OSError as e:
        raise UsageError(f"settings file {path} cannot be read: {e}") from None
    except tempo.ConfigError as e:
        raise UsageError(str(e).removeprefix("tempo: ")) from None
    if not math.isfinite(config.interval):
        raise UsageError(f"settings file {path}: interval must be a finite number of seconds, "
                         f"not {config.interval!r}")
    delay = raw.get("consumer_delay")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0
                              or not math.isfinite(delay)):
        raise UsageError(f"settings file {path}: consumer_delay must be a number of seconds >= 0, not {delay!r}")
    out = {"interval": config.interval, "max_batch_bytes": config.max_batch_bytes,
           "max_buffered_bytes": config.max_buffered_bytes}
    if delay is not None:
        out["consumer_delay"] = float(delay)
    for key in ("status", "payload_bytes", "interrupted"):
        if key in raw:
            out[key] = raw[key]
    return out


def resolve_settings(arg: str | None) -> tuple[dict[str, Any], str]:
    if arg:
        return load_settings(arg), f"settings from {arg}"
    if os.path.exists(DEFAULT_SETTINGS_FILE):
        s = load_settings(DEFAULT_SETTINGS_FILE)
        status = s.get("status", "unknown status")
        return s, f"settings from ./{DEFAULT_SETTINGS_FILE} (the last `tempo tune` here; {status})"
    return dict(SAFE_DEFAULTS), "safe defaults (no --settings and no ./tempo-settings.json; run `tempo tune` first)"


# ---------------------------------------------------------------------------
# Telemetry


PAGES = ["/", "/pricing", "/docs/getting-started", "/blog/batching-at-scale", "/products/%d", "/cart",
         "/checkout", "/account/settings", "/search?q=%s"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"]
WORDS = "the quick brown fox jumps over a lazy dog while batching bytes never loses any event".split()
KINDS = (("page_view", 20), ("form_input", 10), ("click", 30), ("scroll", 25), ("heartbeat", 15))


def make_event(rng: random.Random, kind: str) -> dict[str, Any]:
    session = "%016x" % rng.getrandbits(64)
    ts = 1_760_000_000_000 + rng.randrange(10**9)
    if kind == "page_view":
        page = rng.choice(PAGES)
        page = page % (rng.randrange(10_000) if "%d" in page else rng.choice(WORDS)) if "%" in page else page
        return {"type": kind, "ts": ts, "session": session, "url": "https://shop.example.com" + page,
                "referrer": rng.choice(["https://www.google.com/", "https://news.ycombinator.com/", ""]),
                "user_agent": rng.choice(AGENTS), "viewport": [rng.choice([390, 1280, 1440, 1920]),
                                                               rng.choice([844, 720, 900, 1080])],
                "load_ms": round(rng.lognormvariate(5.5, 0.6), 1)}
    if kind == "form_input":
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 300)))
        return {"type": kind, "ts": ts, "session": session, "form": rng.choice(["signup", "checkout", "feedback"]),
                "field": rng.choice(["email", "address", "comment", "name"]), "value": text[:1900],
                "keystrokes": rng.randint(1, 400)}
    if kind == "click":
        return {"type": kind, "ts": ts, "session": session,
                "target": rng.choice(["button#buy", "a.nav-link", "div.card > img", "button.add-to-cart"]),
                "x": rng.randrange(1920), "y": rng.randrange(1080)}
    if kind == "scroll":
        return {"type": kind, "ts": ts, "session": session, "depth": round(rng.random(), 3),
                "velocity": round(rng.gauss(0, 800), 1)}
    return {"type": kind, "ts": ts, "session": session, "visible": rng.random() < 0.8}


def event_pool(seed: int, count: int = 1024) -> list[bytes]:
    """Event bodies after the header (each starts after the opening brace)."""
    rng = random.Random(seed)
    kinds = [k for k, w in KINDS for _ in range(w)]
    return [json.dumps(make_event(rng, rng.choice(kinds)), separators=(",", ":")).encode()[1:]
            for _ in range(count)]


def event_pools(producers: int) -> list[list[bytes]]:
    return [event_pool(1000 + i) for i in range(producers)]


# ---------------------------------------------------------------------------
# The run


class Soak:
    def __init__(self, settings: dict[str, Any], producers: int, consumer_delay: float,
                 pools: list[list[bytes]] | None = None) -> None:
        self.settings = settings
        self.nprod = producers
        self.delay = consumer_delay
        self.d = tempo.Dispatcher(interval=settings["interval"], max_buffered_bytes=settings["max_buffered_bytes"],
                                  max_batch_bytes=settings["max_batch_bytes"])
        self.stop = threading.Event()
        self.accepted = [0] * producers  # per producer: its next sequence number
        self.rejected = [0] * producers
        self.next_seq = [0] * producers  # the consumer's view
        self.delivered = 0
        self.delivered_bytes = 0
        self.issues: list[str] = []
        self.issue_count = 0
        self.errors: list[str] = []
        self.pools = pools if pools is not None else event_pools(producers)

    def produce(self, pid: int) -> None:
        pool, enqueue, Full, sleep = self.pools[pid], self.d.enqueue, tempo.QueueFull, time.sleep
        n, k, rejected, size = 0, 0, 0, len(pool)
        try:
            while not self.stop.is_set():
                payload = HEADER % (pid, n) + pool[k]
                try:
                    enqueue(payload)
                except Full:
                    rejected += 1
                    self.rejected[pid] = rejected
                    sleep(FULL_BACKOFF)
                    continue
                n += 1
                self.accepted[pid] = n
                k = k + 1 if k + 1 < size else 0
        except tempo.TempoError as e:
            if not self.stop.is_set():  # after the stop, an aborted drain's stop() may answer Stopped
                self.errors.append(f"producer {pid}: {type(e).__name__}: {e}")

    def consume(self) -> None:
        next_seq, sleep, delay, nprod = self.next_seq, time.sleep, self.delay, self.nprod
        for batch in self.d.batches():
            for item in batch:
                head = bytes(item[:HEADER_LEN])
                try:
                    pid, seq = int(head[5:9]), int(head[14:26])
                except ValueError:
                    self.issue(f"an item does not start with an event header: {head!r}")
                    continue
                if not 0 <= pid < nprod:
                    self.issue(f"an item names producer {pid}, which does not exist")
                elif seq != next_seq[pid]:
                    if seq < next_seq[pid]:
                        self.issue(f"producer {pid}: seq {seq} delivered again (expected {next_seq[pid]})")
                    else:
                        self.issue(f"producer {pid}: seq {next_seq[pid]}-{seq - 1} missing (got {seq})")
                        next_seq[pid] = seq + 1
                else:
                    next_seq[pid] = seq + 1
            del item
            n, nbytes = len(batch), batch.nbytes
            batch.release()
            if delay:
                sleep(delay * ((n + 7) // 8))
            self.delivered += n
            self.delivered_bytes += nbytes

    def issue(self, text: str) -> None:
        self.issue_count += 1
        if len(self.issues) < 20:
            self.issues.append(text)


def sample(soak: Soak, t: float, prev: dict[str, Any] | None, rss_base: int) -> dict[str, Any]:
    s = soak.d.stats()
    mem = _util.read_memory()
    cur = {
        "t": round(t, 3),
        "accepted": s.enqueued,
        "rejected": s.rejected_full,
        "delivered": soak.delivered,
        "batches": s.batches,
        "backlog_bytes": s.buffered_bytes,
        "delivered_bytes": soak.delivered_bytes,
        "rss": mem["rss"],
        "rss_growth": mem["rss"] - rss_base,
        "threads": threading.active_count(),
    }
    dt = t - prev["t"] if prev else t
    for key in ("accepted", "rejected", "delivered", "delivered_bytes"):
        base = prev[key] if prev else 0
        cur[f"{key}_per_s"] = round((cur[key] - base) / dt, 1) if dt > 0 else 0.0
    return cur


def run(args: argparse.Namespace) -> int:
    if args.plot:
        # pyplot, not just matplotlib: a matplotlib without a usable pyplot
        # failed only after the run.
        require("matplotlib", "plot", "--plot")
        require("matplotlib.pyplot", "plot", "--plot")
    settings, source = resolve_settings(args.settings)
    delay = args.consumer_delay
    if delay is None:
        delay = settings.get("consumer_delay", DEFAULT_CONSUMER_DELAY)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_CONSUMER_DELAY:
            raise UsageError(f"{source}: consumer_delay must be 0 to {MAX_CONSUMER_DELAY:g} seconds, not {delay!r}")
    elif delay > MAX_CONSUMER_DELAY:
        raise UsageError(f"--consumer-delay {_util.format_duration(delay)} is over {MAX_CONSUMER_DELAY:g}s")
    pools = event_pools(args.producers)
    largest = HEADER_LEN + max(len(e) for pool in pools for e in pool)
    if largest > settings["max_buffered_bytes"]:
        raise UsageError(f"max_buffered_bytes {settings['max_buffered_bytes']:,} is smaller than the soak's largest "
                         f"event ({largest:,} bytes): such settings cannot hold one")
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output folder {out_dir}: {e}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {out_dir} is not writable")
    rss_base = _util.read_memory()["rss"]
    try:
        soak = Soak(settings, args.producers, delay, pools)
    except MemoryError as e:
        raise dispatcher_memory_error(e) from None
    # Only now: a run refused above leaves no empty samples file behind.
    stamp = reserve_stamp(out_dir)
    samples_path = out_dir / f"soak-{stamp}.jsonl"
    results_path = out_dir / f"soak-{stamp}-results.json"
    plot_path = out_dir / f"soak-{stamp}.png"
    _util.say(f"tempo soak: using {source}")
    progress = _util.Progress(args.duration, "soak")
    producers = [threading.Thread(target=soak.produce, args=(i,), name=f"soak-producer-{i}", daemon=True)
                 for i in range(args.producers)]
    consumer = threading.Thread(target=soak.consume, name="soak-consumer", daemon=True)
    samples: list[dict[str, Any]] = []
    with _util.Interrupt() as intr:
        soak.d.start()
        consumer.start()
        t0 = time.monotonic()
        for t in producers:
            t.start()
        _util.say(f"tempo soak: started: {_util.format_duration(args.duration)}, {args.producers} producers, "
                  f"consumer delay {_util.format_duration(delay)} per 8 items, interval {settings['interval']} s, "
                  f"max_batch_bytes {_util.format_size(settings['max_batch_bytes'])}, "
                  f"max_buffered_bytes {_util.format_size(settings['max_buffered_bytes'])}; "
                  f"samples to {samples_path}")
        next_t = SAMPLE_PERIOD
        write_warned = False
        t_stop = t_drain = elapsed = None
        drain_error = None
        # A second Ctrl-C raises KeyboardInterrupt wherever the main thread is
        # (the load loop, the producers' join, the drain): it aborts the drain,
        # never the report. What is left is dropped (counted) and the results
        # are still written.
        try:
            while not intr.requested:
                now = time.monotonic() - t0
                if now >= args.duration:
                    break
                _util.wait_or_interrupt(min(next_t, args.duration) - now, lambda: intr.requested)
                now = time.monotonic() - t0
                samples.append(sample(soak, now, samples[-1] if samples else None, rss_base))
                try:
                    _util.write_atomic(samples_path, "".join(json.dumps(x) + "\n" for x in samples))
                except _util.WriteFailed as e:
                    # A full disk does not end the run: the samples are kept and
                    # written with the results (which report a failure again).
                    if not write_warned:
                        _util.say(f"tempo soak: warning: {e}; trying again at the end")
                        write_warned = True
                x = samples[-1]
                progress.update(now, f"in {_util.format_rate(x['accepted_per_s'])}/s  out "
                                     f"{_util.format_rate(x['delivered_per_s'])}/s  "
                                     f"full {_util.format_rate(x['rejected_per_s'])}/s"
                                     f"  backlog {_util.format_size(x['backlog_bytes'])}  "
                                     f"rss {_util.format_size(x['rss'])}")
                next_t = now + SAMPLE_PERIOD
            progress.close()
            elapsed = time.monotonic() - t0
            if intr.requested:
                _util.say("tempo soak: interrupted; draining and writing what was gathered (Ctrl-C again to abort)")

            # The end: producers stop, then a bounded graceful shutdown hands every
            # accepted event to the consumer.
            t_stop = time.monotonic()
            soak.stop.set()
            for t in producers:
                t.join()
            t_drain = time.monotonic()
            soak.d.shutdown(timeout=args.drain_timeout)
        except (TimeoutError, tempo.Stopped) as e:
            drain_error = f"{type(e).__name__}: {e}"
        except KeyboardInterrupt:
            intr.requested = True
            progress.close()
            soak.stop.set()
            soak.d.stop()
            for t in producers:
                t.join()
            drain_error = "aborted by a second Ctrl-C"
            _util.say("tempo soak: drain aborted; writing the results (Ctrl-C again to quit at once)")
        interrupted = intr.requested
        now = time.monotonic()
        elapsed = now - t0 if elapsed is None else elapsed
        t_stop = t_stop or now
        t_drain = t_drain or now
        drain_s = time.monotonic() - t_drain
        consumer.join(args.drain_timeout + 10)
        shutdown_s = time.monotonic() - t_stop
    final = sample(soak, time.monotonic() - t0, samples[-1] if samples else None, rss_base)
    final["final"] = True
    samples.append(final)

    stats = soak.d.stats()
    result = results(args, soak, settings, source, samples, stats, elapsed, drain_s, shutdown_s, drain_error,
                     consumer.is_alive(), interrupted, rss_base)
    result["files"] = {"samples": str(samples_path), "results": str(results_path)}
    if args.plot:
        result["files"]["plot"] = str(plot_path)
    # The report first, then the files, the plot last: a full disk or a
    # plotting error loses nothing that could be printed or written before it.
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    sys.stdout.flush()
    _util.write_atomic(samples_path, "".join(json.dumps(x) + "\n" for x in samples))
    _util.write_json(results_path, result)
    if args.plot:  # pyplot was found before the run
        try:
            write_plot(samples, result, plot_path)
        except _util.WriteFailed:
            raise
        except Exception as e:  # noqa: BLE001 - matplotlib's own failure: the results are written already
            _util.say(f"tempo soak: error: cannot draw {plot_path}: {type(e).__name__}: {e}")
            return EXIT_WRITE
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result["assessment"]["overall"]["status"] == "fail" else EXIT_OK


def reserve_stamp(out_dir: Path) -> str:
    """The start time for this run's file names, made unique in ``out_dir``:
    a soak started in the same second (a script running several) gets
    ``-2``, ``-3``... instead of overwriting. Its samples file is created
    (empty) at once, so two processes cannot pick the same name."""
    base = _util.timestamp()
    for n in range(1, 10_000):
        stamp = base if n == 1 else f"{base}-{n}"
        try:
            fd = os.open(out_dir / f"soak-{stamp}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise UsageError(f"cannot write to output folder {out_dir}: {e}") from None
        os.close(fd)
        return stamp
    raise UsageError(f"output folder {out_dir} already holds 10000 soaks from this second")


def spread(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    vals = [s[key] for s in samples if not s.get("final")]
    if not vals:
        return {"min": None, "avg": None, "max": None}
    return {"min": min(vals), "avg": round(sum(vals) / len(vals), 1), "max": max(vals)}


def results(args: argparse.Namespace, soak: Soak, settings: dict[str, Any], source: str,
            samples: list[dict[str, Any]], stats: tempo.Stats, elapsed: float, drain_s: float, shutdown_s: float,
            drain_error: str | None, consumer_alive: bool, interrupted: bool, rss_base: int) -> dict[str, Any]:
    accepted, delivered = stats.enqueued, soak.delivered
    producer_accepted = sum(soak.accepted)
    running = [s for s in samples if not s.get("final")]
    peak_backlog = max((s["backlog_bytes"] for s in samples), default=0)
    peak_rss = max((s["rss"] for s in samples), default=0)
    bound = settings["max_buffered_bytes"]
    totals = {"accepted": accepted, "rejected": stats.rejected_full, "delivered": delivered, "batches": stats.batches,
              "dropped": stats.dropped, "accepted_bytes": stats.enqueued_bytes, "delivered_bytes": soak.delivered_bytes}
    a: dict[str, Any] = {}

    # Correctness: exactly once by sequence numbers, then the counts agree.
    notes, status = [], "pass"
    missing_tail = [(pid, soak.next_seq[pid], soak.accepted[pid]) for pid in range(soak.nprod)
                    if soak.next_seq[pid] != soak.accepted[pid]]
    # A stop() (an aborted drain) drops the newest events: each producer's
    # tail, counted in `dropped`. Those are accounted for; any other gap is a loss.
    dropped = stats.dropped if drain_error == "aborted by a second Ctrl-C" else 0
    tail = sum(acc - got for pid, got, acc in missing_tail)
    if dropped and tail == dropped and delivered + dropped == accepted and not soak.issue_count:
        notes.append(f"{dropped:,} accepted events dropped when the drain was aborted: each producer's newest, "
                     "as stop() drops them")
        missing_tail, accepted_expected = [], delivered + dropped
    else:
        accepted_expected = delivered
    for pid, got, acc in missing_tail[:10]:
        notes.append(f"producer {pid}: accepted {acc} events, the consumer saw up to seq {got - 1}")
    if soak.issue_count or missing_tail or accepted_expected != accepted or producer_accepted != accepted \
            or soak.errors:
        status = "fail"
        notes += soak.issues + soak.errors
        if soak.issue_count > len(soak.issues):
            notes.append(f"... {soak.issue_count - len(soak.issues)} more sequence issues")
        notes.append(f"accepted {accepted:,} (producers counted {producer_accepted:,}), delivered {delivered:,}")
    else:
        notes.append(f"all {delivered:,} {'delivered' if dropped else 'accepted'} events delivered exactly once, "
                     "in order per producer (checked by sequence number)")
    a["correctness"] = {"status": status, "notes": notes}

    # Pressure: the bound was met (overload) and the consumer stayed live.
    notes, status = [], "pass"
    attempts = accepted + stats.rejected_full
    stall = longest_stall(running)
    if stats.rejected_full == 0:
        status = "warn"
        notes.append("no QueueFull seen: the producers never outran the consumer, so the bound was not exercised "
                     "(raise --consumer-delay or --producers)")
    else:
        notes.append(f"sustained overload: {stats.rejected_full / attempts:.1%} of enqueue attempts met QueueFull")
    if stall >= STALL_FAIL_S:
        status = "fail"
        notes.append(f"the consumer made no progress for {stall:.0f} s while events were buffered")
    elif stall > 0:
        status = max(status, "warn", key=STATUS_ORDER.__getitem__)
        notes.append(f"the consumer made no progress for {stall:.0f} s once (machine stall?)")
    else:
        notes.append("the consumer made progress in every sample: live")
    a["pressure"] = {"status": status, "notes": notes}

    # Memory: the backlog stays within the bound; RSS growth is the bound plus a
    # constant and levels off.
    notes, status = [], "pass"
    if peak_backlog > bound:
        status = "fail"
        notes.append(f"backlog reached {peak_backlog:,} bytes, over max_buffered_bytes {bound:,}")
    else:
        notes.append(f"peak backlog {_util.format_size(peak_backlog)} of {_util.format_size(bound)} "
                     f"({peak_backlog / bound:.0%})")
    growth = peak_rss - rss_base
    if growth > bound + RSS_ALLOWANCE:
        status = max(status, "warn", key=STATUS_ORDER.__getitem__)
        notes.append(f"peak RSS grew {_util.format_size(growth)}, more than the bound plus "
                     f"{_util.format_size(RSS_ALLOWANCE)}")
    else:
        notes.append(f"peak RSS growth {_util.format_size(growth)} (bound {_util.format_size(bound)} "
                     f"+ {_util.format_size(RSS_ALLOWANCE)} allowed)")
    trend = rss_trend(running)
    if trend is None:
        notes.append("too few samples to judge an RSS trend (needs 8)")
    elif trend > max(8 * MiB, 0.1 * bound):
        status = max(status, "warn", key=STATUS_ORDER.__getitem__)
        notes.append(f"RSS still rising in the last quarter of the run (+{_util.format_size(trend)} "
                     "over the second quarter): look for a leak")
    else:
        notes.append(f"RSS level in the second half (change {_util.format_size(trend)} between quarters)")
    a["memory"] = {"status": status, "notes": notes}

    # Drain: a bounded graceful shutdown delivered everything.
    notes, status = [], "pass"
    if drain_error or stats.dropped or consumer_alive:
        status = "fail"
        if drain_error == "aborted by a second Ctrl-C":
            notes.append(f"the drain was {drain_error}")
        elif drain_error:
            notes.append(f"shutdown did not drain within {args.drain_timeout:g} s: {drain_error}")
        if stats.dropped:
            notes.append(f"{stats.dropped:,} events dropped")
        if consumer_alive:
            notes.append("the consumer did not finish after the shutdown")
    else:
        notes.append(f"drained in {_util.format_duration(drain_s)}, all threads ended "
                     f"{_util.format_duration(shutdown_s)} after the stop; nothing dropped")
    a["drain"] = {"status": status, "notes": notes}

    worst = max((s["status"] for s in a.values()), key=STATUS_ORDER.__getitem__)
    notes = [f"{name}: {s['status']}" for name, s in a.items()]
    if interrupted:
        notes.append(f"interrupted after {_util.format_duration(elapsed)} of {_util.format_duration(args.duration)}")
    a["overall"] = {"status": worst, "notes": notes}
    return {
        "tool": "soak",
        "interrupted": interrupted,
        "duration_s": round(elapsed, 3),
        "requested_duration_s": args.duration,
        "settings": {k: settings[k] for k in ("interval", "max_batch_bytes", "max_buffered_bytes")},
        "settings_source": source,
        "producers": soak.nprod,
        "consumer_delay": soak.delay,
        "totals": totals,
        "rates": {"accepted_per_s": spread(running, "accepted_per_s"),
                  "delivered_per_s": spread(running, "delivered_per_s"),
                  "rejected_per_s": spread(running, "rejected_per_s"),
                  "delivered_bytes_per_s": spread(running, "delivered_bytes_per_s")},
        "peak_backlog_bytes": peak_backlog,
        "peak_rss": peak_rss,
        "rss_at_start": rss_base,
        "drain_s": round(drain_s, 4),
        "shutdown_s": round(shutdown_s, 4),
        "samples": len(samples),
        "assessment": a,
        "machine": _util.machine_info(),
    }


def longest_stall(samples: list[dict[str, Any]]) -> float:
    """Longest run of seconds in which nothing was delivered while a backlog waited."""
    longest = run = 0.0
    prev_t = 0.0
    for s in samples:
        dt = s["t"] - prev_t
        prev_t = s["t"]
        if s["delivered_per_s"] == 0 and s["backlog_bytes"] > 0:
            run += dt
            longest = max(longest, run)
        else:
            run = 0.0
    return longest


def rss_trend(samples: list[dict[str, Any]]) -> float | None:
    """Mean RSS of the last quarter minus that of the second quarter (warm-up excluded)."""
    n = len(samples)
    if n < 8:
        return None
    q = n // 4
    second: list[float] = [s["rss"] for s in samples[q : 2 * q]]
    last: list[float] = [s["rss"] for s in samples[n - q :]]
    return sum(last) / len(last) - sum(second) / len(second)


def write_plot(samples: list[dict[str, Any]], result: dict[str, Any], path: Path) -> None:
    # matplotlib is the optional plot extra, absent where the tools are
    # type-checked; where it is installed (typed) the ignores are unused, not errors.
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    run = [s for s in samples if not s.get("final")] or samples
    t = [s["t"] for s in run]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax1.plot(t, [s["accepted_per_s"] for s in run], label="accepted/s")
    ax1.plot(t, [s["delivered_per_s"] for s in run], label="delivered/s")
    ax1.plot(t, [s["rejected_per_s"] for s in run], label="QueueFull/s", alpha=0.7)
    ax1.set_ylabel("events per second")
    ax1.legend(loc="upper right", fontsize=8)
    bound = result["settings"]["max_buffered_bytes"]
    ax2.plot(t, [s["backlog_bytes"] / MiB for s in run], label="backlog (owned bytes)")
    ax2.axhline(bound / MiB, color="red", linestyle="--", label="max_buffered_bytes")
    ax2.set_ylabel("MiB")
    ax2.legend(loc="lower right", fontsize=8)
    ax3.plot(t, [s["rss"] / MiB for s in run], label="RSS")
    ref = (result["rss_at_start"] + bound) / MiB
    ax3.axhline(ref, color="gray", linestyle="--", label="RSS at start + max_buffered_bytes")
    ax3.set_ylabel("MiB")
    ax3.legend(loc="lower right", fontsize=8)
    ax3.set_xlabel("seconds")
    # From zero, with room above the bound: a few KiB of drift must not look like a cliff.
    ax1.set_ylim(bottom=0)
    ax2.set_ylim(0, bound / MiB * 1.15)
    ax3.set_ylim(0, max(ref, max(s["rss"] for s in run) / MiB) * 1.15)
    s = result["settings"]
    fig.suptitle(f"tempo soak: {result['producers']} producers, consumer delay "
                 f"{_util.format_duration(result['consumer_delay'])}/8 items, interval {s['interval']} s, "
                 f"batch {_util.format_size(s['max_batch_bytes'])}, bound {_util.format_size(bound)}: "
                 f"{result['assessment']['overall']['status']}", fontsize=9)
    fig.tight_layout()
    _util.save_figure(fig, path)
    plt.close(fig)


def print_report(r: dict[str, Any]) -> None:
    fs, fr, fd = _util.format_size, _util.format_rate, _util.format_duration
    t = r["totals"]
    rates = r["rates"]

    def mm(key: str) -> str:
        x = rates[key]
        if x["avg"] is None:
            return "-"
        return f"min {fr(x['min'])}  avg {fr(x['avg'])}  max {fr(x['max'])}"

    lines = [
        f"soak{' (interrupted)' if r['interrupted'] else ''}: {fd(r['duration_s'])}, {r['settings_source']}",
        f"  accepted   {t['accepted']:,}   rejected (QueueFull) {t['rejected']:,}   delivered {t['delivered']:,}"
        f"   batches {t['batches']:,}",
        f"  accepted/s   {mm('accepted_per_s')}",
        f"  delivered/s  {mm('delivered_per_s')}",
        f"  QueueFull/s  {mm('rejected_per_s')}",
        f"  peak backlog {fs(r['peak_backlog_bytes'])} of {fs(r['settings']['max_buffered_bytes'])}   "
        f"peak RSS {fs(r['peak_rss'])} (from {fs(r['rss_at_start'])})",
        f"  drain {fd(r['drain_s'])}   shutdown {fd(r['shutdown_s'])}",
        "assessment:",
    ]
    for name, sec in r["assessment"].items():
        lines.append(f"  {name:<12} {sec['status'].upper()}")
        if name != "overall":
            lines += [f"      {n}" for n in sec["notes"]]
    for kind, path in r["files"].items():
        lines.append(f"{kind}: {path}")
    print("\n".join(lines))
    sys.stdout.flush()
