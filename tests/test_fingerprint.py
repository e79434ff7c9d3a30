"""Remembered verdicts (``opsagent.schema.fingerprint``), against the real sshd + PostgreSQL.

A clean verdict of both oracles is recalled only for the very catalog rows it was reached on:
every kind of change makes the next check a full one (the model's kind, the dump-only kind, DDL
that undoes itself, an index built concurrently, a clone with the same rows in another database),
work that is not DDL does not (data, ANALYZE, VACUUM), a change between the probe and the read is
never remembered, and ``--recheck`` always compares again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import opsagent.schema.drift as drift
from opsagent.errors import CommandFailed
from opsagent.remote.markers import Markers
from opsagent.remote.transport import Remote, open_remote, program_name
from opsagent.schema.drift import diff_against_sql, diff_hosts
from opsagent.schema.facts import PG_DUMP_VERSION
from opsagent.schema.fingerprint import (
    Fingerprint,
    load_side,
    model_digest,
    probe,
    recall,
    remember,
    side_key,
    store_side,
    verdict_key,
)
from opsagent.schema.report import DriftReport

from .conftest import Project

SCHEMA = (
    "CREATE TABLE t (id int PRIMARY KEY, note text);\nCREATE INDEX t_note ON t (note);\n"
    "CREATE VIEW v AS SELECT id FROM t;\n"
)
FP = Fingerprint("prod", "7000000000000000001", "1", "16384", "a" * 32, "b" * 32)


# ---------------------------------------------------------------- pure logic


def test_a_fingerprint_is_read_only_from_a_whole_document() -> None:
    good = json.dumps({k: v for k, v in dataclasses.asdict(FP).items() if k != "host"})
    assert Fingerprint.parse(good, "prod") == FP
    assert Fingerprint.parse(good, "") is None  # a fingerprint always belongs to a host
    for bad in ("", "null", "[]", '{"system": "1"}', json.dumps({**dataclasses.asdict(FP), "rows": ""}), "{"):
        assert Fingerprint.parse(bad, "prod") is None, bad


def test_a_remembered_verdict_is_found_by_its_key_only(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    key = verdict_key("desired-key", [FP])
    assert recall(cache, key) is None
    at = remember(cache, key, "prod:trad", "schema.sql")
    assert at is not None and recall(cache, key) == at
    [path] = cache.glob("verified-*.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(cache.stat().st_mode) == 0o700
    # every part of the key matters: the desired side, each fingerprint field, what is hidden
    assert recall(cache, verdict_key("other-desired-key", [FP])) is None
    for field in ("host", "system", "timeline", "database", "rows", "indexes"):
        changed = dataclasses.replace(FP, **{field: "9" + getattr(FP, field)[1:]})
        assert recall(cache, verdict_key("desired-key", [changed])) is None, field
    assert recall(cache, verdict_key("desired-key", [FP], ["public.schema_migrations"])) is None
    assert model_digest() == model_digest() and len(model_digest()) == 64
    for content in ('{"format": 1, "key": "', "[]", json.dumps({"format": 1, "key": key}), "\xff"):
        path.write_text(content)
        assert recall(cache, key) is None, content  # unreadable or cut short: a miss, never an error
    assert remember(None, key, "a", "b") is None and recall(None, key) is None


# ---------------------------------------------------------------- real server


def _check(remote: Remote, cache: Path, **kwargs: bool) -> tuple[DriftReport, int]:
    """The drift check and how many remote commands it took."""
    before = remote.command_count
    report = diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, **kwargs)
    return report, remote.command_count - before


def test_a_clean_verdict_is_recalled_in_one_short_command(remote: Remote, tmp_path: Path) -> None:
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    first, _ = _check(remote, cache)
    assert not first.drift and first.recalled is None and first.dump_differences == []
    assert list(cache.glob("side-*.json")) == []  # a clean comparison is remembered as a verdict, not as a side
    second, commands = _check(remote, cache)
    assert second.recalled is not None and not second.drift and commands == 1  # the probe: no dump, no catalog read
    assert second.to_dict()["recalled"] == {"verified_at": second.recalled}
    again, commands = _check(remote, cache, recheck=True)
    assert again.recalled is None and not again.drift and commands == 2  # probe + the full read
    # work that is not DDL keeps the verdict
    remote.psql("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 500) g; UPDATE t SET note = 'y' WHERE id < 10;")
    remote.psql("ANALYZE t;")
    remote.psql("VACUUM t;")
    remote.psql("VACUUM FREEZE;")
    assert _check(remote, cache)[0].recalled is not None
    # an object made and dropped again leaves the very rows there were (its own are dead): the same structure
    remote.psql("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';")
    remote.psql("DROP FUNCTION f();")
    assert _check(remote, cache)[0].recalled is not None


CHANGES = {
    "a column (the model sees it)": ("ALTER TABLE t ADD COLUMN extra int;", True),
    "replica identity (the dump sees it)": ("ALTER TABLE t REPLICA IDENTITY FULL;", True),
    "a comment": ("COMMENT ON TABLE t IS 'hello';", True),
    "a view's text": ("CREATE OR REPLACE VIEW v AS SELECT id FROM t WHERE id > 0;", True),
    # each statement commits on its own (one transaction that makes and drops a column leaves no visible row)
    "a column added and dropped again": ("ALTER TABLE t ADD COLUMN c int;|ALTER TABLE t DROP COLUMN c;", False),
    "an index dropped and made again": ("DROP INDEX t_note;|CREATE INDEX t_note ON t (note);", False),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_any_change_to_the_catalog_makes_the_next_check_a_full_one(remote: Remote, tmp_path: Path, change: str) -> None:
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    _check(remote, cache)
    assert _check(remote, cache)[0].recalled is not None
    sql, drifts = CHANGES[change]
    for statement in sql.split("|"):
        remote.psql(statement)
    report, commands = _check(remote, cache)
    assert report.recalled is None and commands >= 2 and report.drift == drifts, report.to_dict()
    if not drifts:  # the full check found it clean again: remembered for the new rows
        assert _check(remote, cache)[0].recalled is not None


def test_an_index_built_concurrently_is_a_change(remote: Remote, tmp_path: Path) -> None:
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    _check(remote, cache)
    remote.psql("CREATE INDEX CONCURRENTLY t_extra ON t (id, note);")
    report, _ = _check(remote, cache)
    assert report.recalled is None and report.drift


def test_a_clone_with_the_same_catalog_rows_is_judged_on_its_own(remote: Remote, tmp_path: Path) -> None:
    """CREATE DATABASE ... TEMPLATE copies the catalog files: same xmin and ctid, another database oid."""
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    _check(remote, cache)
    clone = remote.host.database + "_clone"
    remote.psql(f'CREATE DATABASE "{clone}" TEMPLATE "{remote.host.database}";', "postgres")
    try:
        with open_remote(dataclasses.replace(remote.host, database=clone)) as other:
            mine, theirs = probe(remote, remote.host.database), probe(other, clone)
            assert mine.fingerprint and theirs.fingerprint
            assert mine.fingerprint.rows == theirs.fingerprint.rows  # the rows are the very same versions
            other.psql("COMMENT ON TABLE t IS 'only in the clone';")
            report = diff_against_sql(other, SCHEMA, "schema.sql", cache_dir=cache)
            assert report.recalled is None and report.drift
    finally:
        remote.psql(f'DROP DATABASE "{clone}" WITH (FORCE);', "postgres")


@pytest.mark.parametrize("drifted", [False, True], ids=["clean", "drift"])
def test_a_change_between_the_probe_and_the_read_is_never_remembered(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drifted: bool
) -> None:
    """DDL that commits after the probe (here: one that leaves the structure, and the drift, as they were) means the
    read may have seen other rows than the probe: neither the verdict (clean) nor the live side (drift) is kept."""
    remote.psql(SCHEMA + ("ALTER TABLE t ADD COLUMN extra int;" if drifted else ""))
    cache = tmp_path / "cache"
    real_read: Callable[..., drift.LiveState] = drift.read_live

    def read_after_a_change(*args: object, **kwargs: object) -> drift.LiveState:
        remote.psql("ALTER TABLE t ADD COLUMN c int; ALTER TABLE t DROP COLUMN c;")  # real DDL, another session
        return real_read(*args, **kwargs)

    monkeypatch.setattr(drift, "read_live", read_after_a_change)
    report, _ = _check(remote, cache)
    assert report.drift == drifted and report.recalled is None
    assert list(cache.glob("verified-*.json")) == [] and list(cache.glob("side-*.json")) == []
    monkeypatch.undo()
    assert _check(remote, cache)[0].recalled is None  # still a full check, which now keeps what it found
    if drifted:  # the side, read again from the kept file
        assert len(list(cache.glob("side-*.json"))) == 1 and _check(remote, cache)[1] == 1
    else:  # the verdict
        assert list(cache.glob("side-*.json")) == [] and _check(remote, cache)[0].recalled is not None


def test_drift_and_cosmetic_findings_are_never_remembered(remote: Remote, tmp_path: Path) -> None:
    remote.psql(SCHEMA + "ALTER TABLE t ADD COLUMN extra int;")
    cache = tmp_path / "cache"
    for expected in (range(2, 4), range(1, 2)):  # the probe, the live read (and schema.sql's); then the probe alone
        report, commands = _check(remote, cache)
        assert report.drift and report.recalled is None and commands in expected
    remote.psql("DROP VIEW v; DROP TABLE t;")
    remote.psql(SCHEMA.replace("id int PRIMARY KEY, note text", "note text, id int PRIMARY KEY"))  # cosmetic
    for _ in range(2):
        report, _ = _check(remote, cache)
        assert not report.drift and report.result.changes and report.recalled is None
    assert list(cache.glob("verified-*.json")) == []


@contextlib.contextmanager
def _clone_of(remote: Remote) -> Iterator[Remote]:
    """A second database made from ``remote``'s, reached over its own connection; dropped afterwards."""
    other_db = remote.host.database + "_other"
    remote.psql(f'CREATE DATABASE "{other_db}" TEMPLATE "{remote.host.database}";', "postgres")
    try:
        with open_remote(dataclasses.replace(remote.host, database=other_db)) as other:
            yield other
    finally:
        remote.psql(f'DROP DATABASE "{other_db}" WITH (FORCE);', "postgres")


