"""Sphinx configuration: the site that `make docs` builds from docs/.

Sphinx, with MyST for the Markdown pages and autodoc for the API reference.
autodoc imports tempo, so it reads the docstrings of the compiled core as
well as of the Python modules; the signatures of the compiled classes come
from their stubs (tempo/_core.pyi). docs/api.md holds one ``{tempo-api}``
block, which becomes an autodoc entry for every name in ``tempo.__all__`` and
every public submodule, so a new public name needs no edit here. The build
treats warnings as errors (`make docs` passes -W), and ``check_api_coverage``
warns about any public name the reference still leaves out.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

import tempo

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("tempo.docs")

project = "tempo"
author = "The tempo authors"
copyright = "2026, The tempo authors"
release = version = tempo.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Anchors for headings down to ####, named the way GitHub names them, so a
# link like rules.md#ownership-copy-what-you-keep works here and on GitHub.
myst_heading_anchors = 4

autodoc_member_order = "groupwise"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}
# The options of each class's entry: every public member, documented or not,
# including those a class inherits from tempo's own bases (Dispatcher's
# enqueue is the compiled Core's), but not those of BaseException.
CLASS_OPTIONS = "\n   :members:\n   :undoc-members:\n   :inherited-members: BaseException"

html_theme = "furo"
html_title = f"tempo {release}"
html_copy_source = False
html_show_sourcelink = False

# Public submodules documented on pages of their own rather than in the API reference.
NOT_API = {"tempo.tools"}
# These lead the reference; the other classes follow in tempo.__all__ order.
FIRST = ["Dispatcher", "Batch"]


# -- the reference's entries --------------------------------------------------


def public_submodules() -> list[str]:
    return [
        info.name
        for info in pkgutil.iter_modules(tempo.__path__, "tempo.")
        if not info.name.rpartition(".")[2].startswith("_") and info.name not in NOT_API
    ]


def api_markdown() -> str:
    """The body of docs/api.md's ``{tempo-api}`` block: headings and autodoc entries."""
    objects = {name: getattr(tempo, name) for name in tempo.__all__}
    classes = [n for n, o in objects.items() if isinstance(o, type) and not issubclass(o, BaseException)]
    classes.sort(key=lambda n: FIRST.index(n) if n in FIRST else len(FIRST))
    errors = [n for n, o in objects.items() if isinstance(o, type) and issubclass(o, BaseException)]
    errors.sort(key=lambda n: len(objects[n].__mro__))  # bases before subclasses
    functions = [n for n, o in objects.items() if callable(o) and not isinstance(o, type)]
    constants = [n for n, o in objects.items() if not callable(o) and not isinstance(o, ModuleType)]

    def section(title: str, directive: str, names: list[str]) -> str:
        if not names:
            return ""
        def options(name: str) -> str:
            if directive not in ("autoclass", "autoexception"):
                return ""
            # No "Bases:" line for a class whose bases are all hidden.
            if not any(_shown_base(b) for b in objects[name].__bases__):
                return CLASS_OPTIONS + "\n   :no-show-inheritance:"
            return CLASS_OPTIONS

        entries = "\n\n".join(f".. {directive}:: tempo.{n}{options(n)}" for n in names)
        return f"## {title}\n\n```{{eval-rst}}\n{entries}\n```\n\n"

    text = "```{eval-rst}\n.. automodule:: tempo\n```\n\n"
    text += section("Classes", "autoclass", classes)
    text += section("Functions", "autofunction", functions)
    text += section("Errors", "autoexception", errors)
    text += section("Constants", "autodata", constants)
    for module in public_submodules():
        text += f"## `{module}`\n\n```{{eval-rst}}\n.. automodule:: {module}\n   :members:\n   :undoc-members:\n```\n\n"
    return text


API_MARK = "```{tempo-api}\n```"


def insert_api(app: Sphinx, docname: str, source: list[str]) -> None:
    if API_MARK in source[0]:
        source[0] = source[0].replace(API_MARK, api_markdown())


# -- signatures of the compiled classes, from the stubs -----------------------


