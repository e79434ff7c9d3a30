"""The desired-state cache and the scratch-database policy of issue 14, against the real sshd + PostgreSQL.

- a warm drift check is ONE remote command and creates no scratch database;
- the cache key follows schema.sql, the server's version, its extensions, the hidden tables;
- a corrupt cache file is a miss, never an error; files are 0600;
- both oracles still run warm: a blind spot of the model is caught from the cache;
- a plan builds one rehearsal database at most;
- scratch databases of a killed or interrupted client are gone after the next run (or ``sweep``);
- ``inv check`` reports what only the dump sees; ``sync --dry-run`` says nothing about drift.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opsagent.remote.transport import Remote, RemoteProcess
from opsagent.schema.declarative import PlanOptions, plan_against_sql
from opsagent.schema.desired import CACHE_FORMAT, ServerFacts, cache_key, load_cached, schema_digest
from opsagent.schema.drift import check_project, diff_against_sql
from opsagent.schema.scratch import (
    CREATE_LOCK,
    DETACHED_PREFIX,
    KEEP_TEMPLATES,
    PREFIX,
    TEMPLATE_BUILT,
    TEMPLATE_PREFIX,
    creating,
    leftovers,
    sweep,
)

from .conftest import Project, SandboxHandle

SCHEMA = "CREATE TABLE t (id int PRIMARY KEY, note text);\nCREATE INDEX t_note ON t (note);\n"
BLIND = SCHEMA + "ALTER TABLE t ALTER COLUMN note SET STORAGE EXTERNAL;\n"  # the model does not see column storage


def _facts(**changes: Any) -> ServerFacts:
    document = {
        "server_version_num": "150018",
        "template0": ["UTF8", "C.UTF-8", "C.UTF-8"],
        "extension_versions": [["pg_trgm", "1.6"]],
        "extension_defaults": [["pg_trgm", "1.6"]],
    }
    return ServerFacts({**document, **changes}, "pg_dump (PostgreSQL) 15.18")


def _max_database_oid(remote: Remote) -> int:
    return int(remote.psql("SELECT max(oid::int8) FROM pg_database", "postgres", extra=["-A", "-t"]).text.strip())


def _record_scripts(remote: Remote, monkeypatch: pytest.MonkeyPatch, outputs: list[str] | None = None) -> list[str]:
    """Observe (not replace) what goes to the server: every command's stdin (and, into ``outputs``, its stdout)."""
    sent: list[str] = []
    original = remote.run

    def run(argv: Any, **kwargs: Any) -> Any:
        stdin = kwargs.get("stdin")
        sent.append(stdin.decode() if isinstance(stdin, bytes) else stdin or " ".join(argv))
        result = original(argv, **kwargs)
        if outputs is not None:
            outputs.append(result.text)
        return result

    monkeypatch.setattr(remote, "run", run)
    return sent


def _templates(remote: Remote) -> list[str]:
    rows = remote.query_json(
        f"SELECT coalesce(json_agg(datname), '[]') FROM pg_database WHERE starts_with(datname, '{TEMPLATE_PREFIX}')",
        "postgres",
    )
    return [str(r) for r in rows]


def _created(script: str) -> int:
    """CREATE DATABASE statements a script runs whatever happens (those in psql's \\if/\\else branch aside)."""
    count, skipping = 0, False
    for line in script.splitlines():
        if line.startswith("\\if "):
            skipping = True
        elif line.startswith("\\endif"):
            skipping = False
        elif not skipping and line.startswith("CREATE DATABASE"):
            count += 1
    return count


# ---------------------------------------------------------------- pure: the key