def test_two_hosts_found_identical_are_recalled_until_either_changes(remote: Remote, tmp_path: Path) -> None:
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    with _clone_of(remote) as other:
        first = diff_hosts(remote, other, cache_dir=cache)
        assert not first.drift and first.recalled is None
        before = remote.command_count + other.command_count
        second = diff_hosts(remote, other, cache_dir=cache)
        assert second.recalled is not None and remote.command_count + other.command_count - before == 2
        assert diff_hosts(remote, other, cache_dir=cache, recheck=True).recalled is None
        other.psql("ALTER TABLE t REPLICA IDENTITY FULL;")
        third = diff_hosts(remote, other, cache_dir=cache)
        assert third.recalled is None and third.drift


def test_inv_diff_says_when_the_verdict_was_reached(project: Project) -> None:
    (project.root / "sql" / "schema.sql").write_text(SCHEMA)
    project.psql(SCHEMA)
    first = project.run("diff", "--host", "sandbox")
    assert first.returncode == 0 and "not changed since" not in first.stdout, first.stdout + first.stderr
    second = project.run("diff", "--host", "sandbox")
    assert second.returncode == 0 and "no drift" in second.stdout and "not changed since" in second.stdout
    assert "--recheck compares again" in second.stdout
    document = json.loads(project.run("diff", "--host", "sandbox", "--json").stdout)
    assert document["drift"] is False and "verified_at" in document["recalled"]
    rechecked = json.loads(project.run("diff", "--host", "sandbox", "--json", "--recheck").stdout)
    assert "recalled" not in rechecked and rechecked["dump_oracle"]["checked"] is True
    project.psql("ALTER TABLE t REPLICA IDENTITY FULL;")
    drifted = project.run("diff", "--host", "sandbox")
    assert drifted.returncode == 3 and "not changed since" not in drifted.stdout


