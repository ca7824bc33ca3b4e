"""Telemetry ingestion with tempo: many producers, a ``tempo.Pipeline`` into SQLite.

What this demonstrates:

- Several producer threads emit JSON telemetry events of realistic shapes and
  sizes (page views, heartbeats, errors with stack traces, trace spans; 100 B to
  2 KiB each) and hand them to a ``tempo.Pipeline`` one at a time.
- The pipeline's worker calls the sink with each batch; the sink writes it to
  SQLite with a single ``executemany`` in a single transaction: one commit per
  batch instead of one per event.
- An outage: for a while (``--outage``) every insert fails ("database is
  locked"). The pipeline retries each failed batch with exponential backoff
  and jitter; meanwhile tempo fills up and producers wait for space
  (``enqueue(..., timeout=...)``): back-pressure, nothing dropped. When the
  database is back, the retried batches go in and the backlog drains.
- A clean end: ``close()`` seals the open batch and waits until the sink has
  processed every batch, so every accepted event ends up in the table. The demo
  checks that (exit status 1 if not). A batch that ran out of attempts would go
  to ``on_failure`` (a dead letter), and the check would count it.

Batch items are read-only memoryviews into tempo's buffer, valid until the sink
returns, so the sink copies what it keeps with ``bytes(item)``.

Run it with ``make demo`` or ``tempo demo``; ``tempo demo --help`` lists the options.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import tempo

# --------------------------------------------------------------------------
# Producers: fake telemetry
# --------------------------------------------------------------------------

PAGES = ["/", "/pricing", "/docs/getting-started", "/blog/batching-at-scale",
         "/products/{}", "/cart", "/checkout", "/account/settings", "/search"]
REFERRERS = ["https://www.google.com/", "https://news.ycombinator.com/",
             "https://duckduckgo.com/", "", "https://example.com/newsletter"]
USER_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
]
SERVICES = ["api", "checkout", "search", "auth", "billing"]
ROUTES = ["GET /api/items", "GET /api/items/{id}", "POST /api/cart",
          "POST /api/checkout", "GET /api/search", "SELECT orders", "redis GET"]
ERRORS = [
    ("KeyError", "'customer_id'"),
    ("TimeoutError", "upstream billing did not answer within 2.0 s"),
    ("ValueError", "invalid literal for int() with base 10: 'n/a'"),
    ("ConnectionResetError", "[Errno 104] Connection reset by peer"),
]
FUNCTIONS = ["handle_request", "dispatch", "load_cart", "apply_discounts",
             "charge_card", "render_template", "fetch_user", "retry_call"]


def make_event(rng: random.Random, host: str) -> dict[str, Any]:
    """One telemetry event; 100 B to 2 KiB once encoded as JSON."""
    now = datetime.datetime.now(datetime.timezone.utc)
    event: dict[str, Any] = {"ts": now.isoformat(timespec="milliseconds"), "host": host}
    kind = rng.choices(["page_view", "span", "heartbeat", "error"], [40, 35, 15, 10])[0]
    if kind == "page_view":
        event.update(
            type="page_view",
            session=rng.randbytes(8).hex(),
            user_id=rng.randrange(1, 100_000),
            url=rng.choice(PAGES).format(rng.randrange(1000)),
            referrer=rng.choice(REFERRERS),
            user_agent=rng.choice(USER_AGENTS),
            viewport=[rng.choice([390, 1280, 1440, 1920]), rng.choice([844, 800, 900, 1080])],
        )
    elif kind == "span":
        event.update(
            type="span",
            trace_id=rng.randbytes(16).hex(),
            span_id=rng.randbytes(8).hex(),
            parent_id=rng.choice([None, rng.randbytes(8).hex()]),
            service=rng.choice(SERVICES),
            name=rng.choice(ROUTES),
            duration_ms=round(rng.lognormvariate(2.5, 1.0), 3),
            status=rng.choices(["ok", "error"], [95, 5])[0],
            attributes={f"attr.{i}": rng.randbytes(6).hex() for i in range(rng.randrange(12))},
        )
    elif kind == "heartbeat" and rng.random() < 0.5:  # liveness only
        event.update(type="heartbeat", uptime_s=rng.randrange(60, 10**7))
    elif kind == "heartbeat":
        event.update(
            type="heartbeat",
            uptime_s=rng.randrange(60, 10**7),
            cpu={"user": round(rng.uniform(0, 80), 1), "system": round(rng.uniform(0, 15), 1)},
            mem={"rss_mb": rng.randrange(200, 4000), "available_mb": rng.randrange(500, 16000)},
            load=[round(rng.uniform(0, 4), 2) for _ in range(3)],
        )
    else:
        exc, message = rng.choice(ERRORS)
        frames = [
            f'  File "/srv/app/{rng.choice(SERVICES)}/{fn}.py", line {rng.randrange(10, 900)}, '
            f"in {fn}\n    result = {fn}(request, **options)"
            for fn in rng.choices(FUNCTIONS, k=rng.randrange(1, 15))
        ]
        event.update(
            type="error",
            service=rng.choice(SERVICES),
            error=exc,
            message=message,
            stack="Traceback (most recent call last):\n" + "\n".join(frames) + f"\n{exc}: {message}",
        )
    return event


@dataclass
class ProducerCounts:
    generated: int = 0  # events created
    accepted: int = 0   # enqueue() succeeded
    waited: int = 0     # tempo was full: enqueue() waited for space


def produce(p: tempo.Pipeline, n: int, rate: float, index: int,
            counts: ProducerCounts, stopping: threading.Event) -> None:
    """Emit ``n`` events at ``rate`` events/s (0 = as fast as possible)."""
    rng = random.Random(index)
    host = f"web-{index + 1:02d}"
    start = time.monotonic()
    for i in range(n):
        if stopping.is_set():
            return
        if rate > 0:  # keep to the schedule: event i goes out at start + i / rate
            ahead = start + i / rate - time.monotonic()
            # A wait Ctrl-C ends at once, however slow the rate.
            if ahead > 0 and stopping.wait(ahead):
                return
        event = make_event(rng, host)
        counts.generated += 1
        event["enqueued_at"] = time.time()  # latency starts here
        payload = json.dumps(event, separators=(",", ":")).encode()
        try:
            p.enqueue(payload)  # copies the payload into tempo's buffer; never waits
        except tempo.QueueFull:
            # tempo holds max_buffered_bytes already: the sink is behind (or
            # down). Wait for space; a real service might shed load instead.
            counts.waited += 1
            if not enqueue_waiting(p, payload, stopping):
                return  # still full after a minute, stopped, or Ctrl-C: give up
        except tempo.Stopped:
            return
        counts.accepted += 1


def enqueue_waiting(p: tempo.Pipeline, payload: bytes, stopping: threading.Event, limit: float = 60.0) -> bool:
    """Wait up to ``limit`` seconds for space, in short waits so that Ctrl-C
    (``stopping``) ends it at once; True once the payload is accepted."""
    deadline = time.monotonic() + limit
    while not stopping.is_set() and time.monotonic() < deadline:
        try:
            p.enqueue(payload, timeout=0.1)
            return True
        except tempo.QueueFull:
            continue
        except tempo.Stopped:
            return False
    return False


# --------------------------------------------------------------------------
# The sink: batched inserts into SQLite, with an outage
# --------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    type        TEXT NOT NULL,   -- page_view, span, heartbeat, error
    ts          TEXT NOT NULL,   -- event timestamp, ISO 8601 UTC
    enqueued_at REAL NOT NULL,   -- time.time() when the producer enqueued it
    inserted_at REAL NOT NULL,   -- time.time() when its batch was inserted
    payload     TEXT NOT NULL    -- the raw JSON event
)
"""
INSERT = ("INSERT INTO events (type, ts, enqueued_at, inserted_at, payload) "
          "VALUES (?, ?, ?, ?, ?)")


