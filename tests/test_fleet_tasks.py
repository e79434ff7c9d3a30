"""status/extract/diff/backup over several real hosts: per-host JSON results, failures isolated, --fail-fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsagent.inventory import HostConfig

from .conftest import SandboxHandle, write_inventory

MIGRATIONS = {
    "001_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);\n",
    "002_orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint REFERENCES accounts (id));\n",
}
SCHEMA = "".join(MIGRATIONS.values())


@pytest.fixture(scope="module")
def second(sandbox_factory: Any) -> SandboxHandle:
    """A second real host (its own sshd and cluster) for this module."""
    return sandbox_factory("second")  # type: ignore[no-any-return]


class Fleet:
    """A project whose inventory has hosts one, two (two real hosts), broken (no such database) and groups."""

    def __init__(self, root: Path, hosts: dict[str, HostConfig]) -> None:
        self.root = root
        self.hosts = hosts

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "OPSAGENT_INVENTORY": str(self.root / "inventory.yaml"), "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "opsagent", *args],
            cwd=self.root,
            text=True,
            capture_output=True,
            env=env,
            timeout=300,
            check=False,
            input="",
        )

    def json(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.run(*args, "--json")
        try:
            return done.returncode, json.loads(done.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"no JSON (exit {done.returncode}): {done.stdout}\n{done.stderr}") from None


@pytest.fixture
def fleet(tmp_path: Path, sandbox: SandboxHandle, second: SandboxHandle) -> Iterator[Fleet]:
    root = tmp_path / "proj"
    migrations = root / "sql" / "migrations"
    migrations.mkdir(parents=True)
    for name, sql in MIGRATIONS.items():
        (migrations / name).write_text(sql)
    (root / "sql" / "schema.sql").write_text(SCHEMA)
    one_db, two_db = sandbox.create_database("f1"), second.create_database("f2")
    hosts = {
        "one": sandbox.host_for(one_db, backup_dir=str(Path(sandbox.state.root) / "backups" / one_db)),
        "two": second.host_for(two_db, backup_dir=str(Path(second.state.root) / "backups" / two_db)),
        "broken": sandbox.host_for("no_such_database_here"),
    }
    write_inventory(root, hosts, {"pair": ["one", "two"], "mixed": ["one", "broken"], "brokenfirst": ["broken", "one"]})
    yield Fleet(root, hosts)


def _by_host(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in document["hosts"]}


def test_status_over_group_gives_per_host_results(fleet: Fleet) -> None:
    code, document = fleet.json("status", "--host", "pair")
    assert code == 0 and document["ok"] is True
    hosts = _by_host(document)
    assert set(hosts) == {"one", "two"}
    for result in hosts.values():
        assert result["status"] == "ok"
        assert result["details"]["counts"] == {"pending": 2}


def test_status_comma_list_and_table(fleet: Fleet) -> None:
    done = fleet.run("status", "--host", "one,two")
    assert done.returncode == 0, done.stderr
    assert "status summary" in done.stdout
    assert "one" in done.stdout and "two" in done.stdout


def test_extract_over_group_writes_one_snapshot_per_host(fleet: Fleet) -> None:
    assert fleet.run("sync", "--host", "one", "--yes", "--no-backup").returncode == 0
    code, document = fleet.json("extract", "--host", "pair")
    assert code == 0, document
    hosts = _by_host(document)
    assert hosts["one"]["details"]["stats"]["tables"] == 2  # two tables; the ledger is the tool's, not counted
    assert hosts["two"]["details"]["stats"]["tables"] == 0
    for name in ("one", "two"):
        path = fleet.root / "sql" / "snapshots" / name / "schema.sql"
        assert hosts[name]["details"]["path"] == str(path)
        assert path.is_file()
    assert "CREATE TABLE public.orders" in (fleet.root / "sql" / "snapshots" / "one" / "schema.sql").read_text()


def test_extract_refuses_out_with_several_hosts(fleet: Fleet) -> None:
    done = fleet.run("extract", "--host", "pair", "--out", "x.sql")
    assert done.returncode == 2
    assert "--out" in done.stderr
    assert not (fleet.root / "x.sql").exists()


def test_diff_over_group_exit_3_when_a_host_drifted(fleet: Fleet) -> None:
    assert fleet.run("sync", "--host", "one", "--yes", "--no-backup").returncode == 0
    code, document = fleet.json("diff", "--host", "pair")
    hosts = _by_host(document)
    assert hosts["one"]["status"] == "ok" and hosts["one"]["details"]["drift_count"] == 0
    assert hosts["two"]["status"] == "drift" and hosts["two"]["details"]["drift_count"] >= 2
    assert code == 3


def test_diff_failure_wins_over_drift(fleet: Fleet) -> None:
    code, document = fleet.json("diff", "--host", "one,two,broken")
    hosts = _by_host(document)
    assert hosts["one"]["status"] == "drift" and hosts["two"]["status"] == "drift"
    assert hosts["broken"]["status"] == "failed"
    assert code == 1


def test_backup_over_group_names_each_file(fleet: Fleet, sandbox: SandboxHandle, second: SandboxHandle) -> None:
    code, document = fleet.json("backup", "--host", "pair", "--label", "fleet")
    assert code == 0, document
    hosts = _by_host(document)
    for name, handle in (("one", sandbox), ("two", second)):
        path = hosts[name]["details"]["path"]
        assert path.startswith(fleet.hosts[name].backup_dir)
        assert "fleet" in path
        with handle.remote("postgres") as remote:
            assert remote.run(["test", "-s", path], check=False).exit_status == 0


def test_one_broken_host_fails_run_but_other_host_is_done(fleet: Fleet) -> None:
    code, document = fleet.json("sync", "--host", "mixed", "--yes", "--no-backup")
    hosts = _by_host(document)
    assert code == 1 and document["ok"] is False
    assert hosts["broken"]["status"] == "failed"
    assert hosts["one"]["status"] == "ok"
    code, document = fleet.json("status", "--host", "one")
    assert document["counts"] == {"applied": 2}


def test_fail_fast_serial_skips_the_rest(fleet: Fleet) -> None:
    code, document = fleet.json("status", "--host", "brokenfirst", "--parallel", "1", "--fail-fast")
    hosts = _by_host(document)
    assert code == 1
    assert hosts["broken"]["status"] == "failed"
    assert hosts["one"]["status"] == "skipped"
