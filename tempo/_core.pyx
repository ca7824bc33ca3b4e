# cython: freethreading_compatible = True
# cython: auto_pickle = False
"""tempo's compiled core: the arena, batches, and the dispatcher's hot path.

Every change to shared state (enqueue, seal, hand-off, release, a view
taken or dropped) is a compact region of C that calls no Python code and
allocates nothing, between tempo_lock and tempo_unlock on the dispatcher's
lock. With the GIL those compile to nothing: holding the GIL already makes
each region atomic. On a free-threaded build they are a per-dispatcher
PyMutex (docs/internals.md, "Free-threading"). Threads that wait (consumers,
the driver, shutdown/flush, enqueue with a timeout) leave the lock and the
GIL and block on pthread conditions; the mutex behind them is only taken
when someone is actually waiting.

Lock discipline: cdef methods of Arena and Core._seal, _seal_deferred, _fill,
_notify_* and Batch._return run with the lock held (Core._signal_ready with or
without it: it takes only the conditions' mutex); def methods, Core._admit and the
Batch._hold/_unhold pair take it; Core._wait is entered with it held and
returns with it released. Never raise, allocate or drop a reference that may
be the last one while holding it.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES, PyBUF_WRITABLE,
    PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree, PyMem_RawMalloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_INCREF
from libc.errno cimport EAGAIN, EBADF, EINTR, errno
from libc.math cimport INFINITY, isnan
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, strerror
from posix.unistd cimport getpid

import importlib as _importlib
import io as _io
import sys
from socket import socket as _socket_type

from ._errors import ConfigError, PayloadTooLarge, QueueFull, ShuttingDown, Stopped


cdef extern from "Python.h":
    object PyMemoryView_FromObject(object)
    Py_ssize_t PyNumber_AsSsize_t(object, PyObject *exc) except? -1
    # Without Cython's "except -1": _wait must act before the error goes up.
    int _check_signals "PyErr_CheckSignals" ()
    bint PyBytes_CheckExact(object)
    bint PyUnicode_Check(object)
    # Borrowed-pointer twins for enqueue_many's list/tuple fast path: no
    # reference counting per payload.
    bint _bytes_check "PyBytes_CheckExact" (PyObject *)
    char *_bytes_data "PyBytes_AS_STRING" (PyObject *)
    Py_ssize_t _bytes_size "PyBytes_GET_SIZE" (PyObject *)
    PyObject *_list_item "PyList_GET_ITEM" (object, Py_ssize_t)
    Py_ssize_t _list_size "PyList_GET_SIZE" (object)
    PyObject *_tuple_item "PyTuple_GET_ITEM" (object, Py_ssize_t)
    Py_ssize_t _tuple_size "PyTuple_GET_SIZE" (object)
    bint PyList_CheckExact(object)
    bint PyTuple_CheckExact(object)
    bint PyBytes_Check(object)
    bint PyByteArray_Check(object)


cdef extern from "sched.h" nogil:
    int sched_yield()


cdef extern from "errno.h":
    int ETIMEDOUT
    int EWOULDBLOCK
    int EMFILE
    int ENFILE


cdef extern from "_mirror.h" nogil:
    const uint32_t TEMPO_RELEASED
    const uint32_t TEMPO_DROPPED
    const uint32_t TEMPO_COUNT
    size_t tempo_page_size()
    char *tempo_mirror_map(size_t size)
    void tempo_mirror_unmap(char *base, size_t size)
    int tempo_populate(char *addr, size_t len)
    int tempo_prefault(char *addr, size_t len)
    int64_t tempo_populate_ahead(char *base, int64_t size, const int64_t *head, int64_t at,
                                 int64_t ahead, int64_t chunk, int64_t burst, int *err)
    void tempo_lock(tempo_lock_t *lock)
    void tempo_unlock(tempo_lock_t *lock)
    void tempo_lock_reset(tempo_lock_t *lock)
    int tempo_load_int(const int *p)
    void tempo_store_int(int *p, int v)
    void tempo_store_i64(int64_t *p, int64_t v)
    uint64_t tempo_load_epoch(const uint64_t *p)
    void tempo_bump_epoch(uint64_t *p)
    # The same for a bint field (a C int).
    bint tempo_load_flag "tempo_load_int" (const bint *p)
    void tempo_store_flag "tempo_store_int" (bint *p, bint v)
    const bint TEMPO_FREE_THREADED
    void *tempo_export_batch
    Py_ssize_t tempo_export_index
    int tempo_mirror_privatize(char *base, size_t size, size_t off, size_t length,
                               const char *snapshot)
    void tempo_assert(bint condition)
    double tempo_monotonic()
    const double TEMPO_FOREVER
    void tempo_copy(char *dst, const char *src, size_t n)
    int tempo_cond_init(pthread_cond_t *cond)
    void tempo_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex,
                               uint64_t *epoch, uint64_t seen, double deadline)
    Py_ssize_t tempo_write(int fd, const char *data, Py_ssize_t n, int is_socket, int dontwait)
    int tempo_fd_kind(int fd)
    const int TEMPO_FD_STREAM
    const int TEMPO_FD_SOCKET
    const int TEMPO_FD_NONBLOCKING
    const Py_ssize_t TEMPO_PIPE_BUF
    int tempo_wait_writable(int fd, double deadline)
    void tempo_wake_fd(int fd)
    int pthread_mutex_init(pthread_mutex_t *mutex, void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *mutex)
    int pthread_mutex_lock(pthread_mutex_t *mutex)
    int pthread_mutex_unlock(pthread_mutex_t *mutex)
    int pthread_cond_destroy(pthread_cond_t *cond)
    int pthread_cond_signal(pthread_cond_t *cond)
    int pthread_cond_broadcast(pthread_cond_t *cond)


cdef extern from "_datagram.h" nogil:
    const Py_ssize_t TEMPO_MMSG_CHUNK
    long tempo_iov_max()
    int tempo_socket_type(int fd)
    int tempo_dup(int fd)
    int close(int fd)
    void *tempo_mmsg_scratch(Py_ssize_t n)
    Py_ssize_t tempo_sendmmsg(int fd, const char *data, const int64_t *offsets,
                              Py_ssize_t count, int flags, void *scratch)
    void free(void *p)


cdef extern from "sys/socket.h":
    const int SOCK_STREAM
    const int MSG_DONTWAIT


include "_arena.pxi"
include "_batch.pxi"
include "_dispatch.pxi"


cdef extern from *:
    """
    static PyObject *tempo_refuse_new(PyTypeObject *t, PyObject *args, PyObject *kwds) {
        (void)args; (void)kwds;
        PyErr_Format(PyExc_TypeError,
                     "cannot create '%s' objects: batches come from a dispatcher",
                     t->tp_name);
        return NULL;
    }

    /* help() shows the public API only: drop Cython's vtable capsule from a
     * type's dict (it serves cimports from other modules; tempo has none).
     * `name`, if given, becomes the name the type shows ("tempo.Batch").
     * With `sealed`, Python code cannot construct the type (Type() and
     * Type.__new__(Type) raise TypeError): this module makes its instances
     * by calling Cython's constructor function directly, not the slot. */
    static int tempo_publish_type(PyTypeObject *t, const char *name, int sealed) {
        PyObject *dict = t->tp_dict;
        if (PyDict_GetItemString(dict, "__pyx_vtable__") &&
                PyDict_DelItemString(dict, "__pyx_vtable__") < 0)
            return -1;
        if (name) {
            const char *dot = strrchr(name, '.');
            if (t->tp_flags & Py_TPFLAGS_HEAPTYPE) {
                PyObject *module = PyUnicode_FromStringAndSize(name, dot - name);
                if (!module) return -1;
                int rc = PyDict_SetItemString(dict, "__module__", module);
                Py_DECREF(module);
                if (rc < 0) return -1;
            } else {
                t->tp_name = name;
            }
        }
        if (sealed) {
            t->tp_new = tempo_refuse_new;
            t->tp_vectorcall = NULL;  /* Cython's fast Type() path skips tp_new */
        }
        PyType_Modified(t);
        return 0;
    }
    """
    int tempo_publish_type(PyTypeObject *t, const char *name, bint sealed) except -1

tempo_publish_type(<PyTypeObject *>Batch, "tempo.Batch", True)
# Core is the compiled half of tempo.Dispatcher and shows under that name, so
# help(tempo.Dispatcher) names no private class (issue 8, bug 12).
tempo_publish_type(<PyTypeObject *>Core, "tempo.Dispatcher", False)
