"""extract / diff / check: dump normalization (pure), scratch databases and drift on a real sandbox."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from opsagent.errors import CommandFailed, RemoteError
from opsagent.remote.markers import Markers
from opsagent.remote.transport import Remote
from opsagent.schema.catalog import introspect
from opsagent.schema.drift import check_project, diff_against_snapshot, diff_against_sql, drift_count
from opsagent.schema.extract import extract, extract_argv, gunzip, normalize_dump, split_extract_output, strip_restrict
from opsagent.schema.scratch import PREFIX, Chunk, LoadError, Script, leftovers, scratch_database

from .conftest import CORPORA, Project, SandboxHandle, write_inventory

# ---------------------------------------------------------------- normalization (pure)

DUMP = textwrap.dedent("""\
    --
    -- PostgreSQL database dump
    --

    \\restrict {key}

    -- Dumped from database version 15.{minor} (Debian 15.{minor}-0+deb12u1)
    -- Dumped by pg_dump version 15.{minor} (Debian 15.{minor}-0+deb12u1)

    SET statement_timeout = 0;
    SET lock_timeout = 0;
    SET idle_in_transaction_session_timeout = 0;
    SET client_encoding = 'UTF8';
    SET standard_conforming_strings = on;
    SELECT pg_catalog.set_config('search_path', '', false);
    SET check_function_bodies = false;
    SET xmloption = content;
    SET client_min_messages = warning;
    SET row_security = off;

    --
    -- Name: f(); Type: FUNCTION; Schema: public; Owner: postgres
    --

    CREATE FUNCTION public.f() RETURNS trigger
        LANGUAGE plpgsql
        AS $$ begin
    SET search_path = public;


    return new; end $$;

    SET default_tablespace = '';

    --
    -- PostgreSQL database dump complete
    --

    \\unrestrict {key}

    """)


def _dump(key: str = "abcDEF123", minor: str = "18") -> str:
    return DUMP.format(key=key, minor=minor)


def test_normalize_is_stable_across_runs_versions_and_keys() -> None:
    first = normalize_dump(_dump("QE9nkUq89s1bxeyKyAnEM", "18"))
    second = normalize_dump(_dump("jlhsjthp3HQgMKJZ3i2B6", "14"))
    assert first == second
    assert normalize_dump(first) == first  # idempotent: a snapshot re-normalizes to itself


def test_normalize_drops_only_the_noise() -> None:
    out = normalize_dump(_dump())
    assert "Dumped from" not in out and "Dumped by" not in out
    assert "SET statement_timeout" not in out and "set_config('search_path'" not in out
    assert "abcDEF123" not in out
    # object definitions stay verbatim, even lines that look like preamble noise
    assert "AS $$ begin\nSET search_path = public;\n\n\nreturn new; end $$;" in out
    assert "SET default_tablespace = '';" in out
    assert out.startswith("\\restrict ") and out.rstrip().endswith(out.split()[1])
    assert out.endswith("\n") and not out.endswith("\n\n")
    assert "\n\n\n--\n-- Name: f()" not in out and "--\n-- PostgreSQL database dump\n--\n\n--\n-- Name: f()" in out


@pytest.mark.parametrize(("body_change", "differs"), [("return new;", False), ("return old;", True)])
def test_restrict_key_depends_on_content(body_change: str, differs: bool) -> None:
    base = normalize_dump(_dump())
    changed = normalize_dump(_dump().replace("return new;", body_change))
    assert (base.split("\n", 1)[0] != changed.split("\n", 1)[0]) is differs


def test_normalize_without_restrict_and_empty_database() -> None:
    plain = "\n".join(line for line in _dump().split("\n") if "restrict" not in line)
    out = normalize_dump(plain)
    assert "restrict" not in out and out.startswith("--\n-- PostgreSQL database dump\n--\n")
    empty = (
        "--\n-- PostgreSQL database dump\n--\n\nSET lock_timeout = 0;\n\n"
        "--\n-- PostgreSQL database dump complete\n--\n\n"
    )
    assert (
        normalize_dump(empty) == "--\n-- PostgreSQL database dump\n--\n\n--\n-- PostgreSQL database dump complete\n--\n"
    )
    assert "restrict" not in strip_restrict(normalize_dump(_dump()))


def test_gunzip_rejects_truncated_stream() -> None:
    import gzip

    from opsagent.errors import RemoteError

    data = gzip.compress(b"CREATE TABLE t ();\n" * 1000)
    assert gunzip(data, "h") == "CREATE TABLE t ();\n" * 1000
    with pytest.raises(RemoteError, match="truncated"):
        gunzip(data[: len(data) // 2], "h")


# ---------------------------------------------------------------- script line mapping (pure)


def test_script_maps_lines_back_to_sources() -> None:
    script = Script()
    script.add("CREATE DATABASE x;\n\\connect x\n")  # ours: 2 lines
    script.add("CREATE TABLE a (id int);\n\nCREATE TABLE b (\n  id int\n);\n", "schema.sql")
    script.add("SELECT 1;", "002_x.sql", first_line=7)
    assert script.lines == 8
    assert script.locate(1)[0].source is None
    chunk, line = script.locate(6)
    assert (chunk.source, line) == ("schema.sql", 4)
    assert script.locate(8)[0].source == "002_x.sql" and script.locate(8)[1] == 7
    assert script.text.count("\n") == 8


def test_statement_start_points_at_the_statement() -> None:
    from opsagent.schema.scratch import statement_start

    chunk = Chunk("CREATE TABLE a (id int);\n\nCREATE TABLE b (\n  id int\n    REFERENCES nope\n);\n", "schema.sql")
    assert statement_start(chunk, 6) == 3
    assert statement_start(Chunk("garbage (((", "x.sql"), 1) == 1


# ---------------------------------------------------------------- against the sandbox

SCHEMA = """\
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE author (id serial PRIMARY KEY, name text NOT NULL UNIQUE, mood mood);
CREATE TABLE book (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    author_id int NOT NULL REFERENCES author (id),
    pages posint,
    title text CHECK (title <> '')
);
CREATE INDEX book_author_idx ON book (author_id);
CREATE VIEW book_titles AS SELECT b.title, a.name FROM book b JOIN author a ON a.id = b.author_id;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER book_touch BEFORE UPDATE ON book FOR EACH ROW EXECUTE FUNCTION touch();
"""
EXPECTED_STATS = {
    "schemas": 1,
    "tables": 2,
    "columns": 7,
    "indexes": 1,
    "primary_keys": 2,
    "foreign_keys": 1,
    "unique_constraints": 1,
    "check_constraints": 1,
    "exclude_constraints": 0,
    "views": 1,
    "materialized_views": 0,
    "sequences": 1,
    "functions": 1,
    "procedures": 0,
    "triggers": 1,
    "enum_types": 1,
    "composite_types": 0,
    "domain_types": 1,
    "extensions": 0,
    "policies": 0,
    "collations": 0,
    "text_search_configurations": 0,
    "text_search_dictionaries": 0,
}


def _scratch_left(sandbox: SandboxHandle) -> list[str]:
    return leftovers(sandbox.admin)


def _known(project: Project) -> Project:
    (project.root / "sql" / "schema.sql").write_text(SCHEMA)
    project.psql(SCHEMA)
    return project


def test_extract_twice_is_byte_identical_with_catalog_stats(project: Project) -> None:
    _known(project)
    first = project.run("extract", "--host", "sandbox", "--json")
    assert first.returncode == 0, first.stderr
    snapshot = project.root / "sql" / "snapshots" / "sandbox" / "schema.sql"
    text = snapshot.read_bytes()
    second = project.run("extract", "--host", "sandbox", "--out", "seed_dump.sql")
    assert second.returncode == 0, second.stderr
    assert (project.root / "seed_dump.sql").read_bytes() == text
    doc = json.loads(first.stdout)
    assert doc["stats"] == EXPECTED_STATS
    assert doc["bytes"] == len(text) and doc["path"] == str(snapshot)
    assert b"CREATE TABLE public.book (" in text and b"Dumped from" not in text
    for label in ("constraints: foreign key", "types: enum", "snapshot size", "materialized views"):
        assert label in second.stdout


def test_extract_takes_one_command_and_loads_back(remote: Remote) -> None:
    remote.psql(SCHEMA)
    before = remote.command_count
    result = extract(remote)
    assert remote.command_count - before == 1  # pg_dump and the statistics share one server-side sh
    assert result.stats == EXPECTED_STATS == introspect(remote).stats()
    # the normalized snapshot materializes cleanly (the --against snapshot path) and is structurally equal
    report = diff_against_sql(remote, result.dump, "snapshot.sql")
    assert report.result.is_empty, report.result.to_dict()


# every kind the statistics count, with the model's traps: partitions (their indexes and inherited CHECKs are the
# parent's), inheritance, identity and owned sequences, domain constraints, an extension's objects, procedures,
# aggregates, policies, collations, text search, a constraint trigger, and the ledger in a schema of its own
RICH = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('ok', 'sad');
CREATE TYPE app.pair AS (a int, b text);
CREATE DOMAIN app.posint AS int CHECK (VALUE > 0) NOT NULL;
CREATE TYPE app.span AS RANGE (subtype = int4);
CREATE COLLATION app.c_ci (provider = libc, locale = 'C');
CREATE TEXT SEARCH DICTIONARY app.simple_d (TEMPLATE = pg_catalog.simple);
CREATE TEXT SEARCH CONFIGURATION app.cfg (COPY = pg_catalog.simple);
CREATE TABLE app.parent (id int GENERATED ALWAYS AS IDENTITY, at date NOT NULL, n app.posint, CHECK (id > 0),
                         PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE app.p2024 PARTITION OF app.parent FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE INDEX parent_n ON app.parent (n);
CREATE TABLE app.base (id serial PRIMARY KEY, note text COLLATE app.c_ci,
                       CONSTRAINT note_len CHECK (length(note) < 100));
CREATE TABLE app.child (extra int UNIQUE, EXCLUDE USING gist (extra WITH =)) INHERITS (app.base);
CREATE TABLE app.refs (id bigint PRIMARY KEY, base_id int REFERENCES app.base (id), m app.mood);
CREATE SEQUENCE app.loose;
CREATE VIEW app.v AS SELECT id FROM app.base;
CREATE MATERIALIZED VIEW app.mv AS SELECT id FROM app.base;
CREATE INDEX mv_id ON app.mv (id);
CREATE FUNCTION app.f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE PROCEDURE app.p() LANGUAGE sql AS $$ SELECT 1 $$;
CREATE AGGREGATE app.total(int) (SFUNC = int4pl, STYPE = int);
CREATE TRIGGER t BEFORE INSERT ON app.base FOR EACH ROW EXECUTE FUNCTION app.f();
CREATE CONSTRAINT TRIGGER ct AFTER INSERT ON app.refs DEFERRABLE FOR EACH ROW EXECUTE FUNCTION app.f();
CREATE TRIGGER pt BEFORE INSERT ON app.parent FOR EACH ROW EXECUTE FUNCTION app.f();
ALTER TABLE app.refs ENABLE ROW LEVEL SECURITY;
CREATE POLICY mine ON app.refs USING (id > 0);
CREATE SCHEMA ops;
CREATE TABLE ops.ledger (version text PRIMARY KEY, description text, applied_at timestamptz NOT NULL DEFAULT now(),
                         n serial);
CREATE TABLE public.ledger (version text PRIMARY KEY);
"""


