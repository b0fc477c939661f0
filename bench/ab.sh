#!/usr/bin/env bash
# Interleaved A/B rounds: nginx B (the reference) and two gateway builds that
# are already running, for comparing a change. Prints median ratios to B.
#   bench/ab.sh [PATH] [ROUNDS]     (gateways on :18090 and :18091, nginx B on :18081)
# Start nginx A and B as ../shared/bench/run_peers.sh does, and the two
# gateways with configs that differ only in `listen`.
set -euo pipefail
P=${1:-/api/contacts/1}; R=${2:-6}
KEY=${KEY:-bench-key-0123456789abcdef}
for r in $(seq "$R"); do
  b=$(wrk -t1 -c32 -d4s "http://127.0.0.1:18081$P" | awk '/Requests\/sec/{print $2}')
  e1=$(wrk -t1 -c32 -d4s -H "X-Api-Key: $KEY" "http://127.0.0.1:18090$P" | awk '/Requests\/sec/{print $2}')
  e2=$(wrk -t1 -c32 -d4s -H "X-Api-Key: $KEY" "http://127.0.0.1:18091$P" | awk '/Requests\/sec/{print $2}')
  echo "$b $e1 $e2"
done | python3 -c "
import sys, statistics
r1, r2 = [], []
for l in sys.stdin:
    b, e1, e2 = map(float, l.split())
    r1.append(e1 / b); r2.append(e2 / b)
print('A (:18090) %.2f (%.2f-%.2f)   B (:18091) %.2f (%.2f-%.2f)' % (
    statistics.median(r1), min(r1), max(r1), statistics.median(r2), min(r2), max(r2)))"
