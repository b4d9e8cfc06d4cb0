#!/usr/bin/env bash
# bench/backup.sh: dbplane backup/restore against the anchors, on the same data in the
# same run (issue 7): physical backup and restore vs pgBackRest (zstd at the same level,
# one process each), logical backup vs `pg_dump -Fc` (and vs `pg_dump -Fc -Z0 | zstd`,
# with the sizes of all artifacts), and the peak RSS of the dbplane process during its
# backups (sampled from /proc/PID/status VmHWM). REPS (default 2) rounds of the logical
# and MariaDB measurements, tools alternating; the tables show the fastest of each.
#
# ONLY=logical runs just the PostgreSQL logical rows (no physical backup, no pgBackRest,
# no pure-zstd variant). TEXT_ROWS=N (default 0: off) adds a second PostgreSQL cluster
# with one table of N rows of md5 text (~180 bytes a row, 2,000,000 = ~355 MB, little
# repetition, unlike pgbench's blank-padded rows) and the same logical rounds on it: zlib's
# fast and lazy levels trade places between the two kinds of data (docs/benchmarks.md). BASE_BIN=/path/to/an/older/dbplane adds that binary's logical
# and MariaDB physical backups (and the MariaDB restore) to the same rounds (a same-run A/B of a change).
#
# MariaDB (ONLY=mariadb runs just that part): physical backup and restore vs
# `mariadb-backup --backup` itself (into a target dir, and streamed through zstd at the
# same level), on MDB_ROWS rows (default 1,000,000, ~250 MB).
#
# Bounded for a shared 2-core machine: pgbench scale 20 (~300 MB) by default; set
# SCALE=100 for the issue's ~1.5 GB. Needs root (dbplane's servers run as the `dbplane`
# service user), PostgreSQL 15, pgbackrest, MariaDB 10.11 with mariadb-backup and a built
# dbplane (DBPLANE_BIN, default build/dbplane). Prints Markdown tables for
# docs/benchmarks.md.
set -euo pipefail

BIN=${DBPLANE_BIN:-$(cd "$(dirname "$0")/.." && pwd)/build/dbplane}
SCALE=${SCALE:-20}
LEVEL=${LEVEL:-3}
ONLY=${ONLY:-all}
MDB_ROWS=${MDB_ROWS:-1000000}
PGBIN=/usr/lib/postgresql/15/bin
WORK=$(mktemp -d /tmp/dbplane-bench-backup-XXXXXX)
chmod 755 "$WORK"
DATA=$WORK/data
export DBPLANE_BACKUP_ZSTD_LEVEL=$LEVEL

