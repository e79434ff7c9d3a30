"""``ledger_table`` (issue 13 §3): opsagent shares a database with Rails, Django or any tool owning
a ``schema_migrations``.

The ledger's name is configurable; a foreign table of that name is refused and left untouched; only the
configured ledger (``<ledger_schema>.<ledger_table>``) is hidden from diff, plan, extract and the drift
check, never a user table; the ledger's own schema is hidden while it holds nothing else.
Real sshd + PostgreSQL throughout (fixtures in conftest.py); pure parts get unit tests.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
import zlib
from pathlib import Path

import pytest
import yaml

from opsagent.errors import ConfigError
from opsagent.inventory import HostConfig, load_inventory
from opsagent.migrate.ledger import Ledger, LedgerState
from opsagent.remote.transport import open_remote
from opsagent.schema.catalog import introspect, introspection_sql
from opsagent.schema.exclusions import (
    DEFAULT_EXCLUDED_TABLES,
    dump_pattern,
    ledger_exclusions,
    matches_dump_entry,
    split_exclusion,
    strip_ledger_only_schemas,
)
from opsagent.schema.oracle import compare_dumps

from .conftest import Project

HOSTILE = ['x"; DROP TABLE keep; --', "a;b", "$(touch {marker})", "Ops.Ledger*?", "it's `id`"]


def configure(project: Project, **keys: str) -> Project:
    """Set ledger keys on the project's host (inventory.yaml and the in-memory HostConfig)."""
    path = project.root / "inventory.yaml"
    document = yaml.safe_load(path.read_text())
    document["hosts"]["sandbox"].update(keys)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return Project(project.root, dataclasses.replace(project.host, **keys))  # type: ignore[arg-type]


def run_json(project: Project, *args: str) -> tuple[int, dict[str, object], str]:
    proc = project.run(*args, "--json")
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        doc = {}
    return proc.returncode, doc, proc.stderr + proc.stdout


def relations(project: Project) -> list[str]:
    """Every user table, schema-qualified, as PostgreSQL names them."""
    return project.psql(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    ).split("\n")[:-1]


# ---------------------------------------------------------------- pure


def test_default_ledger_and_lock_key_are_unchanged() -> None:
    ledger = Ledger()
    assert ledger.table == '"public"."schema_migrations"' and Ledger("public") == ledger
    # the key every earlier version used: an old and a new opsagent on one database still exclude each other
    assert ledger.lock_key == (0x6F707367, zlib.crc32(b"opsagent:public.schema_migrations") & 0x7FFFFFFF)
    assert Ledger("ops").lock_key == (0x6F707367, zlib.crc32(b"opsagent:ops.schema_migrations") & 0x7FFFFFFF)
    assert Ledger(table_name="opsagent_migrations").lock_key != ledger.lock_key
    assert (
        ledger_exclusions(HostConfig(name="h", address="h"))
        == DEFAULT_EXCLUDED_TABLES
        == ('"public"."schema_migrations"',)
    )


@pytest.mark.parametrize("name", [n.format(marker="/tmp/x") for n in HOSTILE])
def test_hostile_ledger_names_only_ever_appear_quoted(name: str) -> None:
    ledger = Ledger("ops", name)
    quoted = '"' + name.replace('"', '""') + '"'
    assert ledger.table == f'"ops".{quoted}'
    literal = "'" + ledger.table.replace("'", "''") + "'"  # to_regclass('"ops"."…"')
    for sql in (ledger.ensure_sql([]), ledger.state_query(), ledger.repair_sql([]), ledger.holders_query()):
        assert name not in sql.replace(literal, "").replace(quoted, "")  # only ever inside an identifier or a literal
    host = HostConfig(name="h", address="h", ledger_schema="ops", ledger_table=name)
    assert name not in introspection_sql(ledger_exclusions(host)).replace(quoted.replace("'", "''"), "")


