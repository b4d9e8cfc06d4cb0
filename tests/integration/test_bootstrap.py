"""Replica bootstrap from a backup (Cluster.spec.bootstrapFrom, issue 7) for MariaDB, against
a real `dbplane up` with real MariaDB 10.11 servers and a posix BackupStore.

- A cluster whose Backup has no verified run: the new replica is cloned from the primary
  after a BootstrapFallback event that says why, and it replicates and serves reads.
- A cluster scaled up after a verified physical run and more writes: the new replica is
  restored from the run (Bootstrapped event naming the run and its GTID; the restored
  xtrabackup_binlog_info is the manifest's GTID and was used as gtid_slave_pos), catches up
  the rows written after the backup from the primary's binary logs (MASTER_USE_GTID =
  slave_pos), row for row, and serves reads to a declared user (the primary's oldest
  binary log, after a purge, follows a GTID the run is past). Then the primary's old
  binary logs are purged and the cluster grows again: the run's GTID is no longer
  available, so the next replica falls back to a clone (BootstrapFallback says so). So
  does the next one after a switchover to that clone (made after the run): its binary logs
  begin after the run's GTID (empty Gtid_list) although its gtid_binlog_state contains it,
  so a replica restored from the run would stop with error 1236.
- A replica whose primary refuses its GTID position (IO thread stopped with error 1236: its
  gtid_slave_pos moved back into binary logs the primary purged) cannot recover by itself:
  the reconciler rebuilds it by a clone (Rebuilding event naming error 1236) and it
  streams again.
- bootstrapFrom on a Redis cluster is refused by validation.

The PostgreSQL bootstrap is tested in test_pitr.py.
"""
import json
import re
import subprocess
import tempfile
from pathlib import Path

import pymysql
import pytest

from conftest import (BIN, Daemon, backup_stores_yaml, run, sanitizer_report, stop_and_check,
                      wait_until)

BASE = """
apiVersion: dbplane/v1
kind: Secret
metadata: {{name: app}}
stringData: {{password: app-Secret-2026}}
"""

CLUSTER = """
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: {name}}}
spec:
  engine: mariadb
  version: "10.11"
  instances: {instances}
  memory: 256Mi
  bootstrapFrom: {{backup: {name}-phys}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: {name}-phys}}
spec: {{cluster: {name}, type: physical, store: local, schedule: "0 3 1 1 *"}}
---
apiVersion: dbplane/v1
kind: Database
metadata: {{name: {name}-shop}}
spec: {{cluster: {name}, name: shop}}
---
apiVersion: dbplane/v1
kind: User
metadata: {{name: {name}-app}}
spec:
  cluster: {name}
  username: app
  passwordSecretKeyRef: {{name: app, key: password}}
---
apiVersion: dbplane/v1
kind: Grant
metadata: {{name: {name}-app-read}}
spec: {{cluster: {name}, username: app, database: shop, privileges: [SELECT]}}
"""


@pytest.fixture(scope="module")
def env():
    work = Path(tempfile.mkdtemp(prefix="dbplane-boot-"))
    work.chmod(0o755)
    d = Daemon(work / "data", work / "data.log")
    d.work, d.store = work, work / "store"
    base = work / "base.yaml"
    base.write_text(backup_stores_yaml(d.store) + "---\n" + BASE.format())
    try:
        d.start(base, timeout=60)
    except BaseException:
        d.stop()
        raise
    yield d
    stop_and_check(d, work)


# ---- helpers -------------------------------------------------------------------------------

def apply_cluster(d, name, instances, timeout=300):
    spec = d.work / f"{name}.yaml"
    spec.write_text(CLUSTER.format(name=name, instances=instances))
    d.cli("apply", "-f", str(spec))
    d.wait(timeout=timeout)


def instance_dir(d, cluster, name):
    return d.data_dir / "clusters" / "default" / cluster / name


