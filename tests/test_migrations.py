"""Unit tests for the migration-file model (opsagent.migrate.files): pure logic, files in tmp_path."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path

import pytest

from opsagent.errors import MigrationError, UsageError
from opsagent.migrate.files import (
    AppliedRow,
    Migration,
    VersionStatus,
    checksum,
    compute_status,
    discover,
    load_migration,
    migration_for_baseline,
    new_migration,
    not_in_transaction,
    parse_filename,
    plan_pending,
    repair_plan,
)
from opsagent.migrate.sqltext import SqlSyntaxError, split_statements
from opsagent.remote.transport import Remote

NO_TX = "-- opsagent:no-transaction\n"


def write(directory: Path, name: str, sql: str | bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(sql, bytes):
        path.write_bytes(sql)
    else:
        path.write_text(sql)
    return path


def load(tmp_path: Path, sql: str, name: str = "003_idx.sql") -> Migration:
    migration, _ = load_migration(write(tmp_path, name, sql))
    return migration


# ---------------------------------------------------------------- names, ordering, duplicates


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("004_add_paper_trading_mode.sql", ("004", 4, "add paper trading mode")),
        ("001_create-users.sql", ("001", 1, "create users")),
        ("0042_a__b--c.sql", ("0042", 42, "a b c")),
        ("20261123093000_add_index.sql", ("20261123093000", 20261123093000, "add index")),
        ("7_x.sql", ("7", 7, "x")),
    ],
)
def test_parse_filename(filename: str, expected: tuple[str, int, str]) -> None:
    assert parse_filename(filename) == expected


@pytest.mark.parametrize(
    "filename",
    [
        "README.md",
        "004.sql",
        "004_.sql",
        "004___.sql",
        "x_004.sql",
        "004_a.SQL",
        "004_a.sql.bak",
        "v004_a.sql",
        "004-a.sql",
    ],
)
def test_parse_filename_rejects(filename: str) -> None:
    assert parse_filename(filename) is None


def test_discover_orders_numerically(tmp_path: Path) -> None:
    for name in ["10_ten.sql", "2_two.sql", "1_one.sql", "003_three.sql"]:
        write(tmp_path, name, "SELECT 1;\n")
    result = discover(tmp_path)
    assert [m.filename for m in result.migrations] == ["1_one.sql", "2_two.sql", "003_three.sql", "10_ten.sql"]
    assert [m.version for m in result.migrations] == ["1", "2", "003", "10"]
    assert [m.version_key for m in result.migrations] == [1, 2, 3, 10]
    assert result.migrations[2].description == "three"
    assert result.warnings == []


def test_discover_missing_directory_is_empty(tmp_path: Path) -> None:
    result = discover(tmp_path / "sql" / "migrations")
    assert result.migrations == [] and result.warnings == []


def test_migrations_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "migrations", "not a folder")
    with pytest.raises(UsageError, match="is not a directory"):
        discover(tmp_path / "migrations")


def test_ignored_files_warn(tmp_path: Path) -> None:
    write(tmp_path, "001_ok.sql", "SELECT 1;")
    write(tmp_path, "README.md", "# notes")
    write(tmp_path, "002_draft.sql.bak", "SELECT 2;")
    write(tmp_path, ".gitkeep", "")
    (tmp_path / "old").mkdir()
    result = discover(tmp_path)
    assert [m.filename for m in result.migrations] == ["001_ok.sql"]
    assert len(result.warnings) == 2
    assert any("README.md: ignored" in w for w in result.warnings)
    assert any("002_draft.sql.bak: ignored" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("first", "second"), [("004_a.sql", "0004_b.sql"), ("004_a.sql", "004_b.sql"), ("4_a.sql", "004_a.sql")]
)
def test_duplicate_versions_name_both_files(tmp_path: Path, first: str, second: str) -> None:
    write(tmp_path, first, "SELECT 1;")
    write(tmp_path, second, "SELECT 2;")
    with pytest.raises(UsageError) as info:
        discover(tmp_path)
    assert first in info.value.message and second in info.value.message
    assert "duplicate migration version 4" in info.value.message


# ---------------------------------------------------------------- text and checksum


def test_line_endings_and_bom_do_not_change_checksum(tmp_path: Path) -> None:
    lf = "CREATE TABLE t (id int);\n-- note\nSELECT 1;\n"
    variants = {
        "001_lf.sql": lf.encode(),
        "002_crlf.sql": lf.replace("\n", "\r\n").encode(),
        "003_cr.sql": lf.replace("\n", "\r").encode(),
        "004_bom.sql": b"\xef\xbb\xbf" + lf.replace("\n", "\r\n").encode(),
    }
    for name, raw in variants.items():
        write(tmp_path, name, raw)
    migrations = discover(tmp_path).migrations
    assert {m.checksum for m in migrations} == {hashlib.sha256(lf.encode()).hexdigest()}
    assert all(m.sql == lf for m in migrations)
    assert [m.size_bytes for m in migrations] == [len(raw) for raw in variants.values()]
    assert checksum(lf + " ") != checksum(lf)


def test_statement_lines_survive_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "003_idx.sql", b"SELECT 1;\r\n\r\nVACUUM;\r\n")
    with pytest.raises(MigrationError, match=r"003_idx\.sql:3: VACUUM cannot run"):
        load_migration(path)


def test_invalid_utf8_is_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path, "001_x.sql", b"SELECT '\xff';")
    with pytest.raises(UsageError, match=r"001_x\.sql: not valid UTF-8"):
        discover(tmp_path)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "005_bad.sql", "SELECT 1;\n\nCREATE TABLE (;\n")
    with pytest.raises(SqlSyntaxError) as info:
        discover(tmp_path)
    assert info.value.message.startswith(f"{path}:3: syntax error")


def test_empty_file_warns(tmp_path: Path) -> None:
    write(tmp_path, "001_empty.sql", "-- nothing yet\n")
    result = discover(tmp_path)
    assert result.migrations[0].statements == []
    assert result.warnings == [f"{tmp_path / '001_empty.sql'}: contains no statements"]


# ---------------------------------------------------------------- markers


@pytest.mark.parametrize(
    ("sql", "transactional"),
    [
        ("-- opsagent:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);", False),
        ("-- add an index\n--\n-- opsagent:no-transaction\n\nVACUUM t;", False),
        ("\n\n   --   opsagent:no-transaction   (needed for CIC)\nVACUUM t;", False),
        ("/* header\n   block */\n-- opsagent:NO-TRANSACTION\nVACUUM t;", False),
        ("-- opsagent: no-transaction\nVACUUM t;", False),
        ("-- nothing special\nSELECT 1;", True),
        ("SELECT 1;\n-- opsagent:no-transaction\nSELECT 2;", True),  # after the first statement: ignored
        ("-- see -- opsagent:no-transaction in the docs\nSELECT 1;", True),  # not at the start of a comment
        ("SELECT '\n-- opsagent:no-transaction\n';", True),  # inside a string
        ("-- opsagent:no-transaction", False),  # comment-only file without a final newline
    ],
)
def test_marker_detection(tmp_path: Path, sql: str, transactional: bool) -> None:
    assert load(tmp_path, sql, "001_m.sql").transactional is transactional


def test_misplaced_marker_warns(tmp_path: Path) -> None:
    path = write(tmp_path, "001_m.sql", "SELECT 1;\n-- opsagent:no-transaction\nSELECT 2;\n")
    _, warnings = load_migration(path)
    assert warnings == [
        f"{path}:2: marker '-- opsagent:no-transaction' ignored: "
        "markers belong in the comment block at the top of the file"
    ]


@pytest.mark.parametrize("marker", ["no-transactions", "notransaction", "lock-timeout=5s", ""])
def test_unknown_marker_warns(tmp_path: Path, marker: str) -> None:
    path = write(tmp_path, "001_m.sql", f"-- intro\n-- opsagent:{marker}\nSELECT 1;\n")
    migration, warnings = load_migration(path)
    assert migration.transactional is True
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{path}:2: unknown marker '-- opsagent:{marker}' ignored")


# ---------------------------------------------------------------- statements that cannot run in a transaction


NOT_IN_TRANSACTION = [
    ("CREATE INDEX CONCURRENTLY idx ON t (a)", "CREATE INDEX CONCURRENTLY"),
    ("create unique index concurrently if not exists idx on t (a)", "CREATE INDEX CONCURRENTLY"),
    ("DROP INDEX CONCURRENTLY idx", "DROP INDEX CONCURRENTLY"),
    ("REINDEX INDEX CONCURRENTLY idx", "REINDEX CONCURRENTLY"),
    ("REINDEX (CONCURRENTLY) TABLE t", "REINDEX CONCURRENTLY"),
    ("REINDEX (VERBOSE, CONCURRENTLY on) SCHEMA s", "REINDEX CONCURRENTLY"),
    ("REINDEX DATABASE app", "REINDEX DATABASE"),
    ("REINDEX SYSTEM app", "REINDEX SYSTEM"),
    ("VACUUM", "VACUUM"),
    ("VACUUM t", "VACUUM"),
    ("VACUUM (FULL, ANALYZE) t", "VACUUM"),
    ("VACUUM ANALYZE t", "VACUUM"),
    ("CLUSTER", "CLUSTER without a table"),
    ("CREATE DATABASE other", "CREATE DATABASE"),
    ("DROP DATABASE IF EXISTS other", "DROP DATABASE"),
    ("ALTER DATABASE app SET TABLESPACE fast", "ALTER DATABASE ... SET TABLESPACE"),
    ("ALTER SYSTEM SET work_mem = '64MB'", "ALTER SYSTEM"),
    ("ALTER SYSTEM RESET ALL", "ALTER SYSTEM"),
    ("CREATE TABLESPACE fast LOCATION '/srv/fast'", "CREATE TABLESPACE"),
    ("DROP TABLESPACE fast", "DROP TABLESPACE"),
    ("ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY", "ALTER TABLE ... DETACH PARTITION CONCURRENTLY"),
    ("CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p", "CREATE SUBSCRIPTION (creating a replication slot)"),
    ("DISCARD ALL", "DISCARD ALL"),
]


@pytest.mark.parametrize(("statement", "what"), NOT_IN_TRANSACTION)
def test_not_in_transaction_refused_with_line(tmp_path: Path, statement: str, what: str) -> None:
    sql = (
        "-- header\nCREATE TABLE t (a int);\n\nINSERT INTO t VALUES (1);\n"
        f"/* why */\n-- comment\n{statement};\nSELECT 1;\n"
    )
    path = write(tmp_path, "003_idx.sql", sql)
    with pytest.raises(MigrationError) as info:
        load_migration(path)
    assert info.value.message == (
        f"{path}:7: {what} cannot run inside a transaction; add \"-- opsagent:no-transaction\" at the top of the file"
    )


@pytest.mark.parametrize(("statement", "what"), NOT_IN_TRANSACTION)
def test_not_in_transaction_accepted_with_marker(tmp_path: Path, statement: str, what: str) -> None:
    path = write(tmp_path, "003_idx.sql", f"{NO_TX}SELECT 1;\n{statement};\n")
    migration, warnings = load_migration(path)
    assert migration.transactional is False
    assert [not_in_transaction(s) for s in migration.body_statements] == [None, what]
    assert warnings == []


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE INDEX idx ON t (a)",
        "DROP INDEX idx",
        "REINDEX TABLE t",
        "REINDEX (CONCURRENTLY false) TABLE t",
        "ANALYZE t",
        "CLUSTER t USING idx",
        "CLUSTER t",
        "ALTER DATABASE app SET work_mem = '64MB'",
        "ALTER DATABASE app WITH CONNECTION LIMIT 5",
        "ALTER TABLE p DETACH PARTITION p1",
        "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p WITH (connect = false)",
        "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p WITH (create_slot = false)",
        "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p WITH (create_slot = off, enabled = false)",
        "REINDEX (CONCURRENTLY 0) INDEX i",
        "DISCARD PLANS",
        "SAVEPOINT before_update",
        "RELEASE SAVEPOINT before_update",
        "ROLLBACK TO SAVEPOINT before_update",
        "SET LOCAL lock_timeout = '5s'",
    ],
)
def test_transaction_safe_statements_accepted(tmp_path: Path, statement: str) -> None:
    migration = load(tmp_path, f"SELECT 1;\n{statement};\n")
    assert migration.transactional is True
    assert len(migration.body_statements) == 2
    assert not_in_transaction(migration.statements[1]) is None  # the AST path agrees with the parse-tree path


TRANSACTION_SAFE = [
    "CREATE INDEX idx2 ON t (a)",
    "DROP INDEX idx",
    "REINDEX TABLE t",
    "REINDEX (CONCURRENTLY false) TABLE t",
    "ANALYZE t",
    "CLUSTER t USING idx",
    "ALTER DATABASE app SET work_mem = '64MB'",
    "ALTER DATABASE app WITH CONNECTION LIMIT 5",
    "ALTER TABLE p DETACH PARTITION p1",
    "CREATE SUBSCRIPTION s CONNECTION 'host=/nonexistent' PUBLICATION p WITH (connect = false)",
    "DISCARD PLANS",
    "DISCARD TEMP",
    "SAVEPOINT before_update",
]


def test_classification_matches_postgresql(remote: Remote) -> None:
    """PostgreSQL itself raises SQLSTATE 25001 inside BEGIN exactly for the statements flagged here."""
    database = remote.host.database
    setup = (
        "CREATE TABLE t (a int);\nCREATE INDEX idx ON t (a);\nCREATE TABLE p (a int) PARTITION BY RANGE (a);\n"
        "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);\n"
    )
    cases = [(sql, True) for sql, _ in NOT_IN_TRANSACTION] + [(sql, False) for sql in TRANSACTION_SAFE]
    script = [setup]
    for index, (sql, _) in enumerate(cases):
        script.append(f"BEGIN;\n{sql.replace('app', database)};\n\\echo case {index} :SQLSTATE\nROLLBACK;\n")
    output = remote.psql("".join(script), extra=["-v", "ON_ERROR_STOP=0"], check=False).text
    states = dict(line.split()[1:3] for line in output.splitlines() if line.startswith("case "))
    assert len(states) == len(cases)
    flagged = [not_in_transaction(split_statements(sql)[0]) is not None for sql, _ in cases]
    wrong = [
        f"{sql}: SQLSTATE {states[str(i)]}"
        for i, (sql, refused) in enumerate(cases)
        if (states[str(i)] == "25001") is not refused
    ]
    assert flagged == [refused for _, refused in cases]
    assert wrong == []


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n"
        "  EXECUTE 'CREATE INDEX CONCURRENTLY i ON t (a)';\n  COMMIT;\nEND\n$$;",
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$ SELECT 'VACUUM; COMMIT;' $body$;",
        "INSERT INTO notes VALUES ('CREATE INDEX CONCURRENTLY i ON t (a); VACUUM; BEGIN; COMMIT;');",
        "COMMENT ON TABLE t IS 'run VACUUM FULL and ALTER SYSTEM weekly';",
        "-- CREATE INDEX CONCURRENTLY i ON t (a);\n/* VACUUM; COMMIT; */\nSELECT 1;",
        "DO $$ BEGIN RAISE NOTICE 'DROP DATABASE x'; END $$;",
    ],
)
def test_no_false_positive_from_bodies_strings_comments(tmp_path: Path, sql: str) -> None:
    migration = load(tmp_path, sql)
    assert migration.transactional is True
    assert all(not_in_transaction(s) is None for s in migration.statements)
    assert migration.wrapped is False


# ---------------------------------------------------------------- explicit transaction control


@pytest.mark.parametrize(
    ("sql", "body_kinds"),
    [
        ("BEGIN;\nCREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\nCOMMIT;\n", ["CreateStmt", "InsertStmt"]),
        ("-- seed style\nbegin;\ncreate table t (a int);\ncommit;", ["CreateStmt"]),
        ("START TRANSACTION;\nCREATE TABLE t (a int);\nEND;", ["CreateStmt"]),
        ("BEGIN TRANSACTION;\nCOMMIT;", []),
        (
            "BEGIN WORK;\nSAVEPOINT s;\nCREATE TABLE t (a int);\nRELEASE s;\nCOMMIT WORK;",
            ["TransactionStmt", "CreateStmt", "TransactionStmt"],
        ),
    ],
)
def test_wrapper_begin_commit_tolerated(tmp_path: Path, sql: str, body_kinds: list[str]) -> None:
    migration = load(tmp_path, sql)
    assert migration.wrapped is True
    assert [s.kind for s in migration.body_statements] == body_kinds
    assert len(migration.statements) == len(body_kinds) + 2
    assert migration.statements[0].kind == migration.statements[-1].kind == "TransactionStmt"


def test_unwrapped_file_has_full_body(tmp_path: Path) -> None:
    migration = load(tmp_path, "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\n")
    assert migration.wrapped is False
    assert migration.body_statements == migration.statements
    assert [s.line for s in migration.body_statements] == [1, 2]


@pytest.mark.parametrize(
    ("sql", "line", "what"),
    [
        ("CREATE TABLE t (a int);\nCOMMIT;\nCREATE TABLE u (a int);", 2, "COMMIT"),
        ("BEGIN;\nCREATE TABLE t (a int);\nCOMMIT;\nBEGIN;\nCREATE TABLE u (a int);\nCOMMIT;", 3, "COMMIT"),
        ("BEGIN;\nCREATE TABLE t (a int);\n", 1, "BEGIN"),
        ("CREATE TABLE t (a int);\nCOMMIT;", 2, "COMMIT"),
        ("BEGIN;\nCREATE TABLE t (a int);\nROLLBACK;", 1, "BEGIN"),
        ("CREATE TABLE t (a int);\n\nABORT;", 3, "ROLLBACK"),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE;\nCREATE TABLE t (a int);\nCOMMIT;", 1, "BEGIN"),
        ("BEGIN;\nCREATE TABLE t (a int);\nCOMMIT AND CHAIN;", 1, "BEGIN"),
        ("START TRANSACTION;\nSELECT 1;\nPREPARE TRANSACTION 'x';", 1, "START TRANSACTION"),
        ("SELECT 1;\nCOMMIT PREPARED 'x';", 2, "COMMIT PREPARED"),
        ("SELECT 1;\nPREPARE TRANSACTION 'x';", 2, "PREPARE TRANSACTION"),
    ],
)
def test_inner_transaction_control_refused(tmp_path: Path, sql: str, line: int, what: str) -> None:
    path = write(tmp_path, "006_tx.sql", sql)
    with pytest.raises(MigrationError) as info:
        load_migration(path)
    assert info.value.message.startswith(
        f"{path}:{line}: {what} inside a migration would break its atomicity with the ledger row"
    )


def test_wrapped_file_still_refuses_non_transactional_statement(tmp_path: Path) -> None:
    path = write(
        tmp_path, "003_idx.sql", "BEGIN;\nCREATE TABLE t (a int);\nCREATE INDEX CONCURRENTLY i ON t (a);\nCOMMIT;\n"
    )
    with pytest.raises(
        MigrationError, match=r"003_idx\.sql:3: CREATE INDEX CONCURRENTLY cannot run inside a transaction"
    ):
        load_migration(path)


def test_no_transaction_file_keeps_explicit_blocks(tmp_path: Path) -> None:
    sql = f"{NO_TX}BEGIN;\nCREATE TABLE t (a int);\nCOMMIT;\nCREATE INDEX CONCURRENTLY i ON t (a);\n"
    migration, warnings = load_migration(write(tmp_path, "003_idx.sql", sql))
    assert migration.wrapped is False
    assert [s.kind for s in migration.body_statements] == [
        "TransactionStmt",
        "CreateStmt",
        "TransactionStmt",
        "IndexStmt",
    ]
    assert warnings == []


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            f"{NO_TX}BEGIN;\nCREATE INDEX CONCURRENTLY i ON t (a);\nCOMMIT;",
            ":3: CREATE INDEX CONCURRENTLY cannot run inside the transaction block opened at line 2",
        ),
        (f"{NO_TX}VACUUM t;\nBEGIN;\nSELECT 1;\n", ":3: transaction block opened here is never committed"),
    ],
)
def test_no_transaction_file_checks_explicit_blocks(tmp_path: Path, sql: str, message: str) -> None:
    path = write(tmp_path, "003_idx.sql", sql)
    with pytest.raises(MigrationError) as info:
        load_migration(path)
    assert info.value.message == f"{path}{message}"


def test_useless_no_transaction_marker_warns(tmp_path: Path) -> None:
    path = write(tmp_path, "003_x.sql", f"{NO_TX}CREATE TABLE t (a int);\n")
    migration, warnings = load_migration(path)
    assert migration.transactional is False
    assert len(warnings) == 1 and "has no statement that needs it" in warnings[0]


# ---------------------------------------------------------------- status


def files(tmp_path: Path, *names: str) -> list[Migration]:
    for name in names:
        write(tmp_path, name, f"SELECT '{name}';\n")
    return discover(tmp_path).migrations


def sums(migrations: list[Migration]) -> dict[int, str]:
    return {m.version_key: m.checksum for m in migrations}


STATUS_CASES = [
    # (file names, ledger rows as (version, checksum or "ok" or None), expected [(version, state)])
    (["001_a.sql", "002_b.sql"], [], [("001", "pending"), ("002", "pending")]),
    (["001_a.sql", "002_b.sql"], [("001", "ok")], [("001", "applied"), ("002", "pending")]),
    (["001_a.sql", "002_b.sql"], [("001", "ok"), ("002", "ok")], [("001", "applied"), ("002", "applied")]),
    (["001_a.sql"], [("001", None)], [("001", "applied")]),  # adopted seed row: checksum unknown
    (["001_a.sql"], [("001", "deadbeef")], [("001", "checksum_mismatch")]),
    (["001_a.sql"], [("001", "ok"), ("002", "ok")], [("001", "applied"), ("002", "missing_file")]),
    (
        ["001_a.sql", "002_b.sql", "003_c.sql"],
        [("001", "ok"), ("003", "ok")],
        [("001", "applied"), ("002", "out_of_order"), ("003", "applied")],
    ),
    (["001_a.sql", "002_b.sql"], [("002", None)], [("001", "out_of_order"), ("002", "applied")]),
    (
        ["004_a.sql", "10_b.sql"],
        [("4", "ok")],
        [("4", "applied"), ("10", "pending")],
    ),  # ledger text kept, numeric match
    (["4_a.sql"], [("0004", "ok")], [("0004", "applied")]),
    (["2_a.sql", "10_b.sql"], [("10", "ok")], [("2", "out_of_order"), ("10", "applied")]),  # 2 < 10, not '2' > '10'
    (
        ["001_a.sql"],
        [("001", "ok"), ("old_manual_fix", None)],
        [("001", "applied"), ("old_manual_fix", "missing_file")],
    ),
]


@pytest.mark.parametrize(("names", "ledger", "expected"), STATUS_CASES)
def test_compute_status(
    tmp_path: Path, names: list[str], ledger: list[tuple[str, str | None]], expected: list[tuple[str, str]]
) -> None:
    migrations = files(tmp_path, *names)
    by_key = sums(migrations)
    rows = [
        AppliedRow(version=v, description="from ledger", checksum=(by_key.get(int(v)) if c == "ok" else c))
        for v, c in ledger
    ]
    statuses = compute_status(migrations, rows)
    assert [(s.version, s.state) for s in statuses] == expected


def test_status_keeps_row_and_migration(tmp_path: Path) -> None:
    migrations = files(tmp_path, "001_create_users.sql", "002_more.sql")
    row = AppliedRow("1", "create users", None, "2026-01-01 10:00:00+00", "deploy", 12, "abc123", "0.1.0")
    first, second = compute_status(migrations, [row])
    assert first.row is row and first.migration is migrations[0] and first.description == "create users"
    assert second.row is None and second.migration is migrations[1] and second.version_key == 2


# ---------------------------------------------------------------- plan


def statuses_for(tmp_path: Path, names: list[str], ledger: dict[str, str | None]) -> list[VersionStatus]:
    migrations = files(tmp_path, *names)
    by_key = sums(migrations)
    rows = [AppliedRow(v, "d", by_key.get(int(v)) if c == "ok" else c) for v, c in ledger.items()]
    return compute_status(migrations, rows)


def test_plan_pending_in_order(tmp_path: Path) -> None:
    statuses = statuses_for(tmp_path, ["10_c.sql", "2_b.sql", "1_a.sql", "11_d.sql"], {"1": "ok"})
    plan = plan_pending(statuses)
    assert [m.filename for m in plan.pending] == ["2_b.sql", "10_c.sql", "11_d.sql"]
    assert plan.problems == [] and plan.ok


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("10", ["2_b.sql", "10_c.sql"]),
        (10, ["2_b.sql", "10_c.sql"]),
        ("0010", ["2_b.sql", "10_c.sql"]),
        ("2", ["2_b.sql"]),
        ("1", []),
        (None, ["2_b.sql", "10_c.sql", "11_d.sql"]),
    ],
)
def test_plan_target(tmp_path: Path, target: str | int | None, expected: list[str]) -> None:
    statuses = statuses_for(tmp_path, ["1_a.sql", "2_b.sql", "10_c.sql", "11_d.sql"], {"1": "ok"})
    assert [m.filename for m in plan_pending(statuses, target=target).pending] == expected


@pytest.mark.parametrize("target", ["5", "abc", "1.2"])
def test_plan_unknown_target_refused(tmp_path: Path, target: str) -> None:
    statuses = statuses_for(tmp_path, ["1_a.sql", "2_b.sql"], {})
    with pytest.raises(UsageError):
        plan_pending(statuses, target=target)


def test_plan_problems(tmp_path: Path) -> None:
    statuses = statuses_for(
        tmp_path,
        ["001_a.sql", "002_b.sql", "004_add_x.sql", "005_e.sql", "006_f.sql"],
        {"001": "ok", "003": "ok", "004": "bad", "005": "ok"},
    )
    plan = plan_pending(statuses)
    assert plan.problems == [
        "002_b.sql: pending but older than the newest applied version 5; "
        "rerun with --allow-out-of-order to apply it anyway",
        "003 (d): applied but its file is missing; restore the file, or run 'inv repair' to forget the row",
        "004_add_x.sql: checksum mismatch (applied file was edited after it ran); "
        "run 'inv repair' if the edit is intended",
    ]
    assert [m.filename for m in plan.pending] == ["006_f.sql"]
    assert plan.refusal().startswith("refusing to apply: 3 problems: 002_b.sql: pending but older")
    assert "\n" not in plan.refusal() and not plan.ok


def test_plan_allow_out_of_order(tmp_path: Path) -> None:
    statuses = statuses_for(tmp_path, ["001_a.sql", "002_b.sql", "003_c.sql", "004_d.sql"], {"001": "ok", "003": "ok"})
    plan = plan_pending(statuses, allow_out_of_order=True)
    assert [m.filename for m in plan.pending] == ["002_b.sql", "004_d.sql"]
    assert plan.problems == []


def test_plan_out_of_order_beyond_target_ignored(tmp_path: Path) -> None:
    statuses = statuses_for(tmp_path, ["001_a.sql", "002_b.sql", "003_c.sql"], {"001": "ok", "003": "ok"})
    plan = plan_pending(statuses, target="001")
    assert plan.pending == [] and plan.problems == []


# ---------------------------------------------------------------- baseline and repair


@pytest.mark.parametrize(("version", "expected"), [("007", [1, 2, 7]), (7, [1, 2, 7]), ("2", [1, 2]), ("1", [1])])
def test_migration_for_baseline(tmp_path: Path, version: str | int, expected: list[int]) -> None:
    migrations = files(tmp_path, "001_a.sql", "002_b.sql", "007_c.sql", "010_d.sql")
    assert [m.version_key for m in migration_for_baseline(migrations, version)] == expected


@pytest.mark.parametrize("version", ["5", "x", ""])
def test_migration_for_baseline_unknown_version(tmp_path: Path, version: str) -> None:
    migrations = files(tmp_path, "001_a.sql", "007_c.sql")
    with pytest.raises(UsageError):
        migration_for_baseline(migrations, version)


def test_repair_plan(tmp_path: Path) -> None:
    statuses = statuses_for(
        tmp_path,
        ["001_a.sql", "002_b.sql", "004_d.sql", "005_e.sql"],
        {"001": "ok", "2": "stale", "03": "ok", "004": None},
    )
    current = {s.version_key: s.migration.checksum for s in statuses if s.migration is not None}
    changes = repair_plan(statuses)
    assert [(c.action, c.version, c.old_checksum, c.new_checksum) for c in changes] == [
        ("update_checksum", "2", "stale", current[2]),
        ("delete_row", "03", None, None),
    ]
    with_unknown = repair_plan(statuses, record_unknown=True)
    assert [(c.action, c.version) for c in with_unknown] == [
        ("update_checksum", "2"),
        ("delete_row", "03"),
        ("update_checksum", "004"),
    ]
    assert with_unknown[-1].new_checksum == current[4]


# ---------------------------------------------------------------- new_migration


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], "001_add_paper_trading_mode.sql"),
        (["001_init.sql"], "002_add_paper_trading_mode.sql"),
        (["001_init.sql", "007_x.sql"], "008_add_paper_trading_mode.sql"),
        (["0042_x.sql"], "0043_add_paper_trading_mode.sql"),
        (["9_x.sql"], "10_add_paper_trading_mode.sql"),
        (["998_x.sql", "999_y.sql"], "1000_add_paper_trading_mode.sql"),
        (["20261123093000_x.sql"], "20261124101500_add_paper_trading_mode.sql"),
        (["20261124101500_x.sql"], "20261124101501_add_paper_trading_mode.sql"),  # same second: still increasing
    ],
)
def test_new_migration_numbering(tmp_path: Path, existing: list[str], expected: str) -> None:
    directory = tmp_path / "sql" / "migrations"
    for name in existing:
        write(directory, name, "SELECT 1;\n")
    now = dt.datetime(2026, 11, 24, 10, 15, 0, tzinfo=dt.UTC)
    path = new_migration(directory, "Add paper-trading mode!", today=now)
    assert path == directory / expected
    assert sorted(p.name for p in directory.iterdir()) == sorted([*existing, expected])


def test_new_migration_timestamp_is_utc(tmp_path: Path) -> None:
    write(tmp_path, "20200101000000_x.sql", "SELECT 1;")
    berlin = dt.timezone(dt.timedelta(hours=1))
    path = new_migration(tmp_path, "y", today=dt.datetime(2026, 11, 24, 11, 0, 0, tzinfo=berlin))
    assert path.name == "20261124100000_y.sql"


def test_new_migration_template_discovers_cleanly(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "migrations"  # missing directory: created
    path = new_migration(directory, "  add   paper trading mode ", today=dt.date(2026, 11, 24))
    text = path.read_text()
    assert text.startswith("-- 001: add paper trading mode\n-- Created 2026-11-24.\n")
    assert "No BEGIN/COMMIT needed: opsagent wraps each migration in a transaction with its ledger row" in text
    assert "-- opsagent:no-transaction" in text
    migration, warnings = load_migration(path)
    assert migration.transactional is True  # the hint is not a marker
    assert migration.description == "add paper trading mode"
    assert warnings == [f"{path}: contains no statements"]


@pytest.mark.parametrize("description", ["", "   ", "!!!", "--"])
def test_new_migration_refuses_empty_description(tmp_path: Path, description: str) -> None:
    with pytest.raises(UsageError):
        new_migration(tmp_path, description)
    assert list(tmp_path.iterdir()) == []


def test_new_migration_caps_long_slugs(tmp_path: Path) -> None:
    path = new_migration(tmp_path, "add " + "very " * 60 + "long name")
    assert path.name.startswith("001_add_very_very") and len(path.name) <= len("001_") + 80 + len(".sql")
    assert not path.name.endswith("_.sql")


def test_new_migration_never_overwrites(tmp_path: Path) -> None:
    first = new_migration(tmp_path, "one", today=dt.date(2026, 1, 1))
    first.write_text("SELECT 1;\n")
    second = new_migration(tmp_path, "one", today=dt.date(2026, 1, 1))
    assert (first.name, second.name) == ("001_one.sql", "002_one.sql")
    assert first.read_text() == "SELECT 1;\n"


def test_new_migration_refuses_duplicates(tmp_path: Path) -> None:
    write(tmp_path, "004_a.sql", "SELECT 1;")
    write(tmp_path, "0004_b.sql", "SELECT 1;")
    with pytest.raises(UsageError, match="duplicate migration version 4"):
        new_migration(tmp_path, "next")


# ---------------------------------------------------------------- benchmark


def test_discover_2000_files_is_fast(tmp_path: Path) -> None:
    body = (
        "CREATE TABLE t{n} (id bigint PRIMARY KEY, name text NOT NULL, created_at timestamptz DEFAULT now());\n"
        "CREATE INDEX t{n}_name ON t{n} (name);\nINSERT INTO t{n} (id, name) VALUES (1, 'x');\n"
    )
    for n in range(1, 2001):
        (tmp_path / f"{n:04d}_create_t{n}.sql").write_text(f"-- migration {n}\n" + body.format(n=n))
    start = time.process_time()  # CPU, not wall: the suite's other worker shares the box; the bound is ours
    result = discover(tmp_path)
    elapsed = time.process_time() - start
    print(f"discover 2000 migrations: {elapsed:.3f} CPU s")
    assert len(result.migrations) == 2000 and result.migrations[-1].version_key == 2000
    assert [s.line for s in result.migrations[-1].statements] == [2, 3, 4]  # full ASTs are built on demand only
    assert elapsed < 1.5  # measured ≈0.35 s: discovery reads the parser's JSON tree, not Python ASTs


def test_split_statements_sanity() -> None:
    # guards the assumption that statement lines come from the LF-normalized text
    assert [s.line for s in split_statements("SELECT 1;\n\nVACUUM;\n")] == [1, 3]


def test_split_statements_parses_a_text_once_whatever_name_it_is_shown_under() -> None:
    # sync reads a file by path, lint by file name: one parse serves both, errors still name the caller's source
    sql = "CREATE TABLE parsed_once (id int);\nSELECT 1;\n"
    by_path, by_name = split_statements(sql, "/project/sql/migrations/0001_x.sql"), split_statements(sql, "0001_x.sql")
    assert [s.line for s in by_name] == [1, 2] and all(a is b for a, b in zip(by_path, by_name, strict=True))
    for source in ("a.sql", "b.sql"):
        with pytest.raises(SqlSyntaxError) as info:
            split_statements("SELECT 1;\nSELEC 2;\n", source)
        assert (info.value.source, info.value.line) == (source, 2)


# ---------------------------------------------------------------- survey: read everything, parse only what is pending


def test_survey_lists_unusable_files_and_check_pending_parses_only_pending_ones(tmp_path: Path) -> None:
    from opsagent.migrate.files import AppliedRow, check_pending, survey

    write(tmp_path, "001_a.sql", "CREATE TABLE a (id int;\n")  # broken, but applied with this very checksum: not parsed
    write(tmp_path, "002_b.sql", "CREATE TABLE b (id int);\n")
    write(tmp_path, "003_c.sql", "CREATE TABLE c (id int;\n")  # pending and broken
    write(tmp_path, "004_d.sql", b"\xff\xfe")
    write(tmp_path, "005_e.sql", "SELECT 1;\n")
    write(tmp_path, "005_again.sql", "SELECT 2;\n")
    write(tmp_path, "notes.sql", "SELECT 3;\n")
    write(tmp_path, "README.md", "not sql\n")
    found = survey(tmp_path)
    assert [m.version for m in found.migrations] == ["001", "002", "003"] and not any(
        m.checked for m in found.migrations
    )
    assert sorted((f.filename, f.version) for f in found.invalid) == [
        ("004_d.sql", "004"),
        ("005_again.sql", "005"),
        ("005_e.sql", "005"),
        ("notes.sql", None),
    ]
    assert any("README.md: ignored" in w for w in found.warnings) and not any("notes.sql" in w for w in found.warnings)
    applied = found.migrations[0]
    statuses = compute_status(
        found.migrations, [AppliedRow("001", checksum=applied.checksum), AppliedRow("004")], found.invalid
    )
    checked, _ = check_pending(statuses)
    by_file = {s.filename: s for s in checked}
    assert by_file["001_a.sql"].state == "applied" and by_file["001_a.sql"].migration is not None
    assert not by_file["001_a.sql"].migration.checked  # applied: compared by checksum, never parsed
    assert by_file["002_b.sql"].state == "out_of_order" and by_file["002_b.sql"].migration is not None  # 004 has a row
    assert by_file["002_b.sql"].migration.checked and len(by_file["002_b.sql"].migration.body_statements) == 1
    assert by_file["003_c.sql"].state == "invalid" and "syntax error" in (by_file["003_c.sql"].error or "")
    assert by_file["004_d.sql"].state == "invalid" and by_file["004_d.sql"].row is not None  # joined to its ledger row
    assert "not valid UTF-8" in (by_file["004_d.sql"].error or "")
    assert {by_file["005_e.sql"].state, by_file["005_again.sql"].state} == {"invalid"}
    assert "duplicate migration version 5" in (by_file["005_e.sql"].error or "")
    assert by_file["notes.sql"].state == "invalid" and by_file["notes.sql"].version_key is None
    plan = plan_pending(checked, allow_out_of_order=True)
    assert plan.pending == [by_file["002_b.sql"].migration] and any("003_c.sql" in p for p in plan.problems)
    with pytest.raises(RuntimeError, match="not checked"):
        _ = applied.body_statements
