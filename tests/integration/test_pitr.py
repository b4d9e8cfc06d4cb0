"""Point-in-time recovery of PostgreSQL (issue 7) against a real `dbplane up`: WAL
archiving (archive_command -> `dbplane wal-push` into the cluster's spool, shipped by the
daemon's scheduler with `dbplane wal-ship` into a posix BackupStore), restores to a time
between two known writes (`dbplane restore --to DIR --point-in-time`, and a `kind:
Restore` resource reconciled into a new cluster), gap detection, and retention that keeps
the WAL a point-in-time window needs; a replica bootstrapped from a Backup, and one that
cannot stream after a failover rebuilt from it (a daemon of its own, with failpoints);
a verification's scratch server that lost its port started on another.
"""
import datetime
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

from conftest import (BIN, SCRATCH_PORT_FAILPOINT, assert_scratch_port_retried,
                      backup_stores_yaml, failpoint_sleeping, free_port, sanitizer_report,
                      start_backup_daemon, stop_and_check, wait_until)
from test_ha import hang_until_new_epoch

PG_BIN = "/usr/lib/postgresql/15/bin"

SPEC = """
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: pitrs3}}
spec: {{engine: postgresql, version: "15", instances: 1}}
---
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: pitr}}
spec:
  engine: postgresql
  version: "15"
  instances: 1
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: pitr-base}}
spec: {{cluster: pitr, type: physical, store: local, pitr: true, verify: false}}
"""



@pytest.fixture(scope="module")
def env():
    d = start_backup_daemon("dbplane-pitr-", "pitr.yaml", SPEC.format(), "pitr")
    d.wal = d.store / "default" / "pitr" / "wal"
    with conn(d, "pitr", "postgres") as c:
        c.execute("CREATE DATABASE app")
    with conn(d, "pitr", "app") as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, what text, at timestamptz DEFAULT now())")
    yield d
    stop_and_check(d, d.work, d.s3)


def conn(d, cluster, dbname, role="primary"):
    inst = d.instance(cluster, role)
    return psycopg.connect(host=f"{d.runtime_dir()}/s{inst['port']}", port=inst["port"],
                           user="dbplane_admin", dbname=dbname, autocommit=True)


def bk(d, *args, check=True, timeout=300, env=None):
    p = subprocess.run([BIN] + list(args) + ["--data-dir", str(d.data_dir)], capture_output=True,
                       text=True, timeout=timeout, env=env)
    rep = sanitizer_report(p.stderr)
    assert not rep, f"sanitizer report ({rep}) from dbplane {' '.join(args)}:\n{p.stderr[-8000:]}"
    if check and p.returncode != 0:
        raise AssertionError(f"dbplane {' '.join(args)} exited {p.returncode}\n{p.stderr}")
    return p


def archived(d):
    return sorted(p.name for p in d.wal.iterdir()) if d.wal.exists() else []


def in_s3(d, seg):
    return any(p.parent.name == "wal" for p in d.s3.root.rglob(f"{seg}.zst.enc*_object"))


def switch_and_ship(d, cluster="pitr"):
    """Closes the current WAL segment and waits until the daemon has shipped it."""
    with conn(d, cluster, "postgres") as c:
        seg = c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        c.execute("SELECT pg_switch_wal()")
    shipped = (lambda: f"{seg}.zst" in archived(d)) if cluster == "pitr" else (lambda: in_s3(d, seg))
    wait_until(shipped, timeout=60, what=f"segment {seg} in the archive")
    return seg


def write_a_then_b(d, a, b, cluster="pitr"):
    """Commits row a, returns a point in time strictly between a's and b's commits, then
    commits row b and ships the WAL holding both."""
    with conn(d, cluster, "app") as c:
        c.execute("INSERT INTO t (id, what) VALUES (%s, 'A')", (a,))
        time.sleep(0.6)
        between = datetime.datetime.now(datetime.timezone.utc)
        time.sleep(0.6)
        c.execute("INSERT INTO t (id, what) VALUES (%s, 'B')", (b,))
        ta, tb = (c.execute("SELECT at FROM t WHERE id = %s", (i,)).fetchone()[0] for i in (a, b))
    assert ta < between < tb
    switch_and_ship(d, cluster)
    return between.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RestoredServer:
    """A PostgreSQL server started by hand on a data dir made by `dbplane restore --to`."""

    def __init__(self, data_dir: Path, work: Path):
        self.port = free_port()
        self.sock = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
        shutil.chown(self.sock, "dbplane", "dbplane")
        self.logpath = work / f"restored-{self.port}.log"
        self.log = open(self.logpath, "w")
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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=60)
        self.log.close()
        shutil.rmtree(self.sock, ignore_errors=True)


