"""Migration plans: pure unit tests, and the migra corpus applied for real (plan(a → b) on a leaves no difference)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from opsagent.remote.transport import Remote
from opsagent.schema.catalog import (
    Catalog,
    Collation,
    Column,
    Table,
    TextSearchConfig,
    TextSearchDictionary,
    Type,
    introspect,
    introspect_many,
)
from opsagent.schema.compare import compare
from opsagent.schema.declarative import PlanOptions, plan_against_sql
from opsagent.schema.plan import HEADER, collation_sql, generate_plan, lossless, text_search_config_sql

from .conftest import CORPORA, Project, SandboxHandle
from .test_diff_corpus import REAL, mutation_script, parse_marked

SLOW = pytest.mark.slow


def _table(*columns: Column, name: str = "t") -> Table:
    return Table("public", name, columns=columns)


def _catalog(*tables: Table, types: tuple[Type, ...] = ()) -> Catalog:
    return Catalog(tables={t.key: t for t in tables}, types={t.key: t for t in types})


def test_identical_catalogs_need_no_statements() -> None:
    cat = _catalog(_table(Column("id", "integer", not_null=True)))
    assert generate_plan(cat, cat).is_empty
    assert generate_plan(cat, cat).script() == ""


def test_added_column_is_one_statement() -> None:
    live = _catalog(_table(Column("id", "integer")))
    desired = _catalog(_table(Column("id", "integer"), Column("name", "text", not_null=True, default="'x'::text")))
    plan = generate_plan(live, desired)
    assert [s.sql for s in plan.statements] == ["ALTER TABLE public.t ADD COLUMN name text DEFAULT 'x'::text NOT NULL;"]


def test_dropped_column_is_commented_out_without_allow_drop() -> None:
    live = _catalog(_table(Column("id", "integer"), Column("old", "text")))
    desired = _catalog(_table(Column("id", "integer")))
    plan = generate_plan(live, desired)
    assert [(s.destructive, s.enabled) for s in plan.statements] == [(True, False)]
    assert "-- ALTER TABLE public.t DROP COLUMN old;" in plan.script()
    assert plan.warnings and "public.t.old" in plan.warnings[0]
    assert generate_plan(live, desired, allow_drop=True).executable()[0].sql == "ALTER TABLE public.t DROP COLUMN old;"


@pytest.mark.parametrize(
    ("old", "new", "safe"),
    [
        ("integer", "bigint", True),
        ("character varying(10)", "character varying(20)", True),
        ("character varying(20)", "character varying(10)", False),
        ("bigint", "integer", False),
        ("character varying(10)", "text", True),
        ("numeric(10,2)", "numeric(12,2)", True),
        ("text", "integer", False),
    ],
)
def test_type_changes_that_lose_data_are_destructive(old: str, new: str, safe: bool) -> None:
    assert lossless(old, new) is safe
    plan = generate_plan(_catalog(_table(Column("c", old))), _catalog(_table(Column("c", new))))
    assert [s.destructive for s in plan.statements] == [not safe]


def test_enum_values_are_added_in_place() -> None:
    live = _catalog(types=(Type("public", "mood", "enum", labels=("sad", "happy")),))
    desired = _catalog(types=(Type("public", "mood", "enum", labels=("sad", "ok", "happy", "ecstatic")),))
    assert [s.sql for s in generate_plan(live, desired).statements] == [
        "ALTER TYPE public.mood ADD VALUE 'ok' AFTER 'sad';",
        "ALTER TYPE public.mood ADD VALUE 'ecstatic' AFTER 'happy';",
    ]


def test_extra_tables_are_dropped_before_anything_can_take_their_name() -> None:
    live = _catalog(_table(Column("a", "text")), _table(Column("x", "integer"), name="gone"))
    desired = _catalog(_table(Column("a", "integer")))
    plan = generate_plan(live, desired, allow_drop=True)
    assert [s.phase for s in plan.statements] == ["drop tables", "columns"]
    assert plan.statements[0].sql == "DROP TABLE public.gone;"


def test_a_table_turning_partitioned_is_rebuilt_with_its_rows() -> None:
    live = _catalog(_table(Column("id", "integer"), Column("at", "date")))
    desired = _catalog(
        Table(
            "public", "t", kind="p", partition_key="RANGE (at)", columns=(Column("id", "integer"), Column("at", "date"))
        )
    )
    plan = generate_plan(live, desired)
    assert [s.sql for s in plan.executable()] == [
        "ALTER TABLE public.t RENAME TO t__old;",
        "CREATE TABLE public.t (\n    id integer,\n    at date\n) PARTITION BY RANGE (at);",
        "INSERT INTO public.t (id, at) SELECT id, at FROM public.t__old;",
    ]
    assert [s.sql for s in plan.statements if not s.enabled] == ["DROP TABLE public.t__old;"]


def test_collations_are_created_with_their_provider_and_locale() -> None:
    icu = Collation("app", "ci", "icu", locale="und-u-ks-level2", deterministic=False)
    libc = Collation("app", "bytes", "libc", lc_collate="C", lc_ctype="C")
    assert (
        collation_sql(icu)
        == "CREATE COLLATION app.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
    )
    assert collation_sql(libc) == "CREATE COLLATION app.bytes (provider = libc, lc_collate = 'C', lc_ctype = 'C')"


def test_a_text_search_configuration_is_built_from_its_parser_with_token_types_grouped() -> None:
    config = TextSearchConfig(
        "app",
        "plain",
        'pg_catalog."default"',
        mappings=(
            ("asciiword", "public.unaccent, pg_catalog.simple"),
            ("int", "pg_catalog.simple"),
            ("word", "public.unaccent, pg_catalog.simple"),
        ),
    )
    assert text_search_config_sql(config) == [
        'CREATE TEXT SEARCH CONFIGURATION app.plain (PARSER = pg_catalog."default")',
        "ALTER TEXT SEARCH CONFIGURATION app.plain ADD MAPPING FOR asciiword, word "
        "WITH public.unaccent, pg_catalog.simple",
        "ALTER TEXT SEARCH CONFIGURATION app.plain ADD MAPPING FOR int WITH pg_catalog.simple",
    ]


def test_text_search_changes_are_altered_in_place_and_drops_come_last() -> None:
    parser = 'pg_catalog."default"'
    live = Catalog(
        text_search_configs={
            "app.plain": TextSearchConfig(
                "app", "plain", parser, (("int", "pg_catalog.simple"), ("word", "pg_catalog.simple"))
            )
        },
        text_search_dicts={
            "app.stop": TextSearchDictionary(
                "app", "stop", "pg_catalog.simple", "stopwords = 'english', accept = 'false'"
            )
        },
        collations={"app.old": Collation("app", "old", "libc", lc_collate="C", lc_ctype="C")},
    )
    desired = Catalog(
        text_search_configs={
            "app.plain": TextSearchConfig(
                "app", "plain", parser, (("email", "pg_catalog.simple"), ("word", "app.stop"))
            )
        },
        text_search_dicts={
            "app.stop": TextSearchDictionary("app", "stop", "pg_catalog.simple", "stopwords = 'german'")
        },
    )
    plan = generate_plan(live, desired)
    assert [(s.sql, s.enabled) for s in plan.statements] == [
        ("ALTER TEXT SEARCH DICTIONARY app.stop (stopwords = 'german', accept);", True),
        ("ALTER TEXT SEARCH CONFIGURATION app.plain DROP MAPPING FOR int;", True),
        ("ALTER TEXT SEARCH CONFIGURATION app.plain ADD MAPPING FOR email WITH pg_catalog.simple;", True),
        ("ALTER TEXT SEARCH CONFIGURATION app.plain ALTER MAPPING FOR word WITH app.stop;", True),
        ("DROP COLLATION app.old;", False),
    ]
    assert plan.statements[-1].phase == "drop collations" and plan.warnings == [
        "drops collation app.old (commented out: needs --allow-drop)"
    ]


# The migra and sqldef corpora are planned, applied and judged by both oracles in
# tests/test_oracle_corpus.py (one pass for both: planning them here too cost a minute per run).


# ---------------------------------------------------------------- against a live database, verified by applying

LIVE = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE people (id serial PRIMARY KEY, name varchar(20), mood mood, legacy text);
CREATE VIEW named AS SELECT id, name FROM people WHERE name IS NOT NULL;
"""
DESIRED = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE people (id serial PRIMARY KEY, name text NOT NULL DEFAULT '', mood mood DEFAULT 'ok');
CREATE VIEW named AS SELECT id, name FROM people WHERE name <> '';
CREATE TABLE pets (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, owner int REFERENCES people, name text);
CREATE INDEX pets_owner ON pets (owner);
"""


def test_plan_against_live_is_verified_by_applying_it(remote: Remote) -> None:
    remote.psql(LIVE)
    before = remote.command_count
    report = plan_against_sql(remote, DESIRED, "schema.sql", PlanOptions(allow_drop=True))
    assert remote.command_count - before <= 6
    assert report.verified, (report.error, report.remaining, report.plan.script())
    assert report.verification_line() == "verified: applying this plan leaves 0 differences"
    script = report.plan.script()
    # the new value is used by a default inside the transaction: it is added (and committed) before it
    assert script.index("ALTER TYPE public.mood ADD VALUE IF NOT EXISTS 'ok' AFTER 'sad';") < script.index("BEGIN;")
    assert (
        script.index("DROP VIEW public.named")
        < script.index("ALTER COLUMN name TYPE text")
        < script.index("CREATE VIEW")
    )
    # the live database itself is untouched: only the rehearsal saw the plan
    assert compare(introspect(remote), introspect(remote)).is_empty
    assert (
        "legacy"
        in remote.psql(
            "SELECT string_agg(attname, ',') FROM pg_attribute WHERE attrelid = 'people'::regclass", extra=["-A", "-t"]
        ).text
    )


def test_plan_without_allow_drop_lists_what_remains(remote: Remote) -> None:
    remote.psql(LIVE)
    report = plan_against_sql(remote, DESIRED, "schema.sql")
    assert not report.verified and report.error is None
    assert [(c.kind, c.status, c.name) for c in report.remaining] == [("column", "extra", "public.people.legacy")]
    assert "-- ALTER TABLE public.people DROP COLUMN legacy;" in report.plan.script()
    assert report.verification_line() == "not verified: applying this plan leaves 1 difference(s)"


def test_plan_for_a_database_already_in_shape_is_empty(remote: Remote) -> None:
    remote.psql(DESIRED)
    report = plan_against_sql(remote, DESIRED, "schema.sql")
    assert report.plan.is_empty and report.verified


SEARCH_LIVE = """
CREATE EXTENSION unaccent;
CREATE SCHEMA search;
CREATE COLLATION search.natural (provider = icu, locale = 'en-u-kn-true');
CREATE COLLATION search.bytes (provider = libc, locale = 'C');
CREATE TEXT SEARCH DICTIONARY search.stop (TEMPLATE = pg_catalog.simple, STOPWORDS = english, ACCEPT = false);
CREATE TEXT SEARCH CONFIGURATION search.plain (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION search.plain ALTER MAPPING FOR word, asciiword
  WITH public.unaccent, search.stop, simple;
CREATE TEXT SEARCH CONFIGURATION search.gone (COPY = pg_catalog.english);
CREATE TABLE search.docs (title text COLLATE search.natural, body text COLLATE search.bytes);
CREATE INDEX docs_fts ON search.docs USING gin (to_tsvector('search.plain', body));
"""
SEARCH_DESIRED = """
CREATE EXTENSION unaccent;
CREATE SCHEMA search;
CREATE COLLATION search.natural (provider = icu, locale = 'en-u-kn-true');
CREATE COLLATION search.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TEXT SEARCH DICTIONARY search.stop (TEMPLATE = pg_catalog.simple, STOPWORDS = english);
CREATE TEXT SEARCH CONFIGURATION search.plain (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION search.plain ALTER MAPPING FOR word WITH public.unaccent, simple;
ALTER TEXT SEARCH CONFIGURATION search.plain DROP MAPPING FOR numword;
CREATE TEXT SEARCH CONFIGURATION search.fresh (PARSER = pg_catalog.default);
ALTER TEXT SEARCH CONFIGURATION search.fresh ADD MAPPING FOR asciiword WITH search.stop;
CREATE DOMAIN search.title AS text COLLATE search.natural;
CREATE TABLE search.docs (title search.title, body text COLLATE search.ci);
CREATE INDEX docs_fts ON search.docs USING gin (to_tsvector('search.fresh', body));
COMMENT ON COLLATION search.ci IS 'case-insensitive';
COMMENT ON TEXT SEARCH CONFIGURATION search.plain IS 'unaccented';
"""


def test_collations_and_text_search_are_planned_and_verified(remote: Remote) -> None:
    remote.psql(SEARCH_LIVE)
    report = plan_against_sql(remote, SEARCH_DESIRED, "schema.sql", PlanOptions(allow_drop=True))
    assert report.verified, (report.error, report.remaining, report.plan.script())
    script = report.plan.script()
    assert "CREATE COLLATION search.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);" in script
    assert "ALTER TEXT SEARCH CONFIGURATION search.plain DROP MAPPING FOR numword;" in script
    # the new collation exists before the column moves to it; the old one goes after it is no longer used
    assert (
        script.index("CREATE COLLATION search.ci")
        < script.index("COLLATE search.ci")
        < script.index("DROP COLLATION search.bytes")
    )
    assert script.index("CREATE TEXT SEARCH CONFIGURATION search.fresh") < script.index("CREATE INDEX docs_fts")
    assert "DROP TEXT SEARCH CONFIGURATION search.gone;" in script
    assert (
        "CREATE DOMAIN search.title AS text COLLATE search.\"natural\";" in script
    )  # qualified: search is not on the search_path


def test_inv_plan_prints_sql_that_really_removes_the_drift(project: Project) -> None:
    (project.root / "sql" / "schema.sql").write_text(DESIRED)
    project.psql(LIVE)
    cautious = project.run("plan", "--host", "sandbox")
    assert cautious.returncode == 3, cautious.stderr
    assert "-- ALTER TABLE public.people DROP COLUMN legacy;" in cautious.stdout
    assert "warning: drops column public.people.legacy" in cautious.stderr
    assert "not verified: applying this plan leaves 1 difference(s)" in cautious.stderr
    full = project.run("plan", "--host", "sandbox", "--allow-drop")
    assert full.returncode == 0, full.stderr
    assert "verified: applying this plan leaves 0 differences" in full.stderr
    project.psql(full.stdout)  # what was printed, applied for real
    after = project.run("diff", "--host", "sandbox")
    assert after.returncode == 0, after.stdout + after.stderr
    doc = json.loads(project.run("plan", "--host", "sandbox", "--json").stdout)
    assert doc["statements"] == [] and doc["verified"] is True


@SLOW
def test_danbooru_built_from_an_empty_database_by_its_plan(sandbox: SandboxHandle) -> None:
    """Hundreds of statements in dependency order (functions, tables, sequences, views, triggers) on a real schema."""
    path = CORPORA / "schemas" / "danbooru.sql"
    if not path.exists():
        pytest.skip(f"corpus {path} is absent")
    full, empty = sandbox.create_database("danbooru"), sandbox.create_database("empty")
    with sandbox.remote(full) as remote:
        remote.psql(path.read_text(), timeout=300)
        catalogs = introspect_many(remote, [full, empty], dependencies=True)
    plan = generate_plan(catalogs[empty], catalogs[full])
    assert len(plan.statements) > 500 and not plan.warnings
    with sandbox.remote(empty) as remote:
        remote.psql(plan.script(), timeout=300)
        built = introspect(remote)
        assert compare(built, catalogs[full]).significant == []
        # then the way back from the diff tests' single mutations (a type change under views, a dropped FK, ...)
        remote.psql(";\n".join(sql for sql, *_ in REAL["danbooru"]["mutations"].values()) + ";")  # type: ignore[attr-defined]
        mutated = introspect(remote, dependencies=True)
        back = generate_plan(mutated, catalogs[full], allow_drop=True)
        remote.psql(back.script(), timeout=300)
        assert compare(introspect(remote), catalogs[full]).significant == [], back.script()


# ---------------------------------------------------------------- ordering by pg_depend

DEPENDENT_CASES = {
    # a SQL-standard function body reads a view that must be rebuilt: the function goes first and comes back after
    "function reading a rebuilt view": (
        "CREATE TABLE t (id int, n int); CREATE VIEW v AS SELECT id, n FROM t;"
        " CREATE FUNCTION how_many() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM v; END;",
        "CREATE TABLE t (id int, n bigint); CREATE VIEW v AS SELECT id, n FROM t;"
        " CREATE FUNCTION how_many() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM v; END;",
        [
            "DROP FUNCTION public.how_many()",
            "DROP VIEW public.v",
            "ALTER COLUMN n TYPE bigint",
            "CREATE VIEW public.v",
            "CREATE OR REPLACE FUNCTION public.how_many()",
        ],
    ),
    # a recreated enum: the function taking it and the CHECK calling that function are rebuilt around it
    "check constraint through a function on a recreated type": (
        "CREATE TYPE mood AS ENUM ('sad', 'meh', 'happy');"
        " CREATE FUNCTION cheerful(m mood) RETURNS boolean LANGUAGE sql IMMUTABLE RETURN m <> 'sad';"
        " CREATE TABLE people (m mood, CONSTRAINT nice CHECK (cheerful(m)));",
        "CREATE TYPE mood AS ENUM ('sad', 'happy');"
        " CREATE FUNCTION cheerful(m mood) RETURNS boolean LANGUAGE sql IMMUTABLE RETURN m <> 'sad';"
        " CREATE TABLE people (m mood, CONSTRAINT nice CHECK (cheerful(m)));",
        [
            "ALTER TABLE public.people DROP CONSTRAINT nice",
            "DROP FUNCTION public.cheerful(m public.mood)",
            "CREATE TYPE public.mood",
            "CREATE OR REPLACE FUNCTION public.cheerful",
            "ALTER TABLE public.people ADD CONSTRAINT nice",
            "DROP TYPE public.mood__old",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(DEPENDENT_CASES))
def test_dependents_found_through_pg_depend_are_rebuilt_around_the_change(remote: Remote, case: str) -> None:
    live, desired, order = DEPENDENT_CASES[case]
    remote.psql(live)
    report = plan_against_sql(remote, desired, "schema.sql", PlanOptions(allow_drop=True))
    assert report.verified, (report.error, report.remaining, report.plan.script())
    script = report.plan.script()
    positions = [script.index(fragment) for fragment in order]
    assert positions == sorted(positions), script


def test_dropping_an_unused_column_rebuilds_nothing_else(remote: Remote) -> None:
    """Only what uses a changing column is rebuilt (pg_depend, column by column): no index, key or view on the rest."""
    base = (
        "CREATE TABLE parent (id int PRIMARY KEY); "
        "CREATE TABLE t (id int PRIMARY KEY, parent int REFERENCES parent, n int, {extra});"
        " CREATE INDEX t_n ON t (n); CREATE VIEW v AS SELECT id, n FROM t; CREATE VIEW w AS SELECT id, kind FROM t;"
    )
    remote.psql(base.format(extra="note text, kind int"))
    report = plan_against_sql(remote, base.format(extra="kind bigint"), "schema.sql", PlanOptions(allow_drop=True))
    assert report.verified, (report.error, report.remaining)
    assert [s.sql for s in report.plan.statements] == [
        "DROP VIEW public.w;",
        "ALTER TABLE public.t DROP COLUMN note;",
        "ALTER TABLE public.t ALTER COLUMN kind TYPE bigint USING kind::bigint;",
        "CREATE VIEW public.w AS\n SELECT t.id,\n    t.kind\n   FROM public.t;",
    ]


def test_a_rebuilt_table_continues_its_identity_where_the_old_one_stopped(remote: Remote) -> None:
    """Rows copied with OVERRIDING SYSTEM VALUE leave the new identity at 1: the next insert would collide with a
    copied key."""
    remote.psql(
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at date NOT NULL DEFAULT '2026-01-01');"
        " INSERT INTO t (at) SELECT '2026-01-01' FROM generate_series(1, 5); DELETE FROM t WHERE id = 5;"
    )
    desired = (
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, at date NOT NULL DEFAULT '2026-01-01', "
        "PRIMARY KEY (id, at))"
        " PARTITION BY RANGE (at); CREATE TABLE t_2026 PARTITION OF t FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
    )
    report = plan_against_sql(remote, desired, "schema.sql", PlanOptions(allow_drop=True))
    assert report.verified, (report.error, report.remaining, report.plan.script())
    remote.psql(report.plan.script())
    assert (
        remote.psql("INSERT INTO t DEFAULT VALUES RETURNING id", extra=["-A", "-t"]).text.strip().splitlines()[0] == "6"
    )


def _musicbrainz() -> str:
    path = CORPORA / "schemas" / "musicbrainz.sql"
    if not path.exists():
        pytest.skip(f"corpus {path} is absent")
    return path.read_text()


@SLOW
def test_musicbrainz_built_from_an_empty_database_then_each_mutation_planned_back(sandbox: SandboxHandle) -> None:
    """An ICU collation, a text search configuration mapping tokens to an extension's dictionary, an aggregate,
    constraint triggers; then the diff tests' mutations (a dropped index and foreign key, a type change, a view,
    a function body, ...) undone."""
    sql = _musicbrainz()
    with sandbox.remote(sandbox.create_database("built")) as remote:
        report = plan_against_sql(remote, sql, "musicbrainz.sql")
        script = report.plan.script()
        assert report.verified, (report.error, report.remaining)
        assert len(report.plan.statements) > 1000 and not report.plan.warnings
        assert (
            "CREATE COLLATION musicbrainz.musicbrainz (provider = icu, locale = '@colCaseFirst=lower;colNumeric=yes')"
            in script
        )
        assert (
            "ALTER TEXT SEARCH CONFIGURATION musicbrainz.mb_simple ALTER MAPPING" not in script
        )  # built with ADD MAPPING only
        assert "CREATE CONSTRAINT TRIGGER" in script and " ADD CONSTRAINT delete_unused_tag TRIGGER" not in script
        assert script.index("CREATE COLLATION") < script.index("CREATE TABLE") < script.index("CREATE INDEX")
        assert script.index("CREATE TEXT SEARCH") < script.index("CREATE INDEX")
        # built for real, the database holds its definitions in the form plans write them in (as a restored dump does)
        remote.psql(script, timeout=300)
        desired = introspect(remote, dependencies=True)
        mutations = {key: spec[0] for key, spec in REAL["musicbrainz"]["mutations"].items()}  # type: ignore[attr-defined]
        mutations["all at once"] = ";\n".join(mutations.values())
        # each mutation in its own rolled-back transaction: introspected, then planned back and applied
        mutated = dict(
            _marked(remote.psql(mutation_script(mutations, dependencies=True), extra=["-A", "-t"], timeout=300).text)
        )
        plans = {
            key.replace("_", " "): generate_plan(Catalog.from_json(json.loads(body)), desired, allow_drop=True)
            for key, body in mutated.items()
        }
        sizes = {key: len(plan.statements) for key, plan in plans.items()}
        # each plan touches only what the mutation changed and what uses it (pg_depend, column by column)
        assert set(sizes) == set(mutations) and all(0 < n < 10 for key, n in sizes.items() if key != "all at once"), (
            sizes
        )
        assert all(
            not plan.body("before") and not plan.body("after") for plan in plans.values()
        )  # all in the transaction
        applied = remote.psql(
            mutation_script({key: f"{mutations[key]};\n{HEADER}{plans[key].body()}" for key in plans}),
            extra=["-A", "-t"],
            timeout=300,
        ).text
    remaining = {
        key: [(c.kind, c.status, c.name) for c in compare(Catalog.from_json(json.loads(body)), desired).significant]
        for key, body in _marked(applied)
    }
    print(
        f"\nmusicbrainz: {len(report.plan.statements)} statements from empty, verified; "
        f"mutations planned back (statements): {sizes}"
    )
    assert remaining == {key.replace(" ", "_"): [] for key in mutations}


def _marked(text: str) -> Iterator[tuple[str, str]]:
    """Each rolled-back transaction's catalog, insisting that everything in it ran."""
    for key, state, body in parse_marked(text):
        assert state.startswith("00000"), f"{key}: {state}"
        yield key, body
