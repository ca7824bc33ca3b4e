"""Build one tempo wheel from the sdist for an interpreter and a CPU, with zig.

    python scripts/build_wheel.py --python PY --arch {x86_64,aarch64} \
        --sdist dist/tempo_batcher-X.tar.gz --out build/wheelhouse

No container: the C compiler is ``zig cc`` (PyPI's ``ziglang``), which links
against the glibc version named in its target (``-target
x86_64-linux-gnu.2.28``) whatever glibc this machine has, so the wheel needs
no newer glibc than manylinux_2_28 allows. auditwheel checks that afterwards.

The Python headers are those of PY, the interpreter the wheel is for. For
aarch64 (cross-compiled from x86_64) two things of PY's differ from an
aarch64 build of the same CPython, and both are replaced in a directory of
their own (build/cross/...), never in PY's installation:

- pyconfig.h. Debian's python3.11 headers for amd64 and arm64 differ in
  exactly four lines (HAVE_GCC_ASM_FOR_X64, HAVE_GCC_ASM_FOR_X87,
  HAVE_USABLE_WCHAR_T: wchar_t is unsigned on aarch64, PY_SUPPORT_TIER), so
  PY's own pyconfig.h with those four lines changed is the aarch64 one.
  A header whose lines are not found fails the build, not silently.
- the build-time sysconfig (EXT_SUFFIX ``.cpython-311-aarch64-linux-gnu.so``,
  SOABI, the compiler): a copy of PY's ``_sysconfigdata`` module with those
  changed, found through ``_PYTHON_SYSCONFIGDATA_NAME``, and
  ``_PYTHON_HOST_PLATFORM=linux-aarch64`` for the wheel's platform tag: the
  variables CPython's own cross-builds set.

The build backend runs in a virtualenv of PY's with the pinned build tools
(made once in build/dist-venvs, again when the pins change), called directly
on the unpacked sdist, so the x86_64 tools that run the build are never
chosen for the aarch64 target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

GLIBC = "2.28"
ROOT = Path(__file__).resolve().parent.parent

# The lines of an x86_64 pyconfig.h and their aarch64 replacements (from
# diffing Debian's libpython3.11-dev amd64 and arm64 packages).
PYCONFIG_AARCH64 = {
    "#define HAVE_GCC_ASM_FOR_X64 1": "/* #undef HAVE_GCC_ASM_FOR_X64 */",
    "#define HAVE_GCC_ASM_FOR_X87 1": "/* #undef HAVE_GCC_ASM_FOR_X87 */",
    "/* #undef HAVE_USABLE_WCHAR_T */": "#define HAVE_USABLE_WCHAR_T 1",
    "#define PY_SUPPORT_TIER 1": "#define PY_SUPPORT_TIER 2",
}

# What the build needs to know of PY: its tag, where its headers and its
# build-time sysconfig module are, and that module's variables.
PROBE = r"""
import json, sys, sysconfig
name = sysconfig._get_sysconfigdata_name()
module = __import__(name)
print(json.dumps({
    "tag": "cp%d%d%s" % (sys.version_info[0], sys.version_info[1], sys.abiflags),
    "machine": sysconfig.get_platform(),
    "sysconfigdata": name,
    "vars": module.build_time_vars,
}))
"""


def run(cmd: list[str], **kwargs) -> None:
    subprocess.run(cmd, check=True, **kwargs)


def build_venv(python: str, tag: str, deps: list[str]) -> Path:
    """A virtualenv of PY's with exactly DEPS, made once per set of pins."""
    venv = ROOT / "build" / "dist-venvs" / tag
    stamp = venv / ".deps"
    if not stamp.exists() or stamp.read_text() != "\n".join(deps):
        shutil.rmtree(venv, ignore_errors=True)
        run([python, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "python"), "-m", "pip", "-q", "install", *deps])
        stamp.write_text("\n".join(deps))
    return venv


def release_cflags(cflags: str) -> str:
    """PY's own CFLAGS (-DNDEBUG -fwrapv -O3 ...; setuptools uses $CFLAGS
    instead of them, not as well) with no debug info: its -g flags dropped
    and -g0 last."""
    return " ".join([flag for flag in cflags.split() if not flag.startswith("-g")] + ["-g0"])


def cross_config(info: dict, arch: str, cc: str, work: Path) -> dict[str, str]:
    """The environment that makes PY's build tools build for ARCH."""
    host_arch = info["vars"]["MULTIARCH"].split("-")[0]
    tvars = dict(info["vars"])
    for key in ("EXT_SUFFIX", "SOABI", "MULTIARCH", "HOST_GNU_TYPE", "SHLIB_SUFFIX"):
        if isinstance(tvars.get(key), str):
            tvars[key] = tvars[key].replace(host_arch, arch)
    include = work / "include" / Path(tvars["INCLUDEPY"]).name
    shutil.copytree(tvars["INCLUDEPY"], include)
    pyconfig = include / "pyconfig.h"
    text = pyconfig.read_text()
    for old, new in PYCONFIG_AARCH64.items():
        if text.count(old) != 1:
            sys.exit(f"build_wheel: {old!r} is not once in {tvars['CONFINCLUDEPY']}/pyconfig.h")
        text = text.replace(old, new)
    pyconfig.write_text(text)
    tvars.update(INCLUDEPY=str(include), CONFINCLUDEPY=str(include),
                 CC=cc, LDSHARED=f"{cc} -shared", BLDSHARED=f"{cc} -shared", LDFLAGS="")
    name = info["sysconfigdata"].replace(host_arch, arch)
    (work / f"{name}.py").write_text(f"build_time_vars = {tvars!r}\n")
    return {"_PYTHON_SYSCONFIGDATA_NAME": name, "_PYTHON_HOST_PLATFORM": f"linux-{arch}",
            "PYTHONPATH": str(work)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the interpreter the wheel is for")
    parser.add_argument("--arch", required=True, choices=["x86_64", "aarch64"])
    parser.add_argument("--sdist", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--deps", default="", help="the build tools, space-separated pins")
    args = parser.parse_args()

    if shutil.which(args.python) is None:
        sys.exit(f"build_wheel: no interpreter {args.python}")
    info = json.loads(subprocess.run([args.python, "-c", PROBE], check=True,
                                     capture_output=True, text=True).stdout)
    if info["machine"] != "linux-x86_64":
        sys.exit(f"build_wheel: builds on linux-x86_64, not {info['machine']}")
    tag = info["tag"]
    venv = build_venv(args.python, tag, args.deps.split())

    work = ROOT / "build" / "cross" / f"{tag}-{args.arch}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with tarfile.open(args.sdist) as tar:
        tar.extractall(work / "src", filter="data")
    (src,) = (work / "src").iterdir()

    # The "-s" of zig's linker strips the module (the host's strip does not
    # know aarch64); setuptools puts $CFLAGS after $LDSHARED on the link line,
    # and in zig a -g after -s cancels it, so CFLAGS has no -g at all.
    cc = f"{sys.executable} -m ziglang cc -target {args.arch}-linux-gnu.{GLIBC}"
    env = dict(os.environ, CC=cc, LDSHARED=f"{cc} -shared -s",
               CFLAGS=release_cflags(info["vars"]["CFLAGS"]))
    env.pop("PYTHONPATH", None)
    if args.arch != "x86_64":
        env.update(cross_config(info, args.arch, cc, work))
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"build_wheel: {tag} {args.arch} ({args.python})", flush=True)
    run([str(venv / "bin" / "python"), "-c",
         "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))",
         str(args.out.resolve())], cwd=src, env=env)
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
