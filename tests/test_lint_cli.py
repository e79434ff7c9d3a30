"""``inv lint`` through the real CLI, and the ``hazards.assess`` glue that sync calls."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from opsagent.cli.lint import _fetch
from opsagent.errors import ConfigError, ExitCode
from opsagent.inventory import HostConfig
from opsagent.migrate.files import load_migration
from opsagent.migrate.hazards import HazardReport, assess, candidate_tables, lint_unit, summary_line
from opsagent.migrate.ledger import Ledger
from opsagent.migrate.lint import Finding, LintUnit
from opsagent.remote.transport import Remote

from .conftest import Project

INDEX_ON_EXISTING = "-- index the mail column\n\nCREATE INDEX users_email ON users (email);\n"


# ---------------------------------------------------------------- offline project (no server needed)


class Offline:
    """A project folder with an empty inventory: enough for offline lint."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.migrations = root / "sql" / "migrations"
        self.migrations.mkdir(parents=True)
        (root / "inventory.yaml").write_text("hosts: {}\n")

    def write(self, name: str, sql: str) -> Path:
        path = self.migrations / name
        path.write_text(sql)
        return path

    def run(self, *args: str, columns: int = 220, terminal: bool = False) -> subprocess.CompletedProcess[str]:
        """``terminal``: render as for a terminal of ``columns`` (a pipe is never narrow: piped output never wraps)."""
        env = {**os.environ, "OPSAGENT_INVENTORY": str(self.root / "inventory.yaml"), "COLUMNS": str(columns)}
        if terminal:
            env.update(TTY_COMPATIBLE="1", TERM="dumb")
        return subprocess.run(
            [sys.executable, "-m", "opsagent", "lint", *args],
            cwd=self.root,
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def offline(tmp_path: Path) -> Offline:
    return Offline(tmp_path / "proj")


def test_clean_migrations_exit_0(offline: Offline) -> None:
    offline.write(
        "001_users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, email text);\nCREATE INDEX users_email ON users (email);\n",
    )  # the table is new in this file
    offline.write("002_more.sql", "CREATE TABLE teams (id bigint PRIMARY KEY);\n")
    result = offline.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no hazards in 2 migrations" in result.stdout


def test_index_on_a_table_of_an_earlier_migration_is_no_all_clear(offline: Offline) -> None:
    """Issue 15, the documented workflow: inv new, append CREATE INDEX on a table of 001, inv lint."""
    offline.write("001_orders.sql", "CREATE TABLE orders (id bigint PRIMARY KEY, symbol text, stop_loss numeric);\n")
    env = {**os.environ, "OPSAGENT_INVENTORY": str(offline.root / "inventory.yaml"), "COLUMNS": "220"}
    repo = Path(__file__).resolve().parents[1]

    def inv(
        *args: str,
    ) -> subprocess.CompletedProcess[str]:  # the README's front door: inv, with the repository's tasks.py
        return subprocess.run(
            [sys.executable, "-m", "invoke", "-r", str(repo), *args],
            cwd=offline.root,
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )

    created = inv("new", "add stop loss to orders")
    assert created.returncode == 0, created.stdout + created.stderr
    (path,) = offline.migrations.glob("002_*.sql")
    with path.open("a") as handle:
        handle.write("CREATE INDEX orders_stop_loss ON orders (stop_loss);\n")
    result = inv("lint")
    assert result.returncode == int(ExitCode.HAZARDS), result.stdout + result.stderr
    assert "no hazards" not in result.stdout
    assert f"sql/migrations/{path.name}:" in result.stdout and "create-index-not-concurrently" in result.stdout
    doc = json.loads(offline.run("--json").stdout)
    (index,) = [f for f in doc["findings"] if f["rule"] == "create-index-not-concurrently"]
    assert (index["severity"], index["table"], index["created_in"]) == (
        "error",
        "orders",
        "sql/migrations/001_orders.sql",
    )
    assert "unknown size offline" in index["reason"] and "created by sql/migrations/001_orders.sql" in index["reason"]
    # the hazards: setting shared by every host (here under defaults:) may say otherwise
    (offline.root / "inventory.yaml").write_text(
        "defaults:\n  hazards: {unknown_table_size: small}\n"
        "hosts:\n  prod: {address: 127.0.0.1}\n  staging: {address: 127.0.0.1}\n"
    )
    relaxed = offline.run("--json")
    (index,) = [f for f in json.loads(relaxed.stdout)["findings"] if f["rule"] == "create-index-not-concurrently"]
    assert relaxed.returncode == 0 and index["severity"] == "info" and "graded as a small table" in index["reason"]


def test_index_on_existing_table_exit_4_with_location_and_fix(offline: Offline) -> None:
    offline.write("001_users_email_index.sql", INDEX_ON_EXISTING)
    result = offline.run()
    assert result.returncode == int(ExitCode.HAZARDS), result.stdout + result.stderr
    assert "sql/migrations/001_users_email_index.sql:3" in result.stdout
    assert "create-index-not-concurrently" in result.stdout
    assert "fix: use CREATE INDEX CONCURRENTLY" in result.stdout
    assert "1 info finding hidden (--verbose)" in result.stdout
    assert "lock-timeout" not in result.stdout


def test_narrow_terminal_gets_one_block_per_finding(offline: Offline) -> None:
    offline.write("001_users_email_index.sql", INDEX_ON_EXISTING)
    result = offline.run(columns=80, terminal=True)
    assert result.returncode == int(ExitCode.HAZARDS)
    lines = result.stdout.splitlines()
    assert (
        "sql/migrations/001_users_email_index.sql:3  error  create-index-not-concurrently  users (size unknown offline)"
        in lines
    )
    assert any(line.strip().startswith("fix: use CREATE INDEX CONCURRENTLY") for line in lines)
    assert "┃" not in result.stdout


def test_verbose_shows_infos(offline: Offline) -> None:
    offline.write("001_users_email_index.sql", INDEX_ON_EXISTING)
    result = offline.run("--verbose")
    assert result.returncode == int(ExitCode.HAZARDS)
    assert "lock-timeout" in result.stdout
    assert "lock_timeout 5s (tool default)" in result.stdout
    assert "hidden" not in result.stdout


def test_only_infos_exit_0(offline: Offline) -> None:
    offline.write("001_rename.sql", "ALTER TABLE users RENAME COLUMN name TO full_name;\n")
    result = offline.run()
    assert result.returncode == 0, result.stdout
    assert "info findings hidden (--verbose)" in result.stdout


def test_json_document(offline: Offline) -> None:
    offline.write("001_users_email_index.sql", INDEX_ON_EXISTING)
    offline.write("002_drop.sql", "DROP TABLE legacy;\n")
    result = offline.run("--json")
    assert result.returncode == int(ExitCode.HAZARDS)
    doc = json.loads(result.stdout)
    assert doc["live"] is False and doc["host"] is None and doc["blocking"] is True  # sizes unknown offline: as large
    assert doc["exit_code"] == 4 and doc["linted"] == "all files"
    assert doc["files"] == ["sql/migrations/001_users_email_index.sql", "sql/migrations/002_drop.sql"]
    assert doc["counts"] == {"info": 2, "warning": 0, "error": 2}
    assert doc["thresholds"]["unknown_table_size"] == "large"
    index = next(f for f in doc["findings"] if f["rule"] == "create-index-not-concurrently")
    assert (index["source"], index["line"], index["severity"], index["table"]) == (
        "sql/migrations/001_users_email_index.sql",
        3,
        "error",
        "users",
    )
    assert index["fix"].startswith("use CREATE INDEX CONCURRENTLY")
    assert index["rows"] is None  # offline: no live size
    assert {"message", "category", "statement", "lock_timeout", "bytes", "reason"} <= set(index)


def test_unparsable_migration_exit_2_with_location(offline: Offline) -> None:
    offline.write("001_ok.sql", "CREATE TABLE a (id int);\n")
    offline.write("002_bad.sql", "-- oops\nCREATE TABLE b (\n  id int,,\n);\n")
    result = offline.run()
    assert result.returncode == int(ExitCode.USAGE)
    assert "002_bad.sql:3" in result.stderr and "syntax error" in result.stderr


def test_file_option_lints_only_given_files(offline: Offline) -> None:
    offline.write("001_drop.sql", "DROP TABLE legacy;\n")
    loose = offline.root / "adhoc.sql"
    loose.write_text("TRUNCATE audit_log;\n")
    other = offline.write("002_clean.sql", "CREATE TABLE a (id int);\n")
    doc = json.loads(offline.run("--json", "--file", f"adhoc.sql,{other}").stdout)
    assert [f["rule"] for f in doc["findings"] if f["severity"] != "info"] == ["truncate"]
    assert doc["files"][0] == "adhoc.sql"
    missing = offline.run("--file", "nope.sql")
    assert missing.returncode == int(ExitCode.USAGE) and "nope.sql" in missing.stderr


def test_file_sync_would_refuse_is_an_error(offline: Offline) -> None:
    offline.write("001_concurrently.sql", "CREATE INDEX CONCURRENTLY users_email ON users (email);\n")
    offline.write("002_open_block.sql", "-- opsagent:no-transaction\nBEGIN;\nCREATE TABLE t (id int);\n")
    doc = json.loads(offline.run("--json").stdout)
    errors = [
        (f["source"].rsplit("/", 1)[-1], f["line"], f["rule"]) for f in doc["findings"] if f["severity"] == "error"
    ]
    assert errors == [
        ("001_concurrently.sql", 1, "non-transactional-in-transaction"),  # one finding, not two
        ("002_open_block.sql", 2, "refused-by-sync"),
    ]
    assert doc["blocking"] is True


def test_seed_wrapped_file_has_no_begin_commit_findings(tmp_path: Path) -> None:
    path = tmp_path / "007_wrapped.sql"
    path.write_text("BEGIN;\n\nALTER TABLE users ADD COLUMN plan text NOT NULL;\n\nCOMMIT;\n")
    migration, _ = load_migration(path)
    assert migration.wrapped
    unit = lint_unit(migration)
    report = assess(None, [migration])
    assert unit.source == "007_wrapped.sql" and unit.sql.count("\n") == migration.sql.count("\n")
    assert [(f.rule, f.line) for f in report.findings if f.severity != "info"] == [
        ("add-column-not-null-without-default", 3)
    ]


# ---------------------------------------------------------------- assess (the sync entry point)


def test_assess_uses_host_lock_timeout_and_validates_thresholds() -> None:
    host = HostConfig(name="h", address="h", lock_timeout="0")
    report = assess(None, [("001_x.sql", "ALTER TABLE users ADD COLUMN note text;", True)], host)
    assert [f.rule for f in report.findings] == ["no-lock-timeout"]
    assert report.exit_code == ExitCode.HAZARDS and not report.blocking and report.host == "h" and not report.live
    bad = HostConfig(name="h", address="h", hazards={"large_rows": 5})
    with pytest.raises(ConfigError, match=r"hazards\.large_rows"):
        assess(None, [], bad)


def _finding(severity: str) -> Finding:
    return Finding("f.sql", 1, "r", severity, "m", "x")


@pytest.mark.parametrize(
    ("severities", "files", "expected"),
    [
        ((), 1, "no hazards in 1 migration"),
        (("error", "warning", "warning", "info"), 3, "1 error, 2 warnings, 1 info in 3 migrations"),
        (("info",), 2, "1 info in 2 migrations"),
    ],
)
def test_summary_line(severities: tuple[str, ...], files: int, expected: str) -> None:
    report = HazardReport(
        findings=tuple(_finding(s) for s in severities), files=tuple(f"{i}.sql" for i in range(files))
    )
    assert summary_line(report) == expected
    assert report.blocking == ("error" in severities)


def test_assess_live_in_one_round_trip(remote: Remote) -> None:
    remote.psql(
        "CREATE TABLE users (id bigint, email text); "
        "INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 3000) g; "
        "ANALYZE users;"
    )
    host = dataclasses.replace(remote.host, hazards={"large_table_rows": 1000})
    units = [
        LintUnit("001_a.sql", "CREATE INDEX users_email ON users (email);\nDROP TABLE legacy_gone;\n"),
        LintUnit("002_b.sql", "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n"),
    ]
    before = remote.command_count
    report = assess(remote, units, host)
    assert remote.command_count - before == 1
    by_rule = {f.rule: f for f in report.findings}
    assert by_rule["create-index-not-concurrently"].severity == "error"
    assert by_rule["create-index-not-concurrently"].rows == 3000
    assert by_rule["set-not-null"].severity == "error"
    assert by_rule["drop-table"].rows is None  # not on the host: left as written
    assert report.blocking and report.live


# ---------------------------------------------------------------- against the sandbox host


def _seed_users(project: Project, rows: int) -> None:
    project.psql(
        f"CREATE TABLE users (id bigint PRIMARY KEY, email text); "
        f"INSERT INTO users SELECT g, 'user' || g || '@example.com' FROM generate_series(1, {rows}) g; ANALYZE users;"
    )


def _set_hazards(project: Project, hazards: dict[str, object], *, where: str = "host") -> None:
    path = project.root / "inventory.yaml"
    doc = yaml.safe_load(path.read_text())
    if where == "host":
        doc["hosts"]["sandbox"]["hazards"] = hazards
    else:
        doc["defaults"] = {"hazards": hazards}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_host_escalates_with_live_rows(project: Project) -> None:
    _seed_users(project, 20_000)
    project.write_migration("001_users_email_index.sql", INDEX_ON_EXISTING)
    _set_hazards(project, {"large_table_rows": 10_000})
    result = project.run("lint", "--host", "sandbox", env={"COLUMNS": "220"})
    assert result.returncode == int(ExitCode.HAZARDS), result.stdout + result.stderr
    assert "sql/migrations/001_users_email_index.sql:3" in result.stdout
    assert "error" in result.stdout and "~20,000 rows" in result.stdout
    assert "users is large" in result.stdout
    assert "errors block 'inv sync'" in result.stdout


def test_host_thresholds_from_defaults_json(project: Project) -> None:
    _seed_users(project, 20_000)
    project.write_migration("001_users_email_index.sql", INDEX_ON_EXISTING)
    _set_hazards(project, {"large_table_rows": 10_000}, where="defaults")
    doc = json.loads(project.run("lint", "--host", "sandbox", "--json").stdout)
    index = next(f for f in doc["findings"] if f["rule"] == "create-index-not-concurrently")
    assert index["severity"] == "error" and 19_000 <= index["rows"] <= 21_000 and index["bytes"] > 0
    assert doc["live"] is True and doc["host"] == "sandbox" and doc["blocking"] is True
    assert doc["thresholds"]["large_table_rows"] == 10_000


def test_host_small_table_is_info(project: Project) -> None:
    _seed_users(project, 50)
    project.write_migration("001_users_email_index.sql", INDEX_ON_EXISTING)
    result = project.run("lint", "--host", "sandbox", env={"COLUMNS": "220"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "info findings hidden (--verbose)" in result.stdout
    verbose = project.run("lint", "--host", "sandbox", "--verbose", env={"COLUMNS": "220"})
    assert "users is small" in verbose.stdout and "~50 rows" in verbose.stdout


def test_host_bad_hazards_setting_exit_2(project: Project) -> None:
    project.write_migration("001_users_email_index.sql", INDEX_ON_EXISTING)
    _set_hazards(project, {"large_table_rows": "lots"})
    result = project.run("lint", "--host", "sandbox")
    assert result.returncode == int(ExitCode.USAGE)
    assert "hazards.large_table_rows" in result.stderr


def test_host_lints_only_pending(project: Project) -> None:
    _seed_users(project, 100)
    applied = project.write_migration("001_drop_legacy.sql", "DROP TABLE IF EXISTS legacy;\n")
    project.write_migration("002_users_email_index.sql", INDEX_ON_EXISTING)
    migration, _ = load_migration(applied)
    ledger = Ledger(project.host.ledger_schema)
    project.psql(
        ledger.ensure_sql([])
        + ledger.insert_sql(migration, applied_by="test", git_commit=None, tool_version="t", execution_ms="1")
        + ";"
    )
    doc = json.loads(project.run("lint", "--host", "sandbox", "--json").stdout)
    assert doc["files"] == ["sql/migrations/002_users_email_index.sql"]
    assert doc["linted"] == "1 pending of 2 files (ledger: 1 applied)"
    assert {f["rule"] for f in doc["findings"]} == {"create-index-not-concurrently", "lock-timeout"}
    assert all(f["rows"] == 100 for f in doc["findings"])


def test_ledger_and_sizes_fetched_in_one_round_trip(remote: Remote) -> None:
    remote.psql("CREATE TABLE users (id int); INSERT INTO users SELECT generate_series(1, 10); ANALYZE users;")
    before = remote.command_count
    state, stats = _fetch(remote, remote.host, ["users", "missing_table"])
    assert remote.command_count - before == 1
    assert state.exists is False and state.rows == []
    assert stats["users"]["rows"] == 10 and "missing_table" not in stats


def test_candidate_tables_cover_any_pending_subset() -> None:
    units = [
        LintUnit("001.sql", "CREATE TABLE orders (id int, user_id int);"),
        LintUnit("002.sql", "CREATE INDEX orders_user ON orders (user_id); TRUNCATE audit_log;"),
    ]
    findings = assess(None, units).findings
    assert [(f.table, f.rule) for f in findings if f.severity != "info"] == [
        ("orders", "create-index-not-concurrently"),
        ("audit_log", "truncate"),
    ]  # orders exists when 002 runs
    assert findings[0].created_in == "001.sql"
    assert candidate_tables(units) == ["orders", "audit_log"]


def test_assess_with_prefetched_stats_needs_no_remote() -> None:
    host = HostConfig(name="h", address="h", hazards={"large_table_rows": 500})
    units = [("001.sql", "CREATE INDEX users_email ON users (email);", True)]
    report = assess(None, units, host, stats={"users": {"rows": 800, "bytes": 65536}})
    index = report.findings[0]
    assert (index.severity, index.rows, index.bytes) == ("error", 800, 65536)
    assert report.live and report.blocking
