#!/usr/bin/env python3
"""Chaos harness for dbplane's HA (issue 6), and the same trials against a Redis Sentinel +
HAProxy setup as the anchor.

A writer sends an acknowledged, incrementing write every 10 ms through the cluster's
read-write endpoint; a prober checks every 20 ms how many servers accept writes; each
trial kills the primary with SIGKILL, or hangs it (SIGSTOP of every process of the
server) and resumes it after the failover. Prints write unavailability (median, max),
acknowledged writes lost, moments with two writable primaries, and rejoin success.
Loopback only; every loop is bounded in count and time.

Endpoints:
- postgresql: dbplane's proxy (transaction pooling), as applications use it.
- mariadb, redis: dbplane has no proxy for them yet, so the writer does what a client
  library following dbplane's topology would do: it connects to the instance that
  `dbplane status` names primary (endpoints.rw, read from the store's topology at the
  current epoch) and, on any error, reads the status again and reconnects.
- redis-sentinel (the anchor, no dbplane): 2 redis-server (no persistence), 3
  redis-sentinel (quorum 2, down-after-milliseconds 1000), HAProxy with a `tcp-check` for
  role:master in front; the writer goes through HAProxy. A killed server is restarted
  after 1 s with its own configuration, as a pod restart or a process supervisor would.

Writability (prober, direct connections to every server): PostgreSQL
`pg_is_in_recovery()` is false; MariaDB `@@read_only = 0`; Redis a real write
(`SET chaos:probe`) is accepted (a replica answers READONLY).

usage: chaos.py --engine postgresql|mariadb|redis|redis-sentinel --bin build/dbplane
                [--trials N] [--interval 1s] [--failcount 3] [--mode async|sync]
                [--kinds kill9,sigstop]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time

CLUSTER = """\
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: chaos}}
spec:
  engine: {engine}
  version: "{version}"
  instances: 2
  replication: {{mode: {mode}}}
{extra}  failover: {{auto: true, interval: {interval}, failcount: {failcount}}}
---
apiVersion: dbplane/v1
kind: User
metadata: {{name: app}}
spec: {{cluster: chaos, username: app, passwordSecretKeyRef: {{name: app, key: pw}}}}
"""
DATABASE = """\
---
apiVersion: dbplane/v1
kind: Database
metadata: {name: app}
spec: {cluster: chaos, name: app, owner: app}
"""
MARIADB_EXTRA = """\
---
apiVersion: dbplane/v1
kind: Database
metadata: {name: app}
spec: {cluster: chaos, name: app}
---
apiVersion: dbplane/v1
kind: Grant
metadata: {name: app}
spec: {cluster: chaos, username: app, database: app, privileges: [ALL PRIVILEGES]}
"""


def listener_pid(port):
    """pid of the process listening on 127.0.0.1:port (ss -ltnp), or None."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                         text=True, timeout=10).stdout
    for part in out.split("pid=")[1:]:
        return int(part.split(",")[0])
    return None


def tree(pid):
    """pid and its direct children (a PostgreSQL postmaster and its backends)."""
    kids = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                st = open(f"/proc/{e}/stat").read()
            except OSError:
                continue
            if int(st.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(e))
    return [pid] + kids


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- engines: how to write, read back and probe ---------------------------------------

class Pg:
    version, extra_docs = "15", DATABASE

    def __init__(self, h):
        import psycopg
        self.m, self.h, self.Error = psycopg, h, psycopg.Error

    def extra(self, a):
        return f"  proxy: {{port: {a.port}, pool: {{mode: transaction, size: 10}}}}\n"

    def connect(self, hostport, timeout=2):
        host, port = hostport.rsplit(":", 1)
        return self.m.connect(f"host={host} port={port} user=app password={self.h.pw} "
                              f"dbname=app connect_timeout={timeout}", autocommit=True)

    def setup(self, c):
        c.execute("CREATE TABLE w (id bigint PRIMARY KEY, t timestamptz DEFAULT now())")

    def write(self, c, n):
        c.execute("INSERT INTO w (id) VALUES (%s)", (n,))

    def ids(self, c):
        return {r[0] for r in c.execute("SELECT id FROM w")}

    def is_dup(self, e):
        return isinstance(e, self.m.errors.UniqueViolation)

    def writable(self, hostport):
        with self.connect(hostport, timeout=1) as c:
            return not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]

    def close(self, c):
        c.close()


