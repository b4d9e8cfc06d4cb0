"""Switchover through the proxy: `dbplane switchover` pauses the cluster's endpoints
(PgBouncer's PAUSE), stops the old primary cleanly, promotes the caught-up replica, pushes
the new epoch to the proxy and resumes. Writers in transaction pooling see a pause, never
an error, and every acknowledged write is on the new primary afterwards."""
import json
import threading
import time

import psycopg

from conftest import free_port, wait_until



SPEC = """\
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: pg-sw}}
spec:
  engine: postgresql
  version: "15"
  instances: 2
  proxy:
    port: {port}
    roPort: {ro_port}
    pool: {{mode: transaction, size: 8}}
  failover: {{auto: true, interval: 1s, failcount: 3}}
---
apiVersion: dbplane/v1
kind: User
metadata: {{name: app}}
spec: {{cluster: pg-sw, username: app, passwordSecretKeyRef: {{name: app-pw, key: password}}}}
---
apiVersion: dbplane/v1
kind: Database
metadata: {{name: app}}
spec: {{cluster: pg-sw, name: app, owner: app}}
"""

WRITERS = 4


class Writer(threading.Thread):
    """Inserts (writer, n) rows in autocommit through the proxy as fast as it can; records
    every acknowledged n, the completion times and every error."""

    def __init__(self, dsn, idx, stop):
        super().__init__(daemon=True)
        self.dsn, self.idx, self.stop = dsn, idx, stop
        self.acked, self.errors, self.times, self.ports = [], [], [], set()

    def run(self):
        deadline = time.monotonic() + 90
        with psycopg.connect(self.dsn, autocommit=True) as c:
            n = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                n += 1
                try:
                    port = c.execute("INSERT INTO ledger (writer, n) VALUES (%s, %s) "
                                     "RETURNING current_setting('port')::int", (self.idx, n),
                                     prepare=False).fetchone()[0]
                    self.acked.append(n)
                    self.times.append(time.monotonic())
                    self.ports.add(port)
                except psycopg.Error as e:  # the test fails on any
                    self.errors.append(f"{type(e).__name__}: {e}")
                    if c.closed:
                        return


def test_switchover_pauses_writers_without_errors(daemon, tmp_path):
    port, ro_port = free_port(), free_port()
    spec = tmp_path / "sw.yaml"
    spec.write_text(SPEC.format(port=port, ro_port=ro_port))
    d = daemon.start(spec)
    pw = d.secret("app-pw", "password")
    dsn = (f"host=127.0.0.1 port={port} user=app password={pw} dbname=app "
           f"connect_timeout=10")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE ledger (writer int, n int, PRIMARY KEY (writer, n))")
    c0 = d.cluster("pg-sw")
    old_port = next(i["port"] for i in c0["instances"] if i["name"] == c0["primary"])

    stop = threading.Event()
    writers = [Writer(dsn, i, stop) for i in range(WRITERS)]
    for w in writers:
        w.start()
    wait_until(lambda: all(len(w.acked) > 20 for w in writers), timeout=30,
               what="writers to run through the proxy")
    t0 = time.monotonic()
    out = json.loads(d.cli("switchover", "pg-sw", "-o", "json").stdout)
    t1 = time.monotonic()
    # Let the writers run on the new primary for a moment.
    wait_until(lambda: all(not w.is_alive() or (w.times and w.times[-1] > t1 + 0.5)
                           for w in writers), timeout=30,
               what="writers to continue after the switchover")
    stop.set()
    for w in writers:
        w.join(30)

    errors = [e for w in writers for e in w.errors]
    assert not errors, f"client errors during the switchover: {errors[:5]}"
    new_port = next(i["port"] for i in d.cluster("pg-sw")["instances"]
                    if i["name"] == out["new_primary"])
    assert out["epoch"] == c0["epoch"] + 1
    for w in writers:
        assert w.ports == {old_port, new_port}, w.ports
    # The longest time a writer waited for an acknowledgement, around the switchover.
    gap = max(b - a for w in writers for a, b in zip(w.times, w.times[1:])
              if b >= t0 and a <= t1)
    print(f"\nswitchover: paused_ms={out['paused_ms']} fenced_ms={out['fenced_ms']} "
          f"promoted_ms={out['promoted_ms']} total_ms={out['total_ms']} "
          f"max_client_gap_ms={gap * 1000:.0f} acked={sum(len(w.acked) for w in writers)}")
    assert out["paused_ms"] > 0
    assert gap < 3.0, f"writers stalled {gap:.2f}s"  # target 1 s; margin for a loaded CI box
    # Every acknowledged write is on the new primary.
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("SELECT current_setting('port')::int").fetchone()[0] == new_port
        rows = set(c.execute("SELECT writer, n FROM ledger").fetchall())
    for w in writers:
        missing = [n for n in w.acked if (w.idx, n) not in rows]
        assert not missing, f"writer {w.idx} lost acknowledged writes {missing[:5]}"
    st = json.loads(d.cli("proxy", "stats").stdout)
    assert st["clusters"][0]["epoch"] == out["epoch"]
