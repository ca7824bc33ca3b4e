#!/usr/bin/env bash
# Start a 3-node NATS JetStream cluster on 127.0.0.1 for tests/test_jetstream.py
# (and examples/jetstream.py), and print its directory.
#
#   export TEMPO_NATS_CLUSTER="$(bash .ci/nats.sh)"     # start
#   bash .ci/nats.sh stop "$TEMPO_NATS_CLUSTER"          # stop, remove the directory
#
# Installs nats-server from Debian's packages if it is missing (that needs root;
# everything else does not). Each node gets free ports, its own store and log
# in a fresh temporary directory, and routes to the other two. The directory is
# the only line on stdout; it holds what a test needs to kill and restart a
# node: `server` (the binary's path), `urls` (the client URLs, comma-separated),
# and per node nK.conf (start it again with `$(cat server) -c nK.conf`), nK.pid
# (kept current by the server itself) and nK.log. Progress goes to stderr.
set -euo pipefail

log() { echo "nats.sh: $*" >&2; }

# A process that is gone, or a zombie (its parent has not reaped it yet: a
# node the test restarted), holds no port and no file: `kill -0` alone would
# count a zombie as running.
alive() {
    local state
    state="$(cut -d')' -f2- "/proc/$1/stat" 2>/dev/null | awk '{print $1}')" || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# Stop the processes named by the pid files in $1 and by the further pids
# given, SIGTERM then (after 5 s) SIGKILL, and remove $1.
stop_cluster() {
    local dir="$1" pidfile pid alive_any
    shift
    local pids=("$@")
    for pidfile in "$dir"/n*.pid; do
        [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
    done
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
        alive_any=0
        for pid in "${pids[@]}"; do alive "$pid" && alive_any=1; done
        [ "$alive_any" = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
    rm -rf "$dir"
}

if [ "${1:-}" = stop ]; then
    dir="${2:?usage: nats.sh stop DIR}"
    [ -f "$dir/urls" ] || { log "$dir is not a cluster made by nats.sh"; exit 1; }
    stop_cluster "$dir"
    exit 0
fi

# 1. The server.
if ! command -v nats-server >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        log "nats-server is not installed, and installing it needs root"
        exit 1
    fi
    log "installing nats-server from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq nats-server >&2
fi
server="$(command -v nats-server)"

# 2. Six free ports (client and route for each node), all held at once while
# they are chosen so no two are the same.
read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
')"

dir="$(mktemp -d "${TMPDIR:-/tmp}/tempo-nats.XXXXXX")"
nodes=()
# Whatever ends this script before the cluster is up (a failed command under
# set -e too) stops the nodes it started and removes the directory.
ready=0
trap '[ "$ready" = 1 ] || stop_cluster "$dir" "${nodes[@]}"' EXIT
echo "$server" >"$dir/server"
urls=()
for k in 1 2 3; do
    client="${ports[$((k - 1))]}"
    urls+=("nats://127.0.0.1:$client")
    routes=()
    for j in 1 2 3; do
        [ "$j" = "$k" ] || routes+=("nats-route://127.0.0.1:${ports[$((j + 2))]}")
    done
    cat >"$dir/n$k.conf" <<EOF
server_name: n$k
listen: 127.0.0.1:$client
pid_file: "$dir/n$k.pid"
log_file: "$dir/n$k.log"
jetstream {
    store_dir: "$dir/n$k"
}
cluster {
    name: tempo
    listen: 127.0.0.1:${ports[$((k + 2))]}
    routes: [$(IFS=,; echo "${routes[*]}")]
}
EOF
done
(IFS=,; echo "${urls[*]}") >"$dir/urls"

# 3. Running: each node in its own session, so it outlives this script.
for k in 1 2 3; do
    setsid "$server" -c "$dir/n$k.conf" </dev/null >/dev/null 2>&1 &
    nodes+=("$!")
done
for k in 1 2 3; do
    port="${ports[$((k - 1))]}"
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        log "node n$k does not listen on 127.0.0.1:$port; its log:"
        cat "$dir/n$k.log" >&2 || true
        if grep -qi "address already in use" "$dir"/n*.log 2>/dev/null; then
            # The ports are chosen free, then released for the servers to
            # bind: another process can take one in between.
            log "a port was taken between choosing it and the node binding it; run nats.sh again"
        fi
        exit 1
    fi
done
log "3 nodes listening: $(cat "$dir/urls")"
ready=1
echo "$dir"
