"""`dbplane up` with Redis clusters of each class: real redis-server 7 primaries and
replicas with ACL users, eviction by class, AOF durability across kill -9, and config
errors reported instead of crash loops. Clients are redis-py; no password ever goes on a
command line (redis-cli -a would put it in argv)."""
import os
import signal
import time

import pytest
import redis

from conftest import ROOT, wait_until

CLUSTERS = ROOT / "tests" / "integration" / "redis" / "clusters.yaml"
MAXMEMORY = 8 * 1024 * 1024  # rcache and rqueue
# A refused AUTH: redis-py 4.3 raises ResponseError for WRONGPASS, later ones
# AuthenticationError.
WRONGPASS = (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)


@pytest.fixture
def rd(daemon):
    return daemon.start(CLUSTERS)


def app_password(d):
    return d.secret("redis-app", "app")


def connect(d, cluster, role="primary", user="app", password=None, **kw):
    """A redis-py client to one instance of `cluster` over TCP."""
    inst = d.instance(cluster, role)
    if user == "app" and password is None:
        password = app_password(d)
    return redis.Redis(host=inst["host"], port=inst["port"], username=user, password=password,
                       socket_timeout=10, **kw)


def admin(d, cluster, role="primary"):
    return connect(d, cluster, role, user="dbplane-admin",
                   password=d.secret(f"dbplane-internal-{cluster}", "admin"))


def server_pid(d, cluster, role="primary"):
    return connect(d, cluster, role).info("server")["process_id"]


def instance_dir(d, cluster, name):
    return d.data_dir / "clusters" / "default" / cluster / name


def test_writes_replicate_and_replica_refuses_writes(rd):
    c = rd.cluster("rsession")
    assert c["engine"] == "redis" and c["primary"] == "rsession-0"
    assert sorted(i["role"] for i in c["instances"]) == ["primary", "replica"]
    p = connect(rd, "rsession")
    assert p.info("replication")["role"] == "master"
    p.set("order:1", "book")
    p.rpush("jobs", "a", "b", "c")
    # The application user reaches the replica too: its ACL is copied from the primary.
    r = wait_until(lambda: connect(rd, "rsession", "replica"), timeout=30,
                   what="the app user on the replica")
    wait_until(lambda: r.get("order:1") == b"book", timeout=30, what="the key on the replica")
    assert r.lrange("jobs", 0, -1) == [b"a", b"b", b"c"]
    assert r.info("replication")["master_link_status"] == "up"
    with pytest.raises(redis.exceptions.ReadOnlyError):
        r.set("order:2", "pen")
    # The primary's view of its replica is reported by instance name.
    rep = wait_until(lambda: (lambda i: i if i["lag_bytes"] is not None and i["lag_bytes"] >= 0
                              else None)(rd.instance("rsession", "replica")),
                     timeout=30, what="replica lag in status")
    assert rep["name"] == "rsession-1"


def test_acl_user_works_and_everything_else_is_refused(rd):
    pw = app_password(rd)
    c = connect(rd, "rcache")
    assert c.ping() and c.set("k", "v") and c.get("k") == b"v"
    assert c.info("server")["redis_version"].startswith("7.")  # client libraries need INFO
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.config_get("maxmemory")
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.flushall()
    with pytest.raises(WRONGPASS, match="WRONGPASS"):
        connect(rd, "rcache", password="wrong-" + pw).ping()
    # No open Redis: the default user is off, so an unauthenticated client can do nothing.
    inst = rd.instance("rcache", "primary")
    anon = redis.Redis(host=inst["host"], port=inst["port"], socket_timeout=10)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anon.get("k")
    with pytest.raises(WRONGPASS, match="WRONGPASS"):
        redis.Redis(host=inst["host"], port=inst["port"], username="default", password="x",
                    socket_timeout=10).ping()
    # The replication user may not read data.
    with pytest.raises(redis.exceptions.NoPermissionError):
        connect(rd, "rcache", user="dbplane-repl",
                password=rd.secret("dbplane-internal-rcache", "replication")).get("k")
    # No plaintext password in the files dbplane writes or in the servers' argv.
    secrets = [pw, rd.secret("dbplane-internal-rsession", "admin"),
               rd.secret("dbplane-internal-rsession", "replication")]
    for name in ("rsession-0", "rsession-1"):
        data = instance_dir(rd, "rsession", name) / "data"
        for f in ("redis.conf", "users.acl"):
            text = (data / f).read_text()
            assert not any(s in text for s in secrets), f"plaintext secret in {f}"
        assert (data / "users.acl").stat().st_mode & 0o077 == 0
        assert "user default off" in (data / "users.acl").read_text()
    for name in ("rsession", "rcache"):
        pid = server_pid(rd, name)
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        assert not any(s in cmdline for s in secrets)


def fill(client, prefix, n, size, ttl=None, batch=500):
    """Writes up to n keys of `size` bytes in pipelined batches; returns how many were
    written before the server refused with OOM (bounded by n)."""
    value = b"x" * size
    written = 0
    for start in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + batch)):
            pipe.set(f"{prefix}:{i}", value, ex=ttl)
        try:
            pipe.execute()
        except redis.exceptions.ResponseError as e:
            if not str(e).startswith("OOM"):
                raise
            return written
        written = min(n, start + batch)
    return written


