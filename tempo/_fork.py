"""After ``os.fork()``: the child starts afresh (see docs/fork-and-exit.md).

Only the thread that forked exists in the child. Every dispatcher inherited
from the parent becomes a fresh, empty one with the same config (running if
the parent's was), and none of the parent's exit or thread state carries
over: not the record of threads waiting for a batch, not "the exit has
begun". A dispatcher whose fresh buffer cannot be made is finished in the
child (``Stopped``), never left writing into the parent's memory; the others
are reset all the same.
"""

from __future__ import annotations

import os
import threading

from . import _core, _exit

__all__: "list[str]" = []


def _after_fork_in_child() -> None:
    # The thread that forked is the main thread now; the drivers, the exit
    # watcher and every thread that was waiting did not come along.
    _core._set_main_thread(threading.get_ident())
    _core._forget_threads()
    _exit._reset_after_fork()
    for dispatcher in _exit.live():
        running = dispatcher._state_name() == "running"
        dispatcher._driver = None
        try:
            dispatcher._reset_after_fork(running)
        except Exception as exc:  # noqa: BLE001 - one dispatcher's failure is reported, not raised
            if dispatcher._state_name() == "finished":
                _exit.logger.warning(
                    "tempo: after fork, a dispatcher's buffer could not be made in the "
                    "child (%s); it is stopped in this process",
                    exc,
                )
            else:
                _exit.logger.warning("tempo: after fork: %s", exc)
        if dispatcher._state_name() == "running":
            dispatcher._spawn_driver()
    if _exit.live():
        _exit._ensure_watcher()


# --- batches held across fork (issue 15, item 1) ---------------------------------
# Registered with the child's hook below; to move with it into one lifecycle
# module. The core copies the bytes of held batches before the fork and hands
# nothing out until after it (Core._before_fork): see docs/fork-and-exit.md.


def _before_fork() -> None:
    for dispatcher in _exit.live():
        dispatcher._before_fork()


def _after_fork_in_parent() -> None:
    for dispatcher in _exit.live():
        dispatcher._after_fork_in_parent()


# --- end of issue 15, item 1 -------------------------------------------------------

_core._set_main_thread(threading.main_thread().ident or 0)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
