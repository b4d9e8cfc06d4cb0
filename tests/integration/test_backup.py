"""Backups and restores (issue 7) against a real `dbplane up` with a PostgreSQL 15 primary
and replica, a posix BackupStore and an S3 BackupStore served by a real S3 protocol server
(s3rver, installed by scripts/install-deps.sh). One daemon serves the whole module; each
test uses its own databases and Backups.

Covered: logical and physical round trips with row-level comparison (posix and S3, with
encryption), a physical restore started as a server, kill -9 during upload leaves no
complete backup, an S3 server stopped mid-upload is retried then reported, retention keeps
the right set, a corrupted artifact fails verification and restore refuses it, and the
cron scheduler.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from conftest import (BIN, free_port, sanitizer_report, start_backup_daemon, stop_and_check,
                      wait_until)

PG_BIN = "/usr/lib/postgresql/15/bin"


SPEC = """
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: pg}}
spec:
  engine: postgresql
  version: "15"
  instances: 2
---
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: sched}}
spec:
  engine: postgresql
  version: "15"
  instances: 1
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: pg-logical}}
spec: {{cluster: pg, type: logical, store: local, schedule: "0 3 * * *", databases: [shop]}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: pg-phys}}
spec: {{cluster: pg, type: physical, store: local, schedule: "0 4 * * *", target: PreferReplica}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: pg-s3}}
spec:
  cluster: pg
  type: physical
  store: s3
  schedule: "0 5 * * *"
  encryption: {{secretKeyRef: {{name: backup-key, key: key}}}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: pg-s3-logical}}
spec:
  cluster: pg
  type: logical
  store: s3
  schedule: "0 5 * * *"
  compression: gzip
  databases: [shop]
  encryption: {{secretKeyRef: {{name: backup-key, key: key}}}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: pg-keep2}}
spec: {{cluster: pg, type: logical, store: local, schedule: "0 6 * * *", retentionCount: 2,
        prefix: keep2, databases: [shop]}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: sched-every-minute}}
