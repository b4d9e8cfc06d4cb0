"""Backups and restores of MariaDB and Redis clusters (issue 7) against a real `dbplane up`:
a MariaDB 10.11 primary + GTID replica, a Redis 7 primary + replica (class session: AOF
and RDB), a posix BackupStore and an S3 BackupStore served by s3rver. One daemon serves
the module; data is small so the whole file runs in about a minute or two.

Covered, for each engine: round trips with row-/key-level comparison through both stores
(encrypted on S3), the source taken from the replica (target PreferReplica), the GTID /
replication offset recorded in the manifest, verification recording "ok" for a good run
(MariaDB: CHECK TABLE and counts on a scratch server; Redis: the RDB loaded by a scratch
server and every key read), a corrupted artifact (one flipped byte) failing verification
and never restored, and logical backups of Redis refused by validation and by the CLI.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pymysql
import pytest
import redis

from conftest import (BIN, SCRATCH_PORT_FAILPOINT, assert_scratch_port_retried, free_port,
                      sanitizer_report, start_backup_daemon, stop_and_check, wait_until)

SPEC = """
apiVersion: dbplane/v1
kind: Secret
metadata: {{name: app}}
stringData: {{password: app-Secret-2026}}
---
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: mdb}}
spec:
  engine: mariadb
  version: "10.11"
  instances: 2
  memory: 256Mi
---
apiVersion: dbplane/v1
kind: Database
metadata: {{name: shop}}
spec: {{cluster: mdb, name: shop}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: mdb-logical}}
spec: {{cluster: mdb, type: logical, store: local, target: PreferReplica, schedule: "0 3 1 1 *"}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: mdb-phys}}
spec: {{cluster: mdb, type: physical, store: local, target: PreferReplica, schedule: "0 3 1 1 *"}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: mdb-s3}}
spec:
  cluster: mdb
  type: physical
  store: s3
  schedule: "0 3 1 1 *"
  encryption: {{secretKeyRef: {{name: backup-key, key: key}}}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: mdb-s3-logical}}
spec:
  cluster: mdb
  type: logical
  store: s3
  schedule: "0 3 1 1 *"
  compression: gzip
  databases: [shop]
  encryption: {{secretKeyRef: {{name: backup-key, key: key}}}}
---
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: rds}}
spec:
  engine: redis
  version: "7"
  instances: 2
  memory: 128Mi
  redis: {{class: session}}
---
apiVersion: dbplane/v1
kind: User
metadata: {{name: rds-app}}
spec:
  cluster: rds
  username: app
  passwordSecretKeyRef: {{name: app, key: password}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: rds-phys}}
spec: {{cluster: rds, type: physical, store: local, target: PreferReplica, schedule: "0 3 1 1 *"}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: rds-s3}}
spec:
  cluster: rds
  type: physical
  store: s3
  schedule: "0 3 1 1 *"
  encryption: {{secretKeyRef: {{name: backup-key, key: key}}}}
