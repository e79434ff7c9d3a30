"""Issue 14's remaining speed-ups, each shown to keep both oracles honest (real sshd + PostgreSQL where remote).

- the live read runs psql and pg_dump at once in ONE command; a failing pg_dump or psql is an error, never a
  short dump; hostile database names travel as arguments;
- the model and the dump oracle skip their parsing only when their own inputs are equal (``same_structure``,
  byte-equal dumps): a difference either one sees is still reported, from the warm path;
- dumps load into scratch databases in batched transactions (``dump_chunks``): the text and its line numbers
  are unchanged;
- a plan compares its rehearsal with the target after one dump-and-load (cached): deparse artifacts no longer
  cost a second double reload, and a real difference is still refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opsagent.errors import OpsagentError
from opsagent.remote.transport import Remote
from opsagent.schema.catalog import DEFAULT_EXCLUDED_TABLES
from opsagent.schema.declarative import PlanOptions, plan_against_sql
from opsagent.schema.desired import load_cached, schema_digest
from opsagent.schema.drift import diff_against_sql, diff_hosts, read_live, same_structure
from opsagent.schema.liveread import live_read_argv
from opsagent.schema.scratch import DUMP_BATCH, dump_chunks

from .conftest import SandboxHandle

SCHEMA = "CREATE TABLE t (id int PRIMARY KEY, note text);\nCREATE INDEX t_note ON t (note);\n"
# a CHECK whose deparse changes through a dump-and-load (ARRAY['a'::varchar]::text[] vs ARRAY[('a'::varchar)::text])
ARTIFACT = "CREATE TABLE kinds (kind varchar(20) NOT NULL, CONSTRAINT kind_ok CHECK (kind IN ('a', 'b')));\n"


def _record(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Observe (not replace) every command's stdin (or argv) sent to the server."""
    sent: list[str] = []
    original = remote.run

    def run(argv: Any, **kwargs: Any) -> Any:
        stdin = kwargs.get("stdin")
        sent.append(stdin.decode() if isinstance(stdin, bytes) else stdin or " ".join(argv))
        return original(argv, **kwargs)

    monkeypatch.setattr(remote, "run", run)
    return sent


# ---------------------------------------------------------------- pure


def _dump(entries: int) -> str:
    out = ["--", "-- PostgreSQL database dump", "--", "", "SET statement_timeout = 0;", ""]
    for n in range(entries):
        out += [
            "--",
            f"-- Name: t{n}; Type: TABLE; Schema: public; Owner: postgres",
            "--",
            "",
            f"CREATE TABLE public.t{n} (",
            "    id integer",
            ");",
            "",
        ]
    return "\n".join(out) + "\n"


def test_dump_chunks_keep_the_text_and_its_line_numbers_and_cut_only_at_entry_headers() -> None:
    dump = _dump(2 * DUMP_BATCH + 7)
    chunks = dump_chunks(dump, "live (dump)")
    loaded = [c for c in chunks if c.source is not None]
    assert len(loaded) == 3 and [c.text for c in chunks if c.source is None] == ["BEGIN;", "COMMIT;"] * 3
    assert "\n".join(c.text for c in loaded) == dump  # nothing added to or taken from pg_dump's text
    lines = dump.split("\n")
    for chunk in loaded:  # every chunk starts where its text is in the dump, and (after the first) at an entry's frame
        assert lines[chunk.first_line - 1 : chunk.first_line - 1 + chunk.text.count("\n") + 1] == chunk.text.split("\n")
    assert all(c.text.startswith("--\n-- Name: ") for c in loaded[1:])
    assert dump_chunks(_dump(3), "x") == [dump_chunks(_dump(3), "x")[0], *dump_chunks(_dump(3), "x")[1:]]
    assert len([c for c in dump_chunks(_dump(3), "x") if c.source]) == 1  # a small dump: one transaction


