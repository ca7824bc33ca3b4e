"""Check what `make dist` put in dist/: the right files in the sdist and wheels.

- Every wheel has a manylinux platform tag no newer than manylinux_2_28 that
  `auditwheel show` confirms, the compiled module built for that tag's CPU
  (its file name and its ELF header say so) and stripped (no .debug_* or
  .symtab section, no path of the machine that built it), the stubs, py.typed
  and the license, and no C or Cython source.
- The sdist has what a source build needs (the Cython sources, setup.py,
  pyproject.toml, MANIFEST.in, the license) and not the generated C file
  nor the tests (which need a whole checkout).

    python scripts/check_dist.py dist [--wheels N]
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

# The newest glibc a wheel may need (manylinux_2_28: RHEL 8, Debian 10,
# Ubuntu 18.10 and newer), and each CPU's ELF e_machine number.
GLIBC_MAX = (2, 28)
ELF_MACHINE = {"x86_64": 62, "aarch64": 183}
TAG = re.compile(r"-manylinux_(\d+)_(\d+)_(x86_64|aarch64)\.whl$")
SOURCES = re.compile(r"\.(c|pyx|pxd|pxi|h)$")
WHEEL_NEEDS = ["tempo/__init__.py", "tempo/py.typed", "tempo/_core.pyi"]
# Paths that only a build machine has: the checkout and its build directory
# (build_wheel.py builds in build/cross/), the home directory (pyenv's
# headers). Debug info would carry them (DWARF's comp_dir); a stripped module
# has none.
BUILD_PATHS = [os.fsencode(Path(__file__).resolve().parent.parent), b"/build/cross/",
               *([os.fsencode(Path.home())] if Path.home() != Path("/") else [])]
SDIST_NEEDS = [
    "setup.py", "pyproject.toml", "MANIFEST.in", "LICENSE", "README.md", "CHANGELOG.md",
    "tempo/__init__.py", "tempo/_core.pyx", "tempo/_core.pxd", "tempo/_core.pyi",
    "tempo/_mirror.h", "tempo/py.typed",
]


def check_wheel(path: Path) -> list[str]:
    problems = []
    tag = TAG.search(path.name)
    if tag is None:
        return ["no manylinux_X_Y_{x86_64,aarch64} tag (one tag, the last in the name)"]
    glibc, arch = (int(tag[1]), int(tag[2])), tag[3]
    if glibc > GLIBC_MAX:
        problems.append(f"needs glibc {glibc[0]}.{glibc[1]}, newer than {GLIBC_MAX[0]}.{GLIBC_MAX[1]}")
    problems += check_auditwheel(path, tag[0][1:-4])
    archive = zipfile.ZipFile(path)
    names = archive.namelist()
    problems += [f"missing {n}" for n in WHEEL_NEEDS if n not in names]
    modules = [n for n in names if re.fullmatch(r"tempo/_core\.[\w.-]+\.so", n)]
    if not modules:
        problems.append("missing the compiled tempo/_core*.so")
    for name in modules:
        if f"-{arch}-linux-gnu." not in name:
            problems.append(f"{name} is not named for {arch}")
        data = archive.read(name)
        if data[:4] != b"\x7fELF" or int.from_bytes(data[18:20], "little") != ELF_MACHINE[arch]:
            problems.append(f"{name} is not an {arch} ELF file")
            continue
        problems += [f"{name} is not stripped: it has {section}" for section in unstripped_sections(data)]
        problems += [f"{name} holds the build path {path.decode(errors='replace')!r}"
                     for path in BUILD_PATHS if path in data]
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("missing the LICENSE")
    problems += [f"ships the source {n}" for n in names if SOURCES.search(n)]
    return problems


def unstripped_sections(elf: bytes) -> list[str]:
    """The debug and symbol-table sections of a little-endian ELF64 file."""
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    if shoff == 0 or shnum == 0:
        return []

    def section(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", elf, shoff + index * shentsize)
        return name, offset, size

    _, names_at, _ = section(shstrndx)
    found = []
    for index in range(shnum):
        name_at = names_at + section(index)[0]
        name = elf[name_at:elf.index(b"\0", name_at)].decode()
        if name.startswith(".debug") or name == ".symtab":
            found.append(name)
    return found


def check_auditwheel(path: Path, tag: str) -> list[str]:
    """auditwheel (of this interpreter's environment) confirms the tag."""
    out = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(path)],
                         capture_output=True, text=True)
    text = " ".join(out.stdout.split())
    if out.returncode != 0 or f'consistent with the following platform tag: "{tag}"' not in text:
        return [f"auditwheel show does not confirm {tag}: {text or out.stderr.strip()}"]
    return []


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        root, *_ = tar.getnames()
        top = root.split("/")[0] + "/"
        names = {n[len(top):] for n in tar.getnames() if n.startswith(top)}
    problems = [f"missing {n}" for n in SDIST_NEEDS if n not in names]
    problems += [f"ships the generated {n}" for n in names if n == "tempo/_core.c" or n.endswith(".so")]
    problems += [f"ships the test {n}" for n in names if n.startswith("tests/")]
    for pattern in ("tempo/*.pxi",):
        if not any(Path(n).match(pattern) for n in names):
            problems.append(f"missing {pattern}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", type=Path)
    parser.add_argument("--wheels", type=int, help="how many wheels to expect")
    args = parser.parse_args()
    wheels = sorted(args.dist.glob("*.whl"))
    sdists = sorted(args.dist.glob("*.tar.gz"))
    failed = False
    if len(sdists) != 1:
        print(f"check_dist: expected one sdist, found {[p.name for p in sdists]}")
        failed = True
    if args.wheels is not None and len(wheels) != args.wheels:
        print(f"check_dist: expected {args.wheels} wheels, found {[p.name for p in wheels]}")
        failed = True
    for path, problems in [(p, check_sdist(p)) for p in sdists] + [(p, check_wheel(p)) for p in wheels]:
        size = path.stat().st_size
        print(f"{path.name}  {size / 1024:.0f} KiB  {'ok' if not problems else 'FAILED'}")
        for problem in problems:
            print(f"    {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
