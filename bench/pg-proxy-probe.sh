#!/usr/bin/env bash
# pg-proxy-probe.sh: where a pgbench transaction's system calls and TCP segments go, behind
# PgBouncer and behind one or two dbplane proxies (A, B), on one PostgreSQL 15 (the setup of
# bench/pg-proxy-ab.sh: bench/lib/pg-anchor.sh, transaction pooling, same pool size, TCP
# 127.0.0.1 on both legs). For each pooler, one pgbench run of the scenario under
# `perf stat` (syscall tracepoints: cheap, no ptrace), with the pooler's process and the
# PostgreSQL backends counted over the same run, and prints per transaction:
#   - pgbench: CPU µs (GNU time), voluntary / involuntary context switches, system calls
#     (all; sendto, recvfrom, recvfrom that returned an error (EAGAIN), ppoll/poll/select)
#   - pooler: CPU µs, system calls (all; send/recv/epoll_wait/io_uring_enter)
#   - PostgreSQL backends: system calls (all; sendto, recvfrom, epoll_wait)
#   - TCP segments per transaction on each leg (`ss -ti` segs_out of the established
#     sockets, sampled 1 s after the start and 1 s before the end): pooler → pgbench,
#     pgbench → pooler, pooler → PostgreSQL, PostgreSQL → pooler
#     (divided by the run's TPS × the sampling window: on a loaded machine the window's
#     throughput differs from the run's and the per-leg figures move by ±20 %; the nstat
#     total below covers the whole run and does not)
#   - the machine's Tcp OutSegs and TcpExt pure/delayed ACK counters (nstat), all legs.
# Usage: bench/pg-proxy-probe.sh [-T seconds] [-s scale] [-j pgbench-threads] -- PGBENCH-ARGS
#   env BIN_A (default build/dbplane), BIN_B (optional: a second proxy), ENV_A, ENV_B, CONF_A,
#   CONF_B (JSON members added to that proxy's configuration, as in pg-proxy-ab.sh),
#   POOL (20), BUSER (bench), PERF_REC=PREFIX (also `perf record -g` pgbench into PREFIX.NAME).
#   Example: bench/pg-proxy-probe.sh -T 6 -- -M simple -c 50
# Run as root (perf, servers run as `dbplane`). Loopback only; bounded by pgbench -T.
set -euo pipefail
T=6; SCALE=10; J=2
while getopts "T:s:j:" o; do
  case $o in T) T=$OPTARG;; s) SCALE=$OPTARG;; j) J=$OPTARG;; *) exit 2;; esac
