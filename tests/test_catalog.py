"""Catalog model and diff engine: pure checks from JSON documents, then introspection of a real database."""

from __future__ import annotations

import copy
import gc
import json
import time
import uuid
from typing import Any

import pytest

from opsagent.remote.transport import Remote
from opsagent.schema.catalog import Catalog, introspect, introspect_many, introspection_sql
from opsagent.schema.changes import Change
from opsagent.schema.compare import compare, excerpt
from opsagent.schema.introspection import WITHOUT_JIT
from opsagent.sqlquote import quote_ident

from .conftest import SandboxHandle

# ---------------------------------------------------------------- pure: model from JSON


def col(name: str, type_: str = "integer", position: int = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "position": position, "not_null": False, "default": None, **extra}


def doc() -> dict[str, Any]:
    return {
        "server_version": 150000,
        "schemas": [{"name": "public", "comment": "standard public schema"}],
        "extensions": [{"name": "citext", "version": "1.6", "schema": "public"}],
        "tables": [
            {
                "schema": "public",
                "name": "trades",
                "kind": "r",
                "persistence": "p",
                "privileges": [["<owner>", "SELECT", False], ["app", "SELECT", False], ["<owner>", "INSERT", False]],
                "columns": [
                    col("id", "bigint", 1, not_null=True),
                    col("price", "numeric(12,2)", 2),
                    col("note", "text", 3),
                ],
            },
            {
                "schema": "public",
                "name": "users",
                "kind": "r",
                "persistence": "p",
                "columns": [col("id", "bigint", 1), col("email", "text", 2)],
            },
        ],
        "views": [
            {"schema": "public", "name": "v", "materialized": False, "definition": " SELECT 1 AS one;", "columns": []}
        ],
        "constraints": [
            {"table": "public.trades", "name": "trades_pkey", "type": "p", "definition": "PRIMARY KEY (id)"}
        ],
        "indexes": [
            {
                "table": "public.trades",
                "name": "idx_trades_paper_mode",
                "definition": (
                    "CREATE INDEX idx_trades_paper_mode ON public.trades USING btree (price) WHERE "
                    "(note = 'paper'::text)"
                ),
            }
        ],
        "sequences": [],
        "functions": [
            {
                "schema": "public",
                "name": "f",
                "kind": "f",
                "arguments": "a integer",
                "result": "integer",
                "definition": "CREATE OR REPLACE FUNCTION public.f(a integer) ... $$ select a $$",
            }
        ],
        "triggers": [],
        "types": [{"schema": "public", "name": "mood", "kind": "enum", "labels": ["happy", "sad"]}],
        "policies": [],
    }


def test_equal_regardless_of_order_of_objects_and_of_unrelated_tables() -> None:
    base = doc()
    shuffled = copy.deepcopy(base)
    for key in ("tables", "schemas", "functions", "types"):
        shuffled[key].reverse()
    shuffled["tables"][1]["privileges"].reverse()  # privileges are a set
    shuffled["tables"][0]["columns"].reverse()  # rows arrive unordered: position decides
    assert Catalog.from_json(base) == Catalog.from_json(shuffled)
    assert compare(Catalog.from_json(base), Catalog.from_json(shuffled)).is_empty


def test_column_order_is_its_own_low_severity_change() -> None:
    live = doc()
    desired = copy.deepcopy(live)
    cols = desired["tables"][1]["columns"]
    cols[0]["position"], cols[1]["position"] = 2, 1
    result = compare(Catalog.from_json(live), Catalog.from_json(desired))
    assert [(c.kind, c.name, c.status, c.severity) for c in result.changes] == [
        ("table", "public.users", "changed", "low")
    ]
    assert result.changes[0].details == ["column order: id, email → email, id"]
    assert result.significant == []
    assert not result.is_empty


def _one(live: dict[str, Any], desired: dict[str, Any]) -> Change:
    result = compare(Catalog.from_json(live), Catalog.from_json(desired))
    assert len(result.changes) == 1, result.changes
    return result.changes[0]


