#!/usr/bin/env bash
# bench/chaos.sh ENGINE TRIALS [chaos.py options]: HA chaos trials (see bench/chaos.py).
# ENGINE: postgresql | mariadb | redis (a cluster run by dbplane), or redis-sentinel (the
# anchor: Redis Sentinel + HAProxy, started by the harness; needs the bench-only packages
# redis-sentinel and haproxy from scripts/install-deps.sh).
set -euo pipefail
engine=${1:-postgresql}
trials=${2:-4}
shift 2 || true
here=$(cd "$(dirname "$0")" && pwd)
bin=${DBPLANE_BIN:-$here/../build/dbplane}
case "$engine" in
  postgresql|mariadb|redis)
    exec /usr/bin/python3 "$here/chaos.py" --engine "$engine" --bin "$bin" --trials "$trials" "$@" ;;
  redis-sentinel)
    exec /usr/bin/python3 "$here/chaos.py" --engine redis-sentinel --trials "$trials" "$@" ;;
  *) echo "chaos.sh: unknown engine $engine (postgresql, mariadb, redis, redis-sentinel)" >&2; exit 2 ;;
esac
