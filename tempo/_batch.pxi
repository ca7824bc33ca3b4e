# Batch: a sealed run of items handed to one consumer, read through zero-copy
# memoryviews into the arena.
#
# The batch is itself the buffer exporter of its items' views. Every view
# (and every slice of it: CPython's managed buffer shares one export among
# them) holds the batch alive and counts in _views, so the region goes back
# to the arena exactly when the consumer has released the batch and the last
# view has died.


cdef int _plain_file_fd(object target) except -2:
    """The fd of an io.FileIO, or of a buffered file over one (flushed
    first), whose class writes as io does; else -1: write() must be used."""
    cdef type cls = type(target)
    if isinstance(target, _io.FileIO) and cls.write is _io.FileIO.write:
        return target.fileno()
    if (isinstance(target, (_io.BufferedWriter, _io.BufferedRandom))
            and cls.write in (_io.BufferedWriter.write, _io.BufferedRandom.write)):
        raw = getattr(target, "raw", None)
        if isinstance(raw, _io.FileIO) and type(raw).write is _io.FileIO.write:
            target.flush()
            return raw.fileno()
    return -1


# The most buffers one sendmsg()/writev() takes (1024 on Linux): past it,
# sock.sendmsg(batch) fails with EMSGSIZE and os.writev(fd, batch) with
# EINVAL. sendall/writeall send the batch as one region, with no limit.
IOV_MAX = tempo_iov_max()

# The format and the one stride of an offsets export (contiguous int64).
cdef const char *_INT64_FORMAT = "q"
cdef Py_ssize_t _INT64_STRIDE = sizeof(int64_t)


cdef int _wait_writable(int fd, double deadline, bint main) except -1:
    """Wait for room to write on fd: 1 once writable, 0 to look again
    (signals checked); TimeoutError once `deadline` passes. The main thread
    waits in slices: a Ctrl-C may be delivered to another thread and never
    interrupt the wait."""
    cdef double until = min(deadline, tempo_monotonic() + SIGNAL_CHECK) if main else deadline
    cdef int err
    with nogil:
        err = tempo_wait_writable(fd, until)
    if err == ETIMEDOUT or err == EINTR:
        PyErr_CheckSignals()
        if tempo_monotonic() >= deadline:
            raise TimeoutError("timed out")
        return 0
    if err:
        raise OSError(err, strerror(err).decode())
    return 1


# Datagrams per sendmmsg() on a socket's own descriptor (no duplicate to be
# had), each sent with the GIL held: a few hundred microseconds of small ones.
cdef Py_ssize_t _SHARED_CHUNK = 128


cdef int _say_sent(object exc, Py_ssize_t sent) except -1:
    """Tell an exception that ends Batch.sendmmsg() how many items went out."""
    try:
        exc.sent = sent
    except AttributeError:  # an exception type without attributes
        pass
    return 0


cdef bint _gil_guards_close():
    # socket.close() marks the socket closed (fileno() -1) with the GIL held,
    # so a thread that holds the GIL from its look at fileno() to its send
    # cannot send on a number that a close() has freed. Without the GIL
    # (free-threaded, unless it was turned back on) nothing keeps it out.
    return not TEMPO_FREE_THREADED or sys._is_gil_enabled()


cdef int _no_descriptor(int err) except -1:
    if err == EMFILE:
        where = "the process is at its file descriptor limit (RLIMIT_NOFILE, ulimit -n)"
    elif err == ENFILE:
        where = "the system's file table is full (fs.file-max)"
    else:
        raise OSError(err, strerror(err).decode())
    raise OSError(err, f"{strerror(err).decode()}: sendmmsg() needs one free file descriptor on a "
                       f"free-threaded build without the GIL, and {where}")


cdef bint _is_tls(object sock):
    # ssl is only loaded if someone uses it; then its sockets must encrypt.
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(sock, ssl.SSLSocket)