def test_column_type_change_is_one_column_change_with_arrow_detail() -> None:
    live = doc()
    desired = copy.deepcopy(live)
    desired["tables"][0]["columns"][1]["type"] = "numeric(18,8)"
    change = _one(live, desired)
    assert (change.kind, change.name, change.status) == ("column", "public.trades.price", "changed")
    assert change.details == ["trades.price: numeric(12,2) → numeric(18,8)"]


def test_index_definition_difference_names_the_index_and_the_differing_part() -> None:
    live = doc()
    desired = copy.deepcopy(live)
    desired["indexes"][0]["definition"] = desired["indexes"][0]["definition"].replace("'paper'", "'live'")
    change = _one(live, desired)
    assert (change.kind, change.name) == ("index", "public.idx_trades_paper_mode")
    assert change.details[0].startswith("definition differs: ")
    assert "'paper'::text" in change.details[0] and "'live'::text" in change.details[0]
    assert "→" in change.details[0]


@pytest.mark.parametrize(
    ("mutate", "kind", "status"),
    [
        (lambda d: d["indexes"].clear(), "index", "extra"),
        (lambda d: d["tables"][0]["columns"].append(col("qty", "integer", 4)), "column", "missing"),
        (lambda d: d["tables"][0]["columns"].pop(), "column", "extra"),
        (lambda d: d["tables"][0].update(comment="trades"), "comment", "changed"),
        (lambda d: d["tables"][0]["columns"][0].update(comment="key"), "comment", "changed"),
        (lambda d: d["tables"][0].update(rls_enabled=True), "rls", "changed"),
        (lambda d: d["tables"][0]["privileges"].pop(1), "privilege", "changed"),
        (lambda d: d["extensions"][0].update(version="1.7"), "extension", "changed"),
        (lambda d: d["types"][0]["labels"].append("meh"), "type", "changed"),
        (lambda d: d["views"][0].update(materialized=True), "view", "extra"),  # + materialized view missing
        (lambda d: d["functions"][0].update(definition="other"), "function", "changed"),
        (
            lambda d: d["constraints"].append(
                {"table": "public.users", "name": "c", "type": "c", "definition": "CHECK (id > 0)"}
            ),
            "constraint",
            "missing",
        ),
    ],
)
def test_each_single_mutation_reports_its_kind(mutate: Any, kind: str, status: str) -> None:
    live = doc()
    desired = copy.deepcopy(live)
    mutate(desired)
    result = compare(Catalog.from_json(live), Catalog.from_json(desired))
    assert result.changes, "mutation not detected"
    assert (result.changes[0].kind, result.changes[0].status) == (kind, status) or any(
        (c.kind, c.status) == (kind, status) for c in result.changes
    )
    if kind != "view":
        assert len(result.changes) == 1, result.changes


def test_objects_of_a_missing_table_are_folded_into_it() -> None:
    live = doc()
    desired = copy.deepcopy(live)
    desired["tables"] = desired["tables"][1:]
    desired["constraints"].clear()
    desired["indexes"].clear()
    change = _one(live, desired)
    assert (change.kind, change.name, change.status) == ("table", "public.trades", "extra")


def test_to_dict_is_json_and_grouped_by_kind() -> None:
    live = doc()
    desired = copy.deepcopy(live)
    desired["tables"][0]["columns"][1]["type"] = "numeric(18,8)"
    desired["indexes"].clear()
    data = json.loads(json.dumps(compare(Catalog.from_json(live), Catalog.from_json(desired)).to_dict()))
    assert data["empty"] is False
    assert data["counts"] == {"extra": 1, "missing": 0, "changed": 1}
    assert list(data["changes"]) == ["column", "index"]
    assert data["changes"]["column"][0]["details"] == ["trades.price: numeric(12,2) → numeric(18,8)"]


def test_stats_count_by_kind() -> None:
    stats = Catalog.from_json(doc()).stats()
    assert stats["tables"] == 2 and stats["columns"] == 5 and stats["primary_keys"] == 1
    assert stats["enum_types"] == 1 and stats["extensions"] == 1 and stats["views"] == 1 and stats["functions"] == 1


def test_excerpt_shows_only_the_differing_region() -> None:
    old = "SELECT " + ", ".join(f"c{i}" for i in range(60)) + " FROM t WHERE a = 1"
    new = old.replace("a = 1", "a = 2")
    text = excerpt(old, new)
    assert text.startswith("…") and "a = 1" in text and "a = 2" in text and len(text) < 120


