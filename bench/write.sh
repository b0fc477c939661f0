#!/usr/bin/env bash
# What encryption at rest adds to a write: a 50-property contact (7 values
# encrypted) PATCHed through the gateway with the write policy
# (bench/write/policies: minimise, encrypt, then decrypt the CRM's answer),
# against the same route forwarded unread (passthrough), both in front of
# consentry's sample CRM. wrk at a moderate, fixed concurrency, interleaved
# rounds; prints per round p50 and p99, and the median difference of p99.
# Moderate load: each connection waits WRITE_DELAY_MS (default 2) between
# requests, so both routes get the same offered load, well under capacity.
#   bench/write.sh [ROUNDS] [CONNECTIONS]      WRITE_METHOD=POST for creates
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
R=${1:-6}
C=${2:-4}
METHOD=${WRITE_METHOD:-PATCH}
run=/tmp/consentry-write-bench
cargo build --release --manifest-path "$root/Cargo.toml" -q
bin="$root/target/release/consentry"
rm -rf "$run"; mkdir -p "$run"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
common='clients:
  - name: bench                 # key: bench-key-0123456789abcdef
    api_key_sha256: 95ab1ab43a1c769ff93ba02eec3f4f81c077398c1691a00ae8628abd43901779
    purposes: [essential.service]
log: { level: warn, access: false }'
# Encrypting gateway + sample CRM (`consentry demo` runs both; it makes the key file).
cat > "$run/encrypt.yaml" <<YAML
listen: 127.0.0.1:18101
upstream: { url: http://127.0.0.1:18100 }
policies: $here/write/policies
keys: { master_key_file: $run/master.key, hash_key: bench-hash-key-0123456789abcdef }
storage: { sqlite: $run/encrypt.db, audit: $run/encrypt-audit.db }
$common
YAML
cat > "$run/pass.yaml" <<YAML
listen: 127.0.0.1:18102
upstream: { url: http://127.0.0.1:18100 }
policies: $here/write/policies-passthrough
keys: { hash_key: bench-hash-key-0123456789abcdef }
storage: { sqlite: $run/pass.db, audit: $run/pass-audit.db }
$common
YAML
"$bin" demo --config "$run/encrypt.yaml" > "$run/demo.out" 2> "$run/demo.err" & pids+=($!)
"$bin" serve --config "$run/pass.yaml" 2> "$run/pass.err" & pids+=($!)
for port in 18100 18101 18102; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
lat() { # wrk --latency -> "p50_ms p99_ms"
  WRITE_METHOD=$METHOD WRITE_DELAY_MS=${WRITE_DELAY_MS:-2} wrk -t1 -c"$C" -d5s --latency -s "$here/write/write.lua" "http://127.0.0.1:$1" |
    awk 'function ms(v){ if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
         $1=="50%"{p50=ms($2)} $1=="99%"{p99=ms($2)} /Requests\/sec/{rps=$2} END{print p50, p99, rps}'
}
# Warm both (every contact's key made and cached on the encrypting side).
lat 18101 > /dev/null; lat 18102 > /dev/null
echo "$METHOD of a 50-property contact, wrk -c$C, ${WRITE_DELAY_MS:-2} ms think time, $R interleaved rounds of 5 s"
for r in $(seq "$R"); do
  if [ $((r % 2)) = 1 ]; then order="18102 18101"; else order="18101 18102"; fi
  declare -A res=()
  for port in $order; do res[$port]=$(lat "$port"); done
  echo "${res[18102]} ${res[18101]}"
done | python3 -c "
import sys, statistics
rows = [tuple(map(float, l.split())) for l in sys.stdin]
for p50a, p99a, rpsa, p50b, p99b, rpsb in rows:
    print('passthrough p50 %6.3f ms p99 %6.3f ms %7.0f req/s | encrypting p50 %6.3f ms p99 %6.3f ms %7.0f req/s | p99 +%.3f ms' % (
        p50a, p99a, rpsa, p50b, p99b, rpsb, p99b - p99a))
d = [b[4] - b[1] for b in rows]
print('median p99 added by the encrypting route: %.3f ms (%.3f to %.3f)' % (statistics.median(d), min(d), max(d)))
# A round with a scheduling stall (a 10-40 ms p99, on either route) swings
# its difference; the medians of each route's p99 over the rounds are not
# moved by a stall or two.
pa, pb = statistics.median(b[1] for b in rows), statistics.median(b[4] for b in rows)
qa, qb = statistics.median(b[0] for b in rows), statistics.median(b[3] for b in rows)
print('median p99 over the rounds: passthrough %.3f ms, encrypting %.3f ms: +%.3f ms (p50: +%.3f ms)' % (pa, pb, pb - pa, qb - qa))"
