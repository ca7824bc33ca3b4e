#!/usr/bin/env bash
# An arm64 Debian bookworm root for `make test-aarch64`, built once into a
# cache outside the checkout; prints its path as the last line.
#
# debootstrap --foreign unpacks it here, then its second stage runs inside it
# under qemu-user-static through binfmt_misc (both from Debian's packages):
# the tests start subprocesses (sys.executable, fork + exec), and only
# binfmt_misc runs those under the emulator too, where `qemu-aarch64-static
# -L root` would run the first process only. Inside: Debian's arm64
# python3.11 with python3-venv (the wheel goes into a virtualenv that sees the
# system packages), python3-pytest and python3-hypothesis. No compiler.
# Needs root (apt, mount, chroot).
#
#   scripts/arm64-chroot.sh          build if needed, print the root
#   scripts/arm64-chroot.sh --test WHEEL TEST...
#       install WHEEL inside, run scripts/smoke.py and pytest on the TESTs
set -euo pipefail

ROOT="${TEMPO_ARM64_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/tempo/arm64-bookworm}"
MIRROR="${TEMPO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3.11,python3-venv,python3-pytest,python3-hypothesis"
log() { echo "arm64-chroot: $*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# binfmt_misc: mounted (a container may start without it) and qemu-aarch64
# registered with the F flag, so the kernel opens the emulator at
# registration and it needs not exist inside the root.
binfmt=/proc/sys/fs/binfmt_misc
host_tools() {
    local missing="" p
    for p in debootstrap qemu-user-static binfmt-support; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        log "installing$missing"
        $SUDO apt-get install -y -qq $missing >&2 \
            || { $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq $missing >&2; }
    fi
    [ -f "$binfmt/status" ] || $SUDO mount -t binfmt_misc binfmt_misc "$binfmt" \
        || { log "binfmt_misc cannot be mounted here; arm64 subprocesses cannot run"; exit 1; }
    [ -f "$binfmt/qemu-aarch64" ] || $SUDO update-binfmts --enable qemu-aarch64 >&2
    grep -q '^enabled' "$binfmt/qemu-aarch64" && grep -q '^flags:.*F' "$binfmt/qemu-aarch64" \
        || { log "qemu-aarch64 is not registered in binfmt_misc with the F flag"; exit 1; }
}

host_tools
# The marker holds the package list, so a changed list rebuilds the root.
if [ "$(cat "$ROOT/.tempo-ready" 2>/dev/null)" != "$PACKAGES" ]; then
    work="$ROOT.build"
    $SUDO rm -rf "$work"
    log "debootstrap --foreign bookworm arm64 into $work (first stage)"
    $SUDO debootstrap --arch=arm64 --foreign --variant=minbase --include="$PACKAGES" \
        bookworm "$work" "$MIRROR" >&2
    log "second stage, under qemu-user-static (several minutes)"
    $SUDO chroot "$work" /debootstrap/debootstrap --second-stage >&2
    $SUDO rm -rf "$work/var/cache/apt/archives/"*.deb
    echo "$PACKAGES" | $SUDO tee "$work/.tempo-ready" >/dev/null
    $SUDO rm -rf "$ROOT" && $SUDO mv "$work" "$ROOT"
fi

if [ "${1:-}" != "--test" ]; then
    echo "$ROOT"
    exit 0
fi
wheel=$2
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
# /proc for the tests (fds, resident memory), /dev for /dev/null and the
# semaphores in /dev/shm, a fresh /tmp holding the wheel, the tests and the
# virtualenv; all undone on the way out, whatever happens.
mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do $SUDO umount -l "${mounts[i]}" || true; done
}
trap cleanup EXIT
$SUDO mount -t proc proc "$ROOT/proc" && mounts+=("$ROOT/proc")
$SUDO mount --rbind /dev "$ROOT/dev" && mounts+=("$ROOT/dev")
$SUDO mount -t tmpfs tmpfs "$ROOT/tmp" && mounts+=("$ROOT/tmp")
$SUDO mkdir -p "$ROOT/tmp/tempo"
$SUDO cp "$wheel" "$ROOT/tmp/tempo/"
$SUDO cp -r "$here/tests" "$here/scripts/smoke.py" "$here/pyproject.toml" "$ROOT/tmp/tempo/"
log "$(basename "$wheel") in Debian's arm64 python3.11, under qemu-aarch64"
# The venv sees Debian's pytest and hypothesis; the wheel is installed with
# no index, no dependency resolution and no compiler anywhere in the root.
$SUDO chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 /bin/sh -ec '
    cd /tmp/tempo
    if command -v cc gcc clang >/dev/null; then echo "a C compiler is in the root" >&2; exit 1; fi
    python3 -c "import platform; print(\"arm64-chroot: machine\", platform.machine())"
    python3 -m venv --system-site-packages venv
    venv/bin/python -m pip install -q --no-index --no-deps --only-binary :all: ./*.whl
    venv/bin/python smoke.py
    venv/bin/python -m pytest -q -p no:cacheprovider -o addopts=-ra -o faulthandler_timeout=900 "$@"
' sh "$@"
