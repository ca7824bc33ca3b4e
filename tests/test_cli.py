"""The ``tempo`` command (tempo/tools/): what each subcommand writes, its exit
codes, its errors, Ctrl-C, ``--json`` and ``python -m tempo``.

Runs are kept short (fractions of a second to a few seconds); nothing here
judges speed. Subprocesses run with the checkout first on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tempo
from conftest import interruptible_children
from tempo.tools import _util, cli, stress

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
HAVE_DEMO = importlib.util.find_spec("tempo.tools.demo") is not None


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH")) if p)
    return e


def tempo_cmd(*args: str, cwd: Path | None = None, timeout: float = TIMEOUT, stdin=subprocess.DEVNULL):
    return subprocess.run([sys.executable, "-m", "tempo", *args], cwd=cwd or ROOT, env=env(), capture_output=True,
                          text=True, timeout=timeout, stdin=stdin)


def write_settings(path: Path, **overrides) -> Path:
    settings = {"interval": 0.05, "max_batch_bytes": 64 * 1024, "max_buffered_bytes": 2 * 1024 * 1024,
                "payload_bytes": 512, "consumer_delay": 0.0002, "status": "recommended"}
    settings.update(overrides)
    path.write_text(json.dumps(settings))
    return path


# ---------------------------------------------------------------------------
# Units


@pytest.mark.parametrize("text, value", [
    ("512B", 512), ("512", 512), ("4KiB", 4096), ("1.5MiB", 1572864), ("64KB", 64000), ("10k", 10000),
    ("2GiB", 2 * 1024**3), ("0", 0), ("1 kib", 1024),
])
def test_sizes_parse(text, value):
    assert _util.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "12XB", "-1KiB", "KiB", "1.2.3MiB", "nan", "4 Ki B"])
def test_bad_sizes_are_value_errors(text):
    with pytest.raises(ValueError, match="size"):
        _util.parse_size(text)


@pytest.mark.parametrize("text, value", [
    ("500ms", 0.5), ("5s", 5.0), ("2m", 120.0), ("200us", 0.0002), ("1.5", 1.5), ("1h", 3600.0),
])
def test_durations_parse(text, value):
    assert _util.parse_duration(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "5x", "ms", "-2s", "2 m s"])
def test_bad_durations_are_value_errors(text):
    with pytest.raises(ValueError, match="duration"):
        _util.parse_duration(text)


@pytest.mark.parametrize("args, option", [
    (["tune", "--payload-bytes", "12XB"], "--payload-bytes"),
    (["tune", "--duration", "5 parsecs"], "--duration"),
    (["soak", "--duration", "soon"], "--duration"),
    (["soak", "--consumer-delay", "1y"], "--consumer-delay"),
    (["stress", "--max-size", "big"], "--max-size"),
    (["tune", "--payload-bytes", "0"], "--payload-bytes"),
    (["bench", "--sizes", "16,huge"], "--sizes"),
    # The soak's event header holds a 4-digit producer id: 10000 producers
    # made every event unreadable (a correctness failure of the tool itself).
    (["soak", "--producers", "10000"], "--producers"),
    # Past tempo's own limit: it was a ValueError traceback.
    (["stress", "--max-buffered-bytes", "100000GiB"], "--max-buffered-bytes"),
])
def test_a_bad_size_or_duration_is_one_line_and_exit_code_2(args, option, capsys):
    with pytest.raises(SystemExit) as e:
        rc = cli.main(args)
        raise SystemExit(rc)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option in err and "error" in err, err


@pytest.mark.parametrize("command", [["tune", "--duration", "1s"], ["stress", "--items", "1"],
                                     ["bench", "--quick", "--impls", "queue"]])
@pytest.mark.parametrize("where", ["no-such-folder/out.json", "."])
def test_an_out_file_that_cannot_be_written_is_refused_before_the_run(command, where, tmp_path, capsys):
    # Found after the run, it was a traceback that threw the whole run away.
    with pytest.raises(SystemExit) as e:
        cli.main([*command, "--out", str(tmp_path / where)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "started" not in err, err


# ---------------------------------------------------------------------------
# Files and the terminal


def test_write_atomic_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    _util.write_atomic(target, "new contents")
    assert target.read_text() == "new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_atomic_gives_the_file_the_usual_permissions(tmp_path):
    # mkstemp makes its file private (0600); a settings or results file is
    # read by other users and services, as one written by open() would be.
    umask = os.umask(0o022)
    try:
        _util.write_atomic(tmp_path / "new.json", "{}")
        old = tmp_path / "old.json"
        old.write_text("old")
        old.chmod(0o640)
        _util.write_atomic(old, "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
    assert old.stat().st_mode & 0o777 == 0o640  # a file replaced keeps its mode


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        _util.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def special_files(folder: Path) -> dict[str, Path]:
    """A FIFO, a character device (where this user may make one), a symlink to a
    set-id regular file and a dangling symlink, in ``folder``."""
    import stat

    made = {}
    os.mkfifo(folder / "fifo")
    made["fifo"] = folder / "fifo"
    try:
        os.mknod(folder / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        made["device"] = folder / "null"
    except (PermissionError, OSError):
        pass
    target = folder / "setid-target"
    target.write_text("keep me")
    target.chmod(0o4755)
    (folder / "link").symlink_to(target)
    made["symlink"] = folder / "link"
    (folder / "dangling").symlink_to(folder / "nowhere")
    made["dangling symlink"] = folder / "dangling"
    return made


def file_kind(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_mode, st.st_rdev


def test_write_atomic_never_replaces_a_fifo_device_or_symlink(tmp_path):
    # It renamed a new file over whatever the path was: a FIFO and a device
    # node became regular files, a link to a setuid file a setuid JSON file.
    for kind, path in special_files(tmp_path).items():
        before = file_kind(path)
        with pytest.raises(_util.NotARegularFile, match="regular files only"):
            _util.write_json(path, {"x": 1})
        assert file_kind(path) == before, kind
    assert (tmp_path / "setid-target").read_text() == "keep me"
    assert not (tmp_path / "nowhere").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_atomic_never_gives_set_id_or_execute_bits(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    target.chmod(0o6755)
    umask = os.umask(0o022)
    try:
        _util.write_atomic(target, "{}")
    finally:
        os.umask(umask)
    assert target.stat().st_mode & 0o7777 == 0o644


@pytest.mark.parametrize("command", [["tune", "--duration", "1s"], ["stress", "--items", "1"],
                                     ["bench", "--quick", "--impls", "queue"]])
def test_an_out_path_that_is_not_a_regular_file_is_one_line_and_exit_code_2(command, tmp_path, capsys):
    for kind, path in special_files(tmp_path).items():
        before = file_kind(path)
        with pytest.raises(SystemExit) as e:
            cli.main([*command, "--out", str(path)])
        assert e.value.code == 2, kind
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--out" in err and "regular files only" in err and "started" not in err, err
        assert file_kind(path) == before, kind


def test_an_out_path_turned_into_a_fifo_during_the_run_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    out = tmp_path / "report.json"
    monkeypatch.setattr(_util, "write_json", lambda path, obj, _w=_util.write_json: (os.mkfifo(path), _w(path, obj)))
    rc = cli.main(["stress", "--items", "1", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"tempo stress: error: {str(out)!r} is a FIFO; results are written to regular files only"
    assert os.path.exists(out) and not out.is_file()


def test_an_ignored_sigint_stays_ignored():
    # A tool started with SIGINT ignored (a background job of a script, nohup)
    # must not become interruptible, nor leave SIGINT handled after it.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _util.Interrupt():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_progress_draws_a_bar_on_a_terminal_and_nothing_elsewhere():
    tty = io.StringIO()
    p = _util.Progress(10.0, "soak", stream=tty, enabled=True)
    p.update(5.0, "in 1k/s", force=True)
    line = tty.getvalue()
    assert line.startswith("\rsoak [############------------]  50%") and "left" in line and "in 1k/s" in line
    p.close()
    assert tty.getvalue().endswith("\r")
    quiet = io.StringIO()  # StringIO is not a terminal: the default is quiet
    q = _util.Progress(10.0, "soak", stream=quiet)
    q.update(5.0, force=True)
    q.close()
    assert quiet.getvalue() == ""


def test_progress_on_a_terminal_that_reports_no_width(monkeypatch):
    # A pty nobody sized (docker exec -t, script) says 0 columns: the line was
    # cut to line[:-1], and to nothing on a 1-column report.
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((0, 0)))
    tty = io.StringIO()
    _util.Progress(10.0, "soak", stream=tty, enabled=True).update(5.0, "in 1k/s", force=True)
    assert tty.getvalue().endswith("in 1k/s")


# ---------------------------------------------------------------------------
# The command


def test_python_m_tempo_help_lists_every_subcommand():
    r = tempo_cmd("--help")
    assert r.returncode == 0
    for name in cli.COMMANDS:
        assert f"    {name} " in r.stdout, name


@pytest.mark.parametrize("name", ["tune", "soak", "stress", "bench"])
def test_each_subcommand_has_its_help(name):
    r = tempo_cmd(name, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: tempo {name}") and "--json" in r.stdout


def test_no_subcommand_is_a_usage_error():
    r = tempo_cmd()
    assert r.returncode == 2 and "COMMAND" in r.stderr


def test_the_console_script_is_installed_beside_the_interpreter():
    script = Path(sys.executable).parent / "tempo"
    if not script.exists():
        pytest.skip("tempo is not pip-installed into this environment")
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=TIMEOUT, env=env())
    assert r.returncode == 0 and r.stdout.strip() == f"tempo {tempo.__version__}"


@pytest.mark.skipif(HAVE_DEMO, reason="the demo is in this tree")
def test_demo_without_the_demo_module_says_so():
    r = tempo_cmd("demo")
    assert r.returncode == 2 and "tempo.tools.demo" in r.stderr


@pytest.mark.skipif(not HAVE_DEMO, reason="tempo.tools.demo is not in this tree yet")
def test_demo_help_is_the_demo_s_own():
    r = tempo_cmd("demo", "--help")
    assert r.returncode == 0 and "usage" in r.stdout


# ---------------------------------------------------------------------------
# stress


def test_stress_json_reports_every_payload_delivered_once():
    r = tempo_cmd("stress", "--producers", "16", "--items", "300", "--consumers", "3", "--max-size", "1KiB",
                  "--max-buffered-bytes", "64KiB", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True and out["issues"] == [] and out["interrupted"] is False
    assert out["accepted"] == out["delivered"] == 16 * 300
    assert "started" in r.stderr


def test_stress_exits_1_with_a_precise_report_when_a_batch_is_lost(monkeypatch, capsys, tmp_path):
    class LosesOneBatch(tempo.Dispatcher):
        """Hands every batch out but the third, which it releases unseen."""

        def batches(self):
            for i, batch in enumerate(super().batches()):
                if i == 2:
                    lost.extend(stress.HEADER.unpack_from(item) for item in batch.tolist())
                    continue
                yield batch

    lost: list = []
    monkeypatch.setattr(stress.tempo, "Dispatcher", LosesOneBatch)
    out_file = tmp_path / "stress.json"
    rc = cli.main(["stress", "--producers", "2", "--items", "200", "--consumers", "1", "--min-size", "8",
                   "--max-size", "8", "--max-batch-bytes", "80", "--out", str(out_file)])
    assert rc == 1
    report = json.loads(out_file.read_text())
    assert report["ok"] is False and report["delivered"] == 400 - len(lost) == 390
    # Every lost payload is named: producer and exact sequence numbers.
    by_producer: dict = {}
    for pid, seq in lost:
        by_producer.setdefault(pid, []).append(seq)
    expected = sorted(f"producer {pid}: seq {min(s)}-{max(s)} accepted but never delivered"
                      for pid, s in by_producer.items())
    assert sorted(report["issues"]) == expected
    assert "FAILED" in capsys.readouterr().out


def test_stress_verify_names_duplicates_and_holes():
    ranges = [[(0, 0, 4), (0, 3, 6), (1, 0, 1)], [(1, 4, 5)]]
    report = stress.verify(2, [7, 6], ranges, [[], []])
    assert report["issues"] == [
        "producer 0: seq 3-4 delivered more than once",
        "producer1: seq 2-3 accepted but never delivered".replace("producer1", "producer 1"),
    ]


# ---------------------------------------------------------------------------
# tune


def test_tune_writes_its_settings_and_prints_json(tmp_path):
    out = tmp_path / "settings.json"
    r = tempo_cmd("tune", "--payload-bytes", "4KiB", "--duration", "400ms", "--producers", "2", "--out", str(out),
                  "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    written = json.loads(out.read_text())
    for key in ("interval", "max_batch_bytes", "max_buffered_bytes", "payload_bytes", "consumer_delay", "status",
                "machine"):
        assert key in written, key
    assert written["payload_bytes"] == 4096 and written["status"] in ("recommended", "provisional")
    assert written["interrupted"] is False and written["machine"]["cpus"] == os.cpu_count()
    assert 1 <= len(written["probes"]) <= 12
    assert {k: v for k, v in printed.items() if k != "written_to"} == written
    assert f'tempo.Dispatcher(**tempo.load_settings("{out}"))' in r.stderr
    # What it wrote is a valid configuration, and soak reads it.
    tempo.Config(interval=written["interval"], max_batch_bytes=written["max_batch_bytes"],
                 max_buffered_bytes=written["max_buffered_bytes"])
    lap = written["first_lap"]
    assert lap["max_buffered_bytes"] == written["max_buffered_bytes"] and lap["default"]["ratio"] > 0
    assert tempo.load_settings(out).get("prefault", False) is lap["prefault_helps"]


def test_tune_off_a_terminal_does_not_ask_and_takes_10KiB(tmp_path):
    r = tempo_cmd("tune", "--duration", "200ms", "--producers", "1", "--out", "", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["payload_bytes"] == 10240
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# soak


def soak_files(folder: Path) -> tuple[dict, list[dict]]:
    results = list(folder.glob("soak-*-results.json"))
    samples = list(folder.glob("soak-*.jsonl"))
    assert len(results) == 1 and len(samples) == 1, list(folder.iterdir())
    lines = [json.loads(line) for line in samples[0].read_text().splitlines()]
    return json.loads(results[0].read_text()), lines


def test_soak_writes_samples_results_and_an_assessment(tmp_path):
    settings = write_settings(tmp_path / "s.json")
    r = tempo_cmd("soak", "--duration", "2s", "--settings", str(settings), "--out", str(tmp_path / "out"),
                  "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res, samples = soak_files(tmp_path / "out")
    assert json.loads(r.stdout) == res
    assert res["settings_source"] == f"settings from {settings}" and res["interrupted"] is False
    assert res["settings"] == {"interval": 0.05, "max_batch_bytes": 65536, "max_buffered_bytes": 2097152}
    assert res["consumer_delay"] == 0.0002
    t = res["totals"]
    assert t["accepted"] == t["delivered"] > 0 and t["batches"] > 0 and t["dropped"] == 0
    assert set(res["assessment"]) == {"correctness", "pressure", "memory", "drain", "overall"}
    for section in res["assessment"].values():
        assert section["status"] in ("pass", "warn", "fail") and section["notes"]
    assert res["assessment"]["correctness"]["status"] == "pass"
    assert res["assessment"]["drain"]["status"] == "pass"
    assert res["peak_backlog_bytes"] <= 2097152
    for key in ("accepted_per_s", "delivered_per_s", "rejected_per_s"):
        assert set(res["rates"][key]) == {"min", "avg", "max"}
    assert res["drain_s"] >= 0 and res["shutdown_s"] >= res["drain_s"] and res["peak_rss"] > 0
    assert samples[-1]["final"] is True and samples[-1]["delivered"] == t["delivered"]
    assert {"accepted", "rejected", "delivered", "batches", "backlog_bytes", "rss", "threads"} <= set(samples[0])
    assert "started" in r.stderr and str(settings) in r.stderr


def test_two_soaks_started_in_the_same_second_keep_both_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_util, "timestamp", lambda: "20260101-000000")
    settings = write_settings(tmp_path / "s.json")
    for _ in range(2):
        assert cli.main(["soak", "--duration", "200ms", "--settings", str(settings), "--out", str(tmp_path),
                         "--json"]) == 0
    names = sorted(p.name for p in tmp_path.glob("soak-*"))
    assert names == ["soak-20260101-000000-2-results.json", "soak-20260101-000000-2.jsonl",
                     "soak-20260101-000000-results.json", "soak-20260101-000000.jsonl"]


def test_soak_uses_the_tune_output_in_the_current_directory(tmp_path):
    write_settings(tmp_path / "tempo-settings.json", max_buffered_bytes=1024 * 1024)
    r = tempo_cmd("soak", "--duration", "1s", "--out", "out", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["settings_source"].startswith("settings from ./tempo-settings.json")
    assert res["settings"]["max_buffered_bytes"] == 1024 * 1024


def test_soak_without_settings_says_it_uses_safe_defaults(tmp_path):
    r = tempo_cmd("soak", "--duration", "1s", "--consumer-delay", "0", "--out", ".", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["settings_source"].startswith("safe defaults")
    assert "safe defaults" in r.stderr
    assert res["settings"] == {"interval": 0.25, "max_batch_bytes": 262144, "max_buffered_bytes": 33554432}


@pytest.mark.parametrize("content, message", [
    # tempo.load_settings's reader and messages (one reader for both).
    ("{not json", "bad.json' is not a settings file: not JSON"),
    ("[1, 2]", "a JSON object was expected, not list"),
    ('{"interval": 0.1}', "it has no 'max_buffered_bytes'"),
    ('{"interval": -1, "max_buffered_bytes": 1024}', "bad.json': interval must be greater than zero"),
    # json.loads raised RecursionError: a traceback, not a usage error.
    ('{"interval": 0.1, "max_buffered_bytes": 1048576, "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "not JSON (nested too deep)"),
    ('{"interval": 0.1, "max_buffered_bytes": "lots"}', "max_buffered_bytes"),
    ('{"interval": 0.1, "max_buffered_bytes": 1024, "consumer_delay": "slow"}', "consumer_delay"),
    # Infinity made the results (and --json) invalid JSON, and a soak whose
    # batches are never sealed by time.
    ('{"interval": Infinity, "max_buffered_bytes": 1048576}', "interval must be a finite number"),
    # Every large event would be PayloadTooLarge: a failed run instead of an answer.
    ('{"interval": 0.1, "max_buffered_bytes": 1000}', "smaller than the soak's largest event"),
])
def test_a_bad_settings_file_is_a_clear_error(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    r = tempo_cmd("soak", "--duration", "1s", "--settings", str(bad), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("tempo soak: error: ") and message in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_settings_file_is_a_clear_error(tmp_path):
    r = tempo_cmd("soak", "--settings", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib not installed")
def test_soak_plot_writes_a_png(tmp_path):
    settings = write_settings(tmp_path / "s.json")
    r = tempo_cmd("soak", "--duration", "1s", "--settings", str(settings), "--out", ".", "--plot", "--json",
                  cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    png = Path(json.loads(r.stdout)["files"]["plot"])
    assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_soak_plot_without_matplotlib_fails_before_the_run_and_names_the_extra(tmp_path):
    # It ran the whole soak first, then named `tempo[plot]`: an unrelated PyPI project.
    settings = write_settings(tmp_path / "s.json")
    code = ("import sys; sys.modules['matplotlib'] = None; from tempo.tools.cli import main; "
            f"sys.exit(main(['soak', '--duration', '10m', '--settings', {str(settings)!r}, '--out', '.', '--plot']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env(), capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 2, r.stderr
    assert r.stderr == ('tempo soak: error: --plot needs matplotlib, which is not installed: '
                        'pip install "tempo-batcher[plot]"\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_every_install_hint_names_this_project_s_extras():
    # "tempo" on PyPI is an unrelated project: `pip install tempo[...]` installs it.
    import re

    files = [*ROOT.glob("tempo/**/*.py"), *ROOT.glob("docs/**/*.md"), *ROOT.glob("*.md"), *ROOT.glob("bench/*.py"),
             *ROOT.glob("examples/*.py"), *ROOT.glob("examples/*.md"), ROOT / "Makefile"]
    wrong = [f"{f.relative_to(ROOT)}: {m.group(0)}" for f in files
             for m in re.finditer(r"""pip install ["']?tempo\[""", f.read_text(encoding="utf-8"))]
    assert wrong == []


