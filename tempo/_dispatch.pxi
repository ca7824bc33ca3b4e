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

# A blocked main thread wakes this often to let Ctrl-C through; without the
# GIL every blocked thread does (see Core._wait).
cdef double SIGNAL_CHECK = 0.05

cdef unsigned long _main_thread = 0

# A function with bytecode: calling it makes the interpreter handle what is
# pending for this thread (see Core._wait).
_run_bytecode = eval("lambda: None")

_INIT_ONCE = "a Dispatcher is initialised once: __init__ cannot be called again"

# A C variable, not a module global: enqueue compares its timeout with it on
# every call, and a global is a dict lookup each time without the GIL.
cdef object _NO_WAIT = 0

# Threads blocked waiting for a batch (get_batch, batches()), by ident, with
# the dispatcher each one waits on. Only such a thread is idle at interpreter
# exit (tempo._exit): one waiting in enqueue, flush or shutdown is working.
# The epoch changes whenever a thread starts or stops such a wait, so a
# decision taken on a snapshot can be checked against it atomically.
#
# Without the GIL the epoch and the count of changes under way live under
# _waits_lock, and a change bumps the epoch before and after it touches the
# dict (the dict's own operations are atomic; they are not made under the
# lock, since they may allocate). A snapshot or a decision is valid only with
# no change under way and the epoch unchanged: a seqlock.
cdef dict _batch_waits = {}
cdef uint64_t _batch_wait_epoch = 0
cdef int _batch_waits_changing = 0
cdef tempo_lock_t _waits_lock


cdef void _waits_change(int step) noexcept:
    """+1 before a change to _batch_waits, -1 after it."""
    global _batch_wait_epoch, _batch_waits_changing
    tempo_lock(&_waits_lock)
    _batch_waits_changing += step
    _batch_wait_epoch += 1
    tempo_unlock(&_waits_lock)


def _batch_waiters():
    """(epoch, {thread ident: dispatcher}) for the threads waiting for a batch now."""
    cdef uint64_t epoch
    cdef int changing
    cdef bint same
    while True:
        tempo_lock(&_waits_lock)
        epoch = _batch_wait_epoch
        changing = _batch_waits_changing
        tempo_unlock(&_waits_lock)
        if changing:
            with nogil:  # let the thread that is changing it finish
                sched_yield()
            continue
        waits = dict(_batch_waits)
        tempo_lock(&_waits_lock)
        same = epoch == _batch_wait_epoch
        tempo_unlock(&_waits_lock)
        if same:
            return epoch, waits


def _forget_threads():
    """In a forked child: the parent's threads are gone, and so are their waits."""
    global _batch_wait_epoch, _batch_waits_changing
    tempo_lock_reset(&_waits_lock)
    _batch_waits.clear()
    _batch_waits_changing = 0
    _batch_wait_epoch += 1


def _close_if_idle(uint64_t epoch, dispatchers):
    """Begin a graceful shutdown of each of ``dispatchers`` (new payloads are
    refused, the open batch is sealed, consumers may take batches even if it
    never started), provided no thread started or stopped waiting for a batch
    since ``epoch``. True if it did. No Python code runs in between."""
    cdef Core d
    cdef bint idle
    # Locked as _finish_if_idle is: the registry's lock, then each dispatcher's.
    cdef list targets = [d for d in dict.fromkeys(dispatchers)]
    tempo_lock(&_waits_lock)
    idle = epoch == _batch_wait_epoch and _batch_waits_changing == 0
    if idle:
        for d in targets:
            tempo_lock(&d._lock)
            if d._state == NEW or d._state == RUNNING:  # as _begin_shutdown does
                tempo_store_int(&d._state, SHUTTING_DOWN)
                d._seal()
                d._wake_everyone()
            tempo_unlock(&d._lock)
    tempo_unlock(&_waits_lock)
    return idle


def _finish_if_idle(uint64_t epoch, dispatchers):
    """Finish each of ``dispatchers`` at once (their waiting consumers get
    ``Stopped``), provided no thread started or stopped waiting for a batch
    since ``epoch`` and none of them has a payload left to hand out. True if
    it did. Nothing here runs Python code, so no thread moves in between."""
    cdef Core d
    cdef bint idle
    # Each dispatcher once (its lock is not reentrant), checked before locking.
    cdef list targets = [d for d in dict.fromkeys(dispatchers)]
    # Without the GIL: every dispatcher's lock at once, under _waits_lock (the
    # only place holding more than one, so no order among them matters).
    tempo_lock(&_waits_lock)
    idle = epoch == _batch_wait_epoch and _batch_waits_changing == 0
    if idle:
        for d in targets:
            tempo_lock(&d._lock)
        for d in targets:
            if d._state != FINISHED and d._arena.deliver_slot != d._arena.head_slot:
                idle = False
        if idle:
            for d in targets:
                if d._state != FINISHED:
                    tempo_store_int(&d._state, FINISHED)
                    d._wake_everyone()
        for d in targets:
            tempo_unlock(&d._lock)
    tempo_unlock(&_waits_lock)
    return idle


