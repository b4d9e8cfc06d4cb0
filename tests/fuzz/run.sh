#!/usr/bin/env bash
# Runs every fuzz target in BUILD_DIR for SECONDS seconds each over a copy of its
# checked-in corpus (tests/fuzz/corpus/<name without fuzz_>), so CI replays the corpus
# and explores a little further without growing the repository.
set -euo pipefail
build=${1:?build dir}
secs=${2:-30}
here=$(cd "$(dirname "$0")" && pwd)
status=0
for bin in "$build"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin"); name=${name#fuzz_}
  work=$(mktemp -d)
  cp -r "$here/corpus/$name/." "$work/" 2>/dev/null || true
  echo "fuzz: $name for ${secs}s ($(ls "$work" | wc -l) corpus inputs)"
  if ! "$bin" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 "$work" >"$work.log" 2>&1; then
    tail -50 "$work.log"; status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$work.log" | tail -2 || true
  fi
  rm -rf "$work" "$work.log"
done
exit $status
