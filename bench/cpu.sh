#!/usr/bin/env bash
# CPU time per request, by thread, of the gateway with the audit trail on
# and off (and of nginx, the upstream), on single-contact GETs: one wrk run
# of 6 s per mode, the threads' utime + stime from /proc read over its
# middle 4 s. Shows where the trail's cost lands: the runtime threads
# (building, sealing and waiting for events) or the writer thread
# (`consentry-audit`: SQLite and fsync).
#   bench/cpu.sh [ROUNDS]        (needs ../shared/bench/setup.sh run once)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
R=${1:-2}
run=/tmp/consentry-cpu-bench
. "$here/lib.sh"
prelude "$run"
start_audit_pair "$run"
nginx_worker=$(pgrep -P "$(cat "$run/A.pid")" | head -1)
# "thread-name ticks" for every thread of PID, then nginx's worker.
snap() {
  for t in /proc/"$1"/task/*; do echo "$(tr ' ' _ < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done
  echo "nginx $(awk '{print $14 + $15}' /proc/"$nginx_worker"/stat)"
}
for r in $(seq "$R"); do
  for mode in off on; do
    pid=$on_pid port=18092; [ "$mode" = off ] && { pid=$off_pid port=18093; }
    wrk -t1 -c"${CONNS:-32}" -d6s -H "X-Api-Key: $KEY" "http://127.0.0.1:$port/api/contacts/1" > "$run/wrk.out" &
    w=$!; sleep 1
    snap "$pid" > "$run/before"; t0=$(date +%s.%N)
    sleep 4
    snap "$pid" > "$run/after"; t1=$(date +%s.%N)
    wait "$w"
    rps=$(awk '/Requests\/sec/{print $2}' "$run/wrk.out")
    python3 - "$run/before" "$run/after" "$rps" "$t0" "$t1" "$(getconf CLK_TCK)" "$mode" <<'PY'
import collections, sys
before, after, rps, t0, t1, hz, mode = sys.argv[1:]
def read(p):
    c = collections.Counter()
    for line in open(p):
        name, ticks = line.split()
        c[name] += int(ticks)
    return c
a, b = read(before), read(after)
reqs = float(rps) * (float(t1) - float(t0))
us = {k: (b[k] - a[k]) / int(hz) / reqs * 1e6 for k in b if k != "nginx"}
print("audit %-3s %6.0f req/s  gateway %5.1f µs/request (%s)  nginx %4.1f" % (
    mode, float(rps), sum(us.values()),
    ", ".join("%s %.1f" % (k, v) for k, v in sorted(us.items()) if v > 0),
    (b["nginx"] - a["nginx"]) / int(hz) / reqs * 1e6))
PY
  done
done
