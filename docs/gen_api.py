"""Generate docs/api.md from tempo's docstrings.

The docstrings are the source: this script imports tempo, walks
``tempo.__all__`` and writes, for every class, method, property, exception and
constant, its signature and its docstring. Run it after changing a docstring:

    .venv/bin/python docs/gen_api.py

``tests/test_docs.py`` regenerates the text in memory and fails if
``docs/api.md`` is out of date. ``render()`` returns the text without writing.

Signatures come from ``inspect.signature``. For the compiled core (built with
Cython's ``embedsignature``) that may fail; then the ``__text_signature__`` or
the signature line Cython embeds at the top of ``__doc__`` is used instead.
Constants cannot carry a docstring: for them the ``#:`` comment above their
assignment in tempo's source is used, if there is one.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "api.md"

# The order of the reference: the main classes first, then the errors, then
# the constants. Names in tempo.__all__ missing from here are appended.
ORDER = [
    "Dispatcher",
    "Pipeline",
    "Retry",
    "Batch",
    "Config",
    "Stats",
    "PipelineStats",
    "TempoError",
    "ConfigError",
    "QueueFull",
    "PayloadTooLarge",
    "ShuttingDown",
    "Stopped",
    "KiB",
    "MiB",
    "GiB",
]

# Public names in tempo's public submodules (not in tempo.__all__), after the rest.
SUBMODULE_NAMES = ["logging.BatchHandler"]

# Dunder methods worth telling the reader about: what they make possible.
PROTOCOLS = [
    ("__enter__", "`with` (context manager)"),
    ("__aenter__", "`async with`"),
    ("__len__", "`len()`"),
    ("__getitem__", "indexing and slicing"),
    ("__iter__", "iteration"),
    ("__bool__", "truth value"),
]

# "Core.enqueue(self, payload, timeout=_NO_WAIT)": Cython's embedded signature.
_EMBEDDED = re.compile(r"^[A-Za-z_][\w.]*\((?P<params>.*)\)(?:\s*->\s*.*)?$")
_QUALIFIERS = re.compile(r"\b(?:tempo\.(?:_\w+\.)?|typing\.|collections\.abc\.)")


def _clean(text: str) -> str:
    """Annotation text without module prefixes readers don't need."""
    return _QUALIFIERS.sub("", text)


def _doc(obj: Any) -> str:
    """The object's own docstring, cleaned, without an embedded signature line."""
    doc = obj.__doc__ if isinstance(obj.__doc__, str) else None
    if not doc:
        return ""
    doc = inspect.cleandoc(doc)
    first, _, rest = doc.partition("\n")
    if _EMBEDDED.match(first.strip()):
        doc = rest.strip()
    return doc


def _annotation(ann: Any) -> str:
    # A string annotation is what could not be evaluated (a name imported
    # only for type checkers): shown as written, without quotes.
    return _clean(ann if isinstance(ann, str) else inspect.formatannotation(ann))


def _format_signature(sig: inspect.Signature, drop_self: bool) -> str:
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    parts = []
    kw_only_marked = False
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not kw_only_marked:
            parts.append("*")
            kw_only_marked = True
        if p.kind is p.VAR_POSITIONAL:
            kw_only_marked = True
        text = p.name
        if p.kind is p.VAR_POSITIONAL:
            text = "*" + text
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + text
        if p.annotation is not p.empty:
            text += ": " + _annotation(p.annotation)
            if p.default is not p.empty:
                text += " = " + repr(p.default)
        elif p.default is not p.empty:
            text += "=" + repr(p.default)
        parts.append(text)
        if p.kind is p.POSITIONAL_ONLY and (
            p is params[-1] or params[params.index(p) + 1].kind is not p.POSITIONAL_ONLY
        ):
            parts.append("/")
    out = "(" + ", ".join(parts) + ")"
    ret = sig.return_annotation
    if ret is not sig.empty and ret not in (None, type(None), "None"):
        out += " -> " + _annotation(ret)
    return out


def signature(obj: Callable[..., Any], drop_self: bool = True) -> Optional[str]:
    """``(params) -> ret`` for obj, or None if nothing tells."""
    try:
        try:
            sig = inspect.signature(obj, eval_str=True)
        except NameError:
            sig = inspect.signature(obj)
        return _format_signature(sig, drop_self)
    except (ValueError, TypeError):
        pass
    text_sig = getattr(obj, "__text_signature__", None)
    if text_sig:
        params = text_sig.strip()[1:-1].split(",")
        params = [p.strip() for p in params if p.strip() not in ("", "$self", "self", "/")]
        return "(" + ", ".join(p.lstrip("$") for p in params) + ")"
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else ""
    first = inspect.cleandoc(doc).partition("\n")[0].strip() if doc else ""
    match = _EMBEDDED.match(first)
    if match:
        params = [p.strip() for p in match.group("params").split(",")]
        if drop_self:
            params = [p for p in params if p not in ("self", "cls")]
        return "(" + ", ".join(p for p in params if p) + ")"
    return None


