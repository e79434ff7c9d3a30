"""Hazard lint: each rule on a minimal example and its safe twin, escalation, one live host."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsagent.errors import ConfigError, ExitCode
from opsagent.migrate.lint import (
    RULES,
    Finding,
    LintUnit,
    Thresholds,
    escalate,
    exit_code_for,
    grade_unknown_sizes,
    lint_against_host,
    lint_migrations,
    lint_sql,
    table_stats_query,
    thresholds_from,
)
from opsagent.migrate.sqltext import SqlSyntaxError
from opsagent.remote.transport import Remote

CORPORA = Path(__file__).parents[1] / ".." / "shared" / "corpora"


def rules_of(sql: str, **kwargs: Any) -> list[str]:
    return [f.rule for f in lint_sql(sql, "m.sql", **kwargs)]


# (rule, unsafe statement(s), safe twin, transactional)
CASES = [
    ("drop-table", "DROP TABLE users", "CREATE TABLE tmp (id int); DROP TABLE tmp", True),
    ("drop-column", "ALTER TABLE users DROP COLUMN legacy", "ALTER TABLE users ADD COLUMN note text", True),
    ("drop-schema", "DROP SCHEMA billing CASCADE", "CREATE SCHEMA billing", True),
    ("drop-database", "DROP DATABASE old_app", "CREATE DATABASE new_app", False),
    ("drop-type", "DROP TYPE mood", "CREATE TYPE mood AS ENUM ('ok')", True),
    ("drop-type", "DROP DOMAIN email", "CREATE DOMAIN email AS text", True),
    ("drop-view", "DROP VIEW active_users", "CREATE OR REPLACE VIEW active_users AS SELECT 1 AS one", True),
    (
        "drop-function",
        "DROP FUNCTION touch()",
        "CREATE OR REPLACE FUNCTION touch() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
        True,
    ),
    ("truncate", "TRUNCATE audit_log", "CREATE TABLE staging (id int); TRUNCATE staging", True),
    ("delete-without-where", "DELETE FROM sessions", "DELETE FROM sessions WHERE expires_at < now()", True),
    (
        "delete-without-where",
        "WITH gone AS (DELETE FROM sessions RETURNING id) SELECT count(*) FROM gone",
        "WITH gone AS (DELETE FROM sessions WHERE id = 1 RETURNING id) SELECT count(*) FROM gone",
        True,
    ),
    ("update-without-where", "UPDATE users SET active = true", "UPDATE users SET active = true WHERE id = 1", True),
    (
        "alter-column-type",
        "ALTER TABLE users ALTER COLUMN name TYPE varchar(20)",
        "ALTER TABLE users ALTER COLUMN name SET DEFAULT ''",
        True,
    ),
    (
        "add-column-not-null-without-default",
        "ALTER TABLE users ADD COLUMN plan text NOT NULL",
        "ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free'",
        True,
    ),
    (
        "create-index-not-concurrently",
        "CREATE INDEX users_email ON users (email)",
        "CREATE INDEX CONCURRENTLY users_email ON users (email)",
        False,
    ),
    (
        "create-index-not-concurrently",
        "CREATE UNIQUE INDEX users_email ON users (email)",
        "CREATE TABLE users2 (email text); CREATE UNIQUE INDEX users2_email ON users2 (email)",
        True,
    ),
    (
        "add-fk-not-valid",
        "ALTER TABLE orders ADD CONSTRAINT orders_user FOREIGN KEY (user_id) REFERENCES users (id)",
        "ALTER TABLE orders ADD CONSTRAINT orders_user FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID",
        True,
    ),
    (
        "add-fk-not-valid",
        "ALTER TABLE orders ADD COLUMN user_id int REFERENCES users (id)",
        "ALTER TABLE orders ADD COLUMN user_id int",
        True,
    ),
    (
        "add-check-not-valid",
        "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0)",
        "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0) NOT VALID",
        True,
    ),
    (
        "set-not-null",
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL",
        "ALTER TABLE users ADD CONSTRAINT email_nn CHECK (email IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE users VALIDATE CONSTRAINT email_nn;\n"
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL",
        True,
    ),
    (
        "add-column-volatile-default",
        "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()",
        "ALTER TABLE users ADD COLUMN created_at timestamptz DEFAULT now()",
        True,
    ),
    (
        "add-column-volatile-default",
        "ALTER TABLE users ADD COLUMN seq bigserial",
        "ALTER TABLE users ADD COLUMN seq bigint",
        True,
    ),
    (
        "add-unique-constraint",
        "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email)",
        "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email",
        True,
    ),
    (
        "add-primary-key",
        "ALTER TABLE users ADD PRIMARY KEY (id)",
        "ALTER TABLE users ADD PRIMARY KEY USING INDEX users_id",
        True,
    ),
    ("table-rewrite", "ALTER TABLE users SET TABLESPACE fast", "ALTER TABLE users SET (fillfactor = 90)", True),
    ("reindex-not-concurrently", "REINDEX TABLE users", "REINDEX TABLE CONCURRENTLY users", False),
    ("drop-index-not-concurrently", "DROP INDEX users_email", "DROP INDEX CONCURRENTLY users_email", False),
    ("vacuum-full", "VACUUM FULL users", "VACUUM users", False),
    ("cluster", "CLUSTER users USING users_pkey", "ANALYZE users", True),
    ("lock-table", "LOCK TABLE users IN ACCESS EXCLUSIVE MODE", "SELECT 1", True),
    (
        "non-transactional-in-transaction",
        "CREATE INDEX CONCURRENTLY users_email ON users (email)",
        "CREATE INDEX users_email ON users (email)",
        True,
    ),
    ("non-transactional-in-transaction", "VACUUM users", "ANALYZE users", True),
    ("non-transactional-in-transaction", "ALTER SYSTEM SET work_mem = '64MB'", "SET work_mem = '64MB'", True),
    (
        "non-transactional-in-transaction",
        "BEGIN; DROP INDEX CONCURRENTLY users_email; COMMIT",
        "DROP INDEX CONCURRENTLY users_email",
        False,
    ),
    (
        "non-transactional-in-transaction",
        "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p",
        "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p WITH (create_slot = off, enabled = false)",
        True,
    ),
    ("non-transactional-in-transaction", "CLUSTER", "CLUSTER users USING users_pkey", True),
    ("transaction-control", "COMMIT", "SELECT 1", True),
    (
        "no-lock-timeout",
        "SET lock_timeout = 0; ALTER TABLE users ADD COLUMN note text",
        "SET lock_timeout = '2s'; ALTER TABLE users ADD COLUMN note text",
        True,
    ),
    (
        "rename-column",
        "ALTER TABLE users RENAME COLUMN name TO full_name",
        "CREATE TABLE t (a int); ALTER TABLE t RENAME COLUMN a TO b",
        True,
    ),
    (
        "rename-table",
        "ALTER TABLE users RENAME TO customers",
        "CREATE TABLE t (a int); ALTER TABLE t RENAME TO u",
        True,
    ),
]


@pytest.mark.parametrize(
    ("rule", "unsafe", "safe", "transactional"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_rule_fires_on_unsafe_and_not_on_safe_twin(rule: str, unsafe: str, safe: str, transactional: bool) -> None:
    assert rule in rules_of(unsafe, transactional=transactional)
    assert rule not in rules_of(safe, transactional=transactional)


def test_every_rule_has_a_case_and_a_one_line_fix() -> None:
    covered = {case[0] for case in CASES} | {"lock-timeout"}
    assert set(RULES) == covered
    for rule in RULES.values():
        assert rule.severity in ("info", "warning", "error")
        assert rule.fix and "\n" not in rule.fix


def test_dollar_bodies_and_strings_are_not_findings() -> None:
    sql = """