def test_archive_command_ships_wal_to_the_store(env):
    d = env
    data = d.data_dir / "clusters" / "default" / "pitr" / "pitr-0" / "data"
    conf = (data / "postgresql.conf").read_text()
    assert "archive_mode = on" in conf and "wal-push --spool" in conf
    seg = switch_and_ship(d)
    spool = d.data_dir / "clusters" / "default" / "pitr" / "wal-spool"
    wait_until(lambda: not any(p for p in spool.iterdir() if not p.name.startswith(".")),
               timeout=30, what="an empty spool")
    with conn(d, "pitr", "postgres") as c:
        last, failed = c.execute("SELECT last_archived_wal, failed_count FROM pg_stat_archiver"
                                 ).fetchone()
    assert last == seg and failed == 0
    wal = json.loads(bk(d, "backups", "pitr", "-o", "json").stdout)["wal"]
    assert wal == [{"tenant": "default", "cluster": "pitr", "backup": "pitr-base",
                    "archive": "wal", "last_shipped": seg, "spooled": 0}]
    # The archived segment decodes to the server's own file.
    raw = subprocess.run(["zstd", "-dc", str(d.wal / f"{seg}.zst")], capture_output=True,
                         check=True).stdout
    assert len(raw) == 16 << 20


def test_restore_to_a_point_in_time_between_two_writes(env):
    d = env
    row = json.loads(bk(d, "backup", "pitr", "--backup", "pitr-base", "-o", "json").stdout)
    assert row["status"] == "complete"
    between = write_a_then_b(d, 1, 2)
    target = d.work / "pitr-restored"
    bk(d, "restore", "--backup", "pitr-base", "--to", str(target), "--point-in-time", between)
    assert (target / "recovery.signal").exists()
    srv = RestoredServer(target, d.work)
    try:
        def promoted():
            with srv.connect("app") as c:
                return not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        wait_until(promoted, timeout=120, what="the restored server to reach the target")
        with srv.connect("app") as c:
            assert c.execute("SELECT id, what FROM t ORDER BY id").fetchall() == [(1, "A")]
    finally:
        srv.stop()
    assert "recovery stopping before commit" in srv.logpath.read_text()
    # A point in time before the only base backup cannot be reached.
    p = bk(d, "restore", "--backup", "pitr-base", "--to", str(d.work / "never"),
           "--point-in-time", "2020-01-01T00:00:00Z", check=False)
    assert p.returncode == 1 and "finished before the point in time" in p.stderr, p.stderr
    assert not (d.work / "never").exists()


BACKUP_S3 = """
apiVersion: dbplane/v1
kind: Backup
metadata: {name: pitr-s3}
spec:
  cluster: pitrs3
  type: physical
  store: s3
  pitr: true
  verify: false
  encryption: {secretKeyRef: {name: backup-key, key: key}}
"""


def test_restore_to_a_point_in_time_from_s3_encrypted(env):
    d = env
    # Archiving is turned on for a running cluster by a reload, without a restart.
    pid = d.server_pid("default", "pitrs3", "pitrs3-0")
    spec = d.work / "backup-s3.yaml"
    spec.write_text(BACKUP_S3)
    d.cli("apply", "-f", str(spec))
    d.wait(timeout=120)

    def archiving():
        with conn(d, "pitrs3", "postgres") as c:
            return "wal-push" in c.execute("SHOW archive_command").fetchone()[0]
    wait_until(archiving, timeout=30, what="archive_command after the reload")
    assert d.server_pid("default", "pitrs3", "pitrs3-0") == pid
    with conn(d, "pitrs3", "postgres") as c:
        c.execute("CREATE DATABASE app")
    with conn(d, "pitrs3", "app") as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, what text, at timestamptz DEFAULT now())")
    row = json.loads(bk(d, "backup", "pitrs3", "--backup", "pitr-s3", "-o", "json").stdout)
    assert row["status"] == "complete"
    between = write_a_then_b(d, 1, 2, cluster="pitrs3")
    target = d.work / "pitr-s3-restored"
    bk(d, "restore", "--backup", "pitr-s3", "--to", str(target), "--point-in-time", between)
    srv = RestoredServer(target, d.work)
    try:
        def promoted():
            with srv.connect("app") as c:
                return not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        wait_until(promoted, timeout=120, what="the restored server to reach the target")
        with srv.connect("app") as c:
            assert c.execute("SELECT id, what FROM t ORDER BY id").fetchall() == [(1, "A")]
    finally:
        srv.stop()


