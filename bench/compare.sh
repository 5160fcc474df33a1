#!/usr/bin/env bash
# Runs the benchmark matrix: Switchboard (durability fsync and os) and its peers (Mosquitto, NATS
# core, NATS JetStream, Redis) on the same machine, with the same workloads, RUNS times each, then
# writes the table of medians into BENCHMARKS.md (between the `results` markers).
#
#   bench/compare.sh                      # everything, 3 runs, peers installed from Debian packages
#   RUNS=1 PEERS="redis" bench/compare.sh # a quick look at one peer
#   PEERS="" bench/compare.sh             # Switchboard only, nothing installed
#
# Environment: RUNS (3), PEERS ("mosquitto nats jetstream redis"), LARGE (1: also the 1,000,000
# message large-mailbox run, once), SKIP_INSTALL (1: do not apt-get), OUT (results directory),
# WRITE (1: update BENCHMARKS.md), CLUSTER (1: also the replicated setups of bench/cluster.sh:
# 3 brokers on PostgreSQL with a synchronous standby, and, with jetstream among PEERS, a 3-node
# JetStream cluster with R3 streams; their table goes to BENCHMARKS.md's cluster section),
# CLUSTER_ONLY (1: only those). Every server listens on 127.0.0.1 only and is stopped on exit.
#
#   CLUSTER_ONLY=1 PEERS=jetstream bench/compare.sh   # the cluster table alone
#   CLUSTER=0 bench/compare.sh                        # everything but the cluster
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
PEERS=${PEERS-mosquitto nats jetstream redis}
LARGE=${LARGE:-1}
WRITE=${WRITE:-1}
CLUSTER=${CLUSTER:-1}
CLUSTER_ONLY=${CLUSTER_ONLY:-0}
OUT=${OUT:-$ROOT/target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
RESULTS=$OUT/results.jsonl
# The replicated setups' runs, for their own table (BENCHMARKS.md's cluster section).
CLUSTER_RESULTS=$OUT/cluster.jsonl
mkdir -p "$OUT"

# The workloads, the same for every system (each can be overridden from the environment).
RELAY=${RELAY:-"--pairs 4 --messages 100000 --size 128 --inflight 256"}
LATENCY=${LATENCY:-"--messages 10000 --warmup 500 --size 128"}
IDLE=${IDLE:-"--clients 5000"}
FANIN=${FANIN:-"--senders 16 --messages 25000 --size 128 --inflight 256"}
STORM=${STORM:-"--clients 10000 --messages 10 --size 128"}

log() { echo "compare.sh: $*" >&2; }

# --- peers -------------------------------------------------------------------------------------
if [[ -n "$PEERS" && "${SKIP_INSTALL:-0}" != 1 ]]; then
    missing=()
    command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
    command -v nats-server >/dev/null || missing+=(nats-server)
    command -v redis-server >/dev/null || missing+=(redis-server)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

log "building"
cargo build --release -q -p switchboard-broker -p switchboard-bench
BENCH=$ROOT/target/release/switchboard-bench

SERVER_PID=""
SERVER_DIR=""
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
    [[ -n "$SERVER_DIR" ]] && rm -rf "$SERVER_DIR"
    SERVER_DIR=""
}
# shellcheck source=bench/cluster.sh
source "$ROOT/bench/cluster.sh"
trap 'stop_server; stop_cluster' EXIT

# Starts a fresh server for PEER with a temporary configuration; sets SERVER_PID and PORT.
start_peer() {
    SERVER_DIR=$(mktemp -d /tmp/switchboard-compare-XXXXXX)
    case "$1" in
    mosquitto)
        PORT=18830
        cat >"$SERVER_DIR/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous true
# QoS 1 messages are kept in memory and written to disk at autosave and shutdown (no fsync).
persistence true
persistence_location $SERVER_DIR/
# No silent limit on what waits for an offline client, and a window like Switchboard's.
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 256
# Nagle off on the broker's sockets, as mosquitto.conf(5) advises for latency-sensitive use (the
# bench's MQTT client sets TCP_NODELAY on its side too).
set_tcp_nodelay true
CONF
        "$MOSQUITTO" -c "$SERVER_DIR/mosquitto.conf" >"$SERVER_DIR/server.log" 2>&1 &
        ;;
    nats | jetstream)
        PORT=14222
        # JetStream file storage; the server's default sync interval (no fsync per message).
        nats-server -a 127.0.0.1 -p $PORT -js -sd "$SERVER_DIR/js" >"$SERVER_DIR/server.log" 2>&1 &
        ;;
    redis)
        PORT=16379
        # Append-only file with fsync every second (Streams); no RDB snapshots.
        redis-server --bind 127.0.0.1 --port $PORT --save '' --appendonly yes \
            --appendfsync everysec --dir "$SERVER_DIR" >"$SERVER_DIR/server.log" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    wait_port "$PORT"
}