def test_extract_statistics_are_the_models_counts_on_every_kind(remote: Remote) -> None:
    remote.psql("CREATE EXTENSION IF NOT EXISTS btree_gist;\n" + RICH)
    ledger = ('"ops"."ledger"',)
    result = extract(remote, exclude_tables=ledger)
    model = introspect(remote, exclude_tables=ledger).stats()
    assert result.stats == model
    # the ledger (and its serial) is left out, the user's public.ledger is counted; the ops schema holds only the ledger
    assert model["tables"] == 6 and model["sequences"] == 2 and model["schemas"] == 2
    assert "CREATE TABLE ops.ledger" in result.dump  # the snapshot itself is pg_dump's, complete


def test_extract_one_command_is_fixed_text_with_positional_arguments(remote: Remote) -> None:
    argv = extract_argv(remote, "x'; touch /tmp/pwn; '$(id)", "ab" * 16)
    assert argv[:2] == ["sh", "-c"] and "$(id)" not in argv[2] and "touch" not in argv[2]
    assert argv[5] == "dbname='x\\'; touch /tmp/pwn; \\'$(id)'"  # conninfo-quoted, a positional parameter
    with pytest.raises(ValueError):
        extract_argv(remote, "db", "$(reboot)")


def test_extract_output_needs_its_marker() -> None:
    token = "cd" * 16
    dump, stats = split_extract_output(
        b"\x1f\x8b..." + f"\n{Markers(token).line('extract')}\n".encode() + b'{"tables": 3}\n', token, "h"
    )
    assert dump == b"\x1f\x8b..." and stats == {"tables": 3}
    with pytest.raises(RemoteError, match="without its statistics"):
        split_extract_output(b"\x1f\x8b cut", token, "h")
    with pytest.raises(
        RemoteError, match="without its statistics"
    ):  # a forged marker with another token does not count
        split_extract_output(f"x\n{Markers('ef' * 16).line('extract')}\n{{\"tables\": 1}}\n".encode(), token, "h")


