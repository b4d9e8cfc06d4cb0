"""`dbplane up` on examples/wecare.yaml: a real MariaDB 10.11 primary + GTID replica with
the wecare database, the shop's and the ERP's logins and their grants, kept so by the
reconciler; clients talk to the servers with PyMySQL.

Most tests share one daemon (module scope: a cluster takes a few seconds to build on a
2-core machine); the ones that stop servers or the daemon get their own.
"""
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql
import pytest

from conftest import ROOT, Daemon, stop_and_check, wait_until

WECARE = ROOT / "examples" / "wecare.yaml"
FIXTURES = Path(__file__).resolve().parent / "mariadb"
TENANT = "wecare"
ERP_PASSWORD = "erp-Secret-2026"  # stringData in examples/wecare.yaml

ER_ACCESS_DENIED_DB = 1044
ER_TABLEACCESS_DENIED = 1142
ER_TOO_MANY_USER_CONNECTIONS = 1203
ER_USER_LIMIT_REACHED = 1226
ER_OPTION_PREVENTS_STATEMENT = 1290


@pytest.fixture(scope="module")
def wc():
    """One daemon running examples/wecare.yaml for the module; its log is checked for
    sanitizer reports at the end, like conftest's daemon fixture does."""
    work = Path(tempfile.mkdtemp(prefix="dbplane-it-"))
    work.chmod(0o755)
    d = Daemon(work / "data", work / "data.log")
    try:
        d.start(WECARE)
        yield d
    finally:
        stop_and_check(d, work)


def instance_dir(d, name, cluster="app-db", tenant=TENANT):
    return d.data_dir / "clusters" / tenant / cluster / name


def server_pid(d, name, cluster="app-db", tenant=TENANT):
    return int((instance_dir(d, name, cluster, tenant) / "data" / "mariadbd.pid").read_text())


def connect(d, role, user="erp-db-user", password=None, db="wecare_production", cluster="app-db"):
    inst = d.instance(cluster, role)
    if password is None:
        password = d.secret("erp-db-secrets", "ERP_DB_PWD", TENANT) if user == "erp-db-user" \
            else d.secret("app-db-secrets", "APP_DB_PWD", TENANT)
    return pymysql.connect(host=inst["host"], port=inst["port"], user=user, password=password,
                           database=db, autocommit=True, connect_timeout=5)


def admin(d, name, sql, cluster="app-db", tenant=TENANT):
    """Runs SQL as the server's socket-authenticated root (the test runs as root, like the
    daemon), reading the socket path from the instance's my.cnf."""
    cnf = (instance_dir(d, name, cluster, tenant) / "my.cnf").read_text()
    sock = re.search(r"^socket = (.+)$", cnf, re.M).group(1)
    p = subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-N", "-B", "-e", sql],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def scalar(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
        return row[0] if row else None


def test_status_shape_and_replication(wc):
    c = wc.cluster("app-db")
    assert c["engine"] == "mariadb" and c["tenant"] == TENANT and c["state"] == "ready"
    assert c["primary"] == "app-db-0"
    assert sorted(i["role"] for i in c["instances"]) == ["primary", "replica"]
    assert all(i["state"] == "running" for i in c["instances"])
    # server_id is unique per instance; the replica is read-only, the primary is not.
    assert admin(wc, "app-db-0", "SELECT @@server_id, @@read_only, @@gtid_strict_mode") == "1\t0\t1"
    assert admin(wc, "app-db-1", "SELECT @@server_id, @@read_only, @@gtid_strict_mode") == "2\t1\t1"
    assert admin(wc, "app-db-0", "SELECT @@binlog_format, @@log_slave_updates") == "ROW\t1"
    # Binary logs expire after a week (MariaDB's default keeps them until the disk is full).
    assert admin(wc, "app-db-0", "SELECT @@binlog_expire_logs_seconds") == "604800"

    with connect(wc, "primary") as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE invoice (id INT PRIMARY KEY, total DECIMAL(10,2))")
            cur.execute("INSERT INTO invoice VALUES (1, 99.50)")
    with connect(wc, "replica") as conn:
        row = wait_until(lambda: scalar(conn, "SELECT total FROM invoice WHERE id = 1"),
                         timeout=30, what="the row on the replica")
        assert str(row) == "99.50"
        # read_only binds every account without READ_ONLY ADMIN, which only the admin has.
        with pytest.raises(pymysql.err.OperationalError) as e:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO invoice VALUES (2, 1.00)")
        assert e.value.args[0] == ER_OPTION_PREVENTS_STATEMENT, e.value.args
    # Even SUPER does not bypass read_only in 10.11 (only READ_ONLY ADMIN does).
    admin(wc, "app-db-0", "CREATE USER 'ops'@'%' IDENTIFIED BY 'ops-pw'; "
                          "GRANT SUPER, INSERT ON *.* TO 'ops'@'%'")
    inst = wc.instance("app-db", "replica")
    su = wait_until(lambda: pymysql.connect(host=inst["host"], port=inst["port"], user="ops",
                                            password="ops-pw", autocommit=True),
                    timeout=30, what="the SUPER account on the replica")
    with su:
        with pytest.raises(pymysql.err.OperationalError) as e:
            with su.cursor() as cur:
                cur.execute("INSERT INTO wecare_production.invoice VALUES (3, 1.00)")
        assert e.value.args[0] == ER_OPTION_PREVENTS_STATEMENT, e.value.args
    admin(wc, "app-db-0", "DROP USER 'ops'@'%'")


