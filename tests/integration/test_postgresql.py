"""`dbplane up` on the quickstart: a real PostgreSQL 15 primary + streaming replica with
the declared databases, users (SCRAM-SHA-256) and grants, kept so by the reconciler."""
import os
import signal
import subprocess
import time

import psycopg
import pytest

from conftest import ROOT, pg_dsn, wait_until

QUICKSTART = ROOT / "examples" / "quickstart.yaml"


@pytest.fixture
def qs(daemon):
    return daemon.start(QUICKSTART)


def connect(d, role, user, db, password=None):
    inst = d.instance("pg-main", role)
    pw = password if password is not None else d.secret("app-credentials", user)
    return psycopg.connect(pg_dsn(inst, user, pw, db), autocommit=True)


def test_status_shape_and_replication(qs):
    c = qs.cluster("pg-main")
    assert c["engine"] == "postgresql" and c["tenant"] == "default"
    assert c["epoch"] >= 1 and c["primary"] == "pg-main-0"
    roles = sorted(i["role"] for i in c["instances"])
    assert roles == ["primary", "replica"]
    assert all(i["state"] == "running" for i in c["instances"])
    assert all(set(i) >= {"name", "role", "host", "port", "state", "lag_bytes"}
               for i in c["instances"])
    assert c["endpoints"] == {"rw": "127.0.0.1:15432", "ro": "127.0.0.1:15433"}  # the proxy

    with connect(qs, "primary", "shop", "shop") as conn:
        # A replica's slot holds back at most 4GB of WAL (PostgreSQL's default: no bound).
        assert conn.execute("SHOW max_slot_wal_keep_size").fetchone()[0] == "4GB"
        conn.execute("CREATE TABLE orders (id int primary key, item text)")
        conn.execute("INSERT INTO orders VALUES (1, 'book')")
    with connect(qs, "replica", "shop", "shop") as conn:
        row = wait_until(lambda: conn.execute("SELECT item FROM orders WHERE id = 1").fetchone(),
                         timeout=30, what="the row on the replica")
        assert row[0] == "book"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO orders VALUES (2, 'pen')")


def test_users_use_scram_and_wrong_password_is_refused(qs):
    with connect(qs, "primary", "shop", "shop") as conn:
        enc = conn.execute("SELECT current_setting('password_encryption')").fetchone()[0]
        assert enc == "scram-sha-256"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(qs, "primary", "shop", "shop", password="wrong-password")
    # The declared connection limit is applied to the role.
    with connect(qs, "primary", "reports", "reports") as conn:
        limit = conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'reports'").fetchone()
        assert limit[0] == 10


def test_user_cannot_reach_another_apps_database(qs):
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect(qs, "primary", "shop", "reports")


def test_grant_gives_read_only_access(qs):
    with connect(qs, "primary", "shop", "shop") as conn:
        conn.execute("CREATE TABLE products (id int, name text)")
        conn.execute("INSERT INTO products VALUES (1, 'lamp')")
    with connect(qs, "primary", "reports", "shop") as conn:
        assert conn.execute("SELECT name FROM products").fetchone()[0] == "lamp"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO products VALUES (2, 'desk')")


def test_drift_is_repaired(qs, tmp_path):
    """Level-triggered: a password changed behind dbplane's back is put back."""
    d = qs
    with connect(d, "primary", "shop", "shop") as conn:
        conn.execute("ALTER ROLE shop PASSWORD 'tampered-password'")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(d, "primary", "shop", "shop")
    # Changing the User (a new connection limit) makes the reconciler look at it now
    # instead of at the next resync; it must restore the declared password too.
    spec = tmp_path / "shop-user.yaml"
    spec.write_text("apiVersion: dbplane/v1\nkind: User\nmetadata: {name: shop}\n"
                    "spec: {cluster: pg-main, username: shop, maxUserConnections: 60,\n"
                    "       passwordSecretKeyRef: {name: app-credentials, key: shop}}\n")
    assert "User/shop configured" in d.cli("apply", "-f", str(spec)).stdout
    d.wait(60)
    with connect(d, "primary", "shop", "shop") as conn:
        q = "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'shop'"
        assert conn.execute(q).fetchone()[0] == 60


