"""inv sync / status / baseline / repair / new against a real sshd + PostgreSQL sandbox.

Unit tests cover the pure parts (script line mapping, ledger SQL); the rest runs the
real CLI or the library over a real SSH connection: nothing on the remote path is mocked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from opsagent.errors import MigrationError
from opsagent.migrate.audit import append_audit, read_audit
from opsagent.migrate.files import load_migration
from opsagent.migrate.ledger import EXTRA_COLUMNS, Ledger
from opsagent.migrate.sync import Identity, SyncEvent, SyncOptions, _psql_error, _Script, check_timeout, sync
from opsagent.remote.transport import Remote, open_remote

from .conftest import Project, SandboxHandle

IDENTITY = Identity(applied_by="tester@test", git_commit=None)

FIVE = {
    "001_create_a.sql": "CREATE TABLE a (id int PRIMARY KEY);\n",
    "002_create_b.sql": "-- b refers to a\nCREATE TABLE b (\n  id int PRIMARY KEY,\n  a_id int REFERENCES a (id)\n);\n",
    "003_broken.sql": "CREATE TABLE c (id int);\n\nALTER TABLE c\n  ADD COLUMN x int,\n  ADD COLUMN y no_such_type;\n",
    "004_create_d.sql": "CREATE TABLE d (id int);\n",
    "005_index_d.sql": "CREATE INDEX d_id ON d (id);\n",
}


def write_all(project: Project, files: dict[str, str]) -> None:
    for name, sql in files.items():
        project.write_migration(name, sql)


def ledger_rows(project: Project) -> list[str]:
    text = project.psql("SELECT version FROM schema_migrations ORDER BY version")
    return text.split()


def tables(project: Project) -> set[str]:
    return set(project.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").split())


def run_json(project: Project, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    proc = project.run(*args, "--json")
    return proc, json.loads(proc.stdout)


# ---------------------------------------------------------------- unit


@pytest.mark.parametrize(
    ("stderr", "expected_line"),
    [
        ("psql:<stdin>:14: ERROR:  type \"no_such_type\" does not exist\nLINE 3:   ADD COLUMN y no_such_type\n", 5),
        ("psql:<stdin>:14: ERROR:  relation \"c\" already exists\n", 3),
    ],
)
def test_psql_error_maps_script_line_to_file_line(tmp_path: Path, stderr: str, expected_line: int) -> None:
    path = tmp_path / "003_broken.sql"
    path.write_text(FIVE["003_broken.sql"])
    migration, _ = load_migration(path)
    script = _Script(first_line=10)
    script.add("BEGIN;")  # line 10
    for statement in migration.body_statements:
        script.statement(migration, statement)  # 11-12, 13-16
    message, location = _psql_error(stderr, script)
    assert location == f"{path}:{expected_line}"
    assert message.startswith(("type", "relation"))


def test_ledger_sql_creates_adopts_or_leaves_alone() -> None:
    ledger = Ledger("ops")
    created = ledger.ensure_sql([])
    assert 'CREATE SCHEMA IF NOT EXISTS "ops"' in created and "PRIMARY KEY" in created
    adopted = ledger.ensure_sql(["version", "description", "applied_at"])
    assert "CREATE TABLE" not in adopted and all(name in adopted for name, _ in EXTRA_COLUMNS)
    assert ledger.ensure_sql(["version", "description", "applied_at", *(n for n, _ in EXTRA_COLUMNS)]) == ""
    assert Ledger("a").lock_key != Ledger("b").lock_key


@pytest.mark.parametrize(
    ("value", "ok"),
    [("10s", True), ("500ms", True), ("0", True), ("1min", True), ("10s'; DROP TABLE x; --", False), ("soon", False)],
)
def test_timeouts_are_checked_before_they_reach_sql(value: str, ok: bool) -> None:
    if ok:
        assert check_timeout(value, "--x") == value
    else:
        with pytest.raises(Exception, match="--x"):
            check_timeout(value, "--x")


def test_audit_log_appends_json_lines(tmp_path: Path) -> None:
    append_audit(tmp_path, {"action": "sync", "outcome": "applied"})
    append_audit(tmp_path, {"action": "sync", "outcome": "failed"})
    records = read_audit(tmp_path)
    assert [r["outcome"] for r in records] == ["applied", "failed"]
    assert "@" in str(records[0]["who"]) and records[0]["time"]


# ---------------------------------------------------------------- CLI against the sandbox


def test_apply_failure_continue_idempotent_status_and_audit(project: Project) -> None:
    write_all(project, FIVE)
    failed, doc = run_json(project, "sync", "--host", "sandbox", "--yes", "--no-backup")
    assert failed.returncode == 1, failed.stderr
    steps = {s["version"]: s for s in doc["steps"]}  # type: ignore[union-attr]
    assert [steps[v]["status"] for v in ("001", "002", "003", "004", "005")] == [
        "applied",
        "applied",
        "failed",
        "untouched",
        "untouched",
    ]
    broken = project.migrations / "003_broken.sql"
    assert steps["003"]["location"] == f"{broken}:5"
    assert f"{broken}:5" in failed.stderr and 'type "no_such_type" does not exist' in failed.stderr
    assert ledger_rows(project) == ["001", "002"]
    assert tables(project) == {"a", "b", "schema_migrations"}  # c rolled back with its migration

    project.write_migration("003_broken.sql", FIVE["003_broken.sql"].replace("no_such_type", "text"))
    rerun = project.run("sync", "--host", "sandbox", "--force", "--no-backup")
    assert rerun.returncode == 0, rerun.stderr
    assert "✔ 003 broken" in rerun.stdout and "✔ 005 index d" in rerun.stdout
    assert re.search(r"✔ 003 broken \(\d+ ms, 1/3\)", rerun.stdout) and re.search(
        r"✔ 005 index d \(\d+ ms, 3/3\)", rerun.stdout
    )  # N/M
    assert "001" not in rerun.stdout.split("pending migrations")[1].split("✔")[0]  # only 003..005 planned
    assert ledger_rows(project) == ["001", "002", "003", "004", "005"]

    again = project.run("sync", "--host", "sandbox", "--yes")
    assert again.returncode == 0 and "nothing to apply" in again.stdout
    assert not (Path(project.host.backup_dir).exists() and any(Path(project.host.backup_dir).iterdir()))  # no backup

    status, doc = run_json(project, "status", "--host", "sandbox")
    assert status.returncode == 0
    versions = doc["versions"]
    assert [v["state"] for v in versions] == ["applied"] * 5  # type: ignore[index, union-attr]
    assert all(v["applied_by"] and v["execution_ms"] is not None for v in versions)  # type: ignore[union-attr, index]
    history = project.run("history", "--host", "sandbox")
    assert history.returncode == 0 and "index d" in history.stdout

    audit = read_audit(project.root / ".opsagent")
    assert [r["outcome"] for r in audit] == ["failed", "applied", "nothing_to_do"]
    assert audit[1]["versions"] == ["003", "004", "005"] and audit[1]["database"] == project.host.database


def test_refusals_checksum_missing_out_of_order_and_repair(project: Project) -> None:
    write_all(project, {"001_a.sql": "CREATE TABLE a (id int);\n", "003_c.sql": "CREATE TABLE c (id int);\n"})
    assert project.run("sync", "--host", "sandbox", "--yes", "--no-backup").returncode == 0

    project.write_migration("002_b.sql", "CREATE TABLE b (id int);\n")
    out_of_order = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert out_of_order.returncode == 1 and "out-of-order" in out_of_order.stderr
    no_yes = project.run("sync", "--host", "sandbox", "--allow-out-of-order")
    assert no_yes.returncode == 2 and "--yes" in no_yes.stderr
    allowed = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--allow-out-of-order")
    assert allowed.returncode == 0, allowed.stderr
    assert ledger_rows(project) == ["001", "002", "003"]

    project.write_migration("001_a.sql", "CREATE TABLE a (id int);  -- edited\n")
    (project.migrations / "002_b.sql").unlink()
    project.write_migration("004_d.sql", "CREATE TABLE d (id int);\n")
    refused = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert refused.returncode == 1
    assert "checksum mismatch" in refused.stderr and "file is missing" in refused.stderr
    assert "d" not in tables(project)
    _, doc = run_json(project, "status", "--host", "sandbox")
    states = {v["version"]: v["state"] for v in doc["versions"]}  # type: ignore[union-attr, index]
    assert states == {"001": "checksum_mismatch", "002": "missing_file", "003": "applied", "004": "pending"}

    repaired = project.run("repair", "--host", "sandbox", "--yes")
    assert repaired.returncode == 0, repaired.stderr
    assert "updated checksum of 001" in repaired.stdout and "deleted ledger row 002" in repaired.stdout
    assert ledger_rows(project) == ["001", "003"]
    final = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--target", "004")
    assert final.returncode == 0 and "d" in tables(project)


def test_no_transaction_concurrently_applies_and_transactional_one_is_refused(project: Project) -> None:
    write_all(
        project,
        {
            "001_t.sql": "CREATE TABLE t (id int);\n",
            "002_idx.sql": "-- opsagent:no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n",
        },
    )
    ok = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert ok.returncode == 0, ok.stderr
    assert project.psql("SELECT indexname FROM pg_indexes WHERE tablename = 't'").split() == ["t_id"]
    project.write_migration("003_bad.sql", "CREATE TABLE u (id int);\nCREATE INDEX CONCURRENTLY u_id ON u (id);\n")
    refused = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert refused.returncode == 2  # a file to fix: usage error (issue 12 §5)
    assert "003_bad.sql:2" in refused.stderr and "CREATE INDEX CONCURRENTLY" in refused.stderr
    assert "u" not in tables(project) and ledger_rows(project) == ["001", "002"]


def test_a_no_transaction_file_that_fails_partway_is_recorded_as_failed_until_repaired(project: Project) -> None:
    write_all(
        project,
        {
            "001_t.sql": "CREATE TABLE t (id int);\n",
            "002_two.sql": (
                "-- opsagent:no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n"
                "CREATE INDEX CONCURRENTLY t_oops ON t (nope);\n"
            ),
        },
    )
    failed = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert failed.returncode == 1 and "002_two.sql:3" in failed.stderr and "failed partway" in failed.stderr
    assert project.psql("SELECT indexname FROM pg_indexes WHERE tablename = 't'").split() == [
        "t_id"
    ]  # the first stayed
    assert project.psql("SELECT version || ':' || success FROM schema_migrations ORDER BY 1").split() == [
        "001:true",
        "002:false",
    ]
    states = {v["version"]: v["state"] for v in run_json(project, "status", "--host", "sandbox")[1]["versions"]}
    assert states == {"001": "applied", "002": "failed"}
    refused = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert (
        refused.returncode == 1 and "002_two.sql: failed partway" in refused.stderr and "inv repair" in refused.stderr
    )
    project.write_migration(
        "002_two.sql",
        "-- opsagent:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS t_id;\n"
        "CREATE INDEX CONCURRENTLY t_id ON t (id);\n",
    )
    repaired = project.run("repair", "--host", "sandbox", "--yes")
    assert repaired.returncode == 0 and "deleted ledger row 002" in repaired.stdout, repaired.stdout + repaired.stderr
    again = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert again.returncode == 0, again.stderr
    assert project.psql("SELECT version || ':' || success FROM schema_migrations ORDER BY 1").split() == [
        "001:true",
        "002:true",
    ]


def test_sync_takes_backup_and_new_creates_next_file(project: Project) -> None:
    write_all(project, {"001_a.sql": "CREATE TABLE a (id int);\n", "002_b.sql": "CREATE TABLE b (id int);\n"})
    proc, doc = run_json(project, "sync", "--host", "sandbox", "--yes")
    assert proc.returncode == 0, proc.stderr
    backup = doc["backup"]
    assert isinstance(backup, dict) and "pre-001..002" in str(backup["name"]) and backup["verified"]
    assert (
        doc["remote_commands"] == 2
    )  # the psql session and the backup, whatever the number of migrations (no lock wait: no watch)
    created = project.run("new", "add paper trading mode")
    assert created.returncode == 0
    path = project.root / created.stdout.strip()
    assert path.name == "003_add_paper_trading_mode.sql" and path.exists()


# ---------------------------------------------------------------- dry run


def schema_dump(remote: Remote) -> str:
    argv = ["pg_dump", "-s", *remote.pg_args(), "-d", remote.host.database]
    # \restrict lines carry a random key per dump (recent pg_dump point releases)
    return "\n".join(
        line for line in remote.run(argv).text.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def set_host_keys(project: Project, **values: object) -> None:
    """Inventory keys of the project's host (e.g. lock_retry_for="0")."""
    import yaml

    path = project.root / "inventory.yaml"
    document = yaml.safe_load(path.read_text())
    document["hosts"]["sandbox"].update(values)
    path.write_text(yaml.safe_dump(document))