CREATE FUNCTION purge() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  DROP TABLE users;
  DELETE FROM sessions;
  EXECUTE 'TRUNCATE audit_log';
END $$;
DO $body$ BEGIN EXECUTE 'DROP TABLE users'; UPDATE users SET a = 1; END $body$;
INSERT INTO notes (body) VALUES ('DROP TABLE users; DELETE FROM sessions;');
COMMENT ON TABLE notes IS 'never DROP TABLE notes; VACUUM FULL';
-- DROP TABLE users;
/* ALTER TABLE users DROP COLUMN x; */
SELECT $q$ALTER TABLE users ALTER COLUMN a SET NOT NULL$q$;
"""
    assert lint_sql(sql, "fp.sql") == []


def test_finding_points_at_file_line_and_has_table_and_fix() -> None:
    sql = (
        "-- header\nSELECT 1;\n\nALTER TABLE public.users\n  ADD COLUMN a int,\n"
        "  ADD COLUMN token uuid DEFAULT gen_random_uuid();\n"
    )
    finding = next(f for f in lint_sql(sql, "0002_x.sql") if f.rule == "add-column-volatile-default")
    assert finding.location == "0002_x.sql:6"
    assert finding.table == "public.users"
    assert finding.severity == "warning" and finding.category == "blocking"
    assert finding.fix == RULES["add-column-volatile-default"].fix
    assert json.loads(json.dumps(finding.to_dict()))["rule"] == "add-column-volatile-default"


def test_multiple_drop_targets_and_quoted_names() -> None:
    findings = [f for f in lint_sql('DROP TABLE a, billing."Invoices" CASCADE', "d.sql") if f.rule == "drop-table"]
    assert [f.table for f in findings] == ["a", 'billing."Invoices"']
    assert "CASCADE" in findings[0].message


@pytest.mark.parametrize(
    ("sql", "expected_rule", "expected_timeout", "origin"),
    [
        ("ALTER TABLE users ADD COLUMN a int", "lock-timeout", "5s", "tool default"),
        ("SET lock_timeout = '3s'; ALTER TABLE users ADD COLUMN a int", "lock-timeout", "3s", "set at line 1"),
        ("SET LOCAL lock_timeout TO 500; ALTER TABLE users ADD COLUMN a int", "lock-timeout", "500ms", "set at line 1"),
        ("SET lock_timeout = 0; ALTER TABLE users ADD COLUMN a int", "no-lock-timeout", "0", "set at line 1"),
        (
            "RESET lock_timeout; ALTER TABLE users ADD COLUMN a int",
            "no-lock-timeout",
            "server default",
            "server default",
        ),
        (
            "SELECT set_config('lock_timeout', '0', false); CREATE INDEX i ON users (a)",
            "no-lock-timeout",
            "0",
            "set_config",
        ),
    ],
)
def test_timing_reports_which_lock_timeout_applies(
    sql: str, expected_rule: str, expected_timeout: str, origin: str
) -> None:
    timing = [f for f in lint_sql(sql, "t.sql") if f.category == "timing"]
    assert [f.rule for f in timing] == [expected_rule]
    assert timing[0].lock_timeout == expected_timeout
    assert origin in timing[0].message
    assert timing[0].severity == ("info" if expected_rule == "lock-timeout" else "warning")


def test_no_lock_timeout_when_the_tool_sets_none() -> None:
    findings = lint_sql("CREATE INDEX i ON users (a)", "t.sql", lock_timeout=None)
    assert "no-lock-timeout" in [f.rule for f in findings]


def test_set_local_outside_a_transaction_block_has_no_effect() -> None:
    sql = "SET LOCAL lock_timeout = '1s';\nREINDEX TABLE users;\n"
    timing = [f for f in lint_sql(sql, "t.sql", transactional=False, lock_timeout="0") if f.category == "timing"]
    assert [f.rule for f in timing] == ["no-lock-timeout"]


def test_each_file_starts_from_the_tool_default() -> None:
    units = [
        LintUnit("1.sql", "SET lock_timeout = 0; ALTER TABLE a ADD COLUMN x int"),
        LintUnit("2.sql", "ALTER TABLE a ADD COLUMN y int"),
    ]
    timing = [(f.source, f.rule) for f in lint_migrations(units) if f.category == "timing"]
    assert timing == [("1.sql", "no-lock-timeout"), ("2.sql", "lock-timeout")]


def test_only_a_table_created_earlier_in_the_same_file_is_new() -> None:
    units = [
        (
            "0001_create.sql",
            "CREATE TABLE events (id bigint, kind text);\nCREATE INDEX events_id ON events (id);",
            True,
        ),
        (
            "0002_index.sql",
            "CREATE INDEX events_kind ON events (kind);\n"
            "ALTER TABLE events ALTER COLUMN kind SET NOT NULL;\n"
            "CREATE TABLE fresh (id int);\nCREATE INDEX fresh_id ON fresh (id);\n"
            "CREATE INDEX users_kind ON users (kind);",
            True,
        ),
    ]
    findings = [f for f in lint_migrations(units) if f.severity != "info"]
    # events comes from 0001: when 0002 runs it is an existing table (on production 0001 ran long ago)
    assert [(f.source, f.rule, f.table, f.line, f.created_in) for f in findings] == [
        ("0002_index.sql", "create-index-not-concurrently", "events", 1, "0001_create.sql"),
        ("0002_index.sql", "set-not-null", "events", 2, "0001_create.sql"),
        ("0002_index.sql", "create-index-not-concurrently", "users", 5, None),
    ]


def test_offline_grading_of_existing_tables_of_unknown_size() -> None:
    units = [
        ("0001_create.sql", "CREATE TABLE orders (id bigint, user_id bigint);", True),
        (
            "0002_index.sql",
            "CREATE INDEX orders_user ON orders (user_id);\nDROP TABLE legacy;\n"
            "ALTER TABLE orders ADD COLUMN code text DEFAULT make_code();",
            True,
        ),
    ]
    strict = grade_unknown_sizes(lint_migrations(units))
    graded = [(f.rule, f.severity) for f in strict if f.category != "timing"]
    assert graded == [
        ("create-index-not-concurrently", "error"),
        ("drop-table", "error"),
        ("add-column-volatile-default", "info"),
    ]  # an unknown function stays info
    assert "created by 0001_create.sql, an earlier migration" in (strict[0].reason or "")
    assert "unknown size offline" in (strict[0].reason or "") and "--host" in (strict[0].reason or "")
    relaxed = grade_unknown_sizes(lint_migrations(units), {"unknown_table_size": "small"})
    assert [(f.rule, f.severity) for f in relaxed if f.category != "timing"] == [
        ("create-index-not-concurrently", "info"),
        ("drop-table", "warning"),
        ("add-column-volatile-default", "info"),
    ]
    with pytest.raises(ConfigError, match="unknown_table_size"):
        thresholds_from({"unknown_table_size": "huge"})


def test_live_table_missing_but_created_by_an_earlier_pending_file_is_new() -> None:
    units = [
        ("0013_create.sql", "CREATE TABLE orders (id bigint, user_id bigint);", True),
        ("0014_index.sql", "CREATE INDEX orders_user ON orders (user_id);\nCREATE INDEX users_x ON users (x);", True),
    ]
    live = escalate(lint_migrations(units), {"users": {"rows": 5_000_000, "bytes": 2 << 30}})
    graded = {(f.table, f.rule): f for f in live}
    new = graded[("orders", "create-index-not-concurrently")]
    assert (
        new.severity == "info"
        and "not on the host yet" in (new.reason or "")
        and "0013_create.sql" in (new.reason or "")
    )
    assert graded[("users", "create-index-not-concurrently")].severity == "error"


def test_migration_objects_with_filename_are_accepted() -> None:
    @dataclasses.dataclass
    class Migration:  # the shape of opsagent.migrate.files.Migration
        filename: str
        sql: str
        transactional: bool
        statements: tuple[object, ...] = ()

    findings = lint_migrations([Migration("0003_x.sql", "TRUNCATE users", True)])
    assert [(f.source, f.rule) for f in findings] == [("0003_x.sql", "truncate"), ("0003_x.sql", "lock-timeout")]


def test_unknown_default_function_is_only_info() -> None:
    findings = lint_sql("ALTER TABLE users ADD COLUMN code text DEFAULT make_code()", "m.sql")
    volatile = [f for f in findings if f.rule == "add-column-volatile-default"]
    assert [f.severity for f in volatile] == ["info"]
    assert "make_code()" in volatile[0].message


def test_acknowledged_finding_is_downgraded() -> None:
    sql = (
        "-- opsagent:ignore drop-column\nALTER TABLE users DROP COLUMN legacy;\nALTER TABLE users DROP COLUMN other;\n"
    )
    drops = [f for f in lint_sql(sql, "m.sql") if f.rule == "drop-column"]
    assert [(f.line, f.severity, f.acknowledged) for f in drops] == [(2, "info", True), (3, "warning", False)]


def test_syntax_error_is_reported_with_file_and_line() -> None:
    with pytest.raises(SqlSyntaxError, match=r"bad\.sql:2"):
        lint_sql("SELECT 1;\nALTER TABLE users ADD COLUMN;\n", "bad.sql")


def test_exit_code() -> None:
    info = lint_sql("ALTER TABLE users RENAME TO customers", "m.sql")
    assert info and exit_code_for(info) == ExitCode.OK
    assert exit_code_for(lint_sql("DROP TABLE users", "m.sql")) == ExitCode.HAZARDS
    assert exit_code_for([]) == ExitCode.OK


# ---------------------------------------------------------------- escalation (pure)

LIMITS = {"large_table_rows": 10_000, "large_table_bytes": "100MB"}


def one(sql: str, rule: str) -> Finding:
    return next(f for f in lint_sql(sql, "m.sql") if f.rule == rule)


@pytest.mark.parametrize(
    ("sql", "rule", "stats", "severity"),
    [
        ("CREATE INDEX i ON users (a)", "create-index-not-concurrently", {"rows": 20_000, "bytes": 1 << 20}, "error"),
        ("CREATE INDEX i ON users (a)", "create-index-not-concurrently", {"rows": 10, "bytes": 1 << 30}, "error"),
        (
            "CREATE INDEX i ON users (a)",
            "create-index-not-concurrently",
            {"rows": 9_999, "bytes": (100 << 20) - 1},
            "warning",
        ),
        ("CREATE INDEX i ON users (a)", "create-index-not-concurrently", {"rows": 1_000, "bytes": 100_000}, "info"),
        ("DROP TABLE users", "drop-table", {"rows": 1, "bytes": 16384}, "error"),
        ("DROP TABLE users", "drop-table", {"rows": 0, "bytes": 8192}, "warning"),
        ("ALTER TABLE users ALTER COLUMN n TYPE int2", "alter-column-type", {"rows": 5, "bytes": 8192}, "error"),
        ("ALTER TABLE users ALTER COLUMN n TYPE bigint", "alter-column-type", {"rows": 5_000, "bytes": 8192}, "info"),
        (
            "ALTER TABLE users ADD COLUMN p text NOT NULL",
            "add-column-not-null-without-default",
            {"rows": 3, "bytes": 1},
            "error",
        ),
        ("UPDATE users SET a = 1", "update-without-where", {"rows": 50, "bytes": 8192}, "warning"),
        ("UPDATE users SET a = 1", "update-without-where", {"rows": 50_000, "bytes": 8192}, "error"),
        ("DROP VIEW v", "drop-view", {}, "warning"),
    ],
)
def test_escalation(sql: str, rule: str, stats: dict[str, int], severity: str) -> None:
    finding = one(sql, rule)
    [escalated] = escalate([finding], {"users": stats} if stats else {}, LIMITS)
    assert escalated.severity == severity
    if stats:
        assert (escalated.rows, escalated.bytes) == (stats["rows"], stats["bytes"])
        assert (escalated.reason is not None) == (severity != finding.severity)


def test_escalation_leaves_unknown_tables_and_acknowledged_findings_alone() -> None:
    findings = lint_sql("-- opsagent:ignore drop-table\nDROP TABLE users;\nDROP TABLE other;", "m.sql")
    escalated = escalate(findings, {"users": {"rows": 10, "bytes": 1}}, None)
    assert [(f.table, f.severity) for f in escalated if f.rule == "drop-table"] == [
        ("users", "info"),
        ("other", "warning"),
    ]


@pytest.mark.parametrize(
    ("hazards", "expected"),
    [
        ({}, Thresholds()),
        ({"large_table_rows": 5}, Thresholds(large_table_rows=5)),
        (
            {"large_table_bytes": "2GB", "small_table_rows": "1_000"},
            Thresholds(large_table_bytes=2 << 30, small_table_rows=1000),
        ),
    ],
)
def test_thresholds_from_host_config(hazards: dict[str, Any], expected: Thresholds) -> None:
    assert thresholds_from(hazards) == expected


@pytest.mark.parametrize(
    "hazards",
    [{"large_rows": 1}, {"large_table_rows": "1GB"}, {"large_table_bytes": True}, {"large_table_bytes": "lots"}],
)
def test_bad_thresholds_are_config_errors(hazards: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="hazards"):
        thresholds_from(hazards)


def test_stats_query_quotes_names() -> None:
    sql = table_stats_query(["users", "o'brien", "users"])
    assert sql.count("('users')") == 1 and "('o''brien')" in sql


# ---------------------------------------------------------------- live host


def test_lint_against_host_escalates_on_a_filled_table(remote: Remote) -> None:
    remote.psql(
        "CREATE SCHEMA app;\n"
        "CREATE TABLE app.big AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 20000) AS g;\n"
        "CREATE TABLE small (id int, name text);\n"
        "INSERT INTO small SELECT g, 'x' FROM generate_series(1, 50) AS g;\n"
        "CREATE TABLE parted (id int) PARTITION BY RANGE (id);\n"
        "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (15000);\n"
        "CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (15000) TO (30000);\n"
        "INSERT INTO parted SELECT g FROM generate_series(1, 29999) AS g;\n"
        "ANALYZE;\n"
    )
    sql = (
        "CREATE INDEX big_name ON app.big (name);\n"
        "CREATE INDEX small_name ON small (name);\n"
        "CREATE INDEX parted_id ON parted (id);\n"
        "ALTER TABLE small DROP COLUMN name;\n"
        "CREATE INDEX ghost_id ON ghost (id);\n"
    )
    findings = lint_sql(sql, "0005_idx.sql")
    hazards = yaml.safe_load("large_table_rows: 10000")
    escalated = lint_against_host(remote, findings, hazards)
    by_rule = {(f.rule, f.table): f for f in escalated if f.category != "timing"}
    big = by_rule[("create-index-not-concurrently", "app.big")]
    assert big.severity == "error" and big.rows is not None and 19_000 <= big.rows <= 21_000
    assert big.bytes is not None and big.bytes > 1 << 20
    assert by_rule[("create-index-not-concurrently", "small")].severity == "info"
    parted = by_rule[("create-index-not-concurrently", "parted")]
    assert parted.severity == "error" and parted.rows is not None and parted.rows >= 29_000
    assert by_rule[("drop-column", "small")].severity == "error"  # 50 rows of data would be lost
    ghost = by_rule[("create-index-not-concurrently", "ghost")]
    assert ghost.severity == "warning" and ghost.rows is None
    assert exit_code_for(escalated) == ExitCode.HAZARDS


# ---------------------------------------------------------------- robustness on real migrations


def _corpus_migrations() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in sorted((CORPORA / "migra").glob("*/expected*.sql")):
        found.append((str(path.relative_to(CORPORA)), path.read_text()))
    for path in sorted((CORPORA / "sqldef").glob("tests_*.yml")):
        cases = yaml.safe_load(path.read_text()) or {}
        for name, case in cases.items():
            for key in ("up", "down", "current", "desired"):
                if isinstance(case, dict) and isinstance(case.get(key), str):
                    found.append((f"{path.name}:{name}:{key}", case[key]))
    return found


def test_never_crashes_on_real_migrations() -> None:
    if not CORPORA.exists():
        pytest.skip("../shared/corpora is absent (fresh clone)")
    migrations = _corpus_migrations()
    assert len(migrations) > 500
    linted = 0
    total: list[Finding] = []
    for source, sql in migrations:
        try:
            total.extend(lint_sql(sql, source))
        except SqlSyntaxError:
            continue
        linted += 1
    assert linted > 500
    assert {f.rule for f in total} >= {
        "drop-table",
        "drop-column",
        "create-index-not-concurrently",
        "alter-column-type",
    }
    assert all(f.rule in RULES and f.line >= 1 for f in total)


# ---------------------------------------------------------------- docs and the Squawk comparison stay true

REPO = Path(__file__).resolve().parents[1]


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("squawk_compare", REPO / "bench" / "squawk_compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_comparison_examples_are_caught_by_the_rule_they_name() -> None:
    bench = _bench_module()
    for example in bench.EXAMPLES:
        fired = bench.opsagent_rules(example)
        if example.expected:
            assert any(r.startswith(example.expected + " ") for r in fired), example
        elif example.hazard.startswith("safe:"):
            assert fired == [], example


def test_docs_list_every_rule_as_generated() -> None:
    doc = (REPO / "docs" / "LINT.md").read_text()
    assert _bench_module().rules_reference() in doc


_TREE_CASES = '''
CREATE TABLE "Odd ""Name""" (id int);
CREATE INDEX ON "Odd ""Name""" (id);
CREATE TABLE app.t (id int PRIMARY KEY, v text CHECK (v <> ''));
CREATE UNIQUE INDEX t_v ON app.t (v);
CREATE INDEX CONCURRENTLY big_v ON public.big (v);
CREATE UNIQUE INDEX IF NOT EXISTS big_u ON ONLY big (id);
CREATE INDEX big_partial ON "public"."big" USING btree (lower(v)) WHERE v IS NOT NULL;
CREATE TEMP TABLE scratch (id int);
CREATE INDEX ON scratch (id);
CREATE TABLE part (id int) PARTITION BY RANGE (id);
CREATE TABLE part_1 PARTITION OF part FOR VALUES FROM (0) TO (10);
CREATE INDEX ON part (id);
CREATE INDEX ON "Big" (id);
'''


@pytest.mark.parametrize("transactional", [True, False])
def test_create_table_and_index_read_from_the_json_tree_find_what_the_ast_finds(
    transactional: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CREATE TABLE and CREATE INDEX are linted from libpg_query's JSON tree (10x cheaper): same findings as pglast's
    from opsagent.migrate import lint as lint_module

    units = [("001_a.sql", _TREE_CASES, transactional), ("002_b.sql", "CREATE INDEX ON app.t (id);", transactional)]
    from_tree = lint_module.lint_migrations(units)
    monkeypatch.setattr(lint_module, "_TREE_KINDS", frozenset())
    from_ast = lint_module.lint_migrations(units)
    assert from_tree == from_ast
    assert {f.rule for f in from_tree} >= {"create-index-not-concurrently"}
    assert any(f.table == "public.big" for f in from_tree)  # quoted, schema-qualified, ONLY: all the same table