"""


@pytest.fixture(scope="module")
def env():
    d = start_backup_daemon("dbplane-bke-", "engines.yaml", SPEC.format(), "eng", timeout=120)
    d.env = dict(os.environ, DBPLANE_S3_MAX_ATTEMPTS="3", DBPLANE_S3_RETRY_BASE_MS="100")
    with mdb(d) as c:
        c.execute("CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(64), price DECIMAL(10,2),"
                  " KEY by_item (item)) ENGINE=InnoDB")
        c.execute("INSERT INTO shop.orders SELECT seq, CONCAT('item-', seq), seq * 1.5"
                  " FROM shop.seq_1_to_3000")
        c.execute("CREATE TABLE shop.notes (id INT PRIMARY KEY, body TEXT) ENGINE=InnoDB")
        c.execute("INSERT INTO shop.notes SELECT seq, REPEAT(MD5(seq), 4) FROM shop.seq_1_to_500")
        # An account that is not declared as a User: only the backup brings it back.
        c.execute("CREATE USER 'legacy'@'127.0.0.1' IDENTIFIED BY 'legacy-pw'")
        c.execute("GRANT SELECT ON shop.* TO 'legacy'@'127.0.0.1'")
    r = rds(d)
    r.set("greeting", "hello")
    r.hset("user:1", mapping={"name": "ada", "lang": "en"})
    r.rpush("jobs", *[f"job-{i}" for i in range(200)])
    r.sadd("tags", "a", "b", "c")
    r.zadd("scores", {"x": 1.5, "y": 2.5})
    r.set("session:tmp", "expiring", ex=3600)
    for i in range(1000):
        r.set(f"k:{i}", f"v{i}" * 8)
    yield d
    stop_and_check(d, d.work, d.s3)


# ---- helpers -------------------------------------------------------------------------------

def instance_dir(d, cluster, name):
    return d.data_dir / "clusters" / "default" / cluster / name


class _Cur:
    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()


class mdb:
    """Root over the socket of a MariaDB instance (unix_socket: the test runs as root)."""

    def __init__(self, d, role="primary", sock=None):
        if sock is None:
            inst = d.instance("mdb", role)
            cnf = (instance_dir(d, "mdb", inst["name"]) / "my.cnf").read_text()
            sock = re.search(r"^socket = (.+)$", cnf, re.M).group(1)
        self.conn = pymysql.connect(unix_socket=sock, user="root", autocommit=True)

    def __enter__(self):
        return _Cur(self.conn)

    def __exit__(self, *a):
        self.conn.close()


def mdb_rows(c):
    return (c.execute("SELECT * FROM shop.orders ORDER BY id"),
            c.execute("SELECT * FROM shop.notes ORDER BY id"))


def rds(d, role="primary", port=None):
    if port is None:
        port = d.instance("rds", role)["port"]
    return redis.Redis(host="127.0.0.1", port=port, username="app",
                       password="app-Secret-2026", decode_responses=True)


def rds_snapshot(r):
    """Every key with its type, value and whether it has a TTL."""
    out = {}
    for k in r.scan_iter(count=500):
        t = r.type(k)
        v = {"string": r.get, "hash": r.hgetall, "list": lambda x: r.lrange(x, 0, -1),
             "set": r.smembers, "zset": lambda x: r.zrange(x, 0, -1, withscores=True)}[t](k)
        out[k] = (t, v, r.ttl(k) > 0)
    return out


def bk(d, *args, check=True, timeout=600, env=None):
    p = subprocess.run([BIN] + list(args) + ["--data-dir", str(d.data_dir)], capture_output=True,
                       text=True, timeout=timeout, env=env or d.env)
    rep = sanitizer_report(p.stderr)
    assert not rep, f"sanitizer report ({rep}) from dbplane {' '.join(args)}:\n{p.stderr[-8000:]}"
    if check and p.returncode != 0:
        raise AssertionError(f"dbplane {' '.join(args)} exited {p.returncode}\n{p.stderr}")
    return p


def run_backup(d, cluster, *args, **kw):
    p = bk(d, "backup", cluster, "-o", "json", *args, **kw)
    return json.loads(p.stdout), p


def catalog(d, cluster):
    return {b["id"]: b for b in json.loads(bk(d, "backups", "-o", "json", cluster).stdout)["backups"]}


def manifest(d, row):
    return json.loads((d.store / row["path"] / "manifest.json").read_text())


def mdb_wait_replica(d):
    with mdb(d) as p:
        pos = p.execute("SELECT @@gtid_binlog_pos")[0][0]

    def caught_up():
        with mdb(d, "replica") as r:
            return r.execute("SELECT MASTER_GTID_WAIT(%s, 0)", (pos,))[0][0] == 0
    wait_until(caught_up, timeout=60, what="the MariaDB replica to catch up")


def rds_wait_replica(d):
    p, r = rds(d), rds(d, "replica")
    wait_until(lambda: r.dbsize() == p.dbsize() and r.get("greeting") == p.get("greeting"),
               timeout=60, what="the Redis replica to catch up")


class MariadbServer:
    """mariadbd started by hand (as the service user) on a data dir made by `restore --to`."""

    def __init__(self, data_dir: Path, work: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="rm-", dir="/tmp"))
        shutil.chown(self.dir, "dbplane", "dbplane")
        self.sock = str(self.dir / "m.sock")
        self.log = open(work / f"restored-mariadb-{os.getpid()}.log", "a")
        self.proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={data_dir}",
             f"--socket={self.sock}", f"--port={free_port()}", "--bind-address=127.0.0.1",
             "--skip-slave-start"],
            stdout=self.log, stderr=subprocess.STDOUT, user="dbplane", group="dbplane",
            extra_groups=[])
        wait_until(lambda: self.proc.poll() is not None or os.path.exists(self.sock),
                   timeout=120, what="the restored MariaDB server")
        assert self.proc.poll() is None, "the restored MariaDB server exited"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- MariaDB -------------------------------------------------------------------------------

def test_mariadb_logical_round_trip_posix(env):
    d = env
    with mdb(d) as c:
        before = mdb_rows(c)
    mdb_wait_replica(d)
    row, _ = run_backup(d, "mdb", "--backup", "mdb-logical")
    assert row["status"] == "complete" and row["type"] == "logical"
    assert row["source"] == "mdb-1", "PreferReplica takes the backup from the replica"
    m = manifest(d, row)
    assert m["engine"] == "mariadb" and m["engine_version"].startswith("10.11")
    assert re.fullmatch(r"\d+-\d+-\d+(,\d+-\d+-\d+)*", m["start_position"]), m["start_position"]
    names = sorted(p["name"] for p in m["parts"])
    assert names == ["db-0.sql.zst", "globals.sql.zst"], names
    assert [(x["name"], x["tables"]) for x in m["databases"]] == [("shop", 2)]

    with mdb(d) as c:
        c.execute("DELETE FROM shop.orders WHERE id % 3 = 0")
        c.execute("UPDATE shop.notes SET body = 'changed' WHERE id < 50")
        c.execute("DROP USER 'legacy'@'127.0.0.1'")
    p = bk(d, "restore", row["id"], check=False)
    assert p.returncode == 1 and "--force" in p.stderr
    bk(d, "restore", row["id"], "--force")
    with mdb(d) as c:
        assert mdb_rows(c) == before
    # The account came back with its password and grant (from the globals part).
    inst = d.instance("mdb", "primary")
    conn = pymysql.connect(host="127.0.0.1", port=inst["port"], user="legacy", password="legacy-pw",
                           database="shop")
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM orders")
        assert cur.fetchone()[0] == len(before[0])
    conn.close()
    # Restored through the primary's binlog: the replica has it too.
    mdb_wait_replica(d)
    with mdb(d, "replica") as c:
        assert mdb_rows(c) == before


def test_mariadb_physical_verified_and_restored_as_a_server(env):
    d = env
    with mdb(d) as c:
        before = mdb_rows(c)
    mdb_wait_replica(d)
    row, _ = run_backup(d, "mdb", "--backup", "mdb-phys")
    assert row["status"] == "complete" and row["source"] == "mdb-1"
    # Physical Backups are verified by default: restored into a scratch server, every table
    # checked (CHECK TABLE) and counted.
    assert row["verified"] == "ok", row["verify_message"]
    assert "1 databases, 2 tables, 3500 rows" in row["verify_message"], row["verify_message"]
    m = manifest(d, row)
    assert [p["name"] for p in m["parts"]] == ["data.mbstream.zst"]
    assert re.fullmatch(r"\d+-\d+-\d+(,\d+-\d+-\d+)*", m["start_position"]), m["start_position"]

    target = d.work / "restored-mdb"
    bk(d, "restore", row["id"], "--to", str(target))
    assert (target / "mysql").is_dir() and (target / "xtrabackup_binlog_info").exists()
    assert all(p.owner() == "dbplane" for p in [target, target / "ibdata1", target / "shop"])
    srv = MariadbServer(target, d.work)
    try:
        with mdb(d, sock=srv.sock) as c:
            assert mdb_rows(c) == before
            c.execute("INSERT INTO shop.notes VALUES (-1, 'writable')")
    finally:
        srv.stop()
    p = bk(d, "restore", row["id"], "--to", str(target), check=False)
    assert p.returncode == 1 and "not empty" in p.stderr


def test_mariadb_s3_encrypted_round_trips(env):
    d = env
    with mdb(d) as c:
        before = mdb_rows(c)
    mdb_wait_replica(d)
    row, p = run_backup(d, "mdb", "--backup", "mdb-s3")
    assert row["status"] == "complete", p.stderr
    assert row["verified"] == "ok", row["verify_message"]
    data = next(o for o in (d.s3.root / "bk").rglob("*data.mbstream.zst.enc*_object")
                if row["id"] in str(o))
    assert data.read_bytes()[:8] == b"DBPBKE1\n"
    target = d.work / "restored-mdb-s3"
    bk(d, "restore", row["id"], "--to", str(target))
    assert (target / "shop" / "orders.ibd").exists()

    lrow, _ = run_backup(d, "mdb", "--backup", "mdb-s3-logical")
    assert lrow["status"] == "complete"
    with mdb(d) as c:
        c.execute("TRUNCATE shop.orders")
    bk(d, "restore", lrow["id"], "--force")
    with mdb(d) as c:
        assert mdb_rows(c) == before


def test_mariadb_corrupted_artifact_fails_verification_and_is_never_restored(env):
    d = env
    row, _ = run_backup(d, "mdb", "--backup", "mdb-phys", "--no-verify")
    assert row["verified"] in ("", None)
    m = manifest(d, row)
    part = d.store / row["path"] / m["parts"][0]["name"]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    p = bk(d, "backups", "verify", row["id"], check=False)
    assert p.returncode == 1 and "checksum mismatch" in p.stderr, p.stderr
    r = catalog(d, "mdb")[row["id"]]
    assert r["verified"] == "failed" and "checksum mismatch" in r["verify_message"]
    target = d.work / "corrupt-mdb"
    p = bk(d, "restore", row["id"], "--to", str(target), check=False)
    assert p.returncode == 1 and "checksum mismatch" in p.stderr
    assert not target.exists() or not any(target.iterdir())
    assert not list((d.data_dir / "scratch").glob("*")), "the scratch instance is removed"


# ---- Redis ---------------------------------------------------------------------------------

class RedisServer:
    """redis-server started by hand (as the service user) on a dir made by `restore --to`:
    no AOF, no ACL file, so the default user reads the restored keys."""

    def __init__(self, data_dir: Path, work: Path):
        self.port = free_port()
        self.log = open(work / f"restored-redis-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            ["/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(data_dir), "--dbfilename", "dump.rdb", "--appendonly", "no",
             "--save", ""],
            stdout=self.log, stderr=subprocess.STDOUT, user="dbplane", group="dbplane",
            extra_groups=[])
        self.client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

        def up():
            assert self.proc.poll() is None, "the restored Redis server exited"
            try:
                return self.client.info("persistence")["loading"] == 0
            except redis.exceptions.ConnectionError:
                return False
        wait_until(up, timeout=60, what="the restored Redis server")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def test_redis_physical_round_trip_from_the_replica_verified(env):
    d = env
    rds_wait_replica(d)
    before = rds_snapshot(rds(d))
    assert len(before) == 1006
    row, _ = run_backup(d, "rds", "--backup", "rds-phys")
    assert row["status"] == "complete" and row["type"] == "physical"
    assert row["source"] == "rds-1", "PreferReplica takes the RDB from the replica"
    # Verified by default: a scratch redis-server loaded the RDB and every key was read.
    assert row["verified"] == "ok", row["verify_message"]
    assert "1006 rows" in row["verify_message"], row["verify_message"]
    m = manifest(d, row)
    assert [p["name"] for p in m["parts"]] == ["dump.rdb.zst"]
    assert m["engine"] == "redis" and m["engine_version"].startswith("7.")
    assert re.fullmatch(r"\d+", m["start_position"]) and re.fullmatch(r"[0-9a-f]{40}", m["timeline"])
    # Diskless: the replica forked and streamed its snapshot to the socket, writing no file.
    log = (instance_dir(d, "rds", "rds-1") / "server.log").read_text()
    assert "Starting BGSAVE for SYNC with target: replicas sockets" in log
    assert "BGSAVE for SYNC with target: disk" not in log

    target = d.work / "restored-rds"
    bk(d, "restore", row["id"], "--to", str(target))
    assert (target / "dump.rdb").stat().st_size > 0 and (target / "dump.rdb").owner() == "dbplane"
    srv = RedisServer(target, d.work)
    try:
        assert rds_snapshot(srv.client) == before
    finally:
        srv.stop()
    p = bk(d, "restore", row["id"], "--to", str(target), check=False)
    assert p.returncode == 1 and "not empty" in p.stderr


def test_redis_s3_encrypted_round_trip(env):
    d = env
    rds_wait_replica(d)
    before = rds_snapshot(rds(d))
    row, p = run_backup(d, "rds", "--backup", "rds-s3")
    assert row["status"] == "complete", p.stderr
    assert row["verified"] == "ok", row["verify_message"]
    data = next(o for o in (d.s3.root / "bk").rglob("*dump.rdb.zst.enc*_object")
                if row["id"] in str(o))
    assert data.read_bytes()[:8] == b"DBPBKE1\n"
    target = d.work / "restored-rds-s3"
    bk(d, "restore", row["id"], "--to", str(target))
    srv = RedisServer(target, d.work)
    try:
        assert rds_snapshot(srv.client) == before
    finally:
        srv.stop()


def test_redis_corrupted_artifact_fails_verification_and_is_never_restored(env):
    d = env
    row, _ = run_backup(d, "rds", "--backup", "rds-phys", "--no-verify")
    m = manifest(d, row)
    part = d.store / row["path"] / m["parts"][0]["name"]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    p = bk(d, "backups", "verify", row["id"], check=False)
    assert p.returncode == 1 and "checksum mismatch" in p.stderr, p.stderr
    r = catalog(d, "rds")[row["id"]]
    assert r["verified"] == "failed" and "checksum mismatch" in r["verify_message"]
    target = d.work / "corrupt-rds"
    p = bk(d, "restore", row["id"], "--to", str(target), check=False)
    assert p.returncode == 1 and "checksum mismatch" in p.stderr
    assert not target.exists() or not any(target.iterdir())


def test_redis_logical_backup_is_refused_by_validation_and_the_cli(env):
    d = env
    bad = d.work / "redis-logical.yaml"
    bad.write_text("apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: r}\n"
                   "spec: {engine: redis, version: \"7\", instances: 1}\n---\n"
                   "apiVersion: dbplane/v1\nkind: BackupStore\nmetadata: {name: s}\n"
                   "spec: {posix: {path: /tmp/x}}\n---\n"
                   "apiVersion: dbplane/v1\nkind: Backup\nmetadata: {name: b}\n"
                   "spec: {cluster: r, type: logical, store: s}\n")
    p = subprocess.run([BIN, "validate", "-f", str(bad)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "spec.type" in p.stderr + p.stdout, p.stderr + p.stdout
    assert "logical backups are not supported for redis" in p.stderr + p.stdout
    before = set(catalog(d, "rds"))
    p = bk(d, "backup", "rds", "--type", "logical", "--store", "local", check=False)
    assert p.returncode == 1 and "logical backups of redis clusters are not supported" in p.stderr
    assert set(catalog(d, "rds")) == before, "no run is recorded"


def test_redis_restore_into_an_aof_instance_loads_the_rdb_then_hands_over_to_aof(env):
    """A restored RDB in the data dir of a session-class (AOF) primary: the first start runs
    without AOF so the RDB is loaded, then dbplane turns AOF on (Redis rewrites it from
    memory) and the declared config returns; after another restart the keys come from the
    AOF. Runs last: it restarts the module's daemon."""
    d = env
    before = rds_snapshot(rds(d))
    row, _ = run_backup(d, "rds", "--backup", "rds-phys", "--no-verify")
    rds(d).set("after-backup", "not restored")
    assert d.stop() == 0
    data = instance_dir(d, "rds", "rds-0") / "data"
    shutil.rmtree(data)
    bk(d, "restore", row["id"], "--to", str(data))
    assert (data / ".dbplane-restored-rdb").exists()
    d.start(d.work / "engines.yaml", timeout=120)

    def handed_over():
        try:
            info = rds(d).info("persistence")
        except (redis.exceptions.ConnectionError, redis.exceptions.AuthenticationError):
            return False
        return (info["aof_enabled"] == 1 and info["aof_rewrite_in_progress"] == 0
                and not (data / ".dbplane-restored-rdb").exists()
                and "\nappendonly yes\n" in (data / "redis.conf").read_text())
    wait_until(handed_over, timeout=90, what="the restored primary to move to AOF")
    assert rds_snapshot(rds(d)) == before
    assert any((data / "appendonlydir").glob("*.base.*"))
    assert "redis_restore_complete instance=rds-0" in d.log_text()
    # Restarted again, the server now loads its AOF: the keys are still there.
    assert d.stop() == 0
    d.start(d.work / "engines.yaml", timeout=120)
    wait_until(lambda: rds(d).dbsize() == len(before), timeout=60, what="the keys after restart")
    assert rds_snapshot(rds(d)) == before


@pytest.mark.parametrize("cluster,backup", [("mdb", "mdb-phys"), ("rds", "rds-phys")])
def test_a_scratch_server_that_lost_its_port_is_started_on_another(env, cluster, backup):
    """docs/design.md "Ports", for MariaDB and Redis (test_pitr.py has PostgreSQL): a
    verification's scratch server whose port another program took between dbplane's pick
    and the server's bind exits, and is started again on another port. A test-only
    failpoint holds the first pick's port on 127.0.0.1, so the first start always loses."""
    d = env
    p = bk(d, "backup", cluster, "-o", "json", "--backup", backup,
           env=dict(d.env, **SCRATCH_PORT_FAILPOINT), check=False)
    assert_scratch_port_retried(p)
    row = json.loads(p.stdout)
    assert row["status"] == "complete" and row["verified"] == "ok", row
