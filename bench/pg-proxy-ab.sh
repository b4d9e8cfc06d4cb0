#!/usr/bin/env bash
# pg-proxy-ab.sh: same-run A/B of two dbplane proxy variants against PgBouncer, for changes
# to the proxy's hot path. One PostgreSQL 15, PgBouncer (transaction pooling) and two
# `dbplane proxy-run` processes (A and B: the same or different binaries, each with its own
# environment), all on one server with the same pool size. Each repetition runs the
# scenario once per pooler, the order rotating between repetitions; the script prints
# every run and the medians: TPS, CPU µs per transaction (sum of the pooler's threads'
# run time from /proc/PID/task/*/schedstat, ns) and context switches per transaction
# (voluntary + involuntary, /proc/PID/task/*/status), with ratios to PgBouncer; also
# pgbench's own CPU per transaction (GNU time) and the machine's idle share during the run.
#
# Usage: bench/pg-proxy-ab.sh [-T seconds] [-r repetitions] [-s scale] [-j pgbench-threads] -- PGBENCH-ARGS...
#   env BIN_A, BIN_B (default build/dbplane), ENV_A, ENV_B ("K=V K=V", e.g.
#   ENV_B="DBPLANE_PROXY_URING=1"), CONF_A, CONF_B (JSON members added to that proxy's
#   proxy-run configuration, e.g. CONF_B='"latency_sched": true, "workers": 2'), POOL (20).
#   BUSER (pgbench user: bench, or bench_fast whose SCRAM verifier has FAST_ITER=16
#   iterations, bench/lib/pg-anchor.sh). Example:
#   ENV_B=DBPLANE_PROXY_URING=1 bench/pg-proxy-ab.sh -T 8 -r 3 -- -S -M simple -c 50
# Run as root (servers run as `dbplane`). Loopback only; bounded by pgbench -T and timeout.
set -euo pipefail
T=8; REPS=3; SCALE=10; J=2
while getopts "T:r:s:j:" o; do
  case $o in T) T=$OPTARG;; r) REPS=$OPTARG;; s) SCALE=$OPTARG;; j) J=$OPTARG;; *) exit 2;; esac
