"""What every ``tempo`` subcommand shares: units, files, progress, the machine.

- ``parse_size`` / ``parse_duration``: the units operators type.
- ``write_atomic``: every file a command writes appears whole or not at all.
- ``Progress``: one status line on a terminal, nothing when not on one.
- ``machine_info`` / ``read_memory``: what a result was measured on, and RSS.
- ``run_json_child``: one measurement in a fresh process (``tempo bench``, bench/).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO, Union

if TYPE_CHECKING:
    from types import FrameType

    # What signal.signal returns: a Python handler, SIG_DFL or SIG_IGN, or None
    # (a handler not installed from Python).
    _SignalHandler = Union[Callable[[int, Union[FrameType, None]], Any], int, None]

from tempo import GiB, KiB, MiB

# Binary units are spelled with an "i"; the SI ones (k, KB, MB) are powers of
# 1000, as on every disk label. A bare number is bytes.
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": KiB, "kib": KiB, "mi": MiB, "mib": MiB, "gi": GiB, "gib": GiB,
}
_DURATION_UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9,
    "m": 60.0, "min": 60.0, "h": 3600.0,
}
_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zµ]*)\s*", re.IGNORECASE)

SIZE_EXAMPLES = "512B, 4KiB, 1.5MiB, 64KB, 10k"
DURATION_EXAMPLES = "500ms, 5s, 2m"
#: The longest duration any option or settings file takes: every wait the tools
#: make stays far inside what time.sleep and Event.wait accept (a longer one was
#: an OverflowError in a worker thread, which died while the run went on).
MAX_DURATION = 30 * 86400.0


def parse_size(text: str) -> int:
    """``"4KiB"`` -> 4096, ``"64KB"`` -> 64000, ``"10k"`` -> 10000, ``"512"`` -> 512.

    Raises ``ValueError`` with a message naming the accepted forms.
    """
    m = _NUMBER.fullmatch(text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(f"bad size {text!r} (examples: {SIZE_EXAMPLES})")
    value = float(m.group(1)) * _SIZE_UNITS[unit]
    if not math.isfinite(value) or value >= 2**63:
        raise ValueError(f"size {text!r} is too large")
    return int(round(value))


def parse_duration(text: str) -> float:
    """``"500ms"`` -> 0.5, ``"2m"`` -> 120.0, ``"200us"`` -> 0.0002, ``"5"`` -> 5.0 (seconds)."""
    m = _NUMBER.fullmatch(text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _DURATION_UNITS:
        raise ValueError(f"bad duration {text!r} (examples: {DURATION_EXAMPLES})")
    value = float(m.group(1)) * _DURATION_UNITS[unit]
    if not math.isfinite(value) or value > MAX_DURATION:
        raise ValueError(f"duration {text!r} is too long (at most {MAX_DURATION / 86400:.0f} days)")
    return value


def format_size(n: float) -> str:
    """Bytes in binary units, three significant digits: ``10.0 KiB``."""
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f} B"


def format_duration(s: float) -> str:
    if s >= 120:
        return f"{s / 60:.0f}m{s % 60:02.0f}s"
    if s >= 1:
        return f"{s:.1f}s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g}ms"
    return f"{s * 1e6:.3g}us"


def format_rate(x: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


# ---------------------------------------------------------------------------
# Files


class WriteFailed(OSError):
    """A result file could not be written (``EACCES``, ``EPERM`` on a rename in
    a sticky folder, ``ENOSPC``...): one line naming the path and the reason.
    Commands print their report before they write, so it is never lost."""

    def __init__(self, path: str | os.PathLike[str], error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error), os.fspath(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


class NotARegularFile(OSError):
    """``--out`` names something other than a regular file (a device, a FIFO, a
    symlink): a command never replaces one of those with its result."""


def check_regular_file(path: str | os.PathLike[str]) -> None:
    """Raise ``NotARegularFile`` unless ``path`` is missing or a regular file.

    ``lstat``, not ``stat``: a symlink is refused as itself, never followed
    (renaming over it replaced the link; copying the target's mode through it
    made a set-id results file)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise NotARegularFile(f"{os.fspath(path)!r} is {kind}; results are written to regular files only")


