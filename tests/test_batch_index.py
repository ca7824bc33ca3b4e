"""``batch[i]`` out of range is an ``IndexError`` for any int (issue 15, item 6):
``batch[2**100]`` raised ``OverflowError`` before."""

from __future__ import annotations

import pytest


HUGE = [2**63, 2**100, -(2**63) - 1, -(2**100), 10**400]


@pytest.fixture
def batch(make):
    d = make(interval=60)
    d.start()
    d.enqueue(b"a")
    d.enqueue(b"bc")
    d._seal_now()
    with d.get_batch(timeout=5) as batch:
        yield batch


@pytest.mark.parametrize("index", [2, -3, 2**31, 2**62, *HUGE], ids=str)
def test_an_index_out_of_range_is_an_index_error_however_large(batch, index):
    with pytest.raises(IndexError, match="^batch index out of range$"):
        batch[index]


def test_indexes_in_range_and_index_objects_still_work(batch):
    class Two:
        def __index__(self):
            return 1

    assert bytes(batch[0]) == b"a" and bytes(batch[-1]) == b"bc"
    assert bytes(batch[Two()]) == b"bc"
    assert bytes(batch[True]) == b"bc"


@pytest.mark.parametrize("index", ["0", 1.0, None], ids=repr)
def test_an_index_that_is_not_an_integer_is_a_type_error(batch, index):
    with pytest.raises(TypeError):
        batch[index]


def test_slices_with_huge_bounds_are_clamped(batch):
    assert [bytes(v) for v in batch[-(2**100) : 2**100]] == [b"a", b"bc"]