def test_extract_of_a_missing_database_fails_in_one_line(remote: Remote) -> None:
    with pytest.raises(CommandFailed) as info:
        extract(remote, "no_such_db_here")
    assert "no_such_db_here" in info.value.message and "\n" not in info.value.message


def test_diff_clean_then_manual_alter_is_drift(project: Project, sandbox: SandboxHandle) -> None:
    _known(project)
    clean = project.run("diff", "--host", "sandbox")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no drift" in clean.stdout
    project.psql("ALTER TABLE book ADD COLUMN isbn text")
    drift = project.run("diff", "--host", "sandbox", "--json")
    assert drift.returncode == 3, drift.stderr
    doc = json.loads(drift.stdout)
    assert doc["drift"] is True and doc["counts"] == {"extra": 1, "missing": 0, "changed": 0}
    assert doc["changes"] == {
        "column": [
            {
                "kind": "column",
                "name": "public.book.isbn",
                "status": "extra",
                "details": ["book.isbn: text"],
                "severity": "normal",
            }
        ]
    }
    text = project.run("diff", "--host", "sandbox", "--text")
    assert text.returncode == 3
    assert "book.isbn" in text.stdout and "only in live" in text.stdout
    assert "-    isbn text," in text.stdout and "+++ sql/schema.sql" in text.stdout
    assert _scratch_left(sandbox) == []


