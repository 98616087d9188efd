#!/usr/bin/env bash
# Events folded per second by 1, 2 and 4 `callfold projector` processes on PostgreSQL.
#
# Fills a fresh database through `callfold ingest` with simulated traffic (no projector
# running), then, for each worker count, marks every call to be folded again, starts that many
# projector processes and times how long they take to empty the fold queue.
#
# Usage: benches/fold-workers.sh [CALLS]    (default 20000 calls, about 100,000 events)
# Needs: a release build (cargo build --release -p callfold) and PostgreSQL reachable as
# postgres@127.0.0.1:5432 (override with PGHOST, PGPORT, PGUSER).
set -euo pipefail
calls=${1:-20000}
root=$(cd "$(dirname "$0")/.." && pwd)
callfold="$root/target/release/callfold"
db=callfold_bench_fold
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
export CALLFOLD_WEBHOOK_SECRETS=whsec_ZGVtby1zZWNyZXQtY2hhbmdlLW1l RUST_LOG=warn
psql -qd postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

"$callfold" ingest --listen 127.0.0.1:18461 & pids+=($!)
until curl -fs http://127.0.0.1:18461/readyz >/dev/null; do sleep 0.2; done
"$callfold" simulate --url http://127.0.0.1:18461/webhooks/allo --calls "$calls" \
    --duplicates 0.05 --shuffle >/dev/null
events=$(psql -qtAd "$db" -c "SELECT count(*) FROM events WHERE call_key IS NOT NULL")
echo "log: $events call events in $calls calls"
printf '%-8s %10s %12s\n' workers seconds 'events/s'
for workers in 1 2 4; do
    psql -qd "$db" -c "INSERT INTO calls_to_fold (call_key, marked_at_us) \
        SELECT DISTINCT call_key, 0 FROM events WHERE call_key IS NOT NULL \
        ON CONFLICT (call_key) DO UPDATE SET version = calls_to_fold.version + 1"
    started=$(date +%s.%N)
    workers_pids=()
    for n in $(seq "$workers"); do
        "$callfold" projector --listen "127.0.0.1:$((18470 + n))" & workers_pids+=($!)
    done
    pids+=("${workers_pids[@]}")
    until [ "$(psql -qtAd "$db" -c 'SELECT count(*) FROM calls_to_fold')" = 0 ]; do sleep 0.1; done
    elapsed=$(echo "$(date +%s.%N) - $started" | bc)
    kill "${workers_pids[@]}"; wait "${workers_pids[@]}" 2>/dev/null || true
    printf '%-8s %10.2f %12.0f\n' "$workers" "$elapsed" "$(echo "$events / $elapsed" | bc -l)"
done
