"""Apps reach clusters through dbplane's proxy endpoints, and the read-write endpoint
follows the topology: after a switchover, new transactions land on the new primary."""
import json
import time

import psycopg

from conftest import ROOT, wait_until

QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def dsn(port, pw, db="shop", user="shop"):
    return (f"host=127.0.0.1 port={port} user={user} password={pw} dbname={db} "
            f"connect_timeout=5")


def test_proxy_endpoints_follow_the_primary(daemon):
    d = daemon.start(QUICKSTART)
    c = d.cluster("pg-main")
    assert c["endpoints"] == {"rw": "127.0.0.1:15432", "ro": "127.0.0.1:15433"}
    pw = d.secret("app-credentials", "shop")
    with psycopg.connect(dsn(15432, pw), autocommit=True) as rw:
        rw.execute("CREATE TABLE hits (n int)")
        rw.execute("INSERT INTO hits VALUES (1)")
        assert rw.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
    with psycopg.connect(dsn(15433, pw), autocommit=True) as ro:
        assert ro.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        wait_until(lambda: ro.execute("SELECT count(*) FROM hits").fetchone()[0] == 1, timeout=30,
                   what="the row through the read-only endpoint")
    # A wrong password is refused by the proxy itself.
    try:
        psycopg.connect(dsn(15432, "wrong"))
        raise AssertionError("login with a wrong password succeeded")
    except psycopg.OperationalError as e:
        assert "password authentication failed" in str(e)

    stats = json.loads(d.cli("proxy", "stats").stdout)
    assert stats["counters"]["logins_ok"] >= 2

    # Switchover: the same endpoint now writes to the other server.
    out = json.loads(d.cli("switchover", "pg-main", "-o", "json").stdout)
    new = out["new_primary"]
    t0 = time.monotonic()

    def lands_on_new_primary():
        with psycopg.connect(dsn(15432, pw), autocommit=True) as rw:
            rw.execute("INSERT INTO hits VALUES (2)")
            port = rw.execute("SELECT current_setting('port')").fetchone()[0]
            return port == str(next(i["port"] for i in d.cluster("pg-main")["instances"]
                                    if i["name"] == new))
    wait_until(lands_on_new_primary, timeout=10, interval=0.1, what="writes on the new primary")
    assert time.monotonic() - t0 < 5