done
shift $((OPTIND - 1))
[ "$#" -gt 0 ] || set -- -S -M simple -c 50
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/pg-anchor.sh
source "$ROOT/bench/lib/pg-anchor.sh"
BIN_A=${BIN_A:-$ROOT/build/dbplane}; BIN_B=${BIN_B:-$ROOT/build/dbplane}
POOL=${POOL:-20}; PGBIN=/usr/lib/postgresql/15/bin; PW=benchpw
read -r PGPORT BP AP BBP < <(/usr/bin/python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
RUNAS=(); [ "$(id -u)" = 0 ] && RUNAS=(runuser -u dbplane --)
W=$(mktemp -d /tmp/dbp-ab-XXXXXX); chmod 755 "$W"; [ "$(id -u)" = 0 ] && chown dbplane "$W"
cleanup() {
  for p in ${PID_A:-} ${PID_B:-}; do kill "$p" 2>/dev/null || true; done
  [ -f "$W/pgbouncer.pid" ] && kill "$(cat "$W/pgbouncer.pid")" 2>/dev/null || true
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$W/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
bench_pg_start
bench_pgbouncer_start "$BP" 1000 4000
PID_P=$BOUNCER_PID
dbp_conf() { # port extra-json-members
  cat <<EOC
{"workers": 1, "log_level": "warn", ${2:+$2,}
 "clusters": [{"name": "bench", "rw_port": $1, "pool_mode": "transaction", "pool_size": $POOL,
   "max_client_connections": 1000, "epoch": 1,
   "backends": [{"name": "pg", "host": "127.0.0.1", "port": $PGPORT, "primary": true}],
   "users": [{"username": "bench", "password": "$PW"},
     {"username": "bench_fast", "password": "$PW", "scram_verifier": "$FAST_VERIFIER"}]}]}
EOC
}
umask 077; dbp_conf "$AP" "${CONF_A:-}" > "$W/a.json"; dbp_conf "$BBP" "${CONF_B:-}" > "$W/b.json"; umask 022
# shellcheck disable=SC2086
env ${ENV_A:-} "$BIN_A" proxy-run --config "$W/a.json" > "$W/a.out" 2> "$W/a.log" & PID_A=$!
# shellcheck disable=SC2086
env ${ENV_B:-} "$BIN_B" proxy-run --config "$W/b.json" > "$W/b.out" 2> "$W/b.log" & PID_B=$!
sleep 0.7
echo "# pgbench $* -j $J -T $T, $REPS reps; A: ${ENV_A:-(default)} ${CONF_A:-} $BIN_A; B: ${ENV_B:-(default)} ${CONF_B:-} $BIN_B"
echo "# load at start: $(cut -d' ' -f1-3 /proc/loadavg)"

cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {print s}'; }
csw() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
vcsw() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}'; }
# PostgreSQL's CPU ticks: the postmaster (with its reaped children) + its live children
pg_ticks() {
  local pm; pm=$(head -1 "$W/data/postmaster.pid")
  { awk '{print $14 + $15 + $16 + $17}' /proc/"$pm"/stat
    for c in $(ps -o pid= --ppid "$pm" || true); do awk '{print $14 + $15}' /proc/"$c"/stat 2>/dev/null || true; done
  } | awk '{s += $1} END {print s}'
}
# idle CPU time of the machine (all CPUs, USER_HZ ticks) from /proc/stat
idle_ticks() { awk '/^cpu / {print $5 + $6; exit}' /proc/stat; }
# one NAME PORT PID → "name tps cpu_us cs_per_txn voluntary_cs_per_txn pgbench_cpu_us idle_pct pg_cpu_us"
# (pgbench_cpu_us: pgbench's own utime+stime per transaction, from GNU time; idle_pct: the
# machine's idle CPU share during the run, all CPUs; pg_cpu_us: PostgreSQL's, all backends)
one() {
  local name=$1 port=$2 pid=$3 c0 c1 s0 s1 v0 v1 out tps n i0 i1 t0 t1 pgc p0 p1
  c0=$(cpu_ns "$pid"); s0=$(csw "$pid"); v0=$(vcsw "$pid"); i0=$(idle_ticks); t0=$(date +%s%N); p0=$(pg_ticks)
  out=$(timeout $((T + 60)) /usr/bin/time -f "PGBENCH_CPU %U %S" pgbench -n "${ARGS[@]}" -j "$J" -T "$T" -h 127.0.0.1 -p "$port" -U "${BUSER:-bench}" bench 2>&1) || true
  c1=$(cpu_ns "$pid"); s1=$(csw "$pid"); v1=$(vcsw "$pid"); i1=$(idle_ticks); t1=$(date +%s%N); p1=$(pg_ticks)
  tps=$(echo "$out" | awk '/^tps =/ {print $3; exit}')
  n=$(echo "$out" | awk -F'[:/ ]+' '/actually processed/ {print $6; exit}')
  pgc=$(echo "$out" | awk '/^PGBENCH_CPU/ {print $2 + $3; exit}')
  if [ -z "$tps" ] || [ -z "${n:-}" ] || [ "$n" = 0 ]; then echo "$name FAIL"; echo "$out" | tail -3 >&2; return; fi
  awk -v nm="$name" -v t="$tps" -v n="$n" -v c="$((c1 - c0))" -v s="$((s1 - s0))" -v v="$((v1 - v0))" \
    -v pg="${pgc:-0}" -v id="$((i1 - i0))" -v el="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v nc="$(nproc)" -v pt="$((p1 - p0))" \
    'BEGIN { printf "%s %.0f %.2f %.3f %.3f %.1f %.1f %.1f\n", nm, t, c / n / 1000, s / n, v / n, pg * 1e6 / n,
             100 * id / hz / (el / 1e9) / nc, pt / hz * 1e6 / n }'
}
ARGS=("$@")
NAMES=(pgbouncer A B); PORTS=("$BP" "$AP" "$BBP"); PIDS=("$PID_P" "$PID_A" "$PID_B")
# warm-up: logins, pools filled
for i in 0 1 2; do pgbench -n "${ARGS[@]}" -j "$J" -T 1 -h 127.0.0.1 -p "${PORTS[$i]}" -U bench bench >/dev/null 2>&1 || true; done
: > "$W/res"
for r in $(seq "$REPS"); do
  for k in 0 1 2; do
    i=$(( (r - 1 + k) % 3 ))
    one "${NAMES[$i]}" "${PORTS[$i]}" "${PIDS[$i]}" | tee -a "$W/res"
  done
done
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
med() { awk -v nm="$1" -v f="$2" '$1 == nm && $2 != "FAIL" {print $f}' "$W/res" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "%-10s %8s %6s %10s %6s %8s %8s %12s %6s %8s\n" pooler tps ratio "cpu us/tx" ratio "cs/tx" "vol/tx" "pgbench us/tx" "idle%" "pg us/tx"
for nm in pgbouncer A B; do
  printf "%-10s %8s %6s %10s %6s %8s %8s %12s %6s %8s\n" "$nm" "$(med $nm 2)" \
    "$(awk -v a="$(med $nm 2)" -v b="$(med pgbouncer 2)" 'BEGIN {printf "%.2f", a / b}')" "$(med $nm 3)" \
    "$(awk -v a="$(med $nm 3)" -v b="$(med pgbouncer 3)" 'BEGIN {printf "%.2f", a / b}')" "$(med $nm 4)" "$(med $nm 5)" \
    "$(med $nm 6)" "$(med $nm 7)" "$(med $nm 8)"
done