def test_same_structure_ignores_only_the_server_facts() -> None:
    doc = {"tables": [{"schema": "public", "name": "t"}], "server_version": 150000, "depends": [["a", "b"]]}
    assert same_structure(doc, {**doc, "server_version": 160000, "depends": []})
    assert not same_structure(doc, {**doc, "tables": [{"schema": "public", "name": "u"}]})
    assert not same_structure(doc, {**doc, "indexes": [{"name": "i"}]})  # a key one side lacks is a difference
    assert same_structure(
        {"triggers": [{"n": 1}, {"n": 2}]}, {"triggers": [{"n": 2}, {"n": 1}]}
    )  # rows in another order
    assert not same_structure(
        {"triggers": [{"n": 1}, {"n": 1}]}, {"triggers": [{"n": 1}, {"n": 2}]}
    )  # a multiset, not a set
    assert not same_structure({"tables": [1]}, {"tables": [1, 1]})
    assert not same_structure({"server": {"a": 1}}, {"server": {"a": 2}})


def test_the_live_read_argv_carries_names_as_arguments_only(sandbox: SandboxHandle) -> None:
    class FakeHost:
        pg_host = "/run/post gres"
        pg_port = 5433
        database = "x"

    class FakeRemote:
        host = FakeHost()

        def db_args(self, database: str) -> list[str]:
            return ["-d", "dbname='" + database + "'"]

    argv = live_read_argv(FakeRemote(), "evil'; $(touch /tmp/x)", "ab" * 8, ["public.schema_migrations"])  # type: ignore[arg-type]
    assert argv[:2] == ["sh", "-c"] and "evil" not in argv[2] and "/run/post gres" in argv
    with pytest.raises(ValueError):
        live_read_argv(FakeRemote(), "x", "not hex", [])  # type: ignore[arg-type]


# ---------------------------------------------------------------- remote


def test_the_live_read_is_one_command_with_both_oracles_inputs(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    remote.psql(SCHEMA)
    before = remote.command_count
    state = read_live(remote, remote.host.database)
    assert remote.command_count - before == 1
    assert "public.t" in state.catalog.tables and state.dump is not None and "CREATE TABLE public.t (" in state.dump
    assert state.facts.document["server_version_num"] and "pg_dump" in state.facts.pg_dump_version
    fast = read_live(remote, remote.host.database, dump=False)
    assert fast.dump is None and fast.document == state.document


def test_a_failing_pg_dump_or_psql_in_the_live_read_is_an_error_not_a_short_dump(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote.psql(SCHEMA)
    import opsagent.schema.liveread as liveread

    broken_dump = liveread.LIVE_READ_SH.replace("pg_dump --schema-only", "pg_dump --no-such-option --schema-only")
    broken_sql = liveread.LIVE_READ_SH.replace("-v ON_ERROR_STOP=1", "-v ON_ERROR_STOP=1 -c 'SELECT 1/0'")
    for held in (False, True):  # as a command of its own, and through the command a sync holds for its check
        for script, failing in ((broken_dump, "pg_dump"), (broken_sql, "psql")):
            monkeypatch.setattr(liveread, "LIVE_READ_SH", script)
            if held:
                liveread.hold_live_read(remote, remote.host.database, DEFAULT_EXCLUDED_TABLES)
            before = remote.command_count
            with pytest.raises(OpsagentError, match=failing):
                read_live(remote, remote.host.database)
            assert remote.command_count - before == (0 if held else 1)
            monkeypatch.undo()


def test_a_hostile_database_name_is_read_live(sandbox: SandboxHandle, remote: Remote) -> None:
    name = "odd'; $(touch /tmp/opsagent-pwned) \" db"
    remote.psql(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}";', "postgres")
    try:
        remote.psql(SCHEMA, name)
        state = read_live(remote, name)
        assert "public.t" in state.catalog.tables and state.dump and "CREATE TABLE public.t (" in state.dump
        assert not Path("/tmp/opsagent-pwned").exists()
    finally:
        remote.psql(f'DROP DATABASE "{name.replace(chr(34), chr(34) * 2)}" WITH (FORCE);', "postgres")


def test_the_fast_paths_still_report_what_either_oracle_sees(remote: Remote, tmp_path: Path) -> None:
    """Warm: equal inputs skip the parsing; a difference seen by the model only or by the dump only is still drift."""
    remote.psql(SCHEMA)
    cache = tmp_path / "cache"
    assert not diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True).drift
    clean = diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True)
    assert clean.desired_cache == "hit" and not clean.drift and clean.dump_differences == []
    remote.psql("ALTER TABLE t REPLICA IDENTITY FULL;")  # the dump shows it; whether the model does or not, it is drift
    replica = diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True)
    assert replica.desired_cache == "hit" and replica.drift
    assert any("REPLICA IDENTITY FULL" in line for d in replica.dump_differences or [] for line in d.lines)
    remote.psql("ALTER TABLE t REPLICA IDENTITY DEFAULT; ALTER TABLE t ADD COLUMN extra int;")
    column = diff_against_sql(remote, SCHEMA, "schema.sql", cache_dir=cache, recheck=True)
    assert [c.name for c in column.result.significant] == ["public.t.extra"] and column.dump_differences


