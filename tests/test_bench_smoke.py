"""Smoke test of the benchmark scripts in bench/: each runs, in its quickest
mode, exits 0 and prints its JSON lines.  Nothing here judges speed.

The scripts run in parallel subprocesses (started once for the module), their
results going to a temporary folder, never to bench/results/; report.py then
reads that folder.  The chart options run only where matplotlib imports, the
OpenTelemetry baseline only where opentelemetry-sdk does, memfloor's figures
are expected only where there is a C compiler.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
TIMEOUT = 120  # per script; they take seconds


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAVE_MPL = importable("matplotlib")
HAVE_OTEL = importable("opentelemetry.sdk")
HAVE_CC = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"))


def json_lines(stdout: str, prefix: str) -> list[dict]:
    return [json.loads(line[len(prefix) :]) for line in stdout.splitlines() if line.startswith(prefix)]


def file_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Run:
    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / name), *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout = self.stderr = ""
        self.returncode = None

    def wait(self) -> "Run":
        if self.returncode is None:
            try:
                self.stdout, self.stderr = self.proc.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.stdout, self.stderr = self.proc.communicate()
            self.returncode = self.proc.returncode
        return self

    def check(self) -> "Run":
        self.wait()
        assert self.returncode == 0, f"{self.name} {self.args} exited {self.returncode}:\n{self.stderr[-3000:]}"
        return self


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-results")


@pytest.fixture(scope="module")
def runs(out):
    """Every script started at once; each test waits for its own."""
    impls = "tempo,purepy,otel" if HAVE_OTEL else "tempo,purepy"
    compare_args = ["--quick", "--workloads", "W1", "--sizes", "16", "--impls", impls, "--out", str(out / "latest.jsonl")]
    if HAVE_MPL:
        compare_args += ["--chart", str(out / "latest.png")]
    started = {
        "compare": Run("compare.py", compare_args),
        "scaling": Run(
            "scaling.py",
            ["--smoke", "--out", str(out / "scaling.jsonl"), "--png", str(out / "scaling.png") if HAVE_MPL else ""],
        ),
        "alloc": Run("alloc.py", ["--quick", "--out", str(out / "alloc.jsonl")]),
        "memfloor": Run("memfloor.py", ["--quick", "--out", str(out / "memfloor.jsonl")]),
        "mallocs": Run(
            "mallocs.py",
            ["--sizes", "256", "--enqueues", "20000", "--out", str(out / "mallocs.jsonl")],
        ),
        "enqueue_many": Run("enqueue_many.py", ["--quick", "--out", str(out / "enqueue_many.jsonl")]),
        "pipeline": Run("pipeline.py", ["--quick", "--repeat", "1", "--out", str(out / "pipeline.jsonl")]),
        "sharding": Run("sharding.py", ["--quick", "--out", str(out / "sharding.jsonl")]),
    }
    yield started
    for r in started.values():
        if r.proc.poll() is None:
            r.proc.kill()
        r.wait()


def test_compare(runs, out):
    r = runs["compare"].check()
    lines = json_lines(r.stdout, "BENCH_JSON ")
    impls = {x["impl"] for x in lines}
    assert {"tempo", "purepy"} <= impls
    if HAVE_OTEL:
        assert "otel" in impls
    for x in lines:
        assert x["workload"] == "W1" and x["size"] == 16 and x["ok_runs"] == 1, x
        assert x["items_per_s"] > 0
        run = x["runs"][0]
        for key in ("items", "warmup_items", "elapsed_s", "producer_s", "cpu_s", "cpu_ns_per_item", "batches",
                    "full_retries", "expected_batches", "enqueue_mode", "producers"):
            assert key in run, key
    assert file_lines(out / "latest.jsonl") == lines
    if HAVE_MPL:
        assert (out / "latest.png").stat().st_size > 0


def test_scaling(runs, out):
    r = runs["scaling"].check()
    lines = json_lines(r.stdout, "SCALING_JSON ")
    assert {x["sweep"] for x in lines} == {"size", "batch", "producers", "rss"}
    assert {x["impl"] for x in lines} == {"tempo", "purepy"}
    assert len(lines) == 8  # one point per sweep, two implementations
    for x in lines:
        assert x["ok_runs"] == 1, x
        if x["sweep"] == "rss":
            assert x["churned_bytes"] > 0 and x["peak_growth_kib"] is not None
        else:
            assert x["items_per_s"] > 0
    assert file_lines(out / "scaling.jsonl") == lines
    if HAVE_MPL:
        assert (out / "scaling.png").stat().st_size > 0


def test_alloc(runs, out):
    r = runs["alloc"].check()
    lines = json_lines(r.stdout, "ALLOC_JSON ")
    pairs = {(x["section"], x["impl"]) for x in lines}
    assert pairs == {(s, i) for s in ("blocks", "rss", "rss-slow", "interval") for i in ("tempo", "purepy")}
    for x in lines:
        assert "error" not in x["result"], x
        if x["section"].startswith("rss"):
            assert x["result"]["churned_bytes"] > 0 and "hwm_growth_kib" in x["result"]
    assert file_lines(out / "alloc.jsonl") == lines


def test_memfloor(runs, out):
    r = runs["memfloor"].check()
    lines = json_lines(r.stdout, "MEMFLOOR_JSON ")
    if not HAVE_CC:
        pytest.skip("no C compiler: memfloor.py measures nothing")
    assert {x["size"] for x in lines} == {65536}
    assert len(lines) == 4 and all(x["ns_per_payload"] > 0 for x in lines)
    assert file_lines(out / "memfloor.jsonl") == lines


def test_mallocs(runs, out):
    r = runs["mallocs"].check()
    lines = json_lines(r.stdout, "MALLOCS_JSON ")
    if not HAVE_CC:
        pytest.skip("no C compiler: mallocs.py measures nothing")
    assert [x["size"] for x in lines] == [256]
    assert lines[0]["enqueues"] == 20000 and lines[0]["before"] > 0
    assert file_lines(out / "mallocs.jsonl") == lines


def test_enqueue_many(runs, out):
    r = runs["enqueue_many"].check()
    lines = json_lines(r.stdout, "ENQUEUE_MANY_JSON ")
    assert len(lines) == 1
    x = lines[0]
    assert (x["size"], x["count"], x["reps"]) == (16, 10_000, 3)
    for name in ("loop", "enqueue_many"):
        assert x[name]["median_items_per_s"] > 0 and x[name]["best_items_per_s"] > 0
    assert x["ratio_median"] > 0
    assert file_lines(out / "enqueue_many.jsonl") == lines


def test_pipeline(runs, out):
    r = runs["pipeline"].check()
    (line,) = json_lines(r.stdout, "PIPELINE_JSON ")
    assert line["workload"] == "W1" and line["size"] == 256 and line["repeat"] == 1
    assert set(line["runs"]) == {"handwritten", "pipeline"}
    assert line["ratio_items_per_s"] > 0
    assert file_lines(out / "pipeline.jsonl") == [line]


def test_sharding(runs, out):
    r = runs["sharding"].check()
    (line,) = json_lines(r.stdout, "SHARDING_JSON ")
    assert (line["size"], line["producers"], line["items"], line["repeat"]) == (256, 2, 1 << 16, 1)
    assert set(line["medians"]) == set(line["runs"]) == {"one", "shared", "sharded"}
    assert all(len(v) == 1 and v[0] > 0 for v in line["runs"].values())
    assert file_lines(out / "sharding.jsonl") == [line]


def test_report(runs, out):
    for r in runs.values():
        r.wait()  # report.py reads what the others wrote (whatever of it exists)
    r = Run("report.py", ["--results", str(out)]).check()
    assert "## Targets" in r.stdout
    if runs["compare"].returncode == 0:
        assert "## Throughput" in r.stdout


def test_micro():
    """The pytest-benchmark micro-benchmarks, each run once without timing."""
    if not importable("pytest_benchmark"):
        pytest.skip("pytest-benchmark not installed")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable", str(BENCH / "test_micro.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