RESTORE = """
apiVersion: dbplane/v1
kind: Restore
metadata: {{name: {name}}}
spec:
  backup: pitr-base
  target:
    cluster: {cluster}
    spec: {{instances: {instances}}}
  pointInTime: "{when}"
"""


def status_of(d, kind, name):
    item = json.loads(d.cli("get", kind, name, "-o", "json").stdout)
    st = item.get("status") or {}
    return st.get("state"), st.get("message") or ""


def test_restore_resource_makes_a_new_cluster_at_a_point_in_time(env):
    d = env
    between = write_a_then_b(d, 3, 4)
    spec = d.work / "restore.yaml"
    spec.write_text(RESTORE.format(name="back-in-time", cluster="pitr-copy", instances=2,
                                   when=between))
    d.cli("apply", "-f", str(spec))
    d.wait(timeout=180)
    assert status_of(d, "restore", "back-in-time")[0] == "ready"
    c = d.cluster("pitr-copy")
    # The restored primary stays primary: resetting the recovery targets after recovery
    # must not be taken for a pending restart (no rolling restart, no switchover).
    assert len(c["instances"]) == 2 and c["primary"] == "pitr-copy-0", [
        (e.get("object"), e.get("reason"), e.get("message")) for e in d.events()
        if "pitr-copy" in json.dumps(e)]
    assert not [e for e in d.events() if e["name"] == "pitr-copy"
                and e["reason"] in ("RollingUpdateStarted", "SwitchoverCompleted")]
    with conn(d, "pitr-copy", "app") as p:
        assert [r[0] for r in p.execute("SELECT id FROM t ORDER BY id")] == [1, 2, 3]
        p.execute("INSERT INTO t (id, what) VALUES (100, 'writable')")
        lsn = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    # The replica was cloned from the restored primary, after its recovery.
    with conn(d, "pitr-copy", "app", "replica") as r:
        wait_until(lambda: r.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                     (lsn,)).fetchone()[0], timeout=30, what="the replica")
        assert [x[0] for x in r.execute("SELECT id FROM t ORDER BY id")] == [1, 2, 3, 100]
    reasons = [e["reason"] for e in d.events() if e["name"] == "back-in-time"]
    assert "Restored" in reasons and "RestoreCompleted" in reasons
    # The fetched WAL and the recovery settings are gone once recovery has ended.
    data = d.data_dir / "clusters" / "default" / "pitr-copy" / "pitr-copy-0" / "data"
    wait_until(lambda: not (data / "dbplane_wal_restore").exists(), timeout=30,
               what="the restore's WAL to be removed")
    assert "recovery_target_time" not in (data / "postgresql.auto.conf").read_text()


HELD_DB = """
apiVersion: dbplane/v1
kind: Database
metadata: {name: held-db}
spec: {cluster: pitr, name: helddb}
"""


HELD_MS = 31000


