"""The public surface: every name exported, documented and typed."""

from __future__ import annotations

import ast
import inspect
import os
import pathlib

import pytest

import tempo

PACKAGE = pathlib.Path(tempo.__file__).parent

EXPECTED = {
    "Batch", "Config", "ConfigError", "Dispatcher", "GiB", "IOV_MAX", "KiB", "MiB",
    "PayloadTooLarge", "Pipeline", "PipelineStats", "QueueFull", "Retry", "ShuttingDown",
    "Stats", "Stopped", "TempoError", "Unretryable", "exit_timeout", "load_settings",
    "set_exit_timeout",
}
FUNCTIONS = {"exit_timeout", "load_settings", "set_exit_timeout"}
#: Public submodules: reachable as tempo.X, but not in __all__ (``from tempo
#: import *`` must not shadow the standard library's ``logging``).
SUBMODULES = {"logging"}
#: Public, but never imported by ``import tempo``: ``tempo.tools`` (the
#: ``tempo`` command) is an attribute only once something imported it.
LAZY_SUBMODULES = {"tools", "metrics"}


def test_all_is_exactly_the_public_surface():
    assert set(tempo.__all__) == EXPECTED
    public = {name for name in vars(tempo) if not name.startswith("_")}
    # Submodules appear as attributes once imported; they are private (_x),
    # except the public ones.
    assert public - LAZY_SUBMODULES == EXPECTED | SUBMODULES


@pytest.mark.parametrize("name", sorted(EXPECTED - {"KiB", "MiB", "GiB", "IOV_MAX"} - FUNCTIONS))
def test_every_public_class_and_method_has_a_docstring(name):
    obj = getattr(tempo, name)
    assert inspect.getdoc(obj), name
    for attr, value in vars(obj).items():
        if attr.startswith("_") or not callable(value) and not isinstance(value, property):
            continue
        assert inspect.getdoc(getattr(obj, attr)), f"{name}.{attr}"


def test_dispatcher_methods_are_documented_including_the_compiled_ones():
    for method in ("enqueue", "get_batch", "start", "stop", "shutdown", "flush",
                   "batches", "stats", "aget_batch", "abatches", "ashutdown", "name"):
        assert inspect.getdoc(getattr(tempo.Dispatcher, method)), method


def test_py_typed_and_the_stub_ship_with_the_package():
    assert (PACKAGE / "py.typed").is_file()
    stub = ast.parse((PACKAGE / "_core.pyi").read_text())
    classes = {node.name: node for node in stub.body if isinstance(node, ast.ClassDef)}
    assert {"Batch", "Core"} <= set(classes)
    batch_methods = {n.name for n in classes["Batch"].body if isinstance(n, ast.FunctionDef)}
    runtime = {name for name in dir(tempo.Batch) if not name.startswith("_")}
    assert runtime <= batch_methods, runtime - batch_methods
    core_methods = {n.name for n in classes["Core"].body if isinstance(n, ast.FunctionDef)}
    assert {"enqueue", "get_batch"} <= core_methods


def test_the_logging_handler_is_exported_and_documented():
    import tempo.logging

    assert tempo.logging.__all__ == ["BatchHandler"]
    handler = tempo.logging.BatchHandler
    assert inspect.getdoc(handler)
    for method in ("emit", "flush", "close", "format_bytes", "handle"):
        assert inspect.getdoc(getattr(handler, method)), method


def test_the_metrics_module_is_exported_documented_and_not_imported_by_tempo():
    import subprocess
    import sys

    code = "import sys, tempo; print('tempo.metrics' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout == "False\n"
    import tempo.metrics

    assert tempo.metrics.__all__ == ["METRICS", "Metric", "PrometheusCollector", "instrument_otel"]
    for name in tempo.metrics.__all__:
        assert inspect.getdoc(getattr(tempo.metrics, name)), name
    for method in ("collect", "describe"):
        assert inspect.getdoc(getattr(tempo.metrics.PrometheusCollector, method)), method


def test_pipeline_methods_are_documented():
    for method in ("enqueue", "enqueue_many", "aenqueue", "flush", "aflush", "stats", "stop",
                   "close", "aclose", "dispatcher", "retry", "name"):
        assert inspect.getdoc(getattr(tempo.Pipeline, method)), method


def test_units():
    assert (tempo.KiB, tempo.MiB, tempo.GiB) == (1024, 1024**2, 1024**3)
    assert all(type(unit) is int for unit in (tempo.KiB, tempo.MiB, tempo.GiB))


def test_iov_max_is_the_systems_limit_on_buffers_per_call():
    assert type(tempo.IOV_MAX) is int
    assert tempo.IOV_MAX == os.sysconf("SC_IOV_MAX")


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_public_function_has_a_docstring_and_annotations(name):
    func = getattr(tempo, name)
    assert inspect.getdoc(func), name
    assert "return" in func.__annotations__, name
