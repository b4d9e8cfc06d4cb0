#!/usr/bin/env bash
# bench/chaos.sh ENGINE TRIALS [chaos.py options]: HA chaos trials against a real cluster
# run by dbplane (see bench/chaos.py). Only postgresql is wired so far.
set -euo pipefail
engine=${1:-postgresql}
trials=${2:-4}
shift 2 || true
here=$(cd "$(dirname "$0")" && pwd)
bin=${DBPLANE_BIN:-$here/../build/dbplane}
case "$engine" in
  postgresql) exec /usr/bin/python3 "$here/chaos.py" --bin "$bin" --trials "$trials" "$@" ;;
  *) echo "chaos.sh: engine $engine is not wired yet" >&2; exit 2 ;;
esac
