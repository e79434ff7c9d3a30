"""Inputs that are legal but large or odd (issue 12 §5): linear splitting, COPY from the client, bad files exit 2."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest

from opsagent.errors import ExitCode, InvalidMigration, MigrationError, UsageError
from opsagent.migrate.files import discover, load_migration
from opsagent.migrate.hazards import assess
from opsagent.migrate.sqltext import SqlSyntaxError, UnsupportedSql, _split_cached, split_statements

from .conftest import Project


def generated_migration(statements: int, per_table: int = 1000) -> str:
    """``statements`` small statements: a CREATE TABLE then INSERTs into it, block after block (~120 bytes each)."""
    parts = ["-- generated large migration\n\n"]
    table = 0
    for i in range(statements):
        if i % per_table == 0:
            table += 1
            parts.append(
                f"CREATE TABLE big_t{table} (id bigint PRIMARY KEY, name text NOT NULL, qty integer, note text);\n"
            )
            continue
        parts.append(
            f"INSERT INTO big_t{table} (id, name, qty, note) VALUES ({i}, 'name {i:08d}', {i % 977}, "
            f"'some note text about row {i:09d}');\n"
        )
    return "".join(parts)


def _discover_and_lint(folder: Path) -> tuple[float, int]:
    """CPU seconds to discover (read, split, check) and lint one big file, as ``inv lint`` and sync's preparation do."""
    _split_cached.cache_clear()  # a repeat must split again, not time the memo's lookup (which made this noisy)
    gc.collect()
    gc.disable()  # a full collection costs the whole heap's size (the suite's, growing), not this file's
    try:
        started = time.process_time()  # CPU, not wall: the box is shared, the bound is about the algorithm
        found = discover(folder)
        report = assess(None, found.migrations)
        elapsed = time.process_time() - started
    finally:
        gc.enable()
    assert report.findings == () and len(found.migrations) == 1
    return elapsed, len(found.migrations[0].statements)


def test_splitting_and_lint_are_linear_in_the_file_size(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    for folder, count in ((small, 20_000), (large, 40_000)):
        folder.mkdir()
        (folder / "001_data.sql").write_text(generated_migration(count))
    assert (large / "001_data.sql").stat().st_size > 4_500_000  # the ~5 MB case
    # the fastest of three real runs each (the memo cleared before each): the suite's other worker slows single runs
    (one, statements_one), (two, statements_two) = (
        min(_discover_and_lint(folder) for _ in range(3)) for folder in (small, large)
    )
    assert (statements_one, statements_two) == (20_000, 40_000)
    assert two < 30, f"a 5 MB migration took {two:.1f} CPU s to split and lint"  # was ~60 s (quadratic)
    assert two / one < 3, f"doubling the file multiplied the time by {two / one:.2f} ({one:.2f} s -> {two:.2f} s)"


def test_lines_are_exact_far_into_a_big_file() -> None:
    sql = generated_migration(5_000) + "\n-- tail\n\nCREATE INDEX late_idx\n  ON big_t5 (name);\n"
    statements = split_statements(sql, "big.sql")
    lines = sql.split("\n")
    assert len(statements) == 5_001
    for statement in (statements[0], statements[1], statements[2_500], statements[-2]):
        assert lines[statement.line - 1].startswith(statement.text.split("\n")[0])
    assert statements[-1].line == sql.count("\n", 0, sql.index("CREATE INDEX late_idx")) + 1
    assert statements[-1].kind == "IndexStmt" and statements[-1].node.relation.relname == "big_t5"


@pytest.mark.parametrize(
    ("sql", "kinds"),
    [
        # the scanner cuts at every top-level semicolon; a BEGIN ATOMIC body needs the grammar's cut
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND;\nSELECT 3;",
            [("CreateFunctionStmt", 1), ("SelectStmt", 6)],
        ),
        (
            "CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2);\n/* a /* nested */ comment */ SELECT 4;",
            [("RuleStmt", 1), ("SelectStmt", 2)],
        ),
        ("SELECT 'a;b', $$c;d$$; -- x;\n;\n;SELECT 5", [("SelectStmt", 1), ("SelectStmt", 3)]),
    ],
)
def test_statement_boundaries_follow_the_grammar(sql: str, kinds: list[tuple[str, int]]) -> None:
    assert [(s.kind, s.line) for s in split_statements(sql)] == kinds


def test_an_unclosed_tail_is_a_syntax_error_not_dropped() -> None:
    with pytest.raises(SqlSyntaxError, match=r"x.sql:3: syntax error"):
        split_statements("SELECT 1;\n\nCREATE TABLE t (id int;\n", "x.sql")
    with pytest.raises(SqlSyntaxError, match=r"x.sql:2: .*NUL byte"):
        split_statements("SELECT 1;\nSELECT\x00 2;", "x.sql")


# ---------------------------------------------------------------- COPY and psql meta-commands


