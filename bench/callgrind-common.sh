# Sourced by bench/callgrind.sh and bench/callgrind-datagrams.sh after they set OUT: the set-up both
# share. Checks for valgrind, builds the release binaries unless BIN names a saved build, sets BIN,
# and kills the broker in PID (if any) when the script exits. Defines `log`.

mkdir -p "$OUT"

log() { echo "$(basename "$0"): $*" >&2; }

command -v valgrind >/dev/null || { log "valgrind is not installed (apt-get install valgrind)"; exit 1; }
if [[ -z "${BIN:-}" ]]; then
    log "building release"
    cargo build --release --quiet -p switchboard-broker -p switchboard-bench
fi
BIN=${BIN:-$ROOT/target/release}

PID=""
cleanup() { [[ -n "$PID" ]] && kill -KILL "$PID" 2>/dev/null || true; }
trap cleanup EXIT
