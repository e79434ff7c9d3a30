"""The deploy's head starts (issue 14): work started early so that nobody waits for it later.

- ``Remote.hold``: a command started at once and held at a gate; it runs only when released with its stdin, exits
  having run nothing when released unused, when asked for with another argv, or when the connection ends.
- A sync with something pending and a closing drift check holds the check's live read before the migrations run;
  the check then starts no command of its own, and still reports drift.
- ``migrate.memo``: the hint that says whether something is likely pending (so the parser loads while the session
  starts); a hint, never a decision.

Against the real sshd + PostgreSQL, except the memo's pure cases.
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from opsagent.migrate.memo import likely_pending, remember_applied, versions_digest
from opsagent.remote.transport import Remote

from .conftest import Project, SandboxHandle

SCHEMA = "CREATE TABLE t (id int PRIMARY KEY, note text);\n"


def _table_exists(remote: Remote, name: str) -> bool:
    out = remote.psql("SELECT to_regclass(:'n') IS NOT NULL;", extra=["-A", "-t", "-v", f"n={name}"]).text.strip()
    return out == "t"


def _held_processes(remote: Remote) -> int:
    """Held commands waiting on the server for this remote's database: gates ("sh -c <gate> opsagent-held ...
    dbname=<db>") and psql sessions started without one, waiting on their stdin ("... psql -X ... dbname=<db>": call
    it when no other psql of this database runs).  The database is the test's own, so another test's held commands
    (two workers) are not counted."""
    out = remote.run(["ps", "-eo", "args"], become=False).text
    return sum(
        1
        for line in out.splitlines()
        if ("opsagent-held" in line or "psql -X" in line) and remote.host.database in line
    )


def _until_no_held_process(remote: Remote, seconds: float = 10) -> int:
    deadline = time.monotonic() + seconds
    while (count := _held_processes(remote)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def test_a_held_command_runs_only_when_released_with_its_stdin(remote: Remote) -> None:
    argv = remote.psql_argv(extra=["-A", "-t"])
    before = remote.command_count
    remote.hold("k", argv, "tag-1")
    assert remote.held_tag("k") == "tag-1" and remote.held_tag("other") is None
    assert remote.command_count - before == 1  # started now, counted now
    time.sleep(0.3)
    assert not _table_exists(remote, "held_ran")  # waiting at its gate: psql has not even started
    result = remote.run_held("k", argv, stdin="CREATE TABLE held_ran (); SELECT 6 * 7;")
    assert result.ok and result.text.strip() == "42"
    assert _table_exists(remote, "held_ran") and remote.held_tag("k") is None
    assert remote.command_count - before == 3  # the held command, and the two checks above: no new one for it


def test_a_held_command_never_runs_when_released_unused_or_asked_for_with_another_argv(remote: Remote) -> None:
    # psql -c ignores stdin: only the held argv itself could create these tables
    remote.hold("unused", remote.psql_argv(extra=["-c", "CREATE TABLE by_unused ()"]))
    remote.release("unused")
    remote.hold("mismatch", remote.psql_argv(extra=["-c", "CREATE TABLE by_mismatch ()"]))
    before = remote.command_count
    other = remote.psql_argv(extra=["-A", "-t"])
    assert remote.run_held("mismatch", other, stdin="SELECT 1;").text.strip() == "1"
    assert remote.command_count - before == 1  # run as a new command; the held one was closed unused
    assert _until_no_held_process(remote) == 0
    assert not _table_exists(remote, "by_unused") and not _table_exists(remote, "by_mismatch")


def test_a_held_command_started_early_is_read_later_only_with_the_same_stdin(remote: Remote) -> None:
    """``start_held``: released with its stdin before its result is wanted, it runs at once; ``run_held`` reads that
    output with the same argv and stdin (no new command), and runs a new command for another stdin."""
    argv = remote.psql_argv(extra=["-A", "-t"])
    remote.hold("k", argv)
    assert remote.start_held("k", argv, "CREATE TABLE started_early (); SELECT 6 * 7;")
    assert not remote.start_held("k", argv, "SELECT 1;")  # started already: never twice
    deadline = time.monotonic() + 10
    while not _table_exists(remote, "started_early") and time.monotonic() < deadline:
        time.sleep(0.05)  # it ran before anyone asked for its output
    before = remote.command_count
    assert remote.run_held("k", argv, stdin="CREATE TABLE started_early (); SELECT 6 * 7;").text.strip() == "42"
    assert remote.command_count == before  # read from the command started early
    remote.hold("k", argv)
    assert remote.start_held("k", argv, "SELECT 1;")
    before = remote.command_count
    assert remote.run_held("k", argv, stdin="SELECT 2;").text.strip() == "2"  # another script: its own command
    assert remote.command_count - before == 1
    assert not remote.start_held("none", argv, "SELECT 1;")  # nothing held there


def test_a_held_command_ends_with_its_connection(sandbox: SandboxHandle, fresh_db: str) -> None:
    with sandbox.remote(fresh_db) as held:
        held.hold("k", held.psql_argv(extra=["-c", "CREATE TABLE by_orphan ()"]))
        with sandbox.remote(fresh_db) as watcher:
            assert _held_processes(watcher) >= 1
    with sandbox.remote(fresh_db) as watcher:
        assert _until_no_held_process(watcher) == 0
        assert not _table_exists(watcher, "by_orphan")


def test_a_sync_holds_its_closing_read_and_the_check_starts_no_command(project: Project) -> None:
    from opsagent.cli.sync import closing_drift_warning
    from opsagent.inventory import load_inventory
    from opsagent.migrate.sync import Identity, SyncOptions, sync
    from opsagent.remote.transport import open_remote
    from opsagent.schema.facts import default_cache_dir

    project.write_migration("001_t.sql", SCHEMA)
    schema = project.root / "sql" / "schema.sql"
    schema.write_text(SCHEMA)
    cache = default_cache_dir(load_inventory(project.root / "inventory.yaml").paths.state)
    assert project.run("diff", "--host", "sandbox").returncode == 3  # table t is missing; schema.sql is now cached
    with open_remote(project.host) as remote:
        options = SyncOptions(probe=True, backup=False, cache_dir=cache)
        result = sync(remote, project.migrations, options, Identity("test", None))
        assert result.outcome == "applied" and result.remote_commands == 2  # the session, and the held read
        held = remote._held[f"live-read {remote.host.database}"]
        assert held.sent is not None  # started once the migrations were done, beside the probe
        after_sync = remote.command_count
        assert closing_drift_warning(remote, schema, probed=result.probe, cache_dir=cache) == []
        assert remote.command_count == after_sync  # the full comparison read through the held command
    # the same with drift: the held read reports it (schema.sql wants a column the migration does not add)
    project.write_migration("002_u.sql", "CREATE TABLE u (id int);\n")
    schema.write_text(SCHEMA + "CREATE TABLE u (id int, extra text);\n")
    assert project.run("diff", "--host", "sandbox").returncode == 3
    with open_remote(project.host) as remote:
        options = SyncOptions(probe=True, backup=False, cache_dir=cache)  # its read started beside the probe
        result = sync(remote, project.migrations, options, Identity("test", None))
        assert result.outcome == "applied" and result.remote_commands == 2
        after_sync = remote.command_count
        warnings = closing_drift_warning(remote, schema, probed=result.probe, cache_dir=cache)
        assert len(warnings) == 1 and "differs from schema.sql in 1 object" in warnings[0], warnings
        assert remote.command_count == after_sync
    # nothing pending: nothing is held, the sync stays one command
    with open_remote(project.host) as remote:
        result = sync(remote, project.migrations, SyncOptions(probe=True, backup=False), Identity("test", None))
        assert result.outcome == "nothing_to_do" and result.remote_commands == 1


def test_the_closing_read_starts_only_after_the_probes_fingerprint(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check keeps a verdict only when the fingerprint read before its read equals the one read after, so the
    read started early must come after the probe's fingerprint.  DDL committed the moment it starts (structure
    unchanged, catalog rows new) is seen as a change: nothing is kept.  (psql usually runs the whole probe before
    the client reads its first marker, so the order that guarantees it whatever the pace is checked on the script.)"""
    from opsagent.cli.sync import closing_drift_warning
    from opsagent.inventory import load_inventory
    from opsagent.migrate.sync import Identity, SyncOptions, SyncRun, sync
    from opsagent.remote.markers import Markers
    from opsagent.remote.transport import open_remote
    from opsagent.schema.facts import default_cache_dir
    from opsagent.schema.fingerprint import probe_script

    project.write_migration("001_t.sql", SCHEMA)
    schema = project.root / "sql" / "schema.sql"
    schema.write_text(SCHEMA)
    cache = default_cache_dir(load_inventory(project.root / "inventory.yaml").paths.state)
    assert project.run("diff", "--host", "sandbox").returncode == 3  # schema.sql is now cached
    real_start = SyncRun._start_closing_read
    started: list[bool] = []

    def start_after_ddl(run: SyncRun) -> None:
        project.psql("ALTER TABLE t ADD COLUMN c int; ALTER TABLE t DROP COLUMN c;")  # another session's DDL
        started.append(True)
        real_start(run)

    monkeypatch.setattr(SyncRun, "_start_closing_read", start_after_ddl)
    with open_remote(project.host) as remote:
        result = sync(
            remote, project.migrations, SyncOptions(probe=True, backup=False, cache_dir=cache), Identity("t", None)
        )
        assert result.outcome == "applied" and started == [True]
        assert closing_drift_warning(remote, schema, probed=result.probe, cache_dir=cache) == []
    assert list(cache.glob("verified-*.json")) == []  # the fingerprints before and after the read differ
    # what makes "after the fingerprint" hold whatever psql's pace: the read starts when the facts marker arrives,
    # and psql prints that marker only once the fingerprint section before it is done
    mark = Markers()
    script = probe_script(mark)
    assert script.index(mark.psql("fingerprint")) < script.index(mark.psql("facts"))