def _age(double since):
    """Seconds from ``since`` (tempo's monotonic clock) to now; 0.0 for ``inf``."""
    return 0.0 if since == INFINITY else max(0.0, tempo_monotonic() - since)


def _set_main_thread(unsigned long ident):
    """Record the main thread's ident (at import, and again after fork)."""
    global _main_thread
    _main_thread = ident


# How many times in all _Uninterrupted runs its hook: more than anyone presses
# Ctrl-C during one fork, and still an end under a storm of signals.
cdef int _HOOK_RUNS = 8


cdef class _Uninterrupted:
    """``run`` is a fork hook (``os.register_at_fork``) that an interrupt
    cannot cut short. In the parent, ``fn`` runs again whenever an exception
    escapes it (a signal handler's ``KeyboardInterrupt`` may be raised at
    any bytecode, even before or between its own try blocks), up to
    ``_HOOK_RUNS`` times; ``fn`` must be harmless to run again (the core's
    fork hooks are no-ops for a fork they already began or ended). In the
    child (``registry`` given) see ``run``. The first exception that escaped
    is raised at the end. Called from C, this runs no bytecode of its own,
    so no signal handler runs outside ``fn``."""

    cdef object _fn
    cdef object _registry

    def __init__(self, fn, registry=None):
        self._fn = fn
        self._registry = registry

    def run(self):
        """Run the hook until it gets through (see the class)."""
        cdef int runs = 0
        first = None
        if self._registry is not None:
            # The child's hook (``registry``: the live dispatchers' WeakSet)
            # is not harmless to run again (it starts threads), so it runs
            # once; if anything escaped it, every dispatcher it did not
            # reset is reset here. One it missed would go on writing the
            # buffer it shares with the parent.
            try:
                self._fn()
            except BaseException as exc:
                first = exc
            if first is not None:
                while runs < _HOOK_RUNS:
                    runs += 1
                    try:
                        _reset_the_rest(self._registry)
                        break
                    except BaseException:
                        pass
        else:
            while runs < _HOOK_RUNS:
                runs += 1
                try:
                    self._fn()
                    break
                except BaseException as exc:
                    if first is None:
                        first = exc
        if first is not None:
            raise first


cdef int _reset_the_rest(object registry) except -1:
    """In a forked child: reset each dispatcher of ``registry`` not reset in
    this process yet, as tempo's child hook does (and start its driver if it
    runs). Its own failures were reported by the hook or are not
    reported: what matters here is that none keeps the parent's buffer."""
    cdef Core d
    cdef long pid = getpid()
    for ref in registry.data.copy():
        obj = ref()
        if not isinstance(obj, Core):
            continue
        d = <Core>obj
        if d._pid == pid or d._arena is None:
            continue
        running = tempo_load_int(&d._state) == RUNNING
        try:
            d._reset_after_fork(running)
        except Exception:
            pass
        if running and tempo_load_int(&d._state) == RUNNING:
            try:
                d._spawn_driver()
            except Exception:
                pass
    return 0