def test_diff_hosts_reads_each_side_in_one_command(sandbox: SandboxHandle, remote: Remote) -> None:
    remote.psql(SCHEMA)
    other_db = remote.host.database + "_other"
    remote.psql(f'CREATE DATABASE "{other_db}" TEMPLATE "{remote.host.database}";', "postgres")
    import dataclasses

    from opsagent.remote.transport import open_remote

    try:
        with open_remote(dataclasses.replace(remote.host, database=other_db)) as other:
            before = remote.command_count + other.command_count
            same = diff_hosts(remote, other)
            assert remote.command_count + other.command_count - before == 2
            assert not same.drift and same.dump_differences == []
            other.psql("ALTER TABLE t ALTER COLUMN note SET STORAGE EXTERNAL;")  # a blind spot of the model
            blind = diff_hosts(remote, other)
            assert blind.drift and blind.result.significant == [] and blind.undescribed
    finally:
        remote.psql(f'DROP DATABASE "{other_db}" WITH (FORCE);', "postgres")


def test_a_plan_settles_deparse_artifacts_with_the_cached_reloaded_target(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote.psql(ARTIFACT)
    desired = ARTIFACT + "ALTER TABLE kinds ADD COLUMN note text;\n"
    options = PlanOptions(cache_dir=tmp_path / "cache", recheck=True)
    first = plan_against_sql(remote, desired, "schema.sql", options)
    assert first.verified, first.verification_line()
    [path] = (tmp_path / "cache").glob("desired-*.json")
    stored = json.loads(path.read_text())
    assert isinstance(stored.get("reloaded_catalog"), dict) and "kind_ok" in stored["reloaded_dump"]  # made once, kept
    sent = _record(remote, monkeypatch)
    warm = plan_against_sql(remote, desired, "schema.sql", options)
    assert warm.verified, warm.verification_line()
    # the probe, the live read and ONE rehearsal session: neither the reloaded target nor confirm's reload is rebuilt
    assert len(sent) == 3 and sum(s.count("CREATE DATABASE") for s in sent) == 1
    cached = load_cached(tmp_path / "cache", schema_digest(desired), stored["key"], "schema.sql")
    assert cached is not None and cached.reloaded_dump == stored["reloaded_dump"]
    # a real difference the plan cannot make is still refused, reloaded target or not
    blind = desired + "ALTER TABLE kinds ALTER COLUMN note SET STORAGE EXTERNAL;\n"
    refused = plan_against_sql(remote, blind, "schema.sql", options)
    assert not refused.verified and refused.undescribed
    assert any("SET STORAGE EXTERNAL" in line for d in refused.undescribed for line in d.lines)


def test_a_live_database_restored_from_a_dump_is_no_drift_warm_in_one_command(remote: Remote, tmp_path: Path) -> None:
    """Its CHECK deparses differently from schema.sql's build;
    the cached reloaded target says so without a scratch load."""
    from opsagent.schema.extract import dump_schema

    remote.psql(ARTIFACT)
    dump = dump_schema(remote)
    remote.psql("DROP TABLE kinds;")
    remote.psql(dump)  # the live database as a restore from a dump leaves it
    cache = tmp_path / "cache"
    first = diff_against_sql(remote, ARTIFACT, "schema.sql", cache_dir=cache, recheck=True)
    assert not first.drift, first.to_dict()
    before = remote.command_count
    warm = diff_against_sql(remote, ARTIFACT, "schema.sql", cache_dir=cache, recheck=True)
    assert not warm.drift and warm.desired_cache == "hit" and remote.command_count - before == 2
    remote.psql(
        "ALTER TABLE kinds DROP CONSTRAINT kind_ok; "
        "ALTER TABLE kinds ADD CONSTRAINT kind_ok CHECK (kind IN ('a', 'c'));"
    )
    real = diff_against_sql(
        remote, ARTIFACT, "schema.sql", cache_dir=cache, recheck=True
    )  # a real change is not an artifact
    assert real.drift and [c.name for c in real.result.significant] == ["public.kinds.kind_ok"]


@pytest.mark.parametrize(
    "statement",
    [
        "BEGIN;\nCREATE TABLE b ();\nCOMMIT;",  # the file's own transactions
        "ALTER TYPE mood ADD VALUE 'meh';",  # a new enum value cannot be used in the transaction that added it
        "CREATE INDEX CONCURRENTLY t_c ON t (id);",
        "SET LOCAL search_path = other;",  # means something else inside a transaction
        "SELECT set_config('search_path', 'other', true);",
        "DO $$ BEGIN PERFORM 1; END $$;",
        "VACUUM t;",
    ],
)
def test_sql_chunks_load_a_file_as_written_unless_every_statement_may_share_a_transaction(statement: str) -> None:
    from opsagent.schema.scratch import sql_chunks

    plain = "CREATE TYPE mood AS ENUM ('ok');\n" + "".join(f"CREATE TABLE t{n} (id int);\n" for n in range(7))
    batched = sql_chunks(plain, "schema.sql", every=3)
    assert [c.text for c in batched if c.source is None] == ["BEGIN;", "COMMIT;"] * 3
    assert "\n".join(c.text for c in batched if c.source) == plain and [c.first_line for c in batched if c.source] == [
        1,
        4,
        7,
    ]
    mixed = plain + statement + "\n"
    assert sql_chunks(mixed, "schema.sql", every=3) == [sql_chunks(mixed, "schema.sql", every=3)[0]]
    assert [c.text for c in sql_chunks(mixed, "schema.sql", every=3)] == [mixed]


def test_telling_what_may_share_a_transaction_builds_no_syntax_tree() -> None:
    # a 5,000-table schema.sql spent 4 s building pglast ASTs for this before its materialization could start
    from opsagent.migrate.files import not_in_transaction
    from opsagent.migrate.sqltext import split_statements

    sql = "CREATE TABLE a (id int);\nCREATE INDEX a_i ON a (id);\nCREATE INDEX CONCURRENTLY a_c ON a (id);\nVACUUM a;\n"
    statements = split_statements(sql, "schema.sql")
    found = [not_in_transaction(s) for s in statements]
    assert found == [None, None, "CREATE INDEX CONCURRENTLY", "VACUUM"]
    assert all(s._node is None for s in statements)  # only libpg_query's JSON tree, and only for the kinds that may
    assert statements[2].node.concurrent  # built now (as a lint would) ...
    assert not_in_transaction(statements[2]) == "CREATE INDEX CONCURRENTLY"  # ... and read as it is


def test_sql_chunks_never_cut_a_line_two_statements_share() -> None:
    from opsagent.schema.scratch import sql_chunks

    sql = "CREATE TABLE a (id int);\nCREATE TABLE b (id int); CREATE TABLE c (id int);\nCREATE TABLE d (id int);\n"
    chunks = [c for c in sql_chunks(sql, "schema.sql", every=1) if c.source]
    assert "\n".join(c.text for c in chunks) == sql
    assert all(not c.text.startswith("CREATE TABLE c") for c in chunks)  # c shares b's line: no cut before it
    assert [c.first_line for c in chunks] == [1, 2, 3] and "CREATE TABLE c" in chunks[1].text
    assert [c.first_line for c in sql_chunks(sql, "schema.sql", every=2) if c.source] == [
        1
    ]  # c was the candidate: none


def test_a_batched_schema_sql_reports_its_error_at_file_line_and_materializes_otherwise(
    remote: Remote, tmp_path: Path
) -> None:
    from opsagent.schema.scratch import DUMP_BATCH, LoadError

    tables = "".join(f"CREATE TABLE t{n} (id int PRIMARY KEY, note text);\n" for n in range(DUMP_BATCH + 20))
    remote.psql(tables)
    report = diff_against_sql(remote, tables, "schema.sql", cache_dir=tmp_path / "cache")
    assert not report.drift and report.dump_differences == []
    broken = tables + "CREATE TABLE broken (id int REFERENCES nowhere (id));\n"
    with pytest.raises(LoadError) as error:
        diff_against_sql(remote, broken, "schema.sql", cache_dir=tmp_path / "cache")
    assert error.value.source == "schema.sql" and error.value.line == DUMP_BATCH + 21
