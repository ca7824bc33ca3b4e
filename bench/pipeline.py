"""tempo.Pipeline with a no-op sink against a hand-written consumer thread, side by side.

    .venv/bin/python bench/pipeline.py                # W1 at 256 B, median of 5 runs each
    .venv/bin/python bench/pipeline.py --quick        # a smaller run (about 10 s)

What it measures
----------------
``compare.py``'s workload W1 (one producer thread enqueuing pre-built ``bytes``
payloads, one consumer counting ``len(batch)`` and ``batch.nbytes`` of every
batch; ``interval=1 s``, ``max_batch_bytes=256*S``, ``max_buffered_bytes=64 MiB``),
with the same producer loop, warm-up and timing (``compare.timed_run``), for
two consumers:

- ``handwritten``: ``compare.py``'s own tempo consumer, a thread looping over
  ``d.get_batch(0.2)``, calling the counting function, then
  ``batch.release()``;
- ``pipeline``: ``tempo.Pipeline(count, ...)`` with one worker, the counting
  function as its sink, and the producer calling ``p.enqueue``.

The target (issue 9): the pipeline within 10 % of the hand-written consumer,
i.e. ``pipeline / handwritten >= 0.90`` in items/s. Each run is a fresh
process; the two alternate, so machine noise hits both alike; the medians and
their ratio are reported, with ``cpu_ns_per_item`` (process CPU time per
payload, often the steadier figure on a shared machine).

Output: a table on stderr and one JSON line (prefix ``PIPELINE_JSON``) on
stdout, also appended to ``bench/results/pipeline.jsonl`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for _p in (str(BENCH_DIR), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import compare  # noqa: E402

JSON_PREFIX = "PIPELINE_JSON "
CASE_PREFIX = "PIPELINE_CASE "
IMPLS = ("handwritten", "pipeline")


class PipelineImpl:
    """``compare.py``'s implementation interface, with a Pipeline as the consumer."""

    name = "pipeline"
    releases = True
    needs_copy = False

    def __init__(self, size: int, shape: compare.Shape, backpressure: str) -> None:
        import tempo

        self.tempo = tempo
        self.shape = shape
        self.backpressure = backpressure
        self.Full = tempo.QueueFull
        self.enqueue_blocking = None
        self.p = None

    counter = compare.TempoImpl.counter

    def start_consumer(self, handle, done):
        # The pipeline is the consumer: its worker calls the counting sink.
        s = self.shape
        self.p = self.tempo.Pipeline(handle, interval=s.interval,
                                     max_batch_bytes=s.max_batch_bytes,
                                     max_buffered_bytes=s.max_buffered_bytes)
        self.enqueue = self.p.enqueue
        if self.backpressure == "native":
            self.enqueue_blocking = self.p.enqueue
        return None

    def close(self) -> None:
        self.p.stop()


def run_case(impl_name: str, size: int, items: int, warm_max_s: float) -> dict:
    shape = compare.default_shape(size)
    if impl_name == "pipeline":
        impl = PipelineImpl(size, shape, "native")
    else:
        impl = compare.TempoImpl(size, shape, "native")
    pool = compare.make_pool(size)
    sink = compare.Sink()
    consumer = impl.start_consumer(impl.counter(sink), sink.done)
    try:
        figures = compare.timed_run(impl, sink, pool, 1, items, size,
                                    compare.warmup_for(size, items), warm_max_s)
    finally:
        impl.close()
        if consumer is not None:
            consumer.join(5)
    return {"impl": impl_name, "size": size, "workload": "W1", **figures}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1/16 of the payloads, short warm-up")
    ap.add_argument("--out", default=str(compare.RESULTS_DIR / "pipeline.jsonl"))
    ap.add_argument("--case", choices=IMPLS, help=argparse.SUPPRESS)  # internal: one run
    ap.add_argument("--items", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--warmup-max-s", type=float, default=compare.WARMUP_MAX_S,
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.case:
        result = run_case(args.case, args.size, args.items, args.warmup_max_s)
        print(CASE_PREFIX + json.dumps(result), flush=True)
        return 0

    items = compare.items_for(args.size, args.quick)
    runs: dict[str, list[dict]] = {name: [] for name in IMPLS}
    for r in range(args.repeat):
        for name in IMPLS:  # alternating: noise hits both alike
            cmd = [sys.executable, str(Path(__file__).resolve()), "--case", name, "--size", str(args.size),
                   "--items", str(items)]
            if args.quick:
                cmd += ["--warmup-max-s", "0.1"]
            result = compare.run_json_child(cmd, CASE_PREFIX, 600)
            if "error" in result:
                compare.log(f"{name} run {r + 1}: {result['error']}")
                return 1
            runs[name].append(result)
            compare.log(f"  run {r + 1}/{args.repeat} {name:<11} "
                        f"{result['items_per_s'] / 1e6:6.2f} M items/s  "
                        f"{result['cpu_ns_per_item']:6.1f} ns CPU/item")

    med = {name: {key: statistics.median(run[key] for run in runs[name])
                  for key in ("items_per_s", "cpu_ns_per_item")} for name in IMPLS}
    ratio = med["pipeline"]["items_per_s"] / med["handwritten"]["items_per_s"]
    cpu_ratio = med["handwritten"]["cpu_ns_per_item"] / med["pipeline"]["cpu_ns_per_item"]
    compare.log(f"\nW1, {args.size} B payloads, {items:,} per run, median of {args.repeat}:")
    for name in IMPLS:
        compare.log(f"  {name:<11} {med[name]['items_per_s'] / 1e6:6.2f} M items/s  "
                    f"{med[name]['cpu_ns_per_item']:6.1f} ns CPU/item")
    compare.log(f"  pipeline / handwritten: {ratio:.3f} (items/s), {cpu_ratio:.3f} (CPU per item); "
                f"target >= 0.90")
    record = {"workload": "W1", "size": args.size, "items": items, "repeat": args.repeat,
              "quick": args.quick, "medians": med, "ratio_items_per_s": ratio,
              "ratio_cpu": cpu_ratio, "runs": runs, "env": compare.env_info()}
    print(JSON_PREFIX + json.dumps(record), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