@cython.freelist(64)
@cython.final
@cython.no_gc_clear  # the release path reads _core and _arena, even from GC
cdef class Batch:
    """A sealed batch of payloads, in enqueue order.

    ``len(batch)`` items; ``batch[i]`` and iteration give read-only
    ``memoryview`` objects (format ``'B'``) straight into tempo's arena, and
    ``batch[i:j]`` a list of them. ``batch.nbytes`` is the sum of the items'
    lengths. The items lie next to each other in memory, in order. Batches
    come from ``Dispatcher.get_batch()`` and friends; they cannot be
    constructed.

    The bytes stay owned by tempo (and count toward ``max_buffered_bytes``)
    until the batch is released: by leaving ``with batch:``, by
    ``batch.release()``, or by dropping the last reference to it. A view kept
    after that pins its bytes until the view itself dies; copy what you keep
    (``bytes(view)``). Indexing a released batch (and ``data``, ``offsets``,
    ``tolist``, ``to_arrow``, ``sendall``, ``writeall``, ``sendmmsg``) raises
    ``ValueError``; ``len`` and ``nbytes`` still answer.

    The whole batch, without copying: ``batch.data`` (all the bytes as one
    view), ``batch.offsets`` (the items' boundaries), ``batch.to_arrow()``
    (a ``pyarrow`` array over the same memory), ``batch.sendall(sock)`` /
    ``batch.writeall(fd)`` (one write of the region), ``batch.sendmmsg(sock)``
    (one datagram per item).
    """

    def __dealloc__(self):
        # No view can be alive here: each view holds a reference to us.
        if self._arena is not None:
            tempo_lock(&self._core._lock)
            if not self._returned:
                self._return()
            tempo_unlock(&self._core._lock)
        PyMem_RawFree(self._offsets)

    cdef void _return(self) noexcept:
        # With the dispatcher's lock held.
        self._returned = True
        if self._arena is None:
            return  # never filled: nothing to give back
        if self._arena.release(self._first) and self._core._arena is self._arena:
            self._core._notify_state()

    cdef int _hold(self) except -1:
        """Count a reader of the bytes in (a view, a copy, a write), so they
        stay put until _unhold; ValueError once released."""
        tempo_lock(&self._core._lock)
        cdef bint released = self._released
        if not released:
            self._views += 1
        tempo_unlock(&self._core._lock)
        if released:
            raise ValueError("operation forbidden on released batch")
        return 0

    cdef void _unhold(self) noexcept:
        tempo_lock(&self._core._lock)
        self._views -= 1
        if self._views == 0 and self._released and not self._returned:
            self._return()
        tempo_unlock(&self._core._lock)

    cdef object _view(self, Py_ssize_t index):
        if tempo_load_flag(&self._released):
            raise ValueError("operation forbidden on released batch")
        if index < 0:
            index += self._len
        if index < 0 or index >= self._len:
            raise IndexError("batch index out of range")
        # __getbuffer__ reads which item to export from this thread's
        # export slot. Creating the view allocates, which may run the garbage
        # collector and so Python code (a finalizer indexing a batch): a
        # nested call restores our slot when it is done, and __getbuffer__
        # checks _released again rather than trusting the check above.
        return self._export_view(index)

    cdef object _export_view(self, Py_ssize_t index):
        cdef void *outer_batch = tempo_export_batch
        cdef Py_ssize_t outer_index = tempo_export_index
        global tempo_export_batch, tempo_export_index
        tempo_export_batch = <void *>self
        tempo_export_index = index
        try:
            return PyMemoryView_FromObject(self)
        finally:
            tempo_export_batch = outer_batch
            tempo_export_index = outer_index

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        cdef Py_ssize_t index = tempo_export_index if tempo_export_batch == <void *>self else -1
        cdef int64_t start
        cdef Py_ssize_t length
        if index == -1:
            if tempo_load_flag(&self._released):
                raise ValueError("operation forbidden on released batch")
            raise BufferError(
                "a Batch is a sequence of buffers, not a buffer: use batch[i]")
        if flags & PyBUF_WRITABLE:
            raise BufferError("Object is not writable.")
        # Released while the view was being made (see _view): its bytes may
        # be reused already. Counted in the same locked step.
        self._hold()
        if index == -3:
            # The offsets (made before the export by the offsets property):
            # int64 entries, so filled by hand, not by PyBuffer_FillInfo.
            buffer.buf = <void *>self._offsets
            buffer.obj = self
            buffer.len = self._offsets_count * <Py_ssize_t>sizeof(int64_t)
            buffer.readonly = 1
            buffer.itemsize = sizeof(int64_t)
            buffer.format = <char *>_INT64_FORMAT if flags & PyBUF_FORMAT else NULL
            buffer.ndim = 1
            buffer.shape = &self._offsets_count if (flags & PyBUF_ND) == PyBUF_ND else NULL
            buffer.strides = &_INT64_STRIDE if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
            buffer.suboffsets = NULL
            buffer.internal = NULL
            return
        if index == -2:
            start = self._start
            length = self._nbytes
        else:
            # The slots of a handed-out batch do not change until it is
            # returned, which our hold prevents: read without the lock.
            start = self._arena.item_start(self._first + index)
            length = <Py_ssize_t>(self._arena.item_end(self._first + index) - start)
        # Addressed from the batch's start, so its items stay adjacent even
        # past the ring's end (in the mirror) instead of jumping back.
        # Read-only and not writable-requested: it cannot fail.
        PyBuffer_FillInfo(buffer, self, self._arena.at(self._start) + (start - self._start),
                          length, 1, flags)

    def __releasebuffer__(self, Py_buffer *buffer):
        self._unhold()

    def __len__(self):
        return self._len

    def __getitem__(self, index):
        if tempo_load_flag(&self._released):
            raise ValueError("operation forbidden on released batch")
        if isinstance(index, slice):
            return [self._view(i) for i in range(*index.indices(self._len))]
        # Clamped, not OverflowError: an int beyond Py_ssize_t is out of
        # range like any other (IndexError from _view).
        return self._view(PyNumber_AsSsize_t(index, NULL))

    def __iter__(self):
        cdef Py_ssize_t i
        for i in range(self._len):
            yield self._view(i)

    def __bool__(self):
        return self._len != 0

    def __enter__(self):
        """``with batch:`` releases the batch when the block ends."""
        return self

    def __exit__(self, *exc_info):
        """Release the batch."""
        self.release()

    def __repr__(self):
        state = " released" if tempo_load_flag(&self._released) else ""
        return f"<tempo.Batch items={self._len} nbytes={self._nbytes}{state}>"

    def __reduce__(self):
        raise TypeError("a Batch cannot be pickled: copy it with tolist()")

    @property
    def nbytes(self):
        """The sum of the items' lengths, in bytes (answers after release too)."""
        return self._nbytes

    @property
    def seq(self):
        """The batch's number in its dispatcher: 1 for the first batch handed
        out, then 2, 3, ... (``stats().batches`` counts them; a forked child's
        dispatcher counts afresh). It never changes, so a sink called again
        with the same batch (a ``Pipeline`` retry) sees the same number: with a
        token per process it makes a de-duplication id that survives retries.
        """
        return self._seq

    @property
    def released(self):
        """True once the batch was released (its items can no longer be read)."""
        return tempo_load_flag(&self._released)

    def release(self):
        """Give the batch's bytes back to tempo. Idempotent.

        Views taken before keep working: they pin their bytes until they die.
        """
        if self._arena is None:
            return
        tempo_lock(&self._core._lock)
        if not self._released:
            tempo_store_flag(&self._released, True)
            if self._views == 0 and not self._returned:
                self._return()
        tempo_unlock(&self._core._lock)

    @property
    def data(self):
        """All the batch's bytes, in order, as one read-only ``memoryview``
        (format ``'B'``, ``len == batch.nbytes``), without copying.

        The items lie next to each other in tempo's memory (the arena's
        mirror mapping keeps a batch whole even where the ring wraps): item
        ``i`` is ``data[offsets[i]:offsets[i + 1]]``. Hash, compress or
        checksum the batch in one call. The view pins the bytes as an item's
        view does: it stays valid after ``release()``, and tempo reuses the
        space only once it (and every slice of it) is gone.
        """
        if self._released:
            raise ValueError("operation forbidden on released batch")
        return self._region()

    @property
    def offsets(self):
        """The items' boundaries in ``data``: a read-only ``memoryview`` of
        format ``'q'`` (int64) with ``len(batch) + 1`` entries, from ``0`` to
        ``nbytes``; item ``i`` is ``data[offsets[i]:offsets[i + 1]]``.

        Made once per batch (one small array); the view pins the batch's
        bytes as ``data`` does.
        """
        self._hold()
        try:
            self._offsets_held()
        finally:
            self._unhold()
        return self._export_view(-3)

    cdef int64_t *_offsets_held(self) except NULL:
        # With a hold: the slots of a handed-out batch do not change until it
        # is returned. Two threads may both build the array; one is kept.
        cdef int64_t *offsets
        tempo_lock(&self._core._lock)
        offsets = self._offsets
        tempo_unlock(&self._core._lock)
        if offsets != NULL:
            return offsets
        cdef Py_ssize_t i
        offsets = <int64_t *>PyMem_RawMalloc((self._len + 1) * sizeof(int64_t))
        if offsets == NULL:
            raise MemoryError()
        for i in range(self._len + 1):
            offsets[i] = self._arena.item_start(self._first + i) - self._start
        tempo_lock(&self._core._lock)
        if self._offsets == NULL:
            self._offsets = offsets
            self._offsets_count = self._len + 1
            offsets = NULL
        tempo_unlock(&self._core._lock)
        PyMem_RawFree(offsets)
        return self._offsets

    def to_arrow(self):
        """The items as a ``pyarrow.Array`` of type ``pyarrow.large_binary()``
        whose value buffer is the batch's memory and whose offsets are
        ``batch.offsets``: no payload byte is copied.

        The array (and any slice, table or buffer made from it) pins the
        bytes as a view does: keep it past ``release()`` as long as you like;
        tempo reuses the space once the last one is gone. Needs pyarrow
        (``pip install "tempo-batcher[arrow]"``).
        """
        # Not `import pyarrow`: Cython's import takes whatever sys.modules
        # holds, even the None that stands for "cannot be imported".
        pyarrow = sys.modules.get("pyarrow")
        try:
            if pyarrow is None:
                pyarrow = _importlib.import_module("pyarrow")
        except ModuleNotFoundError as exc:
            if exc.name != "pyarrow":
                raise
            raise ModuleNotFoundError(
                'Batch.to_arrow() needs pyarrow: pip install "tempo-batcher[arrow]"',
                name="pyarrow") from None
        offsets = self.offsets
        return pyarrow.Array.from_buffers(
            pyarrow.large_binary(), self._len,
            [None, pyarrow.py_buffer(offsets), pyarrow.py_buffer(self._region())])

    def sendmmsg(self, sock, int flags=0):
        """Send every item as its own datagram, in order. Returns ``len(batch)``.

        For a connected datagram socket (UDP over IPv4 or IPv6, a Unix
        datagram socket): the items go to ``sendmmsg(2)`` straight from
        tempo's memory, up to 1024 per call, without the GIL; when the
        kernel takes fewer, the rest follow. ``flags`` are ``send()``'s
        (``socket.MSG_*``). A stream socket is a ``TypeError``: send its
        bytes with ``sendall()``.

        If the kernel refuses an item (``EMSGSIZE``: larger than a datagram
        can be; ``ECONNREFUSED``: an earlier datagram was refused), its
        ``OSError`` is raised with an attribute ``sent``, the number of
        items sent before it. The socket's timeout is honoured as
        ``sendall`` does: ``TimeoutError`` when it passes, and on a
        non-blocking socket that would block ``BlockingIOError`` (its
        ``characters_written`` counts the bytes of the items sent). With
        ``socket.MSG_DONTWAIT`` in ``flags`` the call never waits, whatever
        the socket's timeout or the thread: ``BlockingIOError`` as for a
        non-blocking socket. Every exception that ends the call carries
        ``sent`` (0 for a closed socket or a descriptor that is no socket),
        including one a signal handler raises while the call runs (a
        ``KeyboardInterrupt``): ``sent`` is always this call's count.

        The call sends on its own duplicate of the socket's descriptor. A
        ``close()`` of the socket by another thread mid-call lets the chunk
        already in the kernel finish, then ends the call with ``OSError``
        (``EBADF``, with ``sent``): nothing goes to whatever file reuses
        the descriptor's number. At the descriptor limit (``RLIMIT_NOFILE``,
        or the system's file table full), where no duplicate can be made,
        it sends on the socket's own descriptor with the same guarantee:
        each chunk (128 items there) is sent without waiting in the kernel
        and with the GIL held since the socket was last seen open; other
        threads get the GIL between chunks (at least every two switch
        intervals) and while it waits for room. A free-threaded build running without the GIL has
        no such guard: there the call raises ``OSError`` (``EMFILE`` or
        ``ENFILE``, ``sent`` 0) naming the limit.
        """
        cdef int fd = -1
        cdef int kind
        cdef int own = -1
        cdef int err
        cdef object timeout
        try:
            # Whatever ends the call before the first send says so: sent 0.
            try:
                if not isinstance(sock, _socket_type):
                    raise TypeError(f"sendmmsg() takes a socket.socket, not {type(sock).__name__!r}")
                fd = sock.fileno()
                if fd < 0:  # closed
                    raise OSError(EBADF, strerror(EBADF).decode())
                with nogil:
                    own = tempo_dup(fd)
                    err = errno
                if own < 0:
                    if (err != EMFILE and err != ENFILE) or not _gil_guards_close():
                        _no_descriptor(err)
                    kind = tempo_socket_type(fd)  # with the GIL: fd is the socket's own
                else:
                    with nogil:
                        kind = tempo_socket_type(own)
                if kind == -1:
                    PyErr_SetFromErrno(OSError)
                if kind == SOCK_STREAM:
                    raise TypeError("sendmmsg() sends one datagram per item; a stream socket "
                                    "takes the whole batch with sendall()")
                timeout = sock.gettimeout()
                self._hold()
            except BaseException as exc:
                _say_sent(exc, 0)
                raise
            try:
                return self._send_datagrams(sock, fd, own, timeout, flags)
            finally:
                self._unhold()
        finally:
            if own >= 0:
                close(own)

    cdef Py_ssize_t _send_datagrams(self, object sock, int fd, int own, object timeout,
                                    int flags) except -1:
        # With a hold, so the bytes stay put while the GIL is released. The
        # sends go to `own`, this call's duplicate of the socket's `fd`; with
        # none (own < 0: no descriptor was free) to `fd` itself, each send
        # made with the GIL held since the socket was last seen open, so no
        # close() can come between, and never waiting in the kernel with it.
        cdef const int64_t *offsets = self._offsets_held()
        cdef const char *data = self._arena.at(self._start)
        cdef Py_ssize_t n = self._len
        cdef Py_ssize_t sent = 0
        cdef Py_ssize_t k
        cdef int err
        cdef bint main = PyThread_get_thread_ident() == _main_thread
        # MSG_DONTWAIT asks for this call what a non-blocking socket asks
        # for every call: never wait.
        cdef bint nonblocking = (timeout is not None and timeout == 0) or (flags & MSG_DONTWAIT)
        cdef double deadline = INFINITY
        if timeout is not None and not nonblocking:
            deadline = tempo_monotonic() + <double>timeout
        # Where a Ctrl-C or the socket's timeout must be seen, send without
        # blocking and wait for room in poll() (as _write_held does) only
        # when the kernel says it has none: a datagram socket mostly has.
        cdef bint shared = own < 0
        cdef int out = fd if shared else own
        cdef Py_ssize_t chunk = _SHARED_CHUNK if shared else TEMPO_MMSG_CHUNK
        # With the GIL held for sends: how long before it is offered to
        # another thread (two switch intervals; see the loop), and since when.
        cdef double hold = 2.0 * sys.getswitchinterval() if shared else INFINITY
        cdef double held = tempo_monotonic()
        cdef bint polled = not nonblocking and (main or deadline < INFINITY or shared)
        # Even where the socket itself is non-blocking: its mode may change.
        cdef int dontwait = MSG_DONTWAIT if polled or shared else 0
        cdef bint full = False
        cdef void *scratch = NULL
        try:
            scratch = tempo_mmsg_scratch(min(n, chunk))
            if scratch == NULL:
                raise MemoryError()
            while sent < n:
                if full:
                    if not _wait_writable(out, deadline, main):
                        continue
                    held = tempo_monotonic()  # the wait let the GIL go
                elif shared and tempo_monotonic() - held >= hold:
                    # Let a thread that waits for the GIL have it. Not after
                    # every send: a waiter asks for the GIL only once it was
                    # held a whole switch interval without a hand-over, and
                    # a drop that nobody asked for is taken straight back.
                    with nogil:
                        err = 0
                    held = tempo_monotonic()
                full = False
                # Closed by another thread (CPython sets its fd to -1): stop
                # here rather than send the rest to a socket nobody holds.
                if sock.fileno() != fd:
                    raise OSError(EBADF, strerror(EBADF).decode())
                if shared:
                    k = tempo_sendmmsg(fd, data, offsets + sent, min(n - sent, chunk),
                                       flags | dontwait, scratch)
                    err = errno
                else:
                    with nogil:
                        k = tempo_sendmmsg(own, data, offsets + sent, min(n - sent, TEMPO_MMSG_CHUNK),
                                           flags | dontwait, scratch)
                        err = errno
                if k >= 0:
                    sent += k
                    PyErr_CheckSignals()  # a Ctrl-C between chunks of a long batch
                    continue
                if err == EINTR:
                    PyErr_CheckSignals()
                    continue
                if (err == EAGAIN or err == EWOULDBLOCK) and polled:
                    full = True
                    continue
                if err == EAGAIN or err == EWOULDBLOCK:
                    raise BlockingIOError(err, strerror(err).decode(), offsets[sent])
                raise OSError(err, strerror(err).decode())
        except BaseException as exc:
            # Whatever ends the call (the socket's error, the timeout, or
            # what a signal handler raised, such as KeyboardInterrupt) says
            # how many items went out before it.
            _say_sent(exc, sent)
            raise
        finally:
            free(scratch)
        return n

    def tolist(self):
        """Copy the items out: a list of ``bytes``, in order."""
        # Counted as a view while copying: the allocations below may run the
        # garbage collector, whose finalizers (or another thread) could
        # release this batch.
        self._hold()
        cdef list out
        cdef Py_ssize_t i
        cdef int64_t start, end
        cdef object item
        cdef const char *base = self._arena.at(self._start)
        try:
            out = PyList_New(self._len)
            for i in range(self._len):
                start = self._arena.item_start(self._first + i)
                end = self._arena.item_end(self._first + i)
                item = PyBytes_FromStringAndSize(base + (start - self._start),
                                                 <Py_ssize_t>(end - start))
                Py_INCREF(item)
                PyList_SET_ITEM(out, i, item)
        finally:
            self._unhold()
        return out

    def sendall(self, sock):
        """Send every byte of every item, in order, to a socket. Returns None.

        The batch is one contiguous region of memory (the arena's mirror
        mapping keeps it whole even where the ring wraps), so it goes to
        ``send()`` as is, resumed after partial sends, without the GIL and
        without copying. The socket's timeout is honoured: ``TimeoutError``
        when it passes; a non-blocking socket that would block raises
        ``BlockingIOError`` whose ``characters_written`` counts the bytes
        already sent. Errors of the socket propagate as ``OSError``.

        A socket whose class changes how it sends (``ssl.SSLSocket``, or a
        subclass overriding ``sendall``/``send``) gets the whole region
        through its own ``sendall``, never behind its back. Any other object
        with ``send()`` gets it through ``send()``, with the same rules.
        """
        cdef type cls = type(sock)
        if (isinstance(sock, _socket_type) and not _is_tls(sock)
                and cls.sendall is _socket_type.sendall and cls.send is _socket_type.send):
            self._write_all(sock.fileno(), sock.gettimeout(), True)
            return
        if tempo_load_flag(&self._released):
            raise ValueError("operation forbidden on released batch")
        region = self._region()
        cdef Py_ssize_t done = 0
        try:
            if isinstance(sock, _socket_type) or not hasattr(sock, "send"):
                sock.sendall(region)
                return
            while done < self._nbytes:
                try:
                    done += sock.send(region[done:])
                except BlockingIOError as exc:
                    raise BlockingIOError(exc.errno, exc.strerror, done) from None
        finally:
            region.release()

    def writeall(self, target):
        """Write every byte of every item, in order, to ``target``. Returns None.

        Written straight from tempo's memory, with no copy, to an ``int``
        file descriptor, a raw file (``io.FileIO``), a buffered file
        (``open(path, "wb")``: flushed first, so bytes it buffered earlier
        stay ahead of the batch), a pipe, or a socket (as ``sendall``).
        Partial writes are resumed and the GIL is released while writing; a
        non-blocking fd that would block raises ``BlockingIOError`` with
        ``characters_written`` set.

        Any other object with ``write()`` (a ``gzip.GzipFile``, an
        ``io.BytesIO``, a subclass that changes ``write``) gets the bytes
        through its own ``write()``, never behind its back through its
        ``fileno()``; a non-blocking raw stream (``io.RawIOBase``) whose
        ``write()`` returns None raises ``BlockingIOError`` as an fd does. An
        object with only ``fileno()`` is written to as its descriptor.
        """
        if isinstance(target, bool):
            raise TypeError("writeall() takes a file descriptor or a file, not 'bool'")
        if isinstance(target, int):
            self._write_all(target, None, False)
            return
        if isinstance(target, _socket_type):
            self.sendall(target)
            return
        fd = _plain_file_fd(target)
        if fd >= 0:
            self._write_all(fd, None, False)
            return
        write = getattr(target, "write", None)
        if write is None:
            fileno = getattr(target, "fileno", None)
            if fileno is None:
                raise TypeError(
                    "writeall() takes a file descriptor or an object with write() or "
                    f"fileno(), not {type(target).__name__!r}")
            self._write_all(fileno(), None, False)
            return
        if tempo_load_flag(&self._released):
            raise ValueError("operation forbidden on released batch")
        region = self._region()
        cdef Py_ssize_t done = 0
        cdef object n
        try:
            while done < self._nbytes:
                n = write(region[done:] if done else region)
                # Buffered and most file-like writes take everything (and
                # return the length or None); a raw one may take a part, and
                # its None means it would block having written nothing.
                if n is None and isinstance(target, _io.RawIOBase):
                    raise BlockingIOError(EAGAIN, "write could not complete without blocking",
                                          done)
                done = self._nbytes if n is None else done + n
        finally:
            region.release()

    cdef object _region(self):
        # The whole batch as one read-only view (export mode -2); see _view.
        return self._export_view(-2)

    cdef int _write_all(self, int fd, object timeout, bint is_socket) except -1:
        # Keep the region alive and unreused while the GIL is released.
        self._hold()
        try:
            return self._write_held(fd, timeout, is_socket)
        finally:
            self._unhold()

    cdef int _write_held(self, int fd, object timeout, bint is_socket) except -1:
        cdef const char *data = self._arena.at(self._start)
        cdef Py_ssize_t left = self._nbytes
        cdef Py_ssize_t done = 0
        cdef Py_ssize_t n, chunk
        cdef int err
        cdef int kind = tempo_fd_kind(fd)
        cdef bint main = PyThread_get_thread_ident() == _main_thread
        cdef bint nonblocking
        cdef double deadline = INFINITY
        if is_socket:
            nonblocking = timeout is not None and timeout == 0
            if timeout is not None and not nonblocking:
                deadline = tempo_monotonic() + <double>timeout
        else:
            nonblocking = kind & TEMPO_FD_NONBLOCKING
        # Wait for room in poll(), not inside write(): a Ctrl-C may be
        # delivered to another thread and never interrupt the write, so the
        # main thread polls in slices; a socket timeout needs poll() anyway.
        cdef bint polled = (not nonblocking and (kind & TEMPO_FD_STREAM)
                            and (main or deadline < INFINITY))
        while left > 0:
            chunk = left
            if polled:
                if not _wait_writable(fd, deadline, main):
                    continue
                if not is_socket and not (kind & TEMPO_FD_SOCKET):
                    # A pipe that polls writable takes PIPE_BUF bytes
                    # without blocking; more might block.
                    chunk = min(left, TEMPO_PIPE_BUF)
            with nogil:
                n = tempo_write(fd, data + done, chunk, is_socket, polled)
                err = errno
            if n >= 0:
                done += n
                left -= n
                continue
            if err == EINTR:
                PyErr_CheckSignals()
                continue
            if (err == EAGAIN or err == EWOULDBLOCK) and polled:
                continue
            if err == EAGAIN or err == EWOULDBLOCK:
                raise BlockingIOError(err, strerror(err).decode(), done)
            raise OSError(err, strerror(err).decode())
        return 0
