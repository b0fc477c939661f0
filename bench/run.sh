#!/usr/bin/env bash
# Puts consentry (target E) into the peer benchmark of ../shared/bench.
#   bench/run.sh           the peers' policy (email, date of birth redacted; phone masked)
#   bench/run.sh passthrough   the same routes without field rules
# Extra arguments are passed as environment, e.g. TARGETS="B C" ROUNDS=3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
mode="${1:-peer}"
cargo build --release --manifest-path "$root/Cargo.toml" -q
# The config with its stores in a run directory, not in bench/.
run=/tmp/consentry-peer-run
rm -rf "$run"; mkdir -p "$run"
sed -e "s|^policies: \(.*\)|policies: $here/\1|" "$here/consentry-$mode.yaml" > "$run/consentry.yaml"
printf 'storage: { sqlite: %s/consentry.db }\n' "$run" >> "$run/consentry.yaml"
check=strict; [ "$mode" = passthrough ] && check=passthrough
export GATEWAY_URL=http://127.0.0.1:18090
export GATEWAY_HEADERS="X-Api-Key: bench-key-0123456789abcdef"
export GATEWAY_CHECK="$check"
export GATEWAY_CMD="$root/target/release/consentry serve --config $run/consentry.yaml"
exec "$root/../shared/bench/run_peers.sh"
