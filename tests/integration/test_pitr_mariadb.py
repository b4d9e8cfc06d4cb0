"""Point-in-time recovery of MariaDB (issue 7) against a real `dbplane up`: the daemon's
scheduler polls the primary (`dbplane wal-ship`) and ships each closed binary log, with
its JSON index, into a posix BackupStore; `dbplane restore --to DIR --point-in-time T`
restores the newest physical run finished before T and replays the archived binlogs
after the run's GTID up to T (mariadb-binlog | mariadb, on a temporary server); a binlog
missing from the archive is reported as a gap, never skipped; after a failover the
promoted replica's logs continue the archive and a restore replays both primaries' writes
(its own two-instance daemon). Otherwise one MariaDB instance,
small data: the file runs in well under a minute.
"""
import datetime
import json
import os
import re
import signal
import tempfile
import time
from pathlib import Path

import pymysql
import pytest

from conftest import BIN, Daemon, backup_stores_yaml, sanitizer_report, stop_and_check, wait_until
from test_backup_engines import MariadbServer

SPEC = """
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: mpitr}}
spec: {{engine: mariadb, version: "10.11", instances: 1, memory: 256Mi}}
---
apiVersion: dbplane/v1
kind: Database
metadata: {{name: app}}
spec: {{cluster: mpitr, name: app}}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {{name: mpitr-base}}
spec: {{cluster: mpitr, type: physical, store: local, pitr: true, verify: false}}
"""


@pytest.fixture(scope="module")
def env():
    work = Path(tempfile.mkdtemp(prefix="dbplane-mpitr-"))
    work.chmod(0o755)
    spec = work / "mpitr.yaml"
    spec.write_text(backup_stores_yaml(work / "store") + "---\n" + SPEC.format())
    d = Daemon(work / "data", work / "data.log")
    try:
        d.start(spec, timeout=180)
    except BaseException:
        d.stop()
        raise
    d.work, d.store = work, work / "store"
    d.archive = d.store / "default" / "mpitr" / "binlog"
    wait_until(lambda: db_ready(d), timeout=60, what="database app")
    with mdb(d) as c:
        c.execute("CREATE TABLE app.t (id INT PRIMARY KEY, what VARCHAR(8),"
                  " at DATETIME(6) DEFAULT NOW(6)) ENGINE=InnoDB")
        c.execute("INSERT INTO app.t (id, what) VALUES (1, 'base')")
    yield d
    stop_and_check(d, work)


class _Cur:
    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()


class mdb:
    """Root over the primary's socket (unix_socket: the test runs as root)."""

    def __init__(self, d, sock=None):
        if sock is None:
            inst = d.instance("mpitr", "primary")
            cnf = (d.data_dir / "clusters" / "default" / "mpitr" / inst["name"] / "my.cnf").read_text()
            sock = re.search(r"^socket = (.+)$", cnf, re.M).group(1)
        self.conn = pymysql.connect(unix_socket=sock, user="root", autocommit=True)

    def __enter__(self):
        return _Cur(self.conn)

    def __exit__(self, *a):
        self.conn.close()


def db_ready(d):
    try:
        with mdb(d) as c:
            return bool(c.execute("SHOW DATABASES LIKE 'app'"))
    except (pymysql.err.OperationalError, StopIteration, FileNotFoundError):
        return False


def bk(d, *args, check=True, timeout=300):
    p = __import__("subprocess").run([BIN] + list(args) + ["--data-dir", str(d.data_dir)],
                                     capture_output=True, text=True, timeout=timeout)
    rep = sanitizer_report(p.stderr)
    assert not rep, f"sanitizer report ({rep}) from dbplane {' '.join(args)}:\n{p.stderr[-8000:]}"
    if check and p.returncode != 0:
        raise AssertionError(f"dbplane {' '.join(args)} exited {p.returncode}\n{p.stderr}")
    return p


def indexes(d):
    """The archive's indexes, oldest GTID first."""
    if not d.archive.exists():
        return []
    out = [json.loads(p.read_text()) for p in d.archive.glob("*.json")]
    return sorted(out, key=lambda x: (x["start_seq"], x["last_seq"]))


def write(d, i, what):
    """Commits row i; returns the GTID sequence number of its transaction."""
    with mdb(d) as c:
        c.execute("INSERT INTO app.t (id, what) VALUES (%s, %s)", (i, what))
        pos = c.execute("SELECT @@gtid_binlog_pos")[0][0]
    return int(pos.split(",")[0].split("-")[2])


