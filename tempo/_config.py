"""Configuration: units, validation and the frozen ``Config`` record."""

from __future__ import annotations

import datetime
import itertools
import math
import operator
import sys
import threading
from dataclasses import dataclass
from typing import Union

from ._errors import ConfigError

__all__ = ["GiB", "KiB", "MiB", "Config", "Interval"]

#: One kibibyte, 1024 bytes: ``max_batch_bytes=32 * tempo.KiB``.
KiB: int = 1024
#: One mebibyte, 1024**2 bytes: ``max_buffered_bytes=64 * tempo.MiB``.
MiB: int = 1024 * KiB
#: One gibibyte, 1024**3 bytes.
GiB: int = 1024 * MiB

#: What ``interval=`` accepts: seconds as ``int``/``float``, or a ``timedelta``.
Interval = Union[int, float, datetime.timedelta]

#: The largest ``max_buffered_bytes`` and ``max_batch_bytes``: 32 TiB (2**45),
#: far beyond any machine's memory; larger values are a ``ConfigError``. The
#: mirrored ring takes twice the bound in address space, and 2**46 would need
#: all of x86-64's 128 TiB of user space; 2**45 maps (docs/rules.md).
MAX_BYTES = 1 << 45
#: The largest finite ``interval``, in seconds (a float's largest value);
#: ``math.inf`` is accepted too (seal by size only).
MAX_INTERVAL = sys.float_info.max


def _seconds(interval: object) -> float:
    if isinstance(interval, datetime.timedelta):
        seconds = interval.total_seconds()
    elif isinstance(interval, bool) or not isinstance(interval, (int, float)):
        raise TypeError(
            "interval must be seconds (int or float) or a datetime.timedelta, "
            f"not {type(interval).__name__!r}"
        )
    else:
        try:
            seconds = float(interval)
        except OverflowError:  # an int beyond any float
            if interval > 0:
                raise ConfigError(_INTERVAL_TOO_LARGE) from None
            seconds = -math.inf
    # NaN fails this test too: it is not greater than zero.
    if not seconds > 0:
        raise ConfigError("tempo: interval must be greater than zero")
    return seconds


_INTERVAL_TOO_LARGE = (
    "tempo: interval must be at most sys.float_info.max seconds (or math.inf)"
)


def _byte_count(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not 'bool'")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__!r}") from None


#: The largest ``max_batch_items`` (the core keeps it in a C ``ssize_t``);
#: any cap above the arena's item slots never triggers anyway.
MAX_BATCH_ITEMS: int = 2**63 - 1


def _item_cap(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError("max_batch_items must be an int, not 'bool'")
    try:
        items = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"max_batch_items must be an int, not {type(value).__name__!r}") from None
    if items < 0:
        raise ConfigError("tempo: max batch items must not be negative")
    if items > MAX_BATCH_ITEMS:
        raise ConfigError("tempo: max batch items must be at most 2**63 - 1")
    return items


#: Default names: "dispatcher-1", "pipeline-1", ... numbered per kind in
#: this process. The lock makes them unique on free-threaded CPython too.
_name_counters = {"dispatcher": itertools.count(1), "pipeline": itertools.count(1)}
_name_lock = threading.Lock()


def _name(value: object, kind: str) -> str:
    """A ``name=`` argument, validated; a fresh default (``"<kind>-<n>"``) for None.

    A name is not part of ``Config``: the config is the settings a dispatcher
    runs with, which many dispatchers may share (``tempo tune`` writes them;
    ``Dispatcher(**dataclasses.asdict(d.config))`` copies them), while a name
    tells one dispatcher from another in logs and metrics.
    """
    if value is None:
        with _name_lock:
            return f"{kind}-{next(_name_counters[kind])}"
    if not isinstance(value, str):
        raise TypeError(f"name must be a str or None, not {type(value).__name__!r}")
    if not value or not value.isprintable():
        raise ConfigError("tempo: name must be a non-empty string of printable characters")
    return value


@dataclass(frozen=True)
class Config:
    """A dispatcher's configuration, validated and normalised.

    ``interval`` is in seconds (a float); ``math.inf`` means batches are sealed
    by size only. ``max_batch_bytes`` of 0 turns batch shaping off.
    ``max_buffered_bytes`` is the hard bound on payload bytes tempo owns.
    ``max_batch_items`` caps the items in a batch; 0 means no cap.
    ``prefault`` makes every page of the buffer resident when the dispatcher
    is made (a ``bool``).

    Largest values: 32 TiB (2**45) for both byte sizes, 2**63 - 1 for
    ``max_batch_items``, ``sys.float_info.max`` seconds (or ``math.inf``) for
    ``interval``. Every value out of range is a
    ``ConfigError``.
    """

    interval: float
    max_batch_bytes: int
    max_buffered_bytes: int
    max_batch_items: int
    prefault: bool

    def __init__(
        self,
        *,
        interval: Interval,
        max_buffered_bytes: int,
        max_batch_bytes: int = 0,
        max_batch_items: int = 0,
        prefault: bool = False,
    ) -> None:
        seconds = _seconds(interval)
        batch = _byte_count("max_batch_bytes", max_batch_bytes)
        buffered = _byte_count("max_buffered_bytes", max_buffered_bytes)
        if batch < 0:
            raise ConfigError("tempo: max batch bytes must not be negative")
        if buffered <= 0:
            raise ConfigError("tempo: max buffered bytes must be greater than zero")
        # Refused clearly here rather than overflow (or fail inside mmap) later.
        if batch > MAX_BYTES:
            raise ConfigError("tempo: max batch bytes must be at most 32 TiB (2**45)")
        if buffered > MAX_BYTES:
            raise ConfigError("tempo: max buffered bytes must be at most 32 TiB (2**45)")
        object.__setattr__(self, "interval", seconds)
        object.__setattr__(self, "max_batch_bytes", batch)
        object.__setattr__(self, "max_buffered_bytes", buffered)
        object.__setattr__(self, "max_batch_items", _item_cap(max_batch_items))
        if not isinstance(prefault, bool):
            raise TypeError(f"prefault must be a bool, not {type(prefault).__name__!r}")
        object.__setattr__(self, "prefault", prefault)

    def __repr__(self) -> str:
        return (
            f"Config(interval={self.interval!r}, max_batch_bytes={self.max_batch_bytes!r}, "
            f"max_buffered_bytes={self.max_buffered_bytes!r}, "
            f"max_batch_items={self.max_batch_items!r}, prefault={self.prefault!r})"
        )


