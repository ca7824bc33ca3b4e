"""tempo.logging.BatchHandler: records to one-line payloads, never blocking, losses counted."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading

import pytest

import tempo
import tempo.logging
from conftest import WAIT


@pytest.fixture
def logger(request):
    """A fresh logger that does not propagate (the test's handlers only)."""
    log = logging.getLogger(f"tempo-test.{request.node.name}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def lines_of(batches: list[list[bytes]]) -> list[bytes]:
    return [item for batch in batches for item in batch]


def test_text_records_become_one_line_each(logger):
    batches: list[list[bytes]] = []
    handler = tempo.logging.BatchHandler(lambda b: batches.append(b.tolist()))
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.info("hello %s", "world")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it broke\non two lines")
    handler.close()

    first, second = lines_of(batches)
    assert first == f"INFO {logger.name}: hello world\n".encode()
    assert second.endswith(b"\n") and second.count(b"\n") == 1
    assert second.startswith(f"ERROR {logger.name}: it broke\\non two lines\\nTraceback".encode())
    assert b"ValueError: boom" in second
    assert handler.dropped == 0


def test_json_records(logger):
    batches: list[list[bytes]] = []
    handler = tempo.logging.BatchHandler(lambda b: batches.append(b.tolist()), json=True)
    logger.addHandler(handler)
    logger.warning("caf\u00e9 %d", 42)
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        logger.error("failed", exc_info=True)
    handler.close()

    first, second = (json.loads(line) for line in lines_of(batches))
    assert first["message"] == "caf\u00e9 42" and first["level"] == "WARNING"
    assert first["logger"] == logger.name and first["time"].endswith("+00:00")
    assert "exc" not in first
    assert second["message"] == "failed" and "ZeroDivisionError" in second["exc"]


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


def test_json_records_keep_extra_fields_json_safe_or_as_repr(logger):
    batches: list[list[bytes]] = []
    handler = tempo.logging.BatchHandler(lambda b: batches.append(b.tolist()), json=True)
    logger.addHandler(handler)
    logger.info("order placed", extra={
        "user": "ann", "count": 3, "ratio": 0.5, "ok": True, "none": None,
        "tags": ["a", 1], "ids": {"order": 7},
        "obj": Opaque(), "nan": float("nan"), "tuple_keys": {(1, 2): 3},
        "nested_obj": [Opaque()], "time": "clashes with the handler's own field",
    })
    handler.close()

    (line,) = lines_of(batches)
    doc = json.loads(line)
    assert set(doc) == {"time", "level", "logger", "message", "module", "line", "thread",
                        "user", "count", "ratio", "ok", "none", "tags", "ids", "obj", "nan",
                        "tuple_keys", "nested_obj", "extra.time"}
    assert {k: doc[k] for k in ("user", "count", "ratio", "ok", "none", "tags", "ids")} == {
        "user": "ann", "count": 3, "ratio": 0.5, "ok": True, "none": None,
        "tags": ["a", 1], "ids": {"order": 7},
    }
    # Values JSON cannot hold as they are: their repr(), whole.
    assert doc["obj"] == "<Opaque>"
    assert doc["nan"] == "nan"
    assert doc["tuple_keys"] == "{(1, 2): 3}"
    assert doc["nested_obj"] == "[<Opaque>]"
    assert doc["extra.time"] == "clashes with the handler's own field"
    assert doc["message"] == "order placed" and doc["time"].endswith("+00:00")


def json_docs_of(logger, emit, **kwargs):
    """The JSON documents a json=True handler ships for ``emit()``'s records,
    and the exceptions its handleError() saw."""
    lines: list[bytes] = []
    errors: list[BaseException] = []
    handler = tempo.logging.BatchHandler(lambda b: lines.extend(b.tolist()), json=True,
                                         interval=3600, **kwargs)
    handler.handleError = lambda record: errors.append(sys.exc_info()[1])  # type: ignore[method-assign]
    logger.addHandler(handler)
    emit()
    handler.close()
    return [json.loads(line) for line in lines], errors


def test_json_extras_named_like_a_handler_field_or_extra_dot_are_prefixed_and_none_is_lost(logger):
    # The rule is fixed, not "if it clashes": "exc" is prefixed without an
    # exception too, and "extra.time" cannot be overwritten by a renamed "time".
    docs, errors = json_docs_of(logger, lambda: logger.info("c", extra={
        "extra.time": "a", "time": "b", "exc": "c", "extra.": "d", "plain": "e"}))
    assert errors == []
    (doc,) = docs
    extras = {k: v for k, v in doc.items()
              if k not in {"time", "level", "logger", "message", "module", "line", "thread"}}
    assert extras == {"extra.extra.time": "a", "extra.time": "b", "extra.exc": "c",
                      "extra.extra.": "d", "plain": "e"}


class ReprRaises:
    def __repr__(self):
        raise RuntimeError("no repr")


def test_a_value_json_and_repr_cannot_write_costs_its_field_not_the_record(logger):
    deep: list = []
    cur = deep
    for _ in range(100_000):  # deeper than any recursion limit: repr() fails too
        cur.append([])
        cur = cur[0]
    docs, errors = json_docs_of(logger, lambda: logger.info("kept", extra={
        "deep": deep, "obj": ReprRaises(), "in_list": [ReprRaises()]}))
    assert errors == []
    assert [(d["message"], d["deep"], d["obj"], d["in_list"]) for d in docs] == [
        ("kept", "<unrepresentable list>", "<unrepresentable ReprRaises>",
         "<unrepresentable list>")]


@pytest.mark.skipif(not hasattr(sys, "set_int_max_str_digits"), reason="Python 3.11+")
def test_an_int_too_long_to_print_costs_its_field_not_the_record(logger):
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(4300)
    try:
        docs, errors = json_docs_of(logger, lambda: logger.info("big", extra={
            "n": 10**5000, "ns": [10**5000], "small": 10**100}))
    finally:
        sys.set_int_max_str_digits(old)
    assert errors == []
    assert [(d["message"], d["n"], d["ns"], d["small"]) for d in docs] == [
        ("big", "<unrepresentable int>", "<unrepresentable list>", 10**100)]


def test_flush_level_takes_a_level_name_as_handler_set_level_does(monkeypatch):
    # Registered in lower/mixed case: setLevel takes it as written.
    monkeypatch.setattr(logging, "_levelToName", dict(logging._levelToName))
    monkeypatch.setattr(logging, "_nameToLevel", dict(logging._nameToLevel))
    logging.addLevelName(27, "tempo_Notice")
    logging.Handler().setLevel("tempo_Notice")
    handler = tempo.logging.BatchHandler(lambda b: None, flush_level="tempo_Notice")
    try:
        assert handler._flush_level == 27
    finally:
        handler.close()
    with pytest.raises(tempo.ConfigError, match="unknown level 'TEMPO_NOTICE'"):
        tempo.logging.BatchHandler(lambda b: None, flush_level="TEMPO_NOTICE")


def test_flush_level_seals_the_open_batch_at_a_record_at_or_above_it(logger):
    batches: list[list[bytes]] = []
    arrived = threading.Semaphore(0)

    def sink(batch):
        batches.append(batch.tolist())
        arrived.release()

    # An interval of an hour: only flush_level can seal these batches.
    handler = tempo.logging.BatchHandler(sink, flush_level="ERROR", interval=3600)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    dispatcher = handler.pipeline.dispatcher
    logger.info("a")
    logger.warning("b")
    stats = dispatcher.stats()
    assert (stats.enqueued, stats.batches, stats.waiting_batches) == (2, 0, 0)
    logger.error("c")
    assert arrived.acquire(timeout=WAIT)
    assert batches == [[b"a\n", b"b\n", b"c\n"]]
    logger.debug("d")
    logger.critical("e")
    assert arrived.acquire(timeout=WAIT)
    assert batches == [[b"a\n", b"b\n", b"c\n"], [b"d\n", b"e\n"]]
    logger.warning("f")
    assert dispatcher.stats().batches == 2  # below the level: waits for the interval
    handler.close()
    assert batches[-1] == [b"f\n"]


@pytest.mark.parametrize(
    "level, error, message",
    [
        ("LOUD", tempo.ConfigError, "flush_level: unknown level 'LOUD'"),
        ("error", tempo.ConfigError, "flush_level: unknown level 'error'"),  # as setLevel
        (1.5, TypeError, "flush_level must be a level"),
        (True, TypeError, "flush_level must be a level"),
    ],
)
def test_a_bad_flush_level_is_refused(level, error, message):
    with pytest.raises(error, match=message):
        tempo.logging.BatchHandler(lambda b: None, flush_level=level)


def test_many_threads_logging_lose_nothing_when_there_is_room(logger):
    threads_n, per_thread = 8, 2000
    batches: list[list[bytes]] = []
    handler = tempo.logging.BatchHandler(lambda b: batches.append(b.tolist()), json=True,
                                         interval=0.01, max_batch_bytes=16 * tempo.KiB,
                                         max_buffered_bytes=64 * tempo.MiB)
    logger.addHandler(handler)
    start = threading.Barrier(threads_n)

    def work(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            logger.info("thread %d record %d", t, i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.close()

    messages = [json.loads(line)["message"] for line in lines_of(batches)]
    assert sorted(messages) == sorted(
        f"thread {t} record {i}" for t in range(threads_n) for i in range(per_thread))
    for t in range(threads_n):  # each thread's records stay in its order
        own = [m for m in messages if m.startswith(f"thread {t} ")]
        assert own == [f"thread {t} record {i}" for i in range(per_thread)]
    stats = handler.pipeline.stats()
    assert handler.dropped == 0
    assert stats.delivered_items == stats.enqueued == threads_n * per_thread


def test_a_full_pipeline_never_blocks_logging_and_counts_the_loss_once(logger, tempo_log):
    entered, release = threading.Event(), threading.Event()
    batches: list[list[bytes]] = []

    def sink(batch):
        entered.set()
        assert release.wait(WAIT)  # the sink is stuck: tempo fills up
        batches.append(batch.tolist())

    handler = tempo.logging.BatchHandler(sink, max_buffered_bytes=4 * tempo.KiB,
                                         max_batch_bytes=256, interval=0.01)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.info("first")
    assert entered.wait(WAIT)

    threads_n, per_thread = 8, 500
    def work(t: int) -> None:
        for i in range(per_thread):
            logger.info("t%d-%04d", t, i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:  # they all finish while the sink is still stuck
        thread.join(WAIT)
        assert not thread.is_alive(), "a logging call blocked"
    assert not release.is_set()

    dropped = handler.dropped
    assert dropped > 0
    reports = [r for r in tempo_log if "BatchHandler" in r.getMessage()]
    assert len(reports) == 1 and reports[0].levelno == logging.WARNING
    assert reports[0].tempo_name == handler.name

    release.set()
    handler.close()
    delivered = lines_of(batches)
    assert len(delivered) + dropped == 1 + threads_n * per_thread
    assert handler.pipeline.stats().delivered_items == len(delivered)
    name = handler.name
    totals = [r.getMessage() for r in tempo_log if r.getMessage().endswith(" in total")]
    noun = "log record" if dropped == 1 else "log records"
    assert totals == [f"BatchHandler {name!r} lost {dropped} {noun} in total"]


def test_reporting_a_loss_does_not_loop_through_the_handler(tempo_log):
    # The handler sits on the tempo logger itself: its report comes back to it.
    release = threading.Event()
    handler = tempo.logging.BatchHandler(lambda b: release.wait(WAIT),
                                         max_buffered_bytes=64, max_batch_bytes=64, interval=60)
    tempo_logger = logging.getLogger("tempo")
    tempo_logger.addHandler(handler)
    try:
        for _ in range(100):
            tempo_logger.warning("x" * 40)  # each fills tempo's 64 bytes
    finally:
        tempo_logger.removeHandler(handler)
        release.set()
        handler.close()
    reports = [r for r in tempo_log if "could not enqueue" in r.getMessage()]
    assert len(reports) == 1
    assert handler.dropped >= 99


def test_a_given_pipeline_is_used_and_left_open(logger):
    seen: list[bytes] = []
    p = tempo.Pipeline(lambda b: seen.extend(b.tolist()), interval=60,
                       max_buffered_bytes=tempo.MiB)
    handler = tempo.logging.BatchHandler(p)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.info("via the pipeline")
    handler.flush()
    assert seen == [b"via the pipeline\n"]
    logger.removeHandler(handler)
    handler.close()
    p.enqueue(b"still open")
    p.close()
    assert seen[-1] == b"still open"
    assert handler.pipeline is p


def test_bad_handler_arguments():
    p = tempo.Pipeline(lambda b: None, interval=60, max_buffered_bytes=tempo.MiB)
    try:
        with pytest.raises(TypeError, match="pipeline options"):
            tempo.logging.BatchHandler(p, interval=1)
    finally:
        p.close()

    async def async_sink(batch):
        pass

    with pytest.raises(TypeError, match="async"):
        tempo.logging.BatchHandler(async_sink)
    with pytest.raises(TypeError, match="sink must be callable"):
        tempo.logging.BatchHandler("not a sink")


@pytest.mark.parametrize("arguments, error", [
    ("p, name=''", "ConfigError"),
    ("p, interval=1", "TypeError"),
    ("lambda b: None, name=''", "ConfigError"),
    ("lambda b: None, flush_level='LOUD'", "ConfigError"),
    ("lambda b: None, level='LOUD'", "ValueError"),
])
def test_a_refused_handler_leaves_no_traceback_at_exit(arguments, error):
    # logging.Handler.__init__ registers the handler for logging.shutdown(),
    # which flushes it at exit: a handler refused after that was flushed
    # half-made ("AttributeError: ... '_timeout'", "Exception ignored in atexit").
    code = (
        "import threading, tempo, tempo.logging as tl\n"
        "p = tempo.Pipeline(lambda b: None, interval=1, max_buffered_bytes=1 << 20)\n"
        "def workers():\n"
        "    return [t for t in threading.enumerate() if t.name.startswith('tempo-pipeline')]\n"
        "before = workers()\n"
        "try:\n"
        f"    tl.BatchHandler({arguments})\n"
        f"except {'tempo.' if error == 'ConfigError' else ''}{error} as e:\n"
        "    kept = e  # its traceback holds the handler until exit\n"
        "assert workers() == before, 'a pipeline was left running'\n"
        "p.close()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert (run.returncode, run.stderr) == (0, "")


@pytest.mark.parametrize("timeout, error", [(-1, ValueError), (float("nan"), ValueError),
                                            ("5", TypeError), (True, TypeError)])
def test_a_bad_timeout_is_refused_when_the_handler_is_made(timeout, error):
    # Not later, in close() (at exit), after the handler's pipeline was made.
    made: list[tempo.Pipeline] = []
    real = tempo.logging.Pipeline

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    tempo.logging.Pipeline = spy  # type: ignore[misc]
    try:
        with pytest.raises(error, match="timeout"):
            tempo.logging.BatchHandler(lambda b: None, timeout=timeout)
    finally:
        tempo.logging.Pipeline = real  # type: ignore[misc]
        for p in made:
            p.stop()
    assert made == []


def test_flush_with_an_async_pipeline_waits_from_a_thread_and_never_raises(logger):
    seen: list[bytes] = []

    async def sink(batch):
        await asyncio.sleep(0)
        seen.extend(batch.tolist())

    p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.MiB)
    handler = tempo.logging.BatchHandler(p)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)

    async def main():
        async with p:
            logger.warning("one")
            handler.flush()  # on the loop: cannot wait for the loop, must not raise
            await asyncio.to_thread(handler.flush, WAIT)  # elsewhere: waits for the sink
            assert seen == [b"one\n"]
            logger.warning("two")

    asyncio.run(asyncio.wait_for(main(), WAIT))
    assert seen == [b"one\n", b"two\n"]
    handler.flush()  # the loop is gone (as in logging.shutdown() at exit): no error
    logger.removeHandler(handler)
    handler.close()


HANDLER_EXIT_SCRIPT = """
import logging, sys, tempo.logging
out = open(sys.argv[1], "ab", buffering=0)
handler = tempo.logging.BatchHandler(lambda batch: batch.writeall(out), interval=60.0)
logging.getLogger().addHandler(handler)
for i in range(10):
    logging.getLogger("app").warning("record %d", i)
"""


def test_records_still_buffered_at_exit_are_shipped(tmp_path):
    from test_pipeline import run_python

    out = tmp_path / "log.txt"
    result = run_python(HANDLER_EXIT_SCRIPT, str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().splitlines() == [b"record %d" % i for i in range(10)]
    assert result.stderr == ""


def test_flush_from_inside_the_sink_returns_at_once(logger):
    # The sink cannot wait for itself; a handler's flush never raises.
    errors: list[BaseException] = []
    seen: list[bytes] = []

    def ship(batch):
        try:
            handler.flush(timeout=None)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)
        seen.extend(batch.tolist())

    handler = tempo.logging.BatchHandler(ship, interval=60.0, timeout=WAIT)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.warning("one")
    handler.flush()
    assert errors == [] and seen == [b"one\n"]