def flush_and_ship(d, seq):
    """Closes the current binlog and waits until the scheduler archived transaction seq."""
    with mdb(d) as c:
        c.execute("FLUSH BINARY LOGS")
    wait_until(lambda: any(x["last_seq"] >= seq for x in indexes(d)), timeout=60,
               what=f"GTID sequence number {seq} in the binlog archive")


def rows(server):
    with mdb(None, sock=server.sock) as c:
        return {r[0]: r[1] for r in c.execute("SELECT id, what FROM app.t")}


def test_restore_to_a_point_in_time_between_two_writes(env):
    d = env
    p = bk(d, "backup", "mpitr", "--backup", "mpitr-base", "-o", "json")
    run = json.loads(p.stdout)
    assert run["status"] == "complete", run
    write(d, 2, "A")
    between = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(1.5)
    seq_b = write(d, 3, "B")
    flush_and_ship(d, seq_b)
    ix = indexes(d)
    assert ix and all(len(x["sha256"]) == 64 and x["object"].endswith(".zst") for x in ix), ix
    assert any(x["first_time"] and x["last_gtid"] for x in ix), ix
    # `dbplane backups` shows the binlog archive's position, not PostgreSQL WAL fields.
    def archived():
        doc = json.loads(bk(d, "backups", "mpitr", "-o", "json").stdout)
        return [w for w in doc["wal"] if w["archive"] == "binlog" and w["gtid_seq_end"] >= seq_b]
    wait_until(archived, timeout=30, what="dbplane backups to show the archived GTID")
    assert archived()[0]["open_binlog"], archived()
    table = bk(d, "backups", "mpitr").stdout
    assert "Binlog archive of mpitr (Backup mpitr-base): archived up to GTID sequence" in table, table

    target = d.work / "restored"
    when = between.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    d.between = when
    bk(d, "restore", "--backup", "mpitr-base", "--to", str(target), "--point-in-time", when)
    assert not Path(str(target) + ".binlog-restore").exists()
    srv = MariadbServer(target, d.work)
    try:
        got = rows(srv)
    finally:
        srv.stop()
    assert got == {1: "base", 2: "A"}, got


RESTORE = """
apiVersion: dbplane/v1
kind: Restore
metadata: {{name: {name}}}
spec:
  backup: mpitr-base
  target:
    cluster: {cluster}
    spec: {{instances: 1}}
  pointInTime: "{when}"
"""


def test_restore_resource_makes_a_new_cluster_at_a_point_in_time(env):
    d = env
    spec = d.work / "restore.yaml"
    spec.write_text(RESTORE.format(name="mback", cluster="mcopy", when=d.between))
    d.cli("apply", "-f", str(spec))
    d.wait(timeout=180)
    st = json.loads(d.cli("get", "restore", "mback", "-o", "json").stdout).get("status") or {}
    assert st.get("state") == "ready", st
    inst = d.instance("mcopy", "primary")
    cnf = (d.data_dir / "clusters" / "default" / "mcopy" / inst["name"] / "my.cnf").read_text()
    sock = re.search(r"^socket = (.+)$", cnf, re.M).group(1)
    with mdb(d, sock=sock) as c:
        assert {r[0]: r[1] for r in c.execute("SELECT id, what FROM app.t")} == \
            {1: "base", 2: "A"}
        c.execute("INSERT INTO app.t (id, what) VALUES (100, 'writable')")
    reasons = [e["reason"] for e in d.events() if e["name"] == "mback"]
    assert "RestoreCompleted" in reasons, reasons


def test_a_point_in_time_before_the_base_backup_is_refused(env):
    d = env
    p = bk(d, "restore", "--backup", "mpitr-base", "--to", str(d.work / "never"),
           "--point-in-time", "2020-01-01T00:00:00Z", check=False)
    assert p.returncode == 1 and "finished before the point in time" in p.stderr, p.stderr
    assert not (d.work / "never").exists()


