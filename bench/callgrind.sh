#!/usr/bin/env bash
# Counts the instructions the broker process spends per message, on a fixed workload, under
# `valgrind --tool=callgrind`: a figure that moves with the code and hardly with this machine's noise
# (BENCHMARKS.md, "Instructions per message").
#
#   bench/callgrind.sh                 # build release, run the three workloads, print the table
#   MSGS=5000 bench/callgrind.sh       # a quicker, rougher look
#   RUNS="relay" bench/callgrind.sh    # only the relay run (the base run always comes first)
#
# Each run starts target/release/switchboard-broker under callgrind (127.0.0.1 port 0, a fresh data
# directory, durability "fsync"), drives it with target/release/switchboard-bench --addr, stops it with
# SIGTERM and reads the total `Ir` of the whole process (every thread) from callgrind's output:
#   base     2 pairs connect, send nothing, close: start-up, handshakes and shutdown;
#   relay    PAIRS pairs x MSGS messages of SIZE bytes, recipients online;
#   offline  the same messages to offline recipients, then drained, then the receipts collected.
# Per message is (run - base) / (PAIRS x MSGS). "store" is the part spent in the engine behind the
# MailboxStore trait (its methods' inclusive cost), "rest" everything else (sessions, Router, ...).
# Timers (keepalive, expiry sweep) cost a little per second of wall time, and callgrind slows the
# broker ~50x, so allow ~1 % of noise between runs. Environment: MSGS (20000), PAIRS (2), SIZE (128),
# RUNS ("relay offline"), OUT (the directory for callgrind's files and the annotations),
# BIN (a directory holding both binaries, to measure a saved build; then nothing is built).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
MSGS=${MSGS:-20000}
PAIRS=${PAIRS:-2}
SIZE=${SIZE:-128}
RUNS=${RUNS:-relay offline}
OUT=${OUT:-$ROOT/target/callgrind/$(date -u +%Y%m%dT%H%M%SZ)}
# shellcheck source=bench/callgrind-common.sh
source "$ROOT/bench/callgrind-common.sh"
BROKER=$BIN/switchboard-broker
BENCH=$BIN/switchboard-bench

# run NAME BENCH-ARGS...: one broker under callgrind, one bench run against it; prints "total store".
run() {
    local name=$1
    shift
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-callgrind-XXXXXX")
    : >"$dir/broker.log"
    # Not the default admin port: a broker the user runs may hold it.
    SWITCHBOARD_BROKER_ADMIN__LISTEN=127.0.0.1:0 \
    SWITCHBOARD_BROKER_DURABILITY=fsync SWITCHBOARD_BROKER_LOG__LEVEL="warn,switchboard_broker::server=info" \
        valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.out" \
        "$BROKER" --listen 127.0.0.1:0 --data-dir "$dir/data" >/dev/null 2>"$dir/broker.log" &
    PID=$!
    local addr=""
    for _ in $(seq 1 600); do
        addr=$(grep -o 'listening on [0-9.:]*' "$dir/broker.log" | head -1 | cut -d' ' -f3 || true)
        [[ -n "$addr" ]] && break
        kill -0 "$PID" 2>/dev/null || { log "$name: the broker exited; see $dir/broker.log"; exit 1; }
        sleep 0.2
    done
    [[ -n "$addr" ]] || { log "$name: no 'listening on' within 120 s; see $dir/broker.log"; exit 1; }
    "$BENCH" --addr "$addr" "$@" >"$OUT/$name.json"
    kill -TERM "$PID"
    wait "$PID" || { log "$name: the broker exited with $?; see $dir/broker.log"; exit 1; }
    PID=""
    rm -rf "$dir"
    local total store
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$OUT/$name.out")
    callgrind_annotate --inclusive=yes "$OUT/$name.out" >"$OUT/$name.inclusive.txt" 2>/dev/null
    callgrind_annotate --inclusive=no "$OUT/$name.out" >"$OUT/$name.self.txt" 2>/dev/null
    # The engine's own work: the methods of its MailboxStore impl (which do not call each other),
    # whatever the engine; found by name, so the inlining of the store thread's loop does not matter.
    store=$(awk '/ as switchboard_broker::store::MailboxStore>::/ { gsub(",", "", $1); s += $1 }
        END { printf "%.0f", s }' "$OUT/$name.inclusive.txt")
    echo "${total:-0} ${store:-0}"
}

LOAD="--pairs $PAIRS --messages $MSGS --size $SIZE --inflight 256"
n=$((PAIRS * MSGS))
log "base run (no messages)"
read -r base_total base_store < <(run base relay --pairs "$PAIRS" --messages 0 --size "$SIZE")
printf '%-8s %14s %14s %12s %12s %12s\n' run "Ir total" "Ir - base" "per msg" "store/msg" "rest/msg"
printf '%-8s %14s %14s %12s %12s %12s\n' base "$base_total" - - - -
for name in $RUNS; do
    log "$name run ($PAIRS x $MSGS messages of $SIZE bytes)"
    read -r total store < <(run "$name" "$name" $LOAD)
    awk -v name="$name" -v t="$total" -v s="$store" -v bt="$base_total" -v bs="$base_store" -v n="$n" \
        'BEGIN { d = t - bt; ds = s - bs;
                 printf "%-8s %14.0f %14.0f %12.0f %12.0f %12.0f\n", name, t, d, d / n, ds / n, (d - ds) / n }'
done
log "callgrind files, bench JSON and annotations (NAME.self.txt: functions by their own cost) in $OUT"
