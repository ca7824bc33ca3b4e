"""asyncio support: wait for batches on the event loop, not on a thread.

Each (dispatcher, loop) pair with waiting coroutines gets one ``eventfd``,
registered with ``loop.add_reader`` and with the core, which writes to it
whenever a batch is sealed, a batch is handed out, space comes back, or the
dispatcher finishes. Waiting coroutines then look again; nobody blocks the loop and no
thread is spent per waiting call. With no coroutine waiting, the fd is gone
and the hot path pays nothing.

This module alone keeps the books of those wakers (``_wakers``): the core
knows only the fds it writes to. A waker lives as long as a coroutine waits
with it, so an event loop closed under a waiting coroutine leaves nothing
behind: its waker is closed when the next coroutine comes to wait on the
dispatcher, or when the abandoned coroutine is collected, whichever is first.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import weakref
from typing import TYPE_CHECKING, Optional

from ._core import Core
from ._errors import Stopped
from ._protocol import Delivery, State, state, timeout_seconds

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._core import Batch

__all__ = ["enqueue", "flush", "get_batch", "shutdown"]


class _Waker:
    """One eventfd between a dispatcher and an event loop."""

    def __init__(self, dispatcher: Core, loop: asyncio.AbstractEventLoop) -> None:
        self.dispatcher = dispatcher
        self.loop = loop
        self.users = 0
        self.futures: "set[asyncio.Future[None]]" = set()
        if hasattr(os, "eventfd"):
            self.rfd = self.wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - non-Linux
            self.rfd, self.wfd = os.pipe()
            os.set_blocking(self.rfd, False)
            os.set_blocking(self.wfd, False)
        try:
            dispatcher._add_wake_fd(self.wfd)
        except BaseException:
            _close_fds(self.rfd, self.wfd)
            raise
        # Runs once: from close(), or when the waker is collected with its
        # loop closed under it (no reader left to close it from).
        self._release_fds = weakref.finalize(
            self, _forget_fds, dispatcher, self.rfd, self.wfd
        )
        self._release_fds.atexit = False
        loop.add_reader(self.rfd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            os.read(self.rfd, 8)
        except BlockingIOError:
            pass
        futures, self.futures = self.futures, set()
        for future in futures:
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        if not self._release_fds.alive:
            return
        try:
            self.loop.remove_reader(self.rfd)
        except RuntimeError:  # a closed loop of another kind (uvloop)
            pass
        self._release_fds()


def _forget_fds(dispatcher: Core, rfd: int, wfd: int) -> None:
    dispatcher._remove_wake_fd(wfd)
    _close_fds(rfd, wfd)


def _close_fds(rfd: int, wfd: int) -> None:
    os.close(rfd)
    if wfd != rfd:
        os.close(wfd)


#: dispatcher -> {loop: waker}. The coroutines waiting with a waker hold it
#: (and an open loop's reader does); this table only finds it, so a waker
#: nobody waits with any more is collected and its fds closed.
_wakers: "weakref.WeakKeyDictionary[Core, weakref.WeakValueDictionary[asyncio.AbstractEventLoop, _Waker]]" = (
    weakref.WeakKeyDictionary()
)


#: Guards ``_wakers`` and the ``users`` counts: loops in several threads may
#: wait on one dispatcher (and without the GIL nothing else would). Reentrant:
#: a collection while it is held may close an abandoned coroutine, whose
#: cleanup releases its waker in the same thread.
_books = threading.RLock()


def _acquire(dispatcher: Core) -> _Waker:
    loop = asyncio.get_running_loop()
    closed = []
    with _books:
        wakers = _wakers.get(dispatcher)
        if wakers is None:
            wakers = _wakers[dispatcher] = weakref.WeakValueDictionary()
        # A loop closed while a coroutine waited on it never ran that
        # coroutine's cleanup: its waker goes now, before it counts against
        # the core's limit of loops.
        for other, waker in list(wakers.items()):
            if other.is_closed():
                wakers.pop(other, None)
                closed.append(waker)
        for waker in closed:
            waker.close()
        found = wakers.get(loop)
        if found is None:
            found = wakers[loop] = _Waker(dispatcher, loop)
        found.users += 1
        return found


def _release(waker: _Waker) -> None:
    with _books:
        waker.users -= 1
        if waker.users:
            return
        wakers = _wakers.get(waker.dispatcher)
        if wakers is not None and wakers.get(waker.loop) is waker:
            wakers.pop(waker.loop, None)
    waker.close()


def loop_waits(dispatcher: Core) -> bool:
    """A coroutine on a loop that is not closed waits on ``dispatcher`` now."""
    wakers = _wakers.get(dispatcher)
    return wakers is not None and any(
        w.users and not loop.is_closed() for loop, w in list(wakers.items())
    )


def open_wakers(dispatcher: Core) -> int:
    """How many wakers ``dispatcher`` has now (tests: closed loops leave none)."""
    wakers = _wakers.get(dispatcher)
    return 0 if wakers is None else len(wakers)


def waiting_futures(dispatcher: Core) -> int:
    """How many coroutines wait on ``dispatcher`` now (tests)."""
    wakers = _wakers.get(dispatcher)
    return 0 if wakers is None else sum(len(w.futures) for w in list(wakers.values()))


def forget_after_fork() -> None:
    """In a forked child: the parent's wakers are not this process's. Their
    fds stay open (the copied loop may still list them, and its epoll is
    shared with the parent's); they are never closed or unregistered here."""
    global _wakers, _books
    _books = threading.RLock()  # another thread may have held it at fork
    for wakers in list(_wakers.values()):
        for waker in list(wakers.values()):
            waker._release_fds.detach()
    _wakers = weakref.WeakKeyDictionary()


async def _wait(waker: _Waker, deadline: float) -> None:
    """Wait for the next wake-up; TimeoutError at the loop-time deadline."""
    future = waker.loop.create_future()
    waker.futures.add(future)
    # The loop's thread is never idle for interpreter exit (tempo._lifecycle):
    # its other coroutines may be working while this one waits.
    try:
        if math.isinf(deadline):
            await future
            return
        remaining = deadline - waker.loop.time()
        if remaining <= 0:
            raise TimeoutError
        try:
            await asyncio.wait_for(future, remaining)
        except asyncio.TimeoutError:
            raise TimeoutError from None
    finally:
        waker.futures.discard(future)


def _deadline(loop: asyncio.AbstractEventLoop, timeout: Optional[float]) -> float:
    return loop.time() + timeout_seconds(timeout)


async def get_batch(dispatcher: Core, timeout: Optional[float]) -> "Batch":
    deadline = _deadline(asyncio.get_running_loop(), timeout)
    batch = dispatcher._try_get_batch()
    if batch is not None:
        return batch
    waker = _acquire(dispatcher)
    try:
        while True:
            # Registered before looking: a seal after this look wakes us.
            # The batch is taken with no await in between, so a cancelled
            # waiter never holds one.
            batch = dispatcher._try_get_batch()
            if batch is not None:
                return batch
            try:
                await _wait(waker, deadline)
            except TimeoutError:
                batch = dispatcher._try_get_batch()
                if batch is not None:
                    return batch
                raise TimeoutError("tempo: no batch ready in time") from None
    finally:
        _release(waker)


async def _until_delivered(dispatcher: Core, target: int, deadline: float) -> bool:
    """Wait until every batch sealed before slot ``target`` was handed out: True
    when they were, False at the deadline; ``Stopped`` if ``stop()`` came first."""
    waker = _acquire(dispatcher)
    try:
        while True:
            # Registered before looking: a hand-off after this look wakes us.
            outcome = dispatcher._wait_delivered(target, 0)
            if outcome == Delivery.DELIVERED:
                return True
            if outcome == Delivery.STOPPED:
                raise Stopped()
            try:
                await _wait(waker, deadline)
            except TimeoutError:
                # One last look.
                return dispatcher._wait_delivered(target, 0) == Delivery.DELIVERED
    finally:
        _release(waker)


async def shutdown(dispatcher: Core, timeout: Optional[float]) -> None:
    deadline = _deadline(asyncio.get_running_loop(), timeout)
    if not dispatcher._begin_shutdown():
        return
    if await _until_delivered(dispatcher, dispatcher._seal_now(), deadline):
        dispatcher._finish()
        return
    dispatcher._stop()
    raise TimeoutError("tempo: shutdown timed out; undelivered payloads were dropped")


async def enqueue(dispatcher: Core, payload: "Buffer", timeout: Optional[float]) -> None:
    loop = asyncio.get_running_loop()
    deadline = _deadline(loop, timeout)
    if dispatcher._try_enqueue(payload, deadline <= loop.time()):
        return
    waker = _acquire(dispatcher)
    try:
        while True:
            # Registered before looking: space coming back after this look
            # wakes us.
            if dispatcher._try_enqueue(payload, False):
                return
            try:
                await _wait(waker, deadline)
            except TimeoutError:
                # One last look; QueueFull (counted once) if still full.
                dispatcher._try_enqueue(payload, True)
                return
    finally:
        _release(waker)


async def flush(dispatcher: Core, timeout: Optional[float]) -> None:
    deadline = _deadline(asyncio.get_running_loop(), timeout)
    if state(dispatcher) is State.FINISHED:
        raise Stopped()
    target = dispatcher._seal_now()
    if dispatcher._wait_delivered(target, 0) == Delivery.DELIVERED:
        return  # nothing to wait for: no waker needed
    if not await _until_delivered(dispatcher, target, deadline):
        raise TimeoutError("tempo: flush timed out; the batches are still queued")
