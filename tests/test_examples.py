"""The examples in examples/ run end to end, report success, and type-check.

Each example runs in a subprocess with small sizes. The PostgreSQL example needs
a server: set ``TEMPO_PG_DSN`` (``bash .ci/postgres.sh`` sets one up and prints
it), or its test is skipped; so is the NATS JetStream example's without
``TEMPO_NATS_CLUSTER`` (``bash .ci/nats.sh`` starts a cluster and prints it).
The aiohttp, PostgreSQL and NATS examples are skipped when their packages are
missing, and so is the mypy check: ``pip install -e ".[examples]"`` brings
them all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **env_overrides)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_ok(result: subprocess.CompletedProcess[str], success: str) -> None:
    """Exit status 0, and a line of the output starts with ``success``."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert any(line.startswith(success) for line in result.stdout.splitlines()), output


def needs(module: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"{module} is not installed (pip install -e '.[examples]')",
    )


def test_telemetry_sqlite() -> None:
    result = run_example("telemetry_sqlite.py", "--events", "3000")
    assert_ok(result, "OK: 3,000 events written to SQLite (batches: ")


@needs("psycopg")
def test_telemetry_postgres() -> None:
    dsn = os.environ.get("TEMPO_PG_DSN")
    if not dsn:
        pytest.skip("TEMPO_PG_DSN is not set (bash .ci/postgres.sh sets up a server "
                    "and prints one)")
    result = run_example("telemetry_postgres.py", "--events", "3000", TEMPO_PG_DSN=dsn)
    if result.returncode == 0 and result.stdout.startswith("SKIPPED:"):
        pytest.skip(f"TEMPO_PG_DSN is set but unusable: {result.stdout.strip()}")
    assert_ok(result, "OK: 3,000 events copied to PostgreSQL (batches: ")

    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*), min((payload->>'seq')::int), "
                           "max((payload->>'seq')::int) FROM telemetry_events").fetchone()
    assert row == (3000, 0, 2999)


@needs("psycopg")
def test_telemetry_postgres_skips_without_a_server() -> None:
    result = run_example("telemetry_postgres.py", "--dsn",
                         "postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("SKIPPED: cannot reach PostgreSQL"), result.stdout

    result = run_example("telemetry_postgres.py", TEMPO_PG_DSN="")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("SKIPPED: no PostgreSQL DSN"), result.stdout


def test_tcp_collector() -> None:
    result = run_example("tcp_collector.py", "--events", "5000")
    match = re.search(r"^sent 5,000 frames \(([\d,]+) bytes\)", result.stdout, re.MULTILINE)
    assert match, result.stdout + result.stderr
    assert_ok(result, f"OK: collector received 5,000 frames, {match[1]} bytes")


@needs("aiohttp")
@needs("prometheus_client")
def test_aiohttp_service() -> None:
    result = run_example("aiohttp_service.py", "--events", "300")
    assert_ok(result, "OK: receiver got all 300 events")
    assert "accepted 300 events" in result.stdout
    # Scraped from the service's /metrics before it shut down: every event accepted.
    assert 'metrics: tempo_enqueued_total{name="events"} 300.0\n' in result.stdout


@needs("nats")
def test_jetstream() -> None:
    if not (os.environ.get("TEMPO_NATS_CLUSTER") or os.environ.get("TEMPO_NATS_URLS")):
        pytest.skip("TEMPO_NATS_CLUSTER is not set (bash .ci/nats.sh starts a cluster "
                    "and prints it); tests/test_jetstream.py starts its own")
    result = run_example("jetstream.py", "--events", "5000", "--stream", "TEMPO_EXAMPLES")
    assert_ok(result, "OK: 5,000 events in ")


@needs("nats")
def test_jetstream_skips_without_a_server() -> None:
    result = run_example("jetstream.py", "--urls", "nats://127.0.0.1:1")
    assert_ok(result, "SKIPPED: cannot reach NATS")
    result = run_example("jetstream.py", TEMPO_NATS_URLS="", TEMPO_NATS_CLUSTER="")
    assert result.stdout.startswith("SKIPPED: no NATS server"), result.stdout


def test_agent_traces(tmp_path: Path) -> None:
    out = tmp_path / "traces.jsonl"
    result = run_example("agent_traces.py", "--agents", "50", "--steps", "2", "--out", str(out))
    assert_ok(result, "OK: every event written once, in order per agent")
    events = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert len(events) == 50 * (4 * 2 + 1)
    assert {e["agent"] for e in events} == set(range(50))


def datagrams_the_statsd_agent_holds_unread() -> int:
    """How many of the example's metrics the agent's receive buffer holds
    with the agent reading none: a run that sends at most this many cannot
    lose one, however far the agent falls behind (UDP drops what does not
    fit, and net.core.rmem_max varies between machines)."""
    spec = importlib.util.spec_from_file_location("statsd_udp", ROOT / "examples" / "statsd_udp.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with example.agent_socket() as receiver, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.connect(receiver.getsockname())
        receiver.setblocking(False)
        for i in range(20_000):  # api.latency:NNN|ms, the largest metric the example makes
            sender.send(b"api.latency:%03d|ms" % (i % 1000))
        held = 0
        with contextlib.suppress(BlockingIOError):
            while receiver.recv(64):
                held += 1
        return held


def test_statsd_udp() -> None:
    # Half of what the buffer holds (END and its resends need room too).
    metrics = min(5000, datagrams_the_statsd_agent_holds_unread() // 2 // 10 * 10)
    assert metrics >= 100
    requests, timings = metrics // 2, metrics - metrics // 2 - metrics // 10
    result = run_example("statsd_udp.py", "--metrics", str(metrics))
    assert_ok(result, f"OK: {metrics:,} metrics sent as datagrams in ")
    assert f"the agent counted {requests:,} requests and {timings:,} timings" in result.stdout


@needs("pyarrow")
@needs("duckdb")
def test_parquet_rolling() -> None:
    # Batches of at most 16 KiB (about 130 events): files roll however fast
    # the producer runs (at 1 MiB, all 3,000 can make one batch, one file).
    result = run_example("parquet_rolling.py", "--events", "3000", "--rows-per-file", "500",
                         "--max-batch-bytes", "16384")
    assert_ok(result, "OK: 3,000 events in ")
    assert re.search(r"in ([2-9]|\d\d+) Parquet files", result.stdout), result.stdout


@needs("mypy")
def test_examples_pass_mypy_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), "examples/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
