"""The spec reaches the proxy: Cluster.spec.proxy.serverTLS turns TLS on in dbplane's own
PostgreSQL servers and the proxy reaches them over it (verify-full against the cluster's
generated certificate), and Database.spec.maxConnections caps the database's server
connections; a reload that turns TLS off and raises the cap drops no client. One
single-instance cluster for all of it."""

import psycopg

from conftest import free_port, peak_while_clients_run, wait_until

SPEC = """\
apiVersion: dbplane/v1
kind: Cluster
metadata: {{name: pg-tls}}
spec:
  engine: postgresql
  version: "15"
  instances: 1
  proxy:
    port: {port}
    roPort: {ro_port}
    serverTLS: {mode}
    pool: {{mode: transaction, size: 8}}
---
apiVersion: dbplane/v1
kind: User
metadata: {{name: app}}
spec: {{cluster: pg-tls, username: app, passwordSecretKeyRef: {{name: app-pw, key: password}}}}
---
apiVersion: dbplane/v1
kind: Database
metadata: {{name: app}}
spec: {{cluster: pg-tls, name: app, owner: app, maxConnections: {cap}}}
"""


def test_server_tls_and_database_cap_from_the_spec(daemon, tmp_path):
    port, ro_port = free_port(), free_port()
    spec = tmp_path / "tls.yaml"
    spec.write_text(SPEC.format(port=port, ro_port=ro_port, mode="verify-full", cap=2))
    d = daemon.start(spec)
    inst = d.instance("pg-tls", "primary")
    pw = d.secret("app-pw", "password")
    dsn = f"host=127.0.0.1 port={port} user=app password={pw} dbname=app connect_timeout=10"
    admin = psycopg.connect(f"host={d.runtime_dir()}/s{inst['port']} port={inst['port']} "
                            "user=dbplane_admin dbname=postgres", autocommit=True)

    def app_servers():
        return admin.execute("select s.ssl from pg_stat_activity a join pg_stat_ssl s "
                             "using (pid) where a.datname = 'app' "
                             "and a.backend_type = 'client backend'").fetchall()

    peak, errors = peak_while_clients_run(lambda: len(app_servers()),
                                          lambda i: psycopg.connect(dsn, autocommit=True), 5)
    assert not errors, errors
    assert peak == 2, f"{peak} server connections to a database capped at 2"

    # The proxy's server connections are TLS (pg_stat_ssl), and plaintext TCP is refused.
    rows = app_servers()
    assert rows and all(r[0] is True for r in rows), rows
    try:
        psycopg.connect(f"host=127.0.0.1 port={inst['port']} user=app password={pw} "
                        "dbname=app sslmode=disable connect_timeout=5").close()
        raise AssertionError("a plaintext TCP login to the server succeeded")
    except psycopg.OperationalError as e:
        assert "no encryption" in str(e), e

    # A reload (serverTLS off, a higher cap) drops no client: the held one goes on, on a
    # plaintext server connection from its next transaction on.
    held = psycopg.connect(dsn, autocommit=True)
    ssl_q = "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
    assert held.execute(ssl_q).fetchone()[0] is True
    spec.write_text(SPEC.format(port=port, ro_port=ro_port, mode="disable", cap=3))
    d.cli("apply", "-f", str(spec))
    wait_until(lambda: held.execute(ssl_q).fetchone()[0] is False, timeout=30, interval=0.05,
               what="plaintext server connections after serverTLS: disable")
    held.close()
    admin.close()
