#!/usr/bin/env bash
# pg-proxy.sh: dbplane's PostgreSQL proxy against PgBouncer (Debian's package), side by side
# on one PostgreSQL 15 server, both in transaction pooling with the same pool size and the
# same transport to the server (TCP 127.0.0.1). pgbench runs alternate between the two;
# for each scenario the script prints TPS of each, the ratio dbplane/PgBouncer, and the
# CPU time (utime+stime of the pooler process from /proc, 10 ms ticks) per transaction.
#
# Scenarios: select-only 50 and 200 clients, tpcb-like 50 clients, -C (new connection per
# transaction) 20 clients, the same -C with a 16-iteration SCRAM verifier (user bench_fast,
# same verifier in the server and both poolers), -M prepared select-only 50 clients (PgBouncer 1.18 has no
# prepared-statement support in transaction mode: its failure is reported), and 5000 idle
# logged-in clients (RSS per client connection of each pooler).
#
# CPU: besides the per-scenario CPU time per transaction, a "cpu" table re-runs
# select-only (50 and 200 clients) and tpcb-like for both poolers in the same run and
# prints utime+stime per transaction and the ratio. Callgrind: each pooler is started once
# more under `valgrind --tool=callgrind` on its own port; after a warm-up (logins, pool
# filled) its counters are zeroed (`callgrind_control -z`, i.e. start-up subtracted), then
# `pgbench -S -M simple -c 10 -t CG_T` runs and the counters are dumped: user-space
# instructions (Ir) per transaction of each pooler and the ratio dbplane/PgBouncer.
#
# Usage: bench/pg-proxy.sh [-T seconds] [-s scale] [-r repetitions] [-w proxy-workers]
#        env DBPLANE_BIN (default build/dbplane), POOL (20), IDLE (5000), SKIP_IDLE=1,
#        ONLY_IDLE=1, SKIP_CALLGRIND=1, ONLY_CPU=1 (CPU table + callgrind only), CG_T (1000
#        transactions per client under callgrind), LATENCY_SCHED=1 (dbplane's workers keep
#        SCHED_OTHER instead of the default SCHED_BATCH, see docs/proxy.md "Scheduling")
# Run as root (PostgreSQL and PgBouncer run as the `dbplane` user) or as that user.
# Loopback only; every run is bounded by pgbench -T and `timeout`.
set -euo pipefail

T=12; SCALE=10; REPS=1; WORKERS=1
while getopts "T:s:r:w:" o; do
  case $o in T) T=$OPTARG;; s) SCALE=$OPTARG;; r) REPS=$OPTARG;; w) WORKERS=$OPTARG;; *) exit 2;; esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/pg-anchor.sh