def test_gtid_positions_match_after_catch_up(wc):
    with connect(wc, "primary") as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS ledger (id INT PRIMARY KEY)")
            for i in range(20):
                cur.execute("INSERT INTO ledger VALUES (%s)", (i,))
        primary_pos = scalar(conn, "SELECT @@gtid_binlog_pos")
    assert re.fullmatch(r"0-1-\d+", primary_pos), primary_pos
    with connect(wc, "replica") as conn:
        wait_until(lambda: scalar(conn, "SELECT @@gtid_slave_pos") == primary_pos, timeout=30,
                   what=f"the replica to reach {primary_pos}")
    # dbplane's own view agrees: same position, no lag.
    def caught_up():
        c = wc.cluster("app-db")
        pos = {i["role"]: i for i in c["instances"]}
        return pos["primary"]["position"] == primary_pos == pos["replica"]["position"] and \
            pos["replica"]["lag_bytes"] == 0 and pos["replica"]["lag_ms"] == 0
    wait_until(caught_up, timeout=30, what="status to show the replica caught up")


def test_erp_user_is_limited_to_20_connections(wc):
    assert admin(wc, "app-db-0", "SELECT max_user_connections FROM mysql.user "
                                 "WHERE User = 'erp-db-user'") == "20"
    conns = []
    try:
        for _ in range(20):
            conns.append(connect(wc, "primary"))
        with pytest.raises(pymysql.err.OperationalError) as e:
            conns.append(connect(wc, "primary"))
        assert e.value.args[0] in (ER_USER_LIMIT_REACHED, ER_TOO_MANY_USER_CONNECTIONS), e.value.args
        assert "max_user_connections" in e.value.args[1]
    finally:
        for c in conns:
            c.close()
    # The slots come back once the connections are closed.
    wait_until(lambda: connect(wc, "primary").close() or True, timeout=10,
               what="a connection after the others closed")


def test_grants_deny_other_databases(wc):
    # A database whose name the unescaped grant pattern `wecare_production` would match.
    admin(wc, "app-db-0", "CREATE DATABASE IF NOT EXISTS wecareXproduction")
    with connect(wc, "primary", db=None) as conn:
        for db in ("mysql", "wecareXproduction"):
            with pytest.raises(pymysql.err.OperationalError) as e:
                conn.select_db(db)
            assert e.value.args[0] == ER_ACCESS_DENIED_DB, e.value.args
        with pytest.raises(pymysql.err.OperationalError) as e:
            scalar(conn, "SELECT COUNT(*) FROM mysql.user")
        assert e.value.args[0] == ER_TABLEACCESS_DENIED, e.value.args
        with pytest.raises(pymysql.err.OperationalError) as e:
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE erp_private")
        assert e.value.args[0] == ER_ACCESS_DENIED_DB, e.value.args
    # ALL PRIVILEGES on wecare_production: DDL and DML there work (see the other tests);
    # the shop's login has only its listed privileges.
    grants = admin(wc, "app-db-0", "SHOW GRANTS FOR 'wecare_app'@'%'")
    assert "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER ON " \
           "`wecare\\\\_production`.* TO `wecare_app`@`%`" in grants, grants
    with pytest.raises(pymysql.err.OperationalError) as e:
        with connect(wc, "primary", user="wecare_app") as conn:
            with conn.cursor() as cur:
                cur.execute("CREATE VIEW v AS SELECT 1")
    assert e.value.args[0] == ER_TABLEACCESS_DENIED, e.value.args


