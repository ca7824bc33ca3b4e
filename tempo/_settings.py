"""``load_settings``: the keyword arguments ``tempo tune`` found, read back."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from typing import Any, Union

from ._config import Config
from ._errors import ConfigError

__all__ = ["load_settings"]

#: The settings a file may give: exactly ``Config``'s fields, so a setting
#: added to ``Config`` is read here with no change.
_FIELDS = tuple(field.name for field in dataclasses.fields(Config))

#: The largest settings file read: ``tempo tune`` writes a few KiB.
MAX_SETTINGS_BYTES = 1 << 20


def load_settings(path: Union[str, "os.PathLike[str]"]) -> dict[str, Any]:
    """Read a settings file written by ``tempo tune`` (``tempo-settings.json``).

    Returns the keyword arguments for ``tempo.Dispatcher`` or
    ``tempo.Pipeline`` as a ``dict``, validated and normalised as
    ``tempo.Config`` does (``interval`` in float seconds)::

        d = tempo.Dispatcher(**tempo.load_settings("tempo-settings.json"))

    Only the keys that are ``Config`` fields (``interval``,
    ``max_buffered_bytes``, ``max_batch_bytes``, ``max_batch_items``,
    ``prefault``) are returned, and only those in the file; everything else
    the tool writes (``status``, ``machine``, ``observed``, ...) is ignored.
    A name is not a setting: pass ``name=`` beside them.

    Raises ``ConfigError`` (a ``ValueError``) if the file is not a regular
    file of at most 1 MiB holding a JSON object (nested too deep counts as
    not JSON), lacks ``interval`` or ``max_buffered_bytes``, or holds a value
    ``tempo.Config`` refuses (of the wrong type, too); ``OSError`` (e.g.
    ``FileNotFoundError``) if it cannot be read.
    """
    where = os.fspath(path)
    return _settings_of(_read_document(where), where)


def _read_document(where: str) -> dict[str, Any]:
    """The JSON object in the settings file ``where``; ``ConfigError`` if it
    is none (``tempo soak`` reads its own keys beside the settings from it)."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer (a regular file
    # ignores the flag); only a regular file is read, and only so much of it.
    fd = os.open(where, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"tempo: {where!r} is not a settings file: not a regular file")
        with open(fd, "rb", closefd=False) as f:
            text = f.read(MAX_SETTINGS_BYTES + 1)
    finally:
        os.close(fd)
    if len(text) > MAX_SETTINGS_BYTES:
        raise ConfigError(f"tempo: {where!r} is not a settings file: larger than "
                          f"{MAX_SETTINGS_BYTES} bytes")
    try:
        document = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise ConfigError(f"tempo: {where!r} is not a settings file: not JSON ({exc})") from None
    except RecursionError:
        raise ConfigError(f"tempo: {where!r} is not a settings file: not JSON "
                          "(nested too deep)") from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"tempo: {where!r} is not a settings file: a JSON object was expected, "
            f"not {type(document).__name__}"
        )
    return document


def _settings_of(document: dict[str, Any], where: str) -> dict[str, Any]:
    """The validated ``Config`` keyword arguments in a settings file's object."""
    settings = {key: document[key] for key in _FIELDS if key in document}
    for required in ("interval", "max_buffered_bytes"):
        if required not in settings:
            raise ConfigError(f"tempo: {where!r} is not a settings file: it has no {required!r}")
    try:
        config = Config(**settings)
    except (ConfigError, TypeError) as exc:
        reason = str(exc).removeprefix("tempo: ")
        raise ConfigError(f"tempo: {where!r}: {reason}") from exc
    return {key: getattr(config, key) for key in settings}
