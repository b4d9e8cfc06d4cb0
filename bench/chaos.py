#!/usr/bin/env python3
"""Chaos harness for dbplane's HA (issue 6): a writer sends an acknowledged, incrementing
write every 10 ms through the cluster's read-write endpoint (the proxy); a prober checks
every 20 ms how many instances accept writes; each trial kills the primary with SIGKILL,
or hangs it (SIGSTOP of every process of the server) and resumes it after the failover.
Prints write unavailability (median, max), acknowledged writes lost, moments with two
writable primaries, and rejoin success. Loopback only; every loop is bounded.

usage: chaos.py --bin build/dbplane [--trials N] [--interval 1s] [--failcount 3] [--mode async|sync]
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time

import psycopg

SPEC = """\
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: chaos}}
spec:
  engine: postgresql
  version: "15"
  instances: 2
  replication: {{mode: {mode}}}
  proxy: {{port: {port}, pool: {{mode: transaction, size: 10}}}}
  failover: {{auto: true, interval: {interval}, failcount: {failcount}}}
---
apiVersion: dbplane/v1
kind: User
metadata: {{name: app}}
spec: {{cluster: chaos, username: app, passwordSecretKeyRef: {{name: app, key: pw}}}}
---
apiVersion: dbplane/v1
kind: Database
metadata: {{name: app}}
spec: {{cluster: chaos, name: app, owner: app}}
"""


class Harness:
    def __init__(self, a):
        self.a = a
        self.dir = tempfile.mkdtemp(prefix="dbplane-chaos-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.acked = []          # (id, t) of acknowledged writes
        self.fail_times = []     # t of failed writes
        self.max_writable = 0
        self.double_moments = 0
        self.stop = False
        self.lock = threading.Lock()

    def cli(self, *args, check=True):
        p = subprocess.run([self.a.bin] + list(args) + ["--data-dir", self.data],
                           capture_output=True, text=True, timeout=180)
        if check and p.returncode:
            raise RuntimeError(f"dbplane {args}: {p.stderr}")
        return p

    def status(self):
        return json.loads(self.cli("status", "chaos", "-o", "json").stdout)["clusters"][0]

    def start(self):
        spec = os.path.join(self.dir, "chaos.yaml")
        with open(spec, "w") as f:
            f.write(SPEC.format(mode=self.a.mode, port=self.a.port, interval=self.a.interval,
                                failcount=self.a.failcount))
        self.log = open(os.path.join(self.dir, "daemon.log"), "w")
        self.proc = subprocess.Popen([self.a.bin, "up", "-f", spec, "--data-dir", self.data],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(100):
            if self.cli("status", check=False).returncode == 0:
                break
            time.sleep(0.1)
        self.cli("wait", "--timeout", "120s")
        self.pw = self.cli("secret", "get", "app", "pw").stdout.strip()
        with self.connect(self.a.port) as c:
            c.execute("CREATE TABLE w (id bigint PRIMARY KEY, t timestamptz DEFAULT now())")

    def connect(self, port, timeout=2):
        return psycopg.connect(f"host=127.0.0.1 port={port} user=app password={self.pw} "
                               f"dbname=app connect_timeout={timeout}", autocommit=True)

    def writer(self):
        n, conn = 0, None
        deadline = time.monotonic() + 3600
        while not self.stop and time.monotonic() < deadline:
            t = time.monotonic()
            try:
                if conn is None:
                    conn = self.connect(self.a.port)
                conn.execute("INSERT INTO w (id) VALUES (%s)", (n + 1,))
                n += 1
                with self.lock:
                    self.acked.append((n, time.monotonic()))  # when it was acknowledged
            except psycopg.Error:
                with self.lock:
                    self.fail_times.append(t)
                try:
                    if conn:
                        conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
            time.sleep(0.01)

    def prober(self):
        deadline = time.monotonic() + 3600
        while not self.stop and time.monotonic() < deadline:
            try:
                ports = [i["port"] for i in self.status()["instances"]]
            except Exception:  # noqa: BLE001
                time.sleep(0.02)
                continue
            writable = 0
            for p in ports:
                try:
                    with self.connect(p, timeout=1) as c:
                        if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                            writable += 1
                except psycopg.Error:
                    pass
            self.max_writable = max(self.max_writable, writable)
            if writable > 1:
                self.double_moments += 1
            time.sleep(0.02)

    def primary_pid(self):
        st = self.status()
        inst = st["primary"]
        pidfile = os.path.join(self.data, "clusters", "default", "chaos", inst, "data",
                               "postmaster.pid")
        with open(pidfile) as f:
            return int(f.readline())

    @staticmethod
    def tree(pid):
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

    def trial(self, kind):
        epoch0 = self.status()["epoch"]
        pid = self.primary_pid()
        t0 = time.monotonic()
        if kind == "kill9":
            os.kill(pid, signal.SIGKILL)
        else:
            procs = self.tree(pid)
            for p in procs:
                os.kill(p, signal.SIGSTOP)
            # Resume after the failover (or 30 s), like a VM that was paused.
            end = time.monotonic() + 30
            while time.monotonic() < end and self.status()["epoch"] == epoch0:
                time.sleep(0.1)
            for p in procs:
                try:
                    os.kill(p, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        # Unavailability: the longest gap between two consecutive acknowledgements around
        # the fault (a write that hangs is as unavailable as one that fails).
        end = time.monotonic() + 60
        while time.monotonic() < end:
            with self.lock:
                if any(t > t0 for (_, t) in self.acked[-50:]) and \
                        (self.status()["epoch"] != epoch0 or kind == "kill9"):
                    break
            time.sleep(0.1)
        time.sleep(1)
        with self.lock:
            times = [t for (_, t) in self.acked if t0 - 2 <= t <= t0 + 90]
        gaps = [b - a for a, b in zip(times, times[1:])]
        outage = max(gaps) if gaps else float("inf")
        rejoined = self.cli("wait", "--timeout", "90s", check=False).returncode == 0
        st = self.status()
        roles = sorted(i["role"] for i in st["instances"])
        rejoined = rejoined and roles == ["primary", "replica"]
        return {"kind": kind, "outage_s": outage, "failover": st["epoch"] != epoch0,
                "rejoined": rejoined}

    def lost(self):
        with self.connect(self.a.port, timeout=5) as c:
            have = {r[0] for r in c.execute("SELECT id FROM w")}
        with self.lock:
            return sum(1 for (n, _) in self.acked if n not in have)

    def shutdown(self):
        self.stop = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--failcount", type=int, default=3)
    ap.add_argument("--mode", default="async", choices=["async", "sync"])
    ap.add_argument("--kinds", default="kill9,sigstop")
    ap.add_argument("--port", type=int, default=17432)
    a = ap.parse_args()
    h = Harness(a)
    h.start()
    threads = [threading.Thread(target=h.writer, daemon=True),
               threading.Thread(target=h.prober, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(2)
    kinds = a.kinds.split(",")
    results = []
    try:
        for i in range(a.trials):
            r = h.trial(kinds[i % len(kinds)])
            results.append(r)
            print(f"trial {i + 1}: {r['kind']:8s} outage {r['outage_s']:.2f}s "
                  f"failover={r['failover']} rejoined={r['rejoined']}", flush=True)
            time.sleep(2)
        time.sleep(1)
        lost = h.lost()
    finally:
        h.shutdown()
        for t in threads:
            t.join(5)
    for kind in kinds:
        outs = [r["outage_s"] for r in results if r["kind"] == kind]
        if outs:
            print(f"{kind:8s} trials={len(outs)} unavailability median={statistics.median(outs):.2f}s "
                  f"max={max(outs):.2f}s")
    print(f"mode={a.mode} interval={a.interval} failcount={a.failcount} "
          f"acknowledged_writes={len(h.acked)} lost={lost} "
          f"two_writable_moments={h.double_moments} "
          f"rejoin_success={sum(r['rejoined'] for r in results)}/{len(results)}")
    print(f"logs: {h.dir}")


if __name__ == "__main__":
    main()