def test_a_no_op_sync_asks_its_closing_check_on_its_own_session(project: Project) -> None:
    """The sync reads the probe on its session once done: a remembered verdict costs the check no command; drift
    made behind its back is still reported."""
    from opsagent.cli.sync import closing_drift_warning
    from opsagent.inventory import load_inventory
    from opsagent.migrate.sync import Identity, SyncOptions, sync
    from opsagent.schema.facts import default_cache_dir

    project.write_migration("001_t.sql", SCHEMA)
    schema = project.root / "sql" / "schema.sql"
    schema.write_text(SCHEMA)
    first = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--json")
    assert first.returncode == 0 and json.loads(first.stdout)["warnings"] == [], first.stdout + first.stderr
    cache = default_cache_dir(load_inventory(project.root / "inventory.yaml").paths.state)
    with open_remote(project.host) as remote:
        before = remote.command_count
        result = sync(remote, project.migrations, SyncOptions(probe=True, backup=False), Identity("test", None))
        assert result.outcome == "nothing_to_do" and result.probe is not None
        assert closing_drift_warning(remote, schema, probed=result.probe, cache_dir=cache) == []
        assert remote.command_count - before == 1  # the sync's own session, and nothing else
        unprobed = sync(remote, project.migrations, SyncOptions(backup=False), Identity("test", None))
        assert unprobed.probe is None  # asked for only when a closing check follows
    project.psql("ALTER TABLE t REPLICA IDENTITY FULL;")
    drifted = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--json")
    warnings = json.loads(drifted.stdout)["warnings"]
    assert drifted.returncode == 0 and any("differs from schema.sql in 1 object" in w for w in warnings), warnings


