"""tempo: a thin in-process byte batcher with a zero-copy compiled core.

Producers call ``Dispatcher.enqueue(payload)``; consumers take ``Batch``
objects out with ``get_batch()``, ``batches()`` or their asyncio twins. A
batch is sealed before the next payload would push it over
``max_batch_bytes``, when it reaches ``max_batch_bytes``, or ``interval``
seconds after its first payload; ``max_buffered_bytes`` bounds the payload
bytes tempo owns, and a full queue raises ``QueueFull`` at once.

At interpreter exit, dispatchers still running are drained within a bound
(``set_exit_timeout``); see docs/fork-and-exit.md.

``Pipeline`` is the managed consumer: a dispatcher plus workers that call
your sink with every batch, with retries and dead letters;
``tempo.logging.BatchHandler`` sends log records through one.
"""

from ._config import Config, GiB, KiB, MiB
from ._core import IOV_MAX, Batch
from ._dispatcher import Dispatcher
from ._errors import (
    ConfigError,
    PayloadTooLarge,
    QueueFull,
    ShuttingDown,
    Stopped,
    TempoError,
)
from ._lifecycle import exit_timeout, set_exit_timeout
from ._pipeline import Pipeline, PipelineStats, Retry, Unretryable
from ._settings import load_settings
from ._stats import Stats
from . import logging  # noqa: F401 - tempo.logging.BatchHandler; a submodule, not in __all__

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Config",
    "ConfigError",
    "Dispatcher",
    "GiB",
    "IOV_MAX",
    "KiB",
    "MiB",
    "PayloadTooLarge",
    "Pipeline",
    "PipelineStats",
    "QueueFull",
    "Retry",
    "ShuttingDown",
    "Stats",
    "Stopped",
    "TempoError",
    "Unretryable",
    "exit_timeout",
    "load_settings",
    "set_exit_timeout",
]

# Public names show where users import them from: tempo.QueueFull in a
# traceback, not tempo._errors.QueueFull. (Batch, a compiled type, is named
# tempo.Batch in tempo/_core.pyx.)
for _obj in (Config, ConfigError, Dispatcher, PayloadTooLarge, Pipeline, PipelineStats,
             QueueFull, Retry, ShuttingDown, Stats, Stopped, TempoError, Unretryable,
             exit_timeout, load_settings, set_exit_timeout):
    _obj.__module__ = __name__
del _obj
