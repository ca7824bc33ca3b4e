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
    (``bytes(view)``). Indexing a released batch (and ``tolist``,
    ``sendall``, ``writeall``) raises ``ValueError``; ``len`` and ``nbytes``
    still answer.
    """



    def __dealloc__(self):
        # No view can be alive here: each view holds a reference to us.
        if self._arena is not None:
            tempo_lock(&self._core._lock)
            if not self._returned:
                self._return()
            tempo_unlock(&self._core._lock)

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
        return self._view(index)

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
        cdef double until
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
                until = min(deadline, tempo_monotonic() + SIGNAL_CHECK) if main else deadline
                with nogil:
                    err = tempo_wait_writable(fd, until)
                if err == ETIMEDOUT or err == EINTR:
                    PyErr_CheckSignals()
                    if tempo_monotonic() >= deadline:
                        raise TimeoutError("timed out")
                    continue
                if err:
                    raise OSError(err, strerror(err).decode())
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