def to_row(raw: bytes, inserted_at: float) -> tuple[str, str, float, float, str]:
    event = json.loads(raw)
    return (event["type"], event["ts"], event["enqueued_at"], inserted_at, raw.decode())


class SqliteSink:
    """The sink: one transaction, one ``executemany`` per batch.

    Between ``outage_start`` and ``outage_end`` (``time.monotonic()``) every
    call fails as a locked database would; the pipeline retries it.
    """

    def __init__(self, db_path: str, outage_start: float, outage_end: float) -> None:
        # Only the pipeline's single worker thread uses the connection.
        self.conn = sqlite3.connect(db_path, check_same_thread=False)
        self.conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable enough, cheap commits
        self.outage_start = outage_start
        self.outage_end = outage_end
        self.batches = 0
        self.rows = 0
        self.bytes = 0
        self.failed_calls = 0

    def __call__(self, batch: tempo.Batch) -> None:
        if self.outage_start <= time.monotonic() < self.outage_end:
            self.failed_calls += 1
            raise sqlite3.OperationalError("database is locked (simulated outage)")
        inserted_at = time.time()
        # Items are read-only memoryviews into tempo's buffer: copy them with
        # bytes(item). The views die with the comprehension, so none is left
        # pinning tempo's space after the sink returns.
        rows = [to_row(bytes(item), inserted_at) for item in batch]
        with self.conn:  # one transaction: commit on success, roll back on error
            self.conn.executemany(INSERT, rows)
        self.batches += 1
        self.rows += len(rows)
        self.bytes += batch.nbytes

    def close(self) -> None:
        self.conn.close()