def test_a_binlog_missing_from_the_archive_is_reported_as_a_gap(env):
    d = env
    seq_c = write(d, 4, "C")
    flush_and_ship(d, seq_c)
    seq_d = write(d, 5, "D")
    flush_and_ship(d, seq_d)
    seq_e = write(d, 6, "E")
    flush_and_ship(d, seq_e)
    # Lose the archived log that holds D.
    lost = next(x for x in indexes(d) if x["first_seq"] <= seq_d <= x["last_seq"])
    assert lost["last_seq"] < seq_e
    (d.archive / lost["object"]).unlink()
    (d.archive / f"{lost['server_id']}-{lost['file']}.json").unlink()
    now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    target = d.work / "gap"
    p = bk(d, "restore", "--backup", "mpitr-base", "--to", str(target),
           "--point-in-time", now.isoformat(timespec="seconds").replace("+00:00", "Z"),
           check=False)
    assert p.returncode == 1, p.stderr
    assert "gap" in p.stderr and f"{seq_d}" in p.stderr, p.stderr
    assert not target.exists(), "a failed restore leaves no data directory"
    ev = [e for e in d.events() if e.get("reason") == "WalArchiveGap"]
    assert ev and "binlog archive has a gap" in ev[-1]["message"], ev


def test_retention_keeps_the_binlogs_the_kept_run_needs(env):
    d = env
    # Keep one run: a new base backup starts a new window past the gap above.
    spec = d.work / "mpitr-keep1.yaml"
    spec.write_text(backup_stores_yaml(d.store) + "---\n" + SPEC.format().replace(
        "pitr: true, verify: false", "pitr: true, verify: false, retentionCount: 1"))
    d.cli("apply", "-f", str(spec))
    run = json.loads(bk(d, "backup", "mpitr", "--backup", "mpitr-base", "-o", "json").stdout)
    assert run["status"] == "complete", run
    gtid = json.loads((d.store / run["path"] / "manifest.json").read_text())["start_position"]
    anchor = int(gtid.split(",")[0].split("-")[2])
    seq_f = write(d, 7, "F")
    flush_and_ship(d, seq_f)
    before = indexes(d)
    assert any(max(x["last_seq"], x["start_seq"]) <= anchor for x in before), before
    bk(d, "backups", "prune", "mpitr-base")
    after = indexes(d)
    assert after and all(max(x["last_seq"], x["start_seq"]) > anchor for x in after), after
    assert len(list(d.archive.iterdir())) == 2 * len(after), "each log goes with its index"
    reasons = {e["reason"] for e in d.events() if e["name"] == "mpitr-base"}
    assert "WalExpired" in reasons, reasons
    # What is left still restores to now, from the kept run.
    now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    target = d.work / "after-prune"
    bk(d, "restore", "--backup", "mpitr-base", "--to", str(target), "--point-in-time",
       now.isoformat(timespec="seconds").replace("+00:00", "Z"))
    srv = MariadbServer(target, d.work)
    try:
        got = rows(srv)
    finally:
        srv.stop()
    assert sorted(got) == [1, 2, 3, 4, 5, 6, 7], got


# ---- across a failover ------------------------------------------------------------------

HA_SPEC = """
apiVersion: dbplane/v1
kind: Cluster
metadata: {name: mpha}
spec:
  engine: mariadb
  version: "10.11"
  instances: 2
  memory: 128Mi
  config: {innodb_log_file_size: 16M}
  failover: {auto: true, interval: 500ms, failcount: 3}
---
apiVersion: dbplane/v1
kind: Database
metadata: {name: app}
spec: {cluster: mpha, name: app}
---
apiVersion: dbplane/v1
kind: Backup
metadata: {name: mpha-base}
spec: {cluster: mpha, type: physical, store: local, pitr: true, verify: false}
"""


def sock_of(d, cluster, name):
    cnf = (d.data_dir / "clusters" / "default" / cluster / name / "my.cnf").read_text()
    return re.search(r"^socket = (.+)$", cnf, re.M).group(1)


