"""Smoke test of an installed tempo wheel; scripts/smoke_wheel.sh runs it.

It checks that tempo comes from the virtualenv's site-packages (not from a
checkout), that the installed metadata and ``tempo.__version__`` agree, that
the wheel brought its stubs and no sources, that its console scripts load,
and that a dispatcher batches.
"""

import importlib.metadata
import pathlib
import sys
import sysconfig
import threading

import tempo

package = pathlib.Path(tempo.__file__).parent
site = pathlib.Path(sysconfig.get_paths()["platlib"])
assert package.parent.resolve() == site.resolve(), f"tempo was imported from {package}, not {site}"
assert importlib.metadata.version("tempo-batcher") == tempo.__version__

files = {path.name for path in package.rglob("*") if path.is_file()}
assert {"py.typed", "_core.pyi"} <= files, files
sources = sorted(n for n in files if n.endswith((".c", ".pyx", ".pxd", ".pxi", ".h")))
assert not sources, f"the wheel ships sources: {sources}"

d = tempo.Dispatcher(interval=0.05, max_batch_bytes=64, max_buffered_bytes=tempo.KiB)
got: list[list[bytes]] = []
consumer = threading.Thread(target=lambda: got.extend(b.tolist() for b in d.batches()))
d.start()
consumer.start()
sent = [b"payload %02d" % i for i in range(20)]
for payload in sent:
    d.enqueue(payload, timeout=5)
d.shutdown(timeout=10)
consumer.join(10)
assert [item for batch in got for item in batch] == sent, got
assert all(sum(map(len, batch)) <= 64 for batch in got), got

# Every console script of the distribution (the `tempo` command, when there
# is one) resolves to something callable.
for entry in importlib.metadata.distribution("tempo-batcher").entry_points:
    if entry.group == "console_scripts":
        assert callable(entry.load()), entry

gil = getattr(sys, "_is_gil_enabled", lambda: True)()
print(
    f"smoke ok: tempo-batcher {tempo.__version__}, CPython {sys.version.split()[0]}"
    f"{'' if gil else ' (free-threaded, GIL off)'}, {len(got)} batches, from {package}"
)
