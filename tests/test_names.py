"""``name=`` on Dispatcher, Pipeline and BatchHandler: repr, logs, validation."""

from __future__ import annotations

import dataclasses
import logging
import re
import threading

import pytest

import tempo
import tempo.logging


def test_a_dispatcher_without_a_name_gets_the_next_default_name():
    first = tempo.Dispatcher(interval=1, max_buffered_bytes=100)
    second = tempo.Dispatcher(interval=1, max_buffered_bytes=100)
    n = int(re.fullmatch(r"dispatcher-(\d+)", first.name).group(1))
    assert second.name == f"dispatcher-{n + 1}"


def test_a_pipeline_without_a_name_gets_one_and_its_dispatcher_shares_it():
    with tempo.Pipeline(lambda batch: None, interval=1, max_buffered_bytes=100) as p:
        assert re.fullmatch(r"pipeline-\d+", p.name)
        assert p.dispatcher.name == p.name


def test_the_name_is_in_repr():
    d = tempo.Dispatcher(interval=1, max_buffered_bytes=100, name="ingest")
    assert repr(d).startswith("<tempo.Dispatcher 'ingest' new interval=1.0 ")
    with tempo.Pipeline(lambda batch: None, interval=1, max_buffered_bytes=100,
                        name="spans") as p:
        assert repr(p).startswith("<tempo.Pipeline 'spans' sink=")
        assert "<tempo.Dispatcher 'spans' running " in repr(p)


def test_the_name_is_not_part_of_the_config_so_a_copy_gets_its_own():
    d = tempo.Dispatcher(interval=1, max_buffered_bytes=100, name="original")
    assert "name" not in dataclasses.asdict(d.config)
    copy = tempo.Dispatcher(**dataclasses.asdict(d.config))
    assert copy.config == d.config
    assert copy.name != "original" and copy.name.startswith("dispatcher-")


@pytest.mark.parametrize("bad", [b"ingest", 1, ["a"]])
def test_a_name_that_is_not_a_str_is_a_type_error(bad):
    with pytest.raises(TypeError, match=f"name must be a str or None, not {type(bad).__name__!r}"):
        tempo.Dispatcher(interval=1, max_buffered_bytes=100, name=bad)
    with pytest.raises(TypeError, match="name must be a str or None"):
        tempo.Pipeline(lambda batch: None, interval=1, max_buffered_bytes=100, name=bad)
    with pytest.raises(TypeError, match="name must be a str or None"):
        tempo.logging.BatchHandler(lambda batch: None, name=bad)


@pytest.mark.parametrize("bad", ["", "two\nlines", "tab\there"])
def test_an_empty_or_unprintable_name_is_a_config_error(bad):
    message = "tempo: name must be a non-empty string of printable characters"
    with pytest.raises(tempo.ConfigError, match=message):
        tempo.Dispatcher(interval=1, max_buffered_bytes=100, name=bad)
    with pytest.raises(tempo.ConfigError, match=message):
        tempo.Pipeline(lambda batch: None, interval=1, max_buffered_bytes=100, name=bad)


def test_a_failed_batch_is_logged_with_its_pipeline_name_and_tempo_once(tempo_log):
    failed = threading.Event()

    def sink(batch):
        raise ConnectionError("down")

    with tempo.Pipeline(sink, interval=60, max_buffered_bytes=100, name="orders",
                        retry=tempo.Retry(attempts=1),
                        on_failure=lambda batch, exc: failed.set()) as p:
        p.enqueue(b"x")
        p.flush()
        assert failed.wait(5)
    (record,) = [r for r in tempo_log if r.levelno == logging.ERROR]
    assert record.tempo_name == "orders"
    assert record.getMessage() == (
        "pipeline 'orders': the sink failed; a batch of 1 item was given up after 1 attempt "
        "(ConnectionError: down). Further failures are counted in stats(), not logged, "
        "until a batch is delivered again"
    )
    line = logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line.startswith("ERROR tempo: pipeline 'orders': the sink failed")
    assert line.count("tempo:") == 1


def test_the_handler_name_is_its_pipelines_name_or_the_one_given():
    owned = tempo.logging.BatchHandler(lambda batch: None, name="app-logs")
    try:
        assert owned.name == owned.pipeline.name == "app-logs"
    finally:
        owned.close()
    default = tempo.logging.BatchHandler(lambda batch: None)
    try:
        assert default.name == default.pipeline.name
        assert re.fullmatch(r"pipeline-\d+", default.name)
    finally:
        default.close()
    with tempo.Pipeline(lambda batch: None, interval=1, max_buffered_bytes=1000,
                        name="shared") as p:
        given = tempo.logging.BatchHandler(p, name="audit")
        assert (given.name, p.name) == ("audit", "shared")
        given.close()
