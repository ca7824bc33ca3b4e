"""The error classes: importable from ``tempo``, exact bases, exact (Go) messages."""

from __future__ import annotations

import time

import pytest

import tempo

WAIT = 5.0


@pytest.mark.parametrize(
    "name, bases",
    [
        ("TempoError", (Exception,)),
        ("ConfigError", ("TempoError", ValueError)),
        ("QueueFull", ("TempoError",)),
        ("PayloadTooLarge", ("TempoError", ValueError)),
        ("ShuttingDown", ("TempoError",)),
        ("Stopped", ("TempoError",)),
    ],
)
def test_error_class_bases(name, bases):
    cls = getattr(tempo, name)
    expected = tuple(getattr(tempo, b) if isinstance(b, str) else b for b in bases)
    assert cls.__bases__ == expected
    assert issubclass(cls, Exception)


def test_tempo_errors_are_distinct_classes():
    classes = [
        tempo.TempoError,
        tempo.ConfigError,
        tempo.QueueFull,
        tempo.PayloadTooLarge,
        tempo.ShuttingDown,
        tempo.Stopped,
    ]
    assert len(set(classes)) == 6
    for cls in classes[1:]:
        assert issubclass(cls, tempo.TempoError)
    # Only the two "bad value" errors are ValueErrors.
    assert [cls.__name__ for cls in classes if issubclass(cls, ValueError)] == [
        "ConfigError",
        "PayloadTooLarge",
    ]
    # Timeouts are reported with the builtin TimeoutError, not a tempo error.
    for cls in classes:
        assert not issubclass(cls, TimeoutError)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"interval": 0, "max_buffered_bytes": 10}, "tempo: interval must be greater than zero"),
        (
            {"interval": 1, "max_buffered_bytes": 10, "max_batch_bytes": -1},
            "tempo: max batch bytes must not be negative",
        ),
        (
            {"interval": 1, "max_buffered_bytes": 0},
            "tempo: max buffered bytes must be greater than zero",
        ),
    ],
)
def test_config_error_messages(kwargs, message):
    with pytest.raises(tempo.ConfigError) as excinfo:
        tempo.Dispatcher(**kwargs)
    assert str(excinfo.value) == message


def test_queue_full_message(make):
    d = make(max_buffered_bytes=4)
    d.enqueue(b"1234")
    with pytest.raises(tempo.QueueFull) as excinfo:
        d.enqueue(b"5")
    # The contract's message, then which limit was hit (tests/test_queue_full.py).
    assert str(excinfo.value) == (
        "tempo: dispatcher queue full: payload bytes: 4 owned + a payload of 1 > "
        "max_buffered_bytes=4")
    assert not isinstance(excinfo.value, ValueError)


def test_payload_too_large_message(make):
    d = make(max_buffered_bytes=4)
    with pytest.raises(tempo.PayloadTooLarge) as excinfo:
        d.enqueue(b"12345")
    assert str(excinfo.value) == "tempo: payload exceeds configured buffered byte limit"
    assert isinstance(excinfo.value, ValueError)


def test_stopped_messages(make, spawn):
    d = make(max_buffered_bytes=64)
    d.start()
    d.stop()
    with pytest.raises(tempo.Stopped) as from_enqueue:
        d.enqueue(b"x")
    with pytest.raises(tempo.Stopped) as from_start:
        d.start()
    from_get_batch = spawn(d.get_batch).exception()
    assert isinstance(from_get_batch, tempo.Stopped)
    for exc in (from_enqueue.value, from_start.value, from_get_batch):
        assert str(exc) == "tempo: dispatcher stopped"


def test_shutting_down_message(make, spawn):
    d = make(max_buffered_bytes=64)
    d.start()
    d.enqueue(b"pending")  # shutdown waits for a consumer to take it
    shutdown = spawn(d.shutdown)
    error = None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            d.enqueue(b"")
        except tempo.ShuttingDown as exc:
            error = exc
            break
        time.sleep(0.001)
    assert error is not None, "enqueue never raised ShuttingDown during shutdown()"
    assert str(error) == "tempo: dispatcher shutting down"
    d.stop()
    assert isinstance(shutdown.exception(), tempo.Stopped)
