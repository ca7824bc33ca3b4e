"""The documentation in docs/ stays true to the code.

- docs/api.md is what docs/gen_api.py generates from the docstrings now.
- Every name in ``tempo.__all__`` is in docs/api.md, and every class (and
  exception) has a docstring of its own.
- The ``python`` code blocks of the hand-written docs run. Every block in
  docs/getting-started.md must run; elsewhere a block right after a
  ``<!-- not run -->`` line is skipped (for instance a gunicorn config file).
- The item-slot table in docs/rules.md matches the arena.
- Links between the docs point at files and headings that exist.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tempo

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Hand-written pages, whose examples must run (api.md holds signatures, not programs).
PAGES = sorted(p.name for p in DOCS.glob("*.md") if p.name != "api.md")
SKIP_MARK = "<!-- not run -->"
EXAMPLE_TIMEOUT = 60

_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _gen_api():
    spec = importlib.util.spec_from_file_location("tempo_docs_gen_api", DOCS / "gen_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_blocks(page: str) -> list[tuple[int, str, bool]]:
    """(line number, code, skipped) for each ```python block of a page."""
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip().splitlines()
        skipped = bool(before) and before[-1].strip() == SKIP_MARK
        blocks.append((line, match.group(1), skipped))
    return blocks


def _examples():
    params = []
    for page in PAGES:
        for line, code, skipped in python_blocks(page):
            marks = [pytest.mark.skip(reason="marked <!-- not run -->")] if skipped else []
            params.append(pytest.param(page, line, code, id=f"{page}:{line}", marks=marks))
    return params


# -- the API reference ------------------------------------------------------------


def test_api_md_is_up_to_date() -> None:
    expected = _gen_api().render()
    actual = (DOCS / "api.md").read_text(encoding="utf-8")
    assert actual == expected, (
        "docs/api.md is out of date with the docstrings: "
        "run `.venv/bin/python docs/gen_api.py`"
    )


@pytest.mark.parametrize("name", tempo.__all__)
def test_public_name_is_documented(name: str) -> None:
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    assert f"## `tempo.{name}`" in api, f"tempo.{name} is missing from docs/api.md"
    obj = getattr(tempo, name)
    if isinstance(obj, type):
        # The class's own docstring, not one inherited or made up: Python
        # stores None for a class without one, dataclasses then generate
        # "Name(field: type, ...)", and Cython's embedsignature puts a
        # "Name(...)" line first. gen_api drops such a signature line.
        own = vars(obj).get("__doc__")
        assert isinstance(own, str), f"tempo.{name} has no docstring"
        assert _gen_api()._doc(obj).strip(), f"tempo.{name} has no docstring"
    elif callable(obj):
        assert (obj.__doc__ or "").strip(), f"tempo.{name} has no docstring"
    else:
        # A constant cannot carry a docstring: its value must be in the reference.
        assert f"tempo.{name}: {type(obj).__name__} = {obj!r}" in api


def test_every_public_method_is_in_the_reference() -> None:
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    for cls in (tempo.Dispatcher, tempo.Batch):
        for member in dir(cls):
            if not member.startswith("_"):
                assert f"`{cls.__name__}.{member}" in api, f"{cls.__name__}.{member} is not in api.md"


# -- the examples -----------------------------------------------------------------


def test_getting_started_examples_are_all_run() -> None:
    blocks = python_blocks("getting-started.md")
    assert blocks, "docs/getting-started.md has no python examples"
    assert not [line for line, _, skipped in blocks if skipped], (
        "every python block in docs/getting-started.md must run"
    )


@pytest.mark.parametrize(("page", "line", "code"), _examples())
def test_example_runs(page: str, line: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the example at docs/{page}:{line} did not finish in {exc.timeout} s")
    assert proc.returncode == 0, (
        f"the example at docs/{page}:{line} failed ({proc.returncode}):\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


# -- facts stated in the prose -----------------------------------------------------


def _slot_rows() -> list[tuple[int, int, int, str]]:
    text = (DOCS / "rules.md").read_text(encoding="utf-8")
    start = text.index("<!-- slot-table -->")
    rows = []
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if not cells[0].replace(",", "").isdigit():
            continue  # the header and the rule under it
        limit = int(cells[0].replace(",", ""))
        slots = int(cells[2].replace(",", ""))
        items = int(cells[3].replace(",", ""))
        rows.append((limit, slots, items, cells[4]))
    return rows


def _human(n: int) -> str:
    for unit, size in (("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:g} {unit}"
    return f"{n} B"


def test_slot_table_matches_the_arena() -> None:
    rows = _slot_rows()
    assert len(rows) >= 5
    for limit, slots, items, memory in rows:
        d = tempo.Dispatcher(interval=1.0, max_buffered_bytes=limit)
        try:
            assert d._max_items == items, f"max_buffered_bytes={limit}"
        finally:
            d.stop()
        assert slots == items + 1
        assert memory == _human(20 * slots), f"slot memory for max_buffered_bytes={limit}"


def _slug(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors: set[str] = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            slug = _slug(line.lstrip("#"))
            candidate, n = slug, 1
            while candidate in anchors:
                candidate = f"{slug}-{n}"
                n += 1
            anchors.add(candidate)
    return anchors


def test_links_between_docs_resolve() -> None:
    link = re.compile(r"\]\(([\w.-]+\.md)?(?:#([\w-]+))?\)")
    for page in sorted(DOCS.glob("*.md")):
        for match in link.finditer(page.read_text(encoding="utf-8")):
            target_name, anchor = match.group(1), match.group(2)
            if target_name is None and anchor is None:
                continue
            target = DOCS / target_name if target_name else page
            assert target.exists(), f"{page.name}: link to missing {target_name}"
            if anchor:
                assert anchor in _anchors(target), f"{page.name}: no #{anchor} in {target.name}"


def test_timeline_picture_exists() -> None:
    assert (DOCS / "timeline.png").stat().st_size > 10_000
    assert "timeline.png" in (DOCS / "rules.md").read_text(encoding="utf-8")


def test_timeline_matches_a_real_dispatcher() -> None:
    """The batches drawn in timeline.png are the ones tempo makes (time scaled)."""
    import threading
    import time

    spec = importlib.util.spec_from_file_location("tempo_docs_timeline", DOCS / "make_timeline.py")
    assert spec is not None and spec.loader is not None
    timeline = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = timeline  # its dataclass looks itself up there
    try:
        spec.loader.exec_module(timeline)
    finally:
        del sys.modules[spec.name]
    expected = [
        [size for _, size in batch.payloads]
        for batch in timeline.simulate(timeline.ARRIVALS, timeline.INTERVAL, timeline.MAX_BATCH_BYTES)
    ]

    scale = 0.6  # the closest call (an arrival vs an interval's end) is 0.3 s apart unscaled
    d = tempo.Dispatcher(interval=timeline.INTERVAL * scale, max_buffered_bytes=tempo.KiB,
                         max_batch_bytes=timeline.MAX_BATCH_BYTES)
    got: list[list[int]] = []
    consumer = threading.Thread(target=lambda: got.extend([len(i) for i in b] for b in d.batches()))
    d.start()
    consumer.start()
    t0 = time.monotonic()
    try:
        for at, size in timeline.ARRIVALS:
            time.sleep(max(0.0, at * scale - (time.monotonic() - t0)))
            d.enqueue(b"x" * size)
        time.sleep(timeline.INTERVAL * scale * 1.2)   # let the last interval run out
        d.shutdown(timeout=5)
    finally:
        d.stop()
        consumer.join(5)
    assert got == expected
