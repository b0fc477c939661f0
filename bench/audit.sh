#!/usr/bin/env bash
# What the durable audit trail costs the whole proxy: the peers' policy with
# the audit trail on (every response waits for its group-committed, fsync'd
# event) against the same gateway with `storage.audit: off`, interleaved wrk
# rounds against one nginx upstream (target A of ../shared/bench). Prints,
# per path, the median of on / off.
#   bench/audit.sh [ROUNDS]        (needs ../shared/bench/setup.sh run once)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
R=${1:-6}
BENCH_DIR=${BENCH_DIR:-/tmp/consentry-bench}
KEY=bench-key-0123456789abcdef
run=/tmp/consentry-audit-bench
[ -d "$BENCH_DIR/fixtures" ] || { echo "run ../shared/bench/setup.sh first" >&2; exit 1; }
cargo build --release --manifest-path "$root/Cargo.toml" -q
bin="$root/target/release/consentry"
rm -rf "$run"; mkdir -p "$run/on" "$run/off" "$BENCH_DIR/run/A_tmp"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for mode in on off; do
  port=18092; audit="$run/on/audit.db"
  [ "$mode" = off ] && { port=18093; audit=off; }
  sed -e "s/^listen: .*/listen: 127.0.0.1:$port/" -e "s|^policies: .*|policies: $here/policies|" \
      "$here/consentry-peer.yaml" > "$run/$mode/consentry.yaml"
  printf 'storage: { sqlite: %s/%s/consentry.db, audit: %s }\n' "$run" "$mode" "$audit" >> "$run/$mode/consentry.yaml"
done
nginx -p "$BENCH_DIR/" -c nginx/A_upstream.conf -e "$run/A.error.log" \
      -g "daemon off; worker_processes 1; pid $run/A.pid;" & pids+=($!)
"$bin" serve --config "$run/on/consentry.yaml" 2> "$run/on.err" & pids+=($!)
"$bin" serve --config "$run/off/consentry.yaml" 2> "$run/off.err" & pids+=($!)
for port in 18080 18092 18093; do
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
for p in /api/contacts/1 /api/contacts; do
  for r in $(seq "$R"); do
    if [ $((r % 2)) = 1 ]; then order="18092 18093"; else order="18093 18092"; fi
    declare -A rps=()
    for port in $order; do
      rps[$port]=$(wrk -t1 -c32 -d4s -H "X-Api-Key: $KEY" "http://127.0.0.1:$port$p" | awk '/Requests\/sec/{print $2}')
    done
    echo "${rps[18093]} ${rps[18092]}"
  done | python3 -c "
import sys, statistics
rows = [tuple(map(float, l.split())) for l in sys.stdin]
r = [on / off for off, on in rows]
print('%-16s audit off %8.0f req/s, on %8.0f req/s (medians): on/off %.2f (%.2f-%.2f)' % (
    '$p', statistics.median(o for o, _ in rows), statistics.median(n for _, n in rows),
    statistics.median(r), min(r), max(r)))"
done
"$bin" audit verify --config "$run/on/consentry.yaml"