def test_a_held_restore_does_not_hold_the_loop_and_a_shutdown_cancels_it(env, monkeypatch):
    """A Restore's primary is restored on a worker thread: while the restore of cluster
    pitr-held is held 31 s by a test-only failpoint (a `sleep` run by the restore job before
    backup_restore_instance), the daemon's passes go on (a Database applied meanwhile on
    cluster pitr is made at once) and pitr-held says "restoring primary pitr-held-0 from
    ..." (pending). Stopping the daemon kills the held step at once and leaves neither a
    data directory nor a .restore-failed marker (a cancelled restore is no failure, so it
    does not wait out the retry minute): the next start restores it, and the one after
    leaves it ready."""
    d = env
    between = write_a_then_b(d, 200, 201)  # ids no other test of this module uses
    assert d.stop() == 0
    # 31 s: test_ha.py's held steps sleep 30 s, and may run at the same time (xdist).
    monkeypatch.setenv("DBPLANE_FAILPOINT_INIT_DELAY_MS", str(HELD_MS))
    monkeypatch.setenv("DBPLANE_FAILPOINT_INIT_CLUSTER", "pitr-held")
    d.start(d.spec)
    spec = d.work / "restore-held.yaml"
    spec.write_text(RESTORE.format(name="held", cluster="pitr-held", instances=1, when=between))
    d.cli("apply", "-f", str(spec))
    wait_until(lambda: failpoint_sleeping(HELD_MS), timeout=60,
               what="the restore of pitr-held-0 to be held")
    t_held = time.monotonic()
    assert status_of(d, "restore", "held")[0] == "restoring"
    c = d.cluster("pitr-held")
    assert c["state"] == "pending" and c["message"].startswith(
        "restoring primary pitr-held-0 from Backup pitr-base to "), c
    db = d.work / "held-db.yaml"
    db.write_text(HELD_DB)
    d.cli("apply", "-f", str(db))
    wait_until(lambda: status_of(d, "database", "held-db")[0] == "ready", timeout=15,
               what="a Database applied while the restore is held")
    assert failpoint_sleeping(HELD_MS), "the restore was not held while the Database was made"
    events = [e["reason"] for e in d.events() if e["name"] == "held"]
    assert "Restoring" in events and "Restored" not in events, events
    assert d.stop() == 0
    assert time.monotonic() - t_held < 27, "shutdown waited for the restore"
    assert not failpoint_sleeping(HELD_MS), "the restore's tool outlived the daemon"
    inst = d.data_dir / "clusters" / "default" / "pitr-held" / "pitr-held-0"
    assert not (inst / "data").exists() or not any((inst / "data").iterdir())
    assert not (inst / ".restore-failed").exists()
    # The next start restores pitr-held-0, to the point in time.
    monkeypatch.delenv("DBPLANE_FAILPOINT_INIT_DELAY_MS")
    d.start(d.spec)
    assert status_of(d, "restore", "held")[0] == "ready"
    events = [e["reason"] for e in d.events() if e["name"] == "held"]
    assert "Restored" in events and "RestoreCompleted" in events, events
    assert "RestoreFailed" not in events, events
    with conn(d, "pitr-held", "app") as p:
        ids = [r[0] for r in p.execute("SELECT id FROM t ORDER BY id")]
    assert 200 in ids and 201 not in ids, ids
    # A completed Restore stays ready across a restart: the start's re-check of ready
    # resources would find its cluster's data "already there" and fail it.
    assert d.stop() == 0
    d.start(d.spec)
    assert status_of(d, "restore", "held")[0] == "ready"


CLUSTER = """
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: pitr}}
spec:
  engine: postgresql
  version: "15"
  instances: {instances}
  bootstrapFrom: {{backup: pitr-base}}
"""


def instance_events(d, name):
    return [e for e in d.events() if e["kind"] == "Instance" and e["name"] == name]


def test_replica_bootstrap_from_a_verified_backup_with_wal_catch_up(env):
    d = env
    spec = d.work / "scale.yaml"
    # No verified run yet: the new replica is cloned from the primary, and an event says why.
    spec.write_text(CLUSTER.format(instances=2))
    d.cli("apply", "-f", str(spec))
    d.wait(timeout=180)
    why = [e["message"] for e in instance_events(d, "pitr-1") if e["reason"] == "BootstrapFallback"]
    assert why and "verified" in why[0], instance_events(d, "pitr-1")
    assert any(e["reason"] == "Cloned" for e in instance_events(d, "pitr-1"))

    row = json.loads(bk(d, "backup", "pitr", "--backup", "pitr-base", "--verify", "-o", "json"
                        ).stdout)
    assert row["verified"] == "ok", row
    with conn(d, "pitr", "app") as c:
        c.execute("INSERT INTO t (id, what) SELECT g, 'after' FROM generate_series(1000, 1999) g")
    switch_and_ship(d)  # archived WAL after the base backup ...
    with conn(d, "pitr", "app") as c:  # ... and WAL only the primary has
        c.execute("INSERT INTO t (id, what) SELECT g, 'latest' FROM generate_series(2000, 2099) g")
        lsn = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        want = c.execute("SELECT count(*) FROM t").fetchone()[0]
        # The primary recycles the WAL of the backup window: only the archive has it now.
        start = json.loads((d.store / row["path"] / "manifest.json").read_text())["start_position"]
        first = c.execute("SELECT pg_walfile_name(%s::pg_lsn)", (start,)).fetchone()[0]
        for _ in range(3):
            c.execute("SELECT pg_switch_wal()")
            c.execute("CHECKPOINT")
        wait_until(lambda: not c.execute("SELECT 1 FROM pg_ls_waldir() WHERE name = %s",
                                         (first,)).fetchone(), timeout=30,
                   what=f"the primary to recycle {first}")
    spec.write_text(CLUSTER.format(instances=3))
    d.cli("apply", "-f", str(spec))
    d.wait(timeout=180)
    ev = instance_events(d, "pitr-2")
    boot = [e["message"] for e in ev if e["reason"] == "Bootstrapped"]
    assert boot and row["id"] in boot[0], ev
    assert not any(e["reason"] in ("Cloning", "BootstrapFallback") for e in ev), ev
    inst = next(i for i in d.cluster("pitr")["instances"] if i["name"] == "pitr-2")
    assert inst["role"] == "replica" and inst["state"] == "running"
    with psycopg.connect(host=f"{d.runtime_dir()}/s{inst['port']}", port=inst["port"],
                         user="dbplane_admin", dbname="app", autocommit=True) as r:
        wait_until(lambda: r.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                     (lsn,)).fetchone()[0], timeout=60, what="catch-up")
        assert r.execute("SELECT count(*) FROM t").fetchone()[0] == want
        assert r.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()[0] == "streaming"


