# Core: the dispatcher's state and its hot path. The lifecycle (threads,
# context manager, asyncio, fork) is Python, in tempo/_dispatcher.py, built
# on the underscore methods below.

cdef enum:
    NEW = 0
    RUNNING = 1
    SHUTTING_DOWN = 2
    FINISHED = 3

cdef enum:
    ADMIT_OK = 0
    ADMIT_FULL = 1
    ADMIT_TOO_LARGE = 2
    ADMIT_SHUTTING_DOWN = 3
    ADMIT_STOPPED = 4

# A blocked main thread wakes this often to let Ctrl-C through.
cdef double SIGNAL_CHECK = 0.05

cdef unsigned long _main_thread = 0

_NO_WAIT = 0

# Threads blocked in a tempo wait, by ident (a count, for nested waits): at
# interpreter exit tempo stops its dispatchers only once every non-daemon
# thread is stuck in one of them (see tempo._dispatcher._watch_exit).
cdef dict _blocked = {}


def _note_blocked(unsigned long ident, int delta):
    """Count a thread into (+1) or out of (-1) tempo's blocking waits."""
    cdef int depth = _blocked.get(ident, 0) + delta
    if depth > 0:
        _blocked[ident] = depth
    else:
        _blocked.pop(ident, None)


def _blocked_threads():
    """The idents of the threads blocked in tempo's waits right now."""
    return frozenset(_blocked)


def _age(double since):
    """Seconds from ``since`` (tempo's monotonic clock) to now; 0.0 for ``inf``."""
    return 0.0 if since == INFINITY else max(0.0, tempo_monotonic() - since)


def _set_main_thread(unsigned long ident):
    """Record the main thread's ident (at import, and again after fork)."""
    global _main_thread
    _main_thread = ident


cpdef double _timeout_seconds(object timeout) except? -1.0:
    """Validate a ``timeout=`` argument: seconds, ``inf`` for None."""
    if timeout is None:
        return INFINITY
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__!r}")
    cdef double seconds = timeout
    if isnan(seconds) or seconds < 0:
        raise ValueError("timeout must be a non-negative number of seconds or None")
    return seconds


cdef double _deadline_after(object timeout) except? -1.0:
    return tempo_monotonic() + _timeout_seconds(timeout)


cdef void _set_accepted(object exc, Py_ssize_t n) noexcept:
    try:
        exc.accepted = n
    except BaseException:
        pass  # an exception that takes no attributes still propagates


cdef int _get_payload(object payload, Py_buffer *view) except -1:
    if PyUnicode_Check(payload):
        raise TypeError("payload must be bytes-like, not 'str' (encode it first)")
    try:
        PyObject_GetBuffer(payload, view, PyBUF_C_CONTIGUOUS)
    except TypeError:
        raise TypeError(
            f"payload must be a bytes-like object, not {type(payload).__name__!r}") from None
    except BufferError as exc:
        raise BufferError(f"payload must be C-contiguous: {exc}") from None
    return 0