class root:
    """Socket-authenticated root on one instance (the test runs as root, like the daemon)."""

    def __init__(self, d, cluster, name):
        cnf = (instance_dir(d, cluster, name) / "my.cnf").read_text()
        sock = re.search(r"^socket = (.+)$", cnf, re.M).group(1)
        self.conn = pymysql.connect(unix_socket=sock, user="root", autocommit=True)

    def __enter__(self):
        return self

    def q(self, sql, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def status(self):
        with self.conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SHOW SLAVE STATUS")
            return cur.fetchone()

    def __exit__(self, *a):
        self.conn.close()


def inst(d, cluster, name):
    return next(i for i in d.cluster(cluster)["instances"] if i["name"] == name)


def primary_name(d, cluster):
    return d.instance(cluster, "primary")["name"]


def events(d, name):
    return [e for e in d.events() if e["kind"] == "Instance" and e["name"] == name]


def bk(d, *args, timeout=600):
    p = subprocess.run([BIN] + list(args) + ["--data-dir", str(d.data_dir)], capture_output=True,
                       text=True, timeout=timeout)
    rep = sanitizer_report(p.stderr)
    assert not rep, f"sanitizer report ({rep}) from dbplane {' '.join(args)}:\n{p.stderr[-8000:]}"
    assert p.returncode == 0, f"dbplane {' '.join(args)} exited {p.returncode}\n{p.stderr}"
    return p


def rows(c):
    return c.q("SELECT id, item, price FROM shop.orders ORDER BY id")


def wait_caught_up(d, cluster, name):
    """Waits until replica `name` has applied the primary's whole binlog position."""
    with root(d, cluster, primary_name(d, cluster)) as p:
        pos = p.q("SELECT @@gtid_binlog_pos")[0][0]
    with root(d, cluster, name) as r:
        got = r.q("SELECT MASTER_GTID_WAIT(%s, 60)", (pos,))[0][0]
        assert got == 0, f"{name} did not reach GTID {pos}: {r.status()}"
    return pos


def app_reads(d, cluster, name):
    """The rows as the declared user reads them over TCP from instance `name`."""
    i = inst(d, cluster, name)
    with pymysql.connect(host=i["host"], port=i["port"], user="app", password="app-Secret-2026",
                         database="shop", connect_timeout=5) as c, c.cursor() as cur:
        cur.execute("SELECT id, item, price FROM orders ORDER BY id")
        return cur.fetchall()


def purge_binlogs(p):
    """Closes primary p's binary log and purges all the older ones."""
    p.q("FLUSH BINARY LOGS")
    current = p.q("SHOW MASTER STATUS")[0][0]

    def purged():  # refused while a replica's dump thread still reads an older log
        try:
            p.q(f"PURGE BINARY LOGS TO '{current}'")
        except pymysql.err.MySQLError:
            return False
        return p.q("SHOW BINARY LOGS")[0][0] == current
    wait_until(purged, timeout=30, what="the primary to purge its older binary logs")


def assert_streams_with(d, cluster, name, want):
    """Replica `name` catches up to rows `want` and streams without an IO error."""
    wait_caught_up(d, cluster, name)
    with root(d, cluster, name) as r:
        assert rows(r) == want
        st = r.status()
    assert st["Slave_IO_Running"] == "Yes" and st["Last_IO_Errno"] == 0, st


def create_orders(d, cluster):
    with root(d, cluster, primary_name(d, cluster)) as c:
        c.q("CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(64), "
            "price DECIMAL(10,2)) ENGINE=InnoDB")
        c.q("INSERT INTO shop.orders SELECT seq, CONCAT('item-', seq), seq * 1.5 "
            "FROM shop.seq_1_to_2000")


# ---- tests ---------------------------------------------------------------------------------

def test_no_verified_run_falls_back_to_a_clone_with_an_event(env):
    d = env
    apply_cluster(d, "fb", 1)
    create_orders(d, "fb")
    apply_cluster(d, "fb", 2)
    ev = events(d, "fb-1")
    why = [e["message"] for e in ev if e["reason"] == "BootstrapFallback"]
    assert why and "no complete, verified physical run" in why[0] and "cloning" in why[0], ev
    assert any(e["reason"] == "Cloned" for e in ev), ev
    assert not any(e["reason"] == "Bootstrapped" for e in ev), ev
    with root(d, "fb", "fb-0") as p:
        p.q("INSERT INTO shop.orders VALUES (5000, 'late', 1.00)")
        want = rows(p)
    wait_caught_up(d, "fb", "fb-1")
    with root(d, "fb", "fb-1") as r:
        assert rows(r) == want
        st = r.status()
        assert st["Slave_IO_Running"] == "Yes" and st["Slave_SQL_Running"] == "Yes", st
    assert inst(d, "fb", "fb-1")["role"] == "replica"
    assert app_reads(d, "fb", "fb-1") == want


def test_scale_up_restores_the_verified_run_and_catches_up_from_the_binlogs(env):
    d = env
    apply_cluster(d, "boot", 1)
    create_orders(d, "boot")
    # The run follows a purged log: the oldest binary log's Gtid_list is not empty (it
    # names the GTID before it, which the run is at or past). The check once crashed
    # here, on a one-GTID list.
    with root(d, "boot", "boot-0") as p:
        purge_binlogs(p)
        assert re.fullmatch(r"\[\d+-\d+-\d+\]", [e[5] for e in p.q(
            f"SHOW BINLOG EVENTS IN '{p.q('SHOW BINARY LOGS')[0][0]}' LIMIT 4")
            if e[2] == "Gtid_list"][0])
    row = json.loads(bk(d, "backup", "boot", "--backup", "boot-phys", "--verify", "-o", "json"
                        ).stdout)
    assert row["verified"] == "ok", row
    gtid = json.loads((d.store / row["path"] / "manifest.json").read_text())["start_position"]
    assert re.fullmatch(r"\d+-\d+-\d+(,\d+-\d+-\d+)*", gtid), gtid
    # Written after the backup: only the primary's binary logs have these.
    with root(d, "boot", "boot-0") as p:
        p.q("INSERT INTO shop.orders SELECT seq, CONCAT('after-', seq), seq * 2 "
            "FROM shop.seq_2001_to_2500")
        p.q("UPDATE shop.orders SET price = price + 100 WHERE id <= 10")
        p.q("DELETE FROM shop.orders WHERE id BETWEEN 100 AND 149")
        want = rows(p)

    apply_cluster(d, "boot", 2)
    ev = events(d, "boot-1")
    boot = [e["message"] for e in ev if e["reason"] == "Bootstrapped"]
    assert boot and row["id"] in boot[0] and gtid in boot[0], ev
    assert not any(e["reason"] in ("Cloning", "Cloned", "BootstrapFallback") for e in ev), ev
    # The data dir is the run's: its position was used once as gtid_slave_pos.
    info = instance_dir(d, "boot", "boot-1") / "data" / "xtrabackup_binlog_info.applied"
    assert info.read_text().split("\t")[2].strip() == gtid
    assert re.search(r"replication_configured instance=boot-1 primary=boot-0 "
                     rf"gtid_slave_pos={re.escape(gtid)}\b", d.log_text())

    wait_caught_up(d, "boot", "boot-1")
    with root(d, "boot", "boot-1") as r:
        got = rows(r)
        st = r.status()
    assert len(got) == 2450 and got == want
    assert st["Using_Gtid"] == "Slave_Pos" and st["Slave_IO_Running"] == "Yes", st
    i = inst(d, "boot", "boot-1")
    assert i["role"] == "replica" and i["state"] == "running", i
    assert app_reads(d, "boot", "boot-1") == want
    # It keeps following: a write after the bootstrap arrives too.
    with root(d, "boot", "boot-0") as p:
        p.q("INSERT INTO shop.orders VALUES (9000, 'later', 9.00)")
    wait_caught_up(d, "boot", "boot-1")
    with root(d, "boot", "boot-1") as r:
        assert r.q("SELECT item FROM shop.orders WHERE id = 9000") == (("later",),)

    # The primary purges the binary logs after the run's GTID: the run can no longer be
    # caught up, so the next replica is cloned, and the event says why.
    with root(d, "boot", "boot-0") as p:
        purge_binlogs(p)
        p.q("INSERT INTO shop.orders VALUES (9001, 'after-purge', 1.00)")
        want = rows(p)
    apply_cluster(d, "boot", 3)
    ev = events(d, "boot-2")
    why = [e["message"] for e in ev if e["reason"] == "BootstrapFallback"]
    assert why and "no longer has the binary logs" in why[0] and gtid in why[0], ev
    assert any(e["reason"] == "Cloned" for e in ev), ev
    wait_caught_up(d, "boot", "boot-2")
    with root(d, "boot", "boot-2") as r:
        assert rows(r) == want
    assert app_reads(d, "boot", "boot-2") == want

    # boot-2, cloned after the run, replicates a write of boot-0 (so its gtid_binlog_state
    # holds boot-0's server id past the run's GTID) and becomes the primary. Its binary logs
    # begin with what it replicated since its clone: the run cannot be caught up from it.
    with root(d, "boot", "boot-0") as p:
        p.q("INSERT INTO shop.orders VALUES (9002, 'before-switchover', 2.00)")
    wait_caught_up(d, "boot", "boot-2")
    out = json.loads(d.cli("switchover", "boot", "--to", "boot-2", "-o", "json").stdout)
    assert out["new_primary"] == "boot-2", out
    d.wait(timeout=180)
    with root(d, "boot", "boot-2") as p:
        first = p.q("SHOW BINARY LOGS")[0][0]
        assert [e[5] for e in p.q(f"SHOW BINLOG EVENTS IN '{first}' LIMIT 4")
                if e[2] == "Gtid_list"] == ["[]"]
        run_dom, run_srv, run_seq = gtid.split(",")[0].split("-")
        assert f"{run_dom}-{run_srv}-" in p.q("SELECT @@gtid_binlog_state")[0][0]
        p.q("INSERT INTO shop.orders VALUES (9003, 'after-switchover', 3.00)")
        want = rows(p)
    apply_cluster(d, "boot", 4)
    ev = events(d, "boot-3")
    why = [e["message"] for e in ev if e["reason"] == "BootstrapFallback"]
    assert why and "does not have the binary logs after the run's GTID" in why[0], ev
    assert any(e["reason"] == "Cloned" for e in ev), ev
    assert_streams_with(d, "boot", "boot-3", want)


def test_replica_stopped_by_error_1236_is_rebuilt_by_a_clone(env):
    d = env  # cluster fb of the first test: fb-0 primary, fb-1 replica
    with root(d, "fb", "fb-0") as p:
        server_id = p.q("SELECT @@server_id")[0][0]
        purge_binlogs(p)
        p.q("INSERT INTO shop.orders VALUES (6000, 'before-1236', 1.00)")
    clones = sum(e["reason"] == "Cloned" for e in events(d, "fb-1"))
    # Back to the primary's first transaction, in a purged log: the primary refuses it.
    with root(d, "fb", "fb-1") as r:
        r.q("STOP SLAVE")
        r.q(f"SET GLOBAL gtid_slave_pos = '0-{server_id}-1'")
        r.q("START SLAVE")

    def rebuilt():
        ev = events(d, "fb-1")
        return (sum(e["reason"] == "Cloned" for e in ev) > clones and
                [e["message"] for e in ev if e["reason"] == "Rebuilding"])
    why = wait_until(rebuilt, timeout=120, what="fb-1 to be rebuilt by a clone")
    assert "error 1236" in why[0], why
    d.wait(timeout=120)
    with root(d, "fb", "fb-0") as p:
        p.q("INSERT INTO shop.orders VALUES (6001, 'after-1236', 1.00)")
        want = rows(p)
    assert_streams_with(d, "fb", "fb-1", want)


def test_bootstrap_from_is_refused_for_redis(tmp_path):
    spec = tmp_path / "r.yaml"
    spec.write_text("""
apiVersion: dbplane/v1
kind: BackupStore
metadata: {name: local}
spec: {posix: {path: /tmp/nowhere}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {name: r-phys}
spec: {cluster: r, type: physical, store: local}
---
apiVersion: dbplane/v1
kind: Cluster
metadata: {name: r}
spec:
  engine: redis
  version: "7"
  instances: 2
  bootstrapFrom: {backup: r-phys}
""")
    p = run(["validate", "-f", str(spec)], check=False)
    assert p.returncode == 1, p.stdout
    assert re.search(rf"{re.escape(str(spec))}:\d+:\d+: error: .*bootstrapFrom is not supported "
                     "for Redis", p.stderr), p.stderr