BACKUP_KEEP1 = """
apiVersion: dbplane/v1
kind: Backup
metadata: {name: pitr-base}
spec: {cluster: pitr, type: physical, store: local, pitr: true, verify: false, retentionCount: 1}
"""


def segno(name):
    return int(name[8:16], 16) * 256 + int(name[16:24], 16)


def test_retention_keeps_the_point_in_time_window(env):
    d = env
    runs = lambda: [b for b in json.loads(bk(d, "backups", "pitr", "-o", "json").stdout)["backups"]
                    if b["backup"] == "pitr-base" and b["status"] == "complete"]
    assert len(runs()) >= 2
    newest = max(runs(), key=lambda b: b["started_ms"])
    start = json.loads((d.store / newest["path"] / "manifest.json").read_text())["start_position"]
    hi, lo = (int(x, 16) for x in start.split("/"))
    anchor = ((hi << 32) | lo) // (16 << 20)
    assert any(segno(n) < anchor for n in archived(d) if len(n) == 28), "older WAL to expire"
    spec = d.work / "keep1.yaml"
    spec.write_text(BACKUP_KEEP1)
    d.cli("apply", "-f", str(spec))
    bk(d, "backups", "prune", "pitr-base")
    assert [b["id"] for b in runs()] == [newest["id"]]
    segs = [n for n in archived(d) if len(n) == 28]
    assert segs and min(segno(n) for n in segs) == anchor, (anchor, segs[:3])
    reasons = {e["reason"] for e in d.events() if e["name"] == "pitr-base"}
    assert {"BackupExpired", "WalExpired"} <= reasons
    # What is left still restores to a point in time after the kept run.
    between = write_a_then_b(d, 5, 6)
    target = d.work / "pitr-after-prune"
    bk(d, "restore", "--backup", "pitr-base", "--to", str(target), "--point-in-time", between)
    srv = RestoredServer(target, d.work)
    try:
        def promoted():
            with srv.connect("app") as c:
                return not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        wait_until(promoted, timeout=120, what="the restored server to reach the target")
        with srv.connect("app") as c:
            ids = [r[0] for r in c.execute("SELECT id FROM t WHERE id < 100 ORDER BY id")]
        assert ids == [1, 2, 3, 4, 5]
    finally:
        srv.stop()