def test_diff_against_snapshot(project: Project) -> None:
    _known(project)
    missing = project.run("diff", "--host", "sandbox", "--against", "snapshot")
    assert missing.returncode == 2 and "run 'inv extract' first" in missing.stderr
    assert project.run("extract", "--host", "sandbox").returncode == 0
    assert project.run("diff", "--host", "sandbox", "--against", "snapshot").returncode == 0
    project.psql("DROP INDEX book_author_idx")
    drift = project.run("diff", "--host", "sandbox", "--against", "snapshot", "--json")
    assert drift.returncode == 3
    assert [(c["name"], c["status"]) for c in json.loads(drift.stdout)["changes"]["index"]] == [
        ("public.book_author_idx", "missing")
    ]


def test_diff_against_another_host(project: Project, sandbox: SandboxHandle) -> None:
    other_db = sandbox.create_database()
    other = sandbox.host_for(other_db)
    write_inventory(project.root, {"sandbox": project.host, "staging": other})
    project.psql(SCHEMA)
    with sandbox.remote(other_db) as r:
        r.psql(SCHEMA)
    assert project.run("diff", "--host", "sandbox", "--against-host", "staging").returncode == 0
    with sandbox.remote(other_db) as r:
        r.psql("ALTER TABLE author ALTER COLUMN name DROP NOT NULL")
    drift = project.run("diff", "--host", "sandbox", "--against-host", "staging", "--json")
    assert drift.returncode == 3
    doc = json.loads(drift.stdout)
    assert doc["desired"] == f"staging:{other_db}"
    assert doc["changes"]["column"][0]["details"] == ["author.name: NOT NULL → NULL"]


