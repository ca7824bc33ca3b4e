"""``BatchHandler``: a ``logging`` handler that batches records through a ``tempo.Pipeline``.

The quickest way for a service to use tempo::

    import logging, tempo.logging

    def ship(batch):                       # one call per batch of log lines
        with open("app.log", "ab") as f:
            batch.writeall(f)

    logging.getLogger().addHandler(tempo.logging.BatchHandler(ship, json=True))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json as _json
import logging
import threading
from typing import Any, Optional, Union

from ._config import MiB, _name
from ._errors import ConfigError, PayloadTooLarge, QueueFull, ShuttingDown, Stopped
from ._pipeline import Pipeline, Sink, _count, _is_async, _running_loop
from ._protocol import timeout_seconds, wait_arg

__all__ = ["BatchHandler"]

_log = logging.getLogger("tempo")

#: How long ``flush()`` and ``close()`` wait for the sink by default: they run
#: at exit too (``logging.shutdown``), where waiting for ever is no option.
DEFAULT_TIMEOUT = 5.0


#: What every LogRecord has; ``json=True`` writes any other attribute of a
#: record (an ``extra=`` field) as a field of its own.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}


#: The fields ``json=True`` writes itself. An ``extra=`` field under one of
#: these names, or under a name starting with ``extra.``, is written as
#: ``extra.<name>``: a fixed rule, so no two fields ever share a key.
_JSON_FIELDS = frozenset({"time", "level", "logger", "message", "module", "line", "thread", "exc"})


def _extra_key(key: str) -> str:
    return f"extra.{key}" if key in _JSON_FIELDS or key.startswith("extra.") else key


def _json_safe(value: Any) -> Any:
    """``value`` if JSON encodes it as it is (strictly: no NaN, no key that
    is not a string), else its ``repr()``, else (``repr()`` failed too: a
    value nested too deep, an int too long to print) ``"<unrepresentable
    TYPE>"``. Never raises: a field must not cost the record."""
    if value is None or isinstance(value, (str, bool)):
        return value
    try:
        _json.dumps(value, allow_nan=False)
        return value
    except Exception:  # noqa: BLE001 - TypeError, ValueError, RecursionError, or any __repr__'s own
        pass
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a __repr__ may raise anything; the fallback below cannot
        return f"<unrepresentable {type(value).__name__}>"