def test_a_segment_lost_from_the_spool_is_reported_as_a_gap(env):
    d = env
    spool = d.data_dir / "clusters" / "default" / "pitr" / "wal-spool"
    spooled = lambda: sorted(p.name for p in spool.iterdir() if not p.name.startswith("."))
    switch_and_ship(d)
    wait_until(lambda: not spooled(), timeout=30, what="an empty spool")
    inst = d.instance("pitr", "primary")
    dsn = dict(host=f"{d.runtime_dir()}/s{inst['port']}", port=inst["port"],
               user="dbplane_admin", dbname="app", autocommit=True)
    d.proc.send_signal(signal.SIGSTOP)  # nothing ships while the daemon is stopped
    try:
        lost = None
        for i in range(2):
            with psycopg.connect(**dsn) as c:
                c.execute("INSERT INTO t (id, what) VALUES (%s, 'gap')", (3000 + i,))
                c.execute("SELECT pg_switch_wal()")
            name = wait_until(lambda: next((n for n in spooled() if len(n) == 24), None),
                              timeout=30, what="a segment in the spool")
            if lost is None:
                lost = name
                (spool / name).unlink()  # lost with its server's disk, say
    finally:
        d.proc.send_signal(signal.SIGCONT)
    gap = wait_until(lambda: [e for e in d.events() if e["reason"] == "WalArchiveGap"],
                     timeout=60, what="a WalArchiveGap event")
    assert lost in gap[0]["message"] or "never reached the archive" in gap[0]["message"]
    assert f"{lost}.zst" not in archived(d)
    # A restore past the gap is told so.
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    bk(d, "restore", "--backup", "pitr-base", "--to", str(d.work / "pitr-gap"),
       "--point-in-time", now.replace("+00:00", "Z"))
    assert any("recovery can reach only the times before the gap" in e["message"]
               for e in d.events() if e["reason"] == "WalArchiveGap")


def test_restore_beyond_the_archive_fails_and_leaves_nothing(env):
    d = env
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
    spec = d.work / "restore-late.yaml"
    spec.write_text(RESTORE.format(name="too-late", cluster="pitr-late", instances=1,
                                   when=later.isoformat(timespec="seconds").replace("+00:00", "Z")))
    d.cli("apply", "-f", str(spec))
    st = wait_until(lambda: (lambda s: s if s[0] == "failed" else None)(
        status_of(d, "restore", "too-late")), timeout=120, what="the Restore to fail")
    assert "recovery" in st[1], st
    events = [e for e in d.events() if e["name"] == "too-late" and e["reason"] == "RestoreFailed"]
    assert events, "a RestoreFailed event"
    data = d.data_dir / "clusters" / "default" / "pitr-late" / "pitr-late-0" / "data"
    assert not data.exists() or not any(data.iterdir()), "nothing half-made stays"


QUEUE_SPEC = """
apiVersion: dbplane/v1
kind: BackupStore
metadata: {{name: flaky}}
spec:
  posix: {{path: {store}}}
---
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: pq}}
spec: {{engine: postgresql, version: "15", instances: 1}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: pq-base}}
spec:
  cluster: pq
  type: physical
  store: flaky
  pitr: true
  verify: false
  archiveQueueMax: 32Mi
"""


def test_a_stuck_archive_drops_wal_past_archive_queue_max_instead_of_filling_the_disk(
        daemon, tmp_path):
    """A store that takes nothing (its posix path is a file) must not fill the disk with
    spooled WAL: past archiveQueueMax (32Mi = two segments) `wal-push` lets segments go,
    the server's archiver never fails, a WalArchiveQueueFull event names them, and once
    the store is back the spool drains and the hole is reported as a WalArchiveGap."""
    store = tmp_path / "store"
    store.write_text("not a directory\n")
    spec = tmp_path / "queue.yaml"
    spec.write_text(QUEUE_SPEC.format(store=store))
    d = daemon.start(spec)
    base = d.data_dir / "clusters" / "default" / "pq"
    spool = base / "wal-spool"
    conf = (base / "pq-0" / "data" / "postgresql.conf").read_text()
    assert f"--queue-max {32 << 20}" in conf
    segs = lambda: sorted(p for p in spool.iterdir() if len(p.name) == 24)

    def switch(c, i):
        c.execute("INSERT INTO t VALUES (%s)", (i,))
        seg = c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        c.execute("SELECT pg_switch_wal()")
        wait_until(lambda: c.execute("SELECT last_archived_wal FROM pg_stat_archiver"
                                     ).fetchone()[0] == seg, timeout=30,
                   what=f"the archiver to hand over {seg}")
        return seg

    with conn(d, "pq", "postgres") as c:
        c.execute("CREATE TABLE t (id int)")
        handed = [switch(c, i) for i in range(6)]
        failed = c.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0]
    assert failed == 0, "the archiver saw failures: the server would keep its WAL"
    queued = segs()
    assert len(queued) == 2 and sum(p.stat().st_size for p in queued) <= 32 << 20, queued
    full = wait_until(lambda: [e for e in d.events() if e["reason"] == "WalArchiveQueueFull"],
                      timeout=90, what="a WalArchiveQueueFull event")
    msg = full[0]["message"]
    assert full[0]["type"] == "Warning" and "archiveQueueMax" in msg, msg
    dropped = [s for s in handed if s not in {p.name for p in queued}]
    assert dropped and dropped[0] in msg, (dropped, msg)

    # The store is back: what was queued ships, the next segment too, and the hole between
    # them is reported.
    store.unlink()
    store.mkdir()
    wait_until(lambda: not segs(), timeout=120, what="the spool to drain")
    with conn(d, "pq", "postgres") as c:
        after = switch(c, 100)
    wal = store / "default" / "pq" / "wal"
    wait_until(lambda: (wal / f"{after}.zst").exists(), timeout=90,
               what=f"{after} in the archive")
    assert not (wal / f"{dropped[0]}.zst").exists()
    gap = wait_until(lambda: [e for e in d.events() if e["reason"] == "WalArchiveGap"],
                     timeout=30, what="a WalArchiveGap event")
    assert "never reached the archive" in gap[0]["message"]


