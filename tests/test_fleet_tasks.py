"""status/extract/diff/backup over several real hosts: per-host JSON results, failures isolated, --fail-fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsagent.inventory import HostConfig
from opsagent.migrate.audit import read_audit

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
    records = {r["host"]: r for r in read_audit(fleet.root / ".opsagent")}  # both ran: both are on record
    assert records["one"]["outcome"] == "applied" and records["one"]["applied"] == ["001", "002"]
    assert records["broken"]["outcome"] == "error" and records["broken"]["action"] == "sync"
    assert "no_such_database_here" in records["broken"]["error"]


def test_fail_fast_serial_skips_the_rest(fleet: Fleet) -> None:
    code, document = fleet.json("status", "--host", "brokenfirst", "--parallel", "1", "--fail-fast")
    hosts = _by_host(document)
    assert code == 1
    assert hosts["broken"]["status"] == "failed"
    assert hosts["one"]["status"] == "skipped"


def _sleeping(handle: SandboxHandle) -> int:
    """How many sessions on ``handle``'s server run the slow migration's sleep right now."""
    return int(
        handle.admin.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' "
            "AND state = 'active' AND pid <> pg_backend_pid()",
            "postgres",
            extra=["-A", "-t"],
        ).text.strip()
    )


@pytest.mark.parametrize("parallel", [2, 1])
def test_ctrl_c_of_a_fleet_sync_stops_each_host_as_a_one_host_run_and_records_it(
    fleet: Fleet, sandbox: SandboxHandle, second: SandboxHandle, parallel: int
) -> None:
    """Ctrl-C reaches every running host's sync: each stops its backend, finds out what committed and leaves its
    audit record; no host starts after it; the summary says where each stands and the exit code is 130."""
    (fleet.root / "sql" / "migrations" / "003_slow.sql").write_text(
        "CREATE TABLE slow (id int);\nSELECT pg_sleep(30);\n"
    )
    env = {**os.environ, "OPSAGENT_INVENTORY": str(fleet.root / "inventory.yaml"), "COLUMNS": "200"}
    argv = ["sync", "--host", "pair", "--yes", "--no-backup", "--no-drift-check", "--parallel", str(parallel)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsagent", *argv, "--json"],
        cwd=fleet.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    expected_sleeping = (sandbox, second) if parallel == 2 else (sandbox,)
    deadline = time.monotonic() + 60
    while not all(_sleeping(h) for h in expected_sleeping) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    hosts = _by_host(json.loads(out))
    assert json.loads(out)["interrupted"] is True
    assert [_sleeping(h) for h in (sandbox, second)] == [0, 0]  # no sleep left running on any server
    records = {r["host"]: r for r in read_audit(fleet.root / ".opsagent")}
    ran = ["one", "two"] if parallel == 2 else ["one"]
    for name in ran:
        assert hosts[name]["status"] == "interrupted" and hosts[name]["exit_code"] == 130, hosts[name]
        ledger = fleet.hosts[name]
        handle = sandbox if name == "one" else second
        applied = handle.admin.psql(
            "SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations", ledger.database, extra=["-At"]
        ).text.strip()
        assert applied == "001,002"  # what committed before the slow one, which was rolled back
        assert records[name]["outcome"] == "interrupted" and records[name]["applied"] == ["001", "002"]
    if parallel == 1:
        assert hosts["two"]["status"] == "skipped" and "interrupted" in hosts["two"]["message"]
        assert "two" not in records  # never started: nothing to record


def test_a_fleet_host_interrupted_before_its_run_is_recorded_as_its_one_host_run_would_be(tmp_path: Path) -> None:
    """Ctrl-C before a host's run began (while it connects): its record says interrupted, nothing applied, and for a
    sync ``applied: []`` as the one-host sync's record does."""
    from opsagent.cli.fleet import NOTHING_APPLIED, _interrupted_host, opening_record
    from opsagent.inventory import load_inventory
    from opsagent.migrate.sync import Identity

    inv = load_inventory(write_inventory(tmp_path, {"one": HostConfig(name="one", address="127.0.0.1")}))
    identity = Identity(applied_by="ops@here", git_commit=None)
    for action, extra in (("sync", {"applied": []}), ("rollback", {})):
        record = opening_record(inv.host("one"), identity, action=action)
        outcome = _interrupted_host(
            inv, inv.host("one"), identity, record, time.monotonic(), KeyboardInterrupt(), extra
        )
        assert (outcome.status, outcome.exit_code, outcome.message) == ("interrupted", 130, NOTHING_APPLIED)
    sync_record, rollback_record = read_audit(inv.paths.state)[-2:]
    assert sync_record["action"] == "sync" and sync_record["outcome"] == "interrupted"
    assert sync_record["applied"] == [] and sync_record["error"] == NOTHING_APPLIED
    assert rollback_record["action"] == "rollback" and "applied" not in rollback_record