def _stub_signatures(path: Path) -> dict[str, tuple[str, str | None]]:
    """``{"Batch.tolist": ("()", "list[bytes]")}`` for every function in a stub."""
    found: dict[str, tuple[str, str | None]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, prefix + node.name + ".")
            elif isinstance(node, ast.FunctionDef):
                args = node.args
                if prefix and args.posonlyargs:
                    args.posonlyargs = args.posonlyargs[1:]
                elif prefix and args.args:
                    args.args = args.args[1:]
                returns = ast.unparse(node.returns) if node.returns else None
                # An overloaded name keeps its first signature.
                found.setdefault(prefix + node.name, (f"({ast.unparse(args)})", returns))

    visit(ast.parse(path.read_text(encoding="utf-8")).body, "")
    return found


STUBS = {"tempo._core": _stub_signatures(ROOT / "tempo" / "_core.pyi")}


def stub_signature(app: Sphinx, what: str, name: str, obj: Any, options: Any,
                   signature: str | None, return_annotation: str | None) -> Any:
    if what not in ("method", "function"):
        return None
    owner = getattr(obj, "__objclass__", None)
    if owner is tempo._core.Core:
        # A builtin method (binding=False, e.g. enqueue): no __module__, and
        # its __qualname__ names the class as it is shown, Dispatcher.
        return STUBS["tempo._core"].get(f"Core.{obj.__name__}")
    module = getattr(obj, "__module__", None) or getattr(owner, "__module__", None)
    stubs = STUBS.get(module or "")
    return stubs.get(obj.__qualname__) if stubs is not None else None


def _shown_base(base: type) -> bool:
    if base is object:
        return False
    return not base.__module__.startswith("tempo") or getattr(tempo, base.__name__, None) is base


def public_bases(app: Sphinx, name: str, obj: Any, options: Any, bases: list[type]) -> None:
    # "Bases: object" tells the reader nothing, and a private base (the
    # compiled Core behind Dispatcher) is not there to look up.
    bases[:] = [b for b in bases if _shown_base(b)]


# -- constants' docs ------------------------------------------------------------


def _comments() -> dict[str, list[str]]:
    """The ``#:`` comments on module-level names in tempo's Python modules."""
    found: dict[str, list[str]] = {}
    # Only modules already imported: ModuleAnalyzer imports what it reads,
    # and importing tempo.__main__ would run the command line.
    for name in sorted(n for n in sys.modules if n.startswith("tempo.")):
        try:
            docs = ModuleAnalyzer.for_module(name).find_attr_docs()
        except Exception:  # noqa: BLE001 - a compiled module has no source to read
            continue
        for (scope, name), lines in docs.items():
            if scope == "":
                found.setdefault(name, lines)
    return found


def constant_doc(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    # A constant has no docstring of its own; without the ``#:`` comment above
    # its assignment it would show the docstring of its type.
    if what == "data":
        lines[:] = _comments().get(name.rpartition(".")[2], [])


# -- every public name in the reference ---------------------------------------


def public_api() -> list[str]:
    """``tempo.X`` for X in ``tempo.__all__``, their public members, and public submodules."""
    names: list[str] = []
    for name in tempo.__all__:
        names.append(f"tempo.{name}")
        obj = getattr(tempo, name)
        if inspect.isclass(obj):
            own = {m for k in obj.__mro__ if k.__module__ != "builtins" for m in vars(k)}
            names += [f"tempo.{name}.{m}" for m in sorted(own) if not m.startswith("_")]
    for module in public_submodules():
        names.append(module)
        names += [f"{module}.{n}" for n in getattr(importlib.import_module(module), "__all__", [])]
    return names


def check_api_coverage(app: Sphinx, env: Any) -> None:
    documented = set(env.get_domain("py").objects)
    for name in public_api():
        if name not in documented:
            logger.warning("the API reference (docs/api.md) leaves out %s", name)


def setup(app: Sphinx) -> None:
    app.connect("source-read", insert_api)
    app.connect("autodoc-process-signature", stub_signature)
    app.connect("autodoc-process-bases", public_bases)
    app.connect("autodoc-process-docstring", constant_doc)
    app.connect("env-check-consistency", check_api_coverage)
