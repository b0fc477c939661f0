#!/usr/bin/env bash
# What consent costs the whole proxy: the peers' policy as is (no consent
# check) against the same policy with `basis: consent` and every subject
# granted, in interleaved wrk rounds against one nginx upstream (target A of
# ../shared/bench). Prints, per path, the median of consent / no-consent.
#   bench/consent.sh [ROUNDS]        (needs ../shared/bench/setup.sh run once)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
R=${1:-6}
run=/tmp/consentry-consent-bench
. "$here/lib.sh"
prelude "$run"
mkdir -p "$run/policies" "$run/plain"
# The peers' config as is, its stores in the run directory (not in bench/).
peer_config "$run/plain" 18090 "$run/plain/audit.db"

# The consent variant: a subject per record, and the purpose needs consent.
sed -e 's/^    fields: /    subject: $.id\n    fields: /' \
    -e 's/^  - purpose: essential.service$/  - purpose: essential.service\n    basis: consent/' \
    "$here/policies/peer.yaml" > "$run/policies/peer.yaml"
sed -e 's/^listen: .*/listen: 127.0.0.1:18091/' "$here/consentry-peer.yaml" > "$run/consentry.yaml"
printf 'storage: { sqlite: %s/consentry.db }\n' "$run" >> "$run/consentry.yaml"
{ echo "subject,purpose,status,at,source"
  for i in $(seq 1 10000); do echo "$i,essential.service,granted,2026-01-01T00:00:00Z,bench"; done
} > "$run/consents.csv"
"$bin" consent import --config "$run/consentry.yaml" "$run/consents.csv"

start_nginx_a "$run"
"$bin" serve --config "$run/plain/consentry.yaml" & pids+=($!)
"$bin" serve --config "$run/consentry.yaml" & pids+=($!)
wait_ports 18080 18090 18091
# Same bodies from both (every subject consented).
for p in /api/contacts/1 /api/contacts; do
  cmp <(curl -s -H "X-Api-Key: $KEY" "http://127.0.0.1:18090$p") \
      <(curl -s -H "X-Api-Key: $KEY" "http://127.0.0.1:18091$p") || { echo "bodies differ on $p" >&2; exit 1; }
done
for p in /api/contacts/1 /api/contacts; do
  ab "$p" "$R" 18090 "without-consent" 18091 "with-consent"
done