_FILE_KINDS = {
    stat.S_IFLNK: "a symbolic link", stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
}


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole
    new one, never a part: a temporary file in the same folder, flushed to
    disk, then renamed over ``path``.

    ``path`` must be missing or a regular file (``NotARegularFile`` otherwise);
    any other ``OSError`` is raised as ``WriteFailed``.
    The mode is what ``open()`` would give a new file (``0o666`` less the
    umask); a file replaced keeps it no wider than its own permission bits.
    Set-id, sticky and execute bits are never given."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    try:
        _write_atomic(path, data)
    except NotARegularFile:
        raise
    except OSError as e:
        raise WriteFailed(path, e) from e
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    check_regular_file(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp's file is private (0600); give it the mode open() would, so
        # other users and services can read results.
        mode = 0o666 & ~_umask()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISREG(st.st_mode):
                mode &= st.st_mode  # a private file stays private
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # Checked again just before the rename: something else may have put a
        # FIFO or a link there while the run went on.
        check_regular_file(path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """``fig.savefig`` made atomic (matplotlib writes in pieces)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return write_atomic(path, buf.getvalue())


# ---------------------------------------------------------------------------
# The terminal


class Progress:
    """One status line on stderr, redrawn at most ``hz`` times a second:
    a bar, elapsed and remaining time, and whatever rates the caller passes.

    Disabled (every call a no-op) when stderr is not a terminal, so scripts and
    CI logs get only the final result.
    """

    def __init__(self, total: float, label: str, stream: TextIO | None = None, enabled: bool | None = None,
                 hz: float = 4.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(total, 1e-9)
        self.label = label
        self.start = time.monotonic()
        self._last = 0.0
        self._period = 1.0 / hz
        self._width = 0

    def update(self, done: float | None = None, text: str = "", force: bool = False) -> None:
        """``done``: seconds (or units) of ``total`` completed; default: elapsed time."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._period:
            return
        self._last = now
        elapsed = now - self.start
        done = elapsed if done is None else done
        frac = min(max(done / self.total, 0.0), 1.0)
        bar_len = 24
        filled = int(frac * bar_len)
        bar = "#" * filled + "-" * (bar_len - filled)
        if done is None or frac <= 0:
            remaining = "?"
        else:
            remaining = format_duration(max(elapsed / frac - elapsed, 0.0))
        line = f"{self.label} [{bar}] {frac:4.0%} {format_duration(elapsed)} elapsed, {remaining} left"
        if text:
            line += "  " + text
        columns = _columns()
        line = line[: columns - 1]
        self.stream.write("\r" + line + " " * max(self._width - len(line), 0))
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns or 120  # 0: a pty nobody sized
    except (OSError, ValueError):
        return 120


def say(msg: str) -> None:
    """A line for the operator (stderr: stdout is kept for ``--json``)."""
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The machine


def read_memory() -> dict[str, Any]:
    """``rss`` and ``peak_rss`` (VmHWM) of this process in bytes, 0 where unknown."""
    out = {"rss": 0, "peak_rss": 0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss"] = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    out["peak_rss"] = int(line.split()[1]) * 1024
    except OSError:
        import resource

        out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def machine_info() -> dict[str, Any]:
    """What a measurement ran on: enough to tell two machines apart, nothing private."""
    import tempo

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_bytes": total_memory(),
        "system": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "tempo": getattr(tempo, "__version__", "?"),
        "loadavg": load,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def timestamp() -> str:
    """For file names: sortable, no characters a shell or a file system minds."""
    return time.strftime("%Y%m%d-%H%M%S")


def wait_or_interrupt(seconds: float, should_stop: Callable[[], bool] = lambda: False) -> None:
    """Sleep ``seconds`` in short slices (Ctrl-C lands at once; ``should_stop`` ends it early)."""
    end = time.monotonic() + seconds
    while not should_stop():
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


class Interrupt:
    """Ctrl-C as a request, not an exception: inside ``with Interrupt() as i``,
    the first SIGINT sets ``i.requested`` and the run's loops wind down, drain
    and write what they gathered; a second one raises ``KeyboardInterrupt`` at
    once (to abort a drain that takes too long). Outside the main thread it
    only holds the flag."""

    def __init__(self) -> None:
        self.requested = False
        self._old: _SignalHandler = None

    def __enter__(self) -> "Interrupt":
        import signal
        import threading

        # Not in other threads (signal handlers are the main thread's), and not
        # when SIGINT is ignored (a background job, nohup): it stays ignored.
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        import signal

        if self.requested:
            signal.signal(signal.SIGINT, self._old or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


# ---------------------------------------------------------------------------
# Fresh processes


# ``python -m`` puts the current folder first on sys.path, so a child started
# in a folder holding a ``tempo/`` imported that one. This runs the module as
# ``-m`` would, without that entry (``-P`` does the same, but only from 3.11).
_RUN_MODULE = ("import runpy, sys\n"
               "if not getattr(sys.flags, 'safe_path', False): del sys.path[0]\n"
               "module = sys.argv.pop(1)\n"
               "runpy.run_module(module, run_name='__main__', alter_sys=True)\n")


def module_command(module: str) -> tuple[list[str], dict[str, str]]:
    """How to run ``python -m module`` in a fresh interpreter that imports the
    same tempo as this one, wherever it is started: this tempo's folder first
    on ``PYTHONPATH``, and not the current folder."""
    import tempo

    root = str(Path(tempo.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return [sys.executable, "-c", _RUN_MODULE, module], env


def run_json_child(cmd: list[str], prefix: str, timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` (a measurement) in a fresh process; its result is the JSON on
    the stdout line starting with ``prefix``, else an ``error`` entry with the
    exit code and the last lines it printed."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(prefix):
            result: dict[str, Any] = json.loads(line[len(prefix):])
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