def test_the_key_follows_the_file_the_server_the_extensions_and_the_hidden_tables() -> None:
    digest = schema_digest(SCHEMA)
    base = cache_key(digest, _facts(), ["schema_migrations"])
    assert base == cache_key(digest, _facts(), ["schema_migrations"])  # stable
    assert base != cache_key(schema_digest(SCHEMA + "-- edited\n"), _facts(), ["schema_migrations"])
    assert base != cache_key(digest, _facts(server_version_num="150019"), ["schema_migrations"])
    assert base != cache_key(digest, _facts(extension_defaults=[["pg_trgm", "1.7"]]), ["schema_migrations"])
    assert base != cache_key(
        digest, _facts(extension_versions=[["pg_trgm", "1.6"], ["pg_trgm", "1.7"]]), ["schema_migrations"]
    )
    assert base != cache_key(digest, ServerFacts(_facts().document, "pg_dump (PostgreSQL) 16.1"), ["schema_migrations"])
    assert base != cache_key(digest, _facts(), ["app_ledger"])
    assert base != cache_key(digest, _facts(), [])


def test_a_corrupt_truncated_or_foreign_cache_file_is_a_miss(tmp_path: Path) -> None:
    digest, key = schema_digest(SCHEMA), "k" * 64
    path = tmp_path / f"desired-{digest[:16]}-{key[:32]}.json"
    assert load_cached(tmp_path, digest, key, "schema.sql") is None  # absent
    for content in (
        "",
        "{",
        "not json",
        "[]",
        json.dumps({"format": CACHE_FORMAT, "key": key}),
        json.dumps({"format": CACHE_FORMAT, "key": "other", "catalog": {}, "dump": ""}),
        json.dumps({"format": CACHE_FORMAT + 1, "key": key, "catalog": {}, "dump": ""}),
        json.dumps({"format": CACHE_FORMAT, "key": key, "catalog": {"tables": 5}, "dump": ""}),
    ):
        path.write_text(content)
        assert load_cached(tmp_path, digest, key, "schema.sql") is None, content
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert load_cached(tmp_path, digest, key, "schema.sql") is None
    path.write_text(json.dumps({"format": CACHE_FORMAT, "key": key, "catalog": {}, "dump": "x"}))
    assert load_cached(tmp_path, digest, key, "schema.sql") is not None  # the control: a sound file is read


# ---------------------------------------------------------------- real server


def test_warm_drift_check_is_one_command_and_creates_no_database(remote: Remote, tmp_path: Path) -> None:
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    cold = diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True)
    assert not cold.drift and cold.desired_cache == "miss" and cold.dump_differences == []
    [stored] = cache.glob("desired-*.json")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert leftovers(remote) == []
    oid = _max_database_oid(remote)
    before = remote.command_count
    warm = diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True)
    assert remote.command_count - before == 2  # the probe (remembered verdicts), then facts + catalog + dump at once
    assert not warm.drift and warm.desired_cache == "hit" and warm.dump_differences == []  # both oracles ran
    assert _max_database_oid(remote) == oid  # no database was created
    # real drift is still drift, warm
    remote.psql("ALTER TABLE t ADD COLUMN extra int;")
    drifted = diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True)
    assert drifted.desired_cache == "hit" and [c.name for c in drifted.result.significant] == ["public.t.extra"]


def test_an_edit_of_schema_sql_misses_and_a_corrupt_file_is_rebuilt(remote: Remote, tmp_path: Path) -> None:
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    assert diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True).desired_cache == "miss"
    edited = SCHEMA + "CREATE TABLE u (id int);\n"
    report = diff_against_sql(remote, edited, "schema.sql", cache_dir=cache, recheck=True)
    assert report.desired_cache == "miss" and [c.name for c in report.result.significant] == ["public.u"]
    assert len(list(cache.glob("desired-*.json"))) == 2
    for path in cache.glob(f"desired-{schema_digest(SCHEMA)[:16]}-*.json"):
        path.write_text('{"format": 1, "key": "')  # cut short, as by a full disk
    again = diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True)
    assert again.desired_cache == "miss" and not again.drift  # a miss, never an error
    assert (
        diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True).desired_cache == "hit"
    )  # and rewritten


