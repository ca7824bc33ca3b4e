# cython: freethreading_compatible = False
"""tempo's compiled core: the arena, batches, and the dispatcher's hot path.

Everything here runs with the GIL held and calls no Python code while it
changes shared state, so each operation (enqueue, seal, hand-off, release) is
atomic with respect to other Python threads without a lock. Threads that
wait (consumers, the driver, shutdown/flush, enqueue with a timeout) drop the
GIL and block on pthread conditions; the mutex behind them is only taken
when someone is actually waiting.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree
from cpython.object cimport PyObject
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_INCREF
from libc.errno cimport EAGAIN, EINTR, errno
from libc.math cimport INFINITY, isnan
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, strerror

import sys
from socket import socket as _socket_type

from ._errors import PayloadTooLarge, QueueFull, ShuttingDown, Stopped


cdef extern from "Python.h":
    object PyMemoryView_FromObject(object)
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


cdef extern from "errno.h":
    int ETIMEDOUT
    int EWOULDBLOCK


cdef extern from "_mirror.h" nogil:
    const uint32_t TEMPO_RELEASED
    const uint32_t TEMPO_DROPPED
    const uint32_t TEMPO_COUNT
    size_t tempo_page_size()
    char *tempo_mirror_map(size_t size)
    void tempo_mirror_unmap(char *base, size_t size)
    int tempo_mirror_privatize(char *base, size_t size, size_t off, size_t length)
    void tempo_assert(bint condition)
    double tempo_monotonic()
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


include "_arena.pxi"
include "_batch.pxi"
include "_dispatch.pxi"
