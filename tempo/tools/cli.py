"""The ``tempo`` command: ``tempo tune|soak|stress|bench|demo`` (also ``python -m tempo``).

Each subcommand lives in its own module with ``add_arguments(parser)`` and
``run(args) -> int``; this module only wires them up. Exit codes: 0 success,
1 the run found a problem (a failed assessment, a lost payload; also out of
memory), 2 bad usage (a bad size, duration or settings file, settings the
machine cannot hold, more threads than it will start), 3 the run's report was
printed but a result file could not be written, 130 interrupted by Ctrl-C
(what was gathered is still written, marked ``"interrupted": true``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import Callable, NoReturn, Sequence

from . import _util

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WRITE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: The most producer or consumer threads any subcommand starts (soak's event
#: header has four digits for the producer id): more is a typo, and past it the
#: tool ran out of memory or threads before it said anything useful.
MAX_THREADS = 9999

#: name -> (module, one-line summary); the modules are imported only when run,
#: so ``tempo --help`` stays fast and one tool's optional imports never break another.
COMMANDS = {
    "tune": ("tempo.tools.tune", "probe this machine and recommend settings for a payload size"),
    "soak": ("tempo.tools.soak", "sustained overload with a telemetry mix; proves liveness, delivery, drain, memory"),
    "stress": ("tempo.tools.stress", "many producers, several consumers: every payload exactly once, in order"),
    "bench": ("tempo.tools.bench", "tempo beside a pure-Python batcher and queue.Queue, same workload, same run"),
    "demo": ("tempo.tools.demo", "the README's demo pipeline: telemetry into SQLite"),
}


class UsageError(Exception):
    """A bad value the user typed or pointed at (exit code 2, one line)."""


def require(module: str, extra: str, option: str) -> None:
    """Fail now, not after a long run, when ``option`` needs an optional
    dependency that is missing; the hint names this project's extra
    (``tempo`` on PyPI is an unrelated project)."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise UsageError(f'{option} needs {module}, which is not installed: pip install "tempo-batcher[{extra}]"'
                         ) from None


def dispatcher_memory_error(e: MemoryError) -> UsageError:
    """A ``MemoryError`` from making a dispatcher or pipeline: settings this
    machine cannot map (max_buffered_bytes past what the kernel grants), a
    bad value rather than a crash. Only raised where one is made: any other
    MemoryError is not max_buffered_bytes' fault."""
    return UsageError(f"not enough memory for these settings ({e}); a smaller max_buffered_bytes may fit")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``tempo tune: error: ...`` and exit code 2."""

    #: The subcommand's own parser (set by build_parser), which reports what
    #: it does not know as ``tempo tune: error:``, not ``tempo: error:``.
    command_parser: "Parser | None" = None

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def size_arg(text: str) -> int:
    try:
        return _util.parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_size_arg(text: str) -> int:
    n = size_arg(text)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r} must be greater than zero")
    return n


def duration_arg(text: str) -> float:
    try:
        return _util.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_duration_arg(text: str) -> float:
    s = duration_arg(text)
    if s <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be greater than zero")
    return s


def positive_int_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than zero")
    return n


def thread_count_arg(text: str) -> int:
    """A number of producer or consumer threads: 1 to ``MAX_THREADS``."""
    n = positive_int_arg(text)
    if n > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_THREADS}")
    return n


def out_file_arg(text: str) -> str:
    """A file a command will write at the end: refused now, not after the run,
    if it cannot be (a folder, or in a folder that is missing or read-only).
    ``""`` means no file."""
    if not text:
        return text
    import os

    folder = os.path.dirname(text) or "."
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {folder!r} is not writable")
    try:
        _util.check_regular_file(text)
    except _util.NotARegularFile as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print the final result as one JSON object on stdout (and nothing else there)")


def build_parser(command: str | None = None) -> Parser:
    """The ``tempo`` parser; only ``command``'s module is imported to add its options."""
    import tempo

    parser = Parser(
        prog="tempo",
        description="Operator tools for tempo, the in-process byte batcher.",
        epilog="Sizes: 512B, 4KiB, 1.5MiB (binary), 64KB, 10k (powers of 1000). "
        "Durations: 500ms, 5s, 2m. See docs/tools.md for how to read each result.",
    )
    parser.add_argument("--version", action="version", version=f"tempo {tempo.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (module, summary) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=summary, description=summary)
            continue
        loaded = _load(module)
        p = sub.add_parser(name, help=summary, description=(loaded.__doc__ or summary).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        loaded.add_arguments(p)
        parser.command_parser = p
    return parser


def _load(module: str) -> ModuleType:
    return importlib.import_module(module)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tempo`` command with ``argv`` (default ``sys.argv[1:]``); return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(command if command in COMMANDS else None)
    except ModuleNotFoundError as e:
        if command is None or e.name != COMMANDS[command][0]:
            raise
        # A trimmed installation (the demo is optional): say so, no traceback.
        print(f"tempo {command}: error: this installation has no {command} ({e.name} is missing)", file=sys.stderr)
        return EXIT_USAGE
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        (parser.command_parser or parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    module = _load(COMMANDS[args.command][0])
    try:
        # Every subcommand module has run(args) -> exit code (see COMMANDS).
        run: Callable[[argparse.Namespace], int] = module.run
        return run(args)
    except (UsageError, _util.NotARegularFile) as e:
        # NotARegularFile here: something replaced --out with a FIFO, device
        # or link while the run went on (checked before it, and again at the end).
        print(f"tempo {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except _util.WriteFailed as e:
        # The report is on stdout already (every tool prints before it writes).
        print(f"tempo {args.command}: error: {e}", file=sys.stderr)
        return EXIT_WRITE
    except MemoryError as e:
        # Not the dispatcher's budget (that is a UsageError where one is made).
        print(f"tempo {args.command}: error: out of memory{f' ({e})' if str(e) else ''}", file=sys.stderr)
        return EXIT_FAILED
    except RuntimeError as e:
        if "can't start new thread" not in str(e):
            raise
        # The machine's limit on threads (ulimit -u, memory for their stacks):
        # a count it cannot run, said as such.
        print(f"tempo {args.command}: error: this machine would not start another thread ({e}); "
              "ask for fewer --producers or --consumers", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # A tool catches Ctrl-C itself where it has something to save; this is
        # the second Ctrl-C, or one before anything was gathered.
        print(f"tempo {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