def test_password_drift_is_repaired(wc):
    """A password changed behind dbplane's back is put back (compared as hashes)."""
    admin(wc, "app-db-0", "ALTER USER 'wecare_app'@'%' IDENTIFIED BY 'tampered-password'")
    with pytest.raises(pymysql.err.OperationalError):
        connect(wc, "primary", user="wecare_app").close()
    # A change to the User makes the reconciler look at it now, not at the next resync.
    spec = wc.data_dir.parent / "app-user.yaml"
    spec.write_text("apiVersion: dbplane/v1\nkind: User\nmetadata: {name: app-user, tenant: wecare}\n"
                    "spec: {cluster: app-db, username: wecare_app, maxUserConnections: 60,\n"
                    "       passwordSecretKeyRef: {name: app-db-secrets, key: APP_DB_PWD}}\n")
    wc.cli("apply", "-f", str(spec))
    wc.wait(60)
    with connect(wc, "primary", user="wecare_app") as conn:
        assert scalar(conn, "SELECT 1") == 1
    assert admin(wc, "app-db-0", "SELECT max_user_connections FROM mysql.user "
                                 "WHERE User = 'wecare_app'") == "60"


def test_sql_jobs_run_once_in_order_and_report_errors(wc):
    d = wc

    def job(name):
        out = d.cli("get", "sqljob", name, "--tenant", TENANT, "-o", "json").stdout
        return json.loads(out)["status"]

    # The example's schema job ran once, as wecare_app, and its table reached the replica.
    assert job("wecare-schema-v1")["state"] == "ready"
    with connect(d, "replica") as conn:
        wait_until(lambda: scalar(conn, "SELECT COUNT(*) FROM customer") == 0, timeout=30,
                   what="the customer table on the replica")
    d.cli("apply", "-f", str(FIXTURES / "jobs.yaml"))
    wait_until(lambda: job("seed")["state"] == "ready", timeout=60, what="the seed job")
    assert job("orders-schema")["state"] == "ready"
    b = wait_until(lambda: (lambda s: s if s["state"] == "failed" else None)(job("broken")),
                   timeout=30, what="the broken job to fail")
    assert "no_such_table" in b["message"] and "doesn't exist" in b["message"], b
    with connect(d, "primary") as conn:
        assert scalar(conn, "SELECT GROUP_CONCAT(item ORDER BY id) FROM orders") == "chair,lamp"
    # Re-applying the same specs runs nothing again (a second INSERT would fail anyway).
    d.cli("apply", "-f", str(FIXTURES / "jobs.yaml"), str(WECARE))
    time.sleep(3)
    completed = sorted(e["name"] for e in d.events()
                       if e["reason"] == "Completed" and e["kind"] == "SqlJob")
    assert completed == ["orders-schema", "seed", "wecare-schema-v1"]
    assert job("seed")["state"] == "ready"


def test_secrets_never_in_plaintext(wc):
    d = wc
    app_pw = d.secret("app-db-secrets", "APP_DB_PWD", TENANT)
    repl_pw = d.secret("dbplane-internal-app-db", "replication", TENANT)
    admin_pw = d.secret("dbplane-internal-app-db", "admin", TENANT)
    assert len(app_pw) == 32 and len(repl_pw) == 32
    # Passwords reach the server only as hashes: not in binlogs, relay logs, server or
    # tool logs, or my.cnf. The replication password sits only in the replica's
    # master.info, where MariaDB keeps it (documented in mariadb.c and docs/mariadb.md).
    for name in ("app-db-0", "app-db-1"):
        for path in instance_dir(d, name).rglob("*"):
            if not path.is_file() or path.stat().st_size > 64 << 20:
                continue
            blob = path.read_bytes()
            for pw in (ERP_PASSWORD, app_pw, admin_pw):
                assert pw.encode() not in blob, f"a password in plaintext in {path}"
            if repl_pw.encode() in blob:
                assert path.name == "master.info" and name == "app-db-1", path
    log = d.log_text()
    for pw in (ERP_PASSWORD, app_pw, repl_pw, admin_pw):
        assert pw not in log
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    for pw in (ERP_PASSWORD, app_pw, repl_pw, admin_pw):
        assert pw not in ps