def _doc_comment(lines: list[str], pattern: "re.Pattern[str]") -> str:
    """The ``#:`` comment lines right above the first line matching pattern."""
    for i, line in enumerate(lines):
        if pattern.match(line):
            comment = []
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#:"):
                comment.insert(0, lines[j].strip()[2:].strip())
                j -= 1
            return " ".join(comment)
    return ""


def constant_doc(name: str) -> str:
    """The ``#:`` comment above ``NAME = ...`` in tempo's Python sources."""
    pattern = re.compile(rf"^{re.escape(name)}\s*(?::[^=]*)?=")
    for path in sorted((ROOT / "tempo").glob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if any(pattern.match(line) for line in lines):
            return _doc_comment(lines, pattern)
    return ""


def _class_attribute_doc(cls: type, name: str) -> str:
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return ""
    return _doc_comment(lines, re.compile(rf"^\s+{re.escape(name)}\s*(?::[^=]*)?="))


def _members(cls: type) -> list[tuple[str, type, Any]]:
    """Public members of cls, base classes' first, in definition order.

    Members of bases from outside tempo (``object``, ``Exception``,
    ``logging.Handler`` ...) are left out; so is anything named with a leading
    underscore.
    """
    seen: dict[str, tuple[str, type, Any]] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.partition(".")[0] != "tempo":
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            seen[name] = (name, klass, value)
    return list(seen.values())


def _kind(value: Any) -> str:
    if isinstance(value, (property,)) or type(value).__name__ == "getset_descriptor":
        return "property"
    if isinstance(value, (staticmethod, classmethod)):
        return "method"
    if callable(value):
        return "method"
    return "attribute"


def _label(func: Any) -> str:
    if inspect.isasyncgenfunction(func):
        return "async iterator"
    if inspect.iscoroutinefunction(func):
        return "coroutine"
    if inspect.isgeneratorfunction(func):
        return "iterator"
    return "method"


def _no_doc(owner: str) -> str:
    return f"*No docstring; see the description of `{owner}` above.*"


def _inherited_note(cls: type, klass: type) -> str:
    if klass is cls:
        return ""
    return f"\n\n*Inherited from `{klass.__module__}.{klass.__qualname__}`.*"


def render_class(name: str, cls: type) -> list[str]:
    out: list[str] = []
    is_error = issubclass(cls, BaseException)
    is_dataclass = dataclasses.is_dataclass(cls)
    kind = "exception" if is_error else "class"
    out.append(f"## `tempo.{name}`")
    out.append("")
    sig = None
    if not is_error:
        # Only inspect's answer for a class: a compiled class that cannot be
        # constructed by users has no signature worth showing.
        try:
            sig = _format_signature(inspect.signature(cls, eval_str=True), drop_self=False)
        except (ValueError, TypeError, NameError):
            sig = None
    out.append("```python")
    out.append(f"{kind} tempo.{name}{sig or ''}")
    out.append("```")
    out.append("")
    facts = []
    bases = [
        f"`{b.__name__}`" if b.__module__ == "builtins"
        else f"`tempo.{b.__name__}`" if b.__module__.partition(".")[0] == "tempo"
        else f"`{b.__module__}.{b.__qualname__}`"
        for b in cls.__bases__
        if b is not object and not b.__name__.startswith("_")
        and (b.__module__ != "tempo" and not b.__module__.startswith("tempo.")
             or hasattr(sys.modules["tempo"], b.__name__))
    ]
    if bases:
        facts.append("Bases: " + ", ".join(bases) + ".")
    if is_error:
        message = getattr(cls, "default_message", None)
        if message:
            facts.append(f"Message when raised without arguments: `{message}`.")
    if is_dataclass:
        params = getattr(cls, "__dataclass_params__", None)
        frozen = " frozen" if params is not None and params.frozen else ""
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # pragma: no cover - annotations that do not resolve
            hints = {}
        fields = ", ".join(
            f"`{f.name}: {_clean(inspect.formatannotation(hints.get(f.name, f.type)))}`"
            for f in dataclasses.fields(cls)
        )
        facts.append(f"A{frozen} dataclass. Fields: {fields}.")
    protocols = [text for dunder, text in PROTOCOLS if dunder in _all_dict(cls)]
    if protocols and not is_error:
        facts.append("Supports " + ", ".join(protocols) + ".")
    out.extend(f"- {fact}" for fact in facts)
    if facts:
        out.append("")
    doc = _doc(cls)
    out.append(doc if doc else "*No docstring.*")
    out.append("")

    for member, klass, value in _members(cls):
        kind = _kind(value)
        qual = f"{name}.{member}"
        if kind == "property":
            getter = getattr(value, "fget", None)
            ret = ""
            if getter is not None:
                try:
                    ann = inspect.signature(getter, eval_str=True).return_annotation
                    if ann is not inspect.Signature.empty:
                        ret = ": " + _clean(inspect.formatannotation(ann))
                except (ValueError, TypeError, NameError):
                    pass
            out.append(f"### `{qual}`")
            out.append("")
            out.append("```python")
            out.append(f"property {qual}{ret}")
            out.append("```")
            out.append("")
            doc = _doc(value)
            note = _inherited_note(cls, klass)
            out.append((doc or _no_doc(name)) + note)
            out.append("")
        elif kind == "method":
            func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            sig = signature(func) or "(...)"
            label = _label(func)
            prefix = "async def " if label == "coroutine" else "def "
            out.append(f"### `{qual}()`")
            out.append("")
            out.append("```python")
            out.append(f"{prefix}{qual}{sig}")
            out.append("```")
            out.append("")
            if label in ("iterator", "async iterator"):
                out.append(f"*An {label}* (use it with `{'async for' if label.startswith('async') else 'for'}`).")
                out.append("")
            elif label == "coroutine":
                out.append("*A coroutine* (use it with `await`).")
                out.append("")
            doc = _doc(func)
            out.append((doc or _no_doc(name)) + _inherited_note(cls, klass))
            out.append("")
        else:
            definer = next(k for k in reversed(cls.__mro__) if member in vars(k))
            if definer is not cls:
                continue  # documented once, on the base class that introduces it
            comment = _class_attribute_doc(cls, member)
            out.append(f"### `{qual}`")
            out.append("")
            out.append("```python")
            out.append(f"{qual} = {value!r}")
            out.append("```")
            out.append("")
            out.append(comment or _no_doc(name))
            out.append("")
    return out


def _all_dict(cls: type) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        merged.update(vars(klass))
    return merged


def _power_note(value: Any) -> str:
    """`` # 1024 ** 2`` for a power of 1024 above 1024, else nothing."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 1024:
        power, rest = 0, value
        while rest % 1024 == 0 and rest > 1:
            rest //= 1024
            power += 1
        if rest == 1:
            return f"  # 1024 ** {power}"
    return ""


def render_constant(name: str, value: Any) -> list[str]:
    line = f"tempo.{name}: {type(value).__name__} = {value!r}{_power_note(value)}"
    out = [f"## `tempo.{name}`", "", "```python", line, "```", ""]
    comment = constant_doc(name)
    if comment:
        out.append(comment)
        out.append("")
    return out


def render() -> str:
    """The text of docs/api.md."""
    sys.path.insert(0, str(ROOT))
    try:
        import tempo
    finally:
        sys.path.pop(0)

    names = [n for n in ORDER if n in tempo.__all__]
    names += [n for n in tempo.__all__ if n not in names]

    out = [
        "# API reference",
        "",
        "<!-- Generated by docs/gen_api.py from tempo's docstrings: do not edit by hand. -->",
        "<!-- Run `.venv/bin/python docs/gen_api.py` after changing a docstring. -->",
        "",
        "Everything below is importable from `tempo` (these are the names in",
        "`tempo.__all__`), except `tempo.logging.BatchHandler`, which lives in the",
        "`tempo.logging` submodule. For the rules behind them see [rules.md](rules.md);",
        "for a first program see [getting-started.md](getting-started.md); for the",
        "managed consumer see [pipeline.md](pipeline.md).",
        "",
    ]
    names += SUBMODULE_NAMES
    contents = []
    for n in names:
        anchor = f"tempo{n}".replace(".", "").lower()
        contents.append(f"- [`tempo.{n}`](#{anchor})")
    out.extend(contents)
    out.append("")
    module_doc = _doc(tempo)
    if module_doc:
        out.append("## The `tempo` module")
        out.append("")
        out.append(module_doc)
        out.append("")
    for n in names:
        obj = _lookup(tempo, n)
        if isinstance(obj, type):
            out.extend(render_class(n, obj))
        else:
            out.extend(render_constant(n, obj))
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"
    return text


def _lookup(module: Any, dotted: str) -> Any:
    """``tempo.logging.BatchHandler`` for ``"logging.BatchHandler"``."""
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def main() -> None:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
