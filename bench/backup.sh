#!/usr/bin/env bash
# bench/backup.sh: dbplane backup/restore against the anchors, on the same data in the
# same run (issue 7): physical backup and restore vs pgBackRest (zstd at the same level,
# one process each), logical backup vs `pg_dump -Fc`, and the peak RSS of the dbplane
# process during its backups (sampled from /proc/PID/status VmHWM).
#
# Bounded for a shared 2-core machine: pgbench scale 20 (~300 MB) by default; set
# SCALE=100 for the issue's ~1.5 GB. Needs root (dbplane's servers run as the `dbplane`
# service user), PostgreSQL 15, pgbackrest and a built dbplane (DBPLANE_BIN, default
# build/dbplane). Prints a Markdown table for docs/benchmarks.md.
set -euo pipefail

BIN=${DBPLANE_BIN:-$(cd "$(dirname "$0")/.." && pwd)/build/dbplane}
SCALE=${SCALE:-20}
LEVEL=${LEVEL:-3}
PGBIN=/usr/lib/postgresql/15/bin
WORK=$(mktemp -d /tmp/dbplane-bench-backup-XXXXXX)
chmod 755 "$WORK"
DATA=$WORK/data
export DBPLANE_BACKUP_ZSTD_LEVEL=$LEVEL

