"""The installed distribution: its name, its version, and type checkers finding it.

`make build` installs tempo into .venv as an editable package; the wheels
themselves are checked by `make dist` (scripts/smoke_wheel.sh).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import tempo

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_the_distributions() -> None:
    # One place: tempo/__init__.py; pyproject.toml reads it from there.
    assert importlib.metadata.version("tempo-batcher") == tempo.__version__
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_finds_tempo_from_outside_the_checkout(tmp_path: Path) -> None:
    # setuptools' default editable install is an import hook that only the
    # interpreter runs, so mypy outside the checkout reported "Cannot find
    # implementation or library stub for module named 'tempo'".
    program = tmp_path / "uses_tempo.py"
    program.write_text(
        "import tempo\n"
        "d = tempo.Dispatcher(interval=1.0, max_buffered_bytes=tempo.MiB)\n"
        "items: list[bytes] = d.get_batch().tolist()\n"
        "count: int = d.stats().enqueued\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", program.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
