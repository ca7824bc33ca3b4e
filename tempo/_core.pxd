# The shapes of tempo's compiled types: what each one holds, readable
# without its code (asyncpg style). The code is in the .pxi files that
# _core.pyx includes.

cimport cython
from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef extern from "pthread.h" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass


cdef extern from "_mirror.h" nogil:
    ctypedef struct tempo_lock_t:   # a PyMutex without the GIL; nothing with it
        pass


cdef class Arena:
    # One mirrored ring of payload bytes plus a ring of item slots; batches
    # are runs of adjacent slots. All positions are monotonic 64-bit counters
    # (they never wrap in practice: 2**63 bytes).
    cdef:
        char *base               # the ring, mapped twice back to back
        Py_ssize_t size          # bytes in one copy of the ring (page-rounded)
        Py_ssize_t limit         # max_buffered_bytes: owned bytes never exceed it
        int64_t *ends            # ends[slot & mask]: end byte of the item in slot
        uint32_t *marks          # marks[first & mask]: item count of the batch
                                 # starting there, | RELEASED once reusable
        Py_ssize_t nslots        # power of two; at most nslots - 1 items owned
        int64_t mask
        int64_t head_byte        # next byte to write
        Py_ssize_t head_off      # head_byte % size, kept incrementally
        int64_t tail_byte        # oldest owned byte
        int64_t head_slot        # next slot to fill
        int64_t sealed_slot      # first slot of the open batch
        int64_t deliver_slot     # first slot of the next batch to hand out
        int64_t tail_slot        # first slot not yet reusable
        double *opened           # opened[first & mask]: when the batch starting
                                 # there got its first payload (oldest_wait)
        Py_ssize_t held          # batches handed out whose bytes are not back
        # The first lap's pages are faulted in ahead of the writer by the
        # driver thread (see _arena.pxi): the ring's first `populated` bytes
        # are resident; the writer nudges the driver once head_byte reaches
        # populate_at (INT64_MAX once the whole ring is resident).
        int64_t populated
        int64_t populate_at
        # Between the parent's before-fork and after-fork hooks: a private
        # copy (malloc) of the bytes a forked child may still read, the
        # fork_len bytes from fork_start (the batches handed out and not
        # back), which the child puts in place of the shared memory. NULL
        # with fork_len > 0: there was no memory for it (see Core._before_fork).
        char *fork_copy
        int64_t fork_start
        Py_ssize_t fork_len

    cdef inline bint has_room(self, Py_ssize_t n) noexcept
    cdef inline void push(self, const char *data, Py_ssize_t n) noexcept
    cdef Py_ssize_t seal(self) noexcept
    cdef inline int64_t item_start(self, int64_t slot) noexcept
    cdef inline int64_t item_end(self, int64_t slot) noexcept
    cdef inline char *at(self, int64_t byte) noexcept
    cdef bint release(self, int64_t first) noexcept
    cdef bint _advance(self) noexcept
    cdef Py_ssize_t drop_undelivered(self) noexcept
    cdef Py_ssize_t populate_chunk(self) noexcept
    cdef void populated_to(self, int64_t end, int err) noexcept
    cdef void snapshot_held(self) noexcept
    cdef void drop_snapshot(self) noexcept


cdef class Batch:
    cdef:
        Py_ssize_t _nbytes
        Core _core
        Arena _arena
        int64_t _first           # slot of the first item
        Py_ssize_t _len
        int64_t _start           # first byte
        Py_ssize_t _views        # live buffer exports (memoryviews and slices)
        bint _released           # the consumer is done with it
        bint _returned           # its region went back to the arena
        uint64_t _seq            # its number in hand-out order, from 1 (batch.seq)
        # The items' boundaries from the batch's first byte (n + 1 of them),
        # made on first use of offsets/sendmmsg/to_arrow: the slot ring holds
        # absolute end positions, and wraps, so it cannot be exported as is.
        # Freed with the batch, which every export of it keeps alive.
        int64_t *_offsets
        Py_ssize_t _offsets_count   # n + 1: the shape of an offsets export

    cdef object _view(self, Py_ssize_t index)
    cdef object _export_view(self, Py_ssize_t index)
    cdef void _return(self) noexcept
    cdef int _hold(self) except -1
    cdef void _unhold(self) noexcept
    cdef object _region(self)
    cdef int64_t *_offsets_held(self) except NULL
    cdef Py_ssize_t _send_datagrams(self, object sock, int fd, int own, object timeout,
                                    int flags) except -1
    cdef int _write_all(self, int fd, object timeout, bint is_socket) except -1
    cdef int _write_held(self, int fd, object timeout, bint is_socket) except -1


