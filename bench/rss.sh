#!/usr/bin/env bash
# Memory of one gateway under the peers' load: VmHWM/VmRSS at idle, after
# 5 s of wrk on the contact and on the 100-record list, and after three
# 19 MB exports (nginx A of ../shared/bench as the upstream).
#   bench/rss.sh [on|off]            (audit trail; needs ../shared/bench/setup.sh once)
# CONNS=N sets the list's connections (default 32, as in the peer harness).
# BIN=... measures another build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
MODE=${1:-on}
run=/tmp/consentry-rss-bench
. "$here/lib.sh"
prelude "$run"
audit=off; [ "$MODE" = on ] && audit="$run/audit.db"
peer_config "$run" 18099 "$audit"
start_nginx_a "$run"
"$bin" serve --config "$run/consentry.yaml" 2> "$run/err" & gp=$!; pids+=($gp)
wait_ports 18080 18099
mem() { grep -E 'VmHWM|VmRSS' "/proc/$gp/status" | tr -s ' \t' ' ' | tr '\n' ' '; }
echo "audit $MODE, idle:         $(mem)"
wrk -t1 -c32 -d5s -H "X-Api-Key: $KEY" http://127.0.0.1:18099/api/contacts/1 > /dev/null
echo "audit $MODE, after the contact: $(mem)"
wrk -t1 -c"${CONNS:-32}" -d5s -H "X-Api-Key: $KEY" "http://127.0.0.1:18099/api/contacts?limit=100" > /dev/null
echo "audit $MODE, after load:   $(mem)"
for _ in 1 2 3; do curl -s -o /dev/null -H "X-Api-Key: $KEY" http://127.0.0.1:18099/api/export; done
echo "audit $MODE, after export: $(mem)"