def create_table(db_path: str) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
        conn.execute("DROP TABLE IF EXISTS events")
        conn.execute(SCHEMA)
    conn.close()


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def show_progress(producers: list[threading.Thread], counts: list[ProducerCounts],
                  sink: SqliteSink) -> None:
    """Report progress until every producer is done."""
    tty = sys.stdout.isatty()
    last_line = time.monotonic()
    line = ""
    while any(p.is_alive() for p in producers):
        time.sleep(0.1)
        now = time.monotonic()
        state = "DOWN, retrying" if sink.outage_start <= now < sink.outage_end else "up"
        line = (f"  progress: accepted {sum(c.accepted for c in counts):>9,}  "
                f"inserted {sink.rows:>9,}  database {state}")
        if tty:
            print("\r" + line.ljust(70), end="", flush=True)
        elif now - last_line >= 1.0:
            print(line, flush=True)
            last_line = now
    if tty and line:
        print()


#: The smallest --max-buffered-bytes: room for the largest event, twice.
MIN_BUFFERED_BYTES = 4 * tempo.KiB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Sizes and durations as every other subcommand takes them (cli's parsers):
    # a bare number is bytes or seconds, so "--interval 0.1" still works.
    from .cli import duration_arg, positive_duration_arg, positive_int_arg, positive_size_arg, size_arg, \
        thread_count_arg

    parser.add_argument("--db", metavar="PATH",
                        help="SQLite file; the table 'events' in it is (re)created "
                             "(default: a temporary file, removed unless --keep)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary database and print its path")
    parser.add_argument("--producers", type=thread_count_arg, default=4, metavar="N",
                        help="producer threads (default: %(default)s)")
    parser.add_argument("--events", type=positive_int_arg, default=8000, metavar="N",
                        help="events per producer (default: %(default)s)")
    parser.add_argument("--rate", type=rate_arg, default=2000, metavar="R",
                        help=f"events/s per producer, {MIN_RATE:g} to {MAX_RATE:g}; 0 = as fast as possible "
                             "(default: %(default)s)")
    parser.add_argument("--outage-at", type=duration_arg, default=0.5, metavar="DURATION",
                        help="the database goes down this long after the start "
                             "(default: 500ms)")
    parser.add_argument("--outage", type=duration_arg, default=1.0, metavar="DURATION",
                        help="and stays down this long; 0 = no outage (default: 1s)")
    parser.add_argument("--interval", type=positive_duration_arg, default=0.1, metavar="DURATION",
                        help="seal a batch this long after its first event "
                             "(default: 100ms)")
    parser.add_argument("--max-batch-bytes", type=size_arg, default=64 * tempo.KiB, metavar="SIZE",
                        help="seal a batch before it would exceed this size, "
                             "0 = by interval only (default: 64KiB)")
    parser.add_argument("--max-buffered-bytes", type=positive_size_arg, default=1 * tempo.MiB,
                        metavar="SIZE",
                        help="hard bound on bytes tempo holds; beyond it producers "
                             "wait for space (default: 1MiB)")


#: --rate's range (besides 0): a slower producer waits over 100 s between
#: events (1e-300 overflowed its wait and killed it); a faster one is flat out.
MIN_RATE, MAX_RATE = 0.01, 1e7


def rate_arg(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(rate) and rate >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number, 0 or more")
    if rate and not MIN_RATE <= rate <= MAX_RATE:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or from {MIN_RATE:g} to {MAX_RATE:g}")
    return rate


def check_args(args: argparse.Namespace) -> None:
    """What argparse cannot see alone, as a usage error (exit 2, one line), not
    a traceback or producer threads dying one by one."""
    from .cli import UsageError

    try:
        tempo.Config(interval=args.interval, max_batch_bytes=args.max_batch_bytes,
                     max_buffered_bytes=args.max_buffered_bytes)
    except tempo.ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.max_buffered_bytes < MIN_BUFFERED_BYTES:
        raise UsageError(f"--max-buffered-bytes must be at least {MIN_BUFFERED_BYTES} "
                         f"(an event takes up to 2 KiB)")
    if args.db in ("", ":memory:"):
        # SQLite's private databases: the check after the run reads the table
        # over a second connection, which would see another, empty database.
        raise UsageError(f"--db {args.db!r}: the demo needs a database file; "
                         "leave --db out for a temporary one")
    if args.db is not None:
        folder = os.path.dirname(args.db) or "."
        if not os.path.isdir(folder):
            raise UsageError(f"--db {args.db!r}: folder {folder!r} does not exist")
        if os.path.isdir(args.db):
            raise UsageError(f"--db {args.db!r} is a folder, not a file")


def run(args: argparse.Namespace) -> int:
    """Run the demo (``tempo demo``); return the exit status."""

    check_args(args)
    tmpdir = None
    db_path = args.db
    if db_path is None:
        tmpdir = tempfile.mkdtemp(prefix="tempo-demo-")
        db_path = os.path.join(tmpdir, "telemetry.db")
    try:
        return demo(args, db_path, kept=tmpdir is not None and args.keep)
    finally:
        # Also when the run ends in an error (settings this machine cannot map).
        if tmpdir is not None and not args.keep:
            shutil.rmtree(tmpdir, ignore_errors=True)


def demo(args: argparse.Namespace, db_path: str, kept: bool) -> int:
    from .cli import EXIT_INTERRUPTED, UsageError, dispatcher_memory_error

    try:
        create_table(db_path)
    except sqlite3.Error as exc:  # not writable, not a database, ...
        raise UsageError(f"--db {db_path!r}: {exc}") from None

    started = time.monotonic()
    outage_start = started + args.outage_at
    sink = SqliteSink(db_path, outage_start, outage_start + max(args.outage, 0.0))
    dead_letters: list[bytes] = []

    def on_failure(batch: tempo.Batch, exc: BaseException) -> None:
        # A batch that ran out of attempts: keep a copy (a real service would
        # write it to a spill file). The check below counts these as lost.
        dead_letters.extend(batch.tolist())

    # Enough attempts to outlast the outage: the waits are at least `backoff`
    # each and grow (with jitter) up to `max_backoff`.
    retry = tempo.Retry(attempts=30, backoff=0.05, max_backoff=0.5)
    try:
        p = tempo.Pipeline(
            sink,
            interval=args.interval,
            max_batch_bytes=args.max_batch_bytes,
            max_buffered_bytes=args.max_buffered_bytes,
            retry=retry,
            on_failure=on_failure,
        )
    except MemoryError as exc:
        sink.close()
        raise dispatcher_memory_error(exc) from None
    counts = [ProducerCounts() for _ in range(args.producers)]
    stopping = threading.Event()
    # Daemon threads: a second Ctrl-C ends the demo without waiting for them.
    producers = [
        threading.Thread(target=produce, name=f"producer-{i}", daemon=True,
                         args=(p, args.events, args.rate, i, counts[i], stopping))
        for i in range(args.producers)
    ]
    interrupted = False
    try:  # from here on, Ctrl-C finishes what was accepted
        print(f"tempo demo: {args.producers} producers x {args.events:,} events "
              f"({'as fast as possible' if args.rate <= 0 else f'{args.rate:,g}/s each'}) "
              f"-> tempo.Pipeline -> SQLite")
        if args.outage > 0:
            print(f"  the database is down from {args.outage_at:g} s to "
                  f"{args.outage_at + args.outage:g} s: the sink raises, the pipeline retries")
        sys.stdout.flush()
        for producer in producers:
            producer.start()
        show_progress(producers, counts, sink)
    except KeyboardInterrupt:
        print("\ninterrupted: finishing the events already accepted (Ctrl-C again to quit at once)", flush=True)
        interrupted = True
    except BaseException:  # a thread that would not start: stop the others
        stopping.set()
        p.stop()
        raise
    stopping.set()
    try:
        for producer in producers:
            if producer.ident is not None:
                producer.join()
        # No new events: seal the open batch, wait until the sink has processed
        # every batch (retries included), then the pipeline is finished.
        try:
            p.close(timeout=60)
        except TimeoutError:
            print("close timed out: the sink fell behind; the rest was dropped")
    except BaseException:
        # A second Ctrl-C: drop the rest at once; the command line says so in one line.
        p.stop()
        raise
    elapsed = time.monotonic() - started
    sink.close()

    with sqlite3.connect(db_path) as conn:
        rows_in_table = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        delays = [row[0] for row in conn.execute(
            "SELECT (inserted_at - enqueued_at) * 1000 FROM events ORDER BY 1")]
    conn.close()

    accepted = sum(c.accepted for c in counts)
    stats = p.stats()

    print()
    print("Summary")
    print(f"  events generated       {sum(c.generated for c in counts):>10,}")
    print(f"  accepted               {accepted:>10,}")
    print(f"  waited for space       {sum(c.waited for c in counts):>10,}   "
          f"enqueues that found tempo full and waited")
    print(f"  sink calls failed      {sink.failed_calls:>10,}   "
          f"during the outage; {stats.retries:,} retried later")
    if stats.delivered_batches:
        print(f"  batches                {stats.delivered_batches:>10,}   "
              f"avg {stats.delivered_items / stats.delivered_batches:,.1f} events, "
              f"{sink.bytes / max(sink.batches, 1) / tempo.KiB:,.1f} KiB")
    else:
        print(f"  batches                {stats.delivered_batches:>10,}")
    print(f"  dead letters           {len(dead_letters):>10,}")
    print(f"  dropped by tempo       {stats.dropped:>10,}")
    print(f"  rows in table          {rows_in_table:>10,}")
    print(f"  throughput             {rows_in_table / elapsed:>10,.0f}   events/s "
          f"over {elapsed:.2f} s")
    if delays:
        print(f"  enqueue -> insert      p50 {percentile(delays, 50):.1f} ms   "
              f"p99 {percentile(delays, 99):.1f} ms   max {delays[-1]:.1f} ms")

    if kept:
        print(f"  database kept at {db_path}")

    if accepted != rows_in_table:
        print(f"FAILED: accepted ({accepted:,}) != rows in table ({rows_in_table:,})")
        return 1
    print(f"OK: accepted == rows in table ({rows_in_table:,})")
    return EXIT_INTERRUPTED if interrupted else 0