def test_excluded_tables_are_quoted_safely_in_the_query() -> None:
    sql = introspection_sql(["schema_migrations", "audit.it's"])
    assert "ARRAY['schema_migrations']::text[]" in sql
    assert "ARRAY['\"audit\".\"it''s\"']::text[]" in sql  # one spelling: both parts double-quoted
    assert sql.startswith("SET search_path = pg_catalog;")


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("trades", "trades"),
        ("Trades", '"Trades"'),
        ("user", '"user"'),
        ("a b", '"a b"'),
        ("x\"y", '"x""y"'),
        ("1abc", '"1abc"'),
    ],
)
def test_quote_ident_matches_postgresql(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


def test_quote_ident_remembers_its_answers_within_a_bound() -> None:
    names = ["plain", "Mixed", "select", 'we"ird', "plain", "Mixed"]
    assert [quote_ident(n) for n in names] == ["plain", '"Mixed"', '"select"', '"we""ird"', "plain", '"Mixed"']
    info = quote_ident.cache_info()
    assert info.hits >= 2 and info.maxsize is not None and info.currsize <= info.maxsize  # bounded


def test_compare_is_linear_in_catalog_size() -> None:
    def big(n: int) -> Catalog:
        tables = [
            {"schema": "public", "name": f"t{i}", "columns": [col(f"c{j}", "integer", j) for j in range(8)]}
            for i in range(n)
        ]
        indexes = [
            {
                "table": f"public.t{i}",
                "name": f"t{i}_c{j}",
                "definition": f"CREATE INDEX t{i}_c{j} ON public.t{i} (c{j})",
            }
            for i in range(n)
            for j in range(2)
        ]
        return Catalog.from_json({"tables": tables, "indexes": indexes})

    def per_table(n: int) -> float:
        a, b = big(n), big(n)
        times = []
        gc.collect()
        gc.disable()  # a full collection costs the whole heap's size (the suite's), not this comparison's
        try:
            for _ in range(5):  # the fastest of five: a busy machine (the suite's other workers) slows single runs
                started = time.process_time()  # CPU, not wall: the bound is about the algorithm
                assert compare(a, b).is_empty
                times.append(time.process_time() - started)
        finally:
            gc.enable()
        return min(times) / n

    small, large = per_table(200), per_table(4000)
    assert large < small * 3, (small, large)


# ---------------------------------------------------------------- against a real database

EVERYTHING = """
CREATE EXTENSION citext;
CREATE SCHEMA app;
COMMENT ON SCHEMA app IS 'application';
CREATE TYPE app.mood AS ENUM ('happy', 'sad');
CREATE TYPE app.pair AS (a integer, b text);
CREATE DOMAIN app.posint AS integer NOT NULL CHECK (VALUE > 0);
CREATE TABLE app.trades (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    price numeric(12,2) NOT NULL DEFAULT 0,
    doubled numeric GENERATED ALWAYS AS (price * 2) STORED,
    label text COLLATE "C",
    mood app.mood,
    email citext UNIQUE,
    during tstzrange,
    paper boolean NOT NULL DEFAULT false,
    qty numeric(12,2),
    EXCLUDE USING gist (during WITH &&)
);
ALTER TABLE app.trades ADD CONSTRAINT price_positive CHECK (price >= 0) NOT VALID;
CREATE TABLE app.fills (id serial PRIMARY KEY,
                        trade_id bigint REFERENCES app.trades (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE INDEX idx_trades_paper_mode ON app.trades (price) INCLUDE (label) WHERE paper;
CREATE INDEX idx_trades_lower ON app.trades (lower(label));
CREATE VIEW app.v_trades AS SELECT id, price FROM app.trades WHERE paper;
CREATE MATERIALIZED VIEW app.mv_trades AS SELECT count(*) AS n FROM app.trades;
CREATE SEQUENCE app.counter INCREMENT 5 START 10;
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE PROCEDURE app.noop(x integer) LANGUAGE sql AS $$ SELECT 1 $$;
CREATE TRIGGER trades_touch BEFORE UPDATE ON app.trades FOR EACH ROW EXECUTE FUNCTION app.touch();
ALTER TABLE app.trades ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_paper ON app.trades FOR SELECT TO PUBLIC USING (paper);
COMMENT ON TABLE app.trades IS 'trades';
COMMENT ON COLUMN app.trades.price IS 'in quote currency';
GRANT SELECT ON app.trades TO PUBLIC;
CREATE TABLE schema_migrations (version text PRIMARY KEY);
"""

EXPECTED_STATS = {
    "schemas": 2,
    "tables": 2,
    "columns": 11,
    "indexes": 2,
    "primary_keys": 2,
    "foreign_keys": 1,
    "unique_constraints": 1,
    "check_constraints": 1,
    "exclude_constraints": 1,
    "views": 1,
    "materialized_views": 1,
    "sequences": 2,
    "functions": 1,
    "procedures": 1,
    "triggers": 1,
    "enum_types": 1,
    "composite_types": 1,
    "domain_types": 1,
    "extensions": 2,
    "policies": 1,
    "collations": 0,
    "text_search_configurations": 0,
    "text_search_dictionaries": 0,
}


@pytest.fixture(scope="module")
def everything(sandbox: SandboxHandle) -> tuple[str, str]:
    """Two databases loaded with the same schema (different OIDs), created in one round trip each."""
    tag = uuid.uuid4().hex[:8]
    first, second = f"cat_a_{tag}", f"cat_b_{tag}"
    sandbox.admin.psql(
        f'DROP DATABASE IF EXISTS "{first}"; DROP DATABASE IF EXISTS "{second}"; '
        f'CREATE DATABASE "{first}"; CREATE DATABASE "{second}";',
        "postgres",
    )
    script = (
        f"\\connect {first}\nCREATE EXTENSION btree_gist;\n{EVERYTHING}\n"
        f"\\connect {second}\nCREATE TABLE app_unrelated_first (x int);\nCREATE EXTENSION btree_gist;\n{EVERYTHING}\n"
        "DROP TABLE app_unrelated_first;\n"
    )
    sandbox.admin.psql(script, "postgres")
    return first, second


def test_introspection_reads_every_kind_in_one_round_trip(sandbox: SandboxHandle, everything: tuple[str, str]) -> None:
    with sandbox.remote(everything[0]) as remote:
        before = remote.command_count
        catalog = introspect(remote)
        assert remote.command_count - before == 1
    stats = catalog.stats()
    assert stats == EXPECTED_STATS
    trades = catalog.tables["app.trades"]
    columns = trades.column_map()
    assert columns["price"].type == "numeric(12,2)" and columns["price"].not_null and columns["price"].default == "0"
    assert columns["id"].identity == "always"
    assert columns["doubled"].generated == "(price * (2)::numeric)"
    assert columns["label"].collation == 'pg_catalog."C"'
    assert columns["mood"].type == "app.mood" and columns["email"].type == "public.citext"
    assert columns["price"].comment == "in quote currency" and trades.comment == "trades"
    assert trades.rls_enabled and ("PUBLIC", "SELECT", False) in trades.privileges
    assert "schema_migrations" not in " ".join(catalog.tables)
    check = catalog.constraints["app.trades.price_positive"]
    assert (check.type, check.validated) == ("c", False) and check.definition.endswith("NOT VALID")
    fk = catalog.constraints["app.fills.fills_trade_id_fkey"]
    assert fk.deferrable and fk.deferred and "ON DELETE CASCADE" in fk.definition
    assert (
        catalog.indexes["app.idx_trades_paper_mode"].definition
        == "CREATE INDEX idx_trades_paper_mode ON app.trades USING btree (price) INCLUDE (label) WHERE paper"
    )
    assert catalog.views["app.mv_trades"].materialized
    assert "FROM app.trades" in catalog.views["app.v_trades"].definition
    assert (
        catalog.sequences["app.counter"].increment == 5
        and catalog.sequences["app.fills_id_seq"].owned_by == "app.fills.id"
    )
    assert catalog.functions["app.noop(IN x integer)"].kind == "p"
    assert "EXECUTE FUNCTION app.touch()" in catalog.triggers["app.trades.trades_touch"].definition
    assert catalog.types["app.mood"].labels == ("happy", "sad")
    assert catalog.types["app.pair"].attributes == (("a", "integer"), ("b", "text"))
    domain = catalog.types["app.posint"]
    assert (domain.kind, domain.base_type, domain.not_null) == ("domain", "integer", True)
    assert catalog.constraints["app.posint.posint_check"].on_domain
    assert catalog.policies["app.trades.only_paper"].roles == ("PUBLIC",)
    assert catalog.extensions["citext"].version and "btree_gist" in catalog.extensions
    assert not any(f.startswith("public.citext") for f in catalog.functions), "extension members must be excluded"
    assert catalog.schemas["app"].comment == "application"


def test_introspection_is_never_jit_compiled_even_where_the_server_would(
    sandbox: SandboxHandle, everything: tuple[str, str]
) -> None:
    """On a large schema the catalog query's price passes ``jit_above_cost`` and compiling it cost seconds (5,000
    tables: 9.4 s against 2.5 s).  Here every query is priced above the threshold: the server compiles the query
    when asked as it stood before, and the introspection script as sent never does."""
    script = introspection_sql(dependencies=True)
    assert script.count(WITHOUT_JIT) == 1
    query = script.split(WITHOUT_JIT, 1)[1]
    explained = script.replace(query, "EXPLAIN (ANALYZE, FORMAT JSON) " + query)
    forced = "SET jit = on;\nSET jit_above_cost = 0;\n"
    with sandbox.remote(everything[0]) as remote:
        before = remote.psql(forced + explained.replace(WITHOUT_JIT, ""), extra=["-A", "-t"]).text
        sent = remote.psql(forced + explained, extra=["-A", "-t"]).text
    assert '"JIT"' in before, "this server does not JIT-compile at all: the check below would prove nothing"
    assert '"JIT"' not in sent


def test_the_introspection_document_lists_objects_in_name_order_not_creation_order(remote: Remote) -> None:
    """Constraints, indexes, triggers, policies (and a policy's roles), and overloads of one function, come sorted:
    an aggregate's ``ORDER BY 1`` orders by a constant (it is no column number there), which left them in the
    catalogs' physical order, so that the same structure built in another order read back differently."""
    role_a, role_b = f"pa_{uuid.uuid4().hex[:8]}", f"pb_{uuid.uuid4().hex[:8]}"
    remote.psql(
        f"CREATE ROLE {role_a}; CREATE ROLE {role_b};\n"  # our own names
        "CREATE TABLE z (id int CONSTRAINT z_pk PRIMARY KEY, v int CONSTRAINT z_v CHECK (v > 0));\n"
        "CREATE TABLE a (id int CONSTRAINT a_pk PRIMARY KEY, v int CONSTRAINT a_v CHECK (v > 0));\n"
        "ALTER TABLE a ADD CONSTRAINT a_c CHECK (v < 10);\n"
        "CREATE INDEX z_v_idx ON z (v); CREATE INDEX a_v_idx ON a (v); CREATE INDEX a_id_v_idx ON a (id, v);\n"
        "CREATE FUNCTION f(text) RETURNS int LANGUAGE sql AS 'SELECT 1';\n"
        "CREATE FUNCTION f(int) RETURNS int LANGUAGE sql AS 'SELECT 2';\n"
        "CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';\n"
        "CREATE TRIGGER zt BEFORE INSERT ON z FOR EACH ROW EXECUTE FUNCTION t();\n"
        "CREATE TRIGGER at BEFORE INSERT ON a FOR EACH ROW EXECUTE FUNCTION t();\n"
        "CREATE TRIGGER ab BEFORE UPDATE ON a FOR EACH ROW EXECUTE FUNCTION t();\n"
        f"CREATE POLICY zp ON z TO {role_b}, {role_a} USING (true);\n"
        f"CREATE POLICY ap ON a TO {role_b}, {role_a} USING (true);\n"
    )
    try:
        document = remote.query_json(introspection_sql())
    finally:
        remote.psql(f"DROP OWNED BY {role_a}, {role_b}; DROP ROLE {role_a}; DROP ROLE {role_b};")
    for kind in ("constraints", "indexes", "triggers", "policies"):
        keys = [(entry["table"], entry["name"]) for entry in document[kind]]
        assert keys == sorted(keys) and len(keys) >= 2, (kind, keys)
    assert [p["roles"] for p in document["policies"]] == [sorted([role_a, role_b])] * 2
    overloads = [f["arguments"] for f in document["functions"] if f["name"] == "f"]
    assert overloads == ["integer", "text"]


def test_same_structure_in_two_databases_is_equal(sandbox: SandboxHandle, everything: tuple[str, str]) -> None:
    with sandbox.remote(everything[0]) as remote:
        before = remote.command_count
        catalogs = introspect_many(remote, list(everything))
        assert remote.command_count - before == 1
    assert catalogs[everything[0]] == catalogs[everything[1]]
    assert compare(catalogs[everything[0]], catalogs[everything[1]]).is_empty


def test_ledger_table_is_included_when_not_excluded(sandbox: SandboxHandle, everything: tuple[str, str]) -> None:
    with sandbox.remote(everything[0]) as remote:
        catalog = introspect(remote, exclude_tables=())
    assert "public.schema_migrations" in catalog.tables
    assert "public.schema_migrations.schema_migrations_pkey" in catalog.constraints


def test_live_changes_are_reported_precisely(remote: Remote) -> None:
    remote.psql("CREATE EXTENSION btree_gist;" + EVERYTHING)
    live = introspect(remote)
    remote.psql("""
        ALTER TABLE app.trades ALTER COLUMN qty TYPE numeric(18,8);
        DROP INDEX app.idx_trades_paper_mode;
        CREATE INDEX idx_trades_paper_mode ON app.trades (price) WHERE NOT paper;
        ALTER TABLE app.trades DISABLE ROW LEVEL SECURITY;
        REVOKE SELECT ON app.trades FROM PUBLIC;
    """)
    desired = introspect(remote)
    result = compare(live, desired)
    summary = {(c.kind, c.name): c.details for c in result.changes}
    assert summary[("column", "app.trades.qty")] == ["app.trades.qty: numeric(12,2) → numeric(18,8)"]
    assert summary[("index", "app.idx_trades_paper_mode")][0].startswith("definition differs: ")
    assert summary[("rls", "app.trades")] == ["rls enabled: yes → no"]
    assert summary[("privilege", "app.trades")] == ["privileges: revoke SELECT from PUBLIC"]
    assert len(result.changes) == 4, result.changes


def test_serial_sequence_is_identified_by_its_column_not_its_name() -> None:
    def with_sequence(name: str, owned: bool = True) -> dict[str, Any]:
        d = doc()
        d["tables"][1]["columns"][0]["default"] = f"nextval('public.{name}'::regclass)"
        d["sequences"] = [
            {
                "schema": "public",
                "name": name,
                "type": "bigint",
                "start": 1,
                "increment": 1,
                "min": 1,
                "max": 9223372036854775807,
                "cache": 1,
                "cycle": False,
                **({"owned_by": "public.users.id"} if owned else {}),
            }
        ]
        return d

    renamed = compare(
        Catalog.from_json(with_sequence("accounts_id_seq")), Catalog.from_json(with_sequence("users_id_seq"))
    )
    assert renamed.is_empty, renamed.changes
    free = compare(
        Catalog.from_json(with_sequence("a_seq", owned=False)), Catalog.from_json(with_sequence("b_seq", owned=False))
    )
    assert {(c.kind, c.status, c.name) for c in free.changes} == {
        ("sequence", "extra", "public.a_seq"),
        ("sequence", "missing", "public.b_seq"),
        ("column", "changed", "public.users.id"),
    }
    changed = with_sequence("users_id_seq")
    changed["sequences"][0]["increment"] = 10
    result = compare(Catalog.from_json(with_sequence("users_id_seq")), Catalog.from_json(changed))
    assert [(c.kind, c.name, c.details) for c in result.changes] == [
        ("sequence", "public.users_id_seq", ["increment: 1 → 10"])
    ]


def test_introspect_many_reaches_hostile_database_names(sandbox: SandboxHandle, everything: tuple[str, str]) -> None:
    hostile = f"it's a=b \\ {uuid.uuid4().hex[:6]}"
    quoted = '"' + hostile.replace('"', '""') + '"'
    sandbox.admin.psql(f"CREATE DATABASE {quoted} TEMPLATE {everything[0]}", "postgres")
    with sandbox.remote(everything[0]) as remote:
        catalogs = introspect_many(remote, [everything[0], hostile])
    assert list(catalogs) == [everything[0], hostile]
    assert catalogs[hostile] == catalogs[everything[0]]


def test_constraints_of_a_missing_domain_are_folded_into_it() -> None:
    live = doc()
    desired = copy.deepcopy(live)
    desired["types"].append({"schema": "public", "name": "posint", "kind": "domain", "base_type": "integer"})
    desired["constraints"].append(
        {
            "table": "public.posint",
            "name": "posint_check",
            "type": "c",
            "definition": "CHECK ((VALUE > 0))",
            "on_domain": True,
        }
    )
    change = _one(live, desired)
    assert (change.kind, change.name, change.status) == ("type", "public.posint", "missing")


@pytest.mark.parametrize(
    ("field", "old", "new", "same"),
    [
        (
            "definition",
            "CHECK ((timezone('utc'::text, created_at) < now()))",
            "CHECK (((created_at AT TIME ZONE 'utc'::text) < now()))",
            True,
        ),
        ("definition", "CHECK ((price > (0)::numeric))", "CHECK ((price > (10)::numeric))", False),
        ("definition", "CHECK ((price > (0)::numeric))", "CHECK ((price > (0)::numeric)) NOT VALID", False),
    ],
)
def test_deparse_variants_of_the_same_call_are_not_drift(field: str, old: str, new: str, same: bool) -> None:
    live = doc()
    live["constraints"].append({"table": "public.trades", "name": "c", "type": "c", "definition": old})
    desired = copy.deepcopy(live)
    desired["constraints"][-1][field] = new
    result = compare(Catalog.from_json(live), Catalog.from_json(desired))
    assert result.is_empty == same, result.changes


def test_owners_are_compared_only_on_request() -> None:
    live = doc()
    live["tables"][0]["owner"] = "postgres"
    desired = copy.deepcopy(live)
    desired["tables"][0]["owner"] = "app"
    assert Catalog.from_json(live) == Catalog.from_json(desired)
    assert compare(Catalog.from_json(live), Catalog.from_json(desired)).is_empty
    result = compare(Catalog.from_json(live), Catalog.from_json(desired), owners=True)
    assert [(c.kind, c.name, c.details) for c in result.changes] == [
        ("owner", "public.trades", ["owner: postgres → app"])
    ]


DEPENDENCIES = """
CREATE FUNCTION half(x int) RETURNS int LANGUAGE sql IMMUTABLE RETURN x / 2;
CREATE TABLE t (id int PRIMARY KEY, n int CHECK (half(n) >= 0), tag text DEFAULT 'x');
CREATE INDEX t_half ON t (half(n));
CREATE VIEW v AS SELECT id, half(n) AS h FROM t;
CREATE VIEW w AS SELECT id FROM v;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch();
CREATE POLICY p ON t USING (half(n) > 0);
CREATE FUNCTION first_row() RETURNS SETOF v LANGUAGE sql BEGIN ATOMIC SELECT * FROM v; END;
"""


def test_dependencies_come_from_pg_depend(remote: Remote) -> None:
    remote.psql(DEPENDENCIES)
    depends = introspect(remote, dependencies=True).depends
    # column by column: dropping or retyping t.tag touches none of these
    assert depends["views:public.v"] == {
        "tables:public.t",
        "columns:public.t.id",
        "columns:public.t.n",
        "functions:public.half(x integer)",
    }
    assert "columns:public.t.tag" not in set().union(*depends.values())
    assert depends["views:public.w"] == {"views:public.v", "columns:public.v.id"}
    assert "functions:public.half(x integer)" in depends["constraints:public.t.t_n_check"]
    assert "functions:public.half(x integer)" in depends["indexes:public.t_half"]
    assert "functions:public.half(x integer)" in depends["policies:public.t.p"]
    assert "functions:public.touch()" in depends["triggers:public.t.t_touch"]
    assert "views:public.v" in depends["functions:public.first_row()"]  # return type and body
    assert "tables:public.t" not in depends.get("tables:public.t", set())  # no self-loops


def _search_doc() -> dict[str, Any]:
    d = doc()
    d["collations"] = [
        {"schema": "public", "name": "ci", "provider": "icu", "locale": "und-u-ks-level2", "deterministic": False}
    ]
    d["text_search_dicts"] = [
        {"schema": "public", "name": "stop", "template": "pg_catalog.simple", "options": "stopwords = 'english'"}
    ]
    d["text_search_configs"] = [
        {
            "schema": "public",
            "name": "plain",
            "parser": 'pg_catalog."default"',
            "mappings": [["asciiword", "public.stop, pg_catalog.simple"], ["int", "pg_catalog.simple"]],
        }
    ]
    return d


@pytest.mark.parametrize(
    ("mutate", "kind", "status", "details"),
    [
        (lambda d: d["collations"][0].update(deterministic=True), "collation", "changed", ["deterministic: no → yes"]),
        (
            lambda d: d["collations"].clear(),
            "collation",
            "extra",
            ["provider icu, locale und-u-ks-level2, nondeterministic"],
        ),
        (
            lambda d: d["text_search_dicts"][0].update(options=None),
            "text search dictionary",
            "changed",
            ["options: stopwords = 'english' → none"],
        ),
        (
            lambda d: d["text_search_configs"][0]["mappings"].pop(1),
            "text search configuration",
            "changed",
            ["mappings: int: pg_catalog.simple → none"],
        ),
        (
            lambda d: d["text_search_configs"][0]["mappings"][0].__setitem__(1, "pg_catalog.simple"),
            "text search configuration",
            "changed",
            ["mappings: asciiword: public.stop, pg_catalog.simple → pg_catalog.simple"],
        ),
        (
            lambda d: d["text_search_configs"][0].update(comment="plain"),
            "comment",
            "changed",
            ["comment: none → plain"],
        ),
    ],
)
def test_collation_and_text_search_changes_are_named_by_kind(
    mutate: Any, kind: str, status: str, details: list[str]
) -> None:
    live = _search_doc()
    desired = copy.deepcopy(live)
    mutate(desired)
    assert Catalog.from_json(live) == Catalog.from_json(copy.deepcopy(live))
    change = _one(live, desired)
    assert (change.kind, change.status, change.details) == (kind, status, details)
    assert change.name in ("public.ci", "public.stop", "public.plain")


def test_collations_and_text_search_are_introspected_without_extension_members(remote: Remote) -> None:
    remote.psql("""
        CREATE EXTENSION unaccent;
        CREATE EXTENSION earthdistance CASCADE;
        CREATE COLLATION natural_sort (provider = icu, locale = 'en-u-kn-true');
        CREATE TEXT SEARCH CONFIGURATION plain (COPY = pg_catalog.simple);
        ALTER TEXT SEARCH CONFIGURATION plain ALTER MAPPING FOR word WITH unaccent, simple;
        CREATE TABLE t (id int, name text COLLATE natural_sort);
        CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER t_noop AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION noop();
    """)
    catalog = introspect(remote)
    collation = catalog.collations["public.natural_sort"]
    assert (collation.provider, collation.locale, collation.deterministic) == ("icu", "en-u-kn-true", True)
    assert catalog.tables["public.t"].column_map()["name"].collation == "public.natural_sort"
    assert catalog.text_search_dicts == {}, "unaccent's dictionary belongs to its extension"
    config = catalog.text_search_configs["public.plain"]
    assert (
        config.parser == 'pg_catalog."default"' and config.mapping_map()["word"] == "public.unaccent, pg_catalog.simple"
    )
    assert config.mapping_map()["asciiword"] == "pg_catalog.simple" and len(config.mappings) == 19
    assert "CREATE CONSTRAINT TRIGGER" in catalog.triggers["public.t.t_noop"].definition
    assert catalog.constraints == {}, (
        "a constraint trigger is a trigger; earthdistance's domain constraint is the extension's"
    )
    stats = catalog.stats()
    assert (stats["collations"], stats["text_search_configurations"], stats["text_search_dictionaries"]) == (1, 1, 0)