done
shift $((OPTIND - 1))
[ "$#" -gt 0 ] || set -- -M simple -c 50
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/pg-anchor.sh
source "$ROOT/bench/lib/pg-anchor.sh"
BIN_A=${BIN_A:-$ROOT/build/dbplane}; BIN_B=${BIN_B:-}
POOL=${POOL:-20}; PGBIN=/usr/lib/postgresql/15/bin; PW=benchpw
read -r PGPORT BP AP BBP < <(/usr/bin/python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
RUNAS=(); [ "$(id -u)" = 0 ] && RUNAS=(runuser -u dbplane --)
W=$(mktemp -d /tmp/dbp-probe-XXXXXX); chmod 755 "$W"; [ "$(id -u)" = 0 ] && chown dbplane "$W"
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
NAMES=(pgbouncer A); PORTS=("$BP" "$AP"); PIDS=("$PID_P" "$PID_A")
if [ -n "$BIN_B" ]; then
  # shellcheck disable=SC2086
  env ${ENV_B:-} "$BIN_B" proxy-run --config "$W/b.json" > "$W/b.out" 2> "$W/b.log" & PID_B=$!
  NAMES+=(B); PORTS+=("$BBP"); PIDS+=("$PID_B")
fi
sleep 0.7
echo "# pgbench $* -j $J -T $T; A: ${ENV_A:-} ${CONF_A:-} $BIN_A; B: ${ENV_B:-} ${CONF_B:-} ${BIN_B:-none}"
echo "# load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
EV=raw_syscalls:sys_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendmsg
EV=$EV,syscalls:sys_enter_ppoll,syscalls:sys_enter_poll,syscalls:sys_enter_pselect6,syscalls:sys_enter_epoll_wait
EV=$EV,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_write,syscalls:sys_enter_read
cnt() { awk -F, -v e="$2" '$3 == e {print $1 + 0; f = 1} END {if (!f) print 0}' "$1"; }
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {print s}'; }
# one `ss` dump → segs_out sums of the established sockets: remote port $1 (pgbench → pooler),
# local port $1 (pooler → pgbench), remote port $2 (pooler → PostgreSQL), local port $2
# (PostgreSQL → pooler); one dump so that the four legs are sampled at the same moment
segs() { ss -tinH state established "( sport = :$1 or dport = :$1 or sport = :$2 or dport = :$2 )" | awk -v p="$1" -v q="$2" '
  /^[0-9]/ { split($(NF-1), a, ":"); split($NF, b, ":"); lp = a[length(a)]; rp = b[length(b)]; next }
  match($0, /segs_out:[0-9]+/) { v = substr($0, RSTART + 9, RLENGTH - 9)
    if (rp == p) s1 += v; else if (lp == p) s2 += v; else if (rp == q) s3 += v; else if (lp == q) s4 += v }
  END { print s1 + 0, s2 + 0, s3 + 0, s4 + 0 }'; }
one() {
  local name=$1 port=$2 pid=$3 pm bk c0 c1 out n tps pgc s0 s1 t0 t1 k
  pm=$(head -1 "$W/data/postmaster.pid")
  bk=$(ps -o pid= --ppid "$pm" | tr -d ' ' | paste -sd,)
  nstat -n >/dev/null
  c0=$(cpu_ns "$pid")
  perf stat -x, -e "$EV" -p "$pid" -o "$W/pooler.perf" -- sleep "$((T + 1))" & local pp=$!
  perf stat -x, -e "$EV" -p "$bk" -o "$W/pg.perf" -- sleep "$((T + 1))" & local pg=$!
  local rec=(); [ -n "${PERF_REC:-}" ] && rec=(perf record -q -g -o "$PERF_REC.$name" --)
  perf stat -x, -e "$EV" -e 'syscalls:sys_exit_recvfrom' --filter 'ret < 0' -o "$W/pgbench.perf" -- \
    "${rec[@]}" /usr/bin/time -f "PGBENCH_CPU %U %S %w %c" pgbench -n "${ARGS[@]}" -j "$J" -T "$T" -h 127.0.0.1 \
    -p "$port" -U "${BUSER:-bench}" bench > "$W/pgbench.out" 2>&1 & local pb=$!
  sleep 1; t0=$(date +%s%N); s0=($(segs "$port" "$PGPORT"))
  sleep "$((T - 2))"; t1=$(date +%s%N); s1=($(segs "$port" "$PGPORT"))
  wait "$pb" || true; wait "$pp" "$pg" || true
  c1=$(cpu_ns "$pid")
  ns=($(nstat -z TcpOutSegs TcpExtTCPPureAcks TcpExtDelayedACKs | awk '/OutSegs/ {o = $2} /PureAcks/ {p = $2} /DelayedACKs/ {d = $2} END {print o + 0, p + 0, d + 0}'))
  out=$(cat "$W/pgbench.out")
  tps=$(echo "$out" | awk '/^tps =/ {print $3; exit}')
  n=$(echo "$out" | awk -F'[:/ ]+' '/actually processed/ {print $6; exit}')
  if [ -z "$tps" ] || [ -z "${n:-}" ] || [ "$n" = 0 ]; then echo "$name FAIL"; echo "$out" | tail -3; return; fi
  pgc=($(echo "$out" | awk '/^PGBENCH_CPU/ {print $2 + $3, $4, $5; exit}'))
  local ntx; ntx=$(awk -v t="$tps" -v d="$((t1 - t0))" 'BEGIN {print t * d / 1e9}')
  awk -v nm="$name" -v n="$n" -v tps="$tps" -v ntx="$ntx" -v pc="${pgc[0]}" -v pw="${pgc[1]}" -v pi="${pgc[2]}" -v cc="$((c1 - c0))" \
    -v b_all="$(cnt "$W/pgbench.perf" raw_syscalls:sys_enter)" -v b_snd="$(cnt "$W/pgbench.perf" syscalls:sys_enter_sendto)" \
    -v b_rcv="$(cnt "$W/pgbench.perf" syscalls:sys_enter_recvfrom)" -v b_eag="$(cnt "$W/pgbench.perf" syscalls:sys_exit_recvfrom)" \
    -v b_pol="$(( $(cnt "$W/pgbench.perf" syscalls:sys_enter_ppoll) + $(cnt "$W/pgbench.perf" syscalls:sys_enter_poll) + $(cnt "$W/pgbench.perf" syscalls:sys_enter_pselect6) ))" \
    -v p_all="$(cnt "$W/pooler.perf" raw_syscalls:sys_enter)" \
    -v p_snd="$(( $(cnt "$W/pooler.perf" syscalls:sys_enter_sendto) + $(cnt "$W/pooler.perf" syscalls:sys_enter_sendmsg) ))" \
    -v p_rcv="$(cnt "$W/pooler.perf" syscalls:sys_enter_recvfrom)" -v p_ew="$(cnt "$W/pooler.perf" syscalls:sys_enter_epoll_wait)" \
    -v p_ur="$(cnt "$W/pooler.perf" syscalls:sys_enter_io_uring_enter)" \
    -v g_all="$(cnt "$W/pg.perf" raw_syscalls:sys_enter)" -v g_snd="$(cnt "$W/pg.perf" syscalls:sys_enter_sendto)" \
    -v g_rcv="$(cnt "$W/pg.perf" syscalls:sys_enter_recvfrom)" -v g_ew="$(cnt "$W/pg.perf" syscalls:sys_enter_epoll_wait)" \
    -v s_pc="$((s1[1] - s0[1]))" -v s_cp="$((s1[0] - s0[0]))" -v s_sp="$((s1[2] - s0[2]))" -v s_ps="$((s1[3] - s0[3]))" \
    -v os="${ns[0]}" -v pa="${ns[1]}" -v da="${ns[2]}" \
    'BEGIN {
      printf "%-9s tps %7.0f | pgbench cpu %6.1f us vcs %.2f ics %.2f sys %.2f (sendto %.2f recvfrom %.2f err %.2f poll %.2f)",
        nm, tps, pc * 1e6 / n, pw / n, pi / n, b_all / n, b_snd / n, b_rcv / n, b_eag / n, b_pol / n
      printf " | pooler cpu %6.1f us sys %.2f (send %.2f recv %.2f epoll_wait %.2f uring %.2f)", cc / n / 1000, p_all / n, p_snd / n, p_rcv / n, p_ew / n, p_ur / n
      printf " | pg sys %.2f (sendto %.2f recvfrom %.2f epoll_wait %.2f)", g_all / n, g_snd / n, g_rcv / n, g_ew / n
      printf " | segs/tx pooler->pgbench %.2f pgbench->pooler %.2f pooler->pg %.2f pg->pooler %.2f | OutSegs %.2f pureACK %.3f delACK %.3f\n",
        s_pc / ntx, s_cp / ntx, s_sp / ntx, s_ps / ntx, os / n, pa / n, da / n }'
}
ARGS=("$@")
for i in "${!NAMES[@]}"; do pgbench -n "${ARGS[@]}" -j "$J" -T 1 -h 127.0.0.1 -p "${PORTS[$i]}" -U "${BUSER:-bench}" bench >/dev/null 2>&1 || true; done
for i in "${!NAMES[@]}"; do one "${NAMES[$i]}" "${PORTS[$i]}" "${PIDS[$i]}"; done
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