def test_a_scratch_server_that_lost_its_port_is_started_on_another(env):
    """docs/design.md "Ports": a verification's scratch server whose port another program
    took between dbplane's pick and the server's bind exits, and is started again on
    another port. The race window is a few ms, so a test-only failpoint
    (DBPLANE_FAILPOINT_SCRATCH_PORT_TAKEN=1, in the environment of `dbplane backup`)
    holds the first pick's port on 127.0.0.1: the first start always loses."""
    d = env
    p = bk(d, "backup", "pitr", "--backup", "pitr-base", "--verify", "-o", "json",
           env=dict(os.environ, **SCRATCH_PORT_FAILPOINT), check=False)
    assert_scratch_port_retried(p)
    row = json.loads(p.stdout)
    assert row["status"] == "complete" and row["verified"] == "ok", row
    assert "tables" in row["verify_message"], row
    # Nothing of the scratch instances is left: neither the lost port's nor the second's.
    assert not any((d.data_dir / "scratch").glob("*/data")), list((d.data_dir / "scratch").iterdir())


HA_SPEC = """
apiVersion: dbplane/v1
kind: Cluster
metadata: {name: pitr-ha}
spec:
  engine: postgresql
  version: "15"
  instances: 2
  failover: {auto: true, interval: 500ms, failcount: 3}
  bootstrapFrom: {backup: pitr-ha-base}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {name: pitr-ha-base}
spec: {cluster: pitr-ha, type: physical, store: local, pitr: true, verify: false}
"""


