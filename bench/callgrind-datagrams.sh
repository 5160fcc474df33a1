#!/usr/bin/env bash
# Counts the instructions the datagram path spends per datagram, on a fixed workload, under
# `valgrind --tool=callgrind`, on both ends (BENCHMARKS.md, "Datagrams beside NATS core"):
#   broker   the broker under callgrind, the bench (client library) native;
#   client   the bench under callgrind (its senders and recipients, through the client library),
#            the broker native.
# Each side is run twice, with no datagrams (base: start-up, handshakes, binds, shutdown) and with
# PAIRS x MSGS datagrams of SIZE bytes at RATE per pair; per datagram is (run - base) / delivered
# (what was lost before a process read it cost that process nothing; the loss is printed beside).
# "sha256" is the part in SHA-256's compression function (the MACs): callgrind's CPU has no SHA
# extensions, so it runs sha2's portable code, several times what SHA-NI costs natively; "rest" is
# everything else.
#
#   bench/callgrind-datagrams.sh                  # build release, both sides
#   SIDES=client bench/callgrind-datagrams.sh     # one side
#   BIN=/tmp/saved bench/callgrind-datagrams.sh   # a saved build (nothing is built)
#
# Environment: MSGS (4000), PAIRS (2), SIZE (128), RATE (400; callgrind slows a process ~50x, so a
# rate it keeps up with), SIDES ("broker client"), OUT, BIN. The broker's rate limit is lifted.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
MSGS=${MSGS:-4000}
PAIRS=${PAIRS:-2}
SIZE=${SIZE:-128}
RATE=${RATE:-400}
SIDES=${SIDES:-broker client}
OUT=${OUT:-$ROOT/target/callgrind/datagrams-$(date -u +%Y%m%dT%H%M%SZ)}
# shellcheck source=bench/callgrind-common.sh
source "$ROOT/bench/callgrind-common.sh"

# broker SIDE NAME: starts a broker (under callgrind for side "broker"); sets PID and ADDR.
broker() {
    local side=$1 name=$2 dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-callgrind-XXXXXX")
    local wrap=()
    [[ "$side" == broker ]] && wrap=(valgrind --tool=callgrind --callgrind-out-file="$OUT/broker-$name.out")
    # Not the default admin port: a broker the user runs may hold it.
    SWITCHBOARD_BROKER_ADMIN__LISTEN=127.0.0.1:0 \
    SWITCHBOARD_BROKER_STORE=memory SWITCHBOARD_BROKER_DATAGRAMS__MAX_PER_SEC=0 \
        SWITCHBOARD_BROKER_LOG__LEVEL="warn,switchboard_broker::server=info" \
        "${wrap[@]}" "$BIN/switchboard-broker" --listen 127.0.0.1:0 --data-dir "$dir/data" \
        >/dev/null 2>"$dir/broker.log" &
    PID=$!
    ADDR=""
    for _ in $(seq 1 600); do
        ADDR=$(grep -o 'listening on [0-9.:]*' "$dir/broker.log" | head -1 | cut -d' ' -f3 || true)
        [[ -n "$ADDR" ]] && break
        kill -0 "$PID" 2>/dev/null || { log "the broker exited; see $dir/broker.log"; exit 1; }
        sleep 0.2
    done
    [[ -n "$ADDR" ]] || { log "no 'listening on' within 120 s; see $dir/broker.log"; exit 1; }
}

# run SIDE NAME MSGS: one broker, one bench run; prints "Ir sha256-Ir delivered sent".
run() {
    local side=$1 name=$2 msgs=$3
    broker "$side" "$name"
    local wrap=()
    [[ "$side" == client ]] && wrap=(valgrind --tool=callgrind --callgrind-out-file="$OUT/client-$name.out")
    "${wrap[@]}" "$BIN/switchboard-bench" --addr "$ADDR" datagrams --pairs "$PAIRS" \
        --messages "$msgs" --size "$SIZE" --rate "$RATE" --linger-ms 2000 \
        >"$OUT/$side-$name.json" 2>"$OUT/$side-$name.bench.log"
    kill -TERM "$PID"
    wait "$PID" || true
    PID=""
    local file=$OUT/$side-$name.out total
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$file")
    callgrind_annotate --inclusive=no "$file" >"$OUT/$side-$name.self.txt" 2>/dev/null
    callgrind_annotate --inclusive=yes "$file" >"$OUT/$side-$name.inclusive.txt" 2>/dev/null
    local delivered sent sha
    sha=$(awk '/sha256::compress256/ { gsub(",", "", $1); s += $1 } END { printf "%.0f", s }' "$OUT/$side-$name.self.txt")
    delivered=$(grep -o '"delivered":[0-9]*' "$OUT/$side-$name.json" | cut -d: -f2)
    sent=$(grep -o '"sent":[0-9]*' "$OUT/$side-$name.json" | cut -d: -f2)
    echo "${total:-0} ${sha:-0} ${delivered:-0} ${sent:-0}"
}

printf '%-8s %14s %8s %10s %12s %12s %12s\n' side "Ir - base" sent delivered "Ir/datagram" "sha256/dg" "rest/dg"
for side in $SIDES; do
    log "$side: base run"
    read -r base base_sha _ _ < <(run "$side" base 0)
    log "$side: $PAIRS x $MSGS datagrams of $SIZE bytes at $RATE/s per pair"
    read -r total sha delivered sent < <(run "$side" run "$MSGS")
    awk -v s="$side" -v t="$total" -v b="$base" -v h="$sha" -v bh="$base_sha" -v d="$delivered" -v n="$sent" \
        'BEGIN { x = (d > 0 ? d : 1); printf "%-8s %14.0f %8d %10d %12.0f %12.0f %12.0f\n",
                 s, t - b, n, d, (t - b) / x, (h - bh) / x, (t - b - h + bh) / x }'
done
log "callgrind files, bench JSON and annotations (SIDE-run.self.txt: functions by their own cost) in $OUT"
