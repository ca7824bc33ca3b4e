# The arena: payload bytes in one mirrored ring, item boundaries in a ring of
# slots, batches as runs of adjacent slots.
#
# Space comes back in order: the tail moves past a batch only once it and
# every batch before it are released and no view of them is alive. Owned
# bytes are head_byte - tail_byte, which is what admission counts, so a
# released batch stuck behind an unreleased (or pinned) one stays owned. In
# exchange the ring never fragments, and with the mirrored mapping every
# payload is contiguous wherever it lands: a payload that the byte count
# admits is always placed.


# The first lap's page faults. A fresh shared mapping costs a page fault the
# first time each page is written, about ten times the copy itself, so the
# first lap through a new arena would run ten times slower than the rest (and
# enqueue latency spikes during it). The driver thread faults pages in ahead
# of the writer instead, POPULATE_CHUNK bytes at a time without the GIL (in
# bursts of up to POPULATE_AHEAD: tempo_populate_ahead in _mirror.h), until
# POPULATE_AHEAD bytes past the writer are resident. MADV_POPULATE_WRITE
# writes nothing, so it may run over pages the writer is filling. Resident
# memory grows with use plus that window: a generously sized arena does not
# cost its bound at creation. After the first lap every page stays resident
# (shared memory is not reclaimed short of swapping), so it stops for good.
cdef int64_t POPULATE_AHEAD = 8 << 20
cdef int64_t POPULATE_CHUNK = 1 << 20
cdef int64_t NEVER = 0x7fffffffffffffff


