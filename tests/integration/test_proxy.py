"""Integration tests of the PostgreSQL proxy (`dbplane proxy-run`) against real PostgreSQL 15
servers and real clients (psql, pgbench, psycopg).

The module starts two independent PostgreSQL servers ("a" and "b", SCRAM authentication,
loopback only) and two proxies: `px` (2 workers, transaction pooling, TLS from a generated
certificate) and `px1` (1 worker, pool size 1) for the tests that need two clients to share
one server connection. Every wait is bounded; nothing leaves 127.0.0.1.
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg")

from conftest import free_port, peak_while_clients_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("DBPLANE_BIN", str(ROOT / "build" / "dbplane"))
PGBIN = Path("/usr/lib/postgresql/15/bin")
PW = "proxy-test-pw"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

pytestmark = pytest.mark.skipif(not (PGBIN / "initdb").exists(), reason="PostgreSQL 15 not installed")



def wait_until(pred, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - start-up races
            last = e
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def as_pg_user(args):
    """Runs PostgreSQL binaries as the unprivileged `dbplane` user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "dbplane", "--"] + args
    return args


class PgServer:
    def __init__(self, base: Path, name: str):
        self.dir = base / name
        self.data = self.dir / "data"
        self.port = free_port()

    def start(self):
        self.dir.mkdir(parents=True)
        pwfile = self.dir / "pw"
        pwfile.write_text(PW + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "dbplane")
            shutil.chown(pwfile, "dbplane")
        subprocess.run(as_pg_user([str(PGBIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                   "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"]),
                       check=True, capture_output=True, timeout=120)
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.dir}'\nmax_connections = 200\n"
                    "fsync = off\nshared_buffers = 32MB\nTimeZone = 'UTC'\n")
        subprocess.run(as_pg_user([str(PGBIN / "pg_ctl"), "-D", str(self.data), "-l",
                                   str(self.dir / "pg.log"), "-w", "start"]),
                       check=True, capture_output=True, timeout=120)
        self.sql("CREATE ROLE app LOGIN PASSWORD '%s'" % PW)
        self.sql("CREATE DATABASE app OWNER app")
        return self

    def dsn(self, db="postgres", user="postgres"):
        return f"host=127.0.0.1 port={self.port} dbname={db} user={user} password={PW} sslmode=disable"

    def sql(self, q, db="postgres"):
        with psycopg.connect(self.dsn(db), autocommit=True) as c:
            cur = c.execute(q)
            return cur.fetchall() if cur.description else None

    def stop(self):
        subprocess.run(as_pg_user([str(PGBIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                   "stop"]), capture_output=True, timeout=60)


class Proxy:
    """A `dbplane proxy-run` process over a 0600 JSON config."""

    def __init__(self, base: Path, name: str, workers: int, backend: PgServer, **cluster):
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.cfg_path = self.dir / "proxy.json"
        self.port = free_port()
        self.workers = workers
        self.cluster = dict(name="pg", rw_port=self.port, pool_mode="transaction", pool_size=4,
                            epoch=1, client_login_timeout_ms=3000, query_wait_timeout_ms=20000)
        self.top = {"server_tls_ca": cluster.pop("server_tls_ca")} if "server_tls_ca" in cluster else {}
        self.users = cluster.pop("users", [{"username": "app", "password": PW},
                                           {"username": "postgres", "password": PW}])
        self.cluster.update(cluster)
        self.set_backend(backend, 1)

    def set_backend(self, server: PgServer, epoch: int):
        self.cluster["epoch"] = epoch
        self.cluster["backends"] = [{"name": f"pg-{server.port}", "host": "127.0.0.1",
                                     "port": server.port, "primary": True, "healthy": True}]
        self.write()

    def write(self):
        doc = {"workers": self.workers, "tls_dir": str(self.dir / "tls"), "log_level": "info",
               "clusters": [dict(self.cluster, users=self.users)], **self.top}
        tmp = self.cfg_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.cfg_path)

    def start(self):
        self.out = open(self.dir / "stdout", "w")
        self.err = open(self.dir / "stderr", "w")
        self.proc = subprocess.Popen([BIN, "proxy-run", "--config", str(self.cfg_path)],
                                     stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL)
        wait_until(lambda: self.proc.poll() is not None or self.can_connect(), what="proxy port")
        assert self.proc.poll() is None, self.log()
        return self

    def can_connect(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def dsn(self, user="app", db="app", password=PW, sslmode="disable", **kw):
        extra = " ".join(f"{k}={v}" for k, v in kw.items())
        return (f"host=127.0.0.1 port={self.port} dbname={db} user={user} password={password} "
                f"sslmode={sslmode} connect_timeout=10 {extra}")

    def connect(self, **kw):
        autocommit = kw.pop("autocommit", True)
        prepare_threshold = kw.pop("prepare_threshold", 5)
        return psycopg.connect(self.dsn(**kw), autocommit=autocommit,
                               prepare_threshold=prepare_threshold)

    def stats(self):
        before = (self.dir / "stdout").read_text().count("\n")
        self.proc.send_signal(signal.SIGUSR1)
        lines = wait_until(lambda: (lambda t: t if t.count("\n") > before else None)(
            (self.dir / "stdout").read_text()), what="stats line")
        return json.loads(lines.strip().splitlines()[-1])

    def log(self):
        return (self.dir / "stderr").read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.out.close()
        self.err.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def env():
    base = Path(tempfile.mkdtemp(prefix="dbp-proxy-"))
    os.chmod(base, 0o755)
    a = PgServer(base, "a").start()
    b = PgServer(base, "b").start()
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", str(a.port), "-U",
                    "app", "app"], env=dict(os.environ, PGPASSWORD=PW, PGSSLMODE="disable"),
                   check=True, capture_output=True, timeout=120)
    px = Proxy(base, "px", 2, a, pool_size=4).start()
    px1 = Proxy(base, "px1", 1, a, pool_size=1, idle_in_transaction_timeout_ms=0).start()
    yield {"a": a, "b": b, "px": px, "px1": px1, "base": base}
    codes = [px.stop(), px1.stop()]
    logs = px.log() + px1.log()
    a.stop()
    b.stop()
    if codes == [0, 0]:
        shutil.rmtree(base, ignore_errors=True)
    assert codes == [0, 0], f"proxy exit codes {codes}, logs kept in {base}:\n{logs[-3000:]}"
    bad = next((m for m in SANITIZER_MARKERS if m in logs), None)
    assert bad is None, f"sanitizer report in proxy log:\n{logs[-4000:]}"
    assert PW not in logs, "a password reached the proxy log"


