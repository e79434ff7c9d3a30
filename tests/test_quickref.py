"""Quick-reference tasks through the real CLI: tables, describe, psql -c."""

from __future__ import annotations

import json

from opsagent.remote.quickref import interactive_ssh_argv
from opsagent.units import human_bytes

from .conftest import Project


def test_tables_describe_and_psql_c(project: Project) -> None:
    project.psql(
        "CREATE TABLE trades (id bigint PRIMARY KEY, price numeric(18,8) NOT NULL);"
        "CREATE INDEX idx_trades_price ON trades(price);"
        "INSERT INTO trades SELECT g, g FROM generate_series(1, 5000) g; ANALYZE trades;"
    )
    listed = project.run("tables", "--host", "sandbox", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["tables"]
    assert [(r["name"], r["rows_estimate"]) for r in rows] == [("trades", 5000)]
    assert rows[0]["total_bytes"] > rows[0]["table_bytes"] > 0

    described = project.run("describe", "trades", "--host", "sandbox")
    assert described.returncode == 0, described.stderr
    assert "numeric(18,8)" in described.stdout and "idx_trades_price" in described.stdout

    missing = project.run("describe", "nope", "--host", "sandbox")
    assert missing.returncode == 2 and "no table named 'nope'" in missing.stderr

    counted = project.run("psql", "--host", "sandbox", "-c", "SELECT count(*) AS n FROM trades")
    assert counted.returncode == 0 and "5000" in counted.stdout

    broken = project.run("psql", "--host", "sandbox", "-c", "SELECT * FROM nope")
    assert broken.returncode == 1 and 'relation "nope" does not exist' in broken.stderr
    assert "Traceback" not in broken.stderr

    no_tty = project.run("psql", "--host", "sandbox")
    assert no_tty.returncode == 2 and "needs a terminal" in no_tty.stderr


def test_interactive_ssh_argv_verifies_host_keys(project: Project) -> None:
    argv = interactive_ssh_argv(project.host, ["sudo", "-n", "-u", "postgres", "psql", "-d", 'we"ird db'])
    assert argv[:2] == ["ssh", "-t"]
    assert "StrictHostKeyChecking=yes" in argv
    assert argv[-1] == "sudo -n -u postgres psql -d 'we\"ird db'"
    assert human_bytes(2048) == "2.0 kB" and human_bytes(10) == "10 B"