def test_cache_class_evicts_any_key_under_memory_pressure(rd):
    c = connect(rd, "rcache")
    assert admin(rd, "rcache").config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
    n = 24000  # 24 MiB of 1 KiB values into 8 MiB
    assert fill(c, "page", n, 1024) == n, "a cache must never refuse writes"
    mem = c.info("memory")
    assert mem["maxmemory"] == MAXMEMORY
    assert mem["used_memory"] <= MAXMEMORY * 1.1
    assert c.info("stats")["evicted_keys"] > 0
    assert 0 < c.dbsize() < n


def test_queue_class_evicts_only_keys_with_a_ttl(rd):
    c = connect(rd, "rqueue")
    a = admin(rd, "rqueue")
    assert a.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-lru"
    assert a.config_get("appendonly")["appendonly"] == "yes"
    # 40 job queues without a TTL (about 1 MiB), then cache entries with a TTL far past
    # maxmemory: only the latter may go.
    for q in range(40):
        c.rpush(f"bull:queue{q}:wait", *[f"job-{q}-{j}-" + "p" * 200 for j in range(100)])
    n = 24000
    fill(c, "cache", n, 1024, ttl=3600)
    evicted = c.info("stats")["evicted_keys"]
    assert evicted > 0
    for q in range(40):
        assert c.llen(f"bull:queue{q}:wait") == 100, f"queue {q} lost jobs"
        assert c.ttl(f"bull:queue{q}:wait") == -1
    # With nothing evictable left, writes are refused rather than jobs dropped.
    for q in range(40, 400):
        try:
            c.rpush(f"bull:queue{q}:wait", *["j" * 1024] * 64)
        except redis.exceptions.ResponseError as e:  # redis-py 4.3 has no OutOfMemoryError
            assert str(e).startswith("OOM"), e
            break
    else:
        pytest.fail("the queue cluster never refused a write at maxmemory")
    assert all(c.llen(f"bull:queue{q}:wait") == 100 for q in range(40))


def restarted(d, cluster, old_pid):
    def check():
        try:
            pid = server_pid(d, cluster)
        except redis.exceptions.RedisError:
            return None
        return pid if pid != old_pid else None
    return check


def test_session_class_keeps_data_across_kill_9(rd):
    c = connect(rd, "rsession")
    pipe = c.pipeline(transaction=False)
    for i in range(1000):
        pipe.set(f"session:{i}", f"user-{i}")
    pipe.execute()
    c.rpush("queue", *range(100))
    pid = server_pid(rd, "rsession")
    os.kill(pid, signal.SIGKILL)
    new = wait_until(restarted(rd, "rsession", pid), timeout=60,
                     what="the supervisor to restart the primary")
    assert new != pid
    c = connect(rd, "rsession")
    wait_until(lambda: c.info("persistence")["loading"] == 0, timeout=30, what="AOF loaded")
    assert c.dbsize() == 1001
    assert c.get("session:999") == b"user-999" and c.llen("queue") == 100
    rd.wait(120)  # the replica follows the restarted primary again
    r = connect(rd, "rsession", "replica")
    wait_until(lambda: r.get("session:999") == b"user-999", timeout=30,
               what="the replica to resync")


def test_cache_class_restarts_empty_and_fast(rd):
    c = connect(rd, "rcache")
    fill(c, "page", 2000, 512)
    assert c.dbsize() == 2000
    pid = server_pid(rd, "rcache")
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_until(restarted(rd, "rcache", pid), timeout=30, what="the cache to restart")
    assert time.monotonic() - t0 < 15
    assert connect(rd, "rcache").dbsize() == 0
    data = instance_dir(rd, "rcache", "rcache-0") / "data"
    assert not (data / "dump.rdb").exists() and not (data / "appendonlydir").exists()


def test_config_change_is_applied_to_the_running_server(rd):
    pid = server_pid(rd, "rcache")
    spec = CLUSTERS.read_text().replace("maxmemory: 8Mi", "maxmemory: 12Mi", 1)
    spec = spec.replace("class: cache          # allkeys-lru, no RDB, no AOF",
                        "class: cache\n    maxmemoryPolicy: allkeys-lfu", 1)
    f = rd.data_dir.parent / "changed.yaml"
    f.write_text(spec)
    rd.cli("apply", "-f", str(f))
    a = admin(rd, "rcache")
    wait_until(lambda: a.config_get("maxmemory")["maxmemory"] == str(12 * 1024 * 1024),
               timeout=30, what="the new maxmemory")
    assert a.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lfu"
    assert server_pid(rd, "rcache") == pid, "applied without a restart"
    conf = (instance_dir(rd, "rcache", "rcache-0") / "data" / "redis.conf").read_text()
    assert "maxmemory-policy allkeys-lfu" in conf


def test_unknown_directive_is_an_error_not_a_crash_loop(daemon, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: rbad}\n"
                    "spec:\n  engine: redis\n  version: \"7\"\n  instances: 1\n"
                    "  memory: 16Mi\n  redis: {class: cache}\n"
                    "  config:\n    maxmemory-samples: 5\n    no-such-directive: on\n")
    d = daemon.start(spec, wait=False)
    c = wait_until(lambda: (lambda c: c if c["state"] == "failed" else None)(d.cluster("rbad")),
                   timeout=30, what="the cluster to fail")
    assert "no-such-directive" in c["message"] and "no directive" in c["message"]
    assert all(i["state"] != "running" for i in c["instances"])
    data = d.data_dir / "clusters" / "default" / "rbad" / "rbad-0"
    assert not (data / "server.log").exists() or "Bad directive" not in (
        data / "server.log").read_text()
