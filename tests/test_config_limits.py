"""Every out-of-range number in a configuration is a ``ConfigError`` (issue 8,
bug 9): before the fix ``max_batch_bytes=2**63`` and ``interval=10**400`` raised
``OverflowError`` and ``max_buffered_bytes=2**62`` a bare ``ValueError``. The
largest accepted values are documented in docs/rules.md."""

from __future__ import annotations

import math
import os
import pathlib
import sys

import pytest

import tempo

MAX_BYTES = 2**45
TOO_LARGE = [
    ({"max_batch_bytes": 2**63}, "tempo: max batch bytes must be at most 32 TiB (2**45)"),
    ({"max_batch_bytes": 2**70}, "tempo: max batch bytes must be at most 32 TiB (2**45)"),
    ({"max_batch_bytes": MAX_BYTES + 1}, "tempo: max batch bytes must be at most 32 TiB (2**45)"),
    ({"max_buffered_bytes": 2**62}, "tempo: max buffered bytes must be at most 32 TiB (2**45)"),
    ({"max_buffered_bytes": 10**400},
     "tempo: max buffered bytes must be at most 32 TiB (2**45)"),
    ({"max_buffered_bytes": MAX_BYTES + 1},
     "tempo: max buffered bytes must be at most 32 TiB (2**45)"),
    ({"interval": 10**400},
     "tempo: interval must be at most sys.float_info.max seconds (or math.inf)"),
    ({"interval": -(10**400)}, "tempo: interval must be greater than zero"),
    ({"max_batch_bytes": -(2**70)}, "tempo: max batch bytes must not be negative"),
    ({"max_buffered_bytes": -(2**70)}, "tempo: max buffered bytes must be greater than zero"),
]


@pytest.mark.parametrize("kwargs, message", TOO_LARGE, ids=lambda v: repr(v)[:40])
@pytest.mark.parametrize("make", [tempo.Config, tempo.Dispatcher], ids=["Config", "Dispatcher"])
def test_out_of_range_numbers_are_config_errors(make, kwargs, message):
    args = {"interval": 1, "max_buffered_bytes": 100, **kwargs}
    with pytest.raises(tempo.ConfigError) as excinfo:
        make(**args)
    assert str(excinfo.value) == message
    assert type(excinfo.value) is tempo.ConfigError


def test_the_largest_values_are_accepted():
    config = tempo.Config(interval=sys.float_info.max, max_buffered_bytes=MAX_BYTES,
                          max_batch_bytes=MAX_BYTES)
    assert (config.interval, config.max_batch_bytes, config.max_buffered_bytes) == (
        sys.float_info.max, MAX_BYTES, MAX_BYTES)
    assert tempo.Config(interval=math.inf, max_buffered_bytes=1).interval == math.inf


def test_a_dispatcher_with_a_huge_interval_seals_by_size_and_flush(make, spawn):
    d = make(interval=sys.float_info.max, max_buffered_bytes=100, max_batch_bytes=4)
    d.start()
    d.enqueue(b"abcd")  # sealed by size
    d.enqueue(b"e")
    consumer = spawn(lambda: [d.get_batch(timeout=5).tolist() for _ in range(2)])
    d.flush(timeout=5)
    assert consumer.result() == [[b"abcd"], [b"e"]]


def test_the_limits_are_documented():
    rules = (pathlib.Path(__file__).parent.parent / "docs" / "rules.md").read_text()
    assert "32 TiB (`2**45` bytes)" in rules
    assert "`sys.float_info.max`" in rules


def test_the_largest_bound_can_be_mapped():
    # 2**46, the old documented maximum, needed 128 TiB of address space for
    # the mirrored ring: all of x86-64's user space. It failed in mmap with a
    # bare MemoryError(12, ...) naming nothing.
    d = tempo.Dispatcher(interval=1, max_buffered_bytes=MAX_BYTES)
    try:
        assert d.stats().max_buffered_bytes == MAX_BYTES
    finally:
        d.stop()
    with pytest.raises(tempo.ConfigError, match=r"at most 32 TiB \(2\*\*45\)"):
        tempo.Dispatcher(interval=1, max_buffered_bytes=2**46)


@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's shadow memory exceeds any address-space cap")
def test_a_bound_the_machine_cannot_map_is_a_memory_error_that_names_it():
    # Address space capped (RLIMIT_AS) below what the ring needs: the mmap
    # fails with ENOMEM, and the error says which setting asked for what.
    import subprocess
    import textwrap

    code = textwrap.dedent("""
        import resource, tempo
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        try:
            tempo.Dispatcher(interval=1, max_buffered_bytes=8 << 30)
        except MemoryError as exc:
            print(type(exc).__name__, exc.args[0])
            print(exc.args[1])
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "MemoryError 12",
        "tempo: cannot map max_buffered_bytes=8589934592 (8 GiB, 16 GiB of address space "
        "for the mirrored ring): Cannot allocate memory",
    ]
