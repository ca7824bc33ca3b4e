"""The package's modules import each other without a circle (issue 15).

Every import counts: at module level, inside functions, under
``TYPE_CHECKING``. A circle is how the lifecycle ended up spread over four
modules that each knew the others; one found here names its modules."""

from __future__ import annotations

import ast
from pathlib import Path

import tempo

PACKAGE = Path(tempo.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["tempo", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> "dict[str, set[str]]":
    files = sorted(PACKAGE.glob("*.py")) + sorted(PACKAGE.glob("tools/*.py"))
    modules = {_module_name(f): f for f in files}
    compiled = {"tempo." + f.name.split(".")[0] for f in PACKAGE.glob("*.so")}
    known = set(modules) | compiled
    graph: "dict[str, set[str]]" = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: "set[str]" = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                # `import tempo.x.y` runs tempo.x.y (its parents are already
                # importing when a module of the package runs).
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level, node.module)
                # `from . import _aio` needs the module tempo._aio;
                # `from tempo import Dispatcher` needs the package itself.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                while parts and ".".join(parts) not in known:
                    parts.pop()
                name = ".".join(parts)
                if name and name != module:
                    edges.add(name)
        graph[module] = edges
    return graph


def cycles(graph: "dict[str, set[str]]") -> "list[list[str]]":
    """Every strongly connected component of more than one module (Tarjan)."""
    index: "dict[str, int]" = {}
    low: "dict[str, int]" = {}
    stack: "list[str]" = []
    on_stack: "set[str]" = set()
    found: "list[list[str]]" = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_finds_a_circle_and_every_kind_of_import():
    # The checker itself: a circle through a function-level import and one
    # under TYPE_CHECKING are both found.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import _x\n"
        "if TYPE_CHECKING:\n    from ._y import Y\n"
        "def f():\n    from tempo import _z\n"
    )
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            names.add(_resolve("tempo._m", False, node.level, node.module))
    assert names == {"typing", "tempo", "tempo._y"}


def test_the_package_imports_have_no_circle():
    graph = import_graph()
    assert "tempo._dispatcher" in graph and "tempo.tools" in graph
    assert cycles(graph) == []
