"""Lock retries, lock_timeout everywhere, outcomes found out rather than guessed, inventory values checked.

The adversaries are real sessions on the sandbox cluster: one holding a lock on the table a
migration alters (for a while, or for ever), a probe querying that table every 100 ms, a session
holding the migration lock, a psql killed mid-apply.  Pure parts (the retry schedule, flag and
inventory checks) have fast unit tests.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from opsagent.cli.sync import _lock_options
from opsagent.errors import ConfigError, UsageError
from opsagent.inventory import load_inventory
from opsagent.migrate.audit import read_audit
from opsagent.migrate.ledger import Ledger
from opsagent.migrate.sync import Identity, LockRetryPolicy, SyncEvent, SyncOptions, duration_seconds, pg_duration, sync
from opsagent.remote.transport import RemoteProcess, open_remote

from .conftest import Project, SandboxHandle
from .test_sync import _sshd_children

IDENTITY = Identity(applied_by="tester@test", git_commit=None)


# ---------------------------------------------------------------- unit: the schedule and the values


def test_attempt_timeouts_grow_to_the_cap_and_pauses_are_jittered_within_bounds() -> None:
    policy = LockRetryPolicy(cap=5.0, budget=120.0)
    assert [policy.timeout_for(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    rng = random.Random(7)
    pauses = [policy.pause_after(n, rng) for n in range(1, 40)]
    assert all(0.5 <= p <= 7.5 for p in pauses) and len({round(p, 3) for p in pauses}) > 30  # jittered, bounded
    assert LockRetryPolicy(cap=0.3, budget=60).timeout_for(1) == 0.3  # never above the configured lock_timeout


def test_the_budget_ends_the_retries_and_zero_means_one_full_attempt() -> None:
    policy = LockRetryPolicy(cap=2.0, budget=15.0)
    rng = random.Random(1)
    attempt, elapsed, total_attempts = 1, 0.0, 1
    while True:
        elapsed += policy.timeout_for(attempt)
        following = policy.next_attempt(attempt, elapsed, rng)
        if following is None:
            break
        pause, timeout = following
        assert timeout <= 2.0 and elapsed + pause + timeout <= 15.0 + 1e-9  # the last attempt is clipped to the budget
        elapsed += pause
        attempt += 1
        total_attempts += 1
    assert 3 <= total_attempts <= 12 and elapsed <= 15.0
    no_retries = LockRetryPolicy(cap=5.0, budget=0)
    assert no_retries.timeout_for(1) == 5.0 and no_retries.next_attempt(1, 5.0, rng) is None
    assert LockRetryPolicy(cap=0, budget=120).next_attempt(1, 0, rng) is None  # lock_timeout 0: waits, never retries


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5.0), ("500ms", 0.5), ("2min", 120.0), ("1.5s", 1.5), ("0", 0.0), ("250", 0.25)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text, "--x") == pytest.approx(seconds)


def test_duration_values_never_reach_sql_unchecked() -> None:
    with pytest.raises(UsageError, match="--x"):
        duration_seconds("5s'; DROP TABLE t; --", "--x")
    assert pg_duration(0.5) == "500ms" and pg_duration(0) == "0"


def test_lock_flags_old_meaning_is_refused_with_a_pointer_to_the_new_flag() -> None:
    with pytest.raises(UsageError) as info:
        _lock_options("60", "", "")
    assert "unit" in info.value.message and "--advisory-lock-wait" in str(info.value.hint)
    assert _lock_options("2s", "", "15s") == ("2s", "15s")
    assert _lock_options("", "500", "0") == ("500", "0")  # the older flag keeps PostgreSQL's meaning (ms)
    with pytest.raises(UsageError, match="same setting"):
        _lock_options("2s", "3s", "")
    with pytest.raises(UsageError, match="--lock-retry-for"):
        _lock_options("", "", "120")


BAD_INVENTORIES = [
    (
        "hosts:\n  prod:\n    address: db.example.com\n    port: 99999\n",
        "inventory.yaml:4 hosts.prod.port: expected a TCP port",
    ),
    (
        "hosts:\n  prod:\n    address: x.example.com\n    pg_port: 0\n",
        "inventory.yaml:4 hosts.prod.pg_port: expected a TCP port",
    ),
    (
        "defaults:\n  connect_timeout: -5\nhosts: {}\n",
        "inventory.yaml:2 defaults.connect_timeout: expected a number of seconds greater than 0",
    ),
    (
        "hosts:\n  prod:\n    address: x.example.com\n    command_timeout: -1\n",
        "inventory.yaml:4 hosts.prod.command_timeout",
    ),
    ("hosts:\n  prod:\n    address: x.example.com\n    keep_backups: -1\n", "inventory.yaml:4 hosts.prod.keep_backups"),
    (
        "hosts:\n  prod:\n    address: x.example.com\n    lock_timeout: -2s\n",
        "inventory.yaml:4 hosts.prod.lock_timeout",
    ),
    (
        "hosts:\n  prod:\n    address: x.example.com\n    lock_retry_for: 120\n",
        "inventory.yaml:4 hosts.prod.lock_retry_for: expected a duration with a unit",
    ),
    (
        "hosts:\n  bastion: {address: bastion.example.com}\n  prod:\n    address: 10.0.0.5\n    gateway: bastoin\n",
        "inventory.yaml:5 hosts.prod.gateway: gateway 'bastoin' is not an inventory host",
    ),
    (
        "hosts:\n  prod:\n    address: 10.0.0.5\n    gateway: admin@jump.example.com:2x\n",
        "inventory.yaml:4 hosts.prod.gateway: port '2x'",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_INVENTORIES)
def test_bad_inventory_values_are_refused_with_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/config
    (tmp_path / "inventory.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_inventory(tmp_path / "inventory.yaml")
    assert expected in info.value.message


@pytest.mark.parametrize(
    "gateway",
    ["bastion", "jump.example.com", "admin@10.1.2.3:2222", "localhost", "ops@[2001:db8::1]:22", "alias-in-ssh-config"],
)
def test_real_gateways_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway: str) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host alias-in-ssh-config\n  HostName jump.internal.example.com\n")
    (tmp_path / "inventory.yaml").write_text(
        f"hosts:\n  bastion: {{address: b.example.com}}\n  prod:\n    address: 10.0.0.5\n    gateway: \"{gateway}\"\n"
    )
    assert load_inventory(tmp_path / "inventory.yaml").host("prod").gateway == gateway


def test_a_configured_migrations_folder_that_does_not_exist_is_a_configuration_error(project: Project) -> None:
    path = project.root / "inventory.yaml"
    document = yaml.safe_load(path.read_text())
    document["paths"] = {"migrations": "sql/migrashuns"}
    path.write_text(yaml.safe_dump(document))
    for task in ("sync", "status"):
        result = project.run(task, "--host", "sandbox", *(("--yes",) if task == "sync" else ()))
        assert result.returncode == 2, result.stdout + result.stderr
        assert (
            "inventory.yaml:" in result.stderr and "paths.migrations" in result.stderr and "migrashuns" in result.stderr
        )
        assert "Traceback" not in result.stderr


def test_audit_log_is_created_private(tmp_path: Path) -> None:
    from opsagent.migrate.audit import append_audit

    old = os.umask(0o022)
    try:
        path = append_audit(tmp_path / "state", {"action": "sync", "outcome": "applied"})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)  # a log from an older version
    append_audit(tmp_path / "state", {"action": "sync", "outcome": "failed"})
    assert path.stat().st_mode & 0o777 == 0o600 and len(read_audit(tmp_path / "state")) == 2


# ---------------------------------------------------------------- real sessions


def set_host_keys(project: Project, **values: object) -> None:
    path = project.root / "inventory.yaml"
    document = yaml.safe_load(path.read_text())
    document["hosts"]["sandbox"].update(values)
    path.write_text(yaml.safe_dump(document))


@contextmanager
def holder(project: Project, sql: str, name: str = "lock-holder") -> Iterator[tuple[RemoteProcess, int]]:
    """Another session that runs ``sql`` (e.g. BEGIN; SELECT * FROM t LIMIT 1;) and stays connected:
    yields it and its pid."""
    with open_remote(project.host) as remote:
        proc = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        proc.write(f"SET application_name = '{name}';\nSELECT pg_backend_pid();\n{sql}\n\\echo held\n")
        pid = int(proc.read_line(30) or "0")
        while proc.read_line(30) != "held":
            pass
        try:
            yield proc, pid
        finally:
            proc.close_stdin()
            proc.wait(10)
            proc.close()


class Probe:
    """An application query on ``t`` every 100 ms, timing each answer (it has no lock_timeout:
    it waits as long as it must)."""

    def __init__(self, project: Project) -> None:
        self.manager = open_remote(project.host)
        remote = self.manager.__enter__()
        self.proc = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        self.waits: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self.proc.write("SELECT 1 FROM t LIMIT 1;\n\\echo probe\n")
            while self.proc.read_line(120) != "probe":
                pass
            self.waits.append(time.monotonic() - started)
            self.stop.wait(0.1)

    def close(self) -> float:
        self.stop.set()
        self.thread.join(130)
        self.proc.close_stdin()
        self.proc.wait(10)
        self.manager.__exit__(None, None, None)
        return max(self.waits)


def test_a_table_held_for_20s_is_altered_after_the_holder_ends_and_traffic_never_waits_longer_than_one_attempt(
    project: Project,
) -> None:
    set_host_keys(project, lock_timeout="2s", lock_retry_for="60s")
    project.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    project.write_migration("001_add_note.sql", "ALTER TABLE t ADD COLUMN note text;\n")
    probe = Probe(project)
    try:
        time.sleep(0.5)
        with holder(project, "BEGIN;\nSELECT * FROM t LIMIT 1;") as (held, pid):
            ends = threading.Timer(20, held.write, ("COMMIT;\n",))
            ends.start()
            started = time.monotonic()
            proc = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check", "--json")
            took = time.monotonic() - started
            ends.cancel()
    finally:
        worst = probe.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = json.loads(proc.stdout)
    assert document["applied"] == ["001"] and took >= 18, took
    waits = document["lock_waits"]
    assert len(waits) >= 3 and all(w["version"] == "001" for w in waits)
    assert [w["lock_timeout_ms"] for w in waits[:3]] == [500, 1000, 2000]  # growing, capped by lock_timeout 2s
    assert any(
        b["pid"] == pid
        and b["application_name"] == "lock-holder"
        and b["state"] == "idle in transaction"
        and b["query"].startswith("SELECT * FROM t LIMIT 1")
        for w in waits
        for b in w["blockers"]
    )
    assert document["steps"][0]["attempts"] == len(waits) + 1
    assert "lock not available" in proc.stderr and f"pid {pid} (lock-holder" in proc.stderr  # shown live, each attempt
    assert (
        project.psql(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'note'"
        ).strip()
        == "1"
    )
    print(
        f"probe worst wait {worst:.2f}s over {len(probe.waits)} queries; "
        f"sync took {took:.1f}s in {len(waits) + 1} attempts"
    )
    assert worst <= 2.0 + 1.0, f"the probe waited {worst:.2f}s behind the migration"
    audit = read_audit(project.root / ".opsagent")[-1]
    assert audit["outcome"] == "applied" and pid in {b["pid"] for w in audit["lock_waits"] for b in w["blockers"]}


def test_a_holder_that_never_ends_fails_the_sync_within_its_budget_naming_the_blocker(project: Project) -> None:
    set_host_keys(project, lock_timeout="2s", lock_retry_for="15s")
    project.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    project.write_migration("001_u.sql", "CREATE TABLE u (id int);\n")
    project.write_migration("002_add_note.sql", "ALTER TABLE t ADD COLUMN note text;\nCREATE TABLE v (id int);\n")
    project.write_migration("003_w.sql", "CREATE TABLE w (id int);\n")
    with holder(project, "BEGIN;\nSELECT * FROM t LIMIT 1;") as (_, pid):
        started = time.monotonic()
        proc = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check", "--json")
        took = time.monotonic() - started
    assert proc.returncode == 1 and took < 30, (took, proc.stderr)
    document = json.loads(proc.stdout)
    assert (
        document["outcome"] == "lock_timeout"
        and f"pid {pid}" in document["error"]
        and "lock-holder" in document["error"]
    )
    assert f"pid {pid}" in proc.stderr
    assert (
        document["remote_commands"] == 2
    )  # the session and the blocker watch, started by the first lock wait: however many attempts
    assert [s["status"] for s in document["steps"]] == ["applied", "timed_out", "untouched"]
    assert project.psql("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations").strip() == "001"
    tables = set(project.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").split())
    assert "v" not in tables and "w" not in tables and "u" in tables  # nothing of 002 half-applied
    audit = read_audit(project.root / ".opsagent")[-1]
    assert audit["outcome"] == "lock_timeout" and audit["lock_waits"]
    print(f"sync gave up after {took:.1f}s")


def test_a_single_attempt_names_the_holder_found_after_the_timeout(project: Project) -> None:
    """No retries: the blocker watch starts after the only attempt and still names the session holding the table."""
    set_host_keys(project, lock_timeout="1s", lock_retry_for="0")
    project.psql('CREATE TABLE "Odd \'name" (id int);')
    project.write_migration("001_add.sql", 'ALTER TABLE "Odd \'name" ADD COLUMN note text;\n')
    with holder(project, 'BEGIN;\nSELECT * FROM "Odd \'name";', name="odd-holder") as (_, pid):
        proc = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check", "--json")
    document = json.loads(proc.stdout)
    assert proc.returncode == 1 and document["outcome"] == "lock_timeout", proc.stderr
    assert len(document["lock_waits"]) == 1 and [b["pid"] for b in document["lock_waits"][0]["blockers"]] == [pid]
    assert f"pid {pid} (odd-holder" in document["error"] and document["remote_commands"] == 2


def test_dry_run_retries_and_gives_up_within_its_budget_naming_the_blocker(project: Project) -> None:
    set_host_keys(project, rehearse_lock_timeout="2s", lock_retry_for="15s")
    project.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    project.write_migration("001_add_note.sql", "ALTER TABLE t ADD COLUMN note text;\n")
    with holder(project, "BEGIN;\nSELECT * FROM t LIMIT 1;") as (_, pid):
        started = time.monotonic()
        proc = project.run("sync", "--host", "sandbox", "--dry-run", "--no-drift-check", "--json")
        took = time.monotonic() - started
    assert proc.returncode == 1 and took < 30, (took, proc.stderr)
    document = json.loads(proc.stdout)
    assert document["outcome"] == "lock_timeout" and f"pid {pid}" in document["error"], document["error"]
    assert len(document["lock_waits"]) >= 3


def test_dry_run_succeeds_once_the_holder_ends(project: Project) -> None:
    set_host_keys(project, rehearse_lock_timeout="1s", lock_retry_for="30s")
    project.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    project.write_migration("001_add_note.sql", "ALTER TABLE t ADD COLUMN note text;\n")
    with holder(project, "BEGIN;\nSELECT * FROM t LIMIT 1;") as (held, _):
        threading.Timer(8, held.write, ("COMMIT;\n",)).start()
        proc = project.run("sync", "--host", "sandbox", "--dry-run", "--no-drift-check", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = json.loads(proc.stdout)
    assert (
        document["outcome"] == "dry_run" and document["steps"][0]["status"] == "would_apply" and document["lock_waits"]
    )
    assert (
        project.psql(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'note'"
        ).strip()
        == "0"
    )


def test_a_no_transaction_migration_is_retried_only_when_nothing_of_it_ran(project: Project) -> None:
    set_host_keys(project, lock_timeout="1s", lock_retry_for="30s")
    project.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    # its first statement waits for the lock: nothing ran, so it is retried, and applied once the holder is gone
    project.write_migration(
        "001_add.sql",
        "-- opsagent:no-transaction\nALTER TABLE t ADD COLUMN a int;\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n",
    )
    with holder(project, "BEGIN;\nSELECT * FROM t LIMIT 1;") as (held, _):
        threading.Timer(4, held.write, ("COMMIT;\n",)).start()
        proc = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["lock_waits"]
    assert project.psql("SELECT version || ':' || success FROM schema_migrations").split() == ["001:true"]
    # CREATE INDEX CONCURRENTLY waits for old transactions AFTER creating its (invalid) index: that is not retried
    project.write_migration("002_index.sql", "-- opsagent:no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n")
    with holder(project, "BEGIN;\nINSERT INTO t VALUES (2);"):  # a writer: CREATE INDEX CONCURRENTLY waits for it
        failed = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check", "--json")
    document = json.loads(failed.stdout)
    assert failed.returncode == 1 and document["outcome"] == "failed" and "failed partway" in document["error"], (
        document
    )
    assert document["steps"][0]["attempts"] == 1
    assert project.psql("SELECT version || ':' || success FROM schema_migrations ORDER BY 1").split() == [
        "001:true",
        "002:false",
    ]


def test_session_statements_run_under_lock_timeout_from_the_first_one(project: Project) -> None:
    """The ledger read waits at most lock_timeout behind an ACCESS EXCLUSIVE holder, instead of for ever."""
    set_host_keys(project, lock_timeout="1s", lock_retry_for="0")
    project.write_migration("001_a.sql", "CREATE TABLE a (id int);\n")
    assert project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check").returncode == 0
    project.write_migration("002_b.sql", "CREATE TABLE b (id int);\n")
    with holder(project, "BEGIN;\nLOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE;"):
        started = time.monotonic()
        proc = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check", timeout=60)
        took = time.monotonic() - started
    assert proc.returncode == 1 and took < 15, (took, proc.stderr)
    assert "lock timeout" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- outcomes after losing psql, Ctrl-C


def test_psql_gone_mid_apply_is_reported_from_the_ledger(project: Project) -> None:
    project.write_migration("001_a.sql", "CREATE TABLE a (id int);\n")
    project.write_migration("002_slow.sql", "CREATE TABLE slow (id int);\nSELECT pg_sleep(5);\n")
    project.write_migration("003_c.sql", "CREATE TABLE c (id int);\n")

    def on_event(event: SyncEvent) -> None:
        if event.kind == "begin" and event.step is not None and event.step.version == "002":
            kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'opsagent sync%'"
            threading.Timer(1.0, project.psql, (kill,)).start()

    with open_remote(project.host) as remote:
        result = sync(remote, project.migrations, SyncOptions(backup=False), IDENTITY, on_event=on_event)
    assert result.outcome == "lost", result.error
    assert [s.status for s in result.steps] == ["applied", "failed", "untouched"], (result.error, result.steps)
    assert "002 was rolled back" in str(result.error) and "inv status" in str(result.hint)
    assert project.psql("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations").strip() == "001"


def test_dropped_ssh_connection_reconnects_and_reports_what_committed(project: Project, sandbox: SandboxHandle) -> None:
    project.write_migration("001_a.sql", "CREATE TABLE a (id int);\n")
    project.write_migration("002_slow.sql", "CREATE TABLE slow (id int);\nSELECT pg_sleep(3);\n")
    before = _sshd_children(sandbox)
    with open_remote(project.host) as remote:
        ours = _sshd_children(sandbox) - before
        assert len(ours) == 1

        def on_event(event: SyncEvent) -> None:
            if event.kind == "begin" and event.step is not None and event.step.version == "002":
                threading.Timer(1.0, os.kill, (next(iter(ours)), signal.SIGKILL)).start()

        result = sync(remote, project.migrations, SyncOptions(backup=False), IDENTITY, on_event=on_event)
    assert result.outcome == "lost", result.error
    rows = project.psql("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations").strip().split(",")
    applied = [s.version for s in result.steps if s.status == "applied"]
    assert applied == rows, (applied, rows)  # the report is what the ledger says, not a guess
    if "002" in rows:
        assert "002 committed before the connection was lost" in str(result.error)
    else:
        assert "002 was rolled back" in str(result.error)
    assert "inv status" in str(result.hint)


def test_ctrl_c_during_the_migration_lock_wait_returns_within_2s_with_an_audit_record(project: Project) -> None:
    project.write_migration("001_a.sql", "CREATE TABLE a (id int);\n")
    cls, obj = Ledger("public").lock_key
    with holder(project, f"SELECT pg_advisory_lock({cls}, {obj});", name="other-applier"):
        env = {
            **os.environ,
            "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml"),
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "opsagent", "sync", "--host", "sandbox", "--yes", "--no-backup"],
            cwd=project.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = ""
        while "holds the migration lock" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert "other-applier" in seen, seen
        time.sleep(1.0)  # well inside the wait
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        returned = time.monotonic() - sent
        stderr = proc.stderr.read() if proc.stderr else ""
        waiting = project.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'opsagent sync%'"
        ).strip()
    print(f"Ctrl-C in the migration lock wait returned in {returned:.2f}s")
    assert code == 130 and returned < 2.0, (code, returned, stderr)
    assert waiting == "0"  # nothing keeps waiting on the server
    audit = read_audit(project.root / ".opsagent")[-1]
    assert audit["outcome"] == "interrupted" and audit["applied"] == [] and audit["action"] == "sync"


def test_ctrl_c_during_apply_says_what_committed_and_leaves_an_audit_record(project: Project) -> None:
    project.write_migration("001_a.sql", "CREATE TABLE a (id int);\n")
    project.write_migration("002_slow.sql", "CREATE TABLE slow (id int);\nSELECT pg_sleep(30);\n")
    env = {
        **os.environ,
        "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml"),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsagent", "sync", "--host", "sandbox", "--yes", "--no-backup"],
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "✔ 001" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(30)
    returned = time.monotonic() - sent
    stderr = proc.stderr.read() if proc.stderr else ""
    print(f"Ctrl-C during apply returned in {returned:.2f}s")
    assert code == 130 and returned < 2.0, (code, returned, stderr)
    assert "002 was rolled back" in stderr and "inv status" in stderr, stderr
    assert project.psql("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations").strip() == "001"
    audit = read_audit(project.root / ".opsagent")[-1]
    assert audit["outcome"] == "interrupted" and audit["applied"] == ["001"]


def test_lock_flags_override_the_inventory(project: Project) -> None:
    """--lock-timeout / --lock-retry-for (and the older --migration-lock-timeout, PostgreSQL ms)
    beat the inventory's 2min."""
    project.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    project.write_migration("001_add_note.sql", "ALTER TABLE t ADD COLUMN note text;\n")
    with holder(project, "BEGIN;\nSELECT * FROM t LIMIT 1;") as (_, pid):
        for flags in (
            ("--lock-timeout", "1s", "--lock-retry-for", "0"),
            ("--migration-lock-timeout", "700", "--lock-retry-for", "0"),
            ("--lock-timeout", "1s", "--lock-retry-for", "3s"),
        ):
            started = time.monotonic()
            proc = project.run(
                "sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check", "--json", *flags
            )
            took = time.monotonic() - started
            document = json.loads(proc.stdout)
            assert (
                proc.returncode == 1 and document["outcome"] == "lock_timeout" and f"pid {pid}" in document["error"]
            ), document
            attempts = document["steps"][0]["attempts"]
            assert (attempts == 1) == (flags[-1] == "0") and took < 15, (flags, attempts, took)
            expected_first = 1000 if flags[1] == "1s" and flags[-1] == "0" else 700 if flags[1] == "700" else 500
            assert document["lock_waits"][0]["lock_timeout_ms"] == expected_first, document["lock_waits"]


def test_no_answer_within_command_timeout_stops_the_migration_and_reports_it(project: Project) -> None:
    set_host_keys(project, command_timeout=3)
    project.write_migration("001_a.sql", "CREATE TABLE a (id int);\n")
    project.write_migration("002_slow.sql", "CREATE TABLE slow (id int);\nSELECT pg_sleep(8);\n")
    proc = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check", "--json")
    document = json.loads(proc.stdout)
    assert proc.returncode == 1 and document["outcome"] == "failed", document
    assert "no answer from the server within 3s" in document["error"] and "002 was rolled back" in document["error"]
    time.sleep(6)  # had our backend been left running, 002 would have committed by now
    assert project.psql("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations").strip() == "001"
    assert read_audit(project.root / ".opsagent")[-1]["applied"] == ["001"]