def test_diff_against_a_host_that_is_down_says_so_in_one_line(project: Project) -> None:
    """The two connections open at once; the one that failed is named, the other is closed."""
    from .conftest import write_inventory

    down = dataclasses.replace(project.host, name="down", port=9)  # nothing listens there
    write_inventory(project.root, {"sandbox": project.host, "down": down})
    for first, second in (("sandbox", "down"), ("down", "sandbox")):
        result = project.run("diff", "--host", first, "--against-host", second)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "down: cannot connect to" in result.stderr, result.stderr


def test_a_verified_plan_is_recalled_only_for_the_same_script_catalog_and_target(
    remote: Remote, tmp_path: Path
) -> None:
    from opsagent.schema.declarative import PlanOptions, plan_against_sql

    remote.psql(SCHEMA)
    desired = SCHEMA + "ALTER TABLE t ADD COLUMN due date;\nCREATE INDEX t_due ON t (due);\n"
    options = PlanOptions(cache_dir=tmp_path / "cache")
    first = plan_against_sql(remote, desired, "schema.sql", options)
    assert first.verified and first.verified_at is None, first.verification_line()
    before = remote.command_count
    again = plan_against_sql(remote, desired, "schema.sql", options)
    assert again.verified and again.verified_at is not None and remote.command_count - before == 1  # the probe
    assert again.plan.script() == first.plan.script() and "rehearsed at" in again.verification_line()
    assert again.to_dict()["recalled"] == {"verified_at": again.verified_at}
    # another script (every new index CONCURRENTLY), another target, another live catalog: rehearsed again
    always = plan_against_sql(remote, desired, "schema.sql", dataclasses.replace(options, concurrently="always"))
    assert always.verified and always.verified_at is None and "CONCURRENTLY" in always.plan.script()
    edited = plan_against_sql(remote, desired + "COMMENT ON TABLE t IS 'x';\n", "schema.sql", options)
    assert edited.verified and edited.verified_at is None
    remote.psql("ALTER TABLE t ADD COLUMN extra int;")
    changed = plan_against_sql(remote, desired, "schema.sql", options)
    assert changed.verified_at is None and "extra" not in first.plan.script()
    # a plan that is not verified is never remembered
    blind = desired + "ALTER TABLE t ALTER COLUMN note SET STORAGE EXTERNAL;\n"
    for _ in range(2):
        refused = plan_against_sql(remote, blind, "schema.sql", options)
        assert not refused.verified and refused.verified_at is None