class MariaDB:
    version, extra_docs = "10.11", MARIADB_EXTRA

    def __init__(self, h):
        import pymysql
        self.m, self.h, self.Error = pymysql, h, (pymysql.Error, OSError)

    def extra(self, a):
        return "  memory: 128Mi\n  config: {innodb_log_file_size: 16M}\n"

    def connect(self, hostport, timeout=2):
        host, port = hostport.rsplit(":", 1)
        return self.m.connect(host=host, port=int(port), user="app", password=self.h.pw,
                              database="app", autocommit=True, connect_timeout=timeout,
                              read_timeout=2, write_timeout=2)

    def setup(self, c):
        with c.cursor() as cur:
            cur.execute("CREATE TABLE w (id bigint PRIMARY KEY, t timestamp DEFAULT now())")

    def write(self, c, n):
        with c.cursor() as cur:
            cur.execute("INSERT INTO w (id) VALUES (%s)", (n,))

    def ids(self, c):
        with c.cursor() as cur:
            cur.execute("SELECT id FROM w")
            return {r[0] for r in cur.fetchall()}

    def is_dup(self, e):
        return isinstance(e, self.m.err.IntegrityError) and e.args and e.args[0] == 1062

    def writable(self, hostport):
        c = self.connect(hostport, timeout=1)
        try:
            with c.cursor() as cur:
                cur.execute("SELECT @@read_only")
                return int(cur.fetchone()[0]) == 0
        finally:
            c.close()

    def close(self, c):
        c.close()


class Redis:
    version, extra_docs = "7", ""

    def __init__(self, h, user="app"):
        import redis
        self.m, self.h, self.user = redis, h, user
        self.Error = (redis.RedisError, OSError)

    def extra(self, a):
        # The class the Sentinel setup had: no persistence, a restart is empty.
        return f"  memory: 128Mi\n  redis: {{class: {a.redis_class}}}\n"

    def connect(self, hostport, timeout=2):
        host, port = hostport.rsplit(":", 1)
        c = self.m.Redis(host=host, port=int(port), username=self.user, password=self.h.pw,
                         socket_connect_timeout=timeout, socket_timeout=2)
        c.ping()
        return c

    def setup(self, c):
        c.delete("w")

    def write(self, c, n):
        c.sadd("w", n)

    def ids(self, c):
        return {int(x) for x in c.smembers("w")}

    def is_dup(self, e):
        return False  # SADD is idempotent

    def writable(self, hostport):
        c = self.connect(hostport, timeout=1)
        try:
            c.set("chaos:probe", "1")
            return True
        except self.m.exceptions.ResponseError:  # READONLY, NOREPLICAS
            return False
        finally:
            c.close()

    def close(self, c):
        c.close()


# ---- the system under test: dbplane, or Sentinel + HAProxy ------------------------------

