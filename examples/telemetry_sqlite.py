"""Telemetry events -> tempo -> SQLite, one ``executemany`` per batch.

The main thread produces JSON events; one writer thread takes them out as
batches and inserts each batch in a single transaction: one commit per batch
instead of one per event. ``enqueue(..., timeout=5.0)`` waits while tempo is full
(back-pressure) instead of failing at once. Leaving the ``with`` block shuts the
dispatcher down gracefully: every batch reaches the writer before it ends.

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
from concurrent.futures import ThreadPoolExecutor
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


def write_batches(d: tempo.Dispatcher, db_path: Path) -> int:
    """The consumer: insert each batch in one transaction; return the batch count."""
    conn = sqlite3.connect(db_path)
    batches = 0
    try:
        conn.execute("CREATE TABLE events (seq INTEGER, type TEXT, ts REAL, payload TEXT)")
        for batch in d.batches():  # ends once the dispatcher is finished
            # Items are memoryviews into tempo's buffer: copy what you keep.
            rows = [to_row(bytes(item)) for item in batch]
            with conn:  # one transaction per batch
                conn.executemany(INSERT, rows)
            batches += 1
    except BaseException:
        d.stop()  # wake the producer: its enqueue raises tempo.Stopped
        raise
    finally:
        conn.close()
    return batches


def main() -> int:
    parser = argparse.ArgumentParser(description="Telemetry -> tempo -> SQLite.")
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()

    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=1) as pool:
        db_path = Path(tmp) / "telemetry.db"
        d = tempo.Dispatcher(
            interval=0.05,  # seal a batch 50 ms after its first event at the latest
            max_batch_bytes=64 * tempo.KiB,
            max_buffered_bytes=1 * tempo.MiB,
        )
        with d:  # start() now; shutdown() on leaving the block
            writer = pool.submit(write_batches, d, db_path)
            for seq in range(args.events):
                try:
                    d.enqueue(make_event(seq, rng), timeout=5.0)
                except tempo.Stopped:
                    break  # the writer failed: writer.result() raises its error
        batches = writer.result()

        with closing(sqlite3.connect(db_path)) as conn:
            rows, distinct = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT seq) FROM events").fetchone()

    if not rows == distinct == args.events:
        print(f"FAILED: {rows:,} rows ({distinct:,} distinct) for {args.events:,} events")
        return 1
    print(f"OK: {rows:,} events written to SQLite (batches: {batches:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
