"""``max_batch_items``: a cap on items per batch; a batch that reaches it is
sealed at once. (The model-based check with ``max_batch_bytes`` is the
property test in test_batching.py.)"""

from __future__ import annotations

import pytest

import tempo
from conftest import WAIT

QUIET = 0.1


def test_defaults_to_zero_meaning_no_cap(make, drain):
    d = make()
    assert d.config.max_batch_items == 0
    assert tempo.Config(interval=1, max_buffered_bytes=10).max_batch_items == 0
    for _ in range(2000):
        d.enqueue(b"")
    assert [len(b) for b in drain(d)] == [2000]


def test_a_batch_that_reaches_the_cap_is_sealed_at_once(make):
    d = make(interval=60, max_batch_items=3)
    d.start()
    d.enqueue(b"a")
    d.enqueue(b"")
    with pytest.raises(TimeoutError):
        d.get_batch(timeout=QUIET)
    d.enqueue(b"c")
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"a", b"", b"c"]
    stats = d.stats()
    assert (stats.batches, stats.waiting_batches) == (1, 0)


def test_one_item_per_batch(make, drain):
    d = make(max_batch_items=1)
    assert d.enqueue_many([b"a", b"bb", b""]) == 3
    assert d.stats().waiting_batches == 3
    assert drain(d) == [[b"a"], [b"bb"], [b""]]


def test_with_max_batch_bytes_whichever_comes_first(make, drain):
    d = make(max_batch_items=2, max_batch_bytes=5)
    for p in [b"a", b"b", b"cccc", b"dd", b"e", b"ffffff", b"g"]:
        d.enqueue(p)
    assert drain(d) == [
        [b"a", b"b"],  # two items
        [b"cccc"],  # + dd would pass 5 bytes
        [b"dd", b"e"],  # two items
        [b"ffffff"],  # over max_batch_bytes on its own
        [b"g"],  # sealed by shutdown
    ]


def test_the_interval_still_seals_a_batch_under_the_cap(make):
    d = make(interval=0.05, max_batch_items=10)
    d.start()
    d.enqueue(b"a")
    with d.get_batch(timeout=WAIT) as batch:
        assert batch.tolist() == [b"a"]


def test_a_cap_above_the_item_slots_never_triggers(make, drain):
    d = make(max_buffered_bytes=100, max_batch_items=2**63 - 1)
    n = d._max_items
    assert d.enqueue_many([b""] * (n + 1)) == n
    assert [len(b) for b in drain(d)] == [n]


def test_config_and_repr(make):
    d = make(interval=1, max_buffered_bytes=100, max_batch_items=7)
    assert d.config == tempo.Config(interval=1, max_buffered_bytes=100, max_batch_items=7)
    assert d.config.max_batch_items == 7
    assert repr(d.config) == (
        "Config(interval=1.0, max_batch_bytes=0, max_buffered_bytes=100, max_batch_items=7,"
        " prefault=False)"
    )
    assert "max_batch_items=7" in repr(d)
    assert "max_batch_items" not in repr(make(interval=1, max_buffered_bytes=100))
    with pytest.raises(AttributeError):
        d.config.max_batch_items = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "value, message",
    [
        (-1, "tempo: max batch items must not be negative"),
        (-(2**70), "tempo: max batch items must not be negative"),
        (2**63, "tempo: max batch items must be at most 2**63 - 1"),
        (2**70, "tempo: max batch items must be at most 2**63 - 1"),
    ],
)
def test_out_of_range_is_a_config_error(value, message):
    for make_it in (tempo.Dispatcher, tempo.Config):
        with pytest.raises(tempo.ConfigError) as info:
            make_it(interval=1, max_buffered_bytes=100, max_batch_items=value)
        assert str(info.value) == message
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [1.0, "3", True, None, 2.5])
def test_wrong_type_is_a_type_error(value):
    for make_it in (tempo.Dispatcher, tempo.Config):
        with pytest.raises(TypeError, match="max_batch_items must be an int"):
            make_it(interval=1, max_buffered_bytes=100, max_batch_items=value)


def test_an_int_like_value_is_accepted(make):
    class Three:
        def __index__(self):
            return 3

    d = make(interval=1, max_buffered_bytes=100, max_batch_items=Three())
    assert d.config.max_batch_items == 3
    assert type(d.config.max_batch_items) is int
