"""Helpers shared by the bench scripts (not a benchmark itself).

- ``read_status`` / ``reset_peak``: the memory figures of ``/proc/self``.
- ``churn_rss``: resident memory while payloads churn through a bounded
  batcher (``alloc.py``'s ``rss`` sections, ``scaling.py``'s ``rss`` sweep).
"""

from __future__ import annotations

import gc
import random
import threading
import time
from time import perf_counter

from tempo import KiB


def read_status() -> dict:
    """Memory fields of /proc/self/status and /proc/self/smaps_rollup, in KiB."""
    fields = {}
    for path in ("/proc/self/status", "/proc/self/smaps_rollup"):
        try:
            with open(path) as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    parts = rest.split()
                    if len(parts) == 2 and parts[1] == "kB":
                        fields.setdefault(key.strip(), int(parts[0]))
        except OSError:
            pass
    return fields


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def churn_rss(open_target, churn_bytes: int, *, pause: float = 0.0, poll: float = 0.01,
              reset_hwm: bool = False) -> dict:
    """Churn ``churn_bytes`` of fresh ``bytes`` payloads through a bounded batcher.

    ``open_target()`` makes and starts the batcher (after the "before" memory
    figures are read) and returns an object with ``enqueue_wait(p)`` (waits
    while the buffer is full), ``get_batch(timeout)``, ``release(batch)``,
    ``nbytes(batch)`` and ``close()``.  One producer (this thread) enqueues a
    fresh ``bytes`` per payload, 64 B - 16 KiB (a fixed pseudo-random
    sequence); one consumer thread takes and releases batches, sleeping
    ``pause`` seconds after each.  Once the consumer has seen every byte
    (polled every ``poll`` s, at most 300 s), the "after" figures are read,
    then the consumer is stopped and the target closed.

    Returns the figures common to both callers plus ``before`` / ``after``
    (``read_status()``), ``target`` and ``peak_reset`` (whether VmHWM was
    reset first, with ``reset_hwm``).
    """
    rng = random.Random(7)
    sizes = [rng.randint(64, 16 * KiB) for _ in range(4096)]
    offsets = [rng.randrange(0, 32 * KiB) for _ in range(4096)]
    source = rng.randbytes(64 * KiB)
    gc.collect()
    peak_reset = reset_peak() if reset_hwm else False
    before = read_status()
    target = open_target()
    done = threading.Event()
    received = [0]

    def consume():
        get_batch, release, nbytes = target.get_batch, target.release, target.nbytes
        while not done.is_set():
            try:
                b = get_batch(timeout=0.1)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - stopped (each implementation says it its own way)
                break
            received[0] += nbytes(b)
            release(b)
            del b
            if pause:
                time.sleep(pause)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    t0 = perf_counter()
    sent = i = 0
    enqueue = target.enqueue_wait
    while sent < churn_bytes:
        n = sizes[i & 4095]
        o = offsets[i & 4095]
        enqueue(source[o : o + n])
        sent += n
        i += 1
    while received[0] < sent and perf_counter() - t0 < 300:
        time.sleep(poll)
    elapsed = perf_counter() - t0
    after = read_status()
    done.set()
    consumer.join(5)
    target.close()
    return {
        "churned_bytes": sent,
        "payloads": i,
        "elapsed_s": elapsed,
        "mb_per_s": sent / elapsed / 1e6,
        "rss_before_kib": before.get("VmRSS", 0),
        "before": before,
        "after": after,
        "target": target,
        "peak_reset": peak_reset,
    }
