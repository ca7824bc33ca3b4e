"""asyncio support: wait for batches on the event loop, not on a thread.

Each (dispatcher, loop) pair with waiting coroutines gets one ``eventfd``,
registered with ``loop.add_reader`` and with the core, which writes to it
whenever a batch is sealed, a batch is handed out, space comes back, or the
dispatcher finishes. Waiting coroutines then look again; nobody blocks the loop and no
thread is spent per waiting call. With no coroutine waiting, the fd is gone
and the hot path pays nothing.
"""

from __future__ import annotations

import asyncio
import math
import os
from typing import TYPE_CHECKING, Optional

from ._core import _timeout_seconds
from ._errors import Stopped

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._core import Batch
    from ._dispatcher import Dispatcher

__all__ = ["enqueue", "flush", "get_batch", "shutdown"]


class _Waker:
    """One eventfd between a dispatcher and an event loop."""

    def __init__(self, dispatcher: "Dispatcher", loop: asyncio.AbstractEventLoop) -> None:
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
            self._close_fds()
            raise
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
        self.dispatcher._remove_wake_fd(self.wfd)
        self.loop.remove_reader(self.rfd)
        self._close_fds()

    def _close_fds(self) -> None:
        os.close(self.rfd)
        if self.wfd != self.rfd:
            os.close(self.wfd)


def _acquire(dispatcher: "Dispatcher") -> _Waker:
    loop = asyncio.get_running_loop()
    wakers: "dict[asyncio.AbstractEventLoop, _Waker]" = dispatcher.__dict__.setdefault(
        "_wakers", {}
    )
    waker = wakers.get(loop)
    if waker is None:
        waker = wakers[loop] = _Waker(dispatcher, loop)
    waker.users += 1
    return waker


def _release(waker: _Waker) -> None:
    waker.users -= 1
    if waker.users == 0:
        wakers = waker.dispatcher.__dict__.get("_wakers", {})
        if wakers.get(waker.loop) is waker:
            del wakers[waker.loop]
            waker.close()
        # else: a fork reset the dispatcher; this waker belongs to the parent.


async def _wait(waker: _Waker, deadline: float) -> None:
    """Wait for the next wake-up; TimeoutError at the loop-time deadline."""
    future = waker.loop.create_future()
    waker.futures.add(future)
    # The loop's thread is never idle for interpreter exit (tempo._exit):
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
    return loop.time() + _timeout_seconds(timeout)


async def get_batch(dispatcher: "Dispatcher", timeout: Optional[float]) -> "Batch":
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


async def _until_delivered(dispatcher: "Dispatcher", target: int, deadline: float) -> bool:
    """Wait until every batch sealed before slot ``target`` was handed out: True
    when they were, False at the deadline; ``Stopped`` if ``stop()`` came first."""
    waker = _acquire(dispatcher)
    try:
        while True:
            # Registered before looking: a hand-off after this look wakes us.
            outcome = dispatcher._wait_delivered(target, 0)
            if outcome == 0:
                return True
            if outcome == 1:
                raise Stopped()
            try:
                await _wait(waker, deadline)
            except TimeoutError:
                return dispatcher._wait_delivered(target, 0) == 0  # one last look
    finally:
        _release(waker)


async def shutdown(dispatcher: "Dispatcher", timeout: Optional[float]) -> None:
    deadline = _deadline(asyncio.get_running_loop(), timeout)
    if not dispatcher._begin_shutdown():
        return
    if await _until_delivered(dispatcher, dispatcher._seal_now(), deadline):
        dispatcher._finish()
        return
    dispatcher._stop()
    raise TimeoutError("tempo: shutdown timed out; undelivered payloads were dropped")


async def enqueue(dispatcher: "Dispatcher", payload: "Buffer", timeout: Optional[float]) -> None:
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


async def flush(dispatcher: "Dispatcher", timeout: Optional[float]) -> None:
    deadline = _deadline(asyncio.get_running_loop(), timeout)
    if dispatcher._state_name() == "finished":
        raise Stopped()
    target = dispatcher._seal_now()
    if dispatcher._wait_delivered(target, 0) == 0:
        return  # nothing to wait for: no waker needed
    if not await _until_delivered(dispatcher, target, deadline):
        raise TimeoutError("tempo: flush timed out; the batches are still queued")