def test_a_renamed_owner_or_a_truncate_is_a_change_too(remote: Remote, tmp_path: Path) -> None:
    """Roles live in a shared catalog (a dump names owners); TRUNCATE gives the table a new file: both end the
    verdict (a full comparison follows, never a wrong answer)."""
    role = f"fp_owner_{remote.host.database[-8:]}"
    remote.psql(f'CREATE ROLE "{role}";', "postgres")
    try:
        remote.psql(SCHEMA + f'ALTER TABLE t OWNER TO "{role}";')
        cache = tmp_path / "cache"
        _check(remote, cache)
        assert _check(remote, cache)[0].recalled is not None
        remote.psql(f'ALTER ROLE "{role}" RENAME TO "{role}_2";', "postgres")
        renamed = _check(remote, cache)[0]
        assert renamed.recalled is None and not renamed.drift  # owners are not compared by default
        assert _check(remote, cache)[0].recalled is not None
        remote.psql("TRUNCATE t;")
        assert _check(remote, cache)[0].recalled is None
    finally:
        remote.psql("DROP TABLE IF EXISTS t CASCADE;")
        remote.psql(f'DROP ROLE IF EXISTS "{role}"; DROP ROLE IF EXISTS "{role}_2";', "postgres")


def test_a_verdict_belongs_to_the_host_it_was_reached_on(remote: Remote, tmp_path: Path) -> None:
    """Two copies of one data directory (a cold copy made into staging) share system identifier, timeline and
    database oid: the same rows read as another inventory host are judged on their own."""
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    _check(remote, cache)
    assert _check(remote, cache)[0].recalled is not None
    with open_remote(dataclasses.replace(remote.host, name="staging")) as staging:
        seen = probe(staging, staging.host.database).fingerprint
        assert seen is not None and seen.host == "staging" and seen.timeline
        assert diff_against_sql(staging, SCHEMA, "schema.sql", cache_dir=cache).recalled is None


def _pg_dump_section(remote: Remote, *, knowing: bool, path: str | None = None) -> str:
    """The facts' pg_dump line from a session (``path``: the PATH its shell-outs get, set just before)."""
    mark = Markers()
    setenv = f"\\setenv PATH {path}\n" if path is not None else ""
    text = remote.psql(f"{setenv}{mark.psql('pg-dump')}\n{PG_DUMP_VERSION}\n", knowing_pg_dump=knowing).text
    return mark.by_kind(text)["pg-dump"].strip()


def test_a_session_started_knowing_pg_dump_names_the_same_binary_without_running_it(remote: Remote) -> None:
    """The facts' pg_dump line is the same from the line read beside psql's start as from ``pg_dump --version`` run by
    the session, and a session started knowing it runs no program for it: with no PATH left, it still has the line
    (a session that shells out then has none)."""
    itself = remote.run(["pg_dump", "--version"]).text.strip()
    assert itself.startswith("pg_dump (PostgreSQL) ")
    assert _pg_dump_section(remote, knowing=True) == itself
    assert _pg_dump_section(remote, knowing=False) == itself
    assert _pg_dump_section(remote, knowing=True, path="/nonexistent-opsagent") == itself
    assert _pg_dump_section(remote, knowing=False, path="/nonexistent-opsagent") == ""


