"""Storms: 64 producer threads and 4 consumers, then stop() or shutdown() at a
random moment.

Each seed picks a configuration, per-producer enqueue styles (fail at once
and retry, wait a little, wait for ever), payload sizes, and per-consumer
habits (how many batches it holds before releasing, in which order, and
whether it keeps a view past the release). At a random point (after a
random number of accepted payloads) the test calls ``stop()`` or
``shutdown()``. Then:

- no hang: every thread ends within ``JOIN`` seconds (else every thread's
  stack is dumped by faulthandler and the test fails);
- nothing is delivered twice, or that was not accepted, and no payload's
  bytes are corrupted;
- each batch holds, per producer, consecutive payloads in order, so batches
  partition every producer's sequence in order;
- ``stats()`` accounts for everything: ``enqueued == items + dropped``;
- after a graceful shutdown, every accepted payload was delivered exactly
  once (``dropped == 0``);
- once every batch and view is gone, ``buffered_bytes`` is 0.

``make test`` runs the fixed seeds below; ``make test-long`` (``TEMPO_LONG``)
runs many more.
"""

from __future__ import annotations

import collections
import faulthandler
import os
import random
import struct
import sys
import threading
import time

import pytest

import tempo

PRODUCERS = 64
CONSUMERS = 4
#: Every thread must have ended this long after stop()/shutdown() returned.
JOIN = 30.0
#: The latest moment (seconds after start) for the stop or shutdown.
MOMENT = 1.5
LONG = bool(os.environ.get("TEMPO_LONG"))
SEEDS = range(300) if LONG else range(12)

HEADER = struct.Struct(">IIH")


def make_payload(producer: int, seq: int, filler: int) -> bytes:
    return HEADER.pack(producer, seq, filler) + bytes([(producer * 31 + seq) & 0xFF]) * filler


def parse(item: bytes) -> tuple[int, int]:
    producer, seq, filler = HEADER.unpack_from(item)
    assert item == make_payload(producer, seq, filler), "payload bytes were corrupted"
    return producer, seq


class Storm:
    def __init__(self, seed: int):
        rng = random.Random(seed)
        self.rng = rng
        self.seed = seed
        self.graceful = seed % 2 == 0  # half the seeds stop, half shut down
        self.config = {
            "interval": rng.choice([0.001, 0.005, 0.02]),
            "max_batch_bytes": rng.choice([0, 64, 512, 4096]),
            "max_buffered_bytes": rng.choice([256, 2048, 16 * tempo.KiB, 256 * tempo.KiB]),
        }
        self.count = rng.randint(20, 120)  # payloads per producer
        largest = max(16, min(self.config["max_buffered_bytes"] - HEADER.size, 600))
        self.fillers = [[rng.randint(0, rng.choice([8, largest])) for _ in range(self.count)]
                        for _ in range(PRODUCERS)]
        self.styles = [rng.choice(["retry", "timeout", "wait"]) for _ in range(PRODUCERS)]
        self.habits = [(rng.randint(0, 4), rng.random(), rng.random()) for _ in range(CONSUMERS)]
        self.trigger = rng.randint(0, PRODUCERS * self.count)
        # A random moment too, so that a slow configuration (a tiny arena
        # sealed by interval only) still ends early.
        self.trigger_after = rng.uniform(0.0, MOMENT)
        self.d = tempo.Dispatcher(**self.config)
        self.accepted = [0] * PRODUCERS  # a prefix of each producer's sequence
        self.ended_by = [None] * PRODUCERS
        self.delivered: list[list[list[tuple[int, int]]]] = [[] for _ in range(CONSUMERS)]
        self.errors: list[BaseException] = []
        self.producers_done = threading.Semaphore(0)

    # -- threads ----------------------------------------------------------------

    def produce(self, p: int) -> None:
        d, style, fillers = self.d, self.styles[p], self.fillers[p]
        try:
            for seq in range(self.count):
                item = make_payload(p, seq, fillers[seq])
                while True:
                    try:
                        if style == "retry":
                            d.enqueue(item)
                        elif style == "timeout":
                            d.enqueue(item, timeout=0.01)
                        else:
                            d.enqueue(item, timeout=None)
                        break
                    except tempo.QueueFull:
                        if style == "retry":
                            time.sleep(0.0005)  # back off: consumers free space
                self.accepted[p] = seq + 1
        except (tempo.Stopped, tempo.ShuttingDown) as exc:
            self.ended_by[p] = type(exc)
        finally:
            self.producers_done.release()

    def consume(self, c: int) -> None:
        d = self.d
        rng = random.Random(self.seed * 1000 + c)
        hold, out_of_order, keep_view = self.habits[c]
        held = []  # batches taken, not released yet
        views = []  # views kept past their batch's release
        got = self.delivered[c]
        while True:
            try:
                batch = d.get_batch(timeout=0.05)
            except TimeoutError:
                # Nothing ready: let everything go, so producers never wait
                # for space that only this idle consumer holds.
                for b in held:
                    b.release()
                held.clear()
                views.clear()
                continue
            except tempo.Stopped:
                break
            got.append([parse(item) for item in batch.tolist()])
            if len(batch) and rng.random() < keep_view:
                views.append(batch[rng.randrange(len(batch))][2:])
            held.append(batch)
            del batch
            while len(held) > hold:
                index = rng.randrange(len(held)) if rng.random() < out_of_order else 0
                held.pop(index).release()
            while len(views) > hold:
                views.pop(0)
        for b in held:
            b.release()

    def guarded(self, fn, *args):
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    # -- the run ------------------------------------------------------------------

    def run(self) -> None:
        d = self.d
        d.start()
        threads = [threading.Thread(target=self.guarded, args=(self.consume, c), daemon=True)
                   for c in range(CONSUMERS)]
        threads += [threading.Thread(target=self.guarded, args=(self.produce, p), daemon=True)
                    for p in range(PRODUCERS)]
        for t in threads:
            t.start()
        # The random moment: once `trigger` payloads were accepted, every
        # producer is done, or `trigger_after` seconds passed, whichever
        # comes first.
        finished = 0
        until = time.monotonic() + self.trigger_after
        while (d.stats().enqueued < self.trigger and finished < PRODUCERS
               and time.monotonic() < until):
            if self.producers_done.acquire(timeout=0.001):
                finished += 1
        if self.graceful:
            d.shutdown(timeout=JOIN)
        else:
            d.stop()
        deadline = time.monotonic() + JOIN
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in threads if t.is_alive()]
        if alive:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        assert not alive, f"seed {self.seed}: {len(alive)} thread(s) hung"
        assert not self.errors, f"seed {self.seed}: {self.errors!r}"

    def check(self) -> None:
        stats = self.d.stats()
        seen = collections.Counter()
        for batches in self.delivered:
            for batch in batches:
                assert batch, "an empty batch"
                runs: dict[int, list[int]] = collections.defaultdict(list)
                for producer, seq in batch:
                    runs[producer].append(seq)
                    seen[producer, seq] += 1
                for producer, seqs in runs.items():
                    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (
                        f"seed {self.seed}: producer {producer}'s payloads out of order {seqs}")
        twice = [key for key, n in seen.items() if n > 1]
        assert not twice, f"seed {self.seed}: delivered twice: {twice[:5]}"
        unaccepted = [(p, s) for p, s in seen if s >= self.accepted[p]]
        assert not unaccepted, f"seed {self.seed}: delivered, never accepted: {unaccepted[:5]}"
        total = sum(self.accepted)
        assert stats.enqueued == total
        assert stats.items == len(seen)
        assert stats.enqueued == stats.items + stats.dropped, stats
        if self.graceful:
            assert stats.dropped == 0, stats
            assert len(seen) == total, f"seed {self.seed}: {total - len(seen)} accepted, not delivered"
        assert stats.buffered_bytes == 0, stats
        # Producers that did not finish learned why.
        for p in range(PRODUCERS):
            if self.accepted[p] < self.count:
                expected = tempo.ShuttingDown if self.graceful else tempo.Stopped
                assert self.ended_by[p] in (expected, tempo.Stopped), (p, self.ended_by[p])


