"""Events -> tempo.Pipeline -> rolling Parquet files through Arrow, queried with DuckDB.

Each batch becomes one Parquet row group with ``batch.to_arrow()``: a
``pyarrow`` ``large_binary`` array whose value buffer *is* tempo's memory and
whose offsets are the batch's item boundaries, so no event is copied into
Python objects on the way (the item-list path, ``pyarrow.array(batch.tolist())``,
costs several times more per event: docs/performance.md). A new file is
started every ``--rows-per-file`` rows; a file is complete (its footer
written) when it is closed, so readers look only at closed files. DuckDB
then queries the whole directory as one table.

The sink runs in the pipeline's one worker thread; the Arrow array pins the
batch's bytes for as long as pyarrow holds it, so nothing is read after tempo
reuses the memory.

Needs pyarrow and duckdb: ``pip install "tempo-batcher[arrow]" duckdb``.

    python examples/parquet_rolling.py --events 200000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

# pyarrow has no type information; either may be missing where mypy runs.
import duckdb  # type: ignore[import-not-found,unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped,import-not-found,unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped,import-not-found,unused-ignore]

import tempo

SCHEMA = pa.schema([("event", pa.large_binary())])


class RollingParquet:
    """The sink: one row group per batch, a new file every ``rows_per_file`` rows."""

    def __init__(self, directory: Path, rows_per_file: int) -> None:
        self.directory = directory
        self.rows_per_file = rows_per_file
        self.writer: Optional[pq.ParquetWriter] = None
        self.rows = 0
        self.files: list[Path] = []

    def __call__(self, batch: tempo.Batch) -> None:
        if self.writer is None:
            path = self.directory / f"events-{len(self.files):05d}.parquet"
            self.writer = pq.ParquetWriter(path, SCHEMA, compression="zstd")
            self.files.append(path)
        self.writer.write_table(pa.table([batch.to_arrow()], schema=SCHEMA))
        self.rows += len(batch)
        if self.rows >= self.rows_per_file:
            self.close()

    def close(self) -> None:
        """Finish the open file (its footer makes it readable)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.rows = 0


def make_event(seq: int, rng: random.Random) -> bytes:
    event = {"seq": seq, "ts": time.time(), "host": f"web-{rng.randrange(8):02d}",
             "type": rng.choice(["page_view", "click", "error", "heartbeat"]),
             "duration_ms": round(rng.lognormvariate(2.5, 1.0), 2)}
    return json.dumps(event).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description="Events -> tempo -> rolling Parquet -> DuckDB.")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rows-per-file", type=int, default=50_000)
    parser.add_argument("--max-batch-bytes", type=int, default=1 * tempo.MiB,
                        help="a batch (one row group) is sealed at this size at the latest")
    args = parser.parse_args()

    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        sink = RollingParquet(Path(tmp), args.rows_per_file)
        with tempo.Pipeline(sink, interval=0.05, max_batch_bytes=args.max_batch_bytes,
                            max_buffered_bytes=16 * tempo.MiB) as p:
            for seq in range(args.events):
                p.enqueue(make_event(seq, rng), timeout=5.0)
        sink.close()  # the pipeline is closed: no batch is in the sink any more
        stats = p.stats()

        db = duckdb.connect()
        rows, distinct, low, high = db.execute(f"""
            SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM (
                SELECT CAST(json_extract(decode(event), '$.seq') AS BIGINT) AS seq
                FROM read_parquet('{tmp}/*.parquet'))""").fetchall()[0]
        by_type = db.execute(f"""
            SELECT json_extract_string(decode(event), '$.type') AS type, count(*) AS n
            FROM read_parquet('{tmp}/*.parquet') GROUP BY type ORDER BY n DESC""").fetchall()
        db.close()
        files = len(sink.files)

    if (rows, distinct, low, high) != (args.events, args.events, 0, args.events - 1) \
            or stats.failed_batches:
        print(f"FAILED: DuckDB read {rows:,} rows ({distinct:,} distinct, {low}..{high}) "
              f"for {args.events:,} events; {stats.failed_batches} failed batches")
        return 1
    print("by type: " + ", ".join(f"{kind} {n:,}" for kind, n in by_type))
    print(f"OK: {rows:,} events in {files} Parquet files ({stats.delivered_batches:,} row "
          f"groups), all read back by DuckDB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