source "$ROOT/bench/lib/pg-anchor.sh"
BIN=${DBPLANE_BIN:-$ROOT/build/dbplane}
POOL=${POOL:-20}
IDLE=${IDLE:-5000}
PGBIN=/usr/lib/postgresql/15/bin
PW=benchpw
# Free loopback ports, picked at start (fixed ports collided with tests and other runs:
# with SO_REUSEPORT a second proxy could share one and take half the connections).
# Five distinct ports (the sockets are held open together while they are picked).
read -r PGPORT BOUNCER_PORT DBP_PORT BOUNCER_CG_PORT DBP_CG_PORT < <(/usr/bin/python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
RUNAS=()
if [ "$(id -u)" = 0 ]; then RUNAS=(runuser -u dbplane --); fi
[ -x "$BIN" ] || { echo "build dbplane first ($BIN)"; exit 1; }
command -v pgbouncer >/dev/null || { echo "pgbouncer not installed"; exit 1; }

W=$(mktemp -d /tmp/dbp-bench-XXXXXX); chmod 755 "$W"
[ "$(id -u)" = 0 ] && chown dbplane "$W"
cleanup() {
  [ -n "${DBP_PID:-}" ] && kill "$DBP_PID" 2>/dev/null || true
  [ -f "$W/pgbouncer.pid" ] && kill "$(cat "$W/pgbouncer.pid")" 2>/dev/null || true
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$W/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
# A silent stop (set -e) once cost a run its diagnosis: name the failing command, and keep
# the poolers' and PostgreSQL's logs when the script fails.
trap 'echo "pg-proxy.sh: exit $? at line $LINENO: $BASH_COMMAND" >&2' ERR
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ] || [ -e "$W/pooler_exited" ]; then
    local keep; keep=$(mktemp -d /tmp/dbp-bench-logs-XXXXXX)
    cp "$W"/*.log "$W"/*.out "$keep"/ 2>/dev/null || true
    echo "pg-proxy.sh: exit $rc; logs kept in $keep" >&2
  fi
  cleanup
}
trap on_exit EXIT

echo "== setup in $W"
bench_pg_start
ulimit -n 20000 || true
bench_pgbouncer_start "$BOUNCER_PORT" $((IDLE + 500)) 20000

LATSCHED=false; [ "${LATENCY_SCHED:-0}" = 1 ] && LATSCHED=true
umask 077
cat > "$W/dbplane.json" <<EOF
{"workers": $WORKERS, "latency_sched": $LATSCHED, "log_level": "warn",
 "clusters": [{"name": "bench", "rw_port": $DBP_PORT, "pool_mode": "transaction",
   "pool_size": $POOL, "max_client_connections": $((IDLE + 500)), "epoch": 1,
   "backends": [{"name": "pg", "host": "127.0.0.1", "port": $PGPORT, "primary": true}],
   "users": [{"username": "bench", "password": "$PW"},
     {"username": "bench_fast", "password": "$PW", "scram_verifier": "$FAST_VERIFIER"}]}]}
EOF
umask 022
"$BIN" proxy-run --config "$W/dbplane.json" > "$W/dbplane.out" 2> "$W/dbplane.log" &
DBP_PID=$!
sleep 0.5
echo "   PostgreSQL :$PGPORT  PgBouncer :$BOUNCER_PORT (pid $BOUNCER_PID)  dbplane :$DBP_PORT (pid $DBP_PID, $WORKERS worker(s), latency_sched $LATSCHED)  pool $POOL  scale $SCALE  -T $T"
echo "   $(pgbouncer --version | head -1); $(pgbench --version)"

# utime+stime ticks of PID; "gone" when the process has exited (reported, not fatal).
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo gone; }

# run NAME PORT PID ARGS... → prints "tps txns cpu_us_per_txn ok"
run() {
  local port=$1 pid=$2; shift 2
  local c0 c1 out tps n
  c0=$(cputicks "$pid")
  out=$(timeout $((T + 60)) pgbench -n "$@" -j 2 -T "$T" -h 127.0.0.1 -p "$port" -U "${BUSER:-bench}" bench 2>&1) || true
  c1=$(cputicks "$pid")
  if [ "$c0" = gone ] || [ "$c1" = gone ]; then
    echo "0 0 0 FAIL:pooler_pid_${pid}_exited"
    echo "pooler pid $pid exited; last log lines:" >&2
    tail -5 "$W/dbplane.log" "$W/pgbouncer.log" >&2 2>/dev/null || true
    dmesg 2>/dev/null | tail -3 >&2 || true
    : > "$W/pooler_exited"  # run is in a subshell: tell on_exit through a file
    return
  fi
  tps=$(echo "$out" | awk '/^tps =/ {print $3; exit}')
  n=$(echo "$out" | awk -F'[:/ ]+' '/actually processed/ {print $6; exit}')
  if [ -z "$tps" ] || [ -z "$n" ] || [ "$n" = 0 ] || echo "$out" | grep -q "aborted"; then
    echo "0 0 0 FAIL:$(echo "$out" | grep -m1 -E 'error|FATAL' | cut -c1-90)"
    return
  fi
  echo "$tps $n $(( (c1 - c0) * 10000 / n )) ok"
}

[ "${ONLY_CPU:-0}" = 1 ] || printf "\n%-26s %12s %12s %8s %14s %14s %8s\n" scenario "pgbouncer" "dbplane" "ratio" "pgb cpu us/tx" "dbp cpu us/tx" "cpu r."
scenario() {
  local name=$1; shift
  local bt=() dt=() bc=() dc=() bnote="" dnote=""
  for r in $(seq "$REPS"); do
    if [ $((r % 2)) = 1 ]; then
      read -r t n c s < <(run $BOUNCER_PORT "$BOUNCER_PID" "$@"); bt+=("$t"); bc+=("$c"); [ "$s" = ok ] || bnote=$s
      read -r t n c s < <(run $DBP_PORT "$DBP_PID" "$@"); dt+=("$t"); dc+=("$c"); [ "$s" = ok ] || dnote=$s
    else
      read -r t n c s < <(run $DBP_PORT "$DBP_PID" "$@"); dt+=("$t"); dc+=("$c"); [ "$s" = ok ] || dnote=$s
      read -r t n c s < <(run $BOUNCER_PORT "$BOUNCER_PID" "$@"); bt+=("$t"); bc+=("$c"); [ "$s" = ok ] || bnote=$s
    fi
  done
  local b d bcu dcu
  b=$(printf "%s\n" "${bt[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  d=$(printf "%s\n" "${dt[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  bcu=$(printf "%s\n" "${bc[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  dcu=$(printf "%s\n" "${dc[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf "%-26s %12.0f %12.0f %8s %14s %14s %8s\n" "$name" "$b" "$d" \
    "$(awk -v b="$b" -v d="$d" 'BEGIN { if (b > 0) printf "%.2f", d / b; else print "n/a" }')" "$bcu" "$dcu" \
    "$(awk -v b="$bcu" -v d="$dcu" 'BEGIN { if (b > 0) printf "%.2f", d / b; else print "n/a" }')"
  [ -n "$bnote" ] && echo "    pgbouncer: $bnote"
  [ -n "$dnote" ] && echo "    dbplane: $dnote"
  return 0
}

if [ "${ONLY_IDLE:-0}" != 1 ] && [ "${ONLY_CPU:-0}" != 1 ]; then
  scenario "select-only 50 cl" -S -M simple -c 50
  scenario "select-only 200 cl" -S -M simple -c 200
  scenario "tpcb-like 50 cl" -M simple -c 50
  scenario "-C select-only 20 cl" -C -S -M simple -c 20
  # The same with bench_fast, whose stored SCRAM verifier (in PostgreSQL and in both poolers)
  # has FAST_ITER (16) iterations: libpq's PBKDF2 per login, which bounds the row above at
  # ~200 logins/s for both poolers, no longer dominates (docs/benchmarks.md).
  BUSER=bench_fast scenario "-C sel-only 20 cl, 16 it" -C -S -M simple -c 20
  scenario "-M prepared sel-only 50" -S -M prepared -c 50
fi

# ---- CPU time per transaction and callgrind instructions per transaction ----
if [ "${ONLY_IDLE:-0}" != 1 ]; then
  echo
  echo "== CPU time per transaction (utime+stime of the pooler / transactions), same run"
  printf "%-26s %14s %14s %8s\n" scenario "pgb cpu us/tx" "dbp cpu us/tx" "ratio"
  cpu_row() {
    local name=$1; shift
    local bc=() dc=()
    for r in $(seq "$REPS"); do
      read -r t n c s < <(run $BOUNCER_PORT "$BOUNCER_PID" "$@"); bc+=("$c"); [ "$s" = ok ] || echo "    pgbouncer: $s"
      read -r t n c s < <(run $DBP_PORT "$DBP_PID" "$@"); dc+=("$c"); [ "$s" = ok ] || echo "    dbplane: $s"
    done
    local b d
    b=$(printf "%s\n" "${bc[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    d=$(printf "%s\n" "${dc[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf "%-26s %14s %14s %8s\n" "$name" "$b" "$d" \
      "$(awk -v b="$b" -v d="$d" 'BEGIN { if (b > 0) printf "%.2f", d / b; else print "n/a" }')"
  }
  cpu_row "select-only 50 cl" -S -M simple -c 50
  cpu_row "select-only 200 cl" -S -M simple -c 200
  cpu_row "tpcb-like 50 cl" -M simple -c 50
fi

if [ "${ONLY_IDLE:-0}" != 1 ] && [ "${SKIP_CALLGRIND:-0}" != 1 ] && command -v valgrind >/dev/null; then
  CG_T=${CG_T:-1000}
  echo
  echo "== callgrind: user-space instructions per transaction (pgbench -S -M simple -c 10 -t $CG_T, start-up and warm-up zeroed)"
  sed -e "s/^listen_port = .*/listen_port = $BOUNCER_CG_PORT/" -e "s|pgbouncer.pid|pgbouncer-cg.pid|" \
      -e "s|pgbouncer.log|pgbouncer-cg.log|" "$W/pgbouncer.ini" > "$W/pgbouncer-cg.ini"
  sed -e "s/\"rw_port\": $DBP_PORT/\"rw_port\": $DBP_CG_PORT/" "$W/dbplane.json" > "$W/dbplane-cg.json"
  chmod 600 "$W/dbplane-cg.json"
  [ "$(id -u)" = 0 ] && chown dbplane "$W/pgbouncer-cg.ini"
  # cg_measure PORT PID OUTPREFIX [RUNAS...] → instructions per transaction. callgrind_control
  # runs as the pooler's user: vgdb finds the process by its user's FIFO names.
  cg_measure() {
    local port=$1 pid=$2 out=$3 ok=""; shift 3
    local as=("$@")
    for _ in $(seq 300); do
      psql -XAtq -h 127.0.0.1 -p "$port" -U bench -c "select 1" bench >/dev/null 2>&1 && { ok=1; break; }
      sleep 0.2
    done
    [ -n "$ok" ] || { echo "n/a"; return; }
    timeout 300 pgbench -n -S -M simple -c 10 -j 2 -t 50 -h 127.0.0.1 -p "$port" -U bench bench >/dev/null 2>&1 || true
    "${as[@]}" callgrind_control -z "$pid" >/dev/null 2>&1 || { echo "n/a"; return; }
    local res n
    res=$(timeout 900 pgbench -n -S -M simple -c 10 -j 2 -t "$CG_T" -h 127.0.0.1 -p "$port" -U "${BUSER:-bench}" bench 2>&1) || true
    n=$(echo "$res" | awk -F'[:/ ]+' '/actually processed/ {print $6; exit}')
    "${as[@]}" callgrind_control -d "$pid" >/dev/null 2>&1 || { echo "n/a"; return; }
    local f ir
    f=$(ls -t "$out".* 2>/dev/null | head -1)
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$f" 2>/dev/null)
    if [ -z "$ir" ] || [ -z "$n" ] || [ "$n" = 0 ]; then echo "n/a"; return; fi
    awk -v i="$ir" -v n="$n" 'BEGIN { printf "%.0f", i / n }'
  }
  "${RUNAS[@]}" sh -c "ulimit -n 20000 && exec valgrind --tool=callgrind --callgrind-out-file='$W/cg.pgb' pgbouncer '$W/pgbouncer-cg.ini'" >/dev/null 2>&1 &
  CGB_WRAP=$!
  for _ in $(seq 300); do [ -s "$W/pgbouncer-cg.pid" ] && break; sleep 0.2; done
  CGB_PID=$(cat "$W/pgbouncer-cg.pid" 2>/dev/null || echo 0)
  IB=$(cg_measure $BOUNCER_CG_PORT "$CGB_PID" "$W/cg.pgb" "${RUNAS[@]}")
  kill "$CGB_PID" 2>/dev/null || true; wait "$CGB_WRAP" 2>/dev/null || true
  valgrind --tool=callgrind --callgrind-out-file="$W/cg.dbp" "$BIN" proxy-run --config "$W/dbplane-cg.json" >/dev/null 2>&1 &
  CGD_PID=$!
  ID=$(cg_measure $DBP_CG_PORT "$CGD_PID" "$W/cg.dbp")
  kill -INT "$CGD_PID" 2>/dev/null || true; wait "$CGD_PID" 2>/dev/null || true
  printf "%-12s %18s\n" pooler "instructions/tx"
  printf "%-12s %18s\n" pgbouncer "$IB"
  printf "%-12s %18s\n" dbplane "$ID"
  awk -v b="$IB" -v d="$ID" 'BEGIN { if (b + 0 > 0 && d + 0 > 0) printf "ratio dbplane/pgbouncer instructions per transaction: %.2f\n", d / b }'
fi

if [ "${SKIP_IDLE:-0}" != 1 ] && [ "${ONLY_CPU:-0}" != 1 ]; then
  echo
  echo "== $IDLE idle logged-in clients (RSS per client connection)"
  idle_rss() {
    local port=$1 pid=$2
    /usr/bin/python3 - "$port" "$pid" "$IDLE" <<'EOF'
import os, sys, time
import psycopg
port, pid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss()
conns = []
t0 = time.monotonic()
try:
    for i in range(n):
        conns.append(psycopg.connect(f"host=127.0.0.1 port={port} dbname=bench user=bench password=benchpw sslmode=disable", autocommit=True))
        if time.monotonic() - t0 > 300:
            break
    conns[0].execute("select 1")
    time.sleep(1)
    after = rss()
    print(f"{len(conns)} {before} {after} {(after - before) * 1024 / max(1, len(conns)):.0f}")
finally:
    for c in conns:
        c.close()
EOF
  }
  read -r nb b0 b1 bper < <(idle_rss $BOUNCER_PORT "$BOUNCER_PID")
  read -r nd d0 d1 dper < <(idle_rss $DBP_PORT "$DBP_PID")
  printf "%-12s %8s %14s %14s %18s\n" pooler clients "RSS before kB" "RSS after kB" "bytes per client"
  printf "%-12s %8s %14s %14s %18s\n" pgbouncer "$nb" "$b0" "$b1" "$bper"
  printf "%-12s %8s %14s %14s %18s\n" dbplane "$nd" "$d0" "$d1" "$dper"
  awk -v b="$bper" -v d="$dper" 'BEGIN { if (b > 0) printf "ratio dbplane/pgbouncer RSS per client: %.2f\n", d / b }'
fi
echo
echo "dbplane stats: $(kill -USR1 $DBP_PID; sleep 0.5; tail -1 "$W/dbplane.out" | cut -c1-400)"