@cython.no_gc_clear  # every method relies on _arena being an Arena
cdef class Core:
    """The compiled half of ``tempo.Dispatcher`` (internal)."""

    def __cinit__(self):
        self._sync_ready = False
        self._deadline = INFINITY
        self._driver_until = -INFINITY
        self._init_sync()

    def __init__(self, double interval, Py_ssize_t max_batch_bytes,
                 Py_ssize_t max_buffered_bytes, Py_ssize_t max_batch_items=0):
        self._arena = Arena(max_buffered_bytes)
        self._interval = interval
        self._max_batch = max_batch_bytes
        self._max_buffered = max_buffered_bytes
        self._batch_items = max_batch_items

    def __dealloc__(self):
        if self._sync_ready:
            pthread_cond_destroy(&self._ready_cond)
            pthread_cond_destroy(&self._state_cond)
            pthread_cond_destroy(&self._driver_cond)
            pthread_mutex_destroy(&self._mutex)

    cdef inline int _check(self) except -1:
        # Reached only through Core.__new__ without __init__: refuse rather
        # than dereference a missing arena.
        if self._arena is None:
            raise TypeError("the dispatcher was not initialised (call __init__)")
        return 0

    cdef int _init_sync(self) except -1:
        if (pthread_mutex_init(&self._mutex, NULL)
                or tempo_cond_init(&self._ready_cond)
                or tempo_cond_init(&self._state_cond)
                or tempo_cond_init(&self._driver_cond)):
            raise OSError("tempo: cannot create the dispatcher's condition variables")
        self._sync_ready = True
        self._ready_waiters = self._state_waiters = self._driver_waiters = 0
        self._n_wake_fds = 0
        return 0

    # -- the hot path --------------------------------------------------------

    def enqueue(self, payload, timeout=_NO_WAIT):
        """Copy ``payload`` into the dispatcher's arena.

        ``payload`` is any C-contiguous bytes-like object; its size is
        ``memoryview(payload).nbytes``. A ``str`` is a ``TypeError``; a
        non-contiguous buffer is a ``BufferError``.

        ``timeout`` is how long to wait for space when the queue is full:
        ``0`` (the default) fails at once, ``None`` waits for ever.

        Raises ``PayloadTooLarge`` if the payload can never fit,
        ``QueueFull`` if it does not fit now (after ``timeout``),
        ``ShuttingDown`` during ``shutdown()`` and ``Stopped`` after it or
        after ``stop()``.
        """
        self._check()
        cdef double deadline
        # Validated before anything is admitted: a bad timeout must not
        # half-apply. The default skips the check (one pointer compare).
        deadline = 0.0 if timeout is _NO_WAIT else _deadline_after(timeout)
        cdef int rc
        if PyBytes_CheckExact(payload):
            # bytes that fit now are admitted right here: going through
            # _enqueue_one costs a tenth of the whole call. A refusal is
            # looked at again there (admission changes nothing when it refuses).
            rc = self._admit(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
            if rc == ADMIT_OK:
                return
        rc = self._enqueue_one(payload, deadline)
        if rc != ADMIT_OK:
            self._reject(rc)

    def enqueue_many(self, payloads, timeout=_NO_WAIT):
        """Enqueue each payload of ``payloads`` in order; return how many were accepted.

        ``payloads`` is any iterable of payloads (a ``list`` or ``tuple`` of
        ``bytes`` is fastest); each payload becomes its own item, under
        exactly the rules of ``enqueue``. The call stops at the first payload
        that does not fit in time and returns the count accepted before it,
        without raising ``QueueFull`` (that payload counts once in
        ``stats().rejected_full``; from an iterator it has been consumed).

        ``timeout`` bounds the whole call: ``0`` (the default) never waits,
        a number of seconds is one deadline for all the payloads, ``None``
        waits for space as long as it takes.

        A payload that can never be accepted raises what ``enqueue`` would
        (``PayloadTooLarge``, ``TypeError``, ``BufferError``), after the
        payloads before it were accepted; so do ``ShuttingDown`` and
        ``Stopped``. Every exception the call raises has an ``accepted``
        attribute: how many payloads were accepted before it.
        """
        self._check()
        cdef double deadline
        cdef Py_ssize_t n = 0
        cdef int rc = ADMIT_OK
        cdef PyObject *item
        cdef object payload
        cdef bint is_list = PyList_CheckExact(payloads)
        try:
            deadline = 0.0 if timeout is _NO_WAIT else _deadline_after(timeout)
            if PyUnicode_Check(payloads) or PyBytes_Check(payloads) or PyByteArray_Check(payloads):
                raise TypeError("enqueue_many takes an iterable of payloads, "
                                f"not one {type(payloads).__name__!r} payload (use enqueue)")
            if is_list or PyTuple_CheckExact(payloads):
                # The length is read again each time: a buffer exporter or a
                # wait may run Python code that changes the list.
                while n < (_list_size(payloads) if is_list else _tuple_size(payloads)):
                    item = _list_item(payloads, n) if is_list else _tuple_item(payloads, n)
                    if _bytes_check(item):
                        rc = self._admit(_bytes_data(item), _bytes_size(item))
                        if rc == ADMIT_OK:
                            n += 1
                            continue
                    # A reference of our own: a wait releases the GIL, and
                    # another thread may take the payload out of the list.
                    payload = <object>item
                    rc = self._enqueue_one(payload, deadline)
                    if rc != ADMIT_OK:
                        break
                    n += 1
            else:
                for payload in payloads:
                    rc = self._enqueue_one(payload, deadline)
                    if rc != ADMIT_OK:
                        break
                    n += 1
            if rc == ADMIT_FULL:
                self._rejected_full += 1
            elif rc != ADMIT_OK:
                self._reject(rc)
        except BaseException as exc:
            _set_accepted(exc, n)
            raise
        return n

    @cython.final
    cdef int _enqueue_one(self, object payload, double deadline) except -1:
        """Admit one payload, waiting for space until ``deadline``; ADMIT_*."""
        cdef Py_buffer view
        cdef int rc
        if PyBytes_CheckExact(payload):
            # bytes are immutable and the caller holds them: no buffer export.
            rc = self._admit(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
            if rc == ADMIT_FULL and deadline > 0.0:
                rc = self._admit_waiting(PyBytes_AS_STRING(payload),
                                         PyBytes_GET_SIZE(payload), deadline)
            return rc
        _get_payload(payload, &view)
        try:
            rc = self._admit(<const char *>view.buf, view.len)
            if rc == ADMIT_FULL and deadline > 0.0:
                rc = self._admit_waiting(<const char *>view.buf, view.len, deadline)
        finally:
            PyBuffer_Release(&view)
        return rc

    def _try_enqueue(self, payload, bint last):
        """``enqueue`` without waiting, for ``aenqueue``: True if accepted,
        False if the queue is full (then, if ``last``, counted and raised as
        ``QueueFull``); other refusals raise as ``enqueue`` does."""
        self._check()
        cdef int rc = self._enqueue_one(payload, 0.0)
        if rc == ADMIT_OK:
            return True
        if rc == ADMIT_FULL and not last:
            return False
        self._reject(rc)

    @cython.final
    cdef int _admit(self, const char *data, Py_ssize_t n) noexcept:
        # No Python code runs here, so this is atomic under the GIL.
        if self._state >= SHUTTING_DOWN:
            return ADMIT_STOPPED if self._state == FINISHED else ADMIT_SHUTTING_DOWN
        if n > self._max_buffered:
            return ADMIT_TOO_LARGE
        cdef Arena arena = self._arena
        if not arena.has_room(n):
            return ADMIT_FULL
        if (self._max_batch and self._open_bytes + n > self._max_batch
                and arena.head_slot != arena.sealed_slot):
            self._seal()
        cdef double now
        if arena.head_slot == arena.sealed_slot:
            # The first payload of a batch starts its clock.
            now = tempo_monotonic()
            arena.opened[arena.head_slot & arena.mask] = now
            self._deadline = now + self._interval
            if self._deadline < self._driver_until:
                self._notify_driver()
        arena.push(data, n)
        self._open_bytes += n
        self._enqueued += 1
        self._enqueued_bytes += <uint64_t>n
        if ((self._max_batch and self._open_bytes >= self._max_batch)
                or (self._batch_items and arena.head_slot - arena.sealed_slot >= self._batch_items)):
            self._seal()
        return ADMIT_OK

    cdef int _admit_waiting(self, const char *data, Py_ssize_t n, double deadline) except -1:
        # The payload's buffer stays exported (or, for bytes, referenced by
        # the caller) while we wait without the GIL.
        cdef int rc = ADMIT_FULL
        while rc == ADMIT_FULL and tempo_monotonic() < deadline:
            self._wait(&self._state_cond, &self._state_epoch, &self._state_waiters, deadline)
            rc = self._admit(data, n)
        return rc

    cdef int _reject(self, int rc) except -1:
        if rc == ADMIT_FULL:
            self._rejected_full += 1
            raise QueueFull()
        if rc == ADMIT_TOO_LARGE:
            self._rejected_too_large += 1
            raise PayloadTooLarge()
        if rc == ADMIT_SHUTTING_DOWN:
            raise ShuttingDown()
        raise Stopped()

    cdef void _seal(self) noexcept:
        if self._arena.seal():
            self._waiting += 1
            self._open_bytes = 0
            self._deadline = INFINITY
            if self._state != NEW:
                self._notify_ready(False)

    def get_batch(self, timeout=None):
        """Return the next sealed batch, waiting up to ``timeout`` seconds.

        ``None`` (the default) waits for ever. Raises ``TimeoutError`` if no
        batch is ready in time, ``Stopped`` once the dispatcher is finished
        and nothing more will come. Safe from many threads: each batch goes
        to exactly one consumer. Before ``start()`` nothing is handed out.
        """
        self._check()
        cdef double deadline = _deadline_after(timeout)
        cdef Batch batch
        while True:
            # Allocate before looking: allocation may run the garbage
            # collector (and so other threads), the hand-off must not.
            batch = Batch.__new__(Batch)
            if self._state != NEW and self._arena.deliver_slot < self._arena.sealed_slot:
                return self._fill(batch)
            if self._state == FINISHED:
                raise Stopped()
            if tempo_monotonic() >= deadline:
                raise TimeoutError("tempo: no batch ready in time")
            self._wait(&self._ready_cond, &self._ready_epoch, &self._ready_waiters, deadline)

    def _try_get_batch(self):
        """The next batch, or None if none is ready; ``Stopped`` if finished."""
        self._check()
        cdef Batch batch = Batch.__new__(Batch)
        if self._state != NEW and self._arena.deliver_slot < self._arena.sealed_slot:
            return self._fill(batch)
        if self._state == FINISHED:
            raise Stopped()
        return None

    cdef inline Batch _fill(self, Batch batch):
        cdef Arena arena = self._arena
        cdef int64_t first = arena.deliver_slot
        cdef Py_ssize_t n = arena.marks[first & arena.mask] & TEMPO_COUNT
        arena.deliver_slot += n
        arena.held += 1
        self._waiting -= 1
        batch._core = self
        batch._arena = arena
        batch._first = first
        batch._len = n
        batch._start = arena.item_start(first)
        batch._nbytes = <Py_ssize_t>(arena.item_end(first + n - 1) - batch._start)
        self._batches += 1
        self._items += <uint64_t>n
        if self._state_waiters or self._n_wake_fds:
            self._notify_state()
        return batch

    # -- waking and waiting --------------------------------------------------

    cdef void _notify_ready(self, bint everyone) noexcept:
        cdef int i
        if self._ready_waiters:
            pthread_mutex_lock(&self._mutex)
            self._ready_epoch += 1
            if everyone:
                pthread_cond_broadcast(&self._ready_cond)
            else:
                pthread_cond_signal(&self._ready_cond)
            pthread_mutex_unlock(&self._mutex)
        else:
            self._ready_epoch += 1
        for i in range(self._n_wake_fds):
            tempo_wake_fd(self._wake_fds[i])

    cdef void _notify_state(self) noexcept:
        cdef int i
        if self._state_waiters:
            pthread_mutex_lock(&self._mutex)
            self._state_epoch += 1
            pthread_cond_broadcast(&self._state_cond)
            pthread_mutex_unlock(&self._mutex)
        else:
            self._state_epoch += 1
        for i in range(self._n_wake_fds):
            tempo_wake_fd(self._wake_fds[i])

    cdef void _notify_driver(self) noexcept:
        if self._driver_waiters:
            pthread_mutex_lock(&self._mutex)
            self._driver_epoch += 1
            pthread_cond_signal(&self._driver_cond)
            pthread_mutex_unlock(&self._mutex)
        else:
            self._driver_epoch += 1

    cdef void _wake_everyone(self) noexcept:
        self._notify_ready(True)
        self._notify_state()
        self._notify_driver()

    cdef int _wait(self, pthread_cond_t *cond, uint64_t *epoch, int *waiters,
                   double deadline) except -1:
        """Block without the GIL until notified or the deadline passes.

        Spurious returns are allowed: callers re-check their condition. In
        the main thread the wait is sliced so Ctrl-C is seen promptly.
        """
        cdef uint64_t seen = epoch[0]
        cdef bint main = PyThread_get_thread_ident() == _main_thread
        cdef double until = deadline
        if main:
            until = min(deadline, tempo_monotonic() + SIGNAL_CHECK)
        # Counted before the GIL goes: a notifier that sees it takes the
        # mutex, so its epoch bump cannot slip between our check and wait
        # (not even while _note_blocked runs Python code).
        waiters[0] += 1
        cdef unsigned long ident = PyThread_get_thread_ident()
        _note_blocked(ident, 1)
        with nogil:
            pthread_mutex_lock(&self._mutex)
            tempo_cond_wait_until(cond, &self._mutex, epoch, seen, until)
            pthread_mutex_unlock(&self._mutex)
        waiters[0] -= 1
        _note_blocked(ident, -1)
        if main and _check_signals() < 0:
            if epoch[0] != seen and waiters[0]:
                # We may have taken the one wake-up meant for a waiter (a
                # seal signals only one); pass it on before raising.
                pthread_mutex_lock(&self._mutex)
                pthread_cond_signal(cond)
                pthread_mutex_unlock(&self._mutex)
            return -1
        return 0

    # -- lifecycle primitives (used by tempo._dispatcher) ---------------------

    def _start(self):
        """NEW -> RUNNING. True if this call started it (and must start the driver)."""
        self._check()
        if self._state == FINISHED:
            raise Stopped()
        if self._state != NEW:
            return False
        self._state = RUNNING
        if self._arena.deliver_slot < self._arena.sealed_slot:
            self._notify_ready(True)
        return True

    def _drive(self, double longest):
        """One step of the driver thread: seal the open batch if its interval
        has run out, else sleep until it does (``longest`` seconds at most) or
        a new batch opens. False once the dispatcher is finished."""
        self._check()
        if self._state != RUNNING and self._state != SHUTTING_DOWN:
            return False
        if self._deadline <= tempo_monotonic():
            self._seal()
            return True
        self._driver_until = self._deadline
        self._wait(&self._driver_cond, &self._driver_epoch, &self._driver_waiters,
                   min(self._deadline, tempo_monotonic() + longest))
        self._driver_until = -INFINITY
        return True

    def _seal_now(self):
        """Seal the open batch; return the slot every sealed batch ends before."""
        self._check()
        self._seal()
        return self._arena.sealed_slot

    def _begin_shutdown(self):
        """Refuse new payloads and seal; False if already finished."""
        self._check()
        if self._state == FINISHED:
            return False
        if self._state != SHUTTING_DOWN:
            self._state = SHUTTING_DOWN
            self._seal()
            # Consumers of a never-started dispatcher may take batches now;
            # waiting enqueues must learn they will never get in.
            self._wake_everyone()
        return True

    def _wait_delivered(self, int64_t target, timeout):
        """Wait until every batch before slot ``target`` was handed out.

        Returns 0 when they were, 1 if ``stop()`` came first, 2 on timeout.
        """
        self._check()
        cdef double deadline = _deadline_after(timeout)
        while True:
            if self._state == FINISHED and self._stopped:
                return 1
            if self._arena.deliver_slot >= target:
                return 0
            if self._state == FINISHED:
                return 1
            if tempo_monotonic() >= deadline:
                return 2
            self._wait(&self._state_cond, &self._state_epoch, &self._state_waiters, deadline)

    def _finish(self):
        """SHUTTING_DOWN -> FINISHED after a complete drain."""
        if self._state != FINISHED:
            self._state = FINISHED
            self._wake_everyone()

    def _stop(self):
        """Drop everything not handed out and finish. Returns items dropped."""
        self._check()
        if self._state == FINISHED:
            # Finished means nothing is left undelivered: stop twice is fine.
            return 0
        cdef Py_ssize_t dropped = self._arena.drop_undelivered()
        self._dropped += <uint64_t>dropped
        self._waiting = 0
        self._open_bytes = 0
        self._deadline = INFINITY
        self._stopped = True
        self._state = FINISHED
        self._wake_everyone()
        return dropped

    def _state_name(self):
        return ("new", "running", "shutting down", "finished")[self._state]

    def _counters(self):
        """The counters behind ``stats()``; last, when the oldest payload not
        handed out arrived (``_age`` turns it into ``oldest_wait``), ``inf``
        if none. Unchanged while nothing happens (exit compares snapshots)."""
        self._check()
        cdef Arena arena = self._arena
        cdef double oldest = INFINITY
        if arena.deliver_slot < arena.head_slot:
            # The oldest payload not handed out opened the next batch to go.
            oldest = arena.opened[arena.deliver_slot & arena.mask]
        return (self._enqueued, self._enqueued_bytes, self._rejected_full,
                self._rejected_too_large, self._batches, self._items, self._dropped,
                arena.head_byte - arena.tail_byte, self._max_buffered,
                self._waiting, arena.held, oldest)

    def _waiters(self):
        """(threads waiting for a batch, threads waiting on hand-offs/space).

        For tests that must know a thread is blocked before acting."""
        return self._ready_waiters, self._state_waiters

    @property
    def _max_items(self):
        self._check()
        return self._arena.nslots - 1

    # -- asyncio ----------------------------------------------------------------

    def _add_wake_fd(self, int fd):
        if self._n_wake_fds >= 16:
            raise RuntimeError("tempo: at most 16 event loops may wait on one dispatcher")
        self._wake_fds[self._n_wake_fds] = fd
        self._n_wake_fds += 1

    def _remove_wake_fd(self, int fd):
        cdef int i
        for i in range(self._n_wake_fds):
            if self._wake_fds[i] == fd:
                self._n_wake_fds -= 1
                self._wake_fds[i] = self._wake_fds[self._n_wake_fds]
                return

    # -- fork -------------------------------------------------------------------

    def _reset_after_fork(self, bint running):
        """In a forked child: become a fresh, empty dispatcher, same config.

        The old arena's memory is shared with the parent, which goes on
        reusing it; batches this process still holds get a private copy of
        their bytes, so they keep showing what they showed.
        """
        self._check()
        cdef Arena old = self._arena
        cdef int64_t live_end
        if old.deliver_slot > old.tail_slot:
            live_end = old.item_end(old.deliver_slot - 1)
            if tempo_mirror_privatize(old.base, <size_t>old.size,
                                      <size_t>(old.tail_byte % old.size),
                                      <size_t>(live_end - old.tail_byte)):
                PyErr_SetFromErrno(OSError)
        self._arena = Arena(self._max_buffered)
        self.__dict__.pop("_wakers", None)
        # Another parent thread may have held these at fork: start afresh.
        self._init_sync()
        self._ready_epoch = self._state_epoch = self._driver_epoch = 0
        self._enqueued = self._enqueued_bytes = 0
        self._rejected_full = self._rejected_too_large = 0
        self._batches = self._items = self._dropped = 0
        self._waiting = 0
        self._open_bytes = 0
        self._deadline = INFINITY
        self._driver_until = -INFINITY
        self._stopped = False
        if self._state == NEW:
            pass
        elif running:
            self._state = RUNNING
        else:
            self._state = FINISHED