def test_kill_9_server_is_restarted_and_logged(qs):
    d = qs
    pid = d.server_pid("default", "pg-main", "pg-main-1")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: any(e["reason"] == "InstanceExited" and e["name"] == "pg-main-1"
                           and "signal 9" in e["message"] for e in d.events()),
               timeout=30, what="an InstanceExited event")
    wait_until(lambda: any(e["reason"] == "InstanceRestarted" and e["name"] == "pg-main-1"
                           for e in d.events()), timeout=30, what="an InstanceRestarted event")
    d.wait(90)
    new_pid = d.server_pid("default", "pg-main", "pg-main-1")
    assert new_pid != pid
    # Replication resumed: a new write reaches the restarted replica.
    with connect(d, "primary", "shop", "shop") as conn:
        conn.execute("CREATE TABLE after_kill (v int)")
        conn.execute("INSERT INTO after_kill VALUES (42)")
    with connect(d, "replica", "shop", "shop") as conn:
        assert wait_until(lambda: conn.execute("SELECT v FROM after_kill").fetchone(),
                          timeout=30, what="replication after restart")[0] == 42


def test_stop_and_start_keeps_data_without_reinit(daemon):
    d = daemon.start(QUICKSTART)
    with connect(d, "primary", "shop", "shop") as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    pids = [d.server_pid("default", "pg-main", f"pg-main-{i}") for i in range(2)]
    ports = sorted(i["port"] for i in d.cluster("pg-main")["instances"])
    assert d.stop() == 0
    for pid in pids:  # every server stopped cleanly with the daemon
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    d.start(QUICKSTART)
    assert sorted(i["port"] for i in d.cluster("pg-main")["instances"]) == ports
    with connect(d, "replica", "shop", "shop") as conn:
        assert wait_until(lambda: conn.execute("SELECT v FROM kept").fetchone(), timeout=30,
                          what="the row after restart")[0] == "still here"
    ev = d.events()
    assert sum(1 for e in ev if e["reason"] == "Initialized") == 1
    assert sum(1 for e in ev if e["reason"] == "Cloned") == 1


def test_malformed_apply_is_rejected_and_nothing_is_touched(qs, tmp_path):
    d = qs
    before = d.cli("get", "user", "shop", "-o", "json").stdout
    pid = d.server_pid("default", "pg-main", "pg-main-0")
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: dbplane/v1\nkind: User\nmetadata: {name: shop}\n"
                   "spec:\n  cluster: pg-main\n  username: shop\n  maxUserConnections: lots\n")
    p = d.cli("apply", "-f", str(bad), check=False)
    assert p.returncode == 1
    assert f"{bad}:7:23" in p.stderr and "maxUserConnections" in p.stderr, p.stderr
    assert d.cli("get", "user", "shop", "-o", "json").stdout == before
    assert d.server_pid("default", "pg-main", "pg-main-0") == pid
    # A second `up` on the same data dir is refused while the daemon runs.
    q = d.cli("up", "-f", str(QUICKSTART), check=False, timeout=30)
    assert q.returncode == 1 and "another dbplane daemon" in q.stderr


