"""The stubs are exact (issue 8, bug 13): ``mypy.stubtest`` finds no difference
between tempo/_core.pyi and the compiled module, and mypy refuses what fails at
run time. Before the fix the stub declared ``Batch(Sequence[memoryview])``, so
mypy accepted ``batch.index(...)``; stubtest flagged a missing ``@final`` and a
``__getitem__`` parameter that should be positional-only."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mypy")

HERE = pathlib.Path(__file__).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=300,
        cwd=HERE.parent,
    )


def test_stubtest_finds_the_stubs_exact():
    proc = run("mypy.stubtest", "tempo", "--allowlist", str(HERE / "stubtest-allowlist.txt"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_refuses_what_a_batch_cannot_do(tmp_path):
    program = tmp_path / "uses_batch.py"
    program.write_text(textwrap.dedent(
        """
        import tempo

        def use(batch: tempo.Batch) -> None:
            batch.index(b"x")
            batch.count(b"x")
            batch[0:1][0].tobytes()
            batch[0].tobytes()
            batch.writeall(1)
        """
    ))
    proc = run("mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
               str(program))
    errors = [line.split(": error: ")[1] for line in proc.stdout.splitlines()
              if ": error:" in line]
    assert errors == [
        '"Batch" has no attribute "index"  [attr-defined]',
        '"Batch" has no attribute "count"  [attr-defined]',
    ], proc.stdout