class Dbplane:
    def __init__(self, a, h, eng):
        self.a, self.h, self.eng = a, h, eng
        self.data = os.path.join(h.dir, "data")
        self._st, self._st_t = None, 0

    def cli(self, *args, check=True):
        p = subprocess.run([self.a.bin] + list(args) + ["--data-dir", self.data],
                           capture_output=True, text=True, timeout=180)
        if check and p.returncode:
            raise RuntimeError(f"dbplane {args}: {p.stderr}")
        return p

    def status(self):
        st = json.loads(self.cli("status", "chaos", "-o", "json").stdout)["clusters"][0]
        self._st, self._st_t = st, time.monotonic()
        return st

    def start(self):
        spec = os.path.join(self.h.dir, "chaos.yaml")
        with open(spec, "w") as f:
            f.write(CLUSTER.format(engine=self.a.engine, version=self.eng.version,
                                   mode=self.a.mode, extra=self.eng.extra(self.a),
                                   interval=self.a.interval, failcount=self.a.failcount))
            f.write(self.eng.extra_docs)
        self.log = open(os.path.join(self.h.dir, "daemon.log"), "w")
        self.proc = subprocess.Popen([self.a.bin, "up", "-f", spec, "--data-dir", self.data],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(100):
            if self.cli("status", check=False).returncode == 0:
                break
            time.sleep(0.1)
        self.cli("wait", "--timeout", "180s")
        self.h.pw = self.cli("secret", "get", "app", "pw").stdout.strip()

    def rw(self):
        """The write endpoint: the proxy (PostgreSQL), else the topology's primary."""
        return self.status()["endpoints"]["rw"]

    def servers(self):
        """host:port of every instance (status re-read at most every 0.5 s)."""
        st = self._st if self._st and time.monotonic() - self._st_t < 0.5 else self.status()
        return [f"{i['host']}:{i['port']}" for i in st["instances"]]

    def epoch(self):
        return self.status()["epoch"]

    def primary_pid(self):
        st = self.status()
        inst = next(i for i in st["instances"] if i["name"] == st["primary"])
        return listener_pid(inst["port"])

    def restart(self, pid):
        pass  # dbplane's supervisor restarts (or the reconciler rejoins) on its own

    def settled(self):
        """Waits for the cluster to be ready again; True when one primary + one streaming
        replica."""
        if self.cli("wait", "--timeout", "90s", check=False).returncode != 0:
            return False
        # Ready can be reported while a rejoined replica still starts (its role is the
        # topology's): wait until both run and the primary sees the replica stream
        # (lag_bytes >= 0), so the next trial never starts without a candidate.
        end = time.monotonic() + 90
        while time.monotonic() < end:
            insts = self.status()["instances"]
            if sorted(i["role"] for i in insts) == ["primary", "replica"] and \
                    all(i["state"] == "running" for i in insts) and \
                    all(i["lag_bytes"] >= 0 for i in insts if i["role"] == "replica"):
                return True
            time.sleep(0.5)
        return False

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Sentinel:
    """Redis Sentinel (quorum 2, down-after-milliseconds 1000, 3 sentinels) + HAProxy
    (tcp-check role:master), all on loopback, started from this harness."""

    def __init__(self, a, h, eng):
        self.a, self.h, self.eng = a, h, eng
        self.procs = {}
        self.ports = [free_port(), free_port()]
        self.sports = [free_port() for _ in range(3)]
        self.hport = a.port

    def _redis_conf(self, i):
        d = os.path.join(self.h.dir, f"redis{i}")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "redis.conf")
        with open(conf, "w") as f:
            f.write(f"port {self.ports[i]}\nbind 127.0.0.1\ndir {d}\nsave \"\"\n"
                    f"appendonly no\nprotected-mode no\nlogfile {d}/redis.log\n"
                    f"user default on nopass ~* &* +@all\n")
            if i == 1:
                f.write(f"replicaof 127.0.0.1 {self.ports[0]}\n")
        return conf

    def _start_redis(self, i):
        self.procs[f"r{i}"] = subprocess.Popen(["redis-server", self.confs[i]],
                                               stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)

    def start(self):
        for tool in ("redis-server", "redis-sentinel", "haproxy"):
            if not shutil.which(tool):
                raise SystemExit(f"chaos.py: {tool} is missing; run scripts/install-deps.sh "
                                 "(redis-sentinel and haproxy are bench-only packages)")
        self.h.pw = None
        self.confs = [self._redis_conf(i) for i in range(2)]
        for i in range(2):
            self._start_redis(i)
        time.sleep(0.5)
        for k, sp in enumerate(self.sports):
            d = os.path.join(self.h.dir, f"sentinel{k}")
            os.makedirs(d, exist_ok=True)
            conf = os.path.join(d, "sentinel.conf")
            with open(conf, "w") as f:
                f.write(f"port {sp}\nbind 127.0.0.1\ndir {d}\nlogfile {d}/sentinel.log\n"
                        f"sentinel monitor chaos 127.0.0.1 {self.ports[0]} 2\n"
                        "sentinel down-after-milliseconds chaos 1000\n"
                        "sentinel failover-timeout chaos 10000\n"
                        "sentinel parallel-syncs chaos 1\n")
            self.procs[f"s{k}"] = subprocess.Popen(["redis-sentinel", conf],
                                                   stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)
        # The HAProxy configuration of the platform: a role:master check.
        hcfg = os.path.join(self.h.dir, "haproxy.cfg")
        servers = "".join(
            f"    server r{i} 127.0.0.1:{p} check inter 1s fall 1 rise 1 on-marked-down "
            "shutdown-sessions\n" for i, p in enumerate(self.ports))
        with open(hcfg, "w") as f:
            f.write("global\n    maxconn 1000\ndefaults\n    mode tcp\n"
                    "    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n"
                    f"frontend redis\n    bind 127.0.0.1:{self.hport}\n"
                    "    default_backend masters\n"
                    "backend masters\n    option tcp-check\n"
                    "    tcp-check send PING\\r\\n\n    tcp-check expect string +PONG\n"
                    "    tcp-check send info\\ replication\\r\\n\n"
                    "    tcp-check expect string role:master\n"
                    "    tcp-check send QUIT\\r\\n\n    tcp-check expect string +OK\n"
                    + servers)
        self.procs["haproxy"] = subprocess.Popen(["haproxy", "-f", hcfg, "-db"],
                                                 stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL)
        time.sleep(3)

    def rw(self):
        return f"127.0.0.1:{self.hport}"

    def servers(self):
        return [f"127.0.0.1:{p}" for p in self.ports]

    def master_port(self):
        for sp in self.sports:
            try:
                c = self.eng.m.Redis(port=sp, socket_timeout=1)
                host, port = c.sentinel_get_master_addr_by_name("chaos")
                return int(port)
            except Exception:  # noqa: BLE001
                continue
        return None

    def epoch(self):
        return self.master_port()

    def primary_pid(self):
        return listener_pid(self.master_port())

    def restart(self, pid):
        """After a kill -9: the server comes back with its own configuration 1 s later,
        as a restarted pod (or a process supervisor) brings it back."""
        for i in range(2):
            p = self.procs[f"r{i}"]
            if p.pid == pid:
                p.wait(10)
                time.sleep(1)
                self._start_redis(i)

    def settled(self):
        """True when within 60 s exactly one server is master and the other a replica with
        its link up."""
        end = time.monotonic() + 60
        while time.monotonic() < end:
            roles = []
            for p in self.ports:
                try:
                    info = self.eng.m.Redis(port=p, socket_timeout=1).info("replication")
                    roles.append((info["role"], info.get("master_link_status")))
                except Exception:  # noqa: BLE001
                    roles.append(("down", None))
            if sorted(r for r, _ in roles) == ["master", "slave"] and \
                    all(link == "up" for r, link in roles if r == "slave"):
                return True
            time.sleep(0.5)
        return False

    def stop(self):
        for p in self.procs.values():
            try:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                p.wait(10)
            except Exception:  # noqa: BLE001
                p.kill()