def test_replica_that_cannot_stream_is_rebuilt_from_bootstrap_from(daemon, monkeypatch):
    """docs/design.md "A replica that runs but does not stream is rebuilt": from the
    Cluster's bootstrapFrom Backup when it has one (test_ha.py's
    test_replica_that_cannot_stream_is_rebuilt covers the clone). The same forked former
    primary (pg_rewind skipped by a failpoint, so it holds a write the new primary never
    received and cannot stream), in a cluster that archives WAL and has a verified
    physical run taken on timeline 1: it must be rebuilt from that run plus the archive
    (a Bootstrapped event, no clone), follow the new primary onto timeline 2, stream, and
    have the row written after the failover and not the forked one."""
    monkeypatch.setenv("DBPLANE_FAILPOINT_REJOIN_SKIP_REWIND", "1")
    monkeypatch.setenv("DBPLANE_FAILPOINT_STREAM_BOUND_MS", "4000")
    work = daemon.data_dir.parent
    spec = work / "pitr-ha.yaml"
    spec.write_text(backup_stores_yaml(work / "store") + "---\n" + HA_SPEC)
    d = daemon.start(spec)
    with conn(d, "pitr-ha", "postgres") as c:
        c.execute("CREATE TABLE ledger (id serial PRIMARY KEY, v text)")
        c.execute("INSERT INTO ledger (v) VALUES ('before')")
    row = json.loads(bk(d, "backup", "pitr-ha", "--backup", "pitr-ha-base", "--verify", "-o",
                        "json").stdout)
    assert row["verified"] == "ok", row
    rep = d.instance("pitr-ha", "replica")
    assert rep["name"] == "pitr-ha-1"
    wait_until(lambda: d.admin_sql(rep, "SELECT count(*) FROM ledger") == "1", timeout=30,
               what="the replica to have the first row")
    # As in test_ha: the replica stops receiving, the next write exists on the primary
    # alone, and the failover forks timeline 2 off before it.
    d.admin_sql(rep, "ALTER SYSTEM SET primary_conninfo = ''")
    d.admin_sql(rep, "SELECT pg_reload_conf()")
    wait_until(lambda: d.admin_sql(rep, "SELECT count(*) FROM pg_stat_wal_receiver") == "0",
               timeout=10, what="the replica's WAL receiver to stop")
    with conn(d, "pitr-ha", "postgres") as c:
        c.execute("INSERT INTO ledger (v) VALUES ('forked')")
    c, _ = hang_until_new_epoch(d, "pitr-ha", d.server_pid("default", "pitr-ha", "pitr-ha-0"), 2)
    assert c["primary"] == "pitr-ha-1"
    new = next(i for i in c["instances"] if i["name"] == "pitr-ha-1")
    d.admin_sql(new, "ALTER SYSTEM RESET primary_conninfo")
    wait_until(lambda: d.admin_sql(new, "SELECT pg_is_in_recovery()") == "f", timeout=30,
               what="the promotion")
    d.admin_sql(new, "INSERT INTO ledger (v) VALUES ('after')")
    try:
        ev = wait_until(lambda: next((e for e in instance_events(d, "pitr-ha-0")
                                      if e["reason"] == "ReplicaNotStreaming"), None),
                        timeout=45, what="the ReplicaNotStreaming event")
        assert "rebuilding it from its bootstrapFrom Backup" in ev["message"], ev
        boot = wait_until(lambda: next((e for e in instance_events(d, "pitr-ha-0")
                                        if e["reason"] in ("Bootstrapped", "BootstrapFallback",
                                                           "Cloned")),
                                       None), timeout=60, what="the rebuild's event")
        print("ReplicaNotStreaming:", ev["message"], "\n" + boot["reason"] + ":", boot["message"])
        assert boot["reason"] == "Bootstrapped" and row["id"] in boot["message"], boot
        d.wait(120)
        old = next(i for i in d.cluster("pitr-ha")["instances"] if i["name"] == "pitr-ha-0")
        assert old["role"] == "replica" and old["state"] == "running", old
        wait_until(lambda: d.admin_sql(old, "SELECT status FROM pg_stat_wal_receiver")
                   == "streaming", timeout=30, what="the rebuilt replica to stream")
        wait_until(lambda: "after" in d.admin_sql(old, "SELECT v FROM ledger ORDER BY id"),
                   timeout=30, what="the rebuilt replica to receive the new primary's write")
    except (AssertionError, pytest.fail.Exception) as e:
        log = d.data_dir / "clusters" / "default" / "pitr-ha" / "pitr-ha-0" / "server.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
        pytest.fail(f"{e}\n--- pitr-ha-0 server.log ---\n{tail}\n--- events ---\n"
                    f"{[(x['reason'], x['message']) for x in instance_events(d, 'pitr-ha-0')]}")
    assert d.admin_sql(old, "SELECT string_agg(v, ',' ORDER BY id) FROM ledger") == "before,after"
    assert d.admin_sql(old, "SELECT received_tli FROM pg_stat_wal_receiver") == "2"
    reasons = [e["reason"] for e in instance_events(d, "pitr-ha-0")]
    assert "Rejoined" in reasons  # the failpoint's "successful" rejoin
    assert not {"Cloned", "Cloning", "BootstrapFallback"} & set(reasons), reasons
    assert "replica_not_streaming" in d.log_text()


def test_wal_push_rejects_a_malformed_queue_max(tmp_path):
    """archive_command's --queue-max takes a number of bytes; anything else is a usage
    error (exit 2) that names the flag, and nothing is spooled."""
    src = tmp_path / "seg"
    src.write_bytes(b"x" * 16)
    for bad in ("abc", "-5", "12MB", ""):
        p = subprocess.run([BIN, "wal-push", "--spool", str(tmp_path), "--queue-max", bad,
                            str(src), "000000010000000000000001"], capture_output=True, text=True)
        assert p.returncode == 2, (bad, p.returncode, p.stderr)
        assert "--queue-max" in p.stderr, p.stderr
    assert not (tmp_path / "000000010000000000000001").exists()
