"""The throughput measurement behind ``tempo bench`` (and bench/compare.py).

One producer loop, one consumer loop and one timed run, shared by every
implementation in ``_peers`` so the comparison is fair. A run pushes an
untimed warm-up, then times ``items`` payloads from the first enqueue until
the consumer has accounted for the last one. bench/compare.py's docstring
describes its workloads, payload kinds and fairness rules in full; its extra
workloads plug into ``run_case`` (``loop_for``, ``consume``).

Each run belongs in a fresh process:
``python -m tempo.tools._throughput --case tempo:256 --items N`` prints one
``CASE_RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import resource
import sys
import threading
import time
from time import monotonic, perf_counter
from typing import Any, Callable, Iterator, Sequence, TypeVar

from tempo import MiB

from ._peers import BATCH_ITEMS, MAX_BUFFERED, Handle, Impl, Sink, make_impl

RETRY_SLEEP = 100e-6  # seconds a producer sleeps after a "full" answer
WARMUP_MAX_S = 1.0
CASE_PREFIX = "CASE_RESULT "

#: Payloads per measured run, by size: about a second for the pure-Python batcher
#: (one producer), a fraction of that for tempo, several seconds for the queue.Queue loop.
ITEMS = {16: 1 << 21, 256: 1 << 20, 10240: 1 << 18}
QUICK_DIVISOR = 16

#: What a producer loop reports: (start, end, full retries, payloads enqueued).
ProducerResult = tuple[float, float, int, int]
#: A producer loop and its arguments, for producer ``i`` (see ``run_producers``).
LoopFor = Callable[..., tuple[Callable[..., None], tuple[object, ...]]]
_F = TypeVar("_F", bound=Callable[..., object])


def item_unit(producers: int = 4) -> int:
    """Payload counts are multiples of this, so each of up to ``producers``
    producers enqueues whole batches' worth (the same count for one producer
    and for several keeps runs comparable)."""
    return BATCH_ITEMS * math.lcm(4, producers)


def items_for(size: int, quick: bool, producers: int = 4) -> int:
    """Payloads per measured run: a multiple of ``item_unit()`` so every batch fills
    exactly."""
    n = ITEMS.get(size) or max(1 << 14, (256 * MiB) // max(size, 1))
    if quick:
        n //= QUICK_DIVISOR
    unit = item_unit(producers)
    return max(unit, n // unit * unit)


def warmup_for(size: int, items: int, producers: int = 4) -> int:
    """Untimed warm-up payloads: 1/8 of the run, or enough bytes to cycle the whole
    64 MiB buffer once (+25%) so its pages are touched, whichever is more (the
    warm-up also stops after WARMUP_MAX_S seconds)."""
    unit = item_unit(producers)
    by_bytes = -(-(MAX_BUFFERED * 5 // 4) // max(size, 1))
    warm = max(items // 8, by_bytes)
    return max(unit, -(-warm // unit) * unit)


def make_pool(size: int) -> list[bytes]:
    """Distinct payloads (about 32 MiB, at most 8192), so memory traffic is realistic."""
    count = max(256, min(8192, (32 * MiB) // max(size, 1)))
    rng = random.Random(size)
    return [rng.randbytes(size) for _ in range(count)]


# ---------------------------------------------------------------------------
# Producers


def produce_retry(
    enqueue: Callable[[Any], object], Full: type[Exception], payloads: Iterator[bytes | bytearray], chunks: int,
    deadline: float | None, out: list[ProducerResult | None], i: int, start: threading.Barrier,
    chunk: int = BATCH_ITEMS,
) -> None:
    """The shared producer loop: on a full buffer, sleep briefly and retry.

    Enqueues ``chunks`` chunks of ``chunk`` payloads from the iterator ``payloads``,
    stopping early (between chunks) once ``perf_counter()`` passes ``deadline``.

    The retry loop is written out here and again in each of
    the benchmark harness's producers (bench/) on purpose: it is the code being
    measured, and a shared helper would add a Python call per payload.
    """
    retries = n = 0
    sleep = time.sleep
    islice = itertools.islice
    start.wait()
    t0 = perf_counter()
    for _ in range(chunks):
        for p in islice(payloads, chunk):
            while True:
                try:
                    enqueue(p)
                    break
                except Full:
                    retries += 1
                    sleep(RETRY_SLEEP)
        n += chunk
        if deadline is not None and perf_counter() >= deadline:
            break
    out[i] = (t0, perf_counter(), retries, n)


def produce_blocking(
    enqueue: Callable[..., object], Full: type[Exception], payloads: Iterator[bytes | bytearray], chunks: int,
    deadline: float | None, out: list[ProducerResult | None], i: int, start: threading.Barrier,
    chunk: int = BATCH_ITEMS,
) -> None:
    """tempo's producer loop: ``enqueue(p, timeout=None)`` waits for room."""
    n = 0
    islice = itertools.islice
    start.wait()
    t0 = perf_counter()
    for _ in range(chunks):
        for p in islice(payloads, chunk):
            enqueue(p, timeout=None)
        n += chunk
        if deadline is not None and perf_counter() >= deadline:
            break
    out[i] = (t0, perf_counter(), 0, n)