cleanup() {
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
  [ -n "${MPID:-}" ] && kill "$MPID" 2>/dev/null && wait "$MPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# Runs "$@" (a dbplane command) and prints "<seconds> <peak RSS KiB>" of that process.
# VmHWM is the kernel's own peak counter, so sampling it every 0.2 s with shell builtins
# loses nothing but the last interval, and forks nothing that would compete for the CPU
# with what is being timed (an awk every 50 ms cost dbplane ~1 s on a busy 2-core box).
# The end time is taken by a subshell the moment the command exits (`wait` there returns
# on its exit), not after the sampling loop notices it: that loop's 0.2 s sleeps used to
# add 0.08-0.25 s to every dbplane figure (`sleep 1.01` measured 1.18 s, `sleep 1.15`
# 1.35 s), while the anchors were timed directly.
timed_rss() {
  local t0 t1 pid= wpid peak=0 k v _
  rm -f "$WORK/timed.pid" "$WORK/timed.end"
  t0=$(now)
  ( "$@" > "$WORK/last.out" 2> "$WORK/last.err" &
    echo $! > "$WORK/timed.pid"
    wait $!
    rc=$?
    now > "$WORK/timed.end"
    exit $rc ) &
  wpid=$!
  while kill -0 "$wpid" 2>/dev/null; do
    if [ -z "$pid" ]; then
      { read -r pid < "$WORK/timed.pid"; } 2>/dev/null || pid=
    fi
    if [ -n "$pid" ]; then
      { while read -r k v _; do
          [ "$k" = VmHWM: ] && [ "$v" -gt "$peak" ] && peak=$v
        done < "/proc/$pid/status"; } 2>/dev/null || true
    fi
    sleep 0.2
  done
  wait "$wpid" || { cat "$WORK/last.err" >&2; return 1; }
  read -r t1 < "$WORK/timed.end"
  echo "$(secs "$t0" "$t1") $peak"
}

# ---- MariaDB: dbplane physical backup/restore vs mariadb-backup, same data, same run ----
bench_mariadb() {
  local data=$WORK/mdata inst
  inst=$data/clusters/default/mbench/mbench-0
  cat > "$WORK/mbench.yaml" <<EOF
apiVersion: dbplane/v1
kind: BackupStore
metadata: {name: local}
spec:
  posix: {path: $WORK/mstore}
---
apiVersion: dbplane/v1
kind: Cluster
metadata: {name: mbench}
spec:
  engine: mariadb
  version: "10.11"
  instances: 1
  memory: 512Mi
EOF
  "$BIN" up -f "$WORK/mbench.yaml" --data-dir "$data" > "$WORK/mdaemon.log" 2>&1 &
  MPID=$!
  "$BIN" wait --data-dir "$data" --timeout 180s > /dev/null
  local sock cnf=$inst/my.cnf
  sock=$(sed -n 's/^socket = //p' "$cnf")
  local sql=(mariadb --no-defaults -S "$sock" -u root)
  echo "# MariaDB: $MDB_ROWS rows" >&2
  "${sql[@]}" -e "CREATE DATABASE bench; CREATE TABLE bench.t (id INT PRIMARY KEY,
    k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL, KEY k (k)) ENGINE=InnoDB;
    INSERT INTO bench.t SELECT seq, seq * 7 % 100000, CONCAT(MD5(seq), MD5(seq + 1), MD5(seq + 2)),
      MD5(seq * 3) FROM bench.seq_1_to_${MDB_ROWS};"
  local mdbsize
  mdbsize=$(du -sm "$inst/data" | cut -f1)

  # Each measurement REPS times (default 2), dbplane and the anchors alternating so
  # neither always runs on a warmer page cache, each after a `sync` so none pays for the
  # write-back of the one before (the target-dir copy dirties the whole data set); the
  # table shows the fastest of each.
  local mb=(runuser -u dbplane -- mariadb-backup --defaults-file="$cnf" --user=dbplane
            --socket="$sock")
  install -d -o dbplane -g dbplane "$WORK/mb"
  local rep t0 x m_bk= m_rss=0 m_rest= m_rest_base= m_id m_size a_dir= a_stream= a_sync= a_prep= a_size rss m_base=
  fastest() { python3 -c "import sys; print(min(float(v) for v in sys.argv[1:] if v))" "$@"; }
  for rep in $(seq 1 "${REPS:-2}"); do
    echo "# [$rep] mariadb-backup --backup --target-dir" >&2
    rm -rf "$WORK/mb/dir"
    sync
    t0=$(now)
    "${mb[@]}" --backup --target-dir="$WORK/mb/dir" > "$WORK/mb.log" 2>&1
    a_dir=$(fastest "$a_dir" "$(secs "$t0" "$(now)")")

    echo "# [$rep] dbplane physical backup (MariaDB)" >&2
    sync
    read -r x rss < <(timed_rss "$BIN" backup mbench --type physical --no-verify \
      --store local -o json --data-dir "$data")
    m_bk=$(fastest "$m_bk" "$x")
    [ "$rss" -gt "$m_rss" ] && m_rss=$rss
    m_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/last.out")

    if [ -n "${BASE_BIN:-}" ]; then
      echo "# [$rep] BASE_BIN physical backup (MariaDB)" >&2
      sync
      read -r x _ < <(timed_rss "$BASE_BIN" backup mbench --type physical --no-verify \
        --store local -o json --data-dir "$data")
      m_base=$(fastest "$m_base" "$x")
    fi

    echo "# [$rep] mariadb-backup --backup --stream=mbstream | zstd -$LEVEL" >&2
    sync
    t0=$(now)
    "${mb[@]}" --backup --stream=mbstream 2>> "$WORK/mb.log" | zstd -q -"$LEVEL" > "$WORK/mb/stream.zst"
    a_stream=$(fastest "$a_stream" "$(secs "$t0" "$(now)")")

    echo "# [$rep] the same, then fsync of the file (as dbplane does)" >&2
    sync
    t0=$(now)
    "${mb[@]}" --backup --stream=mbstream 2>> "$WORK/mb.log" | zstd -q -"$LEVEL" > "$WORK/mb/stream.zst"
    sync "$WORK/mb/stream.zst"
    a_sync=$(fastest "$a_sync" "$(secs "$t0" "$(now)")")

    echo "# [$rep] zstd -d | mbstream -x + mariadb-backup --prepare" >&2
    rm -rf "$WORK/mb/restore"
    install -d -m 700 -o dbplane -g dbplane "$WORK/mb/restore"
    sync
    t0=$(now)
    zstd -dc "$WORK/mb/stream.zst" | runuser -u dbplane -- mbstream -x -C "$WORK/mb/restore"
    runuser -u dbplane -- mariadb-backup --prepare --target-dir="$WORK/mb/restore" >> "$WORK/mb.log" 2>&1
    a_prep=$(fastest "$a_prep" "$(secs "$t0" "$(now)")")

    # The restore right after the anchor's was often 0.5-1 s slower than the next one
    # (2026-11-23, bk7 section of docs/benchmarks.md): with BASE_BIN, the two binaries
    # take turns in that slot (odd rounds BIN first, even rounds BASE_BIN first).
    local order=(BIN BASE_BIN) who
    [ -n "${BASE_BIN:-}" ] && [ $((rep % 2)) -eq 0 ] && order=(BASE_BIN BIN)
    for who in "${order[@]}"; do
      [ "$who" = BASE_BIN ] && [ -z "${BASE_BIN:-}" ] && continue
      echo "# [$rep] $who physical restore (MariaDB)" >&2
      rm -rf "$WORK/mrestore-dbplane"
      sync
      read -r x _ < <(timed_rss "${!who}" restore "$m_id" --to "$WORK/mrestore-dbplane" --data-dir "$data")
      if [ "$who" = BIN ]; then m_rest=$(fastest "$m_rest" "$x"); else m_rest_base=$(fastest "$m_rest_base" "$x"); fi
    done
  done
  m_size=$(du -sb "$WORK/mstore/default/mbench/$m_id" | cut -f1)
  a_size=$(stat -c %s "$WORK/mb/stream.zst")
  kill "$MPID" 2>/dev/null && wait "$MPID" 2>/dev/null || true
  MPID=

  echo "load average at the end of the MariaDB part: $(cut -d' ' -f1-3 /proc/loadavg)"
  cat <<EOF

| MariaDB $MDB_ROWS rows (${mdbsize} MB data dir), zstd level $LEVEL, fastest of ${REPS:-2} | dbplane | anchor | ratio |
|---|---|---|---|
| physical backup (s) | $m_bk | \`mariadb-backup --backup --target-dir\` $a_dir | $(python3 -c "print(f'{$m_bk/$a_dir:.2f}x')") |
| physical backup (s) | $m_bk | \`mariadb-backup --backup --stream \| zstd -$LEVEL\` $a_stream | $(python3 -c "print(f'{$m_bk/$a_stream:.2f}x')") |
| physical backup (s) | $m_bk | \`--stream \| zstd -$LEVEL\`, then \`sync FILE\` $a_sync | $(python3 -c "print(f'{$m_bk/$a_sync:.2f}x')") |
| physical restore (s) | $m_rest | \`zstd -d \| mbstream -x\` + \`--prepare\` $a_prep | $(python3 -c "print(f'{$m_rest/$a_prep:.2f}x')") |
| physical backup size (MB) | $((m_size / 1000000)) | stream \| zstd $((a_size / 1000000)) | |
$([ -n "${BASE_BIN:-}" ] && echo "| BASE_BIN physical backup (s) | $m_base | \`--stream \| zstd -$LEVEL\` $a_stream | $(python3 -c "print(f'{$m_base/$a_stream:.2f}x')") |")
$([ -n "${BASE_BIN:-}" ] && echo "| BASE_BIN physical restore (s) | $m_rest_base | \`zstd -d \| mbstream -x\` + \`--prepare\` $a_prep | $(python3 -c "print(f'{$m_rest_base/$a_prep:.2f}x')") |")
| peak RSS of dbplane, physical backup (MiB) | $((m_rss / 1024)) | | limit 64 |
EOF
}

if [ "$ONLY" = mariadb ]; then
  bench_mariadb
  exit 0
fi


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
TEXT_ROWS=${TEXT_ROWS:-0}
if [ "$TEXT_ROWS" -gt 0 ]; then
  cat >> "$WORK/bench.yaml" <<EOF
---
apiVersion: dbplane/v1
kind: Cluster
metadata: {name: btext}
spec:
  engine: postgresql
  version: "15"
  instances: 1
EOF
fi

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

if [ "$ONLY" != logical ]; then
echo "# dbplane physical backup" >&2
read -r DB_PHYS DB_PHYS_RSS < <(timed_rss "$BIN" backup bench --type physical --no-verify \
  --store local -o json --data-dir "$DATA")
PHYS_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/last.out")
PHYS_SIZE=$(du -sb "$WORK/store" | cut -f1)

echo "# dbplane physical restore" >&2
read -r DB_REST _ < <(timed_rss "$BIN" restore "$PHYS_ID" --to "$WORK/restore-dbplane" --data-dir "$DATA")
fi

# Logical: REPS rounds (default 2), dbplane and the anchors alternating, each after a
# `sync`; the table shows the fastest of each. dbplane's logical runs use its own zstd
# level for logical parts (engine_ops_t.logical_zstd_level: 1 over pg_dump's zlib
# archive), not LEVEL: the anchor here is `pg_dump -Fc`, not a zstd level. dbplane's default runs pg_dump with zlib
# level 1 inside the archive and zstd on top (DBPLANE_PG_DUMP_LEVEL, postgresql_backup.c);
# "pure zstd" is DBPLANE_PG_DUMP_LEVEL=0 (raw archive, zstd in dbplane only).
fastest() { python3 -c "import sys; print(min(float(v) for v in sys.argv[1:] if v))" "$@"; }
DB_LOG= DB_LOG_RSS=0 DB_LOG0= PGDUMP= PGDUMP_ZSTD= DB_LOG_BASE=
for rep in $(seq 1 "${REPS:-2}"); do
  echo "# [$rep] pg_dump -Fc" >&2
  sync
  T0=$(now)
  "$PGBIN/pg_dump" -Fc -h "$SOCK" -p "$PORT" -U dbplane_admin -d pgbench -f "$WORK/pgbench.dump"
  PGDUMP=$(fastest "$PGDUMP" "$(secs "$T0" "$(now)")")

  echo "# [$rep] dbplane logical backup" >&2
  sync
  read -r x rss < <(timed_rss env -u DBPLANE_BACKUP_ZSTD_LEVEL "$BIN" backup bench \
    --type logical --no-verify \
    --store local -o json --data-dir "$DATA")
  DB_LOG=$(fastest "$DB_LOG" "$x")
  [ "$rss" -gt "$DB_LOG_RSS" ] && DB_LOG_RSS=$rss
  LOG_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/last.out")

  if [ -n "${BASE_BIN:-}" ]; then
    echo "# [$rep] BASE_BIN logical backup" >&2
    sync
    read -r x _ < <(timed_rss env -u DBPLANE_BACKUP_ZSTD_LEVEL "$BASE_BIN" backup bench \
      --type logical --no-verify \
      --store local -o json --data-dir "$DATA")
    DB_LOG_BASE=$(fastest "$DB_LOG_BASE" "$x")
  fi

  echo "# [$rep] pg_dump -Fc -Z0 | zstd -$LEVEL" >&2
  sync
  T0=$(now)
  "$PGBIN/pg_dump" -Fc -Z0 -h "$SOCK" -p "$PORT" -U dbplane_admin -d pgbench | zstd -q -"$LEVEL" > "$WORK/pgbench.dump.zst"
  PGDUMP_ZSTD=$(fastest "$PGDUMP_ZSTD" "$(secs "$T0" "$(now)")")

  [ "$ONLY" = logical ] && continue
  echo "# [$rep] dbplane logical backup, DBPLANE_PG_DUMP_LEVEL=0" >&2
  sync
  read -r x _ < <(DBPLANE_PG_DUMP_LEVEL=0 timed_rss "$BIN" backup bench --type logical \
    --no-verify --store local -o json --data-dir "$DATA")
  DB_LOG0=$(fastest "$DB_LOG0" "$x")
  LOG0_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/last.out")
done
# The same logical rounds on text data (TEXT_ROWS, see the top): `pg_dump -Fc` at its
# default zlib level against dbplane's default (zlib 1 inside the archive, zstd on top).
TEXT_TABLE=
if [ "$TEXT_ROWS" -gt 0 ]; then
  TPORT=$("$BIN" status btext -o json --data-dir "$DATA" | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["clusters"][0]["instances"][0]["port"])')
  TCONN="host=$RUN/s$TPORT port=$TPORT user=dbplane_admin"
  echo "# text data: $TEXT_ROWS rows" >&2
  psql -qX "$TCONN dbname=postgres" -c "CREATE DATABASE app"
  psql -qX "$TCONN dbname=app" -c "CREATE TABLE t AS SELECT g AS id, g * 7 % 100000 AS k,
    md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) AS c, md5((g * 3)::text) AS pad,
    now() - (g || ' s')::interval AS ts FROM generate_series(1, $TEXT_ROWS) g" -c CHECKPOINT
  TSIZE=$(psql -AtX "$TCONN dbname=postgres" -c "SELECT pg_size_pretty(pg_database_size('app'))")
  T_DUMP= T_DB= T_DUMP1=
  for rep in $(seq 1 "${REPS:-2}"); do
    echo "# [$rep] text: pg_dump -Fc" >&2
    sync
    T0=$(now)
    "$PGBIN/pg_dump" -Fc -h "$RUN/s$TPORT" -p "$TPORT" -U dbplane_admin -d app -f "$WORK/text.dump"
    T_DUMP=$(fastest "$T_DUMP" "$(secs "$T0" "$(now)")")
    echo "# [$rep] text: dbplane logical backup" >&2
    sync
    read -r x _ < <(timed_rss env -u DBPLANE_BACKUP_ZSTD_LEVEL "$BIN" backup btext \
      --type logical --no-verify \
      --store local -o json --data-dir "$DATA")
    T_DB=$(fastest "$T_DB" "$x")
    T_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/last.out")
    echo "# [$rep] text: pg_dump -Fc -Z1" >&2
    sync
    T0=$(now)
    "$PGBIN/pg_dump" -Fc -Z1 -h "$RUN/s$TPORT" -p "$TPORT" -U dbplane_admin -d app -f "$WORK/text1.dump"
    T_DUMP1=$(fastest "$T_DUMP1" "$(secs "$T0" "$(now)")")
  done
  T_SIZE=$(du -sb "$WORK/store/default/btext/$T_ID" | cut -f1)
  TEXT_TABLE="
| text, $TEXT_ROWS rows ($TSIZE), fastest of ${REPS:-2} | dbplane | anchor | ratio |
|---|---|---|---|
| logical backup (s) | $T_DB | \`pg_dump -Fc\` $T_DUMP | $(python3 -c "print(f'{$T_DB/$T_DUMP:.2f}x')") |
| logical backup (s) | $T_DB | \`pg_dump -Fc -Z1\` $T_DUMP1 | $(python3 -c "print(f'{$T_DB/$T_DUMP1:.2f}x')") |
| logical backup size (bytes) | $T_SIZE | \`pg_dump -Fc\` $(stat -c %s "$WORK/text.dump"); \`-Z1\` $(stat -c %s "$WORK/text1.dump") | |"
fi
LOG_SIZE=$(du -sb "$WORK/store/default/bench/$LOG_ID" | cut -f1)
PGDUMP_SIZE=$(stat -c %s "$WORK/pgbench.dump")
PGDUMP_ZSTD_SIZE=$(stat -c %s "$WORK/pgbench.dump.zst")

if [ "$ONLY" = logical ]; then
  echo "load average at the end of the logical part: $(cut -d' ' -f1-3 /proc/loadavg)"
  cat <<EOF

| pgbench -s $SCALE ($DBSIZE), zstd level $LEVEL, fastest of ${REPS:-2} | dbplane | anchor | ratio |
|---|---|---|---|
| logical backup (s) | $DB_LOG | \`pg_dump -Fc\` $PGDUMP | $(python3 -c "print(f'{$DB_LOG/$PGDUMP:.2f}x')") |
| logical backup (s) | $DB_LOG | \`pg_dump -Fc -Z0 \| zstd -$LEVEL\` $PGDUMP_ZSTD | $(python3 -c "print(f'{$DB_LOG/$PGDUMP_ZSTD:.2f}x')") |
$([ -n "${BASE_BIN:-}" ] && echo "| BASE_BIN logical backup (s) | $DB_LOG_BASE | \`pg_dump -Fc\` $PGDUMP | $(python3 -c "print(f'{$DB_LOG_BASE/$PGDUMP:.2f}x')") |")
| logical backup size (bytes) | $LOG_SIZE | \`pg_dump -Fc\` $PGDUMP_SIZE | |
| peak RSS of dbplane, logical backup (MiB) | $((DB_LOG_RSS / 1024)) | | limit 64 |
$TEXT_TABLE
EOF
  exit 0
fi
LOG0_SIZE=$(du -sb "$WORK/store/default/bench/$LOG0_ID" | cut -f1)

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

echo "load average at the end of the PostgreSQL part: $(cut -d' ' -f1-3 /proc/loadavg)"
cat <<EOF

| pgbench -s $SCALE ($DBSIZE), zstd level $LEVEL, 1 process each | dbplane | anchor | ratio |
|---|---|---|---|
| physical backup (s) | $DB_PHYS | pgBackRest $PGBR_BK | $(python3 -c "print(f'{$DB_PHYS/$PGBR_BK:.2f}x')") |
| physical restore (s) | $DB_REST | pgBackRest $PGBR_REST | $(python3 -c "print(f'{$DB_REST/$PGBR_REST:.2f}x')") |
| physical backup size (MB) | $((PHYS_SIZE / 1000000)) | pgBackRest $((PGBR_SIZE / 1000000)) | |
| logical backup (s), fastest of ${REPS:-2} | $DB_LOG | \`pg_dump -Fc\` $PGDUMP | $(python3 -c "print(f'{$DB_LOG/$PGDUMP:.2f}x')") |
| logical backup (s), fastest of ${REPS:-2} | $DB_LOG | \`pg_dump -Fc -Z0 \| zstd -$LEVEL\` $PGDUMP_ZSTD | $(python3 -c "print(f'{$DB_LOG/$PGDUMP_ZSTD:.2f}x')") |
| logical backup, pure zstd (DBPLANE_PG_DUMP_LEVEL=0) (s) | $DB_LOG0 | \`pg_dump -Fc\` $PGDUMP | $(python3 -c "print(f'{$DB_LOG0/$PGDUMP:.2f}x')") |
| logical backup size (bytes) | $LOG_SIZE (pure zstd: $LOG0_SIZE) | \`pg_dump -Fc\` $PGDUMP_SIZE; \`-Z0 \| zstd\` $PGDUMP_ZSTD_SIZE | |
| peak RSS of dbplane, physical backup (MiB) | $((DB_PHYS_RSS / 1024)) | | limit 64 |
| peak RSS of dbplane, logical backup (MiB) | $((DB_LOG_RSS / 1024)) | | limit 64 |
$TEXT_TABLE
EOF

if [ "$ONLY" = all ]; then
  bench_mariadb
fi
