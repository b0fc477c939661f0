#!/usr/bin/env bash
# What the durable audit trail costs the whole proxy: the peers' policy with
# the audit trail on (every response waits for its group-committed, fsync'd
# event) against the same gateway with `storage.audit: off`, interleaved wrk
# rounds against one nginx upstream (target A of ../shared/bench). Prints,
# per path, the median of on / off.
#   bench/audit.sh [ROUNDS]        (needs ../shared/bench/setup.sh run once)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
R=${1:-6}
run=/tmp/consentry-audit-bench
. "$here/lib.sh"
prelude "$run"
start_audit_pair "$run"
for p in /api/contacts/1 /api/contacts; do
  ab "$p" "$R" 18093 "audit-off" 18092 "audit-on"
done
"$bin" audit verify --config "$run/on/consentry.yaml"
