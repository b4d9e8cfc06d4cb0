"""Fixtures for dbplane's integration tests: a real `dbplane up` daemon over a fresh data
dir, real PostgreSQL servers under it, and real clients (psql, psycopg).

Every daemon's stderr goes to a log file; a sanitizer report in it (when the suite runs
against the ASan+UBSan build) fails the test that started the daemon.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("DBPLANE_BIN", str(ROOT / "build" / "dbplane"))
SHARED = ROOT.parent / "shared"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: UndefinedBehaviorSanitizer")


def wait_until(pred, timeout=60.0, interval=0.2, what="condition"):
    """Polls pred() until it returns a truthy value; returns it, or fails the test."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the predicate may race with start-up
            last = e
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def run(args, check=True, timeout=120, **kw):
    """Runs the dbplane CLI; returns the CompletedProcess."""
    p = subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"dbplane {' '.join(args)} exited {p.returncode}\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def sanitizer_report(text):
    return next((m for m in SANITIZER_MARKERS if m in text), None)


class Daemon:
    """A `dbplane up` process over one data dir."""

    def __init__(self, data_dir: Path, log_path: Path):
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc = None

    def cli(self, *args, check=True, timeout=120):
        return run(list(args) + ["--data-dir", str(self.data_dir)], check=check, timeout=timeout)

    def start(self, *spec_files, wait=True, timeout=180):
        args = [BIN, "up", "--data-dir", str(self.data_dir)]
        for f in spec_files:
            args += ["-f", str(f)]
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_until(lambda: self.proc.poll() is not None or self.api_up(), timeout=30,
                   what="the daemon's API")
        assert self.proc.poll() is None, f"dbplane up exited early:\n{self.log_text()}"
        if wait:
            self.wait(timeout)
        return self

    def api_up(self):
        return self.cli("status", "-A", check=False).returncode == 0

    def wait(self, timeout=180):
        p = self.cli("wait", "-A", "--timeout", f"{timeout}s", check=False, timeout=timeout + 30)
        assert p.returncode == 0, f"dbplane wait failed:\n{p.stderr}\n--- daemon log ---\n" \
                                  f"{self.log_text()[-6000:]}"

    def status(self, cluster=None, tenant=None):
        args = ["status", "-o", "json"]
        args += ["--tenant", tenant] if tenant else ["-A"]
        if cluster:
            args.append(cluster)
        return json.loads(self.cli(*args).stdout)

    def cluster(self, name, tenant=None):
        return self.status(name, tenant)["clusters"][0]

    def instance(self, cluster, role):
        c = self.cluster(cluster)
        return next(i for i in c["instances"] if i["role"] == role)

    def events(self):
        return json.loads(self.cli("events", "-A", "-o", "json", "--limit", "10000").stdout)["events"]

    def secret(self, name, key, tenant="default"):
        return self.cli("secret", "get", name, key, "--tenant", tenant).stdout.strip()

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout=120):
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"dbplane up did not stop within {timeout}s")
        self.log.close()
        return rc

    def runtime_dir(self):
        """The daemon's short runtime dir (see common/proc.c dbp_runtime_dir: FNV-1a 64)."""
        h = 1469598103934665603
        for b in os.path.realpath(self.data_dir).encode():
            h ^= b
            h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
        return f"/tmp/dbplane-{h:016x}"

    def admin_sql(self, inst, sql):
        """Runs SQL as dbplane's admin role over the instance's socket (peer auth maps this
        OS user to it), the way an operator with shell access would."""
        p = subprocess.run(["psql", "-h", f"{self.runtime_dir()}/s{inst['port']}", "-p",
                            str(inst["port"]), "-U", "dbplane_admin", "-d", "postgres", "-Atc", sql],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    def server_pid(self, tenant, cluster, instance):
        pidfile = self.data_dir / "clusters" / tenant / cluster / instance / "data" / "postmaster.pid"
        return int(pidfile.read_text().split("\n")[0])


# Files whose daemons listen on the fixed proxy ports of examples/quickstart.yaml
# (15432/15433): under pytest-xdist (the ASan pass runs `-n 2 --dist loadgroup`) they run on
# one worker, one after the other.
QUICKSTART_FILES = {"test_endpoints.py", "test_postgresql.py", "test_validate.py"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Groups each test with the others of its file for `--dist loadgroup` (module-scoped
    daemons are started once per file, and a file's tests run in order on one worker, as
    in a serial run), and the files that use quickstart's fixed ports into one group.
    tryfirst: xdist reads the marks in its own hook of the same name. Without xdist the
    mark does nothing."""
    for item in items:
        name = item.path.name
        group = "quickstart" if name in QUICKSTART_FILES else name
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def workdir():
    """A fresh directory the service user can traverse (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="dbplane-it-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon_factory(workdir):
    daemons = []

    def make(name="data"):
        d = Daemon(workdir / name, workdir / f"{name}.log")
        daemons.append(d)
        return d

    yield make
    failures = []
    for d in daemons:
        rc = d.stop()
        text = d.log_text()
        rep = sanitizer_report(text)
        if rep:
            failures.append(f"sanitizer report ({rep}) in {d.log_path}:\n{text[-8000:]}")
        elif rc not in (0, None):
            failures.append(f"dbplane up exited {rc}:\n{text[-4000:]}")
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory()


def pg_dsn(inst, user, password, dbname):
    return (f"host={inst['host']} port={inst['port']} user={user} password={password} "
            f"dbname={dbname} connect_timeout=5")


S3RVER = shutil.which("s3rver")


def failpoint_sleeping(ms=30000):
    """True while a delay failpoint's `/bin/sleep` of `ms` milliseconds runs (clone or init,
    see jobs.c). Tests that may run at the same time (pytest-xdist workers) use different
    durations, so that one does not see the other's."""
    want = f"/bin/sleep\x00{ms // 1000}.{ms % 1000:03d}\x00".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if open(f"/proc/{entry}/cmdline", "rb").read() == want:
                    return True
            except OSError:
                pass
    return False


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """s3rver on 127.0.0.1 with a temp dir; bucket `bk`; credentials S3RVER/S3RVER."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.proc = None

    def start(self):
        self.root.mkdir(exist_ok=True)
        self.proc = subprocess.Popen([S3RVER, "-d", str(self.root), "-a", "127.0.0.1", "-p",
                                      str(self.port), "--configure-bucket", "bk", "--silent"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_until(up, timeout=30, what="s3rver")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def backup_stores_yaml(store, s3port=None, prefix="it"):
    """YAML documents every backup test starts from: a posix BackupStore `local` at store
    and, when s3port is given, an S3 BackupStore `s3` (bucket bk, the given key prefix) on
    the s3rver at that port with its credentials Secret `s3creds`, plus a generated
    encryption key Secret `backup-key`. Literal text, not a format template."""
    docs = [f"""apiVersion: dbplane/v1
kind: Secret
metadata: {{name: backup-key}}
generate: {{keys: [key]}}
---
apiVersion: dbplane/v1
kind: BackupStore
metadata: {{name: local}}
spec:
  posix: {{path: {store}}}
"""]
    if s3port is not None:
        docs.append(f"""apiVersion: dbplane/v1
kind: Secret
metadata: {{name: s3creds}}
stringData: {{ak: S3RVER, sk: S3RVER}}
---
apiVersion: dbplane/v1
kind: BackupStore
metadata: {{name: s3}}
spec:
  s3:
    endpoint: http://127.0.0.1:{s3port}
    bucket: bk
    prefix: {prefix}
    region: us-east-1
    accessKeyIdSecretKeyRef: {{name: s3creds, key: ak}}
    secretAccessKeySecretKeyRef: {{name: s3creds, key: sk}}
""")
    return "---\n".join(docs)


SCRATCH_PORT_FAILPOINT = {"DBPLANE_FAILPOINT_SCRATCH_PORT_TAKEN": "1"}


def assert_scratch_port_retried(p):
    """Checks that CompletedProcess p (a `dbplane backup --verify` or `dbplane backups
    verify` run with SCRATCH_PORT_FAILPOINT in its environment) lost its first scratch
    port to the failpoint's socket and started the server again on another port (log
    `scratch_port_taken ... attempt=1`, backup/restore.c scratch_start_retry), and that
    it exited 0. Returns the lost port."""
    taken = re.search(r"msg=failpoint name=scratch_port_taken instance=(\S+) port=(\d+) taken=1",
                      p.stderr)
    assert taken, f"the failpoint did not take a port:\n{p.stderr[-4000:]}"
    assert f"msg=scratch_port_taken instance={taken[1]} port={taken[2]} attempt=1" in p.stderr, \
        f"no retry after the lost port:\n{p.stderr[-4000:]}"
    assert p.returncode == 0, f"dbplane exited {p.returncode}:\n{p.stderr[-4000:]}"
    return int(taken[2])


def start_backup_daemon(prefix, spec_name, spec_text, s3prefix, timeout=180):
    """Starts an s3rver and a daemon in a new work directory (named prefix...) on the
    stores of backup_stores_yaml (key prefix s3prefix) plus spec_text, written to
    spec_name. Returns the Daemon, with .work, .s3, .store (the posix store's path) and
    .spec set; on a failed start both are stopped. Stop with stop_and_check(d, d.work,
    d.s3)."""
    if not S3RVER:
        pytest.fail("s3rver is not installed: run scripts/install-deps.sh")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    work.chmod(0o755)
    s3 = S3Server(work / "s3")
    s3.start()
    spec = work / spec_name
    spec.write_text(backup_stores_yaml(work / "store", s3.port, s3prefix) + "---\n" + spec_text)
    d = Daemon(work / "data", work / "data.log")
    d.work, d.s3, d.store, d.spec = work, s3, work / "store", spec
    try:
        d.start(spec, timeout=timeout)
    except BaseException:
        d.stop()
        s3.stop()
        raise
    return d


def stop_and_check(d, work=None, *others):
    """Stops daemon d (then each of others, e.g. an S3Server), removes the work directory,
    and fails the test when d's log holds a sanitizer report or d exited non-zero."""
    rc = d.stop()
    for o in others:
        o.stop()
    text = d.log_text()
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
    rep = sanitizer_report(text)
    if rep:
        pytest.fail(f"sanitizer report ({rep}) in the daemon log:\n{text[-8000:]}")
    if rc not in (0, None):
        pytest.fail(f"dbplane up exited {rc}:\n{text[-4000:]}")


def peak_while_clients_run(count, connect, n):
    """Runs n client threads, each opening connect(i) (a psycopg connection) and running
    3 transactions that hold a server for 0.1 s, while count() (server connections, e.g.
    from pg_stat_activity) is sampled every 20 ms. Returns (peak count, client errors);
    fails when a client did not finish within 60 s. For connection-cap tests."""
    import psycopg

    peak, errors, stop = [0], [], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], count())
            time.sleep(0.02)

    def client(i):
        try:
            with connect(i) as c:
                for _ in range(3):
                    c.execute("BEGIN")
                    c.execute("select pg_sleep(0.1)")
                    c.execute("COMMIT")
        except psycopg.Error as e:
            errors.append(str(e))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ts = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    stop.set()
    sampler.join(10)
    assert not any(t.is_alive() for t in ts), "a client did not finish"
    return peak[0], errors
