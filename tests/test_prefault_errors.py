"""Dispatcher(prefault=True) when faulting the ring in fails. A shim loaded
with LD_PRELOAD makes madvise(MADV_POPULATE_WRITE) fail (and, for one case,
has PyEval_RestoreThread leave errno changed, which CPython does not promise
not to do on every build), so each error path runs on any kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static pid_t first_pid;
static __thread int failed;
__attribute__((constructor)) static void init(void) { first_pid = getpid(); }
int madvise(void *addr, size_t len, int advice) {
    static int (*real)(void *, size_t, int);
    if (!real) real = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "madvise");
    const char *mode = getenv("SHIM_POPULATE");
    if (advice == 23 && mode && (!getenv("SHIM_CHILD_ONLY") || getpid() != first_pid)) {
        failed = 1;
        errno = strcmp(mode, "EINVAL") == 0 ? EINVAL : ENOMEM;
        return -1;
    }
    return real(addr, len, advice);
}
void PyEval_RestoreThread(void *tstate) {
    static void (*real)(void *);
    if (!real) real = (void (*)(void *))dlsym(RTLD_NEXT, "PyEval_RestoreThread");
    real(tstate);
    if (failed && getenv("SHIM_CLOBBER")) { failed = 0; errno = EAGAIN; }
}
"""

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("cc") is None, reason="needs Linux and cc")


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    d = tmp_path_factory.mktemp("shim")
    (d / "shim.c").write_text(SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(d / "shim.so"), str(d / "shim.c"), "-ldl"], check=True)
    return str(d / "shim.so")


def run(shim, code, **env):
    # After any preload already there (the sanitizer build's runtime must come first).
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD", ""), shim]))
    full = dict(os.environ, LD_PRELOAD=preload, PYTHONPATH=os.pathsep.join(sys.path), **env)
    out = subprocess.run([sys.executable, "-c", "import tempo, os\n" + textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=60, env=full)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


MAKE_FAILING = """
def arenas():
    return sum("tempo-arena" in line for line in open("/proc/self/maps"))
try:
    tempo.Dispatcher(interval=1, max_buffered_bytes=tempo.MiB, prefault=True)
except MemoryError as e:
    print(e.args[0], arenas())
"""


def test_enomem_is_a_memory_error_with_its_errno_and_unmaps_the_ring(shim):
    assert run(shim, MAKE_FAILING, SHIM_POPULATE="ENOMEM") == ["12", "0"]


def test_the_error_reported_is_the_prefaults_own_errno_not_whatever_errno_holds_later(shim):
    # errno = err in Arena.__cinit__ assigns a local (Cython scoping), so
    # PyErr_SetFromErrno reads whatever the GIL re-acquire left in errno.
    assert run(shim, MAKE_FAILING, SHIM_POPULATE="ENOMEM", SHIM_CLOBBER="1") == ["12", "0"]


def test_without_populate_write_every_page_is_written_once(shim):
    code = """
    def shmem():
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssShmem:"))
    before = shmem()
    d = tempo.Dispatcher(interval=1, max_buffered_bytes=8 * tempo.MiB, prefault=True)
    print(d._populated, (shmem() - before) // 1024)
    """
    assert run(shim, code, SHIM_POPULATE="EINVAL") == [str(8 << 20), "8"]


def test_a_child_whose_prefault_fails_is_stopped_and_leaves_the_parent_alone(shim):
    code = """
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    d = tempo.Dispatcher(interval=60, max_buffered_bytes=tempo.MiB, prefault=True)
    d.start(); d.enqueue(b"parent-1")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(r, 1)
        try:
            d.enqueue(b"CHILD!!!"); print("child-accepted")
        except tempo.Stopped:
            print("child-" + d._state_name())
        os._exit(0)
    d.enqueue(b"parent-2"); os.write(w, b"g"); os.waitpid(pid, 0)
    d._seal_now(); print(*[p.decode() for p in d.get_batch(timeout=5).tolist()])
    """
    assert run(shim, code, SHIM_POPULATE="ENOMEM", SHIM_CHILD_ONLY="1") == ["child-finished", "parent-1", "parent-2"]
