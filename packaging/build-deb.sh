#!/usr/bin/env bash
# Builds the Debian package: both binaries, their man pages and completions (switchboard-gen), then
# `cargo deb`. The profile is the first argument: `release` (the default) for a package to ship,
# `dev` for CI's install test, which reuses the debug binaries the tests already built instead of
# paying minutes for a release build (the package is the same but for speed). Prints the .deb path.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-release}"
case "$profile" in
  dev) dir=debug ;;
  *) dir="$profile" ;;
esac
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

# One package at a time, as tests/src/lib.rs builds them, so features unify the same way and this
# is a no-op after `cargo test` for the dev profile.
cargo build --locked --quiet --profile "$profile" -p switchboard-broker --bin switchboard-broker
cargo build --locked --quiet --profile "$profile" -p switchboard-cli --bin switchboard
rm -rf "$target/$dir/generated"
cargo run --locked --quiet --profile "$profile" -p switchboard-gen -- "$target/$dir/generated"
mkdir -p "$target/debian"
cargo deb --locked --quiet --no-build -p switchboard-broker --profile "$profile" \
    --output "$target/debian/" 2>&1 | tail -n 1