def test_a_failure_in_a_session_knowing_pg_dump_names_psql(remote: Remote) -> None:
    argv = remote.psql_argv(extra=["-A"], knowing_pg_dump=True)
    assert argv[:2] == ["sh", "-c"] and program_name(argv) == "psql" and program_name(["pg_dump", "-s"]) == "pg_dump"
    with pytest.raises(CommandFailed, match=r": psql failed: .*no_such_table_here"):
        remote.psql("SELECT * FROM no_such_table_here;", knowing_pg_dump=True)


# ---------------------------------------------------------------- the live side kept by fingerprint


def _findings(report: DriftReport) -> dict[str, object]:
    return {k: v for k, v in report.to_dict().items() if k != "desired_cache"}


def test_an_unchanged_database_with_drift_is_not_read_again_until_it_changes(remote: Remote, tmp_path: Path) -> None:
    """The live side (catalog and dump) is kept for its fingerprint: the next diff of an unchanged database finds the
    same drift from the kept side with the probe alone; any DDL is read again, and found; --recheck reads again."""
    remote.psql(SCHEMA + "ALTER TABLE t ADD COLUMN extra int;")
    cache = tmp_path / "cache"
    first, commands = _check(remote, cache)
    assert commands >= 2 and first.drift and first.dump_differences  # the probe, the live read (schema.sql's)
    kept = list(cache.glob("side-*.json"))
    assert len(kept) == 1 and stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    second, commands = _check(remote, cache)
    assert commands == 1 and _findings(second) == _findings(first)  # the same, by both oracles
    remote.psql("ALTER TABLE t ADD COLUMN more int;")  # DDL: the kept side is not this catalog's
    third, commands = _check(remote, cache)
    assert commands == 2 and len(third.result.changes) == len(first.result.changes) + 1
    assert any("more" in d.to_dict().__repr__() for d in third.dump_differences or []), third.to_dict()
    assert _check(remote, cache)[1] == 1
    again, commands = _check(remote, cache, recheck=True)
    assert commands == 2 and _findings(again) == _findings(third)
    fast, commands = diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, fast=True), None
    assert fast.drift and fast.dump_differences is None  # --fast: the kept catalog, not its dump


def test_a_kept_side_belongs_to_its_server_and_pg_dump(remote: Remote, tmp_path: Path) -> None:
    """The key of a kept side names the server facts and pg_dump's version: another binary's dump is read again."""
    seen = probe(remote, remote.host.database)
    assert seen.fingerprint is not None
    key = side_key(seen, [], "query")
    moved = dataclasses.replace(seen, facts=dataclasses.replace(seen.facts, pg_dump_version="pg_dump 99"))
    assert key is not None and side_key(moved, [], "query") not in (key, None)
    assert side_key(seen, ["public.x"], "query") != key and side_key(seen, [], "other query") != key
    assert side_key(dataclasses.replace(seen, fingerprint=None), [], "query") is None
    store_side(tmp_path, key, {"tables": []}, "dump")
    assert load_side(tmp_path, key) == ({"tables": []}, "dump")
    (path,) = tmp_path.glob("side-*.json")
    for content in ("{", json.dumps({"format": 1, "key": "other", "catalog": {}, "dump": ""}), "[]"):
        path.write_text(content)
        assert load_side(tmp_path, key) is None, content  # cut short or another key: a miss, never an error


def test_two_hosts_with_drift_are_read_once_until_either_changes(remote: Remote, tmp_path: Path) -> None:
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    with _clone_of(remote) as other:
        other.psql("CREATE TABLE theirs (id int);")  # an added table: nothing to confirm by a reload
        first = diff_hosts(remote, other, cache_dir=cache)
        assert first.drift and first.recalled is None
        before = remote.command_count + other.command_count
        second = diff_hosts(remote, other, cache_dir=cache)
        assert remote.command_count + other.command_count - before == 2  # the two probes
        assert _findings(second) == _findings(first)
        other.psql("DROP TABLE theirs;")
        before = remote.command_count + other.command_count
        third = diff_hosts(remote, other, cache_dir=cache)
        assert not third.drift and remote.command_count + other.command_count - before == 3  # other read again
