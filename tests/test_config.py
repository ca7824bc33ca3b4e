"""API shape and configuration validation."""

from __future__ import annotations

import dataclasses
import datetime
import math
import threading

import pytest

import tempo
from conftest import STATS_FIELDS

INTERVAL_MSG = "tempo: interval must be greater than zero"
BATCH_MSG = "tempo: max batch bytes must not be negative"
BUFFERED_MSG = "tempo: max buffered bytes must be greater than zero"


# --- units -----------------------------------------------------------------


def test_units_are_ints_of_the_right_size():
    assert (tempo.KiB, tempo.MiB, tempo.GiB) == (1024, 1024**2, 1024**3)
    for unit in (tempo.KiB, tempo.MiB, tempo.GiB):
        assert type(unit) is int


# --- constructor shape -------------------------------------------------------


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        tempo.Dispatcher(0.25, 4 * tempo.MiB)
    with pytest.raises(TypeError):
        tempo.Dispatcher(0.25, max_buffered_bytes=4 * tempo.MiB)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_buffered_bytes": 1024},
        {"interval": 1.0},
        {"interval": 1.0, "max_buffered_bytes": 1024, "max_batch_size": 10},
    ],
    ids=["no-interval", "no-max-buffered", "unknown-keyword"],
)
def test_missing_or_unknown_arguments_are_type_errors(kwargs):
    with pytest.raises(TypeError):
        tempo.Dispatcher(**kwargs)


def test_config_reflects_the_arguments(make):
    d = make(interval=0.25, max_buffered_bytes=4 * tempo.MiB, max_batch_bytes=32 * tempo.KiB)
    config = d.config
    assert isinstance(config, tempo.Config)
    assert config.interval == 0.25
    assert type(config.interval) is float
    assert config.max_batch_bytes == 32 * tempo.KiB
    assert config.max_buffered_bytes == 4 * tempo.MiB
    assert config == tempo.Config(
        interval=0.25, max_batch_bytes=32 * tempo.KiB, max_buffered_bytes=4 * tempo.MiB
    )


def test_prefault_defaults_to_false_and_shows_when_set(make):
    assert make(interval=1, max_buffered_bytes=tempo.KiB).config.prefault is False
    d = make(interval=1, max_buffered_bytes=tempo.KiB, prefault=True)
    assert d.config.prefault is True
    assert repr(d).endswith(" prefault=True>")
    assert repr(d.config).endswith(", max_batch_items=0, prefault=True)")


def test_max_batch_bytes_defaults_to_zero(make):
    d = make(interval=1, max_buffered_bytes=100)
    assert d.config.max_batch_bytes == 0


def test_int_interval_becomes_float_seconds(make):
    d = make(interval=2, max_buffered_bytes=100)
    assert d.config.interval == 2.0
    assert type(d.config.interval) is float


@pytest.mark.parametrize(
    "delta, seconds",
    [
        (datetime.timedelta(milliseconds=250), 0.25),
        (datetime.timedelta(seconds=3), 3.0),
        (datetime.timedelta(minutes=1, microseconds=500_000), 60.5),
        (datetime.timedelta(microseconds=1), 1e-6),
    ],
)
def test_timedelta_interval_becomes_float_seconds(make, delta, seconds):
    d = make(interval=delta, max_buffered_bytes=100)
    assert d.config.interval == seconds
    assert type(d.config.interval) is float


def test_config_is_frozen(make):
    d = make(interval=0.5, max_buffered_bytes=100, max_batch_bytes=10)
    for name, value in [("interval", 9.0), ("max_batch_bytes", 1), ("max_buffered_bytes", 1)]:
        with pytest.raises(AttributeError):
            setattr(d.config, name, value)
    assert (d.config.interval, d.config.max_batch_bytes, d.config.max_buffered_bytes) == (
        0.5,
        10,
        100,
    )


def test_stats_is_a_frozen_dataclass_with_the_contract_fields(make):
    d = make(interval=1, max_buffered_bytes=4096)
    stats = d.stats()
    assert isinstance(stats, tempo.Stats)
    assert dataclasses.is_dataclass(tempo.Stats)
    assert [f.name for f in dataclasses.fields(tempo.Stats)] == STATS_FIELDS
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.enqueued = 5  # type: ignore[misc]


def test_fresh_dispatcher_stats_are_zero(make):
    d = make(interval=1, max_buffered_bytes=4096, max_batch_bytes=64)
    assert d.stats() == tempo.Stats(
        enqueued=0,
        enqueued_bytes=0,
        rejected_full=0,
        rejected_too_large=0,
        batches=0,
        items=0,
        dropped=0,
        buffered_bytes=0,
        max_buffered_bytes=4096,
        buffered_items=0,
        max_buffered_items=d._max_items,
        waiting_batches=0,
        held_batches=0,
        oldest_wait=0.0,
    )


