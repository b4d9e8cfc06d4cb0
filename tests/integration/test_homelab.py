"""`dbplane up` on the homelab example: one shared PostgreSQL cluster, seven apps, each
isolated in its own database."""
import psycopg
import pytest

from conftest import ROOT, pg_dsn

APPS = ["trading", "health", "linkwarden", "affine", "woodpecker", "claude_memory", "tripit"]


def test_homelab_apps_are_isolated(daemon):
    d = daemon.start(ROOT / "examples" / "homelab.yaml")
    primary = d.instance("pg-cluster", "primary")
    for i, app in enumerate(APPS):
        pw = d.secret("app-passwords", app)
        assert len(pw) == 24
        with psycopg.connect(pg_dsn(primary, app, pw, app), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t (v int)")
            assert conn.execute("SELECT current_user").fetchone()[0] == app
        other = APPS[(i + 1) % len(APPS)]
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(pg_dsn(primary, app, pw, other))