# A refusal for want of room, as admission saw it under the lock: the
# payload's size, and the bytes and items owned then. Written only when
# admission refuses, into the refused caller's own (stack) copy, so each
# QueueFull tells its own refusal even with producers in parallel.
ctypedef struct Refusal:
    Py_ssize_t size
    int64_t owned
    int64_t items


cdef class Core:
    cdef:
        Arena _arena
        double _interval
        Py_ssize_t _max_batch
        Py_ssize_t _batch_items       # max_batch_items; 0: no cap
        Py_ssize_t _max_buffered
        int _state
        bint _stopped            # finished by stop() or a timed-out shutdown
        bint _prefault           # every page of a new arena faulted in at once
        int _forks               # fork()s under way (between the before- and
                                 # after-fork hooks): nothing is handed out
        Py_ssize_t _open_bytes
        double _deadline         # when the open batch is due; INFINITY if empty
        double _driver_until     # what the driver sleeps until

        # Held around every change to the state here, the arena's and the
        # batches' (see _mirror.h and docs/internals.md): nothing on GIL builds.
        tempo_lock_t _lock

        # One mutex guards the three conditions' epochs while anyone waits
        # without the GIL; with nobody waiting the GIL alone suffices.
        pthread_mutex_t _mutex
        pthread_cond_t _ready_cond    # consumers: a batch is ready, or finished
        pthread_cond_t _state_cond    # hand-offs, releases, stop: for shutdown,
                                      # flush and enqueue(timeout=)
        pthread_cond_t _driver_cond   # the driver: a new deadline, or stop
        uint64_t _ready_epoch
        uint64_t _state_epoch
        uint64_t _driver_epoch
        int _ready_waiters
        int _state_waiters
        int _driver_waiters
        bint _sync_ready

        # Counters behind stats(): one integer add each on the hot path.
        uint64_t _enqueued
        uint64_t _enqueued_bytes
        uint64_t _rejected_full
        uint64_t _rejected_too_large
        uint64_t _batches
        uint64_t _items
        uint64_t _dropped
        Py_ssize_t _waiting           # sealed batches not yet handed out

        # Event fds (one per asyncio loop with waiters) written on each
        # seal and on finish: asyncio waits on them, not on a thread.
        int _wake_fds[16]
        int _n_wake_fds

        # Fork bookkeeping, last: fields added in the middle shift the hot
        # path's fields across cache lines (W1 at 256 B measured 58 against
        # 51 ns of CPU per payload with these two after _forks).
        set _fork_threads        # the threads whose fork() is under way (idents)
        long _pid                # the process this arena is for: getpid() when
                                 # made, and at _reset_after_fork in a child

    cdef int _check(self) except -1
    cdef int _init_sync(self) except -1
    # final: called directly, not through the vtable (the hot path).
    @cython.final
    cdef int _admit(self, const char *data, Py_ssize_t n, Refusal *full) noexcept
    @cython.final
    cdef int _admit_locked(self, const char *data, Py_ssize_t n, Refusal *full,
                           int *signals) noexcept
    cdef int _admit_waiting(self, const char *data, Py_ssize_t n, double deadline,
                            Refusal *full) except -1
    @cython.final
    cdef int _enqueue_one(self, object payload, double deadline, Refusal *full) except -1
    cdef int _reject(self, int rc, Refusal *full) except -1
    cdef object _queue_full(self, Refusal *full)
    cdef void _seal(self) noexcept
    cdef bint _seal_deferred(self) noexcept
    cdef void _signal_ready(self) noexcept
    @cython.final
    cdef bint _handing_out(self) noexcept
    cdef Batch _fill(self, Batch batch)
    cdef void _notify_ready(self, bint everyone) noexcept
    cdef void _wake_everyone(self) noexcept
    cdef void _notify_state(self) noexcept
    cdef void _notify_driver(self) noexcept
    cdef int _wait(self, pthread_cond_t *cond, uint64_t *epoch, int *waiters,
                   double deadline) except -1