durability_of() {
    case "$1" in
    mosquitto) echo "QoS 1, persistence without fsync" ;;
    nats) echo "core, at-most-once, in memory" ;;
    jetstream) echo "file storage, no per-message fsync" ;;
    redis) echo "pub/sub; Streams with AOF fsync every second" ;;
    esac
}

# run NAME ARGS...: one bench run, its JSON line appended to the results.
run() {
    local name=$1; shift
    log "$name: $*"
    if "$BENCH" "$@" >>"$RESULTS" 2>>"$OUT/bench.log"; then :; else
        log "$name failed (see $OUT/bench.log)"
    fi
}

for r in $(seq "$RUNS"); do
    log "round $r of $RUNS"
    [[ "$CLUSTER" == 1 || "$CLUSTER_ONLY" == 1 ]] && run_cluster_round
    [[ "$CLUSTER_ONLY" == 1 ]] && continue
    for d in fsync os; do
        run "switchboard $d relay" relay $RELAY --durability $d
        run "switchboard $d offline" offline $RELAY --durability $d
        run "switchboard $d latency" latency $LATENCY --durability $d
    done
    run "switchboard idle" idle $IDLE
    run "switchboard fan-in" fan-in $FANIN
    run "switchboard storm" reconnect-storm $STORM
    for peer in $PEERS; do
        label=$(durability_of "$peer")
        for w in relay offline latency idle fan-in; do
            case "$w:$peer" in offline:nats) continue ;; esac
            case "$w" in
            relay | offline) args=$RELAY ;;
            latency) args=$LATENCY ;;
            idle) args=$IDLE ;;
            fan-in) args=$FANIN ;;
            esac
            start_peer "$peer"
            run "$peer $w" "$w" $args --peer "$peer" --addr "127.0.0.1:$PORT" \
                --server-pid "$SERVER_PID" --label "$label"
            stop_server
        done
    done
done
if [[ "$LARGE" == 1 && "$CLUSTER_ONLY" != 1 ]]; then
    run "switchboard large-mailbox" large-mailbox --messages 1000000 --size 128
fi

# table RESULTS TABLE: the machine, the versions and the medians of RESULTS' runs, into TABLE.
table() {
    {
        echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')),"
        echo "$(free -g | awk '/Mem:/ {print $2}') GiB memory, kernel $(uname -r). Run of $(date -u +%Y-%m-%d), $RUNS round(s),"
        echo "medians; \`missing\`/\`duplicated\` add up all runs. Versions: $("$MOSQUITTO" -h 2>/dev/null | head -1 || true);"
        echo "$(nats-server --version 2>/dev/null || true); $(redis-server --version 2>/dev/null | cut -d' ' -f1-3 || true)."
        "$BENCH" summarize "$1"
    } >"$2"
    log "results in $1, table in $2"
    cat "$2"
}

# write_section TABLE NAME: TABLE between BENCHMARKS.md's `<!-- NAME:begin/end -->` markers.
write_section() {
    [[ "$WRITE" == 1 && -f BENCHMARKS.md ]] && grep -q "<!-- $2:begin -->" BENCHMARKS.md || return 0
    awk -v table="$1" -v begin="<!-- $2:begin -->" -v end="<!-- $2:end -->" '
        $0 == begin { print; while ((getline line < table) > 0) print line; skip = 1; next }
        $0 == end { skip = 0 }
        !skip { print }
    ' BENCHMARKS.md >"$OUT/BENCHMARKS.md" && cp "$OUT/BENCHMARKS.md" BENCHMARKS.md
    log "BENCHMARKS.md updated ($2)"
}

if [[ "$CLUSTER_ONLY" != 1 ]]; then
    table "$RESULTS" "$OUT/table.md"
    write_section "$OUT/table.md" results
fi
if [[ -s "$CLUSTER_RESULTS" ]]; then
    table "$CLUSTER_RESULTS" "$OUT/cluster.md"
    write_section "$OUT/cluster.md" cluster
fi
