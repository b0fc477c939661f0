#!/usr/bin/env bash
# Where the durable audit trail's cost goes, on single-contact GETs: builds
# this commit with bench/ceiling.patch (diagnostic switches in
# src/audit/writer.rs and store.rs, and the io-uring crate; never shipped: they break the trail's contract) in a
# worktree, then runs one gateway per variant, all at once, and one with
# the trail off; interleaved wrk rounds (1 thread, CONNS=32 connections,
# 4 s) against one nginx upstream, as in bench/audit.sh.
#   shipped    as released: each response waits for its fsync'd SQLite commit
#   drop       the event is built, encoded and sealed, then dropped
#   nostore    the writer thread takes it and acknowledges without storing
#   direct     the writer thread writes each batch with one O_DIRECT|O_DSYNC
#              pwrite to a preallocated file (chain hashes; no SQLite, no
#              index, no replay: durable, but not a trail one can query)
#   indexed    direct, and SQLite (no fsync) filled from the journal's events
#              every 10 ms by the same thread: the hot path of a journal
#              design whose index serves queries, erasure and pruning
#   leader     no writer thread: the first request to find no write under
#              way makes it (as direct) on its runtime thread, for all queued
#   uring      no writer thread: a task on the runtime writes each batch (as
#              direct) through io_uring, reaping the completion when the
#              ring turns readable (the patch's only `unsafe`)
#   nowait     as shipped, but the response does not wait for the commit
#   delayN     as shipped, but the writer waits N µs before each batch
#   spinN      as shipped, but after a batch of more than one event the
#              writer polls (yielding) for up to N µs before it parks
#   bench/ceiling.sh [ROUNDS [VARIANT...]]   (needs ../shared/bench/setup.sh once)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
R=${1:-6}; shift || true
variants=("${@:-shipped drop nostore direct indexed uring}")
read -r -a variants <<< "${variants[*]}"
wt=/tmp/consentry-ceiling-src
git -C "$here/.." worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
git -C "$here/.." worktree prune
git -C "$here/.." worktree add -q --detach "$wt" HEAD
git -C "$wt" apply "$here/ceiling.patch" || { echo "bench/ceiling.patch no longer applies to this commit (it changes src/audit/writer.rs, store.rs and Cargo.toml); redo its switches" >&2; exit 1; }
# Its own target directory: the patched binary never replaces target/release.
CARGO_TARGET_DIR="$here/../target/ceiling" cargo build --release --manifest-path "$wt/Cargo.toml" -q
BIN="$here/../target/ceiling/release/consentry"
run=/tmp/consentry-ceiling
. "$here/lib.sh"
prelude "$run"
trap 'kill "${pids[@]}" 2>/dev/null || true; git -C "$here/.." worktree remove --force "$wt" 2>/dev/null || true' EXIT
mkdir -p "$run/off"
peer_config "$run/off" 18093 off
start_nginx_a "$run"
"$bin" serve --config "$run/off/consentry.yaml" 2> "$run/off.err" & pids+=($!)
# Every variant runs at once, each with its own trail, so that each round
# measures them all within seconds of each other (this VM's speed drifts
# by a fifth over minutes); the order rotates from round to round.
ports=(18093)
for i in "${!variants[@]}"; do
  v=${variants[$i]} port=$((18100 + i))
  case $v in
    shipped) env=() ;;
    drop|nostore|nowait|direct|indexed|leader|uring) env=(CEILING=$v) ;;
    delay*) env=(CEILING_DELAY_US=${v#delay}) ;;
    spin*) env=(CEILING_SPIN_US=${v#spin}) ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  mkdir -p "$run/$v"
  peer_config "$run/$v" "$port" "$run/$v/audit.db"
  env "${env[@]}" CEILING_FILE="$run/$v/journal" "$bin" serve --config "$run/$v/consentry.yaml" 2> "$run/$v.err" & pids+=($!)
  ports+=("$port")
done
wait_ports 18080 "${ports[@]}"
n=${#ports[@]}
for r in $(seq "$R"); do
  for k in $(seq 0 $((n - 1))); do
    port=${ports[$(((k + r) % n))]}
    out=$(wrk -t1 -c"${CONNS:-32}" -d4s -H "X-Api-Key: $KEY" "http://127.0.0.1:$port/api/contacts/1")
    # A variant that fails its requests must not pass for a fast one.
    if grep -q "Non-2xx" <<< "$out"; then echo "port $port: $(grep Non-2xx <<< "$out")" >&2; exit 1; fi
    echo "$r $port $(awk '/Requests\/sec/{print $2}' <<< "$out")"
  done
done | python3 -c "
import collections, statistics, sys
names = dict(zip('${ports[*]}'.split(), ['off'] + '${variants[*]}'.split()))
rps = collections.defaultdict(dict)
for line in sys.stdin:
    r, port, v = line.split()
    rps[r][names[port]] = float(v)
print('%d rounds of 4 s; on / off is per round, then the median (range)' % len(rps))
print('%-9s %9s %s' % ('', 'req/s', 'on / off'))
print('%-9s %9.0f' % ('off', statistics.median(x['off'] for x in rps.values())))
for v in '${variants[*]}'.split():
    q = [x[v] / x['off'] for x in rps.values()]
    print('%-9s %9.0f %5.2fx (%.2f-%.2f)' % (v, statistics.median(x[v] for x in rps.values()), statistics.median(q), min(q), max(q)))
"
