"""`dbplane validate` and `dbplane up` on good and bad specs (no servers needed)."""
import re

import pytest

from conftest import ROOT, SHARED, run


@pytest.mark.parametrize("name", ["homelab.yaml", "wecare.yaml", "restore.yaml"])
def test_spec_reference_files_validate(name):
    p = run(["validate", "-f", str(SHARED / "spec-reference" / name)])
    assert "resources valid" in p.stdout


@pytest.mark.parametrize("name", ["quickstart.yaml", "homelab.yaml", "wecare.yaml", "redis.yaml"])
def test_examples_validate(name):
    p = run(["validate", "-f", str(ROOT / "examples" / name)])
    assert "resources valid" in p.stdout


def test_malformed_spec_names_file_line_col_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: dbplane/v1\n"
        "kind: Cluster\n"
        "metadata: {name: pg}\n"
        "spec:\n"
        "  engine: postgresql\n"
        "  instancez: 2\n"            # line 6: unknown field
        "  memory: 512MB\n"           # line 7: bad quantity
        "---\n"
        "apiVersion: dbplane/v1\n"
        "kind: Grant\n"
        "metadata: {name: g}\n"
        "spec: {cluster: pg, username: nobody, database: nodb, privileges: [SELECT]}\n")
    p = run(["validate", "-f", str(bad)], check=False)
    assert p.returncode == 1
    err = p.stderr
    assert re.search(rf"{re.escape(str(bad))}:6:3: error: .*instancez", err), err
    assert "instances" in err  # the hint names the right field
    assert re.search(rf"{re.escape(str(bad))}:7:11: error: .*memory", err), err
    assert "nobody" in err  # dangling user reference


def test_malformed_server_tls_and_db_cap_name_file_line_col_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: dbplane/v1\n"
        "kind: Cluster\n"
        "metadata: {name: pg}\n"
        "spec:\n"
        "  engine: postgresql\n"
        "  proxy:\n"
        "    port: 16001\n"
        "    serverTLS: verify-ca\n"      # line 8: not an sslmode dbplane supports
        "---\n"
        "apiVersion: dbplane/v1\n"
        "kind: Cluster\n"
        "metadata: {name: cache}\n"
        "spec: {engine: redis, proxy: {serverTLS: require}}\n"   # line 13: not PostgreSQL
        "---\n"
        "apiVersion: dbplane/v1\n"
        "kind: Database\n"
        "metadata: {name: app}\n"
        "spec: {cluster: pg, name: app, maxConnections: lots}\n")  # line 18
    p = run(["validate", "-f", str(bad)], check=False)
    assert p.returncode == 1
    err = p.stderr
    f = re.escape(str(bad))
    assert re.search(rf"{f}:8:16: error: Cluster/pg: spec.proxy.serverTLS: .*verify-ca", err), err
    assert "disable, prefer, require, verify-full" in err  # the hint lists the modes
    assert re.search(rf"{f}:13:42: error: Cluster/cache: spec.proxy.serverTLS: .*postgresql",
                     err), err
    assert re.search(rf"{f}:18:48: error: Database/app: spec.maxConnections: .*integer", err), err


def test_up_with_bad_spec_changes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: x}\n"
                   "spec: {engine: oracle}\n")
    data = tmp_path / "data"
    p = run(["up", "-f", str(bad), "--data-dir", str(data)], check=False, timeout=30)
    assert p.returncode == 1
    assert f"{bad}:4:" in p.stderr and "engine" in p.stderr
    assert not data.exists(), "a rejected spec must not create the data dir"


def test_cli_without_daemon_says_how_to_start_one(tmp_path):
    p = run(["status", "--data-dir", str(tmp_path)], check=False)
    assert p.returncode == 1
    assert "dbplane up" in p.stderr