def test_kill_9_replica_restarts_and_catches_up_without_reclone(wc):
    d = wc
    pid = server_pid(d, "app-db-1")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: any(e["reason"] == "InstanceExited" and e["name"] == "app-db-1"
                           and "signal 9" in e["message"] for e in d.events()),
               timeout=30, what="an InstanceExited event")
    # Writes while the replica is down must reach it after the restart.
    with connect(d, "primary") as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE during_outage (v INT)")
            cur.execute("INSERT INTO during_outage VALUES (42)")
        primary_pos = scalar(conn, "SELECT @@gtid_binlog_pos")
    wait_until(lambda: any(e["reason"] == "InstanceRestarted" and e["name"] == "app-db-1"
                           for e in d.events()), timeout=60, what="an InstanceRestarted event")
    # (Not `dbplane wait`: the module's daemon also holds a deliberately failing SqlJob.)
    def ready():
        c = d.cluster("app-db")
        return c["state"] == "ready" and all(i["state"] == "running" for i in c["instances"])
    wait_until(ready, timeout=120, what="app-db ready again")
    assert server_pid(d, "app-db-1") != pid
    with connect(d, "replica") as conn:
        assert wait_until(lambda: scalar(conn, "SELECT v FROM during_outage"), timeout=60,
                          what="replication after the restart") == 42
        wait_until(lambda: scalar(conn, "SELECT @@gtid_slave_pos") == primary_pos, timeout=30,
                   what="the replica's GTID position")
    ev = d.events()
    assert sum(1 for e in ev if e["reason"] == "Cloned" and e["name"] == "app-db-1") == 1


def test_stop_and_start_keeps_data_without_reinit(daemon):
    d = daemon.start(WECARE)
    with connect(d, "primary") as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (v VARCHAR(32))")
            cur.execute("INSERT INTO kept VALUES ('still here')")
    pids = [server_pid(d, f"app-db-{i}") for i in range(2)]
    ports = sorted(i["port"] for i in d.cluster("app-db")["instances"])
    assert d.stop() == 0
    for pid in pids:  # every server stopped cleanly with the daemon
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    d.start(WECARE)
    # Ports are kept, unless another program took one while dbplane was down (then the
    # instance moves and says so).
    if not any(e["reason"] == "PortMoved" for e in d.events()):
        assert sorted(i["port"] for i in d.cluster("app-db")["instances"]) == ports

    def kept_on_replica():
        with connect(d, "replica") as conn:  # may still be starting
            return scalar(conn, "SELECT v FROM kept")
    assert wait_until(kept_on_replica, timeout=60, what="the row after restart") == "still here"

    def write_on_primary():
        with connect(d, "primary") as conn:  # may still be starting
            with conn.cursor() as cur:
                cur.execute("INSERT INTO kept VALUES ('after restart')")
            return True
    wait_until(write_on_primary, timeout=60, what="a write on the primary after restart")
    with connect(d, "replica") as conn:
        wait_until(lambda: scalar(conn, "SELECT COUNT(*) FROM kept") == 2, timeout=30,
                   what="replication after the daemon restarted")
    ev = d.events()
    brief = [(e["kind"], e["name"], e["reason"]) for e in ev]
    assert sum(1 for e in ev if e["reason"] == "Initialized") == 1, brief
    assert sum(1 for e in ev if e["reason"] == "Cloned") == 1, brief
    assert sum(1 for e in ev if e["kind"] == "SqlJob" and e["reason"] == "Completed") == 1, brief


def test_bad_config_is_an_error_status_not_a_crash_loop(daemon):
    d = daemon.start(FIXTURES / "bad_config.yaml", wait=False)

    def failed(name):
        c = d.cluster(name, tenant="default")
        return c if c["state"] == "failed" and c["message"] else None

    typo = wait_until(lambda: failed("typo-db"), timeout=90, what="typo-db to fail")
    assert "unknown variable 'innodb_bufer_pool_size=32M'" in typo["message"], typo
    managed = wait_until(lambda: failed("managed-db"), timeout=90, what="managed-db to fail")
    assert "spec.config.port cannot be set" in managed["message"], managed
    time.sleep(2)
    started = [e for e in d.events() if e["reason"] in ("InstanceStarted", "InstanceExited")]
    assert started == [], started
    # Correcting the spec is enough: the server starts with the fixed option file.
    d.cli("apply", "-f", str(FIXTURES / "fixed_config.yaml"))
    wait_until(lambda: d.cluster("typo-db", tenant="default")["state"] == "ready", timeout=90,
               what="typo-db to become ready")
    assert admin(d, "typo-db-0", "SELECT @@innodb_buffer_pool_size", cluster="typo-db",
                 tenant="default") == str(32 << 20)


# ---- high availability (the ha/ sequences through this driver's promote) -----------------

HA_PASSWORD = "ha-Test-password-1"  # stringData in mariadb/ha.yaml