cleanup() {
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/bench.yaml" <<EOF
apiVersion: dbplane/v1
kind: BackupStore
metadata: {name: local}
spec:
  posix: {path: $WORK/store}
---
apiVersion: dbplane/v1
kind: Cluster
metadata: {name: bench}
spec:
  engine: postgresql
  version: "15"
  instances: 1
EOF

"$BIN" up -f "$WORK/bench.yaml" --data-dir "$DATA" > "$WORK/daemon.log" 2>&1 &
DPID=$!
"$BIN" wait --data-dir "$DATA" --timeout 180s > /dev/null
PORT=$("$BIN" status bench -o json --data-dir "$DATA" | python3 -c \
  'import json,sys; print(json.load(sys.stdin)["clusters"][0]["instances"][0]["port"])')
RUN=$(python3 - "$DATA" <<'EOF'
import os, sys
h = 1469598103934665603
for b in os.path.realpath(sys.argv[1]).encode():
    h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
print(f"/tmp/dbplane-{h:016x}")
EOF
)
SOCK=$RUN/s$PORT
PGDATA_SRC=$DATA/clusters/default/bench/bench-0/data

echo "# pgbench -i -s $SCALE" >&2
psql -qX "host=$SOCK port=$PORT user=dbplane_admin dbname=postgres" -c "CREATE DATABASE pgbench"
"$PGBIN/pgbench" -q -i -s "$SCALE" "host=$SOCK port=$PORT user=dbplane_admin dbname=pgbench" >/dev/null 2>&1
psql -qX "host=$SOCK port=$PORT user=dbplane_admin dbname=postgres" -c "CHECKPOINT"
DBSIZE=$(psql -AtX "host=$SOCK port=$PORT user=dbplane_admin dbname=postgres" \
  -c "SELECT pg_size_pretty(sum(pg_database_size(datname))) FROM pg_database")

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

# Runs "$@" (a dbplane command) and prints "<seconds> <peak RSS KiB>" of that process.
timed_rss() {
  local t0 t1 pid peak=0 hwm
  t0=$(now)
  "$@" > "$WORK/last.out" 2> "$WORK/last.err" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
    sleep 0.05
  done
  wait "$pid" || { cat "$WORK/last.err" >&2; return 1; }
  t1=$(now)
  echo "$(secs "$t0" "$t1") $peak"
}

echo "# dbplane physical backup" >&2
read -r DB_PHYS DB_PHYS_RSS < <(timed_rss "$BIN" backup bench --type physical --no-verify \
  --store local -o json --data-dir "$DATA")
PHYS_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/last.out")
PHYS_SIZE=$(du -sb "$WORK/store" | cut -f1)

echo "# dbplane physical restore" >&2
read -r DB_REST _ < <(timed_rss "$BIN" restore "$PHYS_ID" --to "$WORK/restore-dbplane" --data-dir "$DATA")

echo "# dbplane logical backup" >&2
read -r DB_LOG DB_LOG_RSS < <(timed_rss "$BIN" backup bench --type logical --no-verify \
  --store local -o json --data-dir "$DATA")

echo "# pg_dump -Fc" >&2
T0=$(now)
"$PGBIN/pg_dump" -Fc -h "$SOCK" -p "$PORT" -U dbplane_admin -d pgbench -f "$WORK/pgbench.dump"
PGDUMP=$(secs "$T0" "$(now)")
T0=$(now)
"$PGBIN/pg_dump" -Fc -Z0 -h "$SOCK" -p "$PORT" -U dbplane_admin -d pgbench | zstd -q -"$LEVEL" > "$WORK/pgbench.dump.zst"
PGDUMP_ZSTD=$(secs "$T0" "$(now)")

echo "# pgBackRest $(pgbackrest version | cut -d' ' -f2) full backup + restore" >&2
install -d -o dbplane -g dbplane "$WORK/pgbr" "$WORK/pgbr-log"
install -m 644 /dev/null "$WORK/pgbackrest.conf"
PGBR=(runuser -u dbplane -- pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench
      --repo1-path="$WORK/pgbr"
      --log-path="$WORK/pgbr-log" --lock-path="$WORK/pgbr-log" --log-level-console=warn
      --pg1-path="$PGDATA_SRC" --pg1-socket-path="$SOCK" --pg1-port="$PORT"
      --pg1-user=dbplane_admin)
"${PGBR[@]}" stanza-create >/dev/null
T0=$(now)
"${PGBR[@]}" backup --type=full --archive-check=n --start-fast --compress-type=zst \
  --compress-level="$LEVEL" --process-max=1 --repo1-retention-full=9 >/dev/null
PGBR_BK=$(secs "$T0" "$(now)")
PGBR_SIZE=$(du -sb "$WORK/pgbr/backup" | cut -f1)
install -d -m 700 -o dbplane -g dbplane "$WORK/restore-pgbr"
T0=$(now)
runuser -u dbplane -- pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench \
  --repo1-path="$WORK/pgbr" \
  --log-path="$WORK/pgbr-log" --lock-path="$WORK/pgbr-log" --log-level-console=warn \
  --spool-path="$WORK/pgbr-log" --pg1-path="$WORK/restore-pgbr" --process-max=1 restore >/dev/null
PGBR_REST=$(secs "$T0" "$(now)")

cat <<EOF

| pgbench -s $SCALE ($DBSIZE), zstd level $LEVEL, 1 process each | dbplane | anchor | ratio |
|---|---|---|---|
| physical backup (s) | $DB_PHYS | pgBackRest $PGBR_BK | $(python3 -c "print(f'{$DB_PHYS/$PGBR_BK:.2f}x')") |
| physical restore (s) | $DB_REST | pgBackRest $PGBR_REST | $(python3 -c "print(f'{$DB_REST/$PGBR_REST:.2f}x')") |
| physical backup size (MB) | $((PHYS_SIZE / 1000000)) | pgBackRest $((PGBR_SIZE / 1000000)) | |
| logical backup (s) | $DB_LOG | pg_dump -Fc $PGDUMP | $(python3 -c "print(f'{$DB_LOG/$PGDUMP:.2f}x')") |
| logical backup (s) | $DB_LOG | pg_dump -Fc -Z0 \| zstd -$LEVEL $PGDUMP_ZSTD | $(python3 -c "print(f'{$DB_LOG/$PGDUMP_ZSTD:.2f}x')") |
| peak RSS of dbplane, physical backup (MiB) | $((DB_PHYS_RSS / 1024)) | | limit 64 |
| peak RSS of dbplane, logical backup (MiB) | $((DB_LOG_RSS / 1024)) | | limit 64 |
EOF