def test_secrets_never_in_plaintext(qs, tmp_path):
    d = qs
    pw = d.secret("app-credentials", "shop")
    assert len(pw) == 32
    # A value given in the spec (stringData) is stored encrypted too, and the stored
    # resource carries only a keyed fingerprint of it.
    given = "Given-Secret-Value-4242"
    spec = tmp_path / "s.yaml"
    spec.write_text("apiVersion: dbplane/v1\nkind: Secret\nmetadata: {name: given}\n"
                    f"stringData: {{token: {given}}}\n")
    d.cli("apply", "-f", str(spec))
    assert d.secret("given", "token") == given
    stored = d.cli("get", "secret", "given", "-o", "json").stdout
    assert given not in stored and "hmac-sha256:" in stored
    d.cli("apply", "-f", str(spec))  # unchanged: same fingerprint, same generation
    assert json_get(d, "secret", "given")["generation"] == 1
    blob = (d.data_dir / "state.db").read_bytes()
    for extra in ("state.db-wal",):
        p = d.data_dir / extra
        if p.exists():
            blob += p.read_bytes()
    assert pw.encode() not in blob
    assert given.encode() not in blob
    assert pw not in d.log_text() and given not in d.log_text()
    for inst in ("pg-main-0", "pg-main-1"):
        base = d.data_dir / "clusters" / "default" / "pg-main" / inst
        for f in ("server.log", "tools.log"):
            if (base / f).exists():
                assert pw not in (base / f).read_text(errors="replace")
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert pw not in ps
    key = d.data_dir / "secret.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"


def test_missing_server_version_is_reported(daemon, tmp_path):
    """A version the spec allows but this machine lacks is a clear status, not a crash loop."""
    spec = tmp_path / "pg16.yaml"
    spec.write_text("apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: newer}\n"
                    "spec: {engine: postgresql, version: \"16\", instances: 1}\n")
    d = daemon.start(spec, wait=False)
    c = wait_until(lambda: (lambda c: c if c["state"] == "failed" else None)(d.cluster("newer")),
                   timeout=30, what="the cluster to be reported")
    assert "PostgreSQL 16 is not installed" in c["message"]
    assert "postgresql-16" in c["message"]
    p = d.cli("wait", "--timeout", "2s", check=False)
    assert p.returncode == 1 and "newer" in p.stderr


def test_sql_jobs_run_once_in_order_and_report_errors(qs, tmp_path):
    d = qs
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "apiVersion: dbplane/v1\nkind: SqlJob\nmetadata: {name: seed}\n"
        "spec:\n  cluster: pg-main\n  database: shop\n  username: shop\n"
        "  dependsOn: [schema]\n"
        "  sql: INSERT INTO catalog VALUES (1, 'chair');\n"
        "---\n"
        "apiVersion: dbplane/v1\nkind: SqlJob\nmetadata: {name: schema}\n"
        "spec:\n  cluster: pg-main\n  database: shop\n  username: shop\n"
        "  sql: |\n    CREATE TABLE catalog (id int PRIMARY KEY, name text);\n"
        "---\n"
        "apiVersion: dbplane/v1\nkind: SqlJob\nmetadata: {name: broken}\n"
        "spec:\n  cluster: pg-main\n  database: shop\n  sql: SELECT * FROM no_such_table;\n")
    d.cli("apply", "-f", str(jobs))

    def job(name):
        return json_get(d, "sqljob", name)["status"]

    wait_until(lambda: job("seed")["state"] == "ready", timeout=60, what="the seed job")
    assert job("schema")["state"] == "ready"
    b = wait_until(lambda: (lambda s: s if s["state"] == "failed" else None)(job("broken")),
                   timeout=30, what="the broken job to fail")
    assert 'relation "no_such_table" does not exist' in b["message"]
    with connect(d, "primary", "shop", "shop") as conn:
        assert conn.execute("SELECT name FROM catalog").fetchall() == [("chair",)]
        # The job ran as the declared user: the table belongs to it.
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename='catalog'")
        assert owner.fetchone()[0] == "shop"
    # Re-applying the same spec runs nothing again (a second INSERT would fail anyway).
    d.cli("apply", "-f", str(jobs))
    time.sleep(3)
    completed = [e for e in d.events() if e["reason"] == "Completed" and e["kind"] == "SqlJob"]
    assert sorted(e["name"] for e in completed) == ["schema", "seed"]
    assert job("seed")["state"] == "ready"


def json_get(d, kind, name):
    import json
    return json.loads(d.cli("get", kind, name, "-o", "json").stdout)