def test_exclusion_entries_and_dump_patterns() -> None:
    assert split_exclusion('"a.b"."c""d"') == ("a.b", 'c"d') and split_exclusion("schema_migrations") == (
        None,
        "schema_migrations",
    )
    assert split_exclusion("audit.log") == ("audit", "log")  # the legacy unquoted form
    assert dump_pattern('"Ops"."Ledger*?"') == '"Ops"."Ledger*?"'  # quoted: * ? . are literal for pg_dump
    assert dump_pattern("t") == '*."t"'
    ledger = ('"ops"."schema_migrations"',)
    assert matches_dump_entry(ledger, "ops", "schema_migrations")
    assert matches_dump_entry(ledger, "ops", "schema_migrations schema_migrations_pkey")
    assert not matches_dump_entry(ledger, "public", "schema_migrations")  # a user table of that name elsewhere
    assert not matches_dump_entry(ledger, "ops", "schema_migrations_archive")


def test_oracle_hides_only_the_configured_ledger() -> None:
    def entry(schema: str, name: str, kind: str = "TABLE") -> str:
        return (
            f"--\n-- Name: {name}; Type: {kind}; Schema: {schema}; Owner: postgres\n--\n\n"
            f"CREATE TABLE {schema}.{name} (\n    v text\n);\n\n"
        )

    live = entry("ops", "schema_migrations") + entry("public", "schema_migrations")
    differences = compare_dumps(live, "", ('"ops"."schema_migrations"',))
    assert [d.key for d in differences] == ["TABLE public.schema_migrations"]


def test_text_dumps_lose_a_ledger_only_schema_and_keep_a_used_one() -> None:
    schema = "--\n-- Name: ops; Type: SCHEMA; Schema: -; Owner: -\n--\n\nCREATE SCHEMA ops;\n\n\n"
    table = "--\n-- Name: t; Type: TABLE; Schema: {s}; Owner: -\n--\n\nCREATE TABLE {s}.t (\n    id integer\n);\n\n"
    ledger = ('"ops"."schema_migrations"',)
    dump = "-- head\n\n" + schema + "SET default_tablespace = '';\n\n" + table.format(s="public")
    assert strip_ledger_only_schemas(dump, ledger) == "-- head\n\nSET default_tablespace = '';\n\n" + table.format(
        s="public"
    )
    used = "-- head\n\n" + schema + table.format(s="ops")
    assert strip_ledger_only_schemas(used, ledger) == used
    assert strip_ledger_only_schemas(dump, DEFAULT_EXCLUDED_TABLES) == dump  # public is never hidden


