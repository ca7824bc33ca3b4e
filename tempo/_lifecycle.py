"""The lifecycle of every dispatcher and pipeline in the process, in one place.

This module alone owns:

- **The registry** of live dispatchers and pipelines (weak: an object nobody
  references drops out), filled by their constructors (``track``).
- **``os.fork()``**: one set of hooks (``os.register_at_fork``), in an
  explicit order: dispatchers, then pipelines (whose workers take batches
  from those dispatchers). In the child every dispatcher becomes a fresh,
  empty one with the same config and none of the parent's exit or thread
  state carries over (docs/fork-and-exit.md).
- **Interpreter exit**, at two moments:

  - *The main thread has ended* (Python now waits for the non-daemon
    threads). A non-daemon thread blocked waiting *for a batch*
    (``get_batch``, ``batches()``) is idle; any other (running code, waiting
    in ``enqueue``, ``flush`` or ``shutdown``, running an event loop) is
    working. Once every remaining non-daemon thread is idle, the dispatchers
    they wait on are shut down gracefully: open batches are sealed and handed
    to the waiting consumers, and only when nothing is left to hand out are
    those dispatchers finished, so their loops end and Python can go on. A
    daemon thread, ``tempo-exit-watcher``, looks a few times a second.
  - *At exit* (``atexit``: the non-daemon threads have ended), the drains
    registered with ``register_exit_drain`` run, then every live dispatcher
    and pipeline is drained **together, to quiescence**: open batches are
    sealed, again and again, while consumers and sinks pass what they take
    on to other stages; intake is closed only once nothing is buffered,
    sealed, held or inside a sink anywhere (two looks in a row agree), so
    chained stages deliver everything whatever order they were made in. All
    of it within one bound (``exit_timeout()``, 5 s unless
    ``set_exit_timeout`` says otherwise); what is left then is dropped,
    counted in ``dropped``, and reported once on the ``tempo`` logger.

It talks to dispatchers through the core's underscore methods and to
pipelines through the few methods of ``_Stage``; it imports neither
``tempo._dispatcher`` nor ``tempo._pipeline`` (they import it).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import math
import operator
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from . import _aio, _core
from ._errors import ConfigError, _count
from ._protocol import Delivery, State, state
from ._stats import Stats

_T = TypeVar("_T")

if TYPE_CHECKING:
    from typing import Protocol

    class _Dispatcher(_core.Core):
        """What this module needs of a ``tempo.Dispatcher`` beyond the core."""

        _driver: Optional[threading.Thread]

        @property
        def name(self) -> str: ...

        def _spawn_driver(self) -> None: ...

    class _Stage(Protocol):
        """What this module needs of a ``tempo.Pipeline``."""

        @property
        def dispatcher(self) -> _core.Core: ...

        def _in_sink(self) -> int: ...

        def _can_work(self) -> bool: ...

        def _worker_threads(self) -> "list[threading.Thread]": ...

        def _drain_at_exit(self, deadline: float) -> None: ...

        def _halt(self) -> None: ...

        def _after_fork_in_child(self) -> None: ...

__all__ = ["exit_timeout", "register_exit_drain", "set_exit_timeout"]

#: The default bound, in seconds, on the drain at interpreter exit.
DEFAULT_EXIT_TIMEOUT = 5.0

logger = logging.getLogger("tempo")

_timeout = DEFAULT_EXIT_TIMEOUT
_lock = threading.Lock()
_drains: "list[weakref.WeakMethod[Callable[[float], Any]]]" = []

#: Every dispatcher made in this process and not yet collected (a
#: pipeline's own dispatcher included).
_live: "weakref.WeakSet[Any]" = weakref.WeakSet()
#: Every pipeline made in this process and not yet collected.
_pipelines: "weakref.WeakSet[Any]" = weakref.WeakSet()
#: tempo's helper threads (``helper_thread``), alive or not yet collected.
_helpers: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()


def log_safely(level: int, message: str, *args: object, **kwargs: Any) -> None:
    """Log on the ``tempo`` logger from a worker or at exit. A handler that
    raises (any ``BaseException``) must not end a worker, turn a delivered
    batch into a failed one or cut the drain at exit short: its error goes to
    stderr, as logging's own are."""
    try:
        logger.log(level, message, *args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - see above
        try:
            sys.stderr.write(
                f"tempo: a logging handler raised {type(exc).__name__}: {exc} "
                f"(while logging: {message % args})\n"
            )
        except BaseException:  # noqa: BLE001 - nowhere left to say it
            pass


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
    so one daemon thread that never ends holds the exit for ever). Raises
    ``ConfigError`` (a ``ValueError``) for a negative or NaN value, huge
    negative ints included, ``TypeError`` for a non-number.
    """
    global _timeout
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be an int or float, not {type(seconds).__name__!r}")
    try:
        value = float(seconds)
    except OverflowError:
        # An int beyond float's range: its sign decides, not the overflow.
        value = math.inf if seconds > 0 else -math.inf
    if not value >= 0:
        raise ConfigError("the exit timeout must be a non-negative number of seconds")
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


def track(dispatcher: _core.Core) -> None:
    """Count a new dispatcher in (called by ``Dispatcher.__init__``)."""
    _live.add(dispatcher)
    _ensure_watcher()


def track_pipeline(pipeline: "_Stage") -> None:
    """Count a new pipeline in (called by ``Pipeline.__init__``, after its
    dispatcher was counted in)."""
    _pipelines.add(pipeline)


def stopped(dispatcher: _core.Core) -> None:
    """``dispatcher.stop()`` was called: a pipeline built on it stops too
    (its retry waits end at once), as if ``Pipeline.stop()`` was called."""
    for pipeline in live_pipelines():
        if pipeline.dispatcher is dispatcher:
            pipeline._halt()


def live() -> "list[_Dispatcher]":
    """The dispatchers of this process that are not collected yet."""
    return snapshot(_live)


def live_pipelines() -> "list[_Stage]":
    """The pipelines of this process that are not collected yet."""
    return snapshot(_pipelines)


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


# -- os.fork() ---------------------------------------------------------------------------


def _each_dispatcher(hook: Callable[[Any], None], when: str) -> None:
    """Run ``hook`` on every live dispatcher, whatever one of them raises.

    An ``Exception`` is logged. A ``BaseException`` that is not one (a
    ``KeyboardInterrupt`` from a signal handler, which may raise between any
    two bytecodes, inside a dispatcher's hook or between two of them) must
    not leave the dispatchers not yet passed behind (after a fork, each
    would hand nothing out for ever): the first is re-raised once all were
    passed. The hook runs once more on the dispatcher it was interrupted on
    (whether it ran is unknown): the core's fork hooks are no-ops when run
    again for the same fork (Core._before_fork), so that is harmless; a
    second interrupt on the same dispatcher moves on to the next. An
    interrupt outside the try (as this begins, or as the loop goes round)
    escapes: os.fork() runs the hooks through _core._Uninterrupted, which
    runs them again for that."""
    first: Optional[BaseException] = None
    todo: "Optional[list[Any]]" = None
    interrupted: Any = None  # the dispatcher the last interrupt found first in todo
    # Progress lives in ``todo`` (a dispatcher leaves it once passed), not in
    # the loop's own state, which an interrupt would lose.
    while todo is None or todo:
        try:
            if todo is None:
                todo = live()
            while todo:
                dispatcher = todo[-1]
                try:
                    hook(dispatcher)
                except Exception as exc:  # noqa: BLE001 - the fork goes on; say why
                    logger.warning("dispatcher %r: %s: %s", dispatcher.name, when, exc,
                                   extra={"tempo_name": dispatcher.name})
                todo.pop()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            if first is None:
                first = exc
            if todo and todo[-1] is interrupted:
                todo.pop()
                # The next one was not interrupted yet: its first
                # interrupt must earn it a retry too.
                interrupted = None
            else:
                interrupted = todo[-1] if todo else None
    if first is not None:
        try:
            raise first
        finally:
            first = None


def _before_fork() -> None:
    # Dispatchers first: a pipeline's workers take batches from them. Each
    # copies the bytes of its held batches now and hands nothing out until
    # this thread's after-fork hook (Core._before_fork; docs/fork-and-exit.md).
    # A dispatcher an interrupt kept this from (twice in a row) has no copy:
    # its child copies late and says so, and its after-fork hook does nothing.
    _each_dispatcher(operator.methodcaller("_before_fork"), "before fork")


def _after_fork_in_parent() -> None:
    # Not running it blocks the dispatcher's hand-outs until this thread
    # forks again (so os.fork() runs it until it gets through:
    # _after_fork_in_parent_hook); running it where this fork's before-fork
    # hook did not run, or twice, does nothing (the core knows each fork by
    # its thread).
    _each_dispatcher(operator.methodcaller("_after_fork_in_parent"),
                     "after fork (in the parent)")


def _after_fork_in_child() -> None:
    # The thread that forked is the main thread now; the drivers, the exit
    # watcher, the pipelines' workers and every thread that was waiting did
    # not come along.
    _core._set_main_thread(threading.get_ident())
    _core._forget_threads()
    _reset_exit_state()
    _aio.forget_after_fork()
    for dispatcher in live():
        running = state(dispatcher) is State.RUNNING
        dispatcher._driver = None
        try:
            dispatcher._reset_after_fork(running)
        except Exception as exc:  # noqa: BLE001 - one dispatcher's failure is reported, not raised
            if state(dispatcher) is State.FINISHED:
                logger.warning(
                    "dispatcher %r: after fork, its buffer could not be made in the "
                    "child (%s); it is stopped in this process",
                    dispatcher.name, exc, extra={"tempo_name": dispatcher.name},
                )
            else:
                logger.warning("dispatcher %r: after fork: %s", dispatcher.name, exc,
                               extra={"tempo_name": dispatcher.name})
        if state(dispatcher) is State.RUNNING:
            dispatcher._spawn_driver()
    # Then the pipelines, on their fresh dispatchers.
    for pipeline in live_pipelines():
        pipeline._after_fork_in_child()
    if _live:
        _ensure_watcher()


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
_sealed_when_idle: "weakref.WeakKeyDictionary[_core.Core, int]" = weakref.WeakKeyDictionary()
#: The watcher's last look at every stage but the ones idle threads wait on,
#: if it found them quiet.
_quiet_before: "Optional[list[object]]" = None
#: When the idle consumers began waiting for the rest of tempo to settle.
_unsettled_since: Optional[float] = None

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


def _all_handed_out(stats: Stats) -> bool:
    """Every payload accepted was handed to a consumer or dropped."""
    return stats.enqueued == stats.items + stats.dropped


def _settle_idle_threads() -> None:
    """If every remaining non-daemon thread waits for a batch, move their
    dispatchers towards a graceful end: seal what is open (the waiting
    consumers take it), and once nothing anywhere can feed them any more,
    finish them."""
    global _quiet_before, _unsettled_since
    epoch, waits = _core._batch_waiters()
    main = threading.main_thread()
    targets: "dict[int, _core.Core]" = {}
    for thread in threading.enumerate():
        if thread is main or thread.daemon:
            continue
        dispatcher = waits.get(thread.ident)  # type: ignore[arg-type]
        if dispatcher is None:
            _quiet_before = _unsettled_since = None
            return  # working: Python waits for it, and so does tempo
        targets[id(dispatcher)] = dispatcher
    # Every other stage (a pipeline's daemon workers, a daemon consumer
    # forwarding from another dispatcher) may still feed the targets: they
    # are closed or finished only once the rest of tempo is quiet, two looks
    # in a row with the same counters, as the drain at exit decides. Then
    # nothing of tempo's can feed them; what still does is a thread of the
    # program's own (a daemon producer), and that would never end.
    look = _Look(live_pipelines(), [d for d in live() if id(d) not in targets])
    settled = look.quiet and look.snapshot == _quiet_before
    _quiet_before = look.snapshot if look.quiet else None
    # A stage that never settles (a daemon producer feeding an unrelated
    # pipeline) must not keep the program from ending: the rest gets the exit
    # bound (tempo.set_exit_timeout) to settle, as the drain at exit does.
    now = time.monotonic()
    if settled or _unsettled_since is None:
        _unsettled_since = now
    elif now - _unsettled_since >= _timeout:
        settled = True
    closing = []
    for dispatcher in targets.values():
        stats = Stats._of(dispatcher)
        if state(dispatcher) is State.NEW:
            closing.append(dispatcher)  # it hands out batches once shutting down
            continue
        if _all_handed_out(stats):
            continue
        sealed_at = _sealed_when_idle.get(dispatcher)
        if settled and sealed_at is not None and stats.enqueued > sealed_at:
            # Fed again since we sealed it, while its consumers were idle and
            # every other stage was quiet: a daemon producer. Closed to new
            # payloads, or this would not end.
            closing.append(dispatcher)
        else:
            # Only sealed: its consumer may still pass what it takes on to
            # another dispatcher (a chain of stages), which stays open.
            if sealed_at is None or not settled:
                _sealed_when_idle[dispatcher] = stats.enqueued
            dispatcher._seal_now()
    if not settled:
        return  # something else may still feed them: look again next round
    if closing and not _core._close_if_idle(epoch, closing):
        return  # a consumer moved meanwhile: look again next round
    # Finishes them only if no consumer moved since the snapshot and nothing
    # is left to hand out; else the next round looks again.
    _core._finish_if_idle(epoch, list(targets.values()))


def _reset_exit_state() -> None:
    """In a forked child: none of the parent's exit state carries over."""
    global _exiting, _inherited_shutting_down, _draining, _watcher, _passes, _lock, _quiet_before
    global _unsettled_since
    _lock = threading.Lock()
    _exiting = threading.Event()
    _inherited_shutting_down = bool(getattr(threading, "_SHUTTING_DOWN", False))
    _draining = False
    _watcher = None
    _passes = 0
    _quiet_before = _unsettled_since = None
    _sealed_when_idle.clear()


# -- at exit ---------------------------------------------------------------------------

#: How long the drain at exit waits between looks.
_DRAIN_SLICE = 0.05
#: How long the drain to quiescence waits between its looks; two in a row
#: must agree before the exit calls everything quiet.
_LOOK = 0.005


def helper_thread(thread: threading.Thread) -> threading.Thread:
    """Count ``thread`` as tempo's own (a pipeline's helper for ``aflush``,
    ``aclose`` or a close from its sink); returns it."""
    _helpers.add(thread)
    return thread


def _own_threads() -> "set[Optional[threading.Thread]]":
    """tempo's threads: none of them is a consumer of a plain dispatcher."""
    own: "set[Optional[threading.Thread]]" = {_watcher, threading.current_thread()}
    own.update(thread for thread in snapshot(_helpers))
    own.update(d._driver for d in live())
    for pipeline in live_pipelines():
        own.update(pipeline._worker_threads())
    return own


def _consumers_possible() -> bool:
    """False once no thread but this one and tempo's own is alive: then no
    consumer of a plain dispatcher can take anything, and waiting longer
    only delays the exit."""
    own = _own_threads()
    return any(t not in own for t in threading.enumerate())


def _consumer_waits(dispatcher: _core.Core) -> bool:
    """A thread or an event loop is waiting for a batch from ``dispatcher`` now."""
    return bool(dispatcher._waiters()[0]) or _aio.loop_waits(dispatcher)


class _Look:
    """One look at every stage: what is still moving, and a snapshot of all
    the counters (two equal snapshots in a row: nothing moved in between)."""

    def __init__(self, pipelines: "list[_Stage]", dispatchers: "list[_Dispatcher]") -> None:
        owners = {id(p.dispatcher): p for p in pipelines}
        self.snapshot: "list[object]" = []
        self.busy_pipelines = 0  # not quiet, and its workers can move it
        self.busy_plain = 0  # plain dispatchers not quiet
        for dispatcher in dispatchers:
            now = state(dispatcher)
            if now is State.FINISHED:
                continue
            pipeline = owners.get(id(dispatcher))
            if now is State.NEW and pipeline is None and not _consumer_waits(dispatcher):
                continue  # never started, nobody waits: nothing will ever move it
            # Without its age: oldest_wait grows while a stage that cannot
            # move waits, and two looks would never agree.
            stats = dataclasses.replace(Stats._of(dispatcher), oldest_wait=0.0)
            if pipeline is not None:
                in_sink = pipeline._in_sink()
                self.snapshot.append((stats, in_sink))
                if (not _all_handed_out(stats) or in_sink) and pipeline._can_work():
                    self.busy_pipelines += 1
            else:
                self.snapshot.append(stats)
                # A plain dispatcher's consumer passes what it takes on before it
                # releases it (batches() does): held is still moving.
                if not _all_handed_out(stats) or stats.held_batches:
                    self.busy_plain += 1

    @property
    def quiet(self) -> bool:
        return not self.busy_pipelines and not self.busy_plain

    @property
    def stuck(self) -> bool:
        """Not quiet, but nothing can move: only plain dispatchers are busy
        and no thread is left that could consume them."""
        return not self.busy_pipelines and not _consumers_possible()


def _seal_everything() -> None:
    """Seal every open batch (consumers take them; nothing is closed)."""
    for dispatcher in live():
        now = state(dispatcher)
        if now is State.NEW and _consumer_waits(dispatcher):
            # A consumer waits on a dispatcher never started: it gets the
            # batches once shutting down (as from shutdown()).
            dispatcher._begin_shutdown()
        elif now is State.RUNNING or now is State.SHUTTING_DOWN:
            dispatcher._seal_now()


def _until_quiet(deadline: float) -> bool:
    """Seal and look until two looks in a row find every stage quiet with
    the same counters: True. False at ``deadline``, or when what is left
    cannot move (no consumer left)."""
    previous: "Optional[list[object]]" = None
    while True:
        _seal_everything()
        look = _Look(live_pipelines(), live())
        if look.quiet:
            if not look.snapshot or look.snapshot == previous:
                return True
        elif look.stuck:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        previous = look.snapshot
        time.sleep(min(_LOOK, left))


def _drain_at_exit() -> None:
    global _draining
    _draining = True
    timeout = _timeout
    deadline = time.monotonic() + timeout
    dropped = 0
    by_name: dict[str, int] = {}  # what the report says: dispatcher name -> payloads

    def drop(dispatcher: Any) -> int:
        count: int = dispatcher._stop()
        if count:
            by_name[dispatcher.name] = by_name.get(dispatcher.name, 0) + count
        return count

    timed_out = False
    try:
        for drain in _registered_drains():
            try:
                drain(deadline)
            except Exception:  # noqa: BLE001 - one stage's failure must not end the others' drain
                # A drain is a pipeline's bound method: name the pipeline.
                name = getattr(getattr(drain, "__self__", None), "name", None)
                log_safely(logging.ERROR, "pipeline %r: draining at exit failed", name,
                           exc_info=True, extra={"tempo_name": name})
        # Everything together, intake open: chained stages pass it all on.
        _until_quiet(deadline)
        # Then intake closes everywhere at once. Quiet, nothing is left to
        # hand out; at the bound (or with no consumer left) what is left is
        # handed out in what remains of it, then dropped.
        pipelines = live_pipelines()
        piped = {id(p.dispatcher) for p in pipelines}
        waiting = []
        for dispatcher in live():
            now = state(dispatcher)
            if now is State.FINISHED:
                continue
            if now is State.NEW and id(dispatcher) not in piped and not _consumer_waits(dispatcher):
                # Never started and nobody waits on it: no consumer will
                # take a batch. (One waiting gets them, as from shutdown().)
                dropped += drop(dispatcher)
                continue
            if id(dispatcher) in piped:
                continue  # its pipeline closes it, below
            dispatcher._begin_shutdown()
            waiting.append((dispatcher, dispatcher._seal_now()))
        for pipeline in pipelines:
            pipeline.dispatcher._begin_shutdown()
        for pipeline in pipelines:
            # Each reports its own leftovers (dropped, or still in its sink).
            pipeline._drain_at_exit(deadline)
        for dispatcher, target in waiting:
            while True:
                left = deadline - time.monotonic()
                outcome = dispatcher._wait_delivered(target, max(0.0, min(left, _DRAIN_SLICE)))
                if outcome == Delivery.DELIVERED:
                    dispatcher._finish()
                    break
                if outcome == Delivery.STOPPED:
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
            counts = sorted(by_name.items())  # a stable order to read and to test
            log_safely(
                logging.WARNING,
                "tempo dropped %s at exit (%s): %s", _count(dropped, "payload"),
                ", ".join(f"{name}: {count}" for name, count in counts), why,
                extra={"tempo_name": ", ".join(name for name, _ in counts)},
            )


_core._set_main_thread(threading.main_thread().ident or 0)
#: What ``os.fork()`` runs in the parent: the hooks above, run again (from C)
#: whatever interrupt escapes them, wherever it lands (_core._Uninterrupted):
#: an after-fork hook that did not get through would leave hand-outs
#: blocked. Each is a no-op for a dispatcher it already passed.
_before_fork_hook = _core._Uninterrupted(_before_fork).run
_after_fork_in_parent_hook = _core._Uninterrupted(_after_fork_in_parent).run
#: And in the child: run once, then (from C) every dispatcher it did not reset
#: because something escaped it is reset, so none keeps writing the buffer it
#: shares with the parent.
_after_fork_in_child_hook = _core._Uninterrupted(_after_fork_in_child, _live).run
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork_hook,
        after_in_parent=_after_fork_in_parent_hook,
        after_in_child=_after_fork_in_child_hook,
    )
atexit.register(_drain_at_exit)
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_on_threading_exit)