@pytest.mark.parametrize(
    ("sql", "error", "line", "words"),
    [
        (
            "CREATE TABLE t (a int);\nCOPY t (a) FROM stdin;\n",
            UnsupportedSql,
            2,
            "COPY ... FROM STDIN cannot run in a migration",
        ),
        ("CREATE TABLE t (a int);\ncopy t from STDIN with (format csv);\nSELECT 1;\n", UnsupportedSql, 2, "FROM STDIN"),
        ("CREATE TABLE t (a int);\nCOPY t (a) FROM stdin;\n1\n2\n\\.\nSELECT 1;\n", UnsupportedSql, 2, "FROM STDIN"),
        # data the scanner cannot even cut (an odd quote): the parser's error is explained by the COPY before it
        (
            "CREATE TABLE t (a text);\nCOPY t (a) FROM stdin;\nO'Brien\n\\.\n",
            SqlSyntaxError,
            3,
            "inline COPY data after the COPY ... FROM STDIN at line 2",
        ),
        ("SELECT 1;\n\\copy t from 'rows.csv' csv\n", SqlSyntaxError, 2, "\\copy is a psql meta-command"),
        ("SELECT 1;\n\\set ON_ERROR_STOP 0\nSELECT 2;\n", SqlSyntaxError, 2, "\\set is a psql meta-command"),
        ("COPY (SELECT 1) TO STDOUT;\n", UnsupportedSql, 1, "TO STDOUT"),
    ],
)
def test_copy_from_the_client_and_meta_commands_are_refused(
    tmp_path: Path, sql: str, error: type[UsageError], line: int, words: str
) -> None:
    path = tmp_path / "003_load.sql"
    path.write_text(sql)
    with pytest.raises(error) as info:
        load_migration(path)
    assert info.value.message.startswith(f"{path}:{line}: ") and words in info.value.message
    assert info.value.exit_code == ExitCode.USAGE


def test_copy_by_the_server_is_allowed() -> None:
    sql = (
        "COPY t FROM '/srv/seed/rows.csv' (FORMAT csv);\nCOPY t TO '/tmp/out.csv';\n"
        "COPY t FROM PROGRAM 'zcat /srv/x.gz';\n"
    )
    assert [s.kind for s in split_statements(sql)] == ["CopyStmt"] * 3


# ---------------------------------------------------------------- bad files are usage errors (exit 2)


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("CREATE TABLE a (id int);\nCOMMIT;\n", "COMMIT inside a migration"),
        ("CREATE INDEX CONCURRENTLY a_id ON a (id);\n", "CREATE INDEX CONCURRENTLY cannot run inside a transaction"),
        ("-- opsagent:no-transaction\nBEGIN;\nVACUUM a;\nCOMMIT;\n", "VACUUM cannot run inside the transaction block"),
    ],
)
def test_refused_file_is_an_invalid_migration_exit_2(tmp_path: Path, sql: str, words: str) -> None:
    path = tmp_path / "004_bad.sql"
    path.write_text(sql)
    with pytest.raises(InvalidMigration) as info:
        load_migration(path)
    assert words in info.value.message and info.value.exit_code == ExitCode.USAGE
    assert isinstance(info.value, MigrationError)  # callers that catch MigrationError still do


def test_lint_ignore_comment_is_not_an_unknown_marker(tmp_path: Path) -> None:
    path = tmp_path / "005_drop.sql"
    path.write_text("-- opsagent:ignore drop-table\nDROP TABLE legacy;\n-- opsagent:typo\n")
    _, warnings = load_migration(path)
    assert warnings == [f"{path}:3: unknown marker '-- opsagent:typo' ignored (known: down, no-transaction)"]


def test_discovery_error_paths_are_usage_errors(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_a.sql").write_bytes(b"SELECT '\xff';\n")
    with pytest.raises(UsageError, match="not valid UTF-8"):
        discover(folder)
    (folder / "001_a.sql").write_text("SELECT 1;\n")
    (folder / "0001_b.sql").write_text("SELECT 2;\n")
    with pytest.raises(UsageError, match="duplicate migration version 1"):
        discover(folder)
    (folder / "0001_b.sql").unlink()
    (folder / "002_c.sql").write_text("SELECT 1;\x00")
    with pytest.raises(UsageError, match="NUL byte"):
        discover(folder)
    with pytest.raises(UsageError, match="is not a directory"):
        discover(folder / "001_a.sql")


# ---------------------------------------------------------------- through the real CLI, real sshd + PostgreSQL


def test_sync_refuses_copy_from_stdin_at_once_and_applies_nothing(project: Project) -> None:
    project.write_migration("001_table.sql", "CREATE TABLE seeded (a int);\n")
    project.write_migration(
        "002_load.sql", "COPY seeded (a) FROM stdin;\n1\n2\n\\.\nCREATE TABLE after_copy (a int);\n"
    )
    started = time.monotonic()
    result = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", timeout=120)
    assert result.returncode == int(ExitCode.USAGE), result.stdout + result.stderr
    assert time.monotonic() - started < 60  # refused before anything is sent, not at command_timeout
    assert "002_load.sql:1" in result.stderr and "COPY ... FROM STDIN cannot run in a migration" in result.stderr
    assert "Traceback" not in result.stderr
    assert project.psql("SELECT count(*) FROM pg_class WHERE relname IN ('seeded', 'after_copy')").strip() == "0"
    lint = project.run("lint")
    assert lint.returncode == int(ExitCode.USAGE) and "002_load.sql:1" in lint.stderr


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("CREATE TABLE t (id int);\nCOMMIT;\n", "COMMIT inside a migration"),
        ("CREATE INDEX CONCURRENTLY t_id ON t (id);\n", "cannot run inside a transaction"),
    ],
)
def test_sync_of_a_refused_file_exits_2(project: Project, sql: str, words: str) -> None:
    project.write_migration("001_bad.sql", sql)
    for args in (("sync", "--host", "sandbox", "--yes", "--no-backup"), ("sync", "--host", "sandbox", "--dry-run")):
        result = project.run(*args, timeout=120)
        assert result.returncode == int(ExitCode.USAGE), result.stdout + result.stderr
        assert "001_bad.sql:" in result.stderr and words in result.stderr and "Traceback" not in result.stderr
    assert project.psql("SELECT to_regclass('t') IS NULL").strip() == "t"