def test_dry_run_rehearses_on_target_and_changes_nothing(project: Project, sandbox: SandboxHandle) -> None:
    set_host_keys(
        project, lock_retry_for="0"
    )  # no lock retries: the locked file is reported, the others still rehearsed
    write_all(project, {"001_base.sql": "CREATE TABLE base (id int);\n"})
    assert project.run("sync", "--host", "sandbox", "--yes", "--no-backup").returncode == 0
    write_all(
        project,
        {
            "002_t.sql": "CREATE TABLE t (id int);\n",
            "003_uses_t.sql": "ALTER TABLE t ADD COLUMN name text;\n",  # needs 002's table: cumulative rehearsal
            "004_fails.sql": "-- broken on purpose\nALTER TABLE t\n  ADD COLUMN z no_such_type;\n",
            "005_after.sql": "CREATE INDEX t_name ON t (name);\n",  # still rehearsed after 004 failed
            "006_conc.sql": "-- opsagent:no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n",
            "007_locked.sql": "ALTER TABLE base ADD COLUMN x int;\n",
        },
    )
    with open_remote(project.host) as remote:
        before = schema_dump(remote), remote.psql("SELECT * FROM schema_migrations", extra=["-A"]).text
        holder = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        holder.write(
            "SET application_name = 'lock-holder-test';\nBEGIN;\nLOCK TABLE base IN ACCESS SHARE MODE;\n\\echo locked\n"
        )
        assert holder.read_line(30) == "locked"
        try:
            proc = project.run("sync", "--host", "sandbox", "--dry-run")
        finally:
            holder.close_stdin()
            holder.wait(10)
        after = schema_dump(remote), remote.psql("SELECT * FROM schema_migrations", extra=["-A"]).text
        leftovers = remote.psql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
            extra=["-A", "-t"],
        ).text.strip()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())
    assert "002 t: would apply in" in out and "003 uses t: would apply in" in out and "005 after: would apply in" in out
    assert (
        f"004 fails: would fail: type \"no_such_type\" does not exist at {project.migrations / '004_fails.sql'}:3"
        in out
    )
    assert "006 conc: not rehearsed (runs outside a transaction)" in out
    assert "007 locked: not rehearsed: timed out" in out and "lock-holder-test" in out
    assert "CREATE TABLE t" in out  # the plan shows each file's SQL
    assert before == after, "the dry run changed the schema or the ledger"
    assert leftovers == "0"
    assert ledger_rows(project) == ["001"]
    plan_only = project.run("sync", "--host", "sandbox", "--dry-run", "--no-rehearse")
    assert (
        plan_only.returncode == 0 and "would apply in" not in plan_only.stdout and "004_fails.sql" in plan_only.stdout
    )