# ---- the trials ---------------------------------------------------------------------------

class Harness:
    def __init__(self, a):
        self.a = a
        self.dir = tempfile.mkdtemp(prefix="dbplane-chaos-")
        os.chmod(self.dir, 0o755)
        self.pw = None
        self.t_start = time.monotonic()
        self.acked = []          # (id, t) of acknowledged writes
        self.double_moments = 0  # prober rounds that found more than one writable server
        self.double_s = 0.0      # seconds those findings lasted (until the next round)
        self.last_writable = 0
        self.stop = False
        self.lock = threading.Lock()
        kind = {"postgresql": Pg, "mariadb": MariaDB, "redis": Redis,
                "redis-sentinel": Redis}[a.engine]
        self.eng = kind(self) if a.engine != "redis-sentinel" else Redis(self, user="default")
        self.sut = (Sentinel if a.engine == "redis-sentinel" else Dbplane)(a, self, self.eng)

    def start(self):
        self.sut.start()
        c = self.eng.connect(self.sut.rw(), timeout=5)
        try:
            self.eng.setup(c)
        finally:
            self.eng.close(c)

    def writer(self):
        n, conn = 0, None
        deadline = time.monotonic() + 3600
        while not self.stop and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = self.eng.connect(self.sut.rw())
                self.eng.write(conn, n + 1)
                n += 1
                with self.lock:
                    self.acked.append((n, time.monotonic()))  # when it was acknowledged
            except Exception as e:  # noqa: BLE001 - any failure: reconnect via the topology
                if self.eng.is_dup(e):
                    # Committed earlier but never acknowledged (the connection died after
                    # the commit): not an acknowledged write; go on with the next id.
                    n += 1
                    continue
                try:
                    if conn is not None:
                        self.eng.close(conn)
                except Exception:  # noqa: BLE001
                    pass
                conn = None
            time.sleep(0.01)

    def prober(self):
        deadline = time.monotonic() + 3600
        last = None
        while not self.stop and time.monotonic() < deadline:
            now = time.monotonic()
            if last is not None and self.last_writable > 1:
                self.double_s += now - last  # the previous round's finding lasted until now
            last = now
            try:
                servers = self.sut.servers()
            except Exception:  # noqa: BLE001
                time.sleep(0.02)
                continue
            writable = 0
            for hp in servers:
                try:
                    writable += 1 if self.eng.writable(hp) else 0
                except Exception:  # noqa: BLE001
                    pass
            self.last_writable = writable
            if writable > 1:
                self.double_moments += 1
            time.sleep(0.02)

    def trial(self, kind):
        epoch0 = self.sut.epoch()
        pid = self.sut.primary_pid()
        t0 = time.monotonic()
        if kind == "kill9":
            # The server dies with all its processes (PostgreSQL backends are children of
            # the postmaster in their own sessions: a SIGKILL of the postmaster alone leaves
            # backends that keep committing for a while).
            for p in tree(pid):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.sut.restart(pid)
        else:
            procs = tree(pid)
            for p in procs:
                try:
                    os.kill(p, signal.SIGSTOP)
                except ProcessLookupError:  # a backend that exited since tree() listed it
                    pass
            # Resume after the failover (or 30 s), like a VM that was paused.
            end = time.monotonic() + 30
            while time.monotonic() < end and self.sut.epoch() == epoch0:
                time.sleep(0.1)
            for p in procs:
                try:
                    os.kill(p, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        # Unavailability: the longest gap between two consecutive acknowledgements from
        # the last one before the fault until writes flow again after the cluster settled
        # (a write that hangs is as unavailable as one that fails).
        # Give the system time to notice the fault before asking whether it settled.
        time.sleep(3)
        rejoined = self.sut.settled()
        end = time.monotonic() + 60
        while time.monotonic() < end:
            with self.lock:
                now = time.monotonic()
                if sum(1 for (_, t) in self.acked[-50:] if t > max(t0 + 0.2, now - 1)) >= 10:
                    break
            time.sleep(0.1)
        with self.lock:
            before = [t for (_, t) in self.acked if t <= t0]
            times = before[-1:] + [t for (_, t) in self.acked if t0 < t <= t0 + 90]
        # From the last acknowledgement before the fault through every one after it.
        gaps = [b - a for a, b in zip(times, times[1:])]
        outage = max(gaps) if gaps else float("inf")
        return {"kind": kind, "outage_s": outage, "failover": self.sut.epoch() != epoch0,
                "rejoined": rejoined}

    def lost(self):
        end = time.monotonic() + 30
        while True:
            try:
                c = self.eng.connect(self.sut.rw(), timeout=5)
                try:
                    have = self.eng.ids(c)
                finally:
                    self.eng.close(c)
                break
            except Exception:  # noqa: BLE001
                if time.monotonic() > end:
                    raise
                time.sleep(0.5)
        with self.lock:
            missing = [(n, t) for (n, t) in self.acked if n not in have]
        for n, t in missing[:10]:
            print(f"lost: id {n} acknowledged at t={t - self.t_start:.2f}s", flush=True)
        return len(missing)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default="postgresql",
                    choices=["postgresql", "mariadb", "redis", "redis-sentinel"])
    ap.add_argument("--bin", default=None)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--failcount", type=int, default=3)
    ap.add_argument("--mode", default="async", choices=["async", "sync"])
    ap.add_argument("--kinds", default="kill9,sigstop")
    ap.add_argument("--redis-class", default="cache", choices=["cache", "session", "queue"])
    ap.add_argument("--port", type=int, default=17432)
    a = ap.parse_args()
    if a.engine != "redis-sentinel" and not a.bin:
        ap.error("--bin is required")
    h = Harness(a)
    h.start()
    threads = [threading.Thread(target=h.writer, daemon=True),
               threading.Thread(target=h.prober, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(2)
    kinds = a.kinds.split(",")
    results = []
    lost = None
    try:
        for i in range(a.trials):
            if not h.sut.settled():
                print(f"trial {i + 1}: the cluster did not settle before the fault", flush=True)
            print(f"trial {i + 1}: {kinds[i % len(kinds)]} at t={time.monotonic() - h.t_start:.2f}s",
                  flush=True)
            r = h.trial(kinds[i % len(kinds)])
            results.append(r)
            print(f"trial {i + 1}: {r['kind']:8s} outage {r['outage_s']:.2f}s "
                  f"failover={r['failover']} rejoined={r['rejoined']}", flush=True)
            time.sleep(2)
        time.sleep(1)
        h.stop = True  # the writer stops before the final read, or its last ids look lost
        for t in threads:
            t.join(5)
        lost = h.lost()
    finally:
        h.stop = True
        for t in threads:
            t.join(5)
        h.sut.stop()
    print(f"engine={a.engine} mode={a.mode} interval={a.interval} failcount={a.failcount}")
    print(f"{'fault':8s} {'trials':>6s} {'median_s':>8s} {'max_s':>6s}")
    for kind in kinds:
        outs = [r["outage_s"] for r in results if r["kind"] == kind]
        if outs:
            print(f"{kind:8s} {len(outs):6d} {statistics.median(outs):8.2f} {max(outs):6.2f}")
    print(f"acknowledged_writes={len(h.acked)} lost={lost} "
          f"two_writable_moments={h.double_moments} two_writable_s={h.double_s:.1f} "
          f"rejoin_success={sum(r['rejoined'] for r in results)}/{len(results)}")
    print(f"logs: {h.dir}")


if __name__ == "__main__":
    main()
