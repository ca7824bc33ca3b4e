"""``load_settings``: the keyword arguments ``tempo tune`` found, read back."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Union

from ._config import Config
from ._errors import ConfigError

__all__ = ["load_settings"]

#: The settings a file may give: exactly ``Config``'s fields, so a setting
#: added to ``Config`` is read here with no change.
_FIELDS = tuple(field.name for field in dataclasses.fields(Config))


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

    Raises ``ConfigError`` (a ``ValueError``) if the file is not a JSON
    object, lacks ``interval`` or ``max_buffered_bytes``, or holds a value
    ``tempo.Config`` refuses (of the wrong type, too); ``OSError`` (e.g.
    ``FileNotFoundError``) if it cannot be read.
    """
    where = os.fspath(path)
    with open(where, "rb") as f:
        text = f.read()
    try:
        document = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise ConfigError(f"tempo: {where!r} is not a settings file: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"tempo: {where!r} is not a settings file: a JSON object was expected, "
            f"not {type(document).__name__}"
        )
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
