"""Allocations per enqueue: what ``tempo bench``'s ``allocs/payload`` column
and bench/alloc.py's "blocks" section report.

Rounds of 400 enqueues into a batcher from ``_peers`` (four batches of 100,
drained after each round), the garbage collector off: the Python-heap blocks
still held per enqueue (``sys.getallocatedblocks()``), the bytes traced per
enqueue and the transient peak per round (``tracemalloc``), and the drift over
all rounds (a leak shows there).

Each measurement belongs in a fresh process:
``python -m tempo.tools._alloc --blocks tempo:256[:REGIME[:ROUNDS]]`` prints one
``BLOCKS_RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tracemalloc
from array import array
from typing import Any, Callable, Sequence

from tempo import MiB

from ._peers import Shape, make_impl

BLOCKS_PREFIX = "BLOCKS_RESULT "

BLOCKS_PER_BATCH = 100
REGIMES = ("shared", "fresh", "reused")
BLOCKS_ROUND = 4 * BLOCKS_PER_BATCH


def blocks_per_enqueue(impl: str, size: int, regime: str, rounds: int, warmup: int) -> dict[str, Any]:
    """Python-heap blocks held, and bytes allocated, per ``enqueue`` of ``impl``
    (``tempo``, ``purepy`` or ``queue``) with ``size``-byte payloads handed over
    as ``regime`` says: ``shared`` (the same 400 ``bytes`` objects every round),
    ``fresh`` (a new ``bytes`` per enqueue, as an application serialising
    events makes them) or ``reused`` (one ``bytearray``, rewritten)."""
    s = make_impl(impl, size, "retry", Shape(interval=3600.0, max_batch_bytes=BLOCKS_PER_BATCH * size,
                                               max_buffered_bytes=256 * MiB))
    shared = [bytes([i % 251]) * size for i in range(BLOCKS_ROUND)]
    source = bytes(range(256)) * ((size + 2 * BLOCKS_ROUND) // 256 + 1)
    offsets = list(range(BLOCKS_ROUND))
    # get_batch is not part of the Impl protocol (the purepy and queue peers
    # have it, as tempo does): looked up by name, as before the lint pass.
    enqueue, get_batch = s.enqueue, getattr(s, "get_batch")  # noqa: B009
    releases = getattr(s, "releases", False)
    nbatches = BLOCKS_ROUND // BLOCKS_PER_BATCH

    reused = [bytearray(shared[0])] * BLOCKS_ROUND  # one object, listed 400 times

    def make_fill(enqueue: Callable[[Any], object]) -> Callable[[], None]:
        if regime == "shared":

            def fill() -> None:
                for p in shared:
                    enqueue(p)

        elif regime == "reused":

            def fill() -> None:
                for p in reused:
                    enqueue(p)

        else:

            def fill() -> None:
                for o in offsets:
                    enqueue(source[o : o + size])  # a new bytes object each time

        return fill

    fill = make_fill(enqueue)
    # The same loop around a builtin that allocates nothing (``callable`` returns
    # a singleton): what the harness itself allocates in a round (the list
    # iterator, the slices of the fresh regime), subtracted from the peaks.
    fill_baseline = make_fill(callable)

    def drain() -> None:
        for _ in range(nbatches):
            b = get_batch(5)
            if releases:  # tempo's batches hold arena space until released
                b.release()
            del b

    # Per-round figures go into preallocated arrays: storing them allocates nothing.
    held = array("d", bytes(8 * rounds))
    traced = []
    transient = []
    blocks = sys.getallocatedblocks
    gc.collect()
    gc.disable()
    try:
        for _ in range(warmup):
            fill()
            drain()
        start = blocks()
        for r in range(rounds):
            b0 = blocks()
            fill()
            b1 = blocks()
            drain()
            held[r] = b1 - b0
        drift = blocks() - start
        # tracemalloc slows everything down: a separate, shorter pass.
        tracemalloc.start()
        for r in range(10 + min(rounds, 50)):
            m0 = tracemalloc.get_traced_memory()[0]
            fill()
            m1 = tracemalloc.get_traced_memory()[0]
            drain()
            if r >= 10:
                traced.append((m1 - m0) / BLOCKS_ROUND)
        # Transient allocations: the peak during a round above the memory traced
        # after it (get_traced_memory reads both before it allocates its result).
        reset_peak, traced_memory = tracemalloc.reset_peak, tracemalloc.get_traced_memory
        baseline = []
        for r in range(10 + min(rounds, 50)):
            reset_peak()
            fill_baseline()
            cur, peak = traced_memory()
            if r >= 10:
                baseline.append(peak - cur)
            reset_peak()
            fill()
            cur, peak = traced_memory()
            drain()
            if r >= 10:
                transient.append(peak - cur)
        tracemalloc.stop()
    finally:
        gc.enable()
        s.close()
    return {
        "size": size,
        "regime": regime,
        "rounds": rounds,
        "enqueues_per_round": BLOCKS_ROUND,
        "held_blocks_per_enqueue": statistics.median(held) / BLOCKS_ROUND,
        "drift_blocks": drift,
        "drift_blocks_per_enqueue": drift / (rounds * BLOCKS_ROUND),
        "traced_bytes_per_enqueue": statistics.median(traced),
        "transient_peak_bytes_per_round": statistics.median(transient) - statistics.median(baseline),
        "transient_peak_bytes_max": max(transient) - min(baseline),
        "harness_peak_bytes_per_round": statistics.median(baseline),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tempo.tools._alloc", description="one measurement, in this process")
    ap.add_argument("--blocks", required=True, help="IMPL:SIZE[:REGIME[:ROUNDS]]")
    args = ap.parse_args(argv)
    impl, size, *more = args.blocks.split(":")
    regime = more[0] if more else "fresh"
    rounds = int(more[1]) if len(more) > 1 else 100
    result = blocks_per_enqueue(impl, int(size), regime, rounds, max(10, rounds // 4))
    print(BLOCKS_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