def test_failing_schema_is_reported_at_file_line_and_scratch_dropped(project: Project, sandbox: SandboxHandle) -> None:
    (project.root / "sql" / "schema.sql").write_text(
        "CREATE TABLE a (id int PRIMARY KEY);\n\nCREATE TABLE b (\n  a_id int\n    REFERENCES nope (id)\n);\n"
    )
    result = project.run("diff", "--host", "sandbox")
    assert result.returncode == 1
    assert 'sql/schema.sql:3: relation "nope" does not exist' in result.stderr
    assert "Traceback" not in result.stderr
    assert _scratch_left(sandbox) == []


def test_missing_extension_is_a_clear_error(remote: Remote, sandbox: SandboxHandle) -> None:
    with (
        pytest.raises(LoadError) as info,
        scratch_database(remote, "-- needs\nCREATE EXTENSION no_such_ext;\n", "schema.sql"),
    ):
        pass
    assert info.value.message == "schema.sql:2: extension 'no_such_ext' is not installed on sandbox"
    assert info.value.hint and "postgresql-contrib" in info.value.hint
    assert _scratch_left(sandbox) == []


def test_scratch_dropped_on_ctrl_c(remote: Remote, sandbox: SandboxHandle) -> None:
    with pytest.raises(KeyboardInterrupt), scratch_database(remote, "CREATE TABLE t (id int);", "schema.sql") as name:
        assert name.startswith(PREFIX) and _scratch_left(sandbox) == [name]
        raise KeyboardInterrupt
    assert _scratch_left(sandbox) == []


def test_diff_round_trips_and_drift_count(remote: Remote, tmp_path: Path) -> None:
    remote.psql(SCHEMA + "ALTER TABLE author ADD COLUMN born date; DROP VIEW book_titles;")
    before = remote.command_count
    report = diff_against_sql(remote, SCHEMA, "schema.sql")
    assert remote.command_count - before == 2  # the live side; the scratch session (its drop goes to the background)
    assert {(c.kind, c.name, c.status) for c in report.result.changes} == {
        ("column", "public.author.born", "extra"),
        ("view", "public.book_titles", "missing"),
    }
    schema = tmp_path / "schema.sql"
    schema.write_text(SCHEMA)
    assert drift_count(remote, schema) == 2


