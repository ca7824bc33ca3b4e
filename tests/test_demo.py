"""The demo (tempo/tools/demo.py, run as ``python -m tempo demo``; ``make demo``) runs
end to end, rides out its database outage and loses no accepted event."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_demo(*args: str, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **env_overrides)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "tempo", "demo", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def summary_count(stdout: str, label: str) -> int:
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d,]+)", stdout, re.MULTILINE)
    assert match, f"no {label!r} line in the summary:\n{stdout}"
    return int(match.group(1).replace(",", ""))


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([], id="defaults"),
        # A tiny buffer, no pacing, the outage from the start: producers wait for space.
        pytest.param(
            ["--rate", "0", "--max-buffered-bytes", "16KiB", "--max-batch-bytes", "4096",
             "--interval", "20ms", "--outage-at", "0", "--outage", "300ms"],
            id="back-pressure",
        ),
    ],
)
def test_demo_inserts_every_accepted_event(tmp_path: Path, extra: list[str]) -> None:
    db = tmp_path / "telemetry.db"
    result = run_demo("--events", "2000", "--producers", "3", "--db", str(db), "--keep", *extra)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "\r" not in out  # not a TTY: plain progress lines only
    assert summary_count(out, "events generated") == 3 * 2000

    accepted = summary_count(out, "accepted")
    assert accepted == 3 * 2000
    assert summary_count(out, "rows in table") == accepted
    assert summary_count(out, "dropped by tempo") == 0
    assert summary_count(out, "dead letters") == 0
    # The outage happened, and every failed sink call was retried later.
    failed = summary_count(out, "sink calls failed")
    assert failed > 0
    assert f"during the outage; {failed:,} retried later" in out
    assert summary_count(out, "batches") > 0
    assert re.search(r"p50 [\d.]+ ms\s+p99 [\d.]+ ms\s+max [\d.]+ ms", out), out
    assert f"OK: accepted == rows in table ({accepted:,})" in out

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == accepted
        rows = conn.execute("SELECT type, ts, enqueued_at, inserted_at, payload FROM events")
        types = set()
        for kind, ts, enqueued_at, inserted_at, payload in rows:
            event = json.loads(payload)
            assert event["type"] == kind and event["ts"] == ts
            assert event["enqueued_at"] == enqueued_at <= inserted_at
            assert 100 <= len(payload.encode()) <= 2048
            types.add(kind)
        assert types == {"page_view", "heartbeat", "error", "span"}
    finally:
        conn.close()


def test_demo_removes_its_temporary_database(tmp_path: Path) -> None:
    env_tmp = tmp_path / "tmp"
    env_tmp.mkdir()
    result = run_demo("--events", "300", "--producers", "2", "--rate", "0", TMPDIR=str(env_tmp))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: accepted == rows in table (600)" in result.stdout
    assert list(env_tmp.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--interval", "0"], "argument --interval: duration '0' must be greater than zero"),
        # SQLite's private databases: a traceback ("no such table") at the check.
        (["--db", ""], "--db '': the demo needs a database file"),
        (["--db", ":memory:"], "--db ':memory:': the demo needs a database file"),
        # The producers' wait overflowed, they died, and the demo said OK.
        (["--rate", "1e-300"], "argument --rate: '1e-300' must be 0 or from 0.01 to 1e+07"),
        (["--outage", "9999h"], "argument --outage: duration '9999h' is too long"),
        (["--max-batch-bytes", "-5"], "argument --max-batch-bytes: bad size '-5'"),
        (["--max-buffered-bytes", "0"], "argument --max-buffered-bytes: size '0' must be greater than zero"),
        # Smaller than an event: every enqueue would raise PayloadTooLarge.
        (["--max-buffered-bytes", "10"], "--max-buffered-bytes must be at least 4096"),
        # Accepted, and the demo then did nothing.
        (["--events", "-5"], "argument --events: '-5' must be greater than zero"),
        (["--producers", "0"], "argument --producers: '0' must be greater than zero"),
        (["--rate", "-1"], "argument --rate: '-1' must be a finite number, 0 or more"),
        (["--interval", "soon"], "argument --interval: bad duration 'soon'"),
        # A traceback with exit code 1.
        (["--db", "/nonexistent/dir/x.db"], "--db '/nonexistent/dir/x.db': folder '/nonexistent/dir' does not exist"),
    ],
)
def test_demo_refuses_bad_settings_with_a_usage_error(tmp_path: Path, args: list[str],
                                                      message: str) -> None:
    db = tmp_path / "telemetry.db"
    result = run_demo("--events", "100", "--db", str(db), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("tempo demo: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert not db.exists()


def test_demo_takes_sizes_and_durations_like_the_other_subcommands(tmp_path: Path) -> None:
    result = run_demo("--events", "200", "--producers", "2", "--rate", "0", "--interval", "100ms",
                      "--max-batch-bytes", "8KiB", "--max-buffered-bytes", "64KiB", "--outage-at", "10ms",
                      "--outage", "50ms")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: accepted == rows in table (400)" in result.stdout
    assert "the database is down from 0.01 s to 0.06 s" in result.stdout


def test_demo_with_a_db_sqlite_cannot_open_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    not_a_db = tmp_path / "x.db"
    not_a_db.write_bytes(b"not a database, " * 100)
    result = run_demo("--events", "100", "--db", str(not_a_db))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"tempo demo: error: --db {str(not_a_db)!r}: ")
    assert result.stderr.count("\n") == 1, result.stderr


def interrupt_demo(args: list[str], markers: tuple[str, ...]) -> tuple[int, str, str, float]:
    """Run the demo; SIGINT each time its stdout shows the next of ``markers``.
    Returns the exit code, stdout, stderr and the seconds from the last SIGINT to the exit."""
    from conftest import interruptible_children

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with interruptible_children():
        proc = subprocess.Popen([sys.executable, "-m", "tempo", "demo", *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    out = ""
    try:
        for marker in markers:
            deadline = time.monotonic() + 30
            while marker not in out:
                assert time.monotonic() < deadline, f"never said {marker!r}: {out}"
                ready, _, _ = select.select([proc.stdout], [], [], 1.0)
                if ready:  # unbuffered: a line read ahead would wait in a buffer select cannot see
                    chunk = os.read(proc.stdout.fileno(), 65536).decode()
                    assert chunk, f"exited before saying {marker!r}: {out}"
                    out += chunk
            proc.send_signal(signal.SIGINT)
            sent = time.monotonic()
        rest, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out + rest, err, took


def test_ctrl_c_stops_a_slow_demo_at_once(tmp_path: Path) -> None:
    # The producers slept until their next event (100 s at this rate) and the
    # demo waited for them.
    rc, out, err, took = interrupt_demo(["--rate", "0.01", "--producers", "2", "--events", "5", "--outage", "0",
                                         "--db", str(tmp_path / "t.db")], markers=("tempo demo:",))
    assert rc == 130, out + err
    assert took < 10
    assert "interrupted: finishing the events already accepted" in out
    assert "OK: accepted == rows in table (" in out  # the first event of each producer that ran
    assert err == ""


def test_a_second_ctrl_c_ends_the_demo_without_a_traceback(tmp_path: Path) -> None:
    # The database stays down: the close waits on retries, and a second Ctrl-C
    # there was a traceback.
    rc, out, err, took = interrupt_demo(["--rate", "0.01", "--producers", "2", "--events", "5", "--outage-at", "0",
                                         "--outage", "10m", "--db", str(tmp_path / "t.db")],
                                        markers=("tempo demo:", "interrupted:"))
    assert rc == 130, out + err
    # The second Ctrl-C stops the pipeline (quit at once); a batch may still be
    # in the sink, retrying against the down database, when the interpreter
    # exits (it was under AddressSanitizer on a loaded machine), and then the
    # exit report says so truthfully, in its one line. Nothing else may follow.
    first, *rest = err.splitlines()
    assert first == "tempo demo: interrupted", err
    report = re.compile(r"pipeline 'pipeline-1' was not drained at exit: 0 payloads dropped unprocessed, "
                        r"[12] still in the sink or on_failure \(0 batches failed in all\)")
    assert len(rest) <= 1 and all(report.fullmatch(line) for line in rest), err
    assert took < 10
