# Shared by the scripts that run gateways against nginx A of ../shared/bench
# (audit.sh, ceiling.sh, consent.sh, cpu.sh, regress.sh, rss.sh): their
# set-up, nginx A as the upstream, waiting for listeners, interleaved wrk
# rounds between two gateways, the peers' config, and the audit-on/off
# pair. Sourced after `here` is set.

BENCH_DIR=${BENCH_DIR:-/tmp/consentry-bench}
KEY=bench-key-0123456789abcdef

# prelude RUN_DIR
# Checks the fixtures, builds this checkout (unless BIN names a binary) into
# `bin`, makes RUN_DIR afresh, and kills whatever is in `pids` on exit.
prelude() {
  [ -d "$BENCH_DIR/fixtures" ] || { echo "run ../shared/bench/setup.sh first" >&2; exit 1; }
  if [ -n "${BIN:-}" ]; then bin=$BIN; else
    cargo build --release --manifest-path "$here/../Cargo.toml" -q
    bin="$here/../target/release/consentry"
  fi
  rm -rf "$1"; mkdir -p "$1" "$BENCH_DIR/run/A_tmp"
  pids=()
  trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
}

# start_nginx_a RUN_DIR
start_nginx_a() {
  nginx -p "$BENCH_DIR/" -c nginx/A_upstream.conf -e "$1/A.error.log" \
        -g "daemon off; worker_processes 1; pid $1/A.pid;" & pids+=($!)
}

# wait_ports PORT...
wait_ports() {
  for port in "$@"; do
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  done
}

# ab PATH ROUNDS BASE_PORT BASE_LABEL OTHER_PORT OTHER_LABEL
# Alternates which gateway goes first; prints the medians and other/base.
# CONNS (default 32, as in the peer harness) sets wrk's connections.
ab() {
  local p=$1 rounds=$2 base=$3 base_label=$4 other=$5 other_label=$6
  for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then order="$base $other"; else order="$other $base"; fi
    declare -A rps=()
    for port in $order; do
      rps[$port]=$(wrk -t1 -c"${CONNS:-32}" -d4s -H "X-Api-Key: $KEY" "http://127.0.0.1:$port$p" | awk '/Requests\/sec/{print $2}')
    done
    echo "${rps[$base]} ${rps[$other]}"
  done | python3 -c "
import sys, statistics
rows = [tuple(map(float, l.split())) for l in sys.stdin]
r = [o / b for b, o in rows]
print('%-16s %s %8.0f req/s, %s %8.0f req/s (medians): %s/%s %.2f (%.2f-%.2f)' % (
    '$p', '$base_label', statistics.median(b for b, _ in rows), '$other_label',
    statistics.median(o for _, o in rows), '$other_label', '$base_label',
    statistics.median(r), min(r), max(r)))"
}

# peer_config DIR PORT AUDIT
# Writes DIR/consentry.yaml: the peers' config listening on PORT, with its
# store in DIR and the audit trail AUDIT (a file, or `off`).
peer_config() {
  sed -e "s/^listen: .*/listen: 127.0.0.1:$2/" -e "s|^policies: .*|policies: $here/policies|" \
      "$here/consentry-peer.yaml" > "$1/consentry.yaml"
  printf 'storage: { sqlite: %s/consentry.db, audit: %s }\n' "$1" "$3" >> "$1/consentry.yaml"
}

# start_audit_pair RUN_DIR
# The peers' config twice, the audit trail on (port 18092, in RUN_DIR/on)
# and off (18093, RUN_DIR/off), both serving beside nginx A; sets on_pid
# and off_pid.
start_audit_pair() {
  mkdir -p "$1/on" "$1/off"
  peer_config "$1/on" 18092 "$1/on/audit.db"
  peer_config "$1/off" 18093 off
  start_nginx_a "$1"
  "$bin" serve --config "$1/on/consentry.yaml" 2> "$1/on.err" & on_pid=$!; pids+=("$on_pid")
  "$bin" serve --config "$1/off/consentry.yaml" 2> "$1/off.err" & off_pid=$!; pids+=("$off_pid")
  wait_ports 18080 18092 18093
}