def produce_many(
    enqueue_many: Callable[..., int], payloads: Iterator[bytes | bytearray], chunks: int,
    deadline: float | None, out: list[ProducerResult | None], i: int, start: threading.Barrier,
    chunk: int = BATCH_ITEMS,
) -> None:
    """The producer loop for ``enqueue_many``: a list of ``chunk`` payloads per
    call, waiting for room (``timeout=None``) and resuming after the accepted prefix."""
    n = 0
    islice = itertools.islice
    start.wait()
    t0 = perf_counter()
    for _ in range(chunks):
        batch = list(islice(payloads, chunk))
        done = 0
        while done < chunk:
            done += enqueue_many(batch[done:] if done else batch, timeout=None)
        n += chunk
        if deadline is not None and perf_counter() >= deadline:
            break
    out[i] = (t0, perf_counter(), 0, n)


def own_binding(fn: _F) -> _F:
    """The same bound method as a new object, one per producer thread. On a
    free-threaded build, threads calling one shared method object contend on
    its reference count (every call takes and drops a reference), which is
    the benchmark's cost, not the batcher's; a thread that writes
    ``d.enqueue(p)`` itself never shares one."""
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", None)
    if owner is None or name is None or not hasattr(owner, name):
        return fn
    same: _F = getattr(owner, name)
    return same


def pool_loop(
    impl: Impl, pool: Sequence[bytes | bytearray], i: int, nprod: int, total: int, offset: int, chunks: int,
    deadline: float | None, out: list[ProducerResult | None], start: threading.Barrier, chunk: int,
) -> tuple[Callable[..., None], tuple[object, ...]]:
    """Producer ``i``'s loop over a pool of payloads, cycled from its own starting point."""
    k = (offset + i * 997) % len(pool)
    payloads = itertools.cycle([*pool[k:], *pool[:k]])
    enqueue_many = getattr(impl, "enqueue_many", None)  # only TempoManyImpl has it
    if enqueue_many is not None:
        return produce_many, (enqueue_many, payloads, chunks, deadline, out, i, start, chunk)
    if impl.enqueue_blocking is not None:
        return produce_blocking, (own_binding(impl.enqueue_blocking), impl.Full, payloads, chunks, deadline, out,
                                  i, start, chunk)
    return produce_retry, (own_binding(impl.enqueue), impl.Full, payloads, chunks, deadline, out, i, start, chunk)


def run_producers(
    impl: Impl, pool: Sequence[bytes | bytearray], nprod: int, total: int, offset: int,
    deadline: float | None = None, chunk: int = BATCH_ITEMS, loop_for: LoopFor = pool_loop,
) -> ProducerResult:
    """Enqueue up to ``total`` payloads from ``nprod`` threads (all of them unless
    ``deadline`` passes first; always a multiple of ``chunk`` per producer).

    ``loop_for(impl, pool, i, nprod, total, offset, chunks, deadline, out, start,
    chunk)`` gives producer ``i``'s loop and its arguments; the default cycles
    through ``pool``, a list of payloads.

    Returns (first start, last end, retries, payloads enqueued).
    """
    assert total % (nprod * chunk) == 0
    chunks = total // nprod // chunk
    out: list[ProducerResult | None] = [None] * nprod
    start = threading.Barrier(nprod)
    threads = []
    for i in range(nprod):
        loop, args = loop_for(impl, pool, i, nprod, total, offset, chunks, deadline, out, start, chunk)
        threads.append(threading.Thread(target=loop, args=args))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [o for o in out if o is not None]
    if len(results) != nprod:  # its thread printed the traceback
        raise RuntimeError(f"{nprod - len(results)} of {nprod} producer threads failed")
    return (
        min(o[0] for o in results),
        max(o[1] for o in results),
        sum(o[2] for o in results),
        sum(o[3] for o in results),
    )


# ---------------------------------------------------------------------------
# One timed run