def test_a_sync_without_a_closing_check_holds_nothing(project: Project) -> None:
    project.write_migration("001_t.sql", SCHEMA)
    done = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--json")
    document = json.loads(done.stdout)
    assert done.returncode == 0 and document["outcome"] == "applied" and document["remote_commands"] == 1


# ---------------------------------------------------------------- the start-up hint (pure)


def test_the_memo_says_pending_unless_this_very_set_was_left_applied(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    digest = versions_digest([1, 2, 3])
    assert versions_digest([3, 2, 1, None, 2]) == digest != versions_digest([1, 2])
    assert likely_pending(cache, "prod", "app", digest) and likely_pending(None, "prod", "app", digest)
    remember_applied(cache, "prod", "app", digest)
    assert not likely_pending(cache, "prod", "app", digest)
    assert likely_pending(cache, "prod", "app", versions_digest([1, 2, 3, 4]))  # a new file
    assert likely_pending(cache, "staging", "app", digest) and likely_pending(cache, "prod", "other", digest)
    [path] = cache.glob("applied-*.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = path.stat().st_mtime_ns
    time.sleep(0.01)
    remember_applied(cache, "prod", "app", digest)  # unchanged: not written again
    assert path.stat().st_mtime_ns == written
    for broken in ("", "{", "[]", '{"versions": 1}'):
        path.write_text(broken)
        assert likely_pending(cache, "prod", "app", digest), broken


def test_a_complete_sync_leaves_the_memo_and_a_targeted_one_does_not(project: Project) -> None:
    from opsagent.migrate.sync import Identity, SyncOptions, sync
    from opsagent.remote.transport import open_remote

    project.write_migration("001_t.sql", SCHEMA)
    project.write_migration("002_u.sql", "CREATE TABLE u (id int);\n")
    cache = project.root / "memo"
    digest = versions_digest([1, 2])
    with open_remote(project.host) as remote:
        options = SyncOptions(backup=False, cache_dir=cache, target="001")
        assert sync(remote, project.migrations, options, Identity("test", None)).outcome == "applied"
        assert likely_pending(cache, project.host.name, project.host.database, digest)
        options = SyncOptions(backup=False, cache_dir=cache)
        assert sync(remote, project.migrations, options, Identity("test", None)).outcome == "applied"
        assert not likely_pending(cache, project.host.name, project.host.database, digest)


# ---------------------------------------------------------------- cold plans: the rehearsal's copy loads early

BLOCK_DDL = """
CREATE FUNCTION refuse_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'no DDL here'; END $$;
CREATE EVENT TRIGGER refuse_ddl ON ddl_command_start WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION refuse_ddl();
"""


def test_a_cold_plan_rehearses_on_a_copy_loaded_while_schema_sql_materializes(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsagent.schema import declarative, scratch
    from opsagent.schema.declarative import PlanOptions, plan_against_sql
    from opsagent.schema.scratch import leftovers

    calls: list[str] = []
    for method in ("finish", "cancel"):
        original = getattr(declarative._EarlyRehearsal, method)

        def wrapped(self: object, *args: object, _original: Any = original, _name: str = method) -> Any:
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(declarative._EarlyRehearsal, method, wrapped)
    remote.psql(SCHEMA)
    # a change: rehearsed on the copy started early, verified by both oracles
    report = plan_against_sql(
        remote, SCHEMA + "CREATE TABLE u (id int);\n", "schema.sql", PlanOptions(cache_dir=tmp_path / "a")
    )
    assert report.verified and "CREATE TABLE" in report.plan.script() and calls == ["finish"]
    # warm: schema.sql is cached, nothing is started early (an empty plan would have loaded it for nothing)
    calls.clear()
    again = plan_against_sql(
        remote, SCHEMA + "CREATE TABLE u (id int);\n", "schema.sql", PlanOptions(cache_dir=tmp_path / "a")
    )
    assert again.verified and calls == []
    # nothing to change, cold: the early copy is dropped unused
    report = plan_against_sql(remote, SCHEMA, "schema.sql", PlanOptions(cache_dir=tmp_path / "b"))
    assert report.verified and report.plan.is_empty and calls == ["cancel"]
    # the plan fails on the copy (an event trigger of the live database refuses ALTER TABLE): that is the finding,
    # and the copy, whose session stopped before its own drop, is handed to the background drop at once (not left
    # to whichever sweep comes next)
    calls.clear()
    handed: list[tuple[str, ...]] = []
    original_drop = scratch.drop_detached

    def drop_detached(remote: Remote, names: Sequence[str]) -> None:
        handed.append(tuple(names))
        original_drop(remote, names)

    monkeypatch.setattr(scratch, "drop_detached", drop_detached)
    remote.psql(BLOCK_DDL)
    failed = plan_against_sql(remote, SCHEMA.replace("note text", "note text, born date") + BLOCK_DDL, "schema.sql")
    assert not failed.verified and failed.error is not None and "no DDL here" in failed.error, failed.error
    assert calls == ["finish"] and len(handed) == 1 and len(handed[0]) == 1, handed
    remote.psql("DROP EVENT TRIGGER refuse_ddl;")
    assert leftovers(remote) == []
