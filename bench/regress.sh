#!/usr/bin/env bash
# A change against an earlier build, whole proxy: the peers' policy through
# two gateways, BASE_BIN (an earlier release binary) and this checkout's,
# interleaved wrk rounds against one nginx upstream (target A of
# ../shared/bench). Prints, per path, the median of new / base.
#   BASE_BIN=/path/to/old/consentry AUDIT=off bench/regress.sh [ROUNDS]
#   NEW_BIN=... instead of this checkout's build; NEW_BIN=$BASE_BIN shows the noise
# AUDIT: off (default) or on (each gateway its own trail).
# Build a base with: git worktree add /tmp/base REV &&
#   CARGO_TARGET_DIR=/tmp/base-target cargo build --release --manifest-path /tmp/base/Cargo.toml
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
R=${1:-6}
run=/tmp/consentry-regress-bench
: "${BASE_BIN:?set BASE_BIN to the binary of an earlier build}"
. "$here/lib.sh"
# NEW_BIN: compare two given builds (or a build with itself: the noise floor).
BIN=${NEW_BIN:-} prelude "$run"
mkdir -p "$run/base" "$run/new"
for who in base new; do
  port=18094; [ "$who" = new ] && port=18095
  audit=off; [ "${AUDIT:-off}" = on ] && audit="$run/$who/audit.db"
  peer_config "$run/$who" "$port" "$audit"
done
start_nginx_a "$run"
"$BASE_BIN" serve --config "$run/base/consentry.yaml" 2> "$run/base.err" & pids+=($!)
"$bin" serve --config "$run/new/consentry.yaml" 2> "$run/new.err" & pids+=($!)
wait_ports 18080 18094 18095
for p in /api/contacts/1 /api/contacts; do
  ab "$p" "$R" 18094 "base" 18095 "new"
done