def test_psql_through_proxy(env):
    p = subprocess.run(["psql", env["px"].dsn(), "-XAtc", "select 40 + 2"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "42"


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_modes(env, mode):
    px = env["px"]
    p = subprocess.run(["pgbench", "-n", "-M", mode, "-c", "8", "-j", "2", "-t", "100", "-h",
                        "127.0.0.1", "-p", str(px.port), "-U", "app", "app"],
                       env=dict(os.environ, PGPASSWORD=PW, PGSSLMODE="disable"),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "number of transactions actually processed: 800/800" in p.stdout, p.stdout


def test_psycopg_server_side_prepares_share_a_server(env):
    """Two clients on one server connection (pool size 1), each with its own named
    statements (prepare_threshold=0), interleaved across transactions."""
    px1 = env["px1"]
    c1 = px1.connect(prepare_threshold=0)
    c2 = px1.connect(prepare_threshold=0)
    for i in range(30):
        assert c1.execute("select %s::int * 2", (i,)).fetchone() == (i * 2,)
        assert c2.execute("select %s::text || 'x'", (str(i),)).fetchone() == (f"{i}x",)
        assert c2.execute("select %s::int * 2", (i,)).fetchone() == (i * 2,)
        with c1.transaction():
            assert c1.execute("select count(*) from pgbench_branches where bid > %s", (0,)).fetchone()[0] >= 1
    # The server connection holds each distinct statement once.
    n = env["a"].sql("select count(*) from pg_stat_activity where usename = 'app'")[0][0]
    assert n >= 1
    c1.close()
    c2.close()


def test_cancel_pg_sleep(env):
    c = env["px"].connect()
    t = threading.Timer(0.5, c.cancel)
    t.start()
    with pytest.raises(psycopg.errors.QueryCanceled) as ei:
        c.execute("select pg_sleep(20)")
    t.join()
    assert "canceling statement due to user request" in str(ei.value)
    assert c.execute("select 1").fetchone() == (1,)
    c.close()


def test_tls_sslmode_require(env):
    c = psycopg.connect(env["px"].dsn(sslmode="require"), autocommit=True)
    assert c.pgconn.ssl_in_use
    assert c.execute("select 7").fetchone() == (7,)
    c.close()
    assert (env["px"].dir / "tls" / "proxy.crt").exists()
    assert (os.stat(env["px"].dir / "tls" / "proxy.key").st_mode & 0o077) == 0


def test_wrong_password_refused(env):
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(env["px"].dsn(password="nope"))
    assert "password authentication failed" in str(ei.value)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(env["px"].dsn(user="nosuchuser"))


def idle_in_tx(server):
    return server.sql("select count(*) from pg_stat_activity where usename = 'app' "
                      "and state like 'idle in transaction%'")[0][0]


def test_disconnect_mid_transaction_leaves_no_open_transaction(env):
    px1 = env["px1"]
    c = px1.connect(autocommit=False)
    c.execute("create temp table if not exists t_mid (x int)")  # noqa: the temp table dies with ROLLBACK
    c.execute("select txid_current()")
    assert idle_in_tx(env["a"]) >= 1
    c.pgconn.finish()  # vanish mid-transaction, no ROLLBACK from the client
    wait_until(lambda: idle_in_tx(env["a"]) == 0, timeout=5, what="rollback of the abandoned transaction")
    c2 = px1.connect()
    assert c2.execute("select 1").fetchone() == (1,)
    assert idle_in_tx(env["a"]) == 0
    c2.close()


def test_set_in_transaction_mode_does_not_leak(env):
    px1 = env["px1"]  # pool size 1: both clients use the same server connection
    a = px1.connect()
    b = px1.connect()
    a.execute("set timezone = 'Asia/Tokyo'")
    a.execute("set application_name = 'client-a'")
    assert b.execute("show timezone").fetchone() == ("UTC",)
    assert b.execute("select current_setting('application_name')").fetchone()[0] != "client-a"
    assert a.execute("show timezone").fetchone() == ("Asia/Tokyo",)
    assert a.execute("select current_setting('application_name')").fetchone() == ("client-a",)
    assert b.execute("show timezone").fetchone() == ("UTC",)
    a.close()
    b.close()


def test_backend_killed_mid_query(env):
    px = env["px"]
    c = px.connect(application_name="victim")
    errs = []

    def run():
        try:
            c.execute("select pg_sleep(20)")
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    t = threading.Thread(target=run)
    t.start()
    wait_until(lambda: env["a"].sql("select pid from pg_stat_activity where query = 'select pg_sleep(20)'"
                                    " and state = 'active'"), what="the sleeping backend")
    env["a"].sql("select pg_terminate_backend(pid) from pg_stat_activity "
                 "where query = 'select pg_sleep(20)' and state = 'active'")
    t.join(timeout=15)
    assert not t.is_alive()
    assert errs, "the client did not get an error"
    # The pool recovers: new clients work.
    for _ in range(5):
        c2 = px.connect()
        assert c2.execute("select 5").fetchone() == (5,)
        c2.close()


def raw_exchange(port, payload, timeout=5.0):
    """Sends payload on a fresh connection; returns everything read until EOF or timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        return data


def test_malformed_and_oversized_startup_isolated(env):
    px = env["px"]
    ok = px.connect()
    cases = [
        struct.pack("!I", 3),                                   # length below 8
        struct.pack("!II", 0x7FFFFFFF, 196608) + b"user\0",      # 2 GiB startup packet
        struct.pack("!II", 9000000, 196608),                    # oversized
        struct.pack("!II", 8, 0x00020000),                      # protocol 2.0
        struct.pack("!II", 15, 196608) + b"user\0x\0",          # unterminated
        struct.pack("!II", 8, 80877103) + b"extra",             # bytes after SSLRequest
    ]
    for payload in cases:
        reply = raw_exchange(px.port, payload)
        assert reply[:1] == b"E", (payload, reply)
        assert b"08P01" in reply or b"0A000" in reply, reply
        assert ok.execute("select 1").fetchone() == (1,)
    # GSSENCRequest is refused with 'N', then a normal login works on the same socket path.
    assert raw_exchange(px.port, struct.pack("!II", 8, 80877104), timeout=1)[:1] == b"N"
    ok.close()


def test_slow_loris_is_cut_at_login_timeout(env):
    px = env["px"]  # client_login_timeout_ms = 3000
    s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    start = time.monotonic()
    closed = False
    ok = px.connect()
    packet = struct.pack("!II", 40, 196608) + b"user\0app\0database\0app\0"
    for i, byte in enumerate(packet):
        try:
            s.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        assert ok.execute("select 1").fetchone() == (1,)
        s.settimeout(0.3)
        try:
            s.recv(4096)  # an ErrorResponse or EOF: the proxy gave up on us
            closed = True
            break
        except socket.timeout:
            pass
        if time.monotonic() - start > 10:
            break
    assert closed, "slow client still connected after 10 s"
    assert time.monotonic() - start < 8
    s.close()
    ok.close()


def test_many_idle_clients_do_not_disturb(env):
    px = env["px"]
    # psycopg waits with select(): its sockets must be opened before the 2000 idle ones.
    idle = [px.connect() for _ in range(50)]
    c = px.connect()
    socks = []
    try:
        for _ in range(2000):
            socks.append(socket.create_connection(("127.0.0.1", px.port), timeout=5))
        # All accepted, before the 3 s login timeout reaps the never-logged-in sockets.
        wait_until(lambda: px.stats()["clients"] >= 2000, timeout=2.5, interval=0.1,
                   what="2000 accepted clients")
        t0 = time.monotonic()
        for i in range(200):
            assert c.execute("select %s::int", (i,)).fetchone() == (i,)
        elapsed = time.monotonic() - t0
        assert elapsed < 10, f"200 queries took {elapsed:.1f}s with 2000 idle sockets"
        for x in idle:
            assert x.execute("select 1").fetchone() == (1,)
    finally:
        for s in socks:
            s.close()
        for x in idle:
            x.close()
        c.close()


def test_topology_change_moves_new_transactions(env):
    px = env["px"]
    a, b = env["a"], env["b"]
    c = px.connect()
    assert c.execute("select current_setting('port')::int").fetchone()[0] == a.port
    px.set_backend(b, 2)
    t0 = time.monotonic()
    px.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: c.execute("select current_setting('port')::int").fetchone()[0] == b.port,
               timeout=1.0, interval=0.02, what="new transactions on server b")
    assert time.monotonic() - t0 < 1.0
    st = px.stats()
    assert st["clusters"][0]["epoch"] == 2
    # An older epoch never wins.
    px.set_backend(a, 1)
    px.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert c.execute("select current_setting('port')::int").fetchone()[0] == b.port
    # Back to a with a newer epoch, for the tests that follow.
    px.set_backend(a, 3)
    px.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: c.execute("select current_setting('port')::int").fetchone()[0] == a.port,
               timeout=2.0, interval=0.02, what="new transactions back on server a")
    c.close()


def test_same_cluster_name_in_two_tenants_gets_two_pools(env):
    """Pools are per (tenant, cluster, endpoint, database, user): tenants t1 and t2 each have
    a cluster "pg", on their own port and server; neither reaches the other's server."""
    px = Proxy(env["base"], "px-tenants", 1, env["a"], tenant="t1", pool_size=2)
    other = dict(px.cluster, tenant="t2", rw_port=free_port(), users=px.users,
                 backends=[{"name": "pg-b", "host": "127.0.0.1", "port": env["b"].port,
                            "primary": True, "healthy": True}])
    px.write = lambda: _write_clusters(px, [dict(px.cluster, users=px.users), other])
    px.write()
    px.start()
    try:
        for _ in range(3):  # interleaved, so a shared pool would hand one tenant the other's server
            for port, server in ((px.port, env["a"]), (other["rw_port"], env["b"])):
                with psycopg.connect(px.dsn().replace(f"port={px.port}", f"port={port}"),
                                     autocommit=True) as c:
                    got = c.execute("select current_setting('port')::int").fetchone()[0]
                    assert got == server.port, f"proxy port {port} reached server {got}"
        pools = [p for w in px.stats()["per_worker"] for p in w["pools"]]
        assert {(p["tenant"], p["cluster"]) for p in pools} == {("t1", "pg"), ("t2", "pg")}
    finally:
        px.stop()


def _write_clusters(px, clusters):
    doc = {"workers": px.workers, "tls_dir": str(px.dir / "tls"), "log_level": "info",
           "clusters": clusters, **px.top}
    fd = os.open(px.cfg_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)


def test_stats_and_logs(env):
    px = env["px"]
    # Its own successful and failed logins: the test does not rely on the others' order.
    c = px.connect()
    assert c.execute("select 1").fetchone() == (1,)
    c.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(px.dsn(password="nope"))
    st = px.stats()
    ct = st["counters"]
    assert ct["logins_ok"] > 0 and ct["transactions"] > 0 and ct["logins_failed"] >= 1
    assert any(p["database"] == "app" and p["tenant"] for w in st["per_worker"]
               for p in w["pools"])
    log = px.log()
    assert "msg=proxy_client_login" in log and "msg=proxy_client_disconnect" in log
    assert "reason=auth_failed" in log


def test_config_file_must_be_0600(env):
    bad = env["base"] / "open.json"
    bad.write_text(env["px"].cfg_path.read_text())
    os.chmod(bad, 0o644)
    p = subprocess.run([BIN, "proxy-run", "--config", str(bad)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0
    assert "0600" in p.stderr


def test_port_taken_by_another_proxy_is_refused(env):
    """The workers' SO_REUSEPORT sockets must not let a second proxy process share a port
    (the kernel would split new connections between the two): the second one fails."""
    dup = env["base"] / "dup.json"
    fd = os.open(dup, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(env["px"].cfg_path.read_text())
    p = subprocess.run([BIN, "proxy-run", "--config", str(dup)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0
    assert "Address already in use" in p.stderr, p.stderr
    with psycopg.connect(env["px"].dsn("app"), autocommit=True) as c:
        assert c.execute("select 1").fetchone() == (1,)


def test_session_on_demoted_primary_is_closed(env):
    """Session pooling: after a topology change a session must not go on writing to the old
    primary. Idle sessions end at once, one in a transaction at its end (the COMMIT still
    succeeds), with FATAL 57P01; a new connection lands on the new primary."""
    a, b = env["a"], env["b"]
    pxs = Proxy(env["base"], "pxs", 1, a, pool_mode="session", pool_size=4).start()
    try:
        idle = pxs.connect()
        notices = []
        idle.add_notice_handler(lambda d: notices.append(d.message_primary))
        in_tx = pxs.connect()
        assert idle.execute("select current_setting('port')::int").fetchone()[0] == a.port
        in_tx.execute("BEGIN")
        assert in_tx.execute("select current_setting('port')::int").fetchone()[0] == a.port
        pxs.set_backend(b, 2)
        pxs.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reason=primary_changed" in pxs.log(), timeout=5,
                   what="the idle session to be ended")
        with pytest.raises(psycopg.OperationalError):
            idle.execute("select 1")
        # The open transaction finishes on the old server, then the session ends.
        in_tx.execute("COMMIT")
        with pytest.raises(psycopg.OperationalError):
            in_tx.execute("select 1")
        assert pxs.log().count("reason=primary_changed") >= 2
        with pxs.connect() as fresh:
            assert fresh.execute("select current_setting('port')::int").fetchone()[0] == b.port
        idle.close()
        in_tx.close()
    finally:
        code = pxs.stop()
    assert code == 0, pxs.log()[-3000:]
    assert not any(m in pxs.log() for m in SANITIZER_MARKERS)


def test_user_server_connection_cap_is_exact_and_shared(env):
    """User.maxUserConnections caps the user's server connections across databases and
    workers exactly; a database whose clients wait gets a slot held by an idle server of
    the same user in another database (evicted), instead of waiting for it to time out."""
    a = env["a"]
    # A login of its own, so that the other proxies' servers are not counted.
    a.sql("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'capped') THEN "
          f"CREATE ROLE capped LOGIN PASSWORD '{PW}'; END IF; END$$")
    pxc = Proxy(env["base"], "pxc", 2, a, pool_size=8, query_wait_timeout_ms=20000,
                users=[{"username": "capped", "password": PW, "max_connections": 2}]).start()

    def app_servers():
        return a.sql("select count(*) from pg_stat_activity where usename = 'capped' "
                     "and backend_type = 'client backend'")[0][0]
    try:
        peak, errors = peak_while_clients_run(app_servers, lambda i: pxc.connect(user="capped"), 6)
        assert not errors, errors
        assert peak == 2, f"{peak} server connections for a user capped at 2"
        # Both slots are now idle servers of database "app"; database "postgres" needs one.
        t0 = time.monotonic()
        for _ in range(4):
            with pxc.connect(db="postgres", user="capped") as c:
                assert c.execute("select current_database()").fetchone()[0] == "postgres"
        assert time.monotonic() - t0 < 5, "waited for a slot instead of evicting an idle server"
        assert app_servers() <= 2
        assert "evicted" in pxc.log()

        # A cap added by a reload counts the servers opened while there was none: the
        # user's count is kept with or without a cap.
        def reload(cap):
            pxc.users = [{"username": "capped", "password": PW, "max_connections": cap}]
            pxc.write()
            n = pxc.log().count("proxy_reloaded")
            pxc.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: pxc.log().count("proxy_reloaded") > n, what="reload")
        a.sql("select pg_terminate_backend(pid) from pg_stat_activity where usename = 'capped'")
        wait_until(lambda: app_servers() == 0, what="capped servers gone")
        time.sleep(0.3)  # the proxy reads their EOF
        reload(-1)
        held = [pxc.connect(user="capped") for _ in range(4)]
        for h in held:
            h.execute("BEGIN")
            h.execute("select 1")
        n_open = app_servers()
        assert n_open == 4
        reload(2)
        for h in held:
            h.execute("COMMIT")
            h.close()
        peak, errors = peak_while_clients_run(app_servers, lambda i: pxc.connect(user="capped"), 6)
        assert not errors, errors
        assert peak <= n_open, f"{peak} server connections after a cap of 2 was added over {n_open}"
    finally:
        code = pxc.stop()
    assert code == 0, pxc.log()[-3000:]


def test_database_server_connection_cap_is_exact_and_shared(env):
    """A database's max_connections (Database.spec.maxConnections) caps its server
    connections across users, both endpoints and workers exactly; another user's clients
    get a slot by evicting an idle server of the database; a reload that raises the cap
    drops no connection (an open transaction commits on its server)."""
    a = env["a"]
    if not a.sql("select 1 from pg_database where datname = 'capdb'"):
        a.sql("CREATE DATABASE capdb")
    for u in ("dbu1", "dbu2", "dbu3"):
        a.sql(f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{u}') THEN "
              f"CREATE ROLE {u} LOGIN PASSWORD '{PW}'; END IF; END$$")
    ro_port = free_port()
    pxd = Proxy(env["base"], "pxd", 2, a, pool_size=8, query_wait_timeout_ms=20000,
                ro_port=ro_port,
                users=[{"username": u, "password": PW} for u in ("dbu1", "dbu2", "dbu3")],
                databases=[{"name": "capdb", "max_connections": 2}]).start()

    def servers():
        return a.sql("select pid from pg_stat_activity where datname = 'capdb' "
                     "and backend_type = 'client backend'")

    def run_clients(n, cap):
        def connect(i):
            port = ro_port if i % 2 else pxd.port
            return psycopg.connect(pxd.dsn(user=f"dbu{1 + i % 2}", db="capdb").replace(
                f"port={pxd.port}", f"port={port}"), autocommit=True)
        peak, errors = peak_while_clients_run(lambda: len(servers()), connect, n)
        assert not errors, errors
        assert peak == cap, f"{peak} server connections to a database capped at {cap}"

    try:
        run_clients(6, 2)
        # Both slots are idle servers of dbu1/dbu2; dbu3 gets one by eviction, not by
        # waiting for the idle timeout.
        t0 = time.monotonic()
        for _ in range(3):
            with pxd.connect(db="capdb", user="dbu3") as c:
                assert c.execute("select current_user").fetchone()[0] == "dbu3"
        assert time.monotonic() - t0 < 5, "waited for a slot instead of evicting an idle server"
        assert len(servers()) <= 2
        assert "evicted: the database's max_connections" in pxd.log()

        # Reload with a higher cap while a transaction holds a server: nothing is dropped.
        held = pxd.connect(db="capdb", user="dbu3")
        held.execute("BEGIN")
        pid = held.execute("select pg_backend_pid()").fetchone()[0]
        before = {r[0] for r in servers()}
        pxd.cluster["databases"] = [{"name": "capdb", "max_connections": 3}]
        pxd.write()
        n_reloaded = pxd.log().count("proxy_reloaded")
        pxd.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: pxd.log().count("proxy_reloaded") > n_reloaded, what="reload")
        assert held.execute("select pg_backend_pid()").fetchone()[0] == pid
        held.execute("COMMIT")
        held.close()
        assert before <= {r[0] for r in servers()}, "the reload closed server connections"
        run_clients(6, 3)
    finally:
        code = pxd.stop()
    assert code == 0, pxd.log()[-3000:]


def test_tls_to_the_server(env):
    """server_tls: the proxy reaches a server that refuses plaintext (pg_hba hostnossl reject)
    over TLS — `require` without, `verify-full` with a certificate check against a CA bundle
    and the backend's IP — and a certificate from another CA is refused with a clear error."""
    base = env["base"]
    t = PgServer(base, "tlsdb").start()
    certs = base / "tlscerts"
    certs.mkdir()
    for name in ("server", "other"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(certs / f"{name}.key"),
                        "-out", str(certs / f"{name}.crt"), "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
    for f in ("server.crt", "server.key"):
        shutil.copy(certs / f, t.data / f)
        if os.geteuid() == 0:
            shutil.chown(t.data / f, "dbplane")
        os.chmod(t.data / f, 0o600)
    with open(t.data / "postgresql.conf", "a") as f:
        f.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    hba = (t.data / "pg_hba.conf").read_text()
    (t.data / "pg_hba.conf").write_text("hostnossl all all all reject\n" + hba)
    subprocess.run(as_pg_user([str(PGBIN / "pg_ctl"), "-D", str(t.data), "reload"]), check=True,
                   capture_output=True, timeout=60)
    wait_until(lambda: subprocess.run(["psql", t.dsn(), "-XAtc", "select 1"],
                                      capture_output=True, timeout=30).returncode != 0,
               timeout=10, what="the server to refuse plaintext")
    proxies = []
    try:
        req = Proxy(base, "px-tls-req", 1, t, server_tls="require").start()
        ver = Proxy(base, "px-tls-ver", 1, t, server_tls="verify-full",
                    server_tls_ca=str(certs / "server.crt")).start()
        bad = Proxy(base, "px-tls-bad", 1, t, server_tls="verify-full",
                    server_tls_ca=str(certs / "other.crt")).start()
        plain = Proxy(base, "px-tls-off", 1, t).start()
        proxies = [req, ver, bad, plain]
        for px in (req, ver):
            with px.connect() as c:
                assert c.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()"
                                 ).fetchone()[0] is True
                assert c.execute("select current_setting('port')::int").fetchone()[0] == t.port
        with pytest.raises(psycopg.OperationalError, match="certificate verification failed"):
            bad.connect()
        with pytest.raises(psycopg.OperationalError, match="server login failed"):
            plain.connect()
    finally:
        codes = [px.stop() for px in proxies]
        logs = "".join(px.log() for px in proxies)
        t.stop()
    assert all(c == 0 for c in codes), logs[-3000:]
    assert not any(m in logs for m in SANITIZER_MARKERS)


def test_pause_holds_new_transactions_and_resume_moves_them(env):
    """PAUSE (SIGUSR2 of proxy-run, proxy_pause underneath): a transaction in flight runs
    to its end, a new one waits — no error — and the pause reports drained only after the
    COMMIT; RESUME after a topology change sends the held transaction to the new primary."""
    a, b = env["a"], env["b"]
    pxp = Proxy(env["base"], "pxp", 2, a, pool_size=2)
    pxp.start()
    try:
        busy, held = pxp.connect(), pxp.connect()
        busy.execute("BEGIN")
        assert busy.execute("select current_setting('port')::int").fetchone()[0] == a.port
        pxp.proc.send_signal(signal.SIGUSR2)
        wait_until(lambda: "msg=proxy_paused" in pxp.log(), timeout=5, what="the pause")
        result, errors = [], []

        def run():
            try:
                result.append(held.execute("select current_setting('port')::int").fetchone()[0])
            except psycopg.Error as e:
                errors.append(str(e))
        t = threading.Thread(target=run, daemon=True)
        t.start()
        time.sleep(0.5)
        assert not result and not errors, "a new transaction ran during the pause"
        assert "msg=proxy_run_paused" not in pxp.log(), "drained with a transaction open"
        # The open transaction still works and ends; then the pause has drained.
        busy.execute("select 1")
        busy.execute("COMMIT")
        wait_until(lambda: "msg=proxy_run_paused cluster=pg drained=yes" in pxp.log(),
                   timeout=5, what="the drain")
        assert t.is_alive() and not result
        # A switchover's order: the new topology first, then resume.
        pxp.set_backend(b, 2)
        t0 = time.monotonic()
        pxp.proc.send_signal(signal.SIGUSR2)
        t.join(10)
        assert not errors, errors
        assert result == [b.port], "the held transaction did not go to the new primary"
        assert time.monotonic() - t0 < 2
        assert busy.execute("select current_setting('port')::int").fetchone()[0] == b.port
        busy.close()
        held.close()
    finally:
        code = pxp.stop()
    assert code == 0, pxp.log()[-3000:]
    assert not any(m in pxp.log() for m in SANITIZER_MARKERS)
