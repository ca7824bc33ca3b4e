"""Interpreter exit: what happens to buffered payloads when the process ends.

This module is the one place that decides it (docs/fork-and-exit.md has the
table). Two moments matter:

- **The main thread has ended** (Python now waits for the non-daemon threads).
  A non-daemon thread blocked waiting *for a batch* (``get_batch``,
  ``batches()``) is idle; any other (running code, waiting in ``enqueue``,
  ``flush`` or ``shutdown``, running an event loop) is working. Once every
  remaining non-daemon thread is idle, the dispatchers they wait on are shut
  down gracefully: open batches are sealed and handed to the waiting
  consumers, and only when nothing is left to hand out are those dispatchers
  finished, so their loops end and Python can go on. A daemon thread,
  ``tempo-exit-watcher``, looks a few times a second.
- **At exit** (``atexit``: the non-daemon threads have ended), the drains
  registered with ``register_exit_drain`` run, then every dispatcher still
  running is shut down with what is left of one bounded drain
  (``exit_timeout()``, 5 s unless ``set_exit_timeout`` says otherwise), so
  daemon consumers take the last batches. What is left after that is dropped,
  counted in ``dropped``, and reported as one warning on the ``tempo`` logger.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from . import _core

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = ["exit_timeout", "register_exit_drain", "set_exit_timeout"]

_T = TypeVar("_T")

#: The default bound, in seconds, on the drain at interpreter exit.
DEFAULT_EXIT_TIMEOUT = 5.0

logger = logging.getLogger("tempo")

_timeout = DEFAULT_EXIT_TIMEOUT
_lock = threading.Lock()
_drains: "list[weakref.WeakMethod[Callable[[float], Any]]]" = []

#: Every dispatcher made in this process and not yet collected.
_live: "weakref.WeakSet[Dispatcher]" = weakref.WeakSet()


def exit_timeout() -> float:
    """The bound, in seconds, on the whole drain at interpreter exit."""
    return _timeout


def set_exit_timeout(seconds: float) -> None:
    """Set the bound on the drain at interpreter exit (default 5 seconds).

    At exit, dispatchers still running are shut down and their consumers get
    up to ``seconds`` (shared by all of them) to take the last batches; what
    is left then is dropped, counted in ``dropped`` and logged once as a
    warning on the ``tempo`` logger. ``0`` drops at once; ``math.inf`` waits
    as long as any thread other than tempo's own is alive (tempo cannot tell
    a consumer that will come back for a batch from a thread that will not,
    so one daemon thread that never ends holds the exit for ever). Raises ``ValueError`` for a
    negative or NaN value, ``TypeError`` for a non-number.
    """
    global _timeout
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be an int or float, not {type(seconds).__name__!r}")
    try:
        value = float(seconds)
    except OverflowError:
        value = math.inf
    if not value >= 0:
        raise ValueError("the exit timeout must be a non-negative number of seconds")
    _timeout = value


def register_exit_drain(method: Callable[[float], Any]) -> None:
    """Call the bound method ``method(deadline)`` at exit, before the dispatchers
    are drained; ``deadline`` is a ``time.monotonic()`` value it must not pass.

    The method is held weakly: an object that is collected drops out.
    """
    with _lock:
        _drains[:] = [ref for ref in _drains if ref() is not None]
        _drains.append(weakref.WeakMethod(method))  # type: ignore[arg-type, unused-ignore]


def _registered_drains() -> list[Callable[[float], Any]]:
    with _lock:
        return [m for m in (ref() for ref in _drains) if m is not None]


def track(dispatcher: "Dispatcher") -> None:
    """Count a new dispatcher in (called by ``Dispatcher.__init__``)."""
    _live.add(dispatcher)
    _ensure_watcher()


def live() -> "list[Dispatcher]":
    """The dispatchers of this process that are not collected yet."""
    return snapshot(_live)


def snapshot(registry: "weakref.WeakSet[_T]") -> "list[_T]":
    """The objects alive in ``registry`` now, safe against other threads.

    Iterating a WeakSet runs a Python generator: a dispatcher another thread
    makes (or the collector frees) meanwhile changes the set under it
    ("Set changed size during iteration"). Copying its set of references is
    one C call instead: atomic under the GIL, and under the set's own lock
    without one (3.13t). (``data`` is not in typeshed; it is WeakSet's set
    of references in every CPython since 2.7.)
    """
    refs = registry.data.copy()  # type: ignore[attr-defined]
    return [obj for obj in (ref() for ref in refs) if obj is not None]


# -- the main thread has ended -------------------------------------------------------

#: Set by threading's exit hook, the first thing Python does once the main
#: thread's code has ended.
_exiting = threading.Event()
#: threading._SHUTTING_DOWN was already set in the parent this process was
#: forked from (a non-daemon thread forked after the parent's main ended).
_inherited_shutting_down = False
#: Set once the atexit drain runs: from then on it decides alone.
_draining = False
_watcher: Optional[threading.Thread] = None
#: Dispatchers the watcher sealed because their consumers were idle, with
#: their count of accepted payloads then.
_sealed_when_idle: "weakref.WeakKeyDictionary[Dispatcher, int]" = weakref.WeakKeyDictionary()

#: How often the watcher looks whether the exit has begun, and, once it has,
#: whether every non-daemon thread is idle.
_POLL = 0.25
_IDLE_POLL = 0.02

#: Rounds the watcher has made, for tests that must let it look before they
#: act ("tempo left this thread alone").
_passes = 0


def _on_threading_exit() -> None:
    _exiting.set()


def _exit_begun() -> bool:
    # Our threading hook may run only after another one (concurrent.futures
    # joining its workers) that waits for us, so the flag threading sets
    # before running any hook is looked at too.
    if _exiting.is_set():
        return True
    return bool(getattr(threading, "_SHUTTING_DOWN", False)) and not _inherited_shutting_down


def _ensure_watcher() -> None:
    global _watcher
    with _lock:
        if _watcher is None:
            _watcher = threading.Thread(target=_watch, name="tempo-exit-watcher", daemon=True)
            _watcher.start()


def _watch() -> None:
    global _passes
    while not _draining:
        if _exit_begun():
            _settle_idle_threads()
            time.sleep(_IDLE_POLL)
        else:
            _exiting.wait(_POLL)
        _passes += 1


def _settle_idle_threads() -> None:
    """If every remaining non-daemon thread waits for a batch, move their
    dispatchers towards a graceful end: seal what is open (the waiting
    consumers take it), and once nothing is left to hand out, finish them."""
    epoch, waits = _core._batch_waiters()
    main = threading.main_thread()
    targets: "dict[int, Dispatcher]" = {}
    for thread in threading.enumerate():
        if thread is main or thread.daemon:
            continue
        dispatcher = waits.get(thread.ident)  # type: ignore[arg-type]
        if dispatcher is None:
            return  # working: Python waits for it, and so does tempo
        targets[id(dispatcher)] = dispatcher
    closing = []
    for dispatcher in targets.values():
        counters = dispatcher._counters()
        enqueued = counters[0]
        if dispatcher._state_name() == "new":
            closing.append(dispatcher)  # it hands out batches once shutting down
            continue
        if enqueued == counters[5] + counters[6]:  # everything handed out or dropped
            continue
        sealed_at = _sealed_when_idle.get(dispatcher)
        if sealed_at is not None and enqueued > sealed_at:
            # Fed again since we sealed it, while its consumers were idle: a
            # daemon producer. Closed to new payloads, or this would not end.
            closing.append(dispatcher)
        else:
            # Only sealed: its consumer may still pass what it takes on to
            # another dispatcher (a chain of stages), which stays open.
            if sealed_at is None:
                _sealed_when_idle[dispatcher] = enqueued
            dispatcher._seal_now()
    if closing and not _core._close_if_idle(epoch, closing):
        return  # a consumer moved meanwhile: look again next round
    # Finishes them only if no consumer moved since the snapshot and nothing
    # is left to hand out; else the next round looks again.
    _core._finish_if_idle(epoch, list(targets.values()))


def _reset_after_fork() -> None:
    """In a forked child: none of the parent's exit state carries over."""
    global _exiting, _inherited_shutting_down, _draining, _watcher, _passes, _lock
    _lock = threading.Lock()
    _exiting = threading.Event()
    _inherited_shutting_down = bool(getattr(threading, "_SHUTTING_DOWN", False))
    _draining = False
    _watcher = None
    _passes = 0
    _sealed_when_idle.clear()