def test_foreign_tables_are_refused_and_the_seed_is_ours() -> None:
    seed = LedgerState(exists=True, columns=["version", "description", "applied_at"], rows=[], holders=[])
    assert not seed.foreign and seed.adoption_needed
    seed.refuse_foreign(Ledger())
    for columns in (
        ["version"],
        ["id", "app", "name", "applied"],
        ["version", "applied_at"],
    ):  # Rails, Django, half a ledger
        state = LedgerState(exists=True, columns=columns, rows=[], holders=[])
        with pytest.raises(ConfigError) as info:
            state.refuse_foreign(Ledger())
        assert "public.schema_migrations belongs to something else" in info.value.message
        assert "ledger_table: opsagent_migrations" in info.value.message and "\n" not in info.value.message
    assert not LedgerState(exists=False, columns=[], rows=[], holders=[]).foreign


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('""', "not an empty string"),
        ('"a\\nb"', "without control characters"),
        ("x" * 64, "at most 63 bytes"),
        ("[1, 2]", "expected a string"),
    ],
)
def test_inventory_ledger_table_is_validated_with_file_and_line(tmp_path: Path, value: str, problem: str) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(f"hosts:\n  prod:\n    address: db.example.com\n    ledger_table: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    assert f"{path}:4 hosts.prod.ledger_table:" in info.value.message and problem in info.value.message


def test_inventory_ledger_keys_in_defaults_and_per_host(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(
        "defaults:\n  ledger_table: opsagent_migrations\nhosts:\n  a: {address: a.example.com}\n"
        "  b: {address: b.example.com, ledger_table: 'x\"; DROP TABLE t; --', ledger_schema: Ops}\n"
    )
    inv = load_inventory(path)
    assert (inv.hosts["a"].ledger_schema, inv.hosts["a"].ledger_table) == ("public", "opsagent_migrations")
    assert Ledger.for_host(inv.hosts["b"]).table == '"Ops"."x""; DROP TABLE t; --"'
    path.write_text("defaults:\n  ledger_schema: pg_ledger\nhosts:\n  a: {address: a.example.com}\n")
    with pytest.raises(ConfigError, match=r"inventory.yaml:2 defaults.ledger_schema: schema names beginning with pg_"):
        load_inventory(path)


# ---------------------------------------------------------------- real server

SCHEMA = (
    "CREATE TABLE author (id int PRIMARY KEY, name text NOT NULL);\n"
    "CREATE TABLE book (id int PRIMARY KEY, author_id int REFERENCES author (id));\n"
)
MIGRATIONS = {
    "001_author.sql": "CREATE TABLE author (id int PRIMARY KEY, name text NOT NULL);\n",
    "002_book.sql": "CREATE TABLE book (id int PRIMARY KEY, author_id int REFERENCES author (id));\n",
}


def _write(project: Project, files: dict[str, str], schema: str | None = SCHEMA) -> None:
    for name, sql in files.items():
        project.write_migration(name, sql)
    if schema is not None:
        (project.root / "sql" / "schema.sql").write_text(schema)


def test_custom_ledger_table_end_to_end(project: Project) -> None:
    project = configure(project, ledger_table="opsagent_migrations")
    _write(project, {"001_author.sql": MIGRATIONS["001_author.sql"]})
    code, doc, text = run_json(
        project, "baseline", "--host", "sandbox", "--version", "001"
    )  # adopt: author exists already
    project.psql(MIGRATIONS["001_author.sql"])
    assert code == 0, text
    _write(project, {"002_book.sql": MIGRATIONS["002_book.sql"]})
    code, doc, text = run_json(project, "sync", "--host", "sandbox", "--yes", "--no-backup")
    assert code == 0, text
    assert doc["applied"] == ["002"] and not any("drift" in w for w in doc.get("warnings", []))  # type: ignore[union-attr]
    assert "public.opsagent_migrations" in relations(project) and "public.schema_migrations" not in relations(project)
    assert (
        project.psql("SELECT string_agg(version, ',' ORDER BY version) FROM opsagent_migrations").strip() == "001,002"
    )
    code, doc, text = run_json(project, "status", "--host", "sandbox")
    assert code == 0 and [v["state"] for v in doc["versions"]] == ["applied", "applied"], text  # type: ignore[index, union-attr]
    project.write_migration("002_book.sql", MIGRATIONS["002_book.sql"] + "-- reviewed\n")  # an edited applied file
    code, doc, text = run_json(project, "status", "--host", "sandbox")
    assert [v["state"] for v in doc["versions"]][1] != "applied", text  # type: ignore[index, union-attr]
    code, doc, text = run_json(project, "repair", "--host", "sandbox", "--yes")
    assert code == 0, text
    code, doc, text = run_json(project, "status", "--host", "sandbox")
    assert [v["state"] for v in doc["versions"]] == ["applied", "applied"], text  # type: ignore[index, union-attr]
    # the ledger is opsagent's, hidden everywhere: no drift, an empty plan, not counted by extract
    code, doc, text = run_json(project, "diff", "--host", "sandbox")
    assert code == 0 and doc["drift"] is False, text
    code, doc, text = run_json(project, "plan", "--host", "sandbox")
    assert code == 0 and "opsagent_migrations" not in text, text
    code, doc, text = run_json(project, "extract", "--host", "sandbox")
    assert code == 0 and doc["stats"]["tables"] == 2, text  # type: ignore[index]
    code, doc, text = run_json(project, "check", "--host", "sandbox")
    assert code == 0, text


def test_default_name_still_adopts_the_seed_table(project: Project) -> None:
    project.psql(
        "CREATE TABLE schema_migrations (version varchar(50) PRIMARY KEY, description text, "
        "applied_at timestamp DEFAULT now());\n"
        + MIGRATIONS["001_author.sql"]
        + "INSERT INTO schema_migrations (version, description) VALUES ('001', 'author');"
    )
    _write(project, MIGRATIONS)
    code, doc, text = run_json(project, "sync", "--host", "sandbox", "--yes", "--no-backup")
    assert code == 0, text
    assert doc["applied"] == ["002"] and doc["adopted_ledger"] is True
    assert project.psql("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations").strip() == "001,002"
    code, doc, text = run_json(project, "diff", "--host", "sandbox")
    assert code == 0, text


def test_a_custom_name_adopts_a_seed_shaped_table_too(project: Project) -> None:
    project = configure(project, ledger_schema="ops", ledger_table="ledger")
    project.psql(
        "CREATE SCHEMA ops; CREATE TABLE ops.ledger (version text PRIMARY KEY, description text, "
        "applied_at timestamptz);"
    )
    _write(project, MIGRATIONS)
    code, doc, text = run_json(project, "sync", "--host", "sandbox", "--yes", "--no-backup")
    assert code == 0 and doc["adopted_ledger"] is True, text


RAILS_LEDGER = (
    "CREATE TABLE public.schema_migrations (version character varying NOT NULL PRIMARY KEY);\n"
    "INSERT INTO public.schema_migrations VALUES ('20240101000000'), ('20240202000000');\n"
)
DJANGO_LEDGER = (
    "CREATE TABLE public.schema_migrations (id bigserial PRIMARY KEY, app varchar(255) NOT NULL, "
    "name varchar(255) NOT NULL, applied timestamptz NOT NULL);\n"
    "INSERT INTO public.schema_migrations (app, name, applied) VALUES ('auth', '0001_initial', now());\n"
)


@pytest.mark.parametrize("foreign", [RAILS_LEDGER, DJANGO_LEDGER], ids=["rails", "django"])
def test_a_foreign_table_of_the_ledgers_name_is_refused_and_left_untouched(project: Project, foreign: str) -> None:
    project.psql(foreign)
    _write(project, MIGRATIONS)
    before = project.psql(
        "SELECT (SELECT json_agg(attname ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = 'public.schema_migrations'::regclass"
        " AND attnum > 0), (SELECT json_agg(t ORDER BY t) FROM public.schema_migrations t)"
    )
    for task in (
        ("sync", "--yes", "--no-backup"),
        ("sync", "--dry-run"),
        ("status",),
        ("baseline", "--version", "001"),
        ("repair", "--yes"),
        ("lint",),
    ):
        proc = project.run(task[0], "--host", "sandbox", *task[1:])
        assert proc.returncode == 2, (task, proc.stdout, proc.stderr)
        assert "public.schema_migrations belongs to something else" in proc.stderr, (task, proc.stderr)
        assert "ledger_table: opsagent_migrations" in proc.stderr and "Traceback" not in proc.stderr
    after = project.psql(
        "SELECT (SELECT json_agg(attname ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = 'public.schema_migrations'::regclass"
        " AND attnum > 0), (SELECT json_agg(t ORDER BY t) FROM public.schema_migrations t)"
    )
    assert after == before  # not altered, not written
    assert relations(project) == ["public.schema_migrations"]  # nothing was applied either
    # following the hint works: the foreign table stays as it is, opsagent keeps its own ledger next to it
    project = configure(project, ledger_table="opsagent_migrations")
    code, doc, text = run_json(project, "sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check")
    assert code == 0 and doc["applied"] == ["001", "002"], text
    assert (
        project.psql(
            "SELECT (SELECT json_agg(attname ORDER BY attnum) FROM pg_attribute "
            "WHERE attrelid = 'public.schema_migrations'::regclass"
            " AND attnum > 0), (SELECT json_agg(t ORDER BY t) FROM public.schema_migrations t)"
        )
        == before
    )


RAILS_STRUCTURE = """\
SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);

CREATE TABLE public.ar_internal_metadata (
    key character varying NOT NULL,
    value character varying,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);

CREATE TABLE public.schema_migrations (
    version character varying NOT NULL
);

CREATE TABLE public.users (
    id bigint NOT NULL,
    email character varying DEFAULT ''::character varying NOT NULL,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);

CREATE SEQUENCE public.users_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.users_id_seq OWNED BY public.users.id;

ALTER TABLE ONLY public.users ALTER COLUMN id SET DEFAULT nextval('public.users_id_seq'::regclass);

ALTER TABLE ONLY public.ar_internal_metadata
    ADD CONSTRAINT ar_internal_metadata_pkey PRIMARY KEY (key);

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);

CREATE UNIQUE INDEX index_users_on_email ON public.users USING btree (email);

SET search_path TO "$user", public;
"""
RAILS_VERSIONS = """
INSERT INTO "schema_migrations" (version) VALUES
('20240102030405'),
('20240301000000');
"""


def test_rails_structure_sql_replays_through_sync_and_its_table_is_a_normal_table(project: Project) -> None:
    project = configure(project, ledger_table="opsagent_migrations")
    _write(project, {"001_rails_structure.sql": RAILS_STRUCTURE + RAILS_VERSIONS}, schema=RAILS_STRUCTURE)
    code, doc, text = run_json(project, "sync", "--host", "sandbox", "--yes", "--no-backup")
    assert code == 0 and doc["applied"] == ["001"], text
    assert not any("differ" in w for w in doc.get("warnings", [])), text  # type: ignore[union-attr]
    assert (
        project.psql("SELECT string_agg(version, ',' ORDER BY version) FROM public.schema_migrations").strip()
        == "20240102030405,20240301000000"
    )
    code, doc, text = run_json(project, "diff", "--host", "sandbox")
    assert code == 0 and doc["drift"] is False, text
    # Rails' table is the user's: it is compared like any other (a schema.sql without it shows it as extra)
    (project.root / "sql" / "schema.sql").write_text(
        RAILS_STRUCTURE.replace(
            "CREATE TABLE public.schema_migrations (\n    version character varying NOT NULL\n);\n", ""
        ).replace(
            "ALTER TABLE ONLY public.schema_migrations\n"
            "    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);\n",
            "",
        )
    )
    code, doc, text = run_json(project, "diff", "--host", "sandbox")
    assert code == 3, text
    assert ("public.schema_migrations", "extra") in {(c["name"], c["status"]) for c in doc["changes"]["table"]}  # type: ignore[index]
    assert not any("opsagent_migrations" in c["name"] for kind in doc["changes"].values() for c in kind)  # type: ignore[union-attr]


def test_a_user_table_named_schema_migrations_in_another_schema_is_not_hidden(project: Project) -> None:
    _write(project, MIGRATIONS)
    assert project.run("sync", "--host", "sandbox", "--yes", "--no-backup").returncode == 0
    project.psql("CREATE SCHEMA legacy; CREATE TABLE legacy.schema_migrations (version text PRIMARY KEY, note text);")
    code, doc, text = run_json(project, "diff", "--host", "sandbox")
    assert code == 3, text
    names = {(c["name"], c["status"]) for kind in doc["changes"].values() for c in kind}  # type: ignore[union-attr]
    assert ("legacy.schema_migrations", "extra") in names and not any(n == "public.schema_migrations" for n, _ in names)
    code, doc, text = run_json(project, "extract", "--host", "sandbox")
    assert code == 0 and doc["stats"]["tables"] == 3 and doc["stats"]["schemas"] == 2, text  # type: ignore[index]
    snapshot = (project.root / "sql" / "snapshots" / "sandbox" / "schema.sql").read_text()
    assert "CREATE TABLE legacy.schema_migrations" in snapshot
    (project.root / "sql" / "schema.sql").write_text(
        SCHEMA + "CREATE SCHEMA legacy;\nCREATE TABLE legacy.schema_migrations (version text PRIMARY KEY, note text);\n"
    )
    code, doc, text = run_json(project, "diff", "--host", "sandbox")
    assert code == 0, text  # once schema.sql has it, equal: by the model and by the dump oracle
    with open_remote(project.host) as remote:
        assert "legacy.schema_migrations" in introspect(remote, exclude_tables=ledger_exclusions(project.host)).tables


def test_the_ledger_schema_is_hidden_while_it_holds_only_the_ledger(project: Project) -> None:
    project = configure(project, ledger_schema="ops")
    _write(project, MIGRATIONS)
    code, doc, text = run_json(project, "sync", "--host", "sandbox", "--yes", "--no-backup")
    assert code == 0 and not any("differ" in w for w in doc.get("warnings", [])), text  # type: ignore[union-attr]
    assert "ops.schema_migrations" in relations(project)
    code, doc, text = run_json(project, "diff", "--host", "sandbox")
    assert code == 0 and doc["drift"] is False, text
    code, doc, text = run_json(project, "plan", "--host", "sandbox")
    assert code == 0 and "DROP SCHEMA" not in text, text
    # the user puts a table into it: the schema is shown as usual
    project.psql("CREATE TABLE ops.notes (id int)")
    code, doc, text = run_json(project, "diff", "--host", "sandbox")
    assert code == 3, text
    names = {(c["kind"], c["name"], c["status"]) for kind in doc["changes"].values() for c in kind}  # type: ignore[union-attr]
    assert ("schema", "ops", "extra") in names and ("table", "ops.notes", "extra") in names
    assert not any("schema_migrations" in n for _, n, _ in names)


def test_a_plan_can_put_the_first_user_table_into_the_ledger_schema(project: Project) -> None:
    project = configure(project, ledger_schema="ops")
    _write(project, MIGRATIONS)
    assert project.run("sync", "--host", "sandbox", "--yes", "--no-backup").returncode == 0
    (project.root / "sql" / "schema.sql").write_text(SCHEMA + "CREATE SCHEMA ops;\nCREATE TABLE ops.notes (id int);\n")
    code, _doc, text = run_json(project, "plan", "--host", "sandbox")
    assert code == 0, text  # verified by both oracles: the hidden schema exists already, the plan must not trip on it
    assert "CREATE SCHEMA IF NOT EXISTS ops" in text and "CREATE TABLE ops.notes" in text and "DROP" not in text


def test_hostile_ledger_table_values_never_become_code(project: Project) -> None:
    project.psql("CREATE TABLE keep (id int);")
    _write(
        project,
        {"001_author.sql": MIGRATIONS["001_author.sql"]},
        schema="CREATE TABLE keep (id int);\n" + MIGRATIONS["001_author.sql"],
    )
    marker = Path(f"/tmp/oa{uuid.uuid4().hex[:8]}")  # short: a ledger name has at most 63 bytes
    for index, template in enumerate(HOSTILE):
        name = template.format(marker=marker)
        hostile = configure(project, ledger_table=name)
        if index:  # 001 already ran under the previous name: record it in this new ledger without running it
            code, _, text = run_json(hostile, "baseline", "--host", "sandbox", "--version", "001")
            assert code == 0, (name, text)
        code, doc, text = run_json(hostile, "sync", "--host", "sandbox", "--yes", "--no-backup")
        assert code == 0, (name, text)
        assert doc["applied"] == (["001"] if index == 0 else []), (name, text)
        assert not any("differ" in w for w in doc.get("warnings", [])), (name, text)  # type: ignore[union-attr]
        # the table has exactly that name and holds the version; nothing else happened
        literal = "'" + name.replace("'", "''") + "'"
        assert (
            project.psql(
                f"SELECT string_agg(n.nspname || ':' || c.relname, ',') FROM pg_class c JOIN pg_namespace n "
                f"ON n.oid = c.relnamespace WHERE c.relname = {literal}"
            ).strip()
            == f"public:{name}"
        )
        assert "public.keep" in relations(project) and not marker.exists()
        code, doc, text = run_json(
            hostile, "diff", "--host", "sandbox"
        )  # hidden from the model and from the dump oracle
        assert code == 0 and doc["drift"] is False, (name, text)
        code, doc, text = run_json(hostile, "status", "--host", "sandbox")
        assert code == 0 and [v["state"] for v in doc["versions"]] == ["applied"], (name, text)  # type: ignore[index, union-attr]
        # this name's ledger goes before the next one: it would be a user table under the next configuration
        project.psql(f"SELECT format('DROP TABLE public.%I', relname) FROM pg_class WHERE relname = {literal} \\gexec")
    assert not marker.exists()


@pytest.mark.parametrize(
    "keys", [{"ledger_table": "opsagent_migrations"}, {"ledger_schema": "ops"}], ids=["table", "schema"]
)
def test_rollback_with_a_configured_ledger(project: Project, keys: dict[str, str]) -> None:
    project = configure(project, **keys)
    _write(
        project,
        {
            "001_author.sql": MIGRATIONS["001_author.sql"],
            "002_book.sql": MIGRATIONS["002_book.sql"] + "-- opsagent:down\nDROP TABLE book;\n",
        },
        schema=None,
    )
    assert project.run("sync", "--host", "sandbox", "--yes", "--no-backup").returncode == 0
    code, _doc, text = run_json(project, "rollback", "--host", "sandbox", "--to", "001", "--yes", "--no-backup")
    assert code == 0, text  # verified by both oracles: the ledger (and its schema) is not a difference
    ledger = Ledger.for_host(project.host).table
    assert project.psql(f"SELECT string_agg(version, ',') FROM {ledger}").strip() == "001"
    assert "public.book" not in relations(project)
