#!/usr/bin/env bash
# A/B of two broker builds on bench/cluster.sh's replicated setup (3 brokers on a PostgreSQL primary
# with a synchronous standby, durability fsync), alternated round by round so both see the same
# machine: relay, offline and latency (shorter than compare.sh's, 1,000 messages after 100).
#
#   A=/path/to/old/switchboard-broker B=target/release/switchboard-broker ROUNDS=2 bench/cluster-ab.sh
#
# Environment: A and B (broker binaries; the JSON lines are labelled "a" and "b"), ROUNDS (2), OUT
# (results file, default target/bench-results/cluster-ab-<time>.jsonl). Every process listens on
# 127.0.0.1 and is stopped on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
: "${A:?A: the first broker binary}" "${B:?B: the second broker binary}"
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-$REPO/target/bench-results/cluster-ab-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
mkdir -p "$(dirname "$OUT")"

log() { echo "cluster-ab.sh: $*" >&2; }
cargo build --release -q -p switchboard-bench
BENCH=$REPO/target/release/switchboard-bench
source "$REPO/bench/cluster.sh"

# cluster.sh starts "$ROOT/target/release/switchboard-broker": one such tree per binary.
ROOTS=$(mktemp -d /tmp/switchboard-ab-XXXXXX)
trap 'stop_cluster; rm -rf "$ROOTS"' EXIT
for side in a b; do
    bin=$A; [[ $side == b ]] && bin=$B
    mkdir -p "$ROOTS/$side/target/release"
    ln -s "$(realpath "$bin")" "$ROOTS/$side/target/release/switchboard-broker"
done

for r in $(seq "$ROUNDS"); do
    for side in a b; do
        log "round $r of $ROUNDS: $side"
        ROOT=$ROOTS/$side
        start_switchboard_cluster fsync
        for w in relay offline; do
            "$BENCH" "$w" --pairs 4 --messages 100000 --size 128 --inflight 256 "${SB_CLUSTER[@]}" \
                --label "$side" >>"$OUT" || log "$side $w failed"
        done
        "$BENCH" latency --messages 1000 --warmup 100 --size 128 "${SB_CLUSTER[@]}" \
            --label "$side" >>"$OUT" || log "$side latency failed"
        stop_cluster
    done
done
log "results in $OUT"
"$BENCH" summarize "$OUT"