@pytest.fixture
def hang_guard():
    # If a storm hangs outright (a join that never returns), dump every
    # thread's stack and end the process rather than wait for the CI timeout.
    faulthandler.dump_traceback_later(JOIN * 3, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.mark.parametrize("seed", SEEDS)
def test_storm(seed, hang_guard):
    storm = Storm(seed)
    try:
        storm.run()
        storm.check()
    finally:
        storm.d.stop()


# -- chained stages at exit (issue 15, item 2) -----------------------------------------

CHAIN_SEEDS = range(60) if LONG else range(6)

CHAIN_SCRIPT = """
import random
rng = random.Random({seed})
depth = rng.randint(2, 4)
kinds = [rng.choice(["dispatcher", "pipeline"]) for _ in range(depth - 1)] + ["pipeline"]
got = []
stages = [None] * depth

def forward(i, items):
    nxt = stages[i + 1]
    for item in items:
        nxt.enqueue(item, timeout=None)

def make(i):
    shape = dict(interval=rng.choice([0.005, 60]), max_buffered_bytes=1 << 14,
                 max_batch_items=rng.choice([0, 1, 3, 17]))
    delay = rng.choice([0, 0, 0.001, 0.005])
    last = i == depth - 1
    if kinds[i] == "pipeline":
        def sink(batch, i=i, delay=delay, last=last):
            if delay:
                time.sleep(delay)
            items = [bytes(item) for item in batch]
            got.extend(items) if last else forward(i, items)
        stages[i] = tempo.Pipeline(sink, workers=rng.randint(1, 3), **shape)
    else:
        d = stages[i] = tempo.Dispatcher(**shape)
        d.start()
        def consumer(d=d, i=i, delay=delay):
            for batch in d.batches():  # forwards before the batch is released
                if delay:
                    time.sleep(delay)
                forward(i, [bytes(item) for item in batch])
        for _ in range(rng.randint(1, 2)):
            threading.Thread(target=consumer, daemon=True).start()

# Made in a random order: the exit must not depend on it.
for i in rng.sample(range(depth), depth):
    make(i)
n = rng.randint(1, 400)
for k in range(n):
    stages[0].enqueue(b"%05d" % k, timeout=None)

def report():
    ok = sorted(got) == [b"%05d" % k for k in range(n)]
    print("delivered", ok, "dropped", sum(s.stats().dropped for s in stages), kinds, flush=True)

after_tempo(report)
"""


@pytest.mark.parametrize("seed", CHAIN_SEEDS)
def test_chained_stages_made_in_any_order_deliver_everything_at_exit(seed):
    # A random chain of dispatchers (daemon consumer threads that forward)
    # and pipelines (sinks that forward), made in a random order, fed, then
    # left to the interpreter's exit: the last stage gets every payload
    # exactly once, nothing is dropped, nothing is logged.
    from exit_scripts import run_script

    out = run_script(CHAIN_SCRIPT.format(seed=seed))
    assert (out.returncode, out.err) == (0, ""), out
    assert out.out.startswith("delivered True dropped 0 ["), out.out