def _level(value: Union[int, str]) -> int:
    """A level given as ``logging.ERROR`` or a level name, resolved as
    ``Handler.setLevel`` resolves it (names as registered, case included)."""
    if isinstance(value, str):
        # For a str, getLevelName() is the registry setLevel() reads
        # (logging._nameToLevel): "notice" as registered, "error" unknown.
        number = logging.getLevelName(value)
        if isinstance(number, int):
            return number
        raise ConfigError(f"tempo: flush_level: unknown level {value!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"flush_level must be a level (int or str) or None, not {type(value).__name__!r}")
    return value


def _warn_from_emit(message: str, name: Optional[str] = None) -> None:
    """``_log.warning(message)`` for a caller inside ``emit()``.

    Recent CPython releases (3.13.5 here; not 3.13.0) silently drop a record
    logged by a thread that is already inside ``Logger.handle`` (a guard
    against handlers that log), and emit() always is: ``_log.warning`` there never reached anyone. So this
    applies the logger's own checks and hands the record to its handlers
    directly; the handler's ``_reported`` is what keeps it from looping.
    """
    # isEnabledFor() itself says False inside that guard: its checks, without it.
    if (_log.disabled or _log.manager.disable >= logging.WARNING
            or _log.getEffectiveLevel() > logging.WARNING):
        return
    fn, lno, func, sinfo = _log.findCaller()
    record = _log.makeRecord(_log.name, logging.WARNING, fn, lno, message, (), None, func,
                             None if name is None else {"tempo_name": name}, sinfo)
    kept: Any = _log.filter(record)
    if isinstance(kept, logging.LogRecord):  # Python 3.12+: a filter may replace it
        record = kept
    if kept:
        _log.callHandlers(record)


class BatchHandler(logging.Handler):
    """Formats log records to bytes, one line each, and enqueues them in a pipeline.

    ``target`` is a ``tempo.Pipeline`` (the handler uses it and leaves closing
    it to you) or a plain sink ``sink(batch)``, for which the handler makes and
    owns a pipeline with ``pipeline_options`` (``tempo.Pipeline``'s keyword
    arguments; defaults: ``interval=1.0``, ``max_buffered_bytes=16 MiB``,
    ``max_batch_bytes=1 MiB``) and closes it in ``close()``.

    Each record becomes one line ending in ``b"\\n"``: the formatter's text,
    with line breaks (a traceback) escaped as ``\\n``, UTF-8 encoded; or with
    ``json=True``, one JSON object with ``time`` (ISO 8601, UTC), ``level``,
    ``logger``, ``message``, ``module``, ``line``, ``thread``, and ``exc`` if
    the record carries an exception; then every ``extra=`` field of the record
    under its own name, except one named like those fields (``exc`` too, with
    or without an exception) or starting with ``extra.``, which is written as
    ``"extra.<name>"``: no two fields share a key. A field's value is written
    as it is if JSON can hold it (``str``, numbers, ``bool``, ``None``, lists
    and dicts of those, with string keys and finite floats), else as its
    ``repr()`` string, else (``repr()`` failed too) ``"<unrepresentable
    TYPE>"``.

    ``flush_level``: a record at or above this level (``logging.ERROR``, or a
    level name as ``Handler.setLevel`` takes it: ``"ERROR"``) seals the open batch as soon as it is enqueued, so it
    reaches the sink (with the records before it) without waiting for
    ``interval``, as ``logging.handlers.MemoryHandler``'s ``flushLevel``
    does. ``None`` (the default): records wait for ``interval`` or a full
    batch.

    ``name``: the handler's ``name`` (as ``logging.Handler.name``) and, when
    the handler makes the pipeline, that pipeline's name (in tempo's log
    records and metrics). ``None``: the pipeline's name.

    Logging never blocks on the handler: a record is enqueued at once or not
    at all (``enqueue(..., timeout=0)``). Records that could not be enqueued
    (tempo full, pipeline closed) are counted in ``dropped``; the first such
    loss is reported once on the ``tempo`` logger, and ``close()`` reports the
    total.

    ``flush()`` waits (up to ``timeout`` seconds) until the sink has processed
    every record handled so far.
    """

    def __init__(
        self,
        target: Union[Pipeline, Sink],
        level: Union[int, str] = logging.NOTSET,
        *,
        json: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        flush_level: Union[int, str, None] = None,
        name: Optional[str] = None,
        **pipeline_options: Any,
    ) -> None:
        # Checked now, not first in close() (at exit), after the pipeline was made.
        timeout_seconds(timeout)
        seal_at = None if flush_level is None else _level(flush_level)
        if name is not None:
            _name(name, "pipeline")
        if isinstance(target, Pipeline):
            if pipeline_options:
                raise TypeError("pipeline options apply only when the handler makes the pipeline")
            self._pipeline = target
            self._owned = False
        elif _is_async(target):
            raise TypeError(
                "an async sink needs an event loop: pass a tempo.Pipeline that you "
                "run with `async with`"
            )
        else:
            options: dict[str, Any] = {
                "interval": 1.0,
                "max_buffered_bytes": 16 * MiB,
                "max_batch_bytes": 1 * MiB,
            }
            options.update(pipeline_options)
            self._pipeline = Pipeline(target, name=name, **options)
            self._owned = True
        # Handler.__init__ registers the handler with logging, whose shutdown()
        # flushes it at exit: so it comes last, when nothing else can fail
        # (only its own level check), not on a half-made handler.
        try:
            super().__init__(level)
        except BaseException:
            if self._owned:
                self._pipeline.close()
            raise
        self.name = self._pipeline.name if name is None else name
        self._flush_level = seal_at
        self._seal_now = self._pipeline.dispatcher._seal_now
        self._json = bool(json)
        self._timeout = timeout
        self._enqueue = self._pipeline.enqueue
        self._lost_lock = threading.Lock()
        self._dropped = 0
        self._reported = 0  # what the last report said
        self._closed = False

    @property
    def pipeline(self) -> Pipeline:
        """The ``tempo.Pipeline`` the records go to."""
        return self._pipeline

    @property
    def dropped(self) -> int:
        """Records that could not be enqueued (tempo full, or the pipeline closed)."""
        return self._dropped

    def format_bytes(self, record: logging.LogRecord) -> bytes:
        """The payload for one record: one line ending in ``b"\\n"``."""
        if self._json:
            doc: dict[str, Any] = {
                "time": datetime.datetime.fromtimestamp(
                    record.created, datetime.timezone.utc
                ).isoformat(timespec="milliseconds"),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                "module": record.module,
                "line": record.lineno,
                "thread": record.threadName,
            }
            if record.exc_info:
                doc["exc"] = self.formatException(record.exc_info)
            elif record.exc_text:
                doc["exc"] = record.exc_text
            for key, value in record.__dict__.items():
                if key not in _RECORD_ATTRIBUTES:
                    doc[_extra_key(str(key))] = _json_safe(value)
            line = _json.dumps(doc, ensure_ascii=False, default=repr)
        else:
            line = self.format(record).replace("\r", "\\r").replace("\n", "\\n")
        return line.encode("utf-8", "backslashreplace") + b"\n"

    def formatException(self, exc_info: Any) -> str:
        """The traceback text of ``exc_info`` (with the formatter's rules)."""
        formatter = self.formatter or logging.Formatter()
        return formatter.formatException(exc_info)

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter, then ``emit()``: without the handler's lock, which the
        thread-safe enqueue does not need (so no logging call waits for another)."""
        rv: Any = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may replace it
            record = rv
        if rv:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        """Enqueue the record's line; never waits."""
        try:
            payload = self.format_bytes(record)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's contract: a record that cannot be written goes to handleError
            self.handleError(record)
            return
        try:
            self._enqueue(payload)
        except (QueueFull, ShuttingDown, Stopped, PayloadTooLarge):
            self._lost()
            return
        if self._flush_level is not None and record.levelno >= self._flush_level:
            # Seal only: the record goes out with the next hand-off, and
            # logging never waits for the sink (flush() would).
            self._seal_now()

    def _lost(self) -> None:
        with self._lost_lock:
            self._dropped += 1
            report = self._reported == 0
            if report:
                self._reported = self._dropped
        if report:
            # On the tempo logger: if this handler is attached there (or to
            # the root), the report comes back here once, and a full queue
            # only counts it; _reported is set, so nothing loops.
            _warn_from_emit(
                f"BatchHandler {self.name!r} could not enqueue a log record (tempo is "
                "full or closed); lost records are counted in handler.dropped and "
                "reported in total when the handler is closed",
                self.name,
            )

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until the sink has processed every record handled so far (up
        to ``timeout`` seconds, default the handler's ``timeout``); gives up
        quietly on timeout or once the pipeline is closed, and returns at
        once when called by the sink itself. With an async
        pipeline it waits only from outside the pipeline's event loop (on the
        loop, waiting would block the sink), and not at all once that loop
        has ended."""
        wait = self._timeout if timeout is None else timeout
        pipeline = self._pipeline
        if threading.current_thread() in pipeline._threads:
            return  # called by the sink: it cannot wait for itself
        try:
            if not pipeline._async:
                pipeline.flush(wait)
                return
            # logging.shutdown() calls this at exit, maybe long after the loop ended.
            loop = pipeline._loop
            if loop is None or loop.is_closed() or not loop.is_running():
                return
            if loop is _running_loop():
                return
            future = asyncio.run_coroutine_threadsafe(pipeline.aflush(wait), loop)
            try:
                future.result(wait_arg(timeout_seconds(wait)))
            except concurrent.futures.TimeoutError:  # not TimeoutError before 3.11
                future.cancel()
        except (TimeoutError, Stopped):
            pass

    def close(self) -> None:
        """Detach from logging; close the pipeline if the handler made it
        (waiting up to ``timeout`` seconds); report the records lost."""
        if self._closed:
            super().close()
            return
        self._closed = True
        try:
            if self._owned:
                try:
                    self._pipeline.close(self._timeout)
                except TimeoutError:
                    _log.warning("BatchHandler %r: the sink did not finish within %g s; "
                                 "the remaining records were dropped", self.name, self._timeout,
                                 extra={"tempo_name": self.name})
            if self._dropped > self._reported:
                _log.warning("BatchHandler %r lost %s in total", self.name,
                             _count(self._dropped, "log record"), extra={"tempo_name": self.name})
        finally:
            super().close()