spec: {{cluster: sched, type: logical, store: local, schedule: "* * * * *", retentionCount: 2}}
"""


@pytest.fixture(scope="module")
def env():
    d = start_backup_daemon("dbplane-bk-", "backup.yaml", SPEC.format(), "it", timeout=240)
    d.env = dict(os.environ, DBPLANE_S3_PART_SIZE=str(5 << 20), DBPLANE_S3_MAX_ATTEMPTS="3",
                 DBPLANE_S3_RETRY_BASE_MS="100")
    # Data: a small "shop" database for round trips and a bulk one (~130 MB) so that
    # uploads take long enough to be interrupted.
    with admin(d, "postgres") as c:
        c.execute("CREATE DATABASE shop")
        c.execute("CREATE DATABASE bulk")
    with admin(d, "shop") as c:
        c.execute("CREATE TABLE orders (id int PRIMARY KEY, item text, price numeric)")
        c.execute("INSERT INTO orders SELECT g, 'item-' || g, g * 1.5 FROM generate_series(1, 5000) g")
    with admin(d, "bulk") as c:
        c.execute("CREATE TABLE blob AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v"
                  " FROM generate_series(1, 800000) g")
    yield d
    stop_and_check(d, d.work, d.s3)


def admin(d, dbname, role="primary"):
    inst = d.instance("pg", role)
    sock = f"{d.runtime_dir()}/s{inst['port']}"
    return psycopg.connect(host=sock, port=inst["port"], user="dbplane_admin", dbname=dbname,
                           autocommit=True)


def rows(conn, sql="SELECT * FROM orders ORDER BY id"):
    return conn.execute(sql).fetchall()


def bk(d, *args, check=True, timeout=600, env=None):
    p = subprocess.run([BIN] + list(args) + ["--data-dir", str(d.data_dir)], capture_output=True,
                       text=True, timeout=timeout, env=env or d.env)
    rep = sanitizer_report(p.stderr)
    assert not rep, f"sanitizer report ({rep}) from dbplane {' '.join(args)}:\n{p.stderr[-8000:]}"
    if check and p.returncode != 0:
        raise AssertionError(f"dbplane {' '.join(args)} exited {p.returncode}\n{p.stderr}")
    return p


def catalog(d, cluster=None):
    args = ["backups", "-o", "json"] + ([cluster] if cluster else [])
    return {b["id"]: b for b in json.loads(bk(d, *args).stdout)["backups"]}


def run_backup(d, *args, **kw):
    p = bk(d, "backup", "pg", "-o", "json", *args, **kw)
    return json.loads(p.stdout) if p.stdout.strip() else None, p


def wait_replica_caught_up(d):
    def same():
        with admin(d, "postgres") as p, admin(d, "postgres", "replica") as r:
            lsn = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            return r.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]
    wait_until(same, timeout=60, what="the replica to catch up")


class RestoredServer:
    """A PostgreSQL server started by hand on a data dir made by `dbplane restore --to`."""

    def __init__(self, data_dir: Path, work: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.sock = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
        shutil.chown(self.sock, "dbplane", "dbplane")
        self.log = open(work / f"restored-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [f"{PG_BIN}/postgres", "-D", str(data_dir),
             "-c", f"port={self.port}", "-c", f"unix_socket_directories={self.sock}",
             "-c", "listen_addresses=", "-c", f"hba_file={data_dir}/pg_hba.conf",
             "-c", f"ident_file={data_dir}/pg_ident.conf", "-c", "cluster_name=restored"],
            stdout=self.log, stderr=subprocess.STDOUT, user="dbplane", group="dbplane",
            extra_groups=[])

    def connect(self, dbname):
        return psycopg.connect(host=str(self.sock), port=self.port, user="dbplane_admin",
                               dbname=dbname, autocommit=True)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        self.log.close()
        shutil.rmtree(self.sock, ignore_errors=True)


# ---- round trips ---------------------------------------------------------------------------

def test_logical_round_trip_posix(env):
    d = env
    with admin(d, "shop") as c:
        before = rows(c)
    wait_replica_caught_up(d)
    row, p = run_backup(d, "--backup", "pg-logical")
    assert row["status"] == "complete" and row["type"] == "logical"
    assert row["source"] == "pg-1", "PreferReplica takes the backup from the replica"
    run_dir = d.store / row["path"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["format"] == "dbplane-backup/1" and manifest["cluster"] == "pg"
    assert manifest["engine_version"].startswith("15") and manifest["start_position"]
    assert {pt["kind"] for pt in manifest["parts"]} == {"globals", "database"}
    assert all(len(pt["sha256"]) == 64 for pt in manifest["parts"])

    with admin(d, "shop") as c:
        c.execute("DELETE FROM orders WHERE id % 3 = 0")
        c.execute("UPDATE orders SET item = 'changed' WHERE id < 100")
    # Restoring over an existing database needs --force, which takes a safety backup first.
    p = bk(d, "restore", "--backup", "pg-logical", check=False)
    assert p.returncode == 1 and "--force" in p.stderr
    n_before = len(catalog(d, "pg"))
    bk(d, "restore", row["id"], "--force")
    with admin(d, "shop") as c:
        assert rows(c) == before
    assert len(catalog(d, "pg")) == n_before + 1, "the safety backup is in the catalog"


def test_physical_round_trip_posix_started_as_a_server(env):
    d = env
    with admin(d, "shop") as c:
        c.execute("CREATE TABLE phys (id int PRIMARY KEY, v text)")
        c.execute("INSERT INTO phys SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
        before = rows(c, "SELECT * FROM phys ORDER BY id")
        orders = rows(c)
    wait_replica_caught_up(d)
    row, _ = run_backup(d, "--backup", "pg-phys")
    assert row["status"] == "complete" and row["type"] == "physical"
    # Scheduled physical backups are verified by default (Backup.spec.verify).
    assert row["verified"] == "ok", row["verify_message"]
    assert "tables" in row["verify_message"]
    target = d.work / "restored-phys"
    bk(d, "restore", row["id"], "--to", str(target))
    assert (target / "PG_VERSION").exists() and not (target / "standby.signal").exists()
    srv = RestoredServer(target, d.work)
    try:
        def ready():
            with srv.connect("shop") as c:
                return not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        wait_until(ready, timeout=120, what="the restored server")
        with srv.connect("shop") as c:
            assert rows(c, "SELECT * FROM phys ORDER BY id") == before
            assert rows(c) == orders
            c.execute("INSERT INTO phys VALUES (-1, 'writable')")
    finally:
        srv.stop()
    # A restore never replaces an existing data directory.
    p = bk(d, "restore", row["id"], "--to", str(target), check=False)
    assert p.returncode == 1 and "not empty" in p.stderr


def test_s3_round_trips_encrypted_multipart(env):
    d = env
    with admin(d, "shop") as c:
        before = rows(c)
    wait_replica_caught_up(d)
    row, p = run_backup(d, "--backup", "pg-s3", timeout=900)
    assert row["status"] == "complete", p.stderr
    assert row["verified"] == "ok", row["verify_message"]
    assert row["bytes"] > 5 << 20, "large enough for a multipart upload"
    objs = list((d.s3.root / "bk").rglob("*manifest.json*_object"))
    assert any(row["id"] in str(o) for o in objs)
    # Encrypted: the stored part is not a zstd stream.
    data = next(o for o in (d.s3.root / "bk").rglob("*data.tar.zst.enc*_object") if row["id"] in str(o))
    assert data.read_bytes()[:8] == b"DBPBKE1\n"

    lrow, _ = run_backup(d, "--backup", "pg-s3-logical")
    assert lrow["status"] == "complete"
    with admin(d, "shop") as c:
        c.execute("TRUNCATE orders")
    bk(d, "restore", lrow["id"], "--force")
    with admin(d, "shop") as c:
        assert rows(c) == before

    target = d.work / "restored-s3"
    bk(d, "restore", row["id"], "--to", str(target), timeout=900)
    assert (target / "PG_VERSION").exists()


# ---- failures ------------------------------------------------------------------------------

def test_kill9_during_upload_leaves_no_complete_backup(env):
    d = env
    before = set(catalog(d, "pg"))
    proc = subprocess.Popen([BIN, "backup", "pg", "--backup", "pg-phys", "--no-verify",
                             "--data-dir", str(d.data_dir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=d.env)
    # Only this cluster's runs: the scheduler's every-minute Backup of `sched` writes
    # partial files of its own.
    partial = wait_until(lambda: next(iter((d.store / "default" / "pg").rglob("*.partial.*")),
                                      None),
                         timeout=60, interval=0.02, what="an upload in progress")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = partial.parent
    assert not (run_dir / "manifest.json").exists()
    new = {k: v for k, v in catalog(d, "pg").items() if k not in before}
    assert len(new) == 1
    (rid, r), = new.items()
    assert r["status"] == "failed" and "interrupted" in r["message"], r
    p = bk(d, "restore", rid, "--to", str(d.work / "never"), check=False)
    assert p.returncode == 1 and "not complete" in p.stderr
    assert not (d.work / "never").exists()
    # The next run and retention clean the leftovers up.
    run_backup(d, "--backup", "pg-phys", "--no-verify")
    bk(d, "backups", "prune", "pg-phys")
    assert not run_dir.exists()
    assert rid not in catalog(d, "pg")


def test_s3_stopped_mid_upload_is_retried_then_reported(env):
    d = env
    before = set(catalog(d, "pg"))
    proc = subprocess.Popen([BIN, "backup", "pg", "--backup", "pg-s3", "--no-verify",
                             "--data-dir", str(d.data_dir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=d.env)
    try:
        # Stop the S3 server once the upload is under way (its first part has arrived).
        def uploading():
            return any(d.s3.root.rglob("1.md5")) or proc.poll() is not None
        wait_until(uploading, timeout=60, interval=0.05, what="a multipart upload")
        d.s3.stop()
        _, err = proc.communicate(timeout=300)
    finally:
        d.s3.start()
    assert proc.returncode == 1, err
    assert "s3_retry" in err and "after 3 attempts" in err, err
    new = {k: v for k, v in catalog(d, "pg").items() if k not in before}
    (rid, r), = new.items()
    assert r["status"] == "failed" and "after 3 attempts" in r["message"]
    events = [e for e in d.events() if e["reason"] == "BackupFailed"]
    assert any(rid in e["message"] for e in events)
    # With the server back, the next run completes.
    row, _ = run_backup(d, "--backup", "pg-s3", "--no-verify", timeout=900)
    assert row["status"] == "complete"


def test_retention_keeps_the_right_set(env):
    d = env
    ids = []
    for _ in range(4):
        row, _ = run_backup(d, "--backup", "pg-keep2", "--retention")
        ids.append(row["id"])
        time.sleep(1.1)  # run ids have one-second resolution
    left = [k for k, v in catalog(d, "pg").items() if v["backup"] == "pg-keep2"]
    assert sorted(left) == sorted(ids[-2:])
    dirs = sorted(p.name for p in (d.store / "keep2" / "default" / "pg").iterdir())
    assert dirs == sorted(ids[-2:])
    assert any(e["reason"] == "BackupExpired" for e in d.events())


def test_corrupted_artifact_fails_verification_and_restore_refuses(env):
    d = env
    row, _ = run_backup(d, "--backup", "pg-phys", "--no-verify")
    manifest = json.loads((d.store / row["path"] / "manifest.json").read_text())
    part = d.store / row["path"] / manifest["parts"][0]["name"]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    p = bk(d, "backups", "verify", row["id"], check=False)
    assert p.returncode == 1 and "checksum mismatch" in p.stderr, p.stderr
    r = catalog(d, "pg")[row["id"]]
    assert r["verified"] == "failed" and "checksum mismatch" in r["verify_message"]
    target = d.work / "corrupt-restore"
    p = bk(d, "restore", row["id"], "--to", str(target), check=False)
    assert p.returncode == 1 and "checksum mismatch" in p.stderr
    assert not target.exists() or not any(target.iterdir())
    assert any(e["reason"] == "BackupVerificationFailed" for e in d.events())


def test_scheduler_runs_due_backups(env):
    d = env
    def status_msg():
        items = json.loads(d.cli("get", "backup", "sched-every-minute", "-o", "json").stdout)
        return (items.get("status") or {}).get("message") or ""
    wait_until(lambda: any(w in status_msg() for w in ("scheduled", "last run", "running")),
               timeout=30, what="the scheduler to report the Backup")
    runs = wait_until(lambda: [b for b in catalog(d, "sched").values()
                               if b["backup"] == "sched-every-minute" and b["status"] == "complete"],
                      timeout=150, interval=2, what="a scheduled run")
    assert runs[0]["type"] == "logical"
