"""Telemetry events -> tempo.Pipeline -> PostgreSQL, one ``COPY`` per batch.

Producers enqueue each event as one JSON line (NDJSON). The pipeline's sink
streams every batch into a ``jsonb`` column with a single ``COPY ... FROM STDIN``
in one transaction, handing psycopg the batch's memoryviews as they are: no
per-event encoding, no per-row INSERT. If the COPY fails (the server restarted,
the connection broke), the transaction is rolled back and the pipeline retries
the batch with backoff; the sink reconnects first if its connection is gone. The COPY uses CSV format with control
characters as delimiter and quote, which ``json.dumps`` never emits (it escapes
every control character), so each line is loaded verbatim.

The table ``telemetry_events`` is dropped and recreated on every run. If no
server is reachable, the example says so and exits 0 (skipped).

    python examples/telemetry_postgres.py --dsn postgresql://user:pass@127.0.0.1:5432/db
    TEMPO_PG_DSN=postgresql://... python examples/telemetry_postgres.py --events 20000

Needs psycopg 3 (``pip install "psycopg[binary]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import psycopg

import tempo

SCHEMA = """
DROP TABLE IF EXISTS telemetry_events;
CREATE TABLE telemetry_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload     jsonb NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now()
)
"""
# One column per line, quoted by nothing: the JSON line goes in as it is.
COPY = (
    "COPY telemetry_events (payload) FROM STDIN "
    "WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')"
)


def make_event(seq: int, rng: random.Random) -> bytes:
    event = {
        "seq": seq,
        "ts": time.time(),
        "host": f"web-{rng.randrange(8):02d}",
        "type": rng.choice(["page_view", "click", "error", "heartbeat"]),
        # Non-ASCII, backslashes and quotes: all reach the jsonb column intact.
        "path": rng.choice(["/", "/cart", "/search?q=caf\u00e9", 'C:\\temp\\"x"']),
    }
    return json.dumps(event).encode() + b"\n"  # one line: COPY reads one row per line


class CopySink:
    """One COPY (and one transaction) per batch, called by the pipeline's worker."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)

    def __call__(self, batch: tempo.Batch) -> None:
        if self.conn.closed or self.conn.broken:  # a retry after a lost connection
            self.conn = psycopg.connect(self.dsn, autocommit=True)
        with self.conn.transaction(), self.conn.cursor() as cur, cur.copy(COPY) as copy:
            for item in batch:
                copy.write(item)  # the memoryview, as it is

    def close(self) -> None:
        self.conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="Telemetry -> tempo -> PostgreSQL COPY.")
    parser.add_argument("--dsn", default=os.environ.get("TEMPO_PG_DSN", ""),
                        help="libpq connection string (default: $TEMPO_PG_DSN)")
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()

    if not args.dsn:
        print("SKIPPED: no PostgreSQL DSN; pass --dsn or set TEMPO_PG_DSN")
        return 0
    try:
        with psycopg.connect(args.dsn, connect_timeout=5) as conn:
            conn.execute(SCHEMA)
    except psycopg.OperationalError as exc:
        print(f"SKIPPED: cannot reach PostgreSQL: {' '.join(str(exc).split())}")
        return 0

    rng = random.Random(1)
    sink = CopySink(args.dsn)
    try:
        with tempo.Pipeline(sink, interval=0.05, max_batch_bytes=256 * tempo.KiB,
                            max_buffered_bytes=4 * tempo.MiB,
                            retry=tempo.Retry(attempts=5, backoff=0.1, max_backoff=2.0),
                            name="telemetry-postgres") as p:  # in tempo's logs and metrics
            for seq in range(args.events):
                p.enqueue(make_event(seq, rng), timeout=5.0)
    finally:
        sink.close()
    stats = p.stats()

    with psycopg.connect(args.dsn) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT payload->>'seq') "
                           "FROM telemetry_events").fetchone()
    rows, distinct = row if row is not None else (0, 0)
    if not rows == distinct == args.events or stats.failed_batches:
        print(f"FAILED: {rows:,} rows ({distinct:,} distinct) for {args.events:,} events, "
              f"{stats.failed_batches} failed batches")
        return 1
    print(f"OK: {rows:,} events copied to PostgreSQL (batches: {stats.delivered_batches:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