def wait_for_items(sink: Sink, count: int, timeout: float) -> None:
    deadline = monotonic() + timeout
    while sink.items < count:
        if monotonic() > deadline:
            raise RuntimeError(f"consumer saw {sink.items} of {count} payloads")
        time.sleep(0.001)


def timed_run(impl: Impl, sink: Sink, pool: Sequence[bytes | bytearray], nprod: int, items: int, size: int,
              warm: int, warm_max_s: float, chunk: int = BATCH_ITEMS,
              finish: Callable[[int], float] | None = None, loop_for: LoopFor = pool_loop) -> dict[str, Any]:
    """One measured run through a started ``impl`` whose consumer feeds ``sink``.

    An untimed warm-up of ``warm`` payloads (stopped between chunks after
    ``warm_max_s``; first-touch page faults, allocator and caches settle), then
    ``items`` payloads timed from the producers' start until the consumer has
    seen the last one.  ``finish(warmed)``, if given, runs after that and
    returns the end time to use instead (a reader's byte count, say).  The
    caller closes ``impl`` and joins its consumer.
    """
    warm_deadline = perf_counter() + warm_max_s
    *_, warmed = run_producers(impl, pool, nprod, warm, offset=0, deadline=warm_deadline, chunk=chunk,
                               loop_for=loop_for)
    wait_for_items(sink, warmed, 120)
    batches0 = sink.batches
    sink.target = warmed + items  # the consumer cannot pass it before we enqueue more
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0, t_prod, retries, _ = run_producers(impl, pool, nprod, items, offset=warmed, chunk=chunk, loop_for=loop_for)
    if not sink.done.wait(300):
        raise RuntimeError(f"consumer saw {sink.items - warmed} of {items} payloads")
    t_end = sink.t_done
    if finish is not None:
        t_end = finish(warmed)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = t_end - t0
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "items": items,
        "warmup_items": warmed,
        "elapsed_s": elapsed,
        "producer_s": t_prod - t0,
        "items_per_s": items / elapsed,
        "mb_per_s": items * size / elapsed / 1e6,
        "cpu_s": cpu,
        "cpu_ns_per_item": cpu / items * 1e9,
        "batches": sink.batches_done - batches0,
        "full_retries": retries,
    }


#: A consumer for ``run_case``: given the started impl and its sink, the batch
#: handler, an optional ``finish`` (see ``timed_run``) and a clean-up.
Consume = Callable[[Impl, Sink], tuple[Handle, "Callable[[int], float] | None", Callable[[], None]]]


def count_items(impl: Impl, sink: Sink) -> tuple[Handle, None, Callable[[], None]]:
    """The default consumer: count items and bytes."""
    return impl.counter(sink), None, lambda: None


def run_case(impl_name: str, size: int, items: int, *, producers: int = 1, backpressure: str = "native",
             warm: int | None = None, warm_max_s: float = WARMUP_MAX_S,
             pool: Sequence[bytes | bytearray] | None = None, loop_for: LoopFor = pool_loop,
             consume: Consume = count_items) -> dict[str, Any]:
    """One case in this (fresh) process: ``producers`` threads push ``items``
    payloads of ``size`` bytes (from ``pool``, default ``make_pool(size)``) through
    ``impl_name``, one consumer takes the batches (``consume``)."""
    if warm is None:
        warm = warmup_for(size, items)
    if pool is None:
        pool = make_pool(size)
    impl = make_impl(impl_name, size, backpressure)
    sink = Sink()
    handle, finish, cleanup = consume(impl, sink)
    consumer = impl.start_consumer(handle, sink.done)
    try:
        figures = timed_run(impl, sink, pool, producers, items, size, warm, warm_max_s, finish=finish,
                            loop_for=loop_for)
    finally:
        impl.close()
        if consumer is not None:
            consumer.join(5)
        cleanup()
    return {
        "size": size,
        "impl": impl_name,
        "producers": producers,
        **figures,
        "expected_batches": items // BATCH_ITEMS,
        "enqueue_mode": "blocking" if impl.enqueue_blocking is not None else "retry",
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tempo.tools._throughput", description="one case, in this process")
    ap.add_argument("--case", required=True, help="IMPL:SIZE")
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--backpressure", choices=("native", "retry"), default="native")
    ap.add_argument("--warmup-max-s", type=float, default=WARMUP_MAX_S)
    args = ap.parse_args(argv)
    impl, size = args.case.split(":")
    result = run_case(impl, int(size), args.items, backpressure=args.backpressure, warm_max_s=args.warmup_max_s)
    print(CASE_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