def test_musicbrainz_extract_is_stable_and_its_snapshot_materializes_identically(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    corpus = CORPORA / "schemas" / "musicbrainz.sql"
    if not corpus.exists():
        pytest.skip(f"{corpus} absent (shared corpora are not part of a fresh clone)")
    database = sandbox.create_database("mb")
    with sandbox.remote(database) as remote:
        remote.psql(corpus.read_text())
        first, second = extract(remote), extract(remote)
        assert first.dump == second.dump
        assert first.stats == introspect(remote).stats()  # the server's counts are the model's
        assert first.stats["tables"] >= 373 and first.stats["triggers"] >= 448 and first.stats["extensions"] == 3
        snapshot = tmp_path / "schema.sql"
        snapshot.write_text(first.dump)
        remote.psql("ALTER TABLE musicbrainz.artist ADD COLUMN nickname text")
        changed = diff_against_snapshot(remote, snapshot)
    # dump/restore deparse differences (ARRAY casts, view column aliases) cancel out: only the real change remains
    assert [(c.kind, c.name, c.status) for c in changed.result.changes] == [
        ("column", "musicbrainz.artist.nickname", "extra")
    ]


def test_live_restored_from_a_dump_is_not_drift_but_a_real_change_is(remote: Remote) -> None:
    schema = (
        "CREATE TABLE t (s varchar(10) CHECK (s IN ('a', 'b')), n int);\nCREATE VIEW v AS SELECT s, NULL::int FROM t;\n"
    )
    remote.psql(schema)
    dump = extract(remote).dump
    remote.psql("DROP VIEW v; DROP TABLE t;")
    remote.psql(dump)  # like a production database restored from a backup: deparses differently
    assert diff_against_sql(remote, schema, "schema.sql").result.is_empty
    remote.psql("ALTER TABLE t DROP CONSTRAINT t_s_check, ADD CONSTRAINT t_s_check CHECK (s IN ('a', 'b', 'c'))")
    changes = diff_against_sql(remote, schema, "schema.sql").result.changes
    assert [(c.kind, c.name, c.status) for c in changes] == [("constraint", "public.t.t_s_check", "changed")]


# ---------------------------------------------------------------- inv check

MIGRATIONS = {
    "001_create_authors.sql": "CREATE TABLE author (id serial PRIMARY KEY, name text NOT NULL);\n",
    "002_books.sql": "BEGIN;\nCREATE TABLE book (id int PRIMARY KEY, author_id int REFERENCES author (id));\nCOMMIT;\n",
    "003_add_title.sql": "ALTER TABLE book ADD COLUMN title text -- shown in lists\n",
    "004_index.sql": "-- opsagent:no-transaction\nCREATE INDEX CONCURRENTLY book_author_idx ON book (author_id);\n",
}
CHECK_SCHEMA = """\
CREATE TABLE author (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE book (id int PRIMARY KEY, author_id int REFERENCES author (id), title text);
CREATE INDEX book_author_idx ON book (author_id);
"""


def _check_project(project: Project, schema: str) -> None:
    for name, sql in MIGRATIONS.items():
        project.write_migration(name, sql)
    (project.root / "sql" / "schema.sql").write_text(schema)


def test_check_passes_on_consistent_project(project: Project, sandbox: SandboxHandle) -> None:
    _check_project(project, CHECK_SCHEMA)
    result = project.run("check", "--host", "sandbox")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 migration(s)" in result.stdout and "no drift" in result.stdout
    assert _scratch_left(sandbox) == []


def test_check_catches_schema_sql_missing_a_column(project: Project) -> None:
    _check_project(project, CHECK_SCHEMA.replace(", title text", ""))
    result = project.run("check", "--host", "sandbox", "--json")
    assert result.returncode == 3, result.stderr
    doc = json.loads(result.stdout)
    assert doc["diff"]["changes"] == {
        "column": [
            {
                "kind": "column",
                "name": "public.book.title",
                "status": "extra",
                "details": ["book.title: text"],
                "severity": "normal",
            }
        ]
    }


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"005_x.sql": "SELECT 1;", "05_y.sql": "SELECT 2;"}, "duplicate migration version 5: 005_x.sql, 05_y.sql"),
        ({"add_users.sql": "SELECT 1;"}, "add_users.sql: not a migration file name"),
        (
            {"005_idx.sql": "SELECT 1;\nCREATE INDEX CONCURRENTLY i ON book (title);"},
            "005_idx.sql:2: CREATE INDEX CONCURRENTLY cannot run",
        ),
    ],
)
def test_check_validates_migration_files(project: Project, files: dict[str, str], expected: str) -> None:
    _check_project(project, CHECK_SCHEMA)
    for name, sql in files.items():
        project.write_migration(name, sql)
    result = project.run("check", "--host", "sandbox")
    assert result.returncode == 3
    assert expected in result.stdout.replace("\n", "")


def test_check_names_the_failing_migration_line(remote: Remote, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "001_a.sql").write_text("CREATE TABLE a (id int);\n\nALTER TABLE a\n  ADD COLUMN b nope_type;\n")
    (tmp_path / "schema.sql").write_text("CREATE TABLE a (id int);\n")
    with pytest.raises(LoadError) as info:
        check_project(remote, migrations, tmp_path / "schema.sql")
    assert info.value.line == 3 and info.value.source.endswith("001_a.sql")
    assert 'type "nope_type" does not exist' in info.value.message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diff", "--host", "sandbox", "--against", "snapshot", "--against-host", "prod"], "exclude each other"),
        (["diff", "--host", "sandbox", "--against", "yesterday"], "expected 'schema' or 'snapshot'"),
        (["check"], "no host 'sandbox'"),
    ],
)
def test_usage_errors_exit_2_before_connecting(tmp_path: Path, args: list[str], message: str) -> None:
    import os
    import sys

    (tmp_path / "inventory.yaml").write_text(
        "hosts:\n  prod: {address: 192.0.2.1}\n" + ("  sandbox: {address: 192.0.2.2}\n" if args[0] == "diff" else "")
    )
    result = subprocess.run(
        [sys.executable, "-m", "opsagent", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "OPSAGENT_INVENTORY": str(tmp_path / "inventory.yaml")},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_cli_front_door_lists_schema_tasks() -> None:
    import sys

    listed = subprocess.run(
        [sys.executable, "-m", "opsagent", "--list"], capture_output=True, text=True, check=False
    ).stdout
    assert all(name in listed for name in ("extract", "diff", "check"))
