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


def _tools_imports(path: Path) -> set[str]:
    """The ``tempo.tools`` modules a file imports (at any depth, in functions too),
    and those it starts as ``python -m`` children (named in a string)."""
    import ast
    import re

    text = path.read_text(encoding="utf-8")
    found = set(re.findall(r"""["'](tempo\.tools\.\w+)["']""", text))
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from . import x / from .x import y
                base = "tempo.tools" + (f".{node.module}" if node.module else "")
                found.add(base)
                if not node.module:
                    found.update(f"tempo.tools.{a.name}" for a in node.names)
            elif node.module and node.module.startswith("tempo.tools"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tempo.tools"))
    return found


def test_the_tools_ship_only_what_the_tempo_command_runs() -> None:
    import re

    # The bench engine shipped in the wheel with bench/-only workloads, a reader
    # process and probes for features tempo always has; bench/ extends the
    # package's engine, never the other way round.
    tools = ROOT / "tempo" / "tools"
    modules = {f"tempo.tools.{p.stem}": p for p in tools.glob("*.py") if p.stem != "__init__"}
    reached = {"tempo.tools.cli"}
    todo = ["tempo.tools.cli"]
    while todo:
        for name in _tools_imports(modules[todo.pop()]) & set(modules):
            if name not in reached:
                reached.add(name)
                todo.append(name)
    assert set(modules) - reached == set()
    bench_only = ("reader_main", "sendmsg_all", "produce_retry_reused", "produce_blocking_reused",
                  "split_workload", "class Subject")
    dead_probes = ("tempo_supports_blocking_enqueue", "tempo_has_enqueue_many")
    for path in modules.values():
        text = path.read_text(encoding="utf-8")
        assert "_workloads" not in text and "import _common" not in text, path.name
        assert [n for n in (*bench_only, *dead_probes) if n in text] == [], path.name
        # A section banner with nothing under it before the next one.
        assert not re.search(r"^# -{20,}\n# [^\n]*\n\n+(# [^\n]*\n\n*)?# -{20,}$", text, re.MULTILINE), path.name


def test_each_shared_helper_is_defined_once() -> None:
    import re

    files = [*ROOT.glob("tempo/**/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("examples/*.py")]
    for pattern in (r"^def run_json_child\(", r"^(KiB|MiB|GiB)\b.*=\s*\d", r"^def sendmsg_all\("):
        where = [str(f.relative_to(ROOT)) for f in files
                 if re.search(pattern, f.read_text(encoding="utf-8"), re.MULTILINE)]
        assert len(where) == 1, (pattern, where)


def test_the_shims_are_gone_and_make_demo_runs_the_tool() -> None:
    assert not (ROOT / "bench" / "purepy.py").exists() and not (ROOT / "examples" / "demo.py").exists()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "demo: build\n\t$(PY) -m tempo demo\n" in makefile
