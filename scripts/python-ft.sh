#!/usr/bin/env bash
# Builds a free-threaded CPython 3.13 (--disable-gil) into a cache outside the
# checkout, once, and prints the interpreter's path as the last line.
#
# The source is Debian trixie's python3.13 source package (the registries
# reachable here are PyPI and Debian's; no prebuilt free-threaded build is on
# either for bookworm). A trixie deb-src entry is added next to the existing
# sources for this; it only lists sources, so no installed package changes.
# Needs root (apt) the first time; afterwards it is a cache hit.
# With --cached it builds nothing: it prints the path if the interpreter is
# cached and fails otherwise (CI decides with it whether to run test-ft).
# With --tsan it builds the same source with ThreadSanitizer too
# (--with-thread-sanitizer) into its own cache, python3.13t-tsan, for
# `make test-tsan`; --tsan comes first when both are given.
set -euo pipefail

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tempo"
PREFIX="${TEMPO_PYTHON_FT_PREFIX:-$CACHE/python3.13t}"
configure_extra=""
if [ "${1:-}" = "--tsan" ]; then
    shift
    PREFIX="${TEMPO_PYTHON_TSAN_PREFIX:-$CACHE/python3.13t-tsan}"
    configure_extra="--with-thread-sanitizer"
    # The build runs the new interpreter (ensurepip, compileall); CPython's
    # own known races there are not what is tested, so they neither print
    # nor fail the build.
    export TSAN_OPTIONS="report_bugs=0 exitcode=0"
fi
PY="$PREFIX/bin/python3.13t"

if [ -x "$PY" ] && "$PY" -c 'import sys, ssl, zlib; sys.exit(sys._is_gil_enabled())' 2>/dev/null; then
    echo "$PY"
    exit 0
fi
if [ "${1:-}" = "--cached" ]; then
    echo "python-ft: no free-threaded CPython cached at $PY" >&2
    exit 1
fi

log() { echo "python-ft: $*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

src_list=/etc/apt/sources.list.d/tempo-trixie-src.sources
if [ ! -f "$src_list" ]; then
    log "adding a deb-src entry for trixie ($src_list)"
    $SUDO tee "$src_list" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    $SUDO apt-get update -qq >&2
fi

# What CPython's configure looks for so that ssl, zlib, ctypes, sqlite3 and
# friends (and so pip and venv) work in the result.
deps="build-essential dpkg-dev pkg-config libssl-dev zlib1g-dev libffi-dev \
libbz2-dev liblzma-dev libsqlite3-dev libreadline-dev libncurses-dev uuid-dev libgdbm-dev"
missing=""
for p in $deps; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "installing build dependencies:$missing"
    $SUDO apt-get install -y -qq $missing >&2 || { $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq $missing >&2; }
fi

# The source package is kept in $CACHE/src, so the second build (--tsan, or
# after a cache wipe) does not download it again.
srccache="$CACHE/src"
mkdir -p "$srccache"
if ! ls "$srccache"/python3.13_*.orig.tar.* >/dev/null 2>&1; then
    log "downloading the python3.13 source package from trixie into $srccache"
    (cd "$srccache" && { apt-get source --download-only -t trixie python3.13 >&2 \
        || { $SUDO apt-get update -qq >&2 && apt-get source --download-only -t trixie python3.13 >&2; }; })
fi
tarball="$(ls "$srccache"/python3.13_*.orig.tar.* | head -n1)"
work="${PREFIX}.build"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
tar xf "$tarball"
srcdir="$(find . -maxdepth 1 -type d -name 'Python-3.13*' | head -n1)"
cd "$srcdir"
log "configuring $(basename "$srcdir") --disable-gil $configure_extra --prefix=$PREFIX"
./configure --disable-gil $configure_extra --prefix="$PREFIX" --with-ensurepip=install >configure.log 2>&1 \
    || { tail -n 40 configure.log >&2; exit 1; }
log "compiling (make -j$(nproc)), several minutes"
make -j"$(nproc)" >make.log 2>&1 || { tail -n 60 make.log >&2; exit 1; }
make install >install.log 2>&1 || { tail -n 60 install.log >&2; exit 1; }
cd / && rm -rf "$work"
"$PY" -c 'import sys, ssl, zlib, ctypes; assert not sys._is_gil_enabled(), "GIL is on"' >&2
echo "$PY"