# -- at exit ---------------------------------------------------------------------------

#: How long the drain at exit waits between looks whether a consumer is left.
_DRAIN_SLICE = 0.05


def _consumers_possible() -> bool:
    """False once no thread but this one and tempo's own is alive: then no
    consumer can take anything, and waiting longer only delays the exit."""
    own = {_watcher}
    own.update(d._driver for d in live())
    current = threading.current_thread()
    return any(t is not current and t not in own for t in threading.enumerate())


def _consumer_waits(dispatcher: "Dispatcher") -> bool:
    """A thread or an event loop is waiting for a batch from ``dispatcher`` now."""
    return bool(dispatcher._waiters()[0] or dispatcher.__dict__.get("_wakers"))


def _drain_at_exit() -> None:
    global _draining
    _draining = True
    timeout = _timeout
    deadline = time.monotonic() + timeout
    dropped = 0
    by_name: dict[str, int] = {}  # what the report says: dispatcher name -> payloads

    def drop(dispatcher: "Dispatcher") -> int:
        count: int = dispatcher._stop()
        if count:
            by_name[dispatcher.name] = by_name.get(dispatcher.name, 0) + count
        return count

    timed_out = False
    try:
        for drain in _registered_drains():
            try:
                drain(deadline)
            except Exception:
                # A drain is a pipeline's bound method: name the pipeline.
                name = getattr(getattr(drain, "__self__", None), "name", None)
                logger.exception("pipeline %r: draining at exit failed", name,
                                 extra={"tempo_name": name})
        waiting = []
        for dispatcher in live():
            state = dispatcher._state_name()
            if state == "finished":
                continue
            if state == "new" and not _consumer_waits(dispatcher):
                # Never started and nobody waits on it: no consumer will
                # take a batch. (One waiting gets them, as from shutdown().)
                dropped += drop(dispatcher)
                continue
            dispatcher._begin_shutdown()
            waiting.append((dispatcher, dispatcher._seal_now()))
        for dispatcher, target in waiting:
            while True:
                left = deadline - time.monotonic()
                outcome = dispatcher._wait_delivered(target, max(0.0, min(left, _DRAIN_SLICE)))
                if outcome == 0:
                    dispatcher._finish()
                    break
                if outcome == 1:
                    break  # stopped meanwhile by someone else
                if left <= 0 or not _consumers_possible():
                    timed_out = timed_out or left <= 0
                    dropped += drop(dispatcher)
                    break
        # Everything is handed out: give the consumers the rest of the bound
        # to finish the batches they hold (they release them when done).
        for dispatcher, _ in waiting:
            while _consumers_possible():
                left = deadline - time.monotonic()
                if left <= 0 or dispatcher._wait_returned(min(left, _DRAIN_SLICE)):
                    break
    finally:
        # Ctrl-C during the drain: what is left is dropped, and still told.
        for dispatcher in live():
            dropped += drop(dispatcher)
        if dropped:
            if timed_out:
                why = f"consumers did not take them within {timeout:g} s (tempo.set_exit_timeout)"
            else:
                why = "no thread was left to consume them"
            from ._pipeline import _count  # (it imports this module)

            counts = sorted(by_name.items())  # a stable order to read and to test
            logger.warning(
                "tempo dropped %s at exit (%s): %s", _count(dropped, "payload"),
                ", ".join(f"{name}: {count}" for name, count in counts), why,
                extra={"tempo_name": ", ".join(name for name, _ in counts)},
            )


atexit.register(_drain_at_exit)
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_on_threading_exit)
