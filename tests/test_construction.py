"""How tempo's objects come to be and refuse to be duplicated: a ``Batch`` only
comes from a dispatcher, ``Dispatcher.__init__`` runs once, neither pickles nor
copies, and the public names show as ``tempo.X`` with help() listing the public
API only (issue 8, bugs 1, 10 and 12)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import pydoc
import re
import subprocess
import sys
import textwrap

import pytest

import tempo

from conftest import WAIT

PUBLIC_CLASSES = [
    "Batch", "Config", "ConfigError", "Dispatcher", "PayloadTooLarge", "Pipeline",
    "PipelineStats", "QueueFull", "Retry", "ShuttingDown", "Stats", "Stopped", "TempoError",
]


# -- bug 1: Batch cannot be made by hand --------------------------------------------------


@pytest.mark.parametrize(
    "make_batch",
    [
        lambda: tempo.Batch(),
        lambda: tempo.Batch.__new__(tempo.Batch),
        lambda: object.__new__(tempo.Batch),
    ],
    ids=["call", "__new__", "object.__new__"],
)
def test_a_batch_cannot_be_constructed(make_batch):
    with pytest.raises(TypeError):
        make_batch()


def test_using_a_hand_made_batch_does_not_crash():
    # Before the fix, Batch.__new__(Batch) made a half-initialised batch and
    # release() (or `with b:`) dereferenced its missing arena: a segfault.
    # Run in a child so that the old crash fails this test, not the suite.
    code = textwrap.dedent(
        """
        import tempo
        for attempt in ("release", "with"):
            try:
                b = tempo.Batch.__new__(tempo.Batch)
            except TypeError:
                print("refused")
                continue
            if attempt == "release":
                b.release()
            else:
                with b:
                    pass
            print("survived")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "refused\nrefused\n", "")


def test_the_error_says_where_batches_come_from():
    with pytest.raises(TypeError, match="batches come from a dispatcher"):
        tempo.Batch()


# -- bug 10: __init__ runs once -------------------------------------------------------------


def test_a_second_init_raises_and_changes_nothing(make, spawn):
    d = make(interval=60, max_buffered_bytes=64, max_batch_bytes=8)
    d.start()
    d.enqueue(b"abcde")  # open batch of 5 bytes
    before = d.stats()
    with pytest.raises(TypeError, match="initialised once"):
        d.__init__(interval=1, max_buffered_bytes=1000, max_batch_bytes=4)
    with pytest.raises(TypeError, match="initialised once"):
        # Even with a config that is invalid: the refusal comes first.
        d.__init__(interval=-1, max_buffered_bytes=0)
    with pytest.raises(TypeError, match="initialised once"):
        tempo._core.Core.__init__(d, 1.0, 4, 1000)  # the compiled half refuses too
    assert d.config == tempo.Config(interval=60, max_buffered_bytes=64, max_batch_bytes=8)
    # oldest_wait grows with the clock; every other counter is unchanged.
    assert dataclasses.replace(d.stats(), oldest_wait=0.0) == dataclasses.replace(
        before, oldest_wait=0.0)
    # The buffered payload is still there, and the next one seals correctly:
    # 5 + 4 > 8, so "abcde" goes alone.
    d.enqueue(b"fghi")
    consumer = spawn(lambda: [d.get_batch(timeout=WAIT).tolist() for _ in range(2)])
    d.flush(timeout=WAIT)
    assert consumer.result() == [[b"abcde"], [b"fghi"]]
    assert d.stats().dropped == 0


# -- bug 12: names, pickling, help() -----------------------------------------------------


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_public_classes_show_as_tempo_names(name):
    cls = getattr(tempo, name)
    assert cls.__module__ == "tempo"
    assert repr(cls) == f"<class 'tempo.{name}'>"


def test_an_exception_prints_as_tempo_name():
    proc = subprocess.run(
        [sys.executable, "-c", "import tempo; raise tempo.QueueFull()"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.stderr.rstrip().splitlines()[-1] == "tempo.QueueFull: tempo: dispatcher queue full"


def test_errors_and_records_still_pickle_by_their_public_name():
    error = pickle.loads(pickle.dumps(tempo.Stopped("x")))
    assert (type(error), error.args) == (tempo.Stopped, ("x",))
    config = tempo.Config(interval=1, max_buffered_bytes=2)
    assert b"ctempo\nConfig" in pickle.dumps(config, protocol=0)
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize("how", ["pickle", "copy", "deepcopy"])
def test_a_dispatcher_cannot_be_pickled_or_copied(make, how):
    d = make()
    with pytest.raises(TypeError, match="a Dispatcher cannot be pickled or copied"):
        {"pickle": pickle.dumps, "copy": copy.copy, "deepcopy": copy.deepcopy}[how](d)


@pytest.mark.parametrize("how", ["pickle", "copy", "deepcopy"])
def test_a_batch_cannot_be_pickled_or_copied(make, how):
    d = make(max_batch_bytes=1)
    d.start()
    d.enqueue(b"x")
    with d.get_batch(timeout=WAIT) as batch:
        with pytest.raises(TypeError, match="a Batch cannot be pickled: copy it with tolist"):
            {"pickle": pickle.dumps, "copy": copy.copy, "deepcopy": copy.deepcopy}[how](batch)


INTERNALS = re.compile(r"__pyx|_cython__|__setstate__|capsule")


@pytest.mark.parametrize("name", ["Dispatcher", "Batch"])
def test_help_shows_no_cython_internals(name):
    text = pydoc.render_doc(getattr(tempo, name), renderer=pydoc.plaintext)
    assert not INTERNALS.findall(text), INTERNALS.findall(text)
    # Nor the private module: no base class or annotation names tempo._core.
    assert "_core" not in text, [line for line in text.splitlines() if "_core" in line]
    # Every public method is there, with its docstring's first line.
    for attr in dir(getattr(tempo, name)):
        if not attr.startswith("_"):
            assert f" {attr}" in text, attr
    assert text.startswith(f"Python Library Documentation: class {name} in module tempo")
