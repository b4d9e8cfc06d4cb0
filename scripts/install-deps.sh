#!/usr/bin/env bash
# Installs every Debian 12 package dbplane needs to build, run and test, and the
# unprivileged OS user the database servers run as when dbplane is started as root.
# Idempotent: packages already present are skipped, the user is created once.
set -euo pipefail

PKGS=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
  libyaml-dev libsqlite3-dev libssl-dev libjansson-dev libevent-dev
  libmicrohttpd-dev libcurl4-openssl-dev libzstd-dev zlib1g-dev
  libpq-dev libmariadb-dev libhiredis-dev libcmocka-dev
  # optional: io_uring send batching in the proxy (CMake finds it through pkg-config)
  liburing-dev
  # servers
  postgresql-15 postgresql-client-15 postgresql-contrib mariadb-server mariadb-client
  mariadb-backup redis-server redis-tools pgbouncer
  # backups: pgBackRest is the benchmark anchor; nodejs/npm install the S3 test server
  pgbackrest nodejs
  # HA bench anchor only (bench/chaos.sh redis-sentinel): Redis Sentinel + HAProxy
  redis-sentinel haproxy
  # test clients
  python3-pytest python3-pytest-xdist python3-psycopg python3-pymysql python3-redis sysbench
  sqlite3 procps psmisc
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packaged servers must not start system-wide instances: dbplane runs its own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present"
fi

# A real S3 protocol server for the backup tests (tests/integration/test_backup.py).
if ! command -v s3rver >/dev/null 2>&1; then
  echo "install-deps: installing s3rver (npm)"
  if ! command -v npm >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq --no-install-recommends npm
  fi
  $SUDO npm install -g --no-audit --no-fund s3rver@3 >/dev/null
fi

# The unprivileged account database servers run as when dbplane runs as root.
if ! getent passwd dbplane >/dev/null; then
  $SUDO useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin dbplane
  echo "install-deps: created system user dbplane"
fi