cpdef double _timeout_seconds(object timeout) except? -1.0:
    """Validate a ``timeout=`` argument: seconds, ``inf`` for None.

    Any finite timeout >= 0 is accepted; one too large for the clock (an int
    beyond a double, or more than TEMPO_FOREVER seconds) waits as None does.
    """
    if timeout is None:
        return INFINITY
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__!r}")
    cdef double seconds
    try:
        seconds = timeout
    except OverflowError:
        seconds = INFINITY if timeout > 0 else -INFINITY
    if isnan(seconds) or seconds < 0:
        raise ConfigError("timeout must be a non-negative number of seconds or None")
    return INFINITY if seconds >= TEMPO_FOREVER else seconds


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
        self._fork_threads = set()
        self._sync_ready = False
        self._deadline = INFINITY
        self._driver_until = -INFINITY
        self._init_sync()

    def __init__(self, double interval, Py_ssize_t max_batch_bytes,
                 Py_ssize_t max_buffered_bytes, Py_ssize_t max_batch_items=0,
                 bint prefault=False):
        if self._arena is not None:
            # A new arena would silently drop what the old one buffers.
            raise TypeError(_INIT_ONCE)
        self._arena = Arena(max_buffered_bytes, prefault)
        self._pid = getpid()
        self._prefault = prefault
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

    # No embedded signature: Cython's names the private class and the
    # default's sentinel; inspect.signature() reads the real one.
    @cython.embedsignature(False)
    # A builtin method, not a Cython function: calling a bound Cython
    # function makes the interpreter take a reference to the dispatcher and
    # to the function on every call, atomic writes to objects all producers
    # share once the GIL is gone. A builtin bound method is called with the
    # dispatcher as is. Its signature is the docstring's first line (the
    # "--" line must start at column 0 for CPython to read it).
    @cython.binding(False)
    def enqueue(self, payload, timeout=_NO_WAIT):
        """enqueue($self, /, payload, timeout=0)
--

        Copy ``payload`` into the dispatcher's arena.

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
        # half-apply. The default and None skip the check and the clock (one
        # pointer compare each): a producer that waits for room with
        # timeout=None does not read the clock per payload.
        if timeout is _NO_WAIT:
            deadline = 0.0
        elif timeout is None:
            deadline = INFINITY
        else:
            deadline = _deadline_after(timeout)
        cdef int rc
        cdef Refusal full
        if PyBytes_CheckExact(payload):
            # bytes that fit now are admitted right here: going through
            # _enqueue_one costs a tenth of the whole call. A refusal is
            # looked at again there (admission changes nothing when it refuses).
            rc = self._admit(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), &full)
            if rc == ADMIT_OK:
                return
        rc = self._enqueue_one(payload, deadline, &full)
        if rc != ADMIT_OK:
            self._reject(rc, &full)

    # No embedded signature: Cython's names the private class and the
    # default's sentinel; inspect.signature() reads the real one.
    @cython.embedsignature(False)
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
        cdef Refusal full  # unread: enqueue_many only counts a refusal for want of room
        cdef PyObject *item
        cdef object payload
        # Without the GIL another thread may change a list under us, so its
        # items are only borrowed safely through its iterator.
        cdef bint is_list = PyList_CheckExact(payloads) and not TEMPO_FREE_THREADED
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
                        rc = self._admit(_bytes_data(item), _bytes_size(item), &full)
                        if rc == ADMIT_OK:
                            n += 1
                            continue
                    # A reference of our own: a wait releases the GIL, and
                    # another thread may take the payload out of the list.
                    payload = <object>item
                    rc = self._enqueue_one(payload, deadline, &full)
                    if rc != ADMIT_OK:
                        break
                    n += 1
            else:
                for payload in payloads:
                    rc = self._enqueue_one(payload, deadline, &full)
                    if rc != ADMIT_OK:
                        break
                    n += 1
            if rc == ADMIT_FULL:
                tempo_lock(&self._lock)
                self._rejected_full += 1
                tempo_unlock(&self._lock)
            elif rc != ADMIT_OK:
                self._reject(rc, &full)
        except BaseException as exc:
            _set_accepted(exc, n)
            raise
        return n

    @cython.final
    cdef int _enqueue_one(self, object payload, double deadline, Refusal *full) except -1:
        """Admit one payload, waiting for space until ``deadline``; ADMIT_*."""
        cdef Py_buffer view
        cdef int rc
        if PyBytes_CheckExact(payload):
            # bytes are immutable and the caller holds them: no buffer export.
            rc = self._admit(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), full)
            if rc == ADMIT_FULL and deadline > 0.0:
                rc = self._admit_waiting(PyBytes_AS_STRING(payload),
                                         PyBytes_GET_SIZE(payload), deadline, full)
            return rc
        _get_payload(payload, &view)
        try:
            rc = self._admit(<const char *>view.buf, view.len, full)
            if rc == ADMIT_FULL and deadline > 0.0:
                rc = self._admit_waiting(<const char *>view.buf, view.len, deadline, full)
        finally:
            PyBuffer_Release(&view)
        return rc

    def _try_enqueue(self, payload, bint last):
        """``enqueue`` without waiting, for ``aenqueue``: True if accepted,
        False if the queue is full (then, if ``last``, counted and raised as
        ``QueueFull``); other refusals raise as ``enqueue`` does."""
        self._check()
        cdef Refusal full
        cdef int rc = self._enqueue_one(payload, 0.0, &full)
        if rc == ADMIT_OK:
            return True
        if rc == ADMIT_FULL and not last:
            return False
        self._reject(rc, &full)

    @cython.final
    cdef int _admit(self, const char *data, Py_ssize_t n, Refusal *full) noexcept:
        cdef int signals = 0
        tempo_lock(&self._lock)
        cdef int rc = self._admit_locked(data, n, full, &signals)
        tempo_unlock(&self._lock)
        while signals:
            self._signal_ready()
            signals -= 1
        return rc

    @cython.final
    cdef int _admit_locked(self, const char *data, Py_ssize_t n, Refusal *full,
                           int *signals) noexcept:
        # A seal here leaves the consumer's wake-up to the caller, after it
        # unlocks (signals: how many to wake, _signal_ready): waking a thread
        # is a system call of microseconds, which the producers queued on
        # the lock behind this one would otherwise wait out, and then yield
        # or park.
        # The copy is made under the lock: for the payloads where parallel
        # producers pay off (small ones, bound by the interpreter, not by
        # memory) it is a few nanoseconds; see docs/internals.md.
        if self._state >= SHUTTING_DOWN:
            return ADMIT_STOPPED if self._state == FINISHED else ADMIT_SHUTTING_DOWN
        if n > self._max_buffered:
            return ADMIT_TOO_LARGE
        # self._arena, never a local: a local Arena is a reference taken and
        # dropped per payload, an atomic write to the arena object's shared
        # count without the GIL, which parallel producers fight over.
        if not self._arena.has_room(n):
            full.size = n
            full.owned = self._arena.head_byte - self._arena.tail_byte
            full.items = self._arena.head_slot - self._arena.tail_slot
            return ADMIT_FULL
        if (self._max_batch and self._open_bytes + n > self._max_batch
                and self._arena.head_slot != self._arena.sealed_slot):
            signals[0] += self._seal_deferred()
        cdef double now
        if self._arena.head_slot == self._arena.sealed_slot:
            # The first payload of a batch starts its clock.
            now = tempo_monotonic()
            self._arena.opened[self._arena.head_slot & self._arena.mask] = now
            self._deadline = now + self._interval
            if self._deadline < self._driver_until:
                self._notify_driver()
        self._arena.push(data, n)
        if self._arena.head_byte >= self._arena.populate_at:
            self._notify_driver()  # pages ahead are to be faulted in
        self._open_bytes += n
        self._enqueued += 1
        self._enqueued_bytes += <uint64_t>n
        if ((self._max_batch and self._open_bytes >= self._max_batch)
                or (self._batch_items and self._arena.head_slot - self._arena.sealed_slot >= self._batch_items)):
            signals[0] += self._seal_deferred()
        return ADMIT_OK

    cdef int _admit_waiting(self, const char *data, Py_ssize_t n, double deadline,
                            Refusal *full) except -1:
        # The payload's buffer stays exported (or, for bytes, referenced by
        # the caller) while we wait without the GIL.
        # Looking and starting to wait are one locked region, so a release
        # between them cannot go unnoticed.
        cdef int signals = 0
        tempo_lock(&self._lock)
        cdef int rc = self._admit_locked(data, n, full, &signals)
        while rc == ADMIT_FULL and tempo_monotonic() < deadline:
            self._wait(&self._state_cond, &self._state_epoch, &self._state_waiters, deadline)
            tempo_lock(&self._lock)
            rc = self._admit_locked(data, n, full, &signals)
        tempo_unlock(&self._lock)
        while signals:
            self._signal_ready()
            signals -= 1
        return rc

    cdef int _reject(self, int rc, Refusal *full) except -1:
        if rc == ADMIT_FULL:
            raise self._queue_full(full)
        if rc == ADMIT_TOO_LARGE:
            tempo_lock(&self._lock)
            self._rejected_too_large += 1
            tempo_unlock(&self._lock)
            raise PayloadTooLarge()
        if rc == ADMIT_SHUTTING_DOWN:
            raise ShuttingDown()
        raise Stopped()

    cdef object _queue_full(self, Refusal *full):
        """Count a refusal for want of room; the QueueFull that says which
        limit was hit (the numbers are those of this refusal, ``full``)."""
        tempo_lock(&self._lock)
        self._rejected_full += 1
        tempo_unlock(&self._lock)
        cdef Py_ssize_t size = full.size
        cdef int64_t owned = full.owned
        cdef int64_t items = full.items
        if owned + size > self._max_buffered:
            return QueueFull(f"tempo: dispatcher queue full: payload bytes: {owned} owned + "
                             f"a payload of {size} > max_buffered_bytes={self._max_buffered}")
        return QueueFull(f"tempo: dispatcher queue full: item slots: {items} items owned, the "
                         f"item capacity (stats().max_buffered_items); {owned} of "
                         f"max_buffered_bytes={self._max_buffered} bytes owned")

    cdef void _seal(self) noexcept:
        if self._seal_deferred():
            self._signal_ready()

    cdef bint _seal_deferred(self) noexcept:
        """Seal the open batch; True if a consumer waits for it, which the
        caller wakes with _signal_ready, after unlocking if it can."""
        cdef int i
        if not self._arena.seal():
            return False
        self._waiting += 1
        self._open_bytes = 0
        self._deadline = INFINITY
        if self._state == NEW:
            return False
        for i in range(self._n_wake_fds):
            tempo_wake_fd(self._wake_fds[i])
        if self._ready_waiters:
            return True
        tempo_bump_epoch(&self._ready_epoch)
        return False

    # No embedded signature: Cython's names the private class and the
    # default's sentinel; inspect.signature() reads the real one.
    @cython.embedsignature(False)
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
            tempo_lock(&self._lock)
            if self._handing_out():
                self._fill(batch)
                tempo_unlock(&self._lock)
                return batch
            if self._state == FINISHED:
                tempo_unlock(&self._lock)
                raise Stopped()
            if tempo_monotonic() >= deadline:
                tempo_unlock(&self._lock)
                raise TimeoutError("tempo: no batch ready in time")
            self._wait(&self._ready_cond, &self._ready_epoch, &self._ready_waiters, deadline)

    def _try_get_batch(self):
        """The next batch, or None if none is ready; ``Stopped`` if finished."""
        self._check()
        cdef Batch batch = Batch.__new__(Batch)
        tempo_lock(&self._lock)
        if self._handing_out():
            self._fill(batch)
            tempo_unlock(&self._lock)
            return batch
        cdef bint finished = self._state == FINISHED
        tempo_unlock(&self._lock)
        if finished:
            raise Stopped()
        return None

    cdef inline bint _handing_out(self) noexcept:
        # A sealed batch is ready to go, and may go now: not before start(),
        # nor while a fork is under way (see _before_fork).
        return (self._state != NEW and self._forks == 0
                and self._arena.deliver_slot < self._arena.sealed_slot)

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
        batch._seq = self._batches
        self._items += <uint64_t>n
        if self._state_waiters or self._n_wake_fds:
            self._notify_state()
        return batch

    # -- waking and waiting --------------------------------------------------

    cdef void _notify_ready(self, bint everyone) noexcept:
        cdef int i
        if self._ready_waiters:
            pthread_mutex_lock(&self._mutex)
            tempo_bump_epoch(&self._ready_epoch)
            if everyone:
                pthread_cond_broadcast(&self._ready_cond)
            else:
                pthread_cond_signal(&self._ready_cond)
            pthread_mutex_unlock(&self._mutex)
        else:
            tempo_bump_epoch(&self._ready_epoch)
        for i in range(self._n_wake_fds):
            tempo_wake_fd(self._wake_fds[i])

    cdef void _signal_ready(self) noexcept:
        # Wakes one consumer for a batch sealed by _seal_deferred, with or
        # without the lock. No wake-up is lost: that consumer counted itself
        # in _ready_waiters and read the epoch under the lock before the
        # seal (so before this bump), and it checks the epoch under the
        # mutex before it sleeps.
        pthread_mutex_lock(&self._mutex)
        tempo_bump_epoch(&self._ready_epoch)
        pthread_cond_signal(&self._ready_cond)
        pthread_mutex_unlock(&self._mutex)

    cdef void _notify_state(self) noexcept:
        cdef int i
        if self._state_waiters:
            pthread_mutex_lock(&self._mutex)
            tempo_bump_epoch(&self._state_epoch)
            pthread_cond_broadcast(&self._state_cond)
            pthread_mutex_unlock(&self._mutex)
        else:
            tempo_bump_epoch(&self._state_epoch)
        for i in range(self._n_wake_fds):
            tempo_wake_fd(self._wake_fds[i])

    cdef void _notify_driver(self) noexcept:
        if self._driver_waiters:
            pthread_mutex_lock(&self._mutex)
            tempo_bump_epoch(&self._driver_epoch)
            pthread_cond_signal(&self._driver_cond)
            pthread_mutex_unlock(&self._mutex)
        else:
            tempo_bump_epoch(&self._driver_epoch)

    cdef void _wake_everyone(self) noexcept:
        self._notify_ready(True)
        self._notify_state()
        self._notify_driver()

    cdef int _wait(self, pthread_cond_t *cond, uint64_t *epoch, int *waiters,
                   double deadline) except -1:
        """Block without the GIL until notified or the deadline passes.

        Entered with the lock held (the caller has just seen its condition
        false), returns with it released. Spurious returns are allowed:
        callers re-check their condition. In the main thread the wait is
        sliced so Ctrl-C is seen promptly; without the GIL in every thread
        (see below).
        """
        cdef uint64_t seen = tempo_load_epoch(epoch)
        cdef bint main = PyThread_get_thread_ident() == _main_thread
        cdef double until = deadline
        cdef bint for_batch = cond == &self._ready_cond
        cdef object ident, outer
        if main or TEMPO_FREE_THREADED:
            until = min(deadline, tempo_monotonic() + SIGNAL_CHECK)
        # Counted before the GIL goes: a notifier that sees it takes the
        # mutex, so its epoch bump cannot slip between our check and wait
        # (not even while the record of batch waits runs Python code).
        waiters[0] += 1
        tempo_unlock(&self._lock)
        if for_batch:
            ident = PyThread_get_thread_ident()
            # Not None only for a wait nested in another of this thread's
            # (a finalizer that ran inside it): put that one back after.
            outer = _batch_waits.get(ident)
            _waits_change(1)
            _batch_waits[ident] = self
            _waits_change(-1)
        with nogil:
            pthread_mutex_lock(&self._mutex)
            tempo_cond_wait_until(cond, &self._mutex, epoch, seen, until)
            pthread_mutex_unlock(&self._mutex)
        tempo_lock(&self._lock)
        waiters[0] -= 1
        cdef bint pass_on = tempo_load_epoch(epoch) != seen and waiters[0] != 0
        tempo_unlock(&self._lock)
        if for_batch:
            _waits_change(1)
            if outer is None:
                _batch_waits.pop(ident, None)
            else:
                _batch_waits[ident] = outer
            _waits_change(-1)
        if TEMPO_FREE_THREADED:
            # Without the GIL, an object this thread made and another thread
            # dropped (a batch's view handed to a worker) is freed only when
            # this thread next runs bytecode (biased reference counting). A
            # view that pins the arena could then wait for ever on a thread
            # that waits for the arena: so run some, once per slice.
            _run_bytecode()
        if main and _check_signals() < 0:
            if pass_on:
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
        tempo_lock(&self._lock)
        cdef int was = self._state
        if was == NEW:
            tempo_store_int(&self._state, RUNNING)
            if self._arena.deliver_slot < self._arena.sealed_slot:
                self._notify_ready(True)
        tempo_unlock(&self._lock)
        if was == FINISHED:
            raise Stopped()
        return was == NEW

    def _drive(self, double longest):
        """One step of the driver thread: seal the open batch if its interval
        has run out, else sleep until it does (``longest`` seconds at most) or
        a new batch opens. False once the dispatcher is finished."""
        self._check()
        cdef Arena arena = self._arena
        cdef int64_t at
        cdef int err
        tempo_lock(&self._lock)
        if self._state != RUNNING and self._state != SHUTTING_DOWN:
            tempo_unlock(&self._lock)
            return False
        if self._deadline <= tempo_monotonic():
            self._seal()
            tempo_unlock(&self._lock)
            return True
        if arena.populate_chunk():
            at = arena.populated
            tempo_unlock(&self._lock)
            # `arena` keeps the mapping alive meanwhile, even if a fork
            # handler replaces self._arena. At most POPULATE_AHEAD bytes per
            # call, so a seal that falls due waits for one burst at most.
            with nogil:
                at = tempo_populate_ahead(arena.base, arena.size, &arena.head_byte, at,
                                          POPULATE_AHEAD, POPULATE_CHUNK, POPULATE_AHEAD, &err)
            tempo_lock(&self._lock)
            arena.populated_to(at, err)
            tempo_unlock(&self._lock)
            return True
        self._driver_until = self._deadline
        self._wait(&self._driver_cond, &self._driver_epoch, &self._driver_waiters,
                   min(self._deadline, tempo_monotonic() + longest))
        tempo_lock(&self._lock)
        self._driver_until = -INFINITY
        tempo_unlock(&self._lock)
        return True

    def _seal_now(self):
        """Seal the open batch; return the slot every sealed batch ends before."""
        self._check()
        tempo_lock(&self._lock)
        self._seal()
        cdef int64_t sealed = self._arena.sealed_slot
        tempo_unlock(&self._lock)
        return sealed

    def _begin_shutdown(self):
        """Refuse new payloads and seal; False if already finished."""
        self._check()
        tempo_lock(&self._lock)
        cdef bint finished = self._state == FINISHED
        if not finished and self._state != SHUTTING_DOWN:
            tempo_store_int(&self._state, SHUTTING_DOWN)
            self._seal()
            # Consumers of a never-started dispatcher may take batches now;
            # waiting enqueues must learn they will never get in.
            self._wake_everyone()
        tempo_unlock(&self._lock)
        return not finished

    def _wait_delivered(self, int64_t target, timeout):
        """Wait until every batch before slot ``target`` was handed out.

        Returns 0 when they were, 1 if ``stop()`` came first, 2 on timeout.
        """
        self._check()
        cdef double deadline = _deadline_after(timeout)
        cdef int outcome
        while True:
            tempo_lock(&self._lock)
            if self._state == FINISHED and self._stopped:
                outcome = 1
            elif self._arena.deliver_slot >= target:
                outcome = 0
            elif self._state == FINISHED:
                outcome = 1
            elif tempo_monotonic() >= deadline:
                outcome = 2
            else:
                self._wait(&self._state_cond, &self._state_epoch, &self._state_waiters, deadline)
                continue
            tempo_unlock(&self._lock)
            return outcome

    def _wait_returned(self, timeout):
        """Wait until every batch handed out is back (released, no view of it
        left). True if they all were within ``timeout`` seconds."""
        self._check()
        cdef double deadline = _deadline_after(timeout)
        while True:
            tempo_lock(&self._lock)
            if self._arena.tail_slot >= self._arena.deliver_slot:
                tempo_unlock(&self._lock)
                return True
            if tempo_monotonic() >= deadline:
                tempo_unlock(&self._lock)
                return False
            self._wait(&self._state_cond, &self._state_epoch, &self._state_waiters, deadline)

    def _finish(self):
        """SHUTTING_DOWN -> FINISHED after a complete drain."""
        tempo_lock(&self._lock)
        if self._state != FINISHED:
            tempo_store_int(&self._state, FINISHED)
            self._wake_everyone()
        tempo_unlock(&self._lock)

    def _stop(self):
        """Drop everything not handed out and finish. Returns items dropped."""
        self._check()
        cdef Py_ssize_t dropped = 0
        tempo_lock(&self._lock)
        # Finished means nothing is left undelivered: stop twice is fine.
        if self._state != FINISHED:
            dropped = self._arena.drop_undelivered()
            self._dropped += <uint64_t>dropped
            self._waiting = 0
            self._open_bytes = 0
            self._deadline = INFINITY
            self._stopped = True
            tempo_store_int(&self._state, FINISHED)
            self._wake_everyone()
        tempo_unlock(&self._lock)
        return dropped

    def _state_name(self):
        cdef int state = tempo_load_int(&self._state)  # without the lock: see _mirror.h
        return ("new", "running", "shutting down", "finished")[state]

    def _counters(self):
        """The counters behind ``stats()``; 12th, when the oldest payload not
        handed out arrived (``_age`` turns it into ``oldest_wait``), ``inf``
        if none; then the items owned and the item capacity. Unchanged while
        nothing happens (exit compares snapshots)."""
        self._check()
        cdef Arena arena = self._arena
        cdef uint64_t c[7]
        cdef int64_t owned, items
        cdef Py_ssize_t waiting, held
        cdef double oldest = INFINITY
        # Copied under the lock, converted to Python objects after: one
        # consistent snapshot, no allocation while holding it.
        tempo_lock(&self._lock)
        c[0] = self._enqueued
        c[1] = self._enqueued_bytes
        c[2] = self._rejected_full
        c[3] = self._rejected_too_large
        c[4] = self._batches
        c[5] = self._items
        c[6] = self._dropped
        owned = arena.head_byte - arena.tail_byte
        items = arena.head_slot - arena.tail_slot
        waiting = self._waiting
        held = arena.held
        if arena.deliver_slot < arena.head_slot:
            # The oldest payload not handed out opened the next batch to go.
            oldest = arena.opened[arena.deliver_slot & arena.mask]
        tempo_unlock(&self._lock)
        return (c[0], c[1], c[2], c[3], c[4], c[5], c[6], owned, self._max_buffered,
                waiting, held, oldest, items, arena.nslots - 1)

    def _waiters(self):
        """(threads waiting for a batch, threads waiting on hand-offs/space).

        For tests that must know a thread is blocked before acting."""
        tempo_lock(&self._lock)
        cdef int ready = self._ready_waiters
        cdef int state = self._state_waiters
        tempo_unlock(&self._lock)
        return ready, state

    @property
    def _populated(self):
        """Bytes of the arena faulted in ahead of the writer so far (tests)."""
        self._check()
        tempo_lock(&self._lock)
        cdef int64_t populated = self._arena.populated
        tempo_unlock(&self._lock)
        return populated

    @property
    def _max_items(self):
        self._check()
        return self._arena.nslots - 1

    # -- asyncio ----------------------------------------------------------------

    def _add_wake_fd(self, int fd):
        tempo_lock(&self._lock)
        cdef bint full = self._n_wake_fds >= 16
        if not full:
            self._wake_fds[self._n_wake_fds] = fd
            self._n_wake_fds += 1
        tempo_unlock(&self._lock)
        if full:
            raise RuntimeError("tempo: at most 16 event loops may wait on one dispatcher")

    def _remove_wake_fd(self, int fd):
        cdef int i
        tempo_lock(&self._lock)
        for i in range(self._n_wake_fds):
            if self._wake_fds[i] == fd:
                self._n_wake_fds -= 1
                self._wake_fds[i] = self._wake_fds[self._n_wake_fds]
                break
        tempo_unlock(&self._lock)

    # -- fork -------------------------------------------------------------------
    #
    # Guarantees (docs/fork-and-exit.md, "os.fork()"): a batch or view held
    # when fork() runs shows exactly its bytes in both processes ever after.
    # The arena is shared memory (the mirror needs it), so the child must not
    # read the held bytes from it once the parent may reuse them, which it
    # may the moment fork() returns. So the parent copies them *before* the
    # fork (_before_fork, into malloc'd memory, which the child inherits as
    # it was) and the child puts that copy in place of the shared memory
    # (_reset_after_fork). From the copy to the fork, nothing is handed out
    # (_forks > 0: the forks under way, one per forking thread, in
    # _fork_threads), so no batch reaches the child without its bytes in the
    # copy; releases and enqueues go on (they never change a byte a held
    # batch shows). The lock is not held across the fork: with the GIL it is
    # nothing (the before-fork hooks run Python code, which may switch
    # threads), and holding it would deadlock a thread that takes the
    # import lock and then enqueues.

    def _before_fork(self):
        """In the parent, just before ``fork()``: copy the bytes of the
        batches handed out and not back, and hand nothing out until
        ``_after_fork_in_parent`` runs in the same thread. A fork is known by
        the thread that forks (both hooks of one fork run in it, and a thread
        forks once at a time), so running this again before that is a no-op:
        a hook an interrupt cut short can be run again. Nested forks (from
        several threads at once) share the first copy: nothing was handed out
        since."""
        if self._arena is None:
            return
        # Recomputed by the after-fork hook, not handed to it: nothing is lost
        # if an interrupt lands between this hook's return and its caller.
        cdef object ident = PyThread_get_thread_ident()
        # Under the lock only an int is looked up in, added to or removed
        # from _fork_threads (made with the dispatcher, never replaced but in
        # a forked child): no Python code runs and no collection can start.
        tempo_lock(&self._lock)
        try:
            if ident not in self._fork_threads:
                self._fork_threads.add(ident)
                if self._forks == 0:
                    self._arena.snapshot_held()
                self._forks += 1
        finally:
            tempo_unlock(&self._lock)

    def _after_fork_in_parent(self):
        """In the parent, once ``fork()`` returned (or failed): end this
        thread's fork, at most once (a no-op if its ``_before_fork`` did not
        run here, or this already ran), so another thread's fork still under
        way keeps nothing handed out. Once none is, drop the copy and wake
        the consumers that waited meanwhile."""
        if self._arena is None:
            return
        cdef object ident = PyThread_get_thread_ident()
        tempo_lock(&self._lock)
        try:
            if ident in self._fork_threads:
                self._fork_threads.discard(ident)
                self._forks -= 1
                if self._forks == 0:
                    self._arena.drop_snapshot()
                    if self._handing_out():
                        self._notify_ready(True)
        finally:
            tempo_unlock(&self._lock)

    def _reset_after_fork(self, bint running):
        """In a forked child: become a fresh, empty dispatcher, same config.

        The old arena's memory is shared with the parent, which goes on
        reusing it; batches this process still holds get a private copy of
        their bytes as they were at the fork (made by the parent's
        ``_before_fork``), so they keep showing what they showed. If the
        fresh arena cannot be made, the dispatcher is finished here
        (``Stopped``) and the error raised: it never writes to the parent's
        memory. If there was no copy (no memory for it in the parent), the
        held bytes are copied from the shared memory now, and a
        ``RuntimeError`` says they may show what the parent wrote since.
        """
        self._check()
        # Before anything that may raise: a reset that failed is not redone.
        self._pid = getpid()
        cdef Arena old = self._arena
        cdef int64_t live_start, live_end
        # Ours now: the child's copy of the parent's malloc'd copy.
        cdef char *snapshot = old.fork_copy
        cdef str late = None  # why the held bytes are copied only now
        old.fork_copy = NULL
        if self._forks > 0:
            live_start = old.fork_start
            live_end = live_start + old.fork_len
            if snapshot == NULL and live_end > live_start:
                late = "no memory for the copy before it"
        else:
            # Forked without our before-fork hook (or by a thread that ran it
            # before this dispatcher existed): the batches handed out.
            live_start = old.tail_byte
            live_end = live_start
            if old.deliver_slot > old.tail_slot:
                live_end = old.item_end(old.deliver_slot - 1)
            if live_end > live_start:
                late = "the fork ran without tempo's before-fork hook"
        self._forks = 0
        old.fork_len = 0
        # Another parent thread may have held these at fork: start afresh.
        tempo_lock_reset(&self._lock)
        self._init_sync()
        # A new set, not the old one cleared: a parent thread may have been
        # in it at fork (its lock on a free-threaded build held for ever);
        # made after the lock is reset, since a collection may take it.
        self._fork_threads = set()
        self._ready_epoch = self._state_epoch = self._driver_epoch = 0
        self._enqueued = self._enqueued_bytes = 0
        self._rejected_full = self._rejected_too_large = 0
        self._batches = self._items = self._dropped = 0
        self._waiting = 0
        self._open_bytes = 0
        self._deadline = INFINITY
        self._driver_until = -INFINITY
        self._stopped = False
        cdef int failed
        try:
            self._arena = Arena(self._max_buffered, self._prefault)
        except BaseException:
            # The parent's payloads are not this process's to deliver.
            old.drop_undelivered()
            self._state = FINISHED
            self._stopped = True
            # Nothing writes to the old arena now; make it private as well,
            # so held batches stop seeing the parent's writes.
            tempo_mirror_privatize(old.base, <size_t>old.size,
                                   <size_t>(live_start % old.size),
                                   <size_t>(live_end - live_start), snapshot)
            free(snapshot)
            raise
        if self._state == NEW:
            pass
        elif running:
            self._state = RUNNING
        else:
            self._state = FINISHED
        if live_end > live_start:
            failed = tempo_mirror_privatize(old.base, <size_t>old.size,
                                            <size_t>(live_start % old.size),
                                            <size_t>(live_end - live_start), snapshot)
            free(snapshot)
            if failed:
                PyErr_SetFromErrno(OSError)
        else:
            free(snapshot)
        if late is not None:
            raise RuntimeError(
                f"tempo: the batches held across the fork were copied only after it ({late}); "
                "they may show bytes the parent wrote since")