def test_stats_is_a_snapshot(make):
    d = make(interval=60, max_buffered_bytes=4096)
    before = d.stats()
    d.enqueue(b"abc")
    assert before.enqueued == 0
    assert before.buffered_bytes == 0
    after = d.stats()
    assert (after.enqueued, after.enqueued_bytes, after.buffered_bytes) == (1, 3, 3)


# --- validation: wrong types -------------------------------------------------

VALID = {"interval": 0.25, "max_buffered_bytes": 1024, "max_batch_bytes": 16}


@pytest.mark.parametrize(
    "name, value",
    [
        ("interval", None),
        ("interval", "0.25"),
        ("interval", b"1"),
        ("interval", True),
        ("interval", [1]),
        ("max_buffered_bytes", None),
        ("max_buffered_bytes", "1024"),
        ("max_buffered_bytes", 1024.0),
        ("max_buffered_bytes", 1.5),
        ("max_buffered_bytes", True),
        ("max_batch_bytes", None),
        ("max_batch_bytes", "16"),
        ("max_batch_bytes", 16.0),
        ("max_batch_bytes", 0.0),
        ("max_batch_bytes", True),
        ("max_batch_bytes", False),
        ("prefault", 1),
        ("prefault", "yes"),
        ("prefault", None),
    ],
)
def test_wrong_types_are_type_errors(name, value):
    kwargs = dict(VALID, **{name: value})
    with pytest.raises(TypeError) as excinfo:
        tempo.Dispatcher(**kwargs)
    # A wrong type is not a range error.
    assert not isinstance(excinfo.value, tempo.ConfigError)


# --- validation: out of range -------------------------------------------------


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("interval", 0, INTERVAL_MSG),
        ("interval", 0.0, INTERVAL_MSG),
        ("interval", -0.0, INTERVAL_MSG),
        ("interval", -1, INTERVAL_MSG),
        ("interval", -0.001, INTERVAL_MSG),
        ("interval", math.nan, INTERVAL_MSG),
        ("interval", -math.inf, INTERVAL_MSG),
        ("interval", datetime.timedelta(0), INTERVAL_MSG),
        ("interval", datetime.timedelta(seconds=-1), INTERVAL_MSG),
        ("interval", datetime.timedelta(microseconds=-1), INTERVAL_MSG),
        ("max_batch_bytes", -1, BATCH_MSG),
        ("max_batch_bytes", -(2**40), BATCH_MSG),
        ("max_buffered_bytes", 0, BUFFERED_MSG),
        ("max_buffered_bytes", -1, BUFFERED_MSG),
    ],
)
def test_out_of_range_values_are_config_errors(name, value, message):
    kwargs = dict(VALID, **{name: value})
    with pytest.raises(tempo.ConfigError) as excinfo:
        tempo.Dispatcher(**kwargs)
    assert str(excinfo.value) == message
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval": 1e-6, "max_buffered_bytes": 1},
        {"interval": 1, "max_buffered_bytes": 1, "max_batch_bytes": 0},
        {"interval": 1, "max_buffered_bytes": 1, "max_batch_bytes": 10**6},
    ],
    ids=["smallest", "zero-batch", "batch-over-buffered"],
)
def test_boundary_values_are_accepted(make, kwargs):
    d = make(**kwargs)
    assert d.config.max_buffered_bytes == 1
    assert d.config.max_batch_bytes == kwargs.get("max_batch_bytes", 0)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"interval": -1, "max_buffered_bytes": 1024}, tempo.ConfigError),
        ({"interval": 1, "max_buffered_bytes": 0}, tempo.ConfigError),
        ({"interval": 1, "max_buffered_bytes": 1024, "max_batch_bytes": -5}, tempo.ConfigError),
        ({"interval": "1", "max_buffered_bytes": 1024}, TypeError),
        ({"interval": 1, "max_buffered_bytes": 1024, "max_batch_bytes": 1.0}, TypeError),
    ],
)
def test_rejected_config_leaves_nothing_behind(kwargs, error):
    # Nothing half-applies: no thread is started by a failed construction, and
    # repeating it fails the same way.
    threads_before = set(threading.enumerate())
    for _ in range(3):
        with pytest.raises(error):
            tempo.Dispatcher(**kwargs)
    assert set(threading.enumerate()) - threads_before == set()


def test_rejected_config_does_not_affect_an_existing_dispatcher(make, drain):
    d = make(interval=60, max_buffered_bytes=100, max_batch_bytes=4)
    with pytest.raises(tempo.ConfigError):
        tempo.Dispatcher(interval=60, max_buffered_bytes=0, max_batch_bytes=4)
    assert d.config == tempo.Config(interval=60.0, max_buffered_bytes=100, max_batch_bytes=4)
    d.start()
    d.enqueue(b"abcd")
    d.enqueue(b"ef")
    assert drain(d) == [[b"abcd"], [b"ef"]]
