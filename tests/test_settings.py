"""tempo.load_settings: the file ``tempo tune`` writes, read back as keyword arguments."""

from __future__ import annotations

import json
import os
import threading

import pytest

import tempo
import tempo._settings
from conftest import WAIT

#: What `tempo tune --out` writes (tempo/tools/tune.py), abridged values.
TUNE_OUTPUT = {
    "interval": 0.05,
    "max_batch_bytes": 65536,
    "max_buffered_bytes": 8388608,
    "payload_bytes": 256,
    "consumer_delay": 0.001,
    "status": "recommended",
    "machine": {"cpus": 2},
    "interrupted": False,
    "producers": 1,
    "buffered_items": 32768,
    "burst_headroom_s": 0.1,
    "top_speed": {"items_per_s": 1e6, "bytes_per_s": 2.56e8},
    "observed": {"rejections": 0},
    "first_pressure_budget": None,
    "probe_seconds": 0.5,
    "probes": [],
    "notes": ["..."],
}


def write(tmp_path, document) -> str:
    path = tmp_path / "tempo-settings.json"
    if isinstance(document, bytes):
        path.write_bytes(document)
    else:
        path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def test_the_tools_file_gives_exactly_the_dispatcher_arguments(tmp_path):
    path = write(tmp_path, TUNE_OUTPUT)
    settings = tempo.load_settings(path)
    assert settings == {"interval": 0.05, "max_batch_bytes": 65536, "max_buffered_bytes": 8388608}
    d = tempo.Dispatcher(**tempo.load_settings(path))
    assert d.config == tempo.Config(**settings)
    with tempo.Pipeline(lambda batch: None, name="tuned", **tempo.load_settings(path)) as p:
        assert p.dispatcher.config == d.config


def test_a_path_object_and_the_optional_settings_are_read(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"interval": 1, "max_buffered_bytes": 100,
                                "max_batch_items": 7, "prefault": True}))
    settings = tempo.load_settings(path)
    assert settings == {"interval": 1.0, "max_buffered_bytes": 100, "max_batch_items": 7,
                        "prefault": True}
    assert type(settings["interval"]) is float


@pytest.mark.parametrize(
    "change, message",
    [
        ({"interval": 0}, "interval must be greater than zero"),
        ({"max_buffered_bytes": -1}, "max buffered bytes must be greater than zero"),
        ({"max_batch_bytes": 2**70}, "max batch bytes must be at most 32 TiB (2**45)"),
        ({"interval": "fast"}, "interval must be seconds"),
        ({"max_buffered_bytes": 1.5}, "max_buffered_bytes must be an int, not 'float'"),
        ({"prefault": "yes"}, "prefault must be a bool"),
    ],
)
def test_a_bad_value_is_a_config_error_that_names_the_file(tmp_path, change, message):
    path = write(tmp_path, {**TUNE_OUTPUT, **change})
    with pytest.raises(tempo.ConfigError) as info:
        tempo.load_settings(path)
    assert str(info.value).startswith(f"tempo: {path!r}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "is not a settings file: not JSON"),
        ("[1, 2]", "is not a settings file: a JSON object was expected, not list"),
        ('{"interval": 1}', "is not a settings file: it has no 'max_buffered_bytes'"),
        ('{"max_buffered_bytes": 1}', "is not a settings file: it has no 'interval'"),
        (b"\xff\xfe{}", "is not a settings file: not JSON"),
    ],
)
def test_a_file_that_is_not_settings_is_a_config_error(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(tempo.ConfigError, match=message):
        tempo.load_settings(path)


def test_a_missing_file_is_file_not_found_naming_it(tmp_path):
    path = str(tmp_path / "nowhere.json")
    with pytest.raises(FileNotFoundError) as info:
        tempo.load_settings(path)
    assert info.value.filename == path


def test_a_deeply_nested_file_is_a_config_error(tmp_path):
    # json.loads raises RecursionError, not ValueError, for it.
    path = write(tmp_path, '{"interval": 1, "max_buffered_bytes": 1048576, "notes": '
                 + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(tempo.ConfigError, match="not JSON \\(nested too deep\\)"):
        tempo.load_settings(path)


def test_a_file_over_a_mebibyte_is_refused_unread_beyond_it(tmp_path):
    path = write(tmp_path, " " * tempo._settings.MAX_SETTINGS_BYTES
                 + '{"interval": 1, "max_buffered_bytes": 100}')
    with pytest.raises(tempo.ConfigError, match="larger than 1048576 bytes"):
        tempo.load_settings(path)
    fits = write(tmp_path, '{"interval": 1, "max_buffered_bytes": 100}'.ljust(
        tempo._settings.MAX_SETTINGS_BYTES))
    assert tempo.load_settings(fits) == {"interval": 1.0, "max_buffered_bytes": 100}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            tempo.load_settings(fifo)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            outcome.append(exc)
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    finished = done.wait(WAIT)
    if not finished:
        os.close(os.open(fifo, os.O_WRONLY))  # the reader waits in open(): let it go
    reader.join(WAIT)
    assert finished, "load_settings waited for a writer"
    assert [type(exc) for exc in outcome] == [tempo.ConfigError]
    assert "not a regular file" in str(outcome[0])


@pytest.mark.parametrize("device", ["/dev/zero", "directory"])
def test_a_device_or_a_directory_is_refused_unread(tmp_path, device):
    path = str(tmp_path) if device == "directory" else device
    if not os.path.exists(path):
        pytest.skip(f"no {path} here")
    with pytest.raises(tempo.ConfigError, match="not a regular file"):
        tempo.load_settings(path)
