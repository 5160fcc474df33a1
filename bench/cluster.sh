# The replicated setups of bench/compare.sh, sourced by it: Switchboard as 3 brokers on PostgreSQL
# (a primary and a synchronous standby from pg_basebackup, streaming on loopback), and NATS
# JetStream as a 3-node cluster whose streams have 3 replicas. Every process listens on 127.0.0.1,
# runs in a temporary directory, and is stopped by stop_cluster (compare.sh's exit trap).

CLUSTER_PIDS=()
CLUSTER_DIR=""
PG_BIN=""
PG_PRIMARY=15432
PG_STANDBY=15433
# What each side was configured with, for the table's labels (Switchboard's by durability: "os"
# sets synchronous_commit = off for the brokers' sessions, so a commit waits for neither the
# primary's WAL flush nor the standby; it is there to show what the two fsyncs of "fsync" cost).
SB_CLUSTER_LABEL_fsync="3 brokers; PostgreSQL primary + synchronous standby, synchronous_commit on"
SB_CLUSTER_LABEL_os="3 brokers; PostgreSQL primary + standby, durability os: synchronous_commit off"
JS_CLUSTER_LABEL="3-node cluster, R3 file streams"

# wait_port PORT: until something listens on 127.0.0.1:PORT, for at most 10 s (the caller's log).
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listens on port $1"; return 1
}

# as_postgres CMD...: PostgreSQL refuses to run as root; then run its programs as Debian's user.
as_postgres() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Starts the primary and its synchronous standby, and creates the database `switchboard`.
start_postgres_pair() {
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [[ -x "$PG_BIN/initdb" ]] || { log "PostgreSQL is not installed (Debian's postgresql)"; return 1; }
    CLUSTER_DIR=$(mktemp -d /tmp/switchboard-cluster-XXXXXX)
    [[ $(id -u) == 0 ]] && chown postgres: "$CLUSTER_DIR"
    local d=$CLUSTER_DIR opts="-c listen_addresses=127.0.0.1 -c unix_socket_directories=$CLUSTER_DIR"
    as_postgres "$PG_BIN/initdb" -D "$d/primary" -U postgres --auth=trust -E UTF8 >"$d/initdb.log"
    as_postgres "$PG_BIN/pg_ctl" -D "$d/primary" -l "$d/primary.log" -w \
        -o "-p $PG_PRIMARY $opts -c max_connections=200" start >/dev/null
    as_postgres "$PG_BIN/pg_basebackup" -D "$d/standby" -R -X stream -c fast \
        -d "host=127.0.0.1 port=$PG_PRIMARY user=postgres application_name=standby"
    as_postgres "$PG_BIN/pg_ctl" -D "$d/standby" -l "$d/standby.log" -w \
        -o "-p $PG_STANDBY $opts -c max_connections=200" start >/dev/null
    local psql=("$PG_BIN/psql" -qtA -h 127.0.0.1 -p $PG_PRIMARY -U postgres -d postgres)
    "${psql[@]}" -c "ALTER SYSTEM SET synchronous_standby_names = 'standby'"
    "${psql[@]}" -c "SELECT pg_reload_conf()" >/dev/null
    local sync=0
    for _ in $(seq 100); do
        sync=$("${psql[@]}" -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
        [[ $sync == 1 ]] && break
        sleep 0.1
    done
    [[ $sync == 1 ]] || { log "the standby did not become synchronous"; return 1; }
    "${psql[@]}" -c "CREATE DATABASE switchboard"
}

# start_switchboard_cluster DURABILITY: 3 brokers on the database; SB_CLUSTER holds the bench's
# --addr/--also arguments.
start_switchboard_cluster() {
    start_postgres_pair
    local url="host=127.0.0.1,127.0.0.1 port=$PG_PRIMARY,$PG_STANDBY user=postgres dbname=switchboard"
    url+=" target_session_attrs=read-write"
    SB_CLUSTER=()
    for i in 0 1 2; do
        local port=$((17880 + i))
        mkdir -p "$CLUSTER_DIR/broker$i"
        SWITCHBOARD_BROKER_STORE=postgres SWITCHBOARD_BROKER_POSTGRES__URL="$url" \
            SWITCHBOARD_BROKER_DURABILITY="$1" \
            SWITCHBOARD_BROKER_ADMIN__LISTEN=127.0.0.1:0 RUST_LOG=warn \
            "$ROOT/target/release/switchboard-broker" --listen 127.0.0.1:$port \
            --data-dir "$CLUSTER_DIR/broker$i" >"$CLUSTER_DIR/broker$i.log" 2>&1 &
        CLUSTER_PIDS+=($!)
        wait_port $port
        if ((i == 0)); then SB_CLUSTER+=(--addr 127.0.0.1:$port); else SB_CLUSTER+=(--also 127.0.0.1:$port); fi
    done
}

# Starts 3 JetStream servers in one cluster and waits for its meta leader; JS_ADDR is node 0.
start_jetstream_cluster() {
    CLUSTER_DIR=$(mktemp -d /tmp/switchboard-cluster-XXXXXX)
    local routes="nats://127.0.0.1:16248,nats://127.0.0.1:16249,nats://127.0.0.1:16250"
    for i in 0 1 2; do
        nats-server -a 127.0.0.1 -p $((14231 + i)) -m $((18231 + i)) -n "js$i" -js \
            -sd "$CLUSTER_DIR/js$i" --cluster_name switchboard-bench \
            --cluster "nats://127.0.0.1:$((16248 + i))" --routes "$routes" \
            >"$CLUSTER_DIR/js$i.log" 2>&1 &
        CLUSTER_PIDS+=($!)
    done
    for i in 0 1 2; do wait_port $((14231 + i)); done
    for _ in $(seq 300); do
        curl -s http://127.0.0.1:18231/jsz | grep -q '"leader"' && break
        sleep 0.1
    done
    JS_ADDR=127.0.0.1:14231
}

stop_cluster() {
    for pid in "${CLUSTER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${CLUSTER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    CLUSTER_PIDS=()
    if [[ -n "$PG_BIN" && -d "$CLUSTER_DIR/primary" ]]; then
        for pg in standby primary; do
            as_postgres "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/$pg" -m fast -w stop >/dev/null 2>&1 || true
        done
    fi
    [[ -n "$CLUSTER_DIR" ]] && rm -rf "$CLUSTER_DIR"
    CLUSTER_DIR=""
}

# run_cluster_round: relay, offline and cross-broker latency on each replicated setup, into
# CLUSTER_RESULTS (run appends to RESULTS, which this shadows).
run_cluster_round() {
    local RESULTS=$CLUSTER_RESULTS
    for d in fsync os; do
        local label=SB_CLUSTER_LABEL_$d
        start_switchboard_cluster "$d"
        for w in relay offline latency; do
            case "$w" in relay | offline) args=$RELAY ;; latency) args=$LATENCY ;; esac
            run "switchboard cluster $d $w" "$w" $args "${SB_CLUSTER[@]}" --label "${!label}"
        done
        stop_cluster
    done
    if [[ " $PEERS " == *" jetstream "* ]]; then
        for w in relay offline latency; do
            case "$w" in relay | offline) args=$RELAY ;; latency) args=$LATENCY ;; esac
            start_jetstream_cluster
            run "jetstream cluster $w" "$w" $args --peer jetstream --addr "$JS_ADDR" \
                --replicas 3 --label "$JS_CLUSTER_LABEL"
            stop_cluster
        done
    fi
}
