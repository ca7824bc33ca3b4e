#!/usr/bin/env bash
# Install the wheel built for PYTHON (and this machine's CPU) from DIST into a fresh virtualenv with no
# C compiler (CC=/bin/false), then check it from outside the checkout:
# scripts/smoke.py (import, metadata, contents, a round trip) and stubtest
# (the .pyi stubs match the compiled module).
#
#   scripts/smoke_wheel.sh PYTHON DIST
set -euo pipefail
python=$1
dist=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
# stubtest's verdicts change between mypy releases: one known version.
MYPY=${MYPY:-mypy==2.4.1 typing_extensions>=4.15}  # words, unquoted below

# The wheel's tags for this interpreter: cp313-cp313, or cp313-cp313t when free-threaded.
abi=$("$python" -c 'import sys; print("cp%d%d%s" % (sys.version_info[0], sys.version_info[1], sys.abiflags))')
py_tag=${abi%t}
arch=$(uname -m)
wheels=("$dist"/tempo_batcher-*-"$py_tag"-"$abi"-*manylinux*_"$arch".whl)
if [ ! -f "${wheels[0]}" ] || [ "${#wheels[@]}" -ne 1 ]; then
    echo "smoke: expected one manylinux $arch wheel for $py_tag-$abi in $dist, found: ${wheels[*]}" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CC=/bin/false CXX=/bin/false PIP_DISABLE_PIP_VERSION_CHECK=1
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --only-binary :all: "${wheels[0]}"
cd "$work"
"$work/venv/bin/python" "$here/smoke.py"
if [ "$abi" != "$py_tag" ]; then
    # mypy needs librt, which has no free-threaded wheel (and no compiler is
    # here to build one); the stubs are the same files in every wheel, and
    # stubtest checks them against the GIL builds' modules.
    echo "smoke: ${wheels[0]##*/} passed (no stubtest on a free-threaded build)"
    exit 0
fi
"$work/venv/bin/python" -m pip install -q --only-binary :all: $MYPY
# stubtest with the test suite's allowlist, against the installed wheel: the
# modules that have .pyi stubs (the compiled core); the pure-Python modules
# carry their own annotations, which mypy checks elsewhere.
stubbed=$("$work/venv/bin/python" -c 'import pathlib, tempo
print(" ".join("tempo." + p.stem for p in sorted(pathlib.Path(tempo.__file__).parent.glob("*.pyi"))))')
# (--ignore-unused-allowlist: the allowlist also serves the suite's stubtest of
# the whole package, which checks that each of its entries is used.)
"$work/venv/bin/python" -m mypy.stubtest $stubbed --ignore-unused-allowlist \
    --allowlist "$here/../tests/stubtest-allowlist.txt"
echo "smoke: ${wheels[0]##*/} passed"