def test_pitr_after_a_failover_replays_both_primaries_writes():
    """A failover (hung primary) with binlog archiving on: the promoted replica's logs are
    archived too, and a restore to a time after its first write has the writes of both
    primaries."""
    tmp_path = Path(tempfile.mkdtemp(prefix="dbplane-mpha-"))
    tmp_path.chmod(0o755)
    spec = tmp_path / "mpha.yaml"
    spec.write_text(backup_stores_yaml(tmp_path / "store") + "---\n" + HA_SPEC)
    d = Daemon(tmp_path / "data", tmp_path / "data.log")
    try:
        d.start(spec, timeout=180)
        d.archive = tmp_path / "store" / "default" / "mpha" / "binlog"
        c0 = d.cluster("mpha")
        old, new = c0["primary"], next(i["name"] for i in c0["instances"]
                                       if i["name"] != c0["primary"])
        wait_until(lambda: db_ready_on(sock_of(d, "mpha", old)), timeout=60, what="database app")
        with mdb(d, sock=sock_of(d, "mpha", old)) as c:
            c.execute("CREATE TABLE app.t (id INT PRIMARY KEY, what VARCHAR(8)) ENGINE=InnoDB")
            c.execute("INSERT INTO app.t VALUES (1, 'base')")
        run = json.loads(bk(d, "backup", "mpha", "--backup", "mpha-base", "-o", "json").stdout)
        assert run["status"] == "complete", run
        # Two writes on the old primary; the replica starts a new binlog between them, so
        # its logs overlap the old primary's (the restore must not apply one twice).
        with mdb(d, sock=sock_of(d, "mpha", old)) as c:
            c.execute("INSERT INTO app.t VALUES (2, 'old')")
        with mdb(d, sock=sock_of(d, "mpha", new)) as c:
            wait_until(lambda: c.execute("SELECT COUNT(*) FROM app.t")[0][0] == 2, timeout=30,
                       what="the replica to have the old primary's write")
            c.execute("FLUSH BINARY LOGS")
        with mdb(d, sock=sock_of(d, "mpha", old)) as c:
            c.execute("INSERT INTO app.t VALUES (5, 'old2')")
            seq_a = int(c.execute("SELECT @@gtid_binlog_pos")[0][0].split("-")[2])
            c.execute("FLUSH BINARY LOGS")
        wait_until(lambda: any(x["last_seq"] >= seq_a for x in indexes(d)), timeout=30,
                   what="the old primary's writes in the archive")
        with mdb(d, sock=sock_of(d, "mpha", new)) as c:
            wait_until(lambda: c.execute("SELECT COUNT(*) FROM app.t")[0][0] == 3, timeout=30,
                       what="the replica to have the old primary's writes")
        pid = int((d.data_dir / "clusters" / "default" / "mpha" / old / "data" /
                   "mariadbd.pid").read_text())
        # A hung primary (SIGSTOP) is fenced and replaced. A kill -9 would race the
        # supervisor's restart in 500 ms, which brings a crashed MariaDB back as the
        # primary when crash recovery is quick (no failover then, by design).
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: d.cluster("mpha")["primary"] == new, timeout=60,
                   what="failover to the replica")

        def write_new():
            try:
                with mdb(d, sock=sock_of(d, "mpha", new)) as c:
                    c.execute("INSERT INTO app.t VALUES (3, 'new')")
                    return c.execute("SELECT @@gtid_binlog_pos")[0][0]
            except pymysql.err.MySQLError:
                return None
        pos_b = wait_until(write_new, timeout=30, what="a write on the promoted replica")
        failover_s = time.monotonic() - t_kill
        seq_b = int(pos_b.split(",")[0].split("-")[2])
        # The target: just after the promoted replica's write; a later write in a later
        # whole second (binlog times are seconds) must stay out.
        after = datetime.datetime.now(datetime.timezone.utc)
        time.sleep(1.5)
        with mdb(d, sock=sock_of(d, "mpha", new)) as c:
            c.execute("INSERT INTO app.t VALUES (4, 'later')")
            c.execute("FLUSH BINARY LOGS")
        wait_until(lambda: any(x["last_seq"] > seq_b for x in indexes(d)), timeout=30,
                   what="the promoted replica's logs in the archive")
        target = tmp_path / "restored"
        when = after.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        p = bk(d, "restore", "--backup", "mpha-base", "--to", str(target), "--point-in-time", when)
        # Two replays: the old primary's log, then the replica's from after its last GTID.
        assert p.stderr.count("msg=binlog_replayed ") == 2, p.stderr
        srv = MariadbServer(target, tmp_path)
        try:
            got = rows(srv)
        finally:
            srv.stop()
        assert got == {1: "base", 2: "old", 5: "old2", 3: "new"}, (got, failover_s)
        # The archive holds both servers' logs (server ids 1 and 2).
        assert {x["server_id"] for x in indexes(d) if x["last_seq"]} == {1, 2}, indexes(d)
    finally:
        stop_and_check(d, tmp_path)


def db_ready_on(sock):
    try:
        with mdb(None, sock=sock) as c:
            return bool(c.execute("SHOW DATABASES LIKE 'app'"))
    except (pymysql.err.OperationalError, FileNotFoundError):
        return False