# ---------------------------------------------------------------- lock, adoption, dropped connection


def test_two_concurrent_syncs_apply_each_migration_once(project: Project) -> None:
    files = {f"{i:03d}_m{i}.sql": f"CREATE TABLE m{i} (id int);\n" for i in range(1, 6)}
    files["002_m2.sql"] = "CREATE TABLE m2 (id int);\nSELECT pg_sleep(1);\n"
    write_all(project, files)
    env = {**os.environ, "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml")}
    argv = [sys.executable, "-m", "opsagent", "sync", "--host", "sandbox", "--yes", "--no-backup", "--json"]
    procs = [
        subprocess.Popen(argv, cwd=project.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(r["outcome"] for r in results) == ["applied", "nothing_to_do"]
    assert project.psql("SELECT count(*), count(DISTINCT version) FROM schema_migrations").strip() == "5|5"


def test_lock_timeout_names_the_holder(project: Project) -> None:
    write_all(project, {"001_a.sql": "CREATE TABLE a (id int);\n"})
    cls, obj = Ledger("public").lock_key
    with open_remote(project.host) as remote:
        holder = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        holder.write(f"SET application_name = 'other-applier';\nSELECT pg_advisory_lock({cls}, {obj});\n\\echo held\n")
        assert holder.read_line(30) == ""  # pg_advisory_lock's void result
        assert holder.read_line(30) == "held"
        try:
            refused = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--lock-timeout", "1")
            proc = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--advisory-lock-wait", "1")
        finally:
            holder.close_stdin()
            holder.wait(10)
    assert refused.returncode == 2 and "--advisory-lock-wait" in refused.stderr, refused.stderr
    assert proc.returncode == 1
    assert "holds the migration lock" in proc.stderr and "other-applier" in proc.stderr and "pid " in proc.stderr
    assert "a" not in tables(project)


def test_seed_style_ledger_is_adopted(project: Project) -> None:
    project.psql(
        "CREATE TABLE schema_migrations (version varchar(50) PRIMARY KEY, description text, "
        "applied_at timestamp DEFAULT now());\nCREATE TABLE a (id int);\n"
        "INSERT INTO schema_migrations (version, description) VALUES ('001', 'create a');"
    )
    write_all(project, {"001_create_a.sql": "CREATE TABLE a (id int);\n", "002_b.sql": "CREATE TABLE b (id int);\n"})
    _, doc = run_json(project, "status", "--host", "sandbox")
    assert [v["state"] for v in doc["versions"]] == ["applied", "pending"]  # type: ignore[union-attr, index]
    proc, doc = run_json(project, "sync", "--host", "sandbox", "--yes", "--no-backup")
    assert proc.returncode == 0, proc.stderr
    assert doc["applied"] == ["002"] and doc["adopted_ledger"] is True
    rows = project.psql("SELECT version, description, checksum IS NULL FROM schema_migrations ORDER BY 1").splitlines()
    assert rows == ["001|create a|t", "002|b|f"]


def _sshd_children(sandbox: SandboxHandle) -> set[int]:
    listener = (Path(sandbox.state.ssh_dir) / "sshd.pid").read_text().strip()
    found = subprocess.run(["pgrep", "-P", listener], capture_output=True, text=True, check=False).stdout.split()
    return {int(pid) for pid in found}


def test_dropped_ssh_connection_leaves_no_half_applied_migration(project: Project, sandbox: SandboxHandle) -> None:
    write_all(
        project,
        {
            "001_a.sql": "CREATE TABLE a (id int);\n",
            "002_slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(3);\n",
            "003_c.sql": "CREATE TABLE c (id int);\n",
        },
    )
    before = _sshd_children(sandbox)
    events: list[SyncEvent] = []
    with open_remote(project.host) as remote:
        ours = _sshd_children(sandbox) - before
        assert len(ours) == 1

        def on_event(event: SyncEvent) -> None:
            events.append(event)
            if event.kind == "begin" and event.step is not None and event.step.version == "002":
                threading.Timer(1.0, os.kill, (next(iter(ours)), signal.SIGKILL)).start()

        result = sync(remote, project.migrations, SyncOptions(backup=False), IDENTITY, on_event=on_event)
    assert result.outcome == "lost" and "connection was lost" in str(result.error)
    applied = set(ledger_rows(project))
    # reconnected, stopped our backend and read the ledger: the report is what committed, not a guess
    assert {s.version for s in result.steps if s.status == "applied"} == applied
    assert ("slow" in tables(project)) == ("002" in applied)  # migration and ledger row: both or neither
    with open_remote(project.host) as remote:
        rerun = sync(remote, project.migrations, SyncOptions(backup=False), IDENTITY)
    assert rerun.outcome == "applied" and ledger_rows(project) == ["001", "002", "003"]
    assert {"a", "slow", "c"} <= tables(project)


def test_baseline_records_without_running_and_refuses_later_rows(project: Project) -> None:
    write_all(project, {f"00{i}_m{i}.sql": f"CREATE TABLE m{i} (id int);\n" for i in range(1, 4)})
    proc = project.run("baseline", "--host", "sandbox", "--version", "2")
    assert proc.returncode == 0, proc.stderr
    assert "recorded 001" in proc.stdout and "recorded 002" in proc.stdout
    assert ledger_rows(project) == ["001", "002"] and "m1" not in tables(project)
    checksums = project.psql("SELECT checksum FROM schema_migrations WHERE version = '001'").strip()
    assert checksums == load_migration(project.migrations / "001_m1.sql")[0].checksum
    assert project.run("sync", "--host", "sandbox", "--yes", "--no-backup").returncode == 0
    assert ledger_rows(project) == ["001", "002", "003"] and "m3" in tables(project) and "m1" not in tables(project)
    again = project.run("baseline", "--host", "sandbox", "--version", "1")
    assert again.returncode == 1 and "later versions" in again.stderr


def test_library_refuses_transactional_concurrently_before_any_change(remote: Remote, tmp_path: Path) -> None:
    """Only pending files are parsed, so the refusal comes after the (read-only) ledger read,
    before anything is written."""
    (tmp_path / "001_bad.sql").write_text("CREATE INDEX CONCURRENTLY x ON y (z);\n")
    before = remote.command_count
    with pytest.raises(MigrationError, match=r"001_bad\.sql:1"):
        sync(remote, tmp_path, SyncOptions(), IDENTITY)
    assert remote.command_count == before + 1  # the session that read the ledger; no blocker watch, no backup
    assert remote.psql("SELECT to_regclass('public.schema_migrations') IS NULL", extra=["-A", "-t"]).text.strip() == "t"


def test_group_sync_and_status_run_per_host(project: Project, sandbox: SandboxHandle) -> None:
    from .conftest import write_inventory

    other = sandbox.host_for(sandbox.create_database(), backup_dir=project.host.backup_dir)
    write_inventory(project.root, {"one": project.host, "two": other}, groups={"both": ["one", "two"]})
    write_all(project, {"001_a.sql": "CREATE TABLE a (id int);\n", "002_b.sql": "CREATE TABLE b (id int);\n"})
    refused = project.run("sync", "--host", "both")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    proc = project.run("sync", "--host", "both", "--yes", "--no-backup", "--json")
    assert proc.returncode == 0, proc.stderr
    hosts = json.loads(proc.stdout)["hosts"]
    assert [(h["host"], h["details"]["applied"]) for h in hosts] == [("one", ["001", "002"]), ("two", ["001", "002"])]
    status = project.run("status", "--host", "both", "--json")
    assert [h["details"]["counts"] for h in json.loads(status.stdout)["hosts"]] == [{"applied": 2}, {"applied": 2}]


def test_interrupt_during_apply_stops_the_server_side_script(project: Project) -> None:
    write_all(
        project,
        {
            "001_a.sql": "CREATE TABLE a (id int);\n",
            "002_slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(2);\n",
            "003_c.sql": "CREATE TABLE c (id int);\n",
        },
    )

    def on_event(event: SyncEvent) -> None:
        if event.kind == "begin" and event.step is not None and event.step.version == "002":
            raise KeyboardInterrupt

    with open_remote(project.host) as remote, pytest.raises(KeyboardInterrupt):
        sync(remote, project.migrations, SyncOptions(backup=False), IDENTITY, on_event=on_event)
    time.sleep(3)  # 002 would have committed and 003 run by now had psql kept going
    assert ledger_rows(project) == ["001"] and tables(project) == {"a", "schema_migrations"}


def test_backup_failure_aborts_and_statement_timeout_override(project: Project) -> None:
    from .conftest import write_inventory

    write_all(
        project,
        {"001_a.sql": "CREATE TABLE a (id int);\n", "002_slow.sql": "CREATE TABLE s (id int);\nSELECT pg_sleep(5);\n"},
    )
    write_inventory(
        project.root, {"sandbox": dataclasses.replace(project.host, backup_dir="/proc/opsagent-no-such-dir")}
    )
    no_backup = project.run("sync", "--host", "sandbox", "--yes")
    assert no_backup.returncode == 1 and "backup failed, nothing applied" in no_backup.stderr
    assert "schema_migrations" not in tables(project) and "a" not in tables(project)
    timed = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--statement-timeout", "1s")
    assert timed.returncode == 1
    assert f"{project.migrations / '002_slow.sql'}:2" in timed.stderr and "statement timeout" in timed.stderr
    assert ledger_rows(project) == ["001"]


# ---------------------------------------------------------------- start-up work only for what is pending (issue 14)


def test_remote_commands_per_sync_stay_constant_and_applied_files_are_not_parsed(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 pending: one psql session (no lock wait, so no blocker watch; --no-backup); no-op: the same one session.

    The no-op run parses nothing: applied files are compared by checksum only.
    """
    import opsagent.migrate.files as migrations

    for i in range(1, 201):
        (tmp_path / f"{i:04d}_t{i}.sql").write_text(
            f"CREATE TABLE t{i} (id int PRIMARY KEY);\nCREATE INDEX t{i}_i ON t{i} (id);\n"
        )
    parsed: list[str] = []
    real_check = migrations.check_migration

    def counting(migration: migrations.Migration) -> tuple[migrations.Migration, list[str]]:
        parsed.append(migration.version)
        return real_check(migration)

    monkeypatch.setattr(migrations, "check_migration", counting)
    before = remote.command_count
    first = sync(remote, tmp_path, SyncOptions(backup=False), IDENTITY)
    assert first.outcome == "applied" and len(first.applied) == 200
    assert first.remote_commands == 1 == remote.command_count - before and len(parsed) == 200
    parsed.clear()
    again = sync(remote, tmp_path, SyncOptions(backup=False), IDENTITY)
    assert again.outcome == "nothing_to_do" and again.remote_commands == 1 and parsed == []
    (tmp_path / "0201_more.sql").write_text("CREATE TABLE more (id int);\n")
    third = sync(remote, tmp_path, SyncOptions(backup=False), IDENTITY)
    assert third.applied == ["0201"] and third.remote_commands == 1 and parsed == ["0201"]


def test_an_unparseable_applied_file_with_a_matching_checksum_is_not_reparsed_but_an_edited_one_is_refused(
    remote: Remote, tmp_path: Path
) -> None:
    (tmp_path / "001_a.sql").write_text("CREATE TABLE a (id int);\n")
    assert sync(remote, tmp_path, SyncOptions(backup=False), IDENTITY).applied == ["001"]
    (tmp_path / "001_a.sql").write_text("CREATE TABLE a (id int;\n")  # edited after it ran, now broken
    refused = sync(remote, tmp_path, SyncOptions(backup=False), IDENTITY)
    assert refused.outcome == "refused" and "checksum mismatch" in (refused.error or "")


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("003_syntax.sql", "CREATE TABLE c (id int;\n", "syntax error"),
        ("003_concurrently.sql", "CREATE INDEX CONCURRENTLY ci ON a (id);\n", "cannot run inside a transaction"),
        ("003_marker.sql", "-- opsagent:no-transaction\nBEGIN;\nCREATE TABLE c (id int);\n", "never committed"),
        ("003_latin1.sql", b"-- caf\xe9\nCREATE TABLE c (id int);\n", "not valid UTF-8"),
        ("003_unreadable.sql", "CREATE TABLE c (id int);\n", "cannot read"),
        ("add_things.sql", "CREATE TABLE c (id int);\n", "not a migration file name"),
        ("002_dup.sql", "CREATE TABLE c (id int);\n", "duplicate migration version 2"),
    ],
)
def test_status_shows_every_file_with_the_bad_one_marked_and_sync_refuses_it(
    project: Project, name: str, content: str | bytes, error: str
) -> None:
    write_all(project, {"001_a.sql": "CREATE TABLE a (id int);\n"})
    assert project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check").returncode == 0
    write_all(project, {"002_b.sql": "CREATE TABLE b (id int);\n", "004_d.sql": "CREATE TABLE d (id int);\n"})
    path = project.migrations / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if name == "003_unreadable.sql":  # unreadable even for root: reading offset 0 of a process's memory fails (EIO)
        path.unlink()
        path.symlink_to("/proc/self/mem")
    proc, doc = run_json(project, "status", "--host", "sandbox")
    assert proc.returncode == 0, proc.stderr
    versions = doc["versions"]
    assert isinstance(versions, list)
    states = {(v["file"] or "").rsplit("/", 1)[-1]: v for v in versions}
    bad = states[name]
    assert bad["state"] == "invalid" and error in bad["error"], bad
    assert states["001_a.sql"]["state"] == "applied" and states["004_d.sql"]["state"] == "pending"
    if name != "002_dup.sql":
        assert states["002_b.sql"]["state"] == "pending" and states["002_b.sql"]["error"] is None
    shown = project.run("status", "--host", "sandbox")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr
    lines = shown.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if line.split()[:1] == [bad["version"]] and "invalid" in line)
    assert lines[row + 1].strip().startswith("error:") and error in lines[row + 1]
    assert all(any(line.split()[:1] == [v["version"]] for line in lines) for v in versions)
    refused = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check")
    if name == "add_things.sql":  # no version: ignored with a warning, the others apply
        assert refused.returncode == 0 and "add_things.sql: ignored" in refused.stderr
    else:
        assert refused.returncode == 2 and error in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
        assert ledger_rows(project) == ["001"]


def test_the_task_manifest_matches_the_collection_and_a_task_loads_only_its_module() -> None:
    """TASKS names every task and alias of the full collection;
    'status' starts without pglast, the catalog, plans or progress."""
    from opsagent.cli import TASKS, collection_for, modules_for

    full = collection_for(None)
    names = {name: sorted(task.aliases) for name, task in full.tasks.items()}
    assert names == {e.name: sorted(e.aliases) for e in TASKS if not e.subtasks}
    assert {name: sorted(sub.tasks) for name, sub in full.collections.items()} == {
        e.name: sorted(e.subtasks) for e in TASKS if e.subtasks
    }
    assert modules_for(["inv", "status", "--host", "x"]) == {"sync"} and modules_for(["inv", "history"]) == {"sync"}
    assert (
        modules_for(["inv", "--list"]) is None
        and modules_for(["inv"]) is None
        and modules_for(["inv", "sandbox.up"]) == {"core"}
    )
    probe = (
        "import sys; sys.argv = ['opsagent', 'status', '--help']; import opsagent.cli as cli; "
        "cli.collection_for(sys.argv); "
        "print(sorted(m for m in ('pglast', 'opsagent.schema.catalog', 'opsagent.schema.plan', 'rich.progress', "
        "'opsagent.migrate.lint', "
        "'opsagent.migrate.hazards', 'opsagent.backup', 'opsagent.cli.backup') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", loaded
    for argv in (["opsagent", "status", "--help"], ["opsagent", "sync", "--help"]):
        shown = subprocess.run(
            [sys.executable, "-m", "opsagent", *argv[1:]], capture_output=True, text=True, check=False
        )
        assert shown.returncode == 0 and "--host" in shown.stdout, shown.stderr
    typo = subprocess.run([sys.executable, "-m", "opsagent", "statsu"], capture_output=True, text=True, check=False)
    assert typo.returncode == 2 and "did you mean 'status'" in typo.stderr


def test_a_no_op_sync_and_status_never_load_the_parser(project: Project) -> None:
    """Nothing pending: no pglast, no hazard lint, no backup module; status neither
    (its table is plain lines into a pipe)."""
    write_all(project, {f"{i:03d}_t{i}.sql": f"CREATE TABLE t{i} (id int);\n" for i in range(1, 21)})
    assert project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check").returncode == 0
    env = {**os.environ, "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml")}
    for args in (
        ("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check"),
        ("status", "--host", "sandbox"),
    ):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "opsagent", *args],
            cwd=project.root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        loaded = {
            line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
        }
        heavy = loaded & {
            "pglast",
            "opsagent.migrate.lint",
            "opsagent.migrate.hazards",
            "opsagent.backup",
            "opsagent.schema.catalog",
            "rich.progress",
        }
        assert not heavy, (args, heavy)
    shown = project.run("status", "--host", "sandbox").stdout.splitlines()
    assert shown[1].split() == ["version", "description", "state", "applied", "at", "by", "ms"]
    assert len(shown) == 22 and all(line.split()[2] == "applied" for line in shown[2:])


def test_status_and_sync_on_a_terminal(project: Project) -> None:
    """The Text renderings (status table, plan) on a real pseudo-terminal: every row, styled, no traceback."""
    import shlex
    import shutil

    if shutil.which("script") is None:  # util-linux: present wherever the suite's sandbox runs
        pytest.fail("the 'script' command (util-linux) is needed to give the CLI a terminal")
    write_all(
        project,
        {
            "001_a.sql": "CREATE TABLE a (id int);\n",
            "002_b.sql": "-- opsagent:no-transaction\nCREATE INDEX CONCURRENTLY b ON a (id);\n",
            "003_bad.sql": "CREATE TABLE c (id int;\n",
        },
    )
    env = {**os.environ, "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml"), "COLUMNS": "120", "TERM": "xterm"}

    def on_terminal(*args: str) -> subprocess.CompletedProcess[str]:
        command = shlex.join([sys.executable, "-m", "opsagent", *args])
        return subprocess.run(
            ["script", "-qec", command, "/dev/null"],
            cwd=project.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    status = on_terminal("status", "--host", "sandbox")
    assert status.returncode == 0 and "\x1b[" in status.stdout and "Traceback" not in status.stdout, status.stdout
    assert "003" in status.stdout and "invalid" in status.stdout and "syntax error" in status.stdout
    (project.migrations / "003_bad.sql").unlink()
    applied = on_terminal("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check")
    assert applied.returncode == 0 and "Traceback" not in applied.stdout, applied.stdout
    assert (
        "pending migrations (2)" in applied.stdout
        and "no-transaction" in applied.stdout
        and "applied 2 migration(s)" in applied.stdout
    )