cdef Py_ssize_t _slot_count(Py_ssize_t limit):
    # Item slots bound the bookkeeping: a flood of empty payloads fills them
    # (then QueueFull) instead of growing memory. At most nslots - 1 items
    # are owned at once. Arenas under 128 KiB get a slot per byte, so only
    # the byte count ever refuses a non-empty payload; larger ones get one
    # per 128 bytes, between 2**17 and 2**20 slots (20 bytes each: an end,
    # a mark, and an opening time, read only at a batch's first slot).
    cdef Py_ssize_t want
    if limit < (1 << 17):
        want = max(limit + 1, 1024)
    else:
        want = max(1 << 17, min(limit // 128, 1 << 20))
    cdef Py_ssize_t n = 1
    while n < want:
        n <<= 1
    return n


def _size_text(Py_ssize_t n):
    """``n`` bytes for a message: "8 GiB", "1.5 MiB", "100 B"."""
    cdef double value = n
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if value == <Py_ssize_t>value else f"{value:.1f} {unit}"
        value /= 1024


cdef class Arena:
    """The memory behind one dispatcher's payloads (internal)."""

    def __cinit__(self, Py_ssize_t limit, bint prefault=False):
        if limit <= 0:
            raise ValueError("limit must be positive")
        cdef size_t page = tempo_page_size()
        self.limit = limit
        self.size = <Py_ssize_t>((<size_t>limit + page - 1) // page * page)
        self.nslots = _slot_count(limit)
        self.mask = self.nslots - 1
        self.ends = <int64_t *>PyMem_RawCalloc(self.nslots, sizeof(int64_t))
        self.marks = <uint32_t *>PyMem_RawCalloc(self.nslots, sizeof(uint32_t))
        self.opened = <double *>PyMem_RawCalloc(self.nslots, sizeof(double))
        if self.ends == NULL or self.marks == NULL or self.opened == NULL:
            raise MemoryError()
        cdef int err
        self.base = tempo_mirror_map(<size_t>self.size)
        if self.base == NULL:
            # Read before anything else can change it.
            err = errno
            raise MemoryError(err, f"tempo: cannot map max_buffered_bytes={limit} "
                                   f"({_size_text(limit)}, {_size_text(2 * self.size)} of address "
                                   f"space for the mirrored ring): {strerror(err).decode()}")
        if prefault:
            # Every page now, so no lap pays a fault: resident memory is the
            # bound from here on, which is what the caller asked for.
            with nogil:
                err = tempo_prefault(self.base, <size_t>self.size)
            if err:
                # Not `errno = err`: Cython would bind a local name, and the
                # real errno may have changed since (taking the GIL back).
                raise MemoryError(err, f"tempo: cannot fault in max_buffered_bytes={limit} "
                                       f"({_size_text(limit)}, prefault=True): "
                                       f"{strerror(err).decode()}")
            self.populated = self.size
            self.populate_at = NEVER

    def __dealloc__(self):
        free(self.fork_copy)
        tempo_mirror_unmap(self.base, <size_t>self.size)
        PyMem_RawFree(self.ends)
        PyMem_RawFree(self.marks)
        PyMem_RawFree(self.opened)

    @property
    def max_items(self):
        """How many payloads the arena can hold at once."""
        return self.nslots - 1

    cdef inline bint has_room(self, Py_ssize_t n) noexcept:
        return (self.head_byte - self.tail_byte + n <= self.limit
                and self.head_slot - self.tail_slot < self.nslots - 1)

    cdef inline void push(self, const char *data, Py_ssize_t n) noexcept:
        tempo_assert(self.head_byte - self.tail_byte + n <= self.limit)
        tempo_assert(self.head_slot - self.tail_slot < self.nslots - 1)
        # Contiguous even across the ring's end: the mirror maps it there.
        tempo_copy(self.base + self.head_off, data, <size_t>n)
        # Read without the lock by the driver (tempo_populate_ahead).
        tempo_store_i64(&self.head_byte, self.head_byte + n)
        self.head_off += n
        if self.head_off >= self.size:
            self.head_off -= self.size
        self.ends[self.head_slot & self.mask] = self.head_byte
        self.head_slot += 1

    cdef Py_ssize_t seal(self) noexcept:
        cdef Py_ssize_t n = <Py_ssize_t>(self.head_slot - self.sealed_slot)
        if n:
            self.marks[self.sealed_slot & self.mask] = <uint32_t>n
            self.sealed_slot = self.head_slot
        return n

    cdef inline int64_t item_start(self, int64_t slot) noexcept:
        # The slot before the tail is never refilled (at most nslots - 1
        # items are owned), so this holds for the first owned item too.
        return self.ends[(slot - 1) & self.mask]

    cdef inline int64_t item_end(self, int64_t slot) noexcept:
        return self.ends[slot & self.mask]

    cdef inline char *at(self, int64_t byte) noexcept:
        return self.base + <Py_ssize_t>(byte % self.size)

    cdef bint release(self, int64_t first) noexcept:
        """Mark the batch at `first` reusable; True if the tail moved."""
        self.marks[first & self.mask] |= TEMPO_RELEASED
        return self._advance()

    cdef bint _advance(self) noexcept:
        cdef uint32_t mark
        cdef int64_t tail = self.tail_slot
        while self.tail_slot < self.deliver_slot:
            mark = self.marks[self.tail_slot & self.mask]
            if not (mark & TEMPO_RELEASED):
                break
            tempo_assert((mark & TEMPO_COUNT) != 0)
            if not (mark & TEMPO_DROPPED):
                self.held -= 1
            self.tail_slot += mark & TEMPO_COUNT
        tempo_assert(self.tail_slot <= self.deliver_slot)
        if self.tail_slot == tail:
            return False
        self.tail_byte = self.ends[(self.tail_slot - 1) & self.mask]
        tempo_assert(self.tail_byte <= self.head_byte)
        return True

    cdef Py_ssize_t populate_chunk(self) noexcept:
        """How many bytes from `populated` on the driver should fault in next."""
        cdef int64_t want = min(<int64_t>self.size, self.head_byte + POPULATE_AHEAD)
        if self.populated >= want:
            return 0
        return <Py_ssize_t>min(want - self.populated, POPULATE_CHUNK)

    cdef void populated_to(self, int64_t end, int err) noexcept:
        if err:
            # No MADV_POPULATE_WRITE (Linux < 5.14): the writer faults its
            # pages in itself, as it would anyway.
            end = self.size
        if end > self.populated:
            self.populated = end
        if self.populated >= self.size:
            self.populate_at = NEVER
        else:
            self.populate_at = self.populated - POPULATE_AHEAD // 2

    cdef Py_ssize_t drop_undelivered(self) noexcept:
        """Seal the open batch and drop every batch not handed out.

        Returns the number of items dropped. Their bytes come back at once,
        unless a handed-out batch before them still holds the tail.
        """
        self.seal()
        cdef Py_ssize_t dropped = <Py_ssize_t>(self.sealed_slot - self.deliver_slot)
        cdef int64_t slot = self.deliver_slot
        while slot < self.sealed_slot:
            self.marks[slot & self.mask] |= TEMPO_RELEASED | TEMPO_DROPPED
            slot += self.marks[slot & self.mask] & TEMPO_COUNT
        self.deliver_slot = self.sealed_slot
        self._advance()
        return dropped

    cdef void snapshot_held(self) noexcept:
        """Copy the bytes of the batches handed out and not back into
        fork_copy, for the child of the fork about to happen.

        From the tail to the end of the last batch that is neither back nor
        dropped: a view of any of them (even of a released batch, pinned by
        the view) lies in there, and nothing else can be read in the child.
        A released batch between two held ones is copied too (the tail
        cannot pass it yet); batches released after the last held one are
        not.
        """
        cdef int64_t slot = self.tail_slot
        cdef int64_t end_slot = slot
        cdef uint32_t mark
        while slot < self.deliver_slot:
            mark = self.marks[slot & self.mask]
            tempo_assert((mark & TEMPO_COUNT) != 0)
            slot += mark & TEMPO_COUNT
            if not (mark & TEMPO_RELEASED):
                end_slot = slot
        self.fork_start = self.tail_byte
        self.fork_len = 0
        if end_slot > self.tail_slot:
            self.fork_len = <Py_ssize_t>(self.item_end(end_slot - 1) - self.tail_byte)
        self.fork_copy = NULL
        if self.fork_len:
            # Plain malloc, not Python's allocator: the child frees its copy
            # of it early in its after-fork hook. The mirror makes the held
            # region contiguous from at(tail) even where it wraps.
            self.fork_copy = <char *>malloc(<size_t>self.fork_len)
            if self.fork_copy != NULL:
                memcpy(self.fork_copy, self.at(self.fork_start), <size_t>self.fork_len)

    cdef void drop_snapshot(self) noexcept:
        free(self.fork_copy)
        self.fork_copy = NULL
        self.fork_len = 0
