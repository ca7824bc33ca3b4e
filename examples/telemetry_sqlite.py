"""Telemetry events -> tempo.Pipeline -> SQLite, one ``executemany`` per batch.

The main thread produces JSON events; the pipeline's worker calls the sink
with each batch, and the sink inserts it in a single transaction: one commit
per batch instead of one per event. ``max_batch_items`` caps a batch at 500
rows (an ``executemany`` size that keeps each transaction short).
``enqueue(..., timeout=5.0)`` waits while tempo is full (back-pressure)
instead of failing at once. A sink that raises (a locked database) is
retried with backoff. Leaving the ``with`` block closes the pipeline: every
batch has been inserted when it ends.

    python examples/telemetry_sqlite.py --events 20000
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import tempo

INSERT = "INSERT INTO events (seq, type, ts, payload) VALUES (?, ?, ?, ?)"


def make_event(seq: int, rng: random.Random) -> bytes:
    event = {
        "seq": seq,
        "ts": time.time(),
        "host": f"web-{rng.randrange(8):02d}",
        "type": rng.choice(["page_view", "click", "error", "heartbeat"]),
        "duration_ms": round(rng.lognormvariate(2.5, 1.0), 2),
    }
    return json.dumps(event).encode()


def to_row(raw: bytes) -> tuple[int, str, float, str]:
    event = json.loads(raw)
    return event["seq"], event["type"], event["ts"], raw.decode()


class SqliteSink:
    """Insert each batch in one transaction (called by the pipeline's worker)."""

    def __init__(self, db_path: Path) -> None:
        # Used by the pipeline's one worker thread only, made here.
        self.conn = sqlite3.connect(db_path, check_same_thread=False)
        self.conn.execute("CREATE TABLE events (seq INTEGER, type TEXT, ts REAL, payload TEXT)")

    def __call__(self, batch: tempo.Batch) -> None:
        # Items are memoryviews into tempo's buffer: copy what you keep.
        rows = [to_row(bytes(item)) for item in batch]
        with self.conn:  # one transaction per batch; rolled back if it raises
            self.conn.executemany(INSERT, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description="Telemetry -> tempo.Pipeline -> SQLite.")
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()

    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "telemetry.db"
        sink = SqliteSink(db_path)
        with tempo.Pipeline(
            sink,
            interval=0.05,  # seal a batch 50 ms after its first event at the latest
            max_batch_bytes=64 * tempo.KiB,
            max_batch_items=500,
            max_buffered_bytes=1 * tempo.MiB,
            retry=tempo.Retry(attempts=5, backoff=0.05, max_backoff=1.0),
            name="telemetry-sqlite",  # in tempo's log records and metrics
        ) as p:
            for seq in range(args.events):
                p.enqueue(make_event(seq, rng), timeout=5.0)
        sink.conn.close()
        stats = p.stats()

        with closing(sqlite3.connect(db_path)) as conn:
            rows, distinct = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT seq) FROM events").fetchone()

    if not rows == distinct == args.events or stats.failed_batches:
        print(f"FAILED: {rows:,} rows ({distinct:,} distinct) for {args.events:,} events, "
              f"{stats.failed_batches} failed batches")
        return 1
    print(f"OK: {rows:,} events written to SQLite (batches: {stats.delivered_batches:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
