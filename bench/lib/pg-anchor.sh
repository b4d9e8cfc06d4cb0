# bench/lib/pg-anchor.sh: the PostgreSQL server and the PgBouncer anchor that the proxy
# benchmarks (pg-proxy.sh, pg-proxy-ab.sh) share. Sourced, not run. The caller sets W (a
# work directory the `dbplane` user can enter), RUNAS (runuser prefix or empty), PGBIN,
# PW, PGPORT, SCALE and POOL.

# Starts PostgreSQL 15 on 127.0.0.1:$PGPORT (scram-sha-256, fsync off: the poolers are
# measured, not the disk), creates role and database `bench`, loads pgbench -s $SCALE and
# sets VERIFIER to bench's stored SCRAM verifier and FAST_VERIFIER to bench_fast's (below).
# Exports PGPASSWORD and PGSSLMODE=disable.
bench_pg_start() {
  echo "$PW" > "$W/pw"; [ "$(id -u)" = 0 ] && chown dbplane "$W/pw"
  "${RUNAS[@]}" "$PGBIN/initdb" -D "$W/data" -U postgres --auth=scram-sha-256 --pwfile="$W/pw" -E UTF8 >/dev/null
  cat >> "$W/data/postgresql.conf" <<EOC
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$W'
max_connections = 300
shared_buffers = 256MB
fsync = off
synchronous_commit = off
EOC
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$W/data" -l "$W/pg.log" -w start >/dev/null
  export PGPASSWORD=$PW PGSSLMODE=disable
  psql -qX -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE ROLE bench LOGIN PASSWORD '$PW'" -c "CREATE DATABASE bench OWNER bench" postgres
  pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U bench bench >/dev/null 2>&1
  VERIFIER=$(psql -XAt -h 127.0.0.1 -p "$PGPORT" -U postgres -c "SELECT rolpassword FROM pg_authid WHERE rolname='bench'" postgres)
  # bench_fast: same password, a stored verifier of FAST_ITER (16) PBKDF2 iterations instead
  # of 4096, the same verifier in PostgreSQL and in both poolers; for the -C row where the
  # client's PBKDF2 (libpq computes it at every login) is not the bound.
  FAST_VERIFIER=$(/usr/bin/python3 -c '
import base64, hashlib, hmac, os, sys
pw, it = sys.argv[1].encode(), int(sys.argv[2]); salt = os.urandom(16)
sp = hashlib.pbkdf2_hmac("sha256", pw, salt, it)
ck = hmac.new(sp, b"Client Key", "sha256").digest(); sk = hmac.new(sp, b"Server Key", "sha256").digest()
b = lambda x: base64.b64encode(x).decode()
print("SCRAM-SHA-256$%d:%s$%s:%s" % (it, b(salt), b(hashlib.sha256(ck).digest()), b(sk)))' "$PW" "${FAST_ITER:-16}")
  psql -qX -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE ROLE bench_fast LOGIN PASSWORD '$FAST_VERIFIER'" \
    -c "GRANT bench TO bench_fast" postgres
}

# Starts PgBouncer (Debian's) on 127.0.0.1:$1 in transaction pooling, pool size $POOL, at
# most $2 clients, with a descriptor limit of $3. Clients authenticate with SCRAM against
# bench's verifier in auth_file (no PBKDF2 per login; the server login by SCRAM
# pass-through), as dbplane's stored verifiers do. Sets BOUNCER_PID.
bench_pgbouncer_start() {
  printf '"bench" "%s"\n"bench_fast" "%s"\n' "$VERIFIER" "$FAST_VERIFIER" > "$W/userlist.txt"
  cat > "$W/pgbouncer.ini" <<EOC
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $W/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = $2
pidfile = $W/pgbouncer.pid
logfile = $W/pgbouncer.log
ignore_startup_parameters = extra_float_digits
EOC
  [ "$(id -u)" = 0 ] && chown dbplane "$W/userlist.txt" "$W/pgbouncer.ini"
  # runuser's PAM session sets a soft descriptor limit of 1024: raise it before exec.
  "${RUNAS[@]}" sh -c "ulimit -n $3 && exec pgbouncer -d '$W/pgbouncer.ini'"
  for _ in $(seq 50); do [ -f "$W/pgbouncer.pid" ] && break; sleep 0.1; done
  BOUNCER_PID=$(cat "$W/pgbouncer.pid")
}