def ha_conn(inst):
    return pymysql.connect(host=inst["host"], port=inst["port"], user="app", password=HA_PASSWORD,
                           database="app", autocommit=True, connect_timeout=2, read_timeout=2)


def ha_writable(inst):
    try:
        with ha_conn(inst) as c:
            return scalar(c, "SELECT @@read_only") == 0
    except pymysql.err.MySQLError:
        return False


class WritableProbe:
    """Checks every 50 ms how many instances accept writes; records the maximum."""

    def __init__(self, instances):
        import threading
        self.instances, self.max_writable, self.stop = instances, 0, False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        deadline = time.monotonic() + 180
        while not self.stop and time.monotonic() < deadline:
            self.max_writable = max(self.max_writable,
                                    sum(1 for i in self.instances if ha_writable(i)))
            time.sleep(0.05)

    def finish(self):
        self.stop = True
        self.t.join(10)
        return self.max_writable


def ledger(inst):
    with ha_conn(inst) as c:
        with c.cursor() as cur:
            cur.execute("SELECT v FROM ledger ORDER BY id")
            return [r[0] for r in cur.fetchall()]


def test_hung_primary_fails_over_and_switches_back(daemon):
    d = daemon.start(FIXTURES / "ha.yaml")
    c0 = d.cluster("my-ha")
    assert c0["epoch"] == 1 and c0["primary"] == "my-ha-0"
    with ha_conn(d.instance("my-ha", "primary")) as c:
        with c.cursor() as cur:
            cur.execute("CREATE TABLE ledger (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(16))")
            cur.execute("INSERT INTO ledger (v) VALUES ('before')")
    insts = c0["instances"]
    with ha_conn(d.instance("my-ha", "replica")) as c:
        wait_until(lambda: scalar(c, "SELECT COUNT(*) FROM ledger") == 1, timeout=30,
                   what="the row on the replica")
    probe = WritableProbe(insts)
    pid = server_pid(d, "my-ha-0", cluster="my-ha", tenant="default")
    os.kill(pid, signal.SIGSTOP)  # a hang, not a crash: the supervisor sees nothing
    try:
        c = wait_until(lambda: (lambda c: c if c["epoch"] == 2 else None)(d.cluster("my-ha")),
                       timeout=60, what="failover to a new epoch")
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert c["primary"] == "my-ha-1"
    new = next(i for i in c["instances"] if i["name"] == "my-ha-1")
    # The epoch moves before the promotion completes: wait for the new primary to write.
    wait_until(lambda: ha_writable(new), timeout=30, what="the promoted replica to take writes")
    with ha_conn(new) as cn:
        with cn.cursor() as cur:
            cur.execute("INSERT INTO ledger (v) VALUES ('after')")
    assert ledger(new) == ["before", "after"]
    # The fenced old primary rejoins over GTID (its history is the new primary's prefix:
    # nothing was written during the hang) without a clone, and follows.
    d.wait(180)
    c = d.cluster("my-ha")
    old = next(i for i in c["instances"] if i["name"] == "my-ha-0")
    assert old["role"] == "replica" and old["state"] == "running"
    wait_until(lambda: ledger(old) == ["before", "after"], timeout=30,
               what="the old primary to catch up as a replica")
    reasons = [e["reason"] for e in d.events() if e["name"] == "my-ha-0"]
    assert "Rejoined" in reasons and "Rebuilding" not in reasons, reasons
    # A planned switchover back: no write is lost, still one writable server.
    out = d.cli("switchover", "my-ha", "-o", "json").stdout
    assert '"new_primary": "my-ha-0"' in out
    back = next(i for i in d.cluster("my-ha")["instances"] if i["name"] == "my-ha-0")
    wait_until(lambda: ha_writable(back), timeout=30, what="the switchover target to take writes")
    with ha_conn(back) as cn:
        with cn.cursor() as cur:
            cur.execute("INSERT INTO ledger (v) VALUES ('switched')")
    d.wait(180)
    other = next(i for i in d.cluster("my-ha")["instances"] if i["name"] == "my-ha-1")
    wait_until(lambda: ledger(other) == ["before", "after", "switched"], timeout=30,
               what="the former primary to follow after the switchover")
    # ... over GTID too: a switchover never needs a clone.
    reasons = [e["reason"] for e in d.events() if e["name"] == "my-ha-1"]
    assert "Rejoined" in reasons and "Rebuilding" not in reasons, reasons
    assert probe.finish() <= 1, "two writable primaries at once"
