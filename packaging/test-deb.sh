#!/usr/bin/env bash
# CI's package test, as root on a machine without systemd as init: build the .deb from the debug
# binaries (build-deb.sh dev), `dpkg -i` it, start the packaged broker as the `switchboard` user
# with the packaged settings, send a message through it with the packaged `switchboard`, read the
# man page, then `dpkg -r` and `dpkg --purge`. Any failing step fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
  echo "test-deb.sh installs a package: run it as root" >&2
  exit 1
fi
if dpkg -s switchboard >/dev/null 2>&1; then
  echo "a switchboard package is already installed; not touching it" >&2
  exit 1
fi

# dpkg, waiting (up to 5 minutes) while another dpkg or apt holds the lock, instead of failing.
dpkg_locked() {
  local err
  for _ in $(seq 1 300); do
    if err="$(dpkg "$@" 2>&1)"; then return 0; fi
    grep -q "lock" <<<"$err" || { echo "$err" >&2; return 1; }
    sleep 1
  done
  echo "$err" >&2
  return 1
}

deb="$(bash packaging/build-deb.sh dev)"
work="$(mktemp -d)"
broker_pid=""
runuser_pid=""
cleanup() {
  for pid in $broker_pid $runuser_pid; do kill -KILL "$pid" 2>/dev/null || true; done
  dpkg_locked --purge switchboard >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f "$work/broker.log" ]] && sed 's/^/  | /' "$work/broker.log" >&2; exit 1; }

echo "-- dpkg -i $(basename "$deb")"
dpkg_locked -i "$deb"
getent passwd switchboard >/dev/null || fail "no switchboard user"
[[ "$(stat -c %U:%a /var/lib/switchboard)" == "switchboard:750" ]] || fail "/var/lib/switchboard: $(stat -c %U:%a /var/lib/switchboard)"
dpkg-query -W -f='${Conffiles}' switchboard | grep -q /etc/switchboard/settings.toml || fail "settings.toml is not a conffile"
[[ -f /lib/systemd/system/switchboard-broker.service ]] || fail "no broker unit"

echo "-- the packaged broker, as switchboard, with the packaged settings"
# Port 0 for both listeners, so the test does not depend on 7878/7879 being free.
cd /
runuser -u switchboard -- env SWITCHBOARD_BROKER_ADMIN__LISTEN=127.0.0.1:0 \
    /usr/bin/switchboard-broker --config /etc/switchboard/settings.toml \
    --data-dir /var/lib/switchboard --listen 127.0.0.1:0 2>"$work/broker.log" &
runuser_pid=$!
addr=""
for _ in $(seq 1 200); do
  addr="$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$work/broker.log" | head -n 1)"
  [[ -n "$addr" ]] && break
  kill -0 "$runuser_pid" 2>/dev/null || fail "the broker exited"
  sleep 0.1
done
[[ -n "$addr" ]] || fail "the broker did not listen within 20 s"
# runuser waits for the broker, its one child: signal the broker itself.
broker_pid="$(pgrep -P "$runuser_pid")"
[[ "$(ps -o user= -p "$broker_pid")" == "switchboard" ]] || fail "the broker does not run as switchboard"
[[ -d /var/lib/switchboard/log ]] || fail "no store in /var/lib/switchboard"

echo "-- a message through it with the packaged switchboard ($addr)"
id="$(switchboard --server "$addr" --id alice send --to bob "hello from the package")"
got="$(timeout 20 switchboard --server "$addr" --id bob listen --count 1)"
grep -q "hello from the package" <<<"$got" || fail "bob got: $got"
kill -TERM "$broker_pid"
wait "$runuser_pid" || fail "the broker did not exit 0 on SIGTERM"
broker_pid=""
echo "   message $id delivered; the broker stopped cleanly"

echo "-- man switchboard, completions"
man -P cat switchboard 2>/dev/null | grep -q "switchboard" || fail "man switchboard"
man -P cat switchboard-broker 2>/dev/null | grep -qi "passwd" || fail "man switchboard-broker"
[[ -f /usr/share/bash-completion/completions/switchboard ]] || fail "no bash completion"

echo "-- dpkg -r, dpkg --purge"
dpkg_locked -r switchboard
[[ ! -e /usr/bin/switchboard-broker && ! -e /usr/bin/switchboard ]] || fail "binaries left after dpkg -r"
[[ -f /etc/switchboard/settings.toml ]] || fail "dpkg -r removed the conffile (only purge should)"
dpkg_locked --purge switchboard
[[ ! -e /etc/switchboard/settings.toml ]] || fail "settings.toml left after purge"
! getent passwd switchboard >/dev/null || fail "the switchboard user is left after purge"
echo "package test passed"