def test_another_server_version_is_another_key(remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The facts are read from the server on every run: a server that reports another version misses."""
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    assert diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True).desired_cache == "miss"
    import opsagent.schema.drift as drift

    real = drift.ServerFacts.parse

    def upgraded(facts_json: str, version: str) -> ServerFacts:
        facts = real(facts_json, version)
        return ServerFacts(
            {**facts.document, "server_version_num": str(int(facts.document["server_version_num"]) + 1)}, version
        )

    monkeypatch.setattr(drift.ServerFacts, "parse", staticmethod(upgraded))
    assert diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True).desired_cache == "miss"
    monkeypatch.undo()
    assert diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True).desired_cache == "hit"
    # an extension the server can now install (here: created in the live database, which the key must NOT follow)
    remote.psql("CREATE EXTENSION IF NOT EXISTS pg_trgm;")
    report = diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True)
    assert report.desired_cache == "hit" and report.drift


def test_a_blind_spot_of_the_model_is_still_caught_from_a_warm_cache(remote: Remote, tmp_path: Path) -> None:
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    for expected in ("miss", "hit"):
        report = diff_against_sql(remote, BLIND, "schema.sql", cache_dir=cache, recheck=True)
        assert report.desired_cache == expected
        assert report.drift and report.result.significant == []  # the model alone would say "no drift"
        assert any("SET STORAGE EXTERNAL" in line for d in report.undescribed for line in d.lines)
    fast = diff_against_sql(remote, BLIND, "schema.sql", cache_dir=cache, fast=True)
    assert fast.desired_cache == "hit" and fast.dump_differences is None and not fast.drift  # --fast: the model only


def test_a_plan_builds_one_rehearsal_database_and_nothing_else_when_warm(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote.psql(SCHEMA)
    desired = SCHEMA + "ALTER TABLE t ADD COLUMN born date;\nCREATE TABLE u (id int);\n"
    options = PlanOptions(cache_dir=tmp_path / "cache", template=True, recheck=True)
    outputs: list[str] = []
    sent = _record_scripts(remote, monkeypatch, outputs)
    cold = plan_against_sql(remote, desired, "schema.sql", options)
    assert cold.verified, cold.verification_line()
    # cold: schema.sql materialized once, its dump-and-load form (built beside the rehearsal, kept in the cache for
    # every later plan) + one rehearsal, copied from the template of the live structure built for it
    assert sum(_created(s) for s in sent) == 3 and sum(TEMPLATE_BUILT in o for o in outputs) == 1
    stored = json.loads(next((tmp_path / "cache").glob("desired-*.json")).read_text())
    # the lighter dump-and-load form (the findings to settle were in none of the entries it leaves out)
    assert "CREATE TABLE public.u" in stored["reloaded_partial"]["dump"]
    assert stored["reloaded_partial"]["skipped"] == ["CONSTRAINT public.t t_pkey", "INDEX public.t_note"]
    sent.clear()
    outputs.clear()
    warm = plan_against_sql(remote, desired, "schema.sql", options)
    assert warm.verified and warm.plan.script() == cold.plan.script()
    assert sum(_created(s) for s in sent) == 1 and not any(
        TEMPLATE_BUILT in o for o in outputs
    )  # one copy, nothing rebuilt
    assert len(sent) == 3  # the probe; live catalog + sizes + facts beside the live dump (one command); the rehearsal
    assert not any("DROP DATABASE" in s and "setsid" not in s for s in sent)  # no drop the user waits for
    # without the template: one rehearsal database, loaded from the live dump in its session
    sent.clear()
    plain = plan_against_sql(remote, desired, "schema.sql", dataclasses.replace(options, template=False))
    assert plain.verified and sum(s.count("CREATE DATABASE") for s in sent) == 1
    # the blind spot is refused from the cache too: the plan cannot express it, the dumps show it
    blind = plan_against_sql(remote, BLIND, "schema.sql", options)
    assert not blind.verified and blind.remaining == [] and blind.undescribed
    # the live structure changes: another template; no more than KEEP_TEMPLATES stay on the server
    for n in range(KEEP_TEMPLATES + 1):
        remote.psql(f"CREATE TABLE extra_{n} (id int);")
        assert plan_against_sql(remote, desired, "schema.sql", options).plan.script()
    _wait_for(lambda: len(_templates(remote)) <= KEEP_TEMPLATES)
    sweep(remote, templates=True)  # kept templates hold the test's objects: gone, or its roles could not be dropped
    assert _templates(remote) == []
    assert leftovers(remote) == []


def test_check_reports_what_only_the_dump_sees(project: Project) -> None:
    project.write_migration("001_t.sql", SCHEMA)
    (project.root / "sql" / "schema.sql").write_text(BLIND)
    for _ in range(2):  # cold, then warm from <paths.state>/cache
        result = project.run("check", "--host", "sandbox")
        assert result.returncode == 3, result.stdout + result.stderr
        assert "cannot yet describe" in result.stdout and "SET STORAGE EXTERNAL" in result.stdout
    assert list((project.root / ".opsagent" / "cache").glob("desired-*.json"))
    (project.root / "sql" / "schema.sql").write_text(SCHEMA)
    clean = project.run("check", "--host", "sandbox", "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    document = json.loads(clean.stdout)
    assert document["ok"] and document["dump_oracle"] == {"checked": True, "differences": 0, "cannot_describe": []}


def test_check_project_warm_is_one_session(remote: Remote, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "001_t.sql").write_text(SCHEMA)
    schema = tmp_path / "schema.sql"
    schema.write_text(SCHEMA)
    cache = tmp_path / "cache"
    assert check_project(remote, migrations, schema, cache_dir=cache).ok
    before = remote.command_count
    report = check_project(remote, migrations, schema, cache_dir=cache)
    assert report.ok and report.dump_differences == [] and remote.command_count - before == 1


def test_sync_dry_run_says_nothing_about_drift_and_the_closing_check_uses_the_cache(project: Project) -> None:
    (project.root / "sql" / "schema.sql").write_text(SCHEMA)
    project.write_migration("001_t.sql", SCHEMA)
    dry = project.run("sync", "--host", "sandbox", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "differs from schema.sql" not in dry.stderr and "could not compare" not in dry.stderr
    applied = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert applied.returncode == 0 and "differs from" not in applied.stderr, applied.stdout + applied.stderr
    assert len(list((project.root / ".opsagent" / "cache").glob("desired-*.json"))) == 1
    project.psql("ALTER TABLE t ADD COLUMN extra int;")
    noop = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert noop.returncode == 0 and "differs from schema.sql in 1 object(s)" in noop.stderr, noop.stdout + noop.stderr


# ---------------------------------------------------------------- scratch databases: nothing left behind


def _scratch_names(sandbox: SandboxHandle) -> list[str]:
    rows = sandbox.admin.query_json(
        f"SELECT coalesce(json_agg(datname), '[]') FROM pg_database WHERE starts_with(datname, '{PREFIX}')", "postgres"
    )
    return [str(r) for r in rows]


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def _start_cli(project: Project, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml"), "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "opsagent", *args],
        cwd=project.root,
        text=True,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


SLOW = SCHEMA + "SELECT pg_sleep(10);\n"  # materializing it takes a while: time to kill the client


@pytest.mark.parametrize(("task", "how"), [("plan", signal.SIGKILL), ("diff", signal.SIGKILL), ("plan", signal.SIGINT)])
def test_no_scratch_database_survives_a_killed_or_interrupted_client(
    project: Project, sandbox: SandboxHandle, task: str, how: signal.Signals
) -> None:
    project.psql(SCHEMA)
    (project.root / "sql" / "schema.sql").write_text(SLOW)
    assert sweep(sandbox.admin) == []
    client = _start_cli(project, task, "--host", "sandbox")
    # a cold plan also loads its rehearsal's copy of the live structure while schema.sql materializes
    expected = 2 if task == "plan" else 1
    try:
        _wait_for(lambda: sum(n.startswith(DETACHED_PREFIX) for n in _scratch_names(sandbox)) >= expected)
        abandoned = [n for n in _scratch_names(sandbox) if n.startswith(DETACHED_PREFIX)]
        client.send_signal(how)
        client.wait(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode != 0
    if how == signal.SIGINT:  # Ctrl-C: the client hands the drop to the server's background before it exits
        assert client.returncode == 130, client.stderr.read() if client.stderr else ""
        _wait_for(lambda: not set(abandoned) & set(_scratch_names(sandbox)))
        return
    # SIGKILL: nothing could drop it; the server's watchdog stopped the load, the database stays until the next run
    _wait_for(
        lambda: (
            not sandbox.admin.query_json(
                "SELECT count(*) FROM pg_stat_activity WHERE starts_with(datname, 'opsagent_scratch_')", "postgres"
            )
        )
    )
    assert set(abandoned) <= set(_scratch_names(sandbox))
    (project.root / "sql" / "schema.sql").write_text(
        SCHEMA + "CREATE TABLE u (id int);\n"
    )  # a new file: a run that builds one
    nxt = project.run("diff", "--host", "sandbox")
    assert nxt.returncode == 3, nxt.stdout + nxt.stderr
    assert leftovers(sandbox.admin) == []  # the next run's background job swept it


def _end_session(sandbox: SandboxHandle, session: RemoteProcess, database: str) -> None:
    """End a psql session and wait until the server no longer counts it as connected to ``database``."""
    session.close_stdin()
    session.wait(timeout=30)
    session.close()
    _wait_for(
        lambda: (
            not sandbox.admin.query_json(
                f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'", "postgres"
            )
        )
    )


def test_the_sweep_never_drops_a_scratch_database_its_creator_has_not_connected_to_yet(
    sandbox: SandboxHandle,
) -> None:
    """Between ``CREATE DATABASE`` and ``\\connect`` a database has no session; its creator's lock keeps another
    run's sweep away from it (seen as ``database ... does not exist`` at ``\\connect`` when runs overlapped)."""
    name = f"{DETACHED_PREFIX}creating{os.getpid()}"
    session = sandbox.admin.start(sandbox.admin.psql_argv("postgres", ["-A", "-t", "-v", "ON_ERROR_STOP=1"]))
    try:
        session.write(f"{creating(name)}CREATE DATABASE {name};\nSELECT 'created';\n")
        assert session.read_line(timeout=30) == "created"  # created, locked, nobody connected to it
        assert name in sweep(sandbox.admin, wait=1.0)  # left alone
        session.write(f"\\connect {name}\nSELECT 'connected';\n")
        assert session.read_line(timeout=30) == "connected"
        assert not sandbox.admin.query_json(  # the lock went with the old connection
            f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = {CREATE_LOCK}", "postgres"
        )
    finally:
        _end_session(sandbox, session, name)
    assert sweep(sandbox.admin) == []  # its session is over: garbage now


def test_the_sweep_never_drops_a_scratch_database_in_use(sandbox: SandboxHandle) -> None:
    name = f"{DETACHED_PREFIX}inuse{os.getpid()}"
    sandbox.admin.psql(f'CREATE DATABASE "{name}"', "postgres")
    session = sandbox.admin.start(sandbox.admin.psql_argv(name, ["-A", "-t"]))
    try:
        session.write("SELECT 'connected';\n")
        assert session.read_line(timeout=30) == "connected"
        sweep(sandbox.admin, wait=1.0)
        assert name in _scratch_names(sandbox)  # in use: left alone
    finally:
        _end_session(sandbox, session, name)
    assert sweep(sandbox.admin) == []
