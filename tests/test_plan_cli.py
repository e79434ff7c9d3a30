"""Plans as migrations: stages (enum values, one transaction, CONCURRENTLY builds), ``inv new --from-diff``,
``inv plan --from snapshot`` and ``--against-host``, each applied for real by ``inv sync``."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from opsagent.migrate.files import load_migration, new_migration
from opsagent.remote.transport import Remote
from opsagent.schema.catalog import Catalog, Column, Constraint, Extension, Index, Table, Type
from opsagent.schema.declarative import pin_extension_versions, plan_against_sql
from opsagent.schema.plan import generate_plan

from .conftest import Project, SandboxHandle, write_inventory

# ---------------------------------------------------------------- pure: stages


def _catalog(
    tables: tuple[Table, ...],
    indexes: tuple[Index, ...] = (),
    constraints: tuple[Constraint, ...] = (),
    types: tuple[Type, ...] = (),
) -> Catalog:
    return Catalog(
        tables={t.key: t for t in tables},
        indexes={i.key: i for i in indexes},
        constraints={c.key: c for c in constraints},
        types={t.key: t for t in types},
    )


ORDERS = Table("public", "orders", columns=(Column("id", "integer", not_null=True), Column("customer", "integer")))
NOTES = Table("public", "notes", columns=(Column("id", "integer"),))
BY_CUSTOMER = Index(
    "public.orders", "orders_customer", "CREATE INDEX orders_customer ON public.orders USING btree (customer)"
)
NOTES_ID = Index("public.notes", "notes_id", "CREATE INDEX notes_id ON public.notes USING btree (id)")


def test_indexes_on_large_existing_tables_are_built_concurrently_after_the_transaction() -> None:
    plan = generate_plan(
        _catalog((ORDERS,)), _catalog((ORDERS, NOTES), (BY_CUSTOMER, NOTES_ID)), concurrent_tables={"public.orders"}
    )
    staged = [(s.stage, s.sql) for s in plan.statements if s.kind == "index"]
    assert staged == [
        ("main", "CREATE INDEX notes_id ON public.notes USING btree (id);"),  # a new table: built with it
        ("after", "DROP INDEX CONCURRENTLY IF EXISTS public.orders_customer;"),
        ("after", "CREATE INDEX CONCURRENTLY orders_customer ON public.orders USING btree (customer);"),
    ]
    script = plan.script()
    assert (
        script.index("BEGIN;")
        < script.index("CREATE TABLE public.notes")
        < script.index("COMMIT;")
        < script.index("CREATE INDEX CONCURRENTLY")
    )
    plain = generate_plan(_catalog((ORDERS,)), _catalog((ORDERS,), (BY_CUSTOMER,)))
    assert [s.stage for s in plain.statements] == ["main"] and "CONCURRENTLY" not in plain.script()


def test_a_unique_index_a_new_foreign_key_needs_stays_in_the_transaction() -> None:
    unique = Index("public.orders", "orders_id", "CREATE UNIQUE INDEX orders_id ON public.orders USING btree (id)")
    ref = Table("public", "refs", columns=(Column("order_id", "integer"),))
    fk = Constraint("public.refs", "refs_order", "f", "FOREIGN KEY (order_id) REFERENCES public.orders(id)")
    plan = generate_plan(
        _catalog((ORDERS, ref)), _catalog((ORDERS, ref), (unique,), (fk,)), concurrent_tables={"public.orders"}
    )
    assert [(s.stage, s.kind) for s in plan.statements] == [("main", "index"), ("main", "constraint")]


def test_enum_values_move_before_the_transaction_only_when_it_uses_them() -> None:
    old = Type("public", "mood", "enum", labels=("sad",))
    new = Type("public", "mood", "enum", labels=("sad", "ok"))
    table = Table("public", "people", columns=(Column("mood", "public.mood"),))
    unused = generate_plan(_catalog((table,), types=(old,)), _catalog((table,), types=(new,)))
    assert [(s.stage, s.sql) for s in unused.statements] == [
        ("main", "ALTER TYPE public.mood ADD VALUE 'ok' AFTER 'sad';")
    ]
    with_default = Table("public", "people", columns=(Column("mood", "public.mood", default="'ok'::public.mood"),))
    used = generate_plan(_catalog((table,), types=(old,)), _catalog((with_default,), types=(new,)))
    assert [(s.stage, s.sql) for s in used.statements] == [
        ("before", "ALTER TYPE public.mood ADD VALUE IF NOT EXISTS 'ok' AFTER 'sad';"),
        ("main", "ALTER TABLE public.people ALTER COLUMN mood SET DEFAULT 'ok'::public.mood;"),
    ]


def test_generated_no_transaction_files_load_cleanly(tmp_path: Path) -> None:
    path = new_migration(
        tmp_path,
        "add mood values",
        body="ALTER TYPE mood ADD VALUE IF NOT EXISTS 'ok';\n",
        notes=["Generated."],
        no_transaction=True,
    )
    migration, warnings = load_migration(path)
    assert path.name == "001_add_mood_values.sql"
    assert not migration.transactional and warnings == []  # an enum value is a reason to commit on its own
    assert path.read_text().splitlines()[:4] == [
        "-- 001: add mood values",
        path.read_text().splitlines()[1],
        "-- Generated.",
        "-- opsagent:no-transaction",
    ]


# ---------------------------------------------------------------- inv new --from-diff, applied by inv sync

LIVE = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE people (id serial PRIMARY KEY, name varchar(20), mood mood, legacy text);
CREATE VIEW named AS SELECT id, name FROM people WHERE name IS NOT NULL;
INSERT INTO people (name, mood) SELECT 'p' || g, 'sad' FROM generate_series(1, 500) AS g;
ANALYZE people;
"""
DESIRED = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE people (id serial PRIMARY KEY, name text NOT NULL DEFAULT '', mood mood DEFAULT 'ok');
CREATE INDEX people_name ON people (name);
CREATE VIEW named AS SELECT id, name FROM people WHERE name <> '';
"""


def _set_hazards(project: Project, hazards: dict[str, object]) -> None:
    path = project.root / "inventory.yaml"
    document = yaml.safe_load(path.read_text())
    document["hosts"]["sandbox"]["hazards"] = hazards
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_new_from_diff_writes_migrations_that_sync_applies_to_zero_drift(project: Project) -> None:
    (project.root / "sql" / "schema.sql").write_text(DESIRED)
    project.psql(LIVE)
    _set_hazards(project, {"large_table_rows": 100})  # 500 rows: the index is built CONCURRENTLY
    refused = project.run("new", "--from-diff", "--host", "sandbox", "catch up")
    assert refused.returncode == 3, refused.stderr  # the dropped column is commented out: not verified, nothing written
    assert "no migration written" in refused.stderr and not list(project.migrations.iterdir())
    made = project.run("new", "--from-diff", "--host", "sandbox", "--allow-drop", "catch up")
    assert made.returncode == 0, made.stderr
    assert "verified: applying this plan leaves 0 differences" in made.stderr
    names = sorted(p.name for p in project.migrations.iterdir())
    assert names == ["001_catch_up_enum_values.sql", "002_catch_up.sql", "003_catch_up_concurrent_indexes.sql"]
    assert made.stdout.split() == [f"sql/migrations/{n}" for n in names]
    main = (project.migrations / names[1]).read_text()
    assert "DROP COLUMN legacy" in main and "opsagent:no-transaction" not in main
    assert "CREATE INDEX CONCURRENTLY people_name" in (project.migrations / names[2]).read_text()
    synced = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--allow-hazards")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert project.run("diff", "--host", "sandbox").returncode == 0
    assert project.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'people_name'::regclass").strip() == "t"
    assert project.psql("SELECT count(*) FROM people WHERE mood = 'sad'").strip() == "500"  # the rows survived
    again = project.run("new", "--from-diff", "--host", "sandbox", "nothing left")
    assert again.returncode == 0 and "no migration written" in again.stderr
    assert len(list(project.migrations.iterdir())) == 3


def test_concurrently_never_keeps_everything_in_one_transaction(project: Project) -> None:
    (project.root / "sql" / "schema.sql").write_text(DESIRED)
    project.psql(LIVE)
    _set_hazards(project, {"large_table_rows": 100})
    doc = json.loads(project.run("plan", "--host", "sandbox", "--allow-drop", "--concurrently=never", "--json").stdout)
    assert doc["verified"] and {s["stage"] for s in doc["statements"]} == {"before", "main"}
    forced = json.loads(project.run("plan", "--host", "sandbox", "--allow-drop", "--concurrently", "--json").stdout)
    assert [s["sql"] for s in forced["statements"] if s["stage"] == "after"][-1].startswith("CREATE INDEX CONCURRENTLY")
    bad = project.run("plan", "--host", "sandbox", "--concurrently=sometimes")
    assert bad.returncode == 2 and "expected one of auto, always, never" in bad.stderr


def test_plan_from_and_against_the_snapshot(project: Project) -> None:
    project.psql("CREATE TABLE t (id int PRIMARY KEY);")
    assert project.run("extract", "--host", "sandbox").returncode == 0
    project.psql("ALTER TABLE t ADD COLUMN note text;")  # live moves on; the snapshot does not
    (project.root / "sql" / "schema.sql").write_text("CREATE TABLE t (id int PRIMARY KEY, note text);\n")
    live = project.run("plan", "--host", "sandbox")
    assert live.returncode == 0 and live.stdout == "" and "already matches" in live.stderr
    from_snapshot = project.run("plan", "--host", "sandbox", "--from", "snapshot")
    assert from_snapshot.returncode == 0, from_snapshot.stderr
    assert "ALTER TABLE public.t ADD COLUMN note text;" in from_snapshot.stdout
    assert "verified: applying this plan leaves 0 differences" in from_snapshot.stderr
    clash = project.run("plan", "--host", "sandbox", "--from", "snapshot", "--against-host", "sandbox")
    assert clash.returncode == 2 and "--from snapshot goes with schema.sql" in clash.stderr
    undo = project.run("new", "--from-diff", "--host", "sandbox", "--against", "snapshot", "--allow-drop", "undo drift")
    assert undo.returncode == 0, undo.stderr  # back to the extracted structure: the hand-added column goes
    assert "ALTER TABLE public.t DROP COLUMN note;" in (project.migrations / "001_undo_drift.sql").read_text()
    assert project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--allow-hazards").returncode == 0
    assert project.run("diff", "--host", "sandbox", "--against", "snapshot").returncode == 0


def test_plan_against_host_catches_one_database_up_with_another(project: Project, sandbox: SandboxHandle) -> None:
    staging_db = sandbox.create_database("staging")
    hosts = {"sandbox": project.host, "staging": sandbox.host_for(staging_db)}
    write_inventory(project.root, hosts)
    with sandbox.remote(staging_db) as staging:
        staging.psql("CREATE TABLE t (id int PRIMARY KEY, note text); CREATE INDEX t_note ON t (note);")
    project.psql("CREATE TABLE t (id int PRIMARY KEY);")
    result = project.run(
        "new", "--from-diff", "--host", "sandbox", "--against-host", "staging", "like staging", "--json"
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["desired"] == f"staging:{staging_db}" and doc["verified"]
    assert [s["sql"] for s in doc["statements"]] == [
        "ALTER TABLE public.t ADD COLUMN note text;",
        "CREATE INDEX t_note ON public.t USING btree (note);",
    ]
    assert project.run("sync", "--host", "sandbox", "--yes", "--no-backup").returncode == 0
    assert project.run("diff", "--host", "sandbox", "--against-host", "staging").returncode == 0


def test_the_rehearsal_starts_from_the_live_extension_versions(remote: Remote) -> None:
    """pg_dump does not record extension versions: without pinning them, updating one would be rehearsed from
    the default."""
    remote.psql("CREATE EXTENSION pg_trgm VERSION '1.3';")
    report = plan_against_sql(remote, "CREATE EXTENSION pg_trgm VERSION '1.4';", "schema.sql")
    assert [s.sql for s in report.plan.statements] == ["ALTER EXTENSION pg_trgm UPDATE TO '1.4';"]
    assert report.verified, (report.error, report.remaining)
    dump = (
        "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;\n"
        "CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\" WITH SCHEMA public;\n"
    )
    catalog = Catalog(extensions={"pg_trgm": Extension("pg_trgm", "1.3", "public")})
    assert pin_extension_versions(dump, catalog).splitlines() == [
        "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public VERSION '1.3';",
        "CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\" WITH SCHEMA public;",
    ]


def test_schema_and_routine_privileges_are_planned(remote: Remote) -> None:
    remote.psql("DO $$ BEGIN CREATE ROLE opsagent_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;")
    base = "CREATE SCHEMA app; CREATE FUNCTION app.answer() RETURNS int LANGUAGE sql RETURN 42;"
    remote.psql(base)
    desired = (
        base + " GRANT USAGE ON SCHEMA app TO opsagent_reader;"
        " REVOKE EXECUTE ON FUNCTION app.answer() FROM PUBLIC;"
        " GRANT EXECUTE ON FUNCTION app.answer() TO opsagent_reader;"
    )
    report = plan_against_sql(remote, desired, "schema.sql")
    assert sorted(s.sql for s in report.plan.statements) == [
        "GRANT EXECUTE ON ROUTINE app.answer() TO opsagent_reader;",
        "GRANT USAGE ON SCHEMA app TO opsagent_reader;",
        "REVOKE EXECUTE ON ROUTINE app.answer() FROM PUBLIC;",
    ]
    assert report.verified, (report.error, report.remaining)