@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's shadow memory exceeds any address-space cap")
@pytest.mark.parametrize("command", ["soak", "stress", "demo"])
def test_a_buffer_this_machine_cannot_map_is_one_line_and_exit_code_2(command, tmp_path):
    # A bound within tempo's limits that the kernel refuses to map (the
    # address space capped below the mirrored ring's 16 GiB): MemoryError,
    # once a traceback and exit code 1.
    huge = 8 << 30
    args = {"soak": ["--duration", "1s", "--settings", str(write_settings(tmp_path / "s.json",
                                                                          max_buffered_bytes=huge))],
            "stress": ["--items", "10", "--max-buffered-bytes", str(huge)],
            "demo": ["--events", "10", "--max-buffered-bytes", str(huge)]}[command]
    capped = ("import resource, runpy, sys; "
              "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
              "sys.argv = ['tempo', *sys.argv[1:]]; runpy.run_module('tempo', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", capped, command, *args], cwd=tmp_path, env=env(),
                       capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"tempo {command}: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "max_buffered_bytes" in r.stderr


# ---------------------------------------------------------------------------
# Ctrl-C


def interrupt_at(args: list[str], cwd: Path, markers: tuple[str, ...] = ("started",)) -> tuple[int, str, str]:
    """Start ``tempo ARGS``; each time its stderr shows the next of ``markers``,
    send SIGINT; collect it. Each marker must come within 30 s."""
    with interruptible_children():
        proc = subprocess.Popen([sys.executable, "-m", "tempo", *args], cwd=cwd, env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
    err = ""
    try:
        for marker in markers:
            deadline = time.monotonic() + 30
            while marker not in err:
                assert time.monotonic() < deadline, f"never said {marker!r}: {err}"
                ready, _, _ = select.select([proc.stderr], [], [], 1.0)
                if ready:
                    line = proc.stderr.readline()
                    assert line, f"exited before saying {marker!r}: {err}"
                    err += line
            proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err + rest


def test_ctrl_c_stops_soak_drains_and_writes_interrupted_results(tmp_path):
    settings = write_settings(tmp_path / "s.json")
    rc, out, err = interrupt_at(["soak", "--duration", "10m", "--settings", str(settings), "--out", ".",
                                 "--json"], tmp_path)
    assert rc == 130, err
    res, samples = soak_files(tmp_path)
    assert json.loads(out) == res
    assert res["interrupted"] is True and res["duration_s"] < 60
    assert res["totals"]["accepted"] == res["totals"]["delivered"]
    assert res["assessment"]["correctness"]["status"] == "pass"
    assert res["assessment"]["drain"]["status"] == "pass"
    assert any("interrupted" in n for n in res["assessment"]["overall"]["notes"])
    assert samples[-1]["final"] is True


def test_a_second_ctrl_c_aborts_the_soak_drain_and_still_writes_the_results(tmp_path):
    # A slow consumer and a full 32 MiB backlog: the drain takes minutes.
    rc, out, err = interrupt_at(["soak", "--duration", "10m", "--consumer-delay", "20ms", "--out", ".", "--json"],
                                tmp_path, markers=("started", "draining"))
    assert rc == 130, err
    res, samples = soak_files(tmp_path)
    assert json.loads(out) == res and res["interrupted"] is True
    t = res["totals"]
    assert t["dropped"] > 0 and t["delivered"] + t["dropped"] == t["accepted"]
    assert res["assessment"]["drain"]["status"] == "fail"
    assert any("second Ctrl-C" in n for n in res["assessment"]["drain"]["notes"])
    # What stop() dropped is each producer's tail: nothing else is missing.
    assert res["assessment"]["correctness"]["status"] == "pass", res["assessment"]["correctness"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_ctrl_c_stops_tune_and_writes_a_provisional_result_beside_the_settings(tmp_path):
    # It overwrote ./tempo-settings.json with a provisional 256 MiB budget no
    # probe supported, which the next `tempo soak` then used.
    settings = write_settings(tmp_path / "tempo-settings.json")
    before = settings.read_text()
    rc, out, err = interrupt_at(["tune", "--payload-bytes", "1KiB", "--duration", "4m", "--json"], tmp_path)
    assert rc == 130, err
    assert settings.read_text() == before
    partial = tmp_path / "tempo-settings.interrupted.json"
    written = json.loads(partial.read_text())
    assert json.loads(out) == dict(written, written_to="tempo-settings.interrupted.json")
    assert written["interrupted"] is True and written["status"] == "provisional"
    assert len(written["probes"]) == 1 and written["probes"][0]["interrupted"] is True
    assert "load_settings" not in err


def test_a_second_ctrl_c_during_a_tune_probe_still_writes_a_provisional_result(monkeypatch, tmp_path):
    from tempo.tools import tune

    class CtrlCInWarmUp(tempo.Dispatcher):
        def flush(self, timeout=None):
            raise KeyboardInterrupt  # as the second Ctrl-C, while a probe warms up

    monkeypatch.setattr(tune.tempo, "Dispatcher", CtrlCInWarmUp)
    out_file = tmp_path / "settings.json"
    rc = cli.main(["tune", "--payload-bytes", "1KiB", "--duration", "1s", "--out", str(out_file)])
    assert rc == 130
    assert not out_file.exists()
    written = json.loads((tmp_path / "settings.interrupted.json").read_text())
    assert written["interrupted"] is True and written["status"] == "provisional"
    assert len(written["probes"]) == 1 and written["probes"][0]["interrupted"] is True


# ---------------------------------------------------------------------------
# bench


def test_bench_quick_json_puts_tempo_beside_the_others():
    r = tempo_cmd("bench", "--quick", "--sizes", "256", "--impls", "tempo,purepy,queue", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    impls = [c["impl"] for c in out["results"]]
    assert impls == ["tempo", "purepy", "queue"]
    for c in out["results"]:
        assert c["size"] == 256 and c["ok_runs"] == 1 and c["items_per_s"] > 0
        assert c["bytes_per_s"] == c["items_per_s"] * 256
        assert "held_blocks_per_payload" in c
    by = {c["impl"]: c for c in out["results"]}
    assert by["purepy"]["tempo_ratio"] == pytest.approx(by["tempo"]["items_per_s"] / by["purepy"]["items_per_s"])
    # tempo copies each payload into its arena and keeps no object per payload;
    # the others keep the payload object itself.
    assert by["tempo"]["held_blocks_per_payload"] == 0
    assert by["purepy"]["held_blocks_per_payload"] >= 1 and by["queue"]["held_blocks_per_payload"] >= 1


@pytest.mark.skipif(not hasattr(tempo.Dispatcher, "enqueue_many"), reason="no Dispatcher.enqueue_many here")
def test_bench_reports_enqueue_many_beside_enqueue():
    r = tempo_cmd("bench", "--quick", "--sizes", "256", "--impls", "tempo,tempo-many", "--no-alloc", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [c["impl"] for c in out["results"]] == ["tempo", "tempo-many"]
    tempo_, many = out["results"]
    assert many["items_per_s"] > 0
    assert many["enqueue_many_speedup"] == pytest.approx(many["items_per_s"] / tempo_["items_per_s"])
    assert "enqueue_many (chunks of 256) vs a loop of enqueue" not in r.stdout  # --json: nothing but the object


def test_bench_refuses_a_size_its_workload_cannot_hold(monkeypatch, capsys):
    # W1 keeps a pool of at least 256 distinct payloads and a 64 MiB buffer:
    # --sizes 100MiB meant 25 GiB pools per child (and PayloadTooLarge).
    def no_child(*a, **k):
        raise AssertionError("a benchmark process was started")

    monkeypatch.setattr(_util, "run_json_child", no_child)
    assert cli.main(["bench", "--sizes", "256,100MiB", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tempo bench: error: --sizes: 100 MiB is over") and err.count("\n") == 1, err


def test_bench_unknown_implementation_is_a_usage_error():
    r = tempo_cmd("bench", "--impls", "tempo,redis")
    assert r.returncode == 2 and "redis" in r.stderr


def test_ctrl_c_stops_stress_and_still_verifies_what_was_accepted(tmp_path):
    out_file = tmp_path / "stress.json"
    rc, out, err = interrupt_at(["stress", "--producers", "8", "--items", "10000000", "--out",
                                 str(out_file)], tmp_path)
    assert rc == 130, err
    report = json.loads(out_file.read_text())
    assert report["interrupted"] is True and report["ok"] is True and report["issues"] == []
    assert 0 < report["accepted"] == report["delivered"] < 8 * 10_000_000
    assert out.startswith("interrupted: OK")


# ---------------------------------------------------------------------------
# How the tuner decides (its probes replaced by a machine whose edge is known)


def fake_probe(edge: int | None, calls: list):
    """A machine where a probe is healthy iff its budget is >= ``edge`` (every
    probe, if ``edge`` is None: no budget ever meets pressure)."""
    from tempo.tools import tune

    def probe(payload, producers, delay, budget, seconds, drain_bound, rate=None, intr=None):
        calls.append((delay, budget, rate))
        healthy = edge is None or budget >= edge
        return {"producers": producers, "offered_items_per_s": rate, "consumer_delay": delay,
                "max_buffered_bytes": budget, "max_batch_bytes": tune.batch_bytes_for(payload, budget),
                "seconds": seconds, "items_per_s": 1000.0, "bytes_per_s": 1000.0 * payload,
                "peak_buffered_bytes": 0, "peak_rss": 0, "rejections": 0 if healthy else 5,
                "rejection_rate": 0.0, "drain_s": 0.0, "drain_timed_out": False, "healthy": healthy,
                "interrupted": False}

    return probe


def run_fake_tune(monkeypatch, edge):
    from tempo.tools import tune

    calls: list = []
    monkeypatch.setattr(tune, "probe", fake_probe(edge, calls))
    progress = _util.Progress(tune.MAX_PROBES, "tune", enabled=False)
    with _util.Interrupt() as intr:
        return tune.tune(10 * 1024, 4, 1.0, progress, intr), calls


def test_tune_recommends_the_smallest_healthy_budget_at_the_edge(monkeypatch):
    mib = 1024 * 1024
    result, calls = run_fake_tune(monkeypatch, edge=5 * mib)
    assert result["status"] == "recommended"
    assert result["consumer_delay"] == 10e-6  # the first delay shows the edge
    # Search from 40 MiB: 40 (healthy), 10 (healthy), 3 (pressure), then bisect: 6 (healthy), 5 (healthy).
    assert [b // mib for d, b, r in calls if r] == [40, 10, 3, 6, 5]
    assert result["max_buffered_bytes"] == 5 * mib and result["first_pressure_budget"] == 3 * mib
    assert all(r == 0.5 * 1000.0 for d, b, r in calls[2:])  # paced at half the consumer's capacity
    assert len(calls) <= 12


def test_tune_that_finds_no_healthy_setting_never_overwrites_the_settings(monkeypatch, tmp_path, capsys):
    from tempo.tools import tune

    settings = write_settings(tmp_path / "settings.json")
    before = settings.read_text()
    monkeypatch.setattr(tune, "probe", fake_probe(2**62, []))
    assert cli.main(["tune", "--payload-bytes", "1KiB", "--duration", "1s", "--out", str(settings)]) == 1
    assert settings.read_text() == before
    written = json.loads((tmp_path / "settings.unhealthy.json").read_text())
    assert written["healthy"] is False and written["interrupted"] is False and written["status"] == "provisional"
    out = capsys.readouterr().out
    assert "settings.unhealthy.json (not to be used as settings)" in out and "load_settings" not in out


def test_tune_prints_the_line_that_uses_its_settings(monkeypatch, tmp_path, capsys):
    from tempo.tools import tune

    monkeypatch.setattr(tune, "probe", fake_probe(5 * 1024 * 1024, []))
    out_file = tmp_path / "s.json"
    assert cli.main(["tune", "--payload-bytes", "1KiB", "--duration", "1s", "--out", str(out_file)]) == 0
    assert json.loads(out_file.read_text())["healthy"] is True
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f'to use these settings: tempo.Dispatcher(**tempo.load_settings("{out_file}"))'


def test_tune_without_an_edge_is_provisional_and_stays_within_its_probes(monkeypatch):
    result, calls = run_fake_tune(monkeypatch, edge=None)
    assert result["status"] == "provisional"
    assert len(calls) == len(result["probes"]) <= 12
    assert any("provisional" in n for n in result["notes"])


def fake_first_laps(default_us: float, prefault_us: float, calls: list):
    """Lap 1 takes ``default_us`` per item on a fresh dispatcher and
    ``prefault_us`` with prefault=True; steady state takes 1 us."""
    def first_laps(payload, budget, prefault, intr):
        calls.append((budget, prefault))
        first = prefault_us if prefault else default_us
        return {"prefault": prefault, "make_s": 0.05 if prefault else 0.0, "items_timed": 100,
                "lap1_us_per_item": first, "steady_us_per_item": 1.0, "ratio": first}

    return first_laps


def test_tune_recommends_prefault_when_the_first_lap_is_slow_and_prefault_helps(monkeypatch, tmp_path, capsys):
    from tempo.tools import tune

    calls: list = []
    monkeypatch.setattr(tune, "probe", fake_probe(5 * 1024 * 1024, []))
    monkeypatch.setattr(tune, "first_laps", fake_first_laps(8.0, 1.1, calls))
    out_file = tmp_path / "s.json"
    assert cli.main(["tune", "--payload-bytes", "1KiB", "--duration", "1s", "--out", str(out_file)]) == 0
    written = json.loads(out_file.read_text())
    assert calls == [(written["max_buffered_bytes"], False), (written["max_buffered_bytes"], True)]
    assert written["prefault"] is True and written["first_lap"]["prefault_helps"] is True
    assert tempo.load_settings(out_file) == {"interval": written["interval"],
                                             "max_buffered_bytes": written["max_buffered_bytes"],
                                             "max_batch_bytes": written["max_batch_bytes"], "prefault": True}
    out = capsys.readouterr().out
    assert "  first lap             8.0x steady state per item (8.0 us against 1.0 us); " \
           "with prefault=True 1.1x (1.1 us)" in out.splitlines()
    assert "  prefault              True: the first lap is slow without it (see first lap above)" in out.splitlines()
    assert any(line.startswith("note: prefault: the first lap took 8.0x steady state") for line in out.splitlines())


@pytest.mark.parametrize("default_us, prefault_us, measured", [
    (8.0, 6.0, [False, True]),  # slow, but prefault=True does not help enough
    (1.5, 1.0, [False]),  # not slow: prefault=True is not even measured
])
def test_tune_leaves_prefault_out_where_it_would_not_help(monkeypatch, tmp_path, default_us, prefault_us, measured):
    from tempo.tools import tune

    calls: list = []
    monkeypatch.setattr(tune, "probe", fake_probe(5 * 1024 * 1024, []))
    monkeypatch.setattr(tune, "first_laps", fake_first_laps(default_us, prefault_us, calls))
    out_file = tmp_path / "s.json"
    assert cli.main(["tune", "--payload-bytes", "1KiB", "--duration", "1s", "--out", str(out_file)]) == 0
    written = json.loads(out_file.read_text())
    assert [prefault for _, prefault in calls] == measured
    assert "prefault" not in written and "prefault" not in tempo.load_settings(out_file)
    assert written["first_lap"]["slow"] is (default_us >= tune.FIRST_LAP_SLOW)
    assert any("did not help enough" in n for n in written["notes"]) is (len(measured) == 2)


def test_ctrl_c_while_tune_times_the_first_lap_makes_the_result_provisional(monkeypatch, tmp_path):
    from tempo.tools import tune

    def interrupted(payload, budget, prefault, intr):
        intr.requested = True  # as a Ctrl-C during the measurement
        return None

    monkeypatch.setattr(tune, "probe", fake_probe(5 * 1024 * 1024, []))
    monkeypatch.setattr(tune, "first_laps", interrupted)
    out_file = tmp_path / "s.json"
    assert cli.main(["tune", "--payload-bytes", "1KiB", "--duration", "1s", "--out", str(out_file)]) == 130
    assert not out_file.exists()
    written = json.loads((tmp_path / "s.interrupted.json").read_text())
    assert written["interrupted"] is True and written["status"] == "provisional"
    assert written["first_lap"] is None and "prefault" not in written


def test_the_first_lap_is_measured_on_fresh_dispatchers():
    from tempo.tools import tune

    with _util.Interrupt() as intr:
        laps = tune.first_laps(1024, 1024 * 1024, True, intr)
    assert laps["prefault"] is True and laps["items_timed"] == 1024
    assert laps["lap1_us_per_item"] > 0 and laps["steady_us_per_item"] > 0 and laps["ratio"] > 0


def test_tune_refuses_a_payload_too_large_to_probe_on_this_machine(capsys, monkeypatch):
    # 64 MiB payloads meant 8 GiB budgets (128 payloads each), filled on every
    # probe: minutes of copying and a third of this machine's memory.
    monkeypatch.setattr(_util, "total_memory", lambda: 16 * 1024**3)
    t0 = time.monotonic()
    assert cli.main(["tune", "--payload-bytes", "64MiB", "--duration", "1s", "--out", ""]) == 2
    assert time.monotonic() - t0 < 5
    err = capsys.readouterr().err
    assert err.startswith("tempo tune: error: --payload-bytes 64 MiB is too large") and err.count("\n") == 1, err


def test_a_paced_probe_at_a_tiny_rate_still_ends_on_time():
    # At 0.01 items/s a producer's next payload is due in minutes: it slept
    # until then, and the probe waited for it.
    from tempo.tools import tune

    t0 = time.monotonic()
    r = tune.probe(1024, 2, 0.0, 1024 * 1024, 0.05, 0.5, rate=0.01)
    assert r["healthy"] and time.monotonic() - t0 < 10


def test_tune_asks_for_the_payload_size_until_it_gets_one(monkeypatch, capsys):
    from tempo.tools import tune

    answers = iter(["lots", "0", "4KiB"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert tune.ask_payload_size() == 4096
    out = capsys.readouterr().out
    assert "bad size 'lots'" in out and "greater than zero" in out
    monkeypatch.setattr("builtins.input", lambda prompt: "")
    assert tune.ask_payload_size() == 10 * 1024


def test_stress_reports_payloads_out_of_order_within_a_batch(monkeypatch, tmp_path):
    class SwapsTwo(tempo.Dispatcher):
        """Shows the first batch with its first two items swapped."""

        def batches(self):
            for i, batch in enumerate(super().batches()):
                items = batch.tolist()
                if i == 0:
                    items[0], items[1] = items[1], items[0]
                    swapped.extend(stress.HEADER.unpack_from(x) for x in items[:2])
                batch.release()
                yield items

    swapped: list = []
    monkeypatch.setattr(stress.tempo, "Dispatcher", SwapsTwo)
    out_file = tmp_path / "stress.json"
    rc = cli.main(["stress", "--producers", "1", "--items", "50", "--consumers", "1", "--max-size", "64",
                   "--out", str(out_file)])
    assert rc == 1
    (pid, second), (_, first) = swapped
    report = json.loads(out_file.read_text())
    assert report["delivered"] == report["accepted"] == 50
    assert f"producer {pid}: seq {first} follows seq {second} within one batch" in report["issues"]


def test_stress_reports_a_payload_whose_middle_byte_is_not_its_own(monkeypatch, tmp_path):
    class CorruptsOneByte(tempo.Dispatcher):
        """Shows the first batch with one byte in the middle of its first item changed."""

        def batches(self):
            for i, batch in enumerate(super().batches()):
                items = batch.tolist()
                batch.release()
                if i == 0:
                    first = bytearray(items[0])
                    middle = len(first) // 2
                    first[middle] ^= 0xFF
                    items[0] = bytes(first)
                    corrupted.append((*stress.HEADER.unpack_from(first), middle, len(first)))
                yield items

    corrupted: list = []
    monkeypatch.setattr(stress.tempo, "Dispatcher", CorruptsOneByte)
    out_file = tmp_path / "stress.json"
    rc = cli.main(["stress", "--producers", "1", "--items", "50", "--consumers", "1", "--min-size", "64",
                   "--max-size", "64", "--out", str(out_file)])
    assert rc == 1
    [(pid, seq, middle, size)] = corrupted
    report = json.loads(out_file.read_text())
    assert report["delivered"] == report["accepted"] == 50  # nothing lost or repeated: one byte is wrong
    assert report["issues"] == [f"producer {pid} seq {seq}: payload bytes are not its own "
                                f"(byte {middle} of {size} differs)"]


def test_stress_payloads_carry_a_filler_that_differs_between_neighbours():
    pattern = stress.filler_pattern(64)
    a, b = stress.payload(0, 0, 64, pattern), stress.payload(0, 1, 64, pattern)
    assert len(a) == len(b) == 64 and stress.HEADER.unpack_from(b) == (0, 1)
    assert all(x != y for x, y in zip(a[8:], b[8:], strict=True))  # every filler byte is told apart


def test_stress_reports_batches_a_consumer_got_out_of_order(monkeypatch, tmp_path):
    class SwapsFirstTwoBatches(tempo.Dispatcher):
        def batches(self):
            held = None
            for i, batch in enumerate(super().batches()):
                items = batch.tolist()
                batch.release()
                if i == 0:
                    held = items
                    continue
                yield items
                if held is not None:
                    seqs.extend(stress.HEADER.unpack_from(x)[1] for x in (items[0], held[0]))
                    yield held
                    held = None

    seqs: list = []
    monkeypatch.setattr(stress.tempo, "Dispatcher", SwapsFirstTwoBatches)
    out_file = tmp_path / "stress.json"
    rc = cli.main(["stress", "--producers", "1", "--items", "200", "--consumers", "1", "--max-size", "64",
                   "--max-batch-bytes", "512", "--out", str(out_file)])
    assert rc == 1
    later, first = seqs
    report = json.loads(out_file.read_text())
    assert report["delivered"] == report["accepted"] == 200  # nothing lost or repeated: only the order is wrong
    assert first == 0 < later
    assert any(i.startswith("producer 0: seq 0-") and "out of order" in i for i in report["issues"]), report["issues"]


def test_ctrl_c_during_the_stress_drain_still_reports(monkeypatch, tmp_path):
    class CtrlCInShutdown(tempo.Dispatcher):
        def shutdown(self, timeout=None):
            raise KeyboardInterrupt  # as a Ctrl-C while it drains

    monkeypatch.setattr(stress.tempo, "Dispatcher", CtrlCInShutdown)
    out_file = tmp_path / "stress.json"
    rc = cli.main(["stress", "--producers", "2", "--items", "50", "--consumers", "1", "--out", str(out_file)])
    assert rc == 130
    report = json.loads(out_file.read_text())
    assert report["interrupted"] is True and report["accepted"] == 100
    assert "drain aborted by Ctrl-C" in report["issues"][0]


def test_import_tempo_does_not_import_the_tools():
    code = "import sys, tempo; print(sorted(m for m in sys.modules if m.startswith('tempo.tools')))"
    r = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


# ---------------------------------------------------------------------------
# Adversarial review (issue 15, second pass): failed writes, bounds, children


def disk_full(monkeypatch, calls: list | None = None):
    """Every rename of a result into place fails as on a full disk."""
    import errno

    def replace(src, dst):
        if calls is not None:
            calls.append(dst)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_util.os, "replace", replace)


@pytest.mark.parametrize("command", ["stress", "bench", "tune"])
def test_a_result_file_that_cannot_be_written_loses_nothing_printed_and_exits_3(command, monkeypatch, tmp_path,
                                                                              capsys):
    # The write came first and its OSError was a traceback, exit 1: the whole
    # result (minutes of tune or bench) was gone.
    from tempo.tools import bench, tune

    out_file = tmp_path / "result.json"
    args = {"stress": ["stress", "--producers", "2", "--items", "50", "--json"],
            "bench": ["bench", "--sizes", "16", "--impls", "queue", "--quick", "--no-alloc", "--json"],
            "tune": ["tune", "--payload-bytes", "1KiB", "--duration", "1s", "--json"]}[command]
    monkeypatch.setattr(tune, "probe", fake_probe(5 * 1024 * 1024, []))
    monkeypatch.setattr(bench, "run_child", lambda module, a, prefix: {
        "items_per_s": 1000.0, "elapsed_s": 1.0, "cpu_ns_per_item": 1.0})
    disk_full(monkeypatch)
    assert cli.main([*args, "--out", str(out_file)]) == cli.EXIT_WRITE == 3
    out, err = capsys.readouterr()
    assert json.loads(out)["machine"]["cpus"] == os.cpu_count()  # the whole result, on stdout
    assert err.splitlines()[-1] == f"tempo {command}: error: cannot write {out_file}: No space left on device"
    assert not out_file.exists() and list(tmp_path.iterdir()) == []


def test_soak_prints_its_report_before_a_failed_write(monkeypatch, tmp_path, capsys):
    settings = write_settings(tmp_path / "s.json")
    out = tmp_path / "out"
    out.mkdir()
    calls: list = []
    disk_full(monkeypatch, calls)
    assert cli.main(["soak", "--duration", "100ms", "--settings", str(settings), "--out", str(out), "--json"]) == 3
    stdout, err = capsys.readouterr()
    assert json.loads(stdout)["tool"] == "soak"
    assert err.splitlines()[-1].startswith("tempo soak: error: cannot write ") and "No space left" in err


@pytest.mark.parametrize("mark", ["interrupted", "unhealthy"])
def test_tune_checks_where_an_unusable_result_would_go_before_the_run(mark, monkeypatch, tmp_path, capsys):
    # Only --out was checked: a FIFO at settings.unhealthy.json was found after
    # the whole run, which was then lost.
    from tempo.tools import tune

    calls: list = []
    monkeypatch.setattr(tune, "probe", fake_probe(2**62, calls))
    os.mkfifo(tmp_path / f"settings.{mark}.json")
    assert cli.main(["tune", "--payload-bytes", "1KiB", "--duration", "1s", "--out",
                     str(tmp_path / "settings.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tempo tune: error: --out {tmp_path / 'settings.json'}: ") and err.count("\n") == 1, err
    assert f"settings.{mark}.json" in err and "FIFO" in err
    assert calls == []


@pytest.mark.parametrize("args, message", [
    # A day per 8 items overflowed time.sleep in the consumer thread, which
    # died while the soak went on and reported a stall.
    (["soak", "--consumer-delay", "87000h"], "argument --consumer-delay: duration '87000h' is too long"),
    (["soak", "--consumer-delay", "2s"], "--consumer-delay 2.0s is over 1s"),
    (["soak", "--duration", "800h"], "argument --duration: duration '800h' is too long (at most 30 days)"),
    (["stress", "--interval", "9999h"], "argument --interval: duration '9999h' is too long"),
    (["tune", "--duration", "9999h"], "argument --duration: duration '9999h' is too long"),
])
def test_durations_past_the_documented_range_are_one_line_and_exit_code_2(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        raise SystemExit(cli.main([*args, "--out", str(tmp_path)] if args[0] == "soak" else args))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_consumer_delay_in_a_settings_file_is_bounded_too(tmp_path, capsys):
    settings = write_settings(tmp_path / "s.json", consumer_delay=1e9)
    assert cli.main(["soak", "--duration", "1s", "--settings", str(settings), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "consumer_delay must be 0 to 1 seconds, not 1000000000.0" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


@pytest.mark.parametrize("args", [["stress", "--producers", "1000000000000"], ["stress", "--consumers", "10000"],
                                  ["tune", "--producers", "10000"], ["soak", "--producers", "10000"],
                                  ["demo", "--producers", "10000"]])
def test_thread_counts_share_one_bound(args, capsys):
    # stress --producers 1000000000000 was a MemoryError blamed on max_buffered_bytes.
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {args[1]}: " in err and f"is more than {cli.MAX_THREADS}" in err, err


def test_a_memory_error_elsewhere_does_not_blame_max_buffered_bytes(monkeypatch, capsys):
    from tempo.tools import stress

    def no_memory(*a):
        raise MemoryError

    monkeypatch.setattr(stress, "verify", no_memory)
    assert cli.main(["stress", "--producers", "2", "--items", "10"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "tempo stress: error: out of memory"


def test_a_thread_the_machine_will_not_start_is_one_line(tmp_path):
    # RuntimeError: can't start new thread, a traceback.
    code = ("import sys, threading\n"
            "start = threading.Thread.start\n"
            "n = [0]\n"
            "def limited(self):\n"
            "    n[0] += 1\n"
            "    if n[0] > 8: raise RuntimeError(\"can't start new thread\")\n"
            "    start(self)\n"
            "threading.Thread.start = limited\n"
            "from tempo.tools.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    r = subprocess.run([sys.executable, "-c", code, "stress", "--producers", "50", "--items", "10"], cwd=tmp_path,
                       env=env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 2, r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith("tempo stress: error: this machine would not start another thread"), r.stderr
    assert "Traceback" not in r.stderr


def test_bench_children_import_this_tempo_not_one_in_the_current_folder(monkeypatch, tmp_path):
    # `python -m` put the current folder first on sys.path: a tempo/ there
    # was what every child measured (or, as here, a child that fails).
    from tempo.tools import bench

    fake = tmp_path / "tempo"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('the wrong tempo')\n")
    monkeypatch.chdir(tmp_path)
    from tempo.tools import _throughput

    items = str(_throughput.items_for(64, True))
    r = bench.run_child("tempo.tools._throughput", ["--case", "tempo:64", "--items", items, "--warmup-max-s", "0.01"],
                        _throughput.CASE_PREFIX)
    assert "error" not in r, r
    assert r["items_per_s"] > 0


def fake_matplotlib_without_pyplot(monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "matplotlib", types.ModuleType("matplotlib"))
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # its import fails


def test_soak_plot_without_a_usable_pyplot_fails_before_the_run(monkeypatch, tmp_path, capsys):
    fake_matplotlib_without_pyplot(monkeypatch)
    settings = write_settings(tmp_path / "s.json")
    assert cli.main(["soak", "--duration", "10m", "--settings", str(settings), "--out", str(tmp_path),
                     "--plot"]) == 2
    assert capsys.readouterr().err == ('tempo soak: error: --plot needs matplotlib.pyplot, which is not installed: '
                                       'pip install "tempo-batcher[plot]"\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_a_failed_plot_loses_neither_the_report_nor_the_results(monkeypatch, tmp_path, capsys):
    from tempo.tools import soak

    monkeypatch.setattr(cli, "require", lambda *a: None)
    monkeypatch.setattr(soak, "require", lambda *a: None)

    def broken_plot(samples, result, path):
        raise RuntimeError("no display backend")

    monkeypatch.setattr(soak, "write_plot", broken_plot)
    settings = write_settings(tmp_path / "s.json")
    out = tmp_path / "out"
    assert cli.main(["soak", "--duration", "100ms", "--settings", str(settings), "--out", str(out), "--plot",
                     "--json"]) == 3
    stdout, err = capsys.readouterr()
    res, samples = soak_files(out)
    assert json.loads(stdout) == res and samples[-1]["final"] is True
    assert err.splitlines()[-1].startswith("tempo soak: error: cannot draw ") and "no display backend" in err


def test_a_soak_refused_for_memory_leaves_no_files(monkeypatch, tmp_path, capsys):
    # The samples file was reserved before the dispatcher was made: an empty
    # soak-*.jsonl stayed behind.
    from tempo.tools import soak

    class NoMemory(tempo.Dispatcher):
        def __init__(self, *a, **k):
            raise MemoryError("cannot map 64 TiB")

    monkeypatch.setattr(soak.tempo, "Dispatcher", NoMemory)
    settings = write_settings(tmp_path / "s.json")
    out = tmp_path / "out"
    assert cli.main(["soak", "--duration", "1s", "--settings", str(settings), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tempo soak: error: not enough memory for these settings (cannot map 64 TiB)")
    assert list(out.iterdir()) == []


def test_an_unknown_option_is_reported_by_its_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["tune", "--bogus"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "tempo tune: error: unrecognized arguments: --bogus (see tempo tune --help)\n"


def test_stress_blames_min_size_when_it_is_too_large(capsys):
    assert cli.main(["stress", "--min-size", "1GiB", "--items", "1"]) == 2
    err = capsys.readouterr().err
    assert err == ("tempo stress: error: --min-size is larger than --max-buffered-bytes: "
                   "such payloads can never be accepted\n")
