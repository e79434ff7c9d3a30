"""inv rollback: the down-section parsing (unit) and rollbacks against a real sshd + PostgreSQL sandbox.

The example schema of the repository (sql/migrations 001..005) is synced, filled with rows,
rolled back and synced forward again; the structure is compared with a fresh replay of
001..003 by the catalog model and by pg_dump --schema-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from opsagent.errors import MigrationError, UsageError
from opsagent.migrate.files import AppliedRow, compute_status, load_migration, split_down
from opsagent.migrate.ledger import Ledger
from opsagent.migrate.rollback import (
    Loss,
    check_target,
    choose_method,
    down_steps,
    order_free_columns,
    rehearsal_script,
    steps_from_down,
)
from opsagent.remote.transport import open_remote
from opsagent.schema.catalog import introspect
from opsagent.schema.compare import compare
from opsagent.schema.drift import dump_for_diff, replay_chunks
from opsagent.schema.scratch import scratch_databases

from .conftest import Project, SandboxHandle

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "sql" / "migrations"
FIVE = sorted(EXAMPLE.glob("00[1-5]_*.sql"))

# ---------------------------------------------------------------- down sections that keep the data

DOWN_004 = """
-- opsagent:down
ALTER INDEX idx_training_results_strategy_created RENAME TO idx_training_results_pattern_created;
ALTER TABLE strategy_training_results
    RENAME CONSTRAINT strategy_training_results_strategy_id_fkey TO strategy_training_results_pattern_id_fkey;
ALTER TABLE strategy_training_results RENAME COLUMN strategy_id TO pattern_id;
ALTER INDEX idx_backtest_results_strategy_id RENAME TO idx_backtest_results_pattern_id;
ALTER TABLE backtest_results RENAME CONSTRAINT backtest_results_strategy_id_fkey TO backtest_results_pattern_id_fkey;
ALTER TABLE backtest_results RENAME COLUMN strategy_id TO pattern_id;
ALTER INDEX idx_trades_strategy_id RENAME TO idx_trades_pattern_id;
ALTER TABLE trades RENAME CONSTRAINT trades_strategy_id_fkey TO trades_pattern_id_fkey;
ALTER TABLE trades RENAME COLUMN strategy_id TO pattern_id;
ALTER INDEX idx_strategy_signals_instrument_time RENAME TO idx_pattern_signals_instrument_time;
ALTER INDEX idx_strategy_signals_strategy_time RENAME TO idx_pattern_signals_pattern_time;
ALTER SEQUENCE strategy_signals_id_seq RENAME TO pattern_signals_id_seq;
ALTER TABLE strategy_signals RENAME CONSTRAINT strategy_signals_confidence_check TO pattern_signals_confidence_check;
ALTER TABLE strategy_signals RENAME CONSTRAINT strategy_signals_direction_check TO pattern_signals_direction_check;
ALTER TABLE strategy_signals
  RENAME CONSTRAINT strategy_signals_instrument_id_fkey TO pattern_signals_instrument_id_fkey;
ALTER TABLE strategy_signals RENAME CONSTRAINT strategy_signals_strategy_id_fkey TO pattern_signals_pattern_id_fkey;
ALTER TABLE strategy_signals RENAME CONSTRAINT strategy_signals_pkey TO pattern_signals_pkey;
ALTER TABLE strategy_signals RENAME COLUMN strategy_id TO pattern_id;
ALTER TABLE strategy_signals RENAME TO pattern_signals;
COMMENT ON TABLE strategies IS 'Chart patterns the detector looks for';
ALTER TABLE strategies DROP CONSTRAINT strategies_strategy_type_check;
ALTER TABLE strategies ADD CONSTRAINT patterns_pattern_type_check
    CHECK (strategy_type IN ('reversal', 'continuation', 'breakout', 'mean_reversion'));
ALTER SEQUENCE strategies_id_seq RENAME TO patterns_id_seq;
ALTER TABLE strategies RENAME CONSTRAINT strategies_name_key TO patterns_name_key;
ALTER TABLE strategies RENAME CONSTRAINT strategies_pkey TO patterns_pkey;
ALTER TABLE strategies RENAME COLUMN strategy_type TO pattern_type;
ALTER TABLE strategies RENAME TO patterns;
"""

DOWN_005 = """
-- opsagent:down
DROP INDEX idx_trades_paper_mode;
ALTER TABLE trades DROP COLUMN paper_trading_mode;
"""

ROWS = """
INSERT INTO users (email, display_name) VALUES ('a@x.org', 'A'), ('b@x.org', 'B');
INSERT INTO accounts (user_id, broker, account_number) SELECT id, 'ib', 'n' || id FROM users;
INSERT INTO exchanges (code, name, timezone) VALUES ('XNAS', 'Nasdaq', 'America/New_York');
INSERT INTO instruments (exchange_id, symbol) SELECT e.id, s FROM exchanges e, unnest(ARRAY['AAPL', 'MSFT', 'NVDA']) s;
INSERT INTO price_bars (instrument_id, timeframe, bar_time, open, high, low, close)
  SELECT i.id, '1d', now() - g * interval '1 day', 1, 2, 1, 2 FROM instruments i, generate_series(1, 50) g;
INSERT INTO strategies (name, strategy_type) VALUES ('hs', 'reversal'), ('flag', 'continuation');
INSERT INTO trades (account_id, instrument_id, strategy_id, side, quantity, entry_price, paper_trading_mode)
  SELECT a.id, i.id, (SELECT min(id) FROM strategies), 'buy', 1, 10, true FROM accounts a, instruments i;
INSERT INTO orders (account_id, instrument_id, side, quantity)
  SELECT a.id, i.id, 'buy', 1 FROM accounts a, instruments i;
INSERT INTO executions (order_id, price, quantity, executed_at) SELECT id, 10, 1, now() FROM orders;
"""
UNTOUCHED = ("users", "accounts", "exchanges", "instruments", "price_bars", "orders", "executions")


def copy_example(project: Project, downs: dict[str, str] | None = None) -> None:
    for path in FIVE:
        text = path.read_text()
        extra = (downs or {}).get(path.name[:3])
        project.write_migration(path.name, text + extra if extra else text)


def counts(project: Project, names: tuple[str, ...]) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{n}', count(*) FROM {n}" for n in names)
    return {line.split("|")[0]: int(line.split("|")[1]) for line in project.psql(sql).split()}


def ledger(project: Project) -> list[str]:
    return project.psql("SELECT version FROM schema_migrations ORDER BY version").split()


def sync(project: Project) -> None:
    proc = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def run_json(project: Project, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    proc = project.run("rollback", "--host", "sandbox", *args, "--json")
    try:
        return proc, json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(proc.stdout + proc.stderr) from None


def assert_equals_fresh_replay(project: Project, upto: int) -> None:
    """Both oracles: the catalog model and normalized pg_dump (column order aside) against a fresh replay."""
    migrations = [load_migration(p)[0] for p in sorted(project.migrations.glob("*.sql")) if int(p.name[:3]) <= upto]
    with open_remote(project.host) as remote, scratch_databases(remote, [replay_chunks(migrations)]) as names:
        live, fresh = introspect(remote), introspect(remote, names[0])
        assert compare(live, fresh).significant == []
        live_dump, fresh_dump = dump_for_diff(remote, remote.host.database), dump_for_diff(remote, names[0])
    assert order_free_columns(live_dump) == order_free_columns(fresh_dump)


# ---------------------------------------------------------------- the example schema, computed plan


def test_computed_rollback_refuses_data_loss_then_proceeds_keeps_other_rows_and_syncs_forward(project: Project) -> None:
    copy_example(project)
    sync(project)
    project.psql(ROWS)
    before = counts(project, UNTOUCHED)

    refused, document = run_json(project, "--to", "003", "--yes", "--no-backup")
    assert refused.returncode == 1, refused.stderr
    assert document["outcome"] == "refused" and document["method"] == "computed"
    losses = {(loss["kind"], loss["table"], loss["column"]): loss["rows"] for loss in document["losses"]}  # type: ignore[union-attr]
    assert losses[("table", "public.strategies", None)] == 2
    assert losses[("column", "public.trades", "paper_trading_mode")] == 6
    assert "drops table strategies: holding 2 rows" in str(document["error"])
    assert document["verification"]["verified"] is True  # type: ignore[index]
    assert ledger(project) == ["001", "002", "003", "004", "005"]
    assert project.psql("SELECT count(*) FROM strategies").strip() == "2"

    done, document = run_json(project, "--to", "003", "--yes", "--allow-data-loss")
    assert done.returncode == 0, done.stderr
    assert document["outcome"] == "rolled_back" and document["after"] == []
    assert document["backup"]["verified"] is True  # type: ignore[index]
    assert ledger(project) == ["001", "002", "003"]
    assert counts(project, UNTOUCHED) == before
    assert_equals_fresh_replay(project, 3)

    status = project.run("status", "--host", "sandbox", "--json")
    states = {v["version"]: v["state"] for v in json.loads(status.stdout)["versions"]}
    assert states == {"001": "applied", "002": "applied", "003": "applied", "004": "pending", "005": "pending"}
    sync(project)
    assert ledger(project) == ["001", "002", "003", "004", "005"]
    assert_equals_fresh_replay(project, 5)
    assert counts(project, UNTOUCHED) == before


# ---------------------------------------------------------------- down sections


def test_down_sections_are_used_rehearsed_verified_and_keep_renamed_data(project: Project) -> None:
    copy_example(project, {"004": DOWN_004, "005": DOWN_005})
    sync(project)
    assert (
        project.psql("SELECT count(*) FROM information_schema.columns WHERE column_name = 'paper_trading_mode'").strip()
        == "1"
    )
    project.psql(ROWS)
    before = counts(project, UNTOUCHED)

    dry, document = run_json(project, "--to", "003", "--dry-run")
    assert dry.returncode == 1, (
        dry.stderr
    )  # the real run would refuse: 005's down section drops a column holding values
    assert document["method"] == "down" and document["outcome"] == "refused"
    blocking = [loss for loss in document["losses"] if loss["blocking"]]  # type: ignore[union-attr]
    # renames keep the table (same OID): only the column 005 added is lost
    assert [(loss["kind"], loss["table"], loss["column"], loss["rows"]) for loss in blocking] == [
        ("column", "public.trades", "paper_trading_mode", 6)
    ]
    assert document["verification"]["verified"] is True  # type: ignore[index]
    assert ledger(project) == ["001", "002", "003", "004", "005"]

    done, document = run_json(project, "--to", "003", "--yes", "--no-backup", "--allow-data-loss")
    assert done.returncode == 0, done.stderr
    assert document["method"] == "down" and document["after"] == []
    assert [s["transactional"] for s in document["steps"]] == [True]  # type: ignore[union-attr]
    assert ledger(project) == ["001", "002", "003"]
    assert_equals_fresh_replay(project, 3)
    assert counts(project, UNTOUCHED) == before
    assert counts(project, ("patterns",)) == {"patterns": 2}  # the renamed table kept its rows
    assert project.psql("SELECT count(*) FROM trades WHERE pattern_id IS NOT NULL").strip() == "6"
    sync(project)
    assert ledger(project) == ["001", "002", "003", "004", "005"] and counts(project, ("strategies",)) == {
        "strategies": 2
    }


def test_a_down_section_that_misses_the_target_is_refused_with_exit_3(project: Project) -> None:
    copy_example(project, {"004": DOWN_004, "005": "\n-- opsagent:down\nDROP INDEX idx_trades_paper_mode;\n"})
    sync(project)
    proc, document = run_json(project, "--to", "003", "--yes", "--no-backup", "--allow-data-loss")
    assert proc.returncode == 3, proc.stderr
    assert document["outcome"] == "not_verified" and document["method"] == "down"
    catalog = document["verification"]["catalog"]  # type: ignore[index]
    assert any(c["kind"] == "column" and "paper_trading_mode" in c["name"] for c in catalog), catalog
    assert any("paper_trading_mode" in line for line in document["verification"]["dump"])  # type: ignore[index]
    assert ledger(project) == ["001", "002", "003", "004", "005"]
    assert project.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_trades_paper_mode'").strip() == "1"


def test_a_failing_down_section_is_reported_at_its_line_and_nothing_changes(project: Project) -> None:
    copy_example(project, {"005": DOWN_005.replace("DROP INDEX idx_trades_paper_mode", "DROP INDEX no_such_index")})
    sync(project)
    proc, document = run_json(project, "--to", "004", "--yes", "--no-backup", "--allow-data-loss")
    assert proc.returncode == 3, proc.stderr
    error = document["verification"]["rehearsal_error"]  # type: ignore[index]
    line = (project.migrations / "005_add_paper_trading_mode_to_trades.sql").read_text().split("\n").index(
        "DROP INDEX no_such_index;"
    ) + 1
    assert f"005_add_paper_trading_mode_to_trades.sql:{line} (down section)" in error and "no_such_index" in error, (
        error
    )
    assert ledger(project) == ["001", "002", "003", "004", "005"]


def test_some_down_sections_missing_uses_the_computed_plan_and_says_so(project: Project) -> None:
    copy_example(project, {"005": DOWN_005})
    sync(project)
    proc, document = run_json(project, "--to", "003", "--dry-run")
    assert proc.returncode == 0, proc.stderr  # empty tables: nothing holding rows is lost
    assert document["method"] == "computed" and document["outcome"] == "dry_run"
    assert "004 has no down section" in str(document["method_note"]) and "005" in str(document["method_note"])
    assert document["down_sections"] == {"005": True, "004": False}
    assert ledger(project) == ["001", "002", "003", "004", "005"]


def test_rollback_after_a_no_transaction_migration_failed_partway(project: Project) -> None:
    project.write_migration("001_a.sql", "CREATE TABLE a (id int PRIMARY KEY, note text);\n")
    project.write_migration("002_b.sql", "CREATE TABLE b (id int);\n")
    project.write_migration(
        "003_index.sql",
        "-- opsagent:no-transaction\nCREATE INDEX CONCURRENTLY a_note ON a (note);\n"
        "CREATE INDEX CONCURRENTLY b_missing ON b (missing);\n"
        "-- opsagent:down\nDROP INDEX CONCURRENTLY IF EXISTS a_note;\n",
    )
    failed = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check")
    assert failed.returncode == 1
    assert project.psql("SELECT version || ':' || success FROM schema_migrations ORDER BY version").split() == [
        "001:true",
        "002:true",
        "003:false",
    ]
    project.psql("INSERT INTO a SELECT g, 'n' FROM generate_series(1, 10) g")
    proc, document = run_json(project, "--to", "002", "--yes", "--no-backup")
    assert proc.returncode == 0, proc.stderr
    assert document["method"] == "computed" and "003 failed partway" in str(document["method_note"])
    assert "DROP INDEX public.a_note;" in document["steps"][0]["statements"][0] + ";"  # type: ignore[index]
    assert ledger(project) == ["001", "002"]
    assert_equals_fresh_replay(project, 2)
    assert project.psql("SELECT count(*) FROM a").strip() == "10"


def test_dry_run_changes_nothing_and_nothing_to_do(project: Project) -> None:
    copy_example(project)
    sync(project)
    dry = project.run("rollback", "--host", "sandbox", "--to", "004", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "ALTER TABLE public.trades DROP COLUMN paper_trading_mode;" in dry.stdout
    assert "verified:" in dry.stdout and "nothing was changed" in dry.stdout
    assert ledger(project) == ["001", "002", "003", "004", "005"]
    nothing = project.run("rollback", "--host", "sandbox", "--to", "005", "--yes")
    assert nothing.returncode == 0 and "nothing to roll back" in nothing.stdout
    bad = project.run("rollback", "--host", "sandbox", "--to", "7x")
    assert bad.returncode == 2 and "invalid migration version" in bad.stderr
    missing = project.run("rollback", "--host", "sandbox", "--to", "9", "--yes")
    assert missing.returncode == 2 and "no migration file with version 9" in missing.stderr
    no_tty = project.run("rollback", "--host", "sandbox", "--to", "004")
    assert no_tty.returncode == 2 and "without confirmation" in no_tty.stderr
    assert ledger(project) == ["001", "002", "003", "004", "005"]


# ---------------------------------------------------------------- interrupted: Ctrl-C, lost connection

SLOW = {
    "001_a.sql": "CREATE TABLE a (id int PRIMARY KEY, note text);\n",
    "002_b.sql": "CREATE TABLE b (id int);\n\n-- opsagent:down\nDROP TABLE b;\n",
    "003_c.sql": (
        "ALTER TABLE a ADD COLUMN extra int;\n\n"
        "-- opsagent:down\nALTER TABLE a DROP COLUMN extra;\nSELECT pg_sleep(2);\n"
    ),
}


def _roll_back(remote: Any, project: Project, target: str, **callbacks: Any) -> Any:
    """The library's rollback of ``project`` to ``target`` (data loss allowed, no backup), as a tester."""
    from opsagent.migrate.rollback import RollbackOptions, rollback
    from opsagent.migrate.sync import Identity

    options = RollbackOptions(target, allow_data_loss=True, backup=False)
    return rollback(remote, project.migrations, options, Identity("tester@test", None), **callbacks)


def _slow_project(project: Project) -> None:
    for name, sql in SLOW.items():
        project.write_migration(name, sql)
    sync(project)
    project.psql("INSERT INTO a SELECT g, 'n' FROM generate_series(1, 100) g")


def _consistent(project: Project) -> str:
    """Which version the database is at; fails unless the structure and the ledger agree."""
    versions = ledger(project)
    has_b = project.psql("SELECT to_regclass('public.b') IS NOT NULL").strip() == "t"
    has_extra = (
        project.psql("SELECT count(*) FROM information_schema.columns WHERE column_name = 'extra'").strip() == "1"
    )
    assert project.psql("SELECT count(*) FROM a").strip() == "100"
    if versions == ["001", "002", "003"]:
        assert has_b and has_extra
        return "old"
    assert versions == ["001"] and not has_b and not has_extra, (versions, has_b, has_extra)
    return "new"


def _lock_is_free(project: Project) -> bool:
    cls, obj = Ledger().lock_key
    return project.psql(f"SELECT pg_try_advisory_lock({cls}, {obj})").strip() == "t"


def _in_the_down_sections_sleep(project: Project) -> bool:
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'opsagent rollback%' "
        "AND state = 'active' AND query LIKE '%pg_sleep%'"
    )
    return project.psql(query).strip() == "1"


@pytest.mark.parametrize(("delay", "expected"), [(0.5, "old"), (None, "old"), (12.0, "new")])
def test_ctrl_c_during_apply_leaves_old_or_new_version_with_a_true_ledger(
    project: Project, delay: float | None, expected: str
) -> None:
    """Ctrl-C 0.5 s into the apply, inside 003's down section (its 2 s sleep, seen on the server: the fixed 1.8 s
    delay used before left 0.2 s before the commit, too little on a loaded machine), or after the rollback has
    ended by itself."""
    _slow_project(project)
    env = {**os.environ, "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml"), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opsagent",
            "rollback",
            "--host",
            "sandbox",
            "--to",
            "001",
            "--yes",
            "--no-backup",
            "--allow-data-loss",
        ],
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # "locked": the apply session holds the lock and is about to send the down sections
        if line.startswith("locked"):
            break
    if delay is None:
        deadline = time.monotonic() + 30
        while not _in_the_down_sections_sleep(project):
            assert proc.poll() is None and time.monotonic() < deadline, "the down section's sleep was never seen"
            time.sleep(0.02)
    with contextlib.suppress(subprocess.TimeoutExpired):  # the delay, or less when it has ended by itself
        proc.wait(timeout=delay or 0)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    state = _consistent(project)
    assert state == expected, (out, err)
    if proc.returncode == 130:
        assert "interrupted" in err and ("nothing was rolled back" in err or "rolled back 003, 002" in err), err
    else:
        assert proc.returncode == 0 and state == "new", err
    assert _lock_is_free(project)
    assert (
        project.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'opsagent rollback%'").strip()
        == "0"
    )
    if state == "old":  # and it can be finished afterwards
        done = project.run("rollback", "--host", "sandbox", "--to", "001", "--yes", "--no-backup", "--allow-data-loss")
        assert done.returncode == 0, done.stderr
        assert _consistent(project) == "new"


def test_lost_connection_during_apply_leaves_the_old_version(project: Project, sandbox: SandboxHandle) -> None:

    from .test_sync import _sshd_children

    _slow_project(project)
    before = _sshd_children(sandbox)
    with open_remote(project.host) as remote:
        ours = _sshd_children(sandbox) - before
        assert len(ours) == 1

        def on_event(kind: str, message: str) -> None:
            if kind == "apply":
                threading.Timer(0.8, os.kill, (next(iter(ours)), signal.SIGKILL)).start()

        result = _roll_back(remote, project, "001", on_event=on_event)
    assert result.outcome == "failed" and result.error is not None
    assert "SSH connection lost" in result.error and "the open step was not committed" in result.error, result.error
    time.sleep(3)  # the server notices the closed connection once pg_sleep returns
    assert _consistent(project) == "old"
    assert _lock_is_free(project)


# ---------------------------------------------------------------- unit: the down section and the pure parts


def _migration(tmp_path: Path, name: str, text: str) -> object:
    path = tmp_path / name
    path.write_text(text)
    return load_migration(path)[0]


def test_down_section_is_kept_out_of_the_body_sync_runs_and_out_of_the_checksum(tmp_path: Path) -> None:
    body = "-- 001: a\nCREATE TABLE a (id int);\nCREATE INDEX a_id ON a (id);\n"
    plain = load_migration((tmp_path / "x").mkdir() or _write(tmp_path / "x" / "001_a.sql", body))[0]
    with_down = load_migration(_write(tmp_path / "001_a.sql", body + "\n-- opsagent:down\nDROP TABLE a;\n"))[0]
    assert [s.text for s in with_down.body_statements] == [s.text for s in plain.body_statements]
    assert "DROP" not in with_down.sql and with_down.checksum == plain.checksum and plain.down_sql is None
    assert with_down.down_sql == "DROP TABLE a;\n" and with_down.down_line == 6
    edited = load_migration(_write(tmp_path / "001_a.sql", body + "\n-- OPSAGENT: down  \nDROP TABLE a CASCADE;\n"))[0]
    assert edited.checksum == plain.checksum and edited.down_sql == "DROP TABLE a CASCADE;\n"
    statuses = compute_status([edited], [AppliedRow("001", checksum=plain.checksum)])
    assert statuses[0].state == "applied"  # editing the down section later is not a checksum mismatch
    body_edit = load_migration(_write(tmp_path / "001_a.sql", body.replace("int", "bigint") + "-- opsagent:down\n"))[0]
    assert body_edit.checksum != plain.checksum and body_edit.down_sql == ""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "body", "down", "line"),
    [
        ("A;\n-- opsagent:down\nB;\n", "A;\n", "B;\n", 3),
        ("A;\n\n\n  --opsagent:down\n", "A;\n", "", 5),
        ("-- opsagent:down\nB;\n", "", "B;\n", 2),
        ("A;\n-- opsagent:downgrade\nB;\n", "A;\n-- opsagent:downgrade\nB;\n", None, 0),  # not the marker
        ("A; -- opsagent:down\nB;\n", "A; -- opsagent:down\nB;\n", None, 0),  # must be a line of its own
        ("A;\n-- opsagent:down\nB;\n-- opsagent:down\nC;\n", "A;\n", "B;\n-- opsagent:down\nC;\n", 3),
    ],
)
def test_split_down(text: str, body: str, down: str | None, line: int) -> None:
    assert split_down(text) == (body, down, line)


def test_a_no_transaction_marker_in_the_down_part_does_not_change_the_migration(tmp_path: Path) -> None:
    migration = load_migration(
        _write(
            tmp_path / "001_a.sql",
            "CREATE TABLE a (id int);\n-- opsagent:down\n-- opsagent:no-transaction\nDROP TABLE a;\n",
        )
    )[0]
    assert migration.transactional


def test_down_steps_unwrap_rehearse_concurrently_and_refuse_transaction_control(tmp_path: Path) -> None:
    wrapped = load_migration(
        _write(tmp_path / "001_a.sql", "CREATE TABLE a (id int);\n-- opsagent:down\nBEGIN;\nDROP TABLE a;\nCOMMIT;\n")
    )[0]
    steps, transactional = down_steps(wrapped)
    assert (
        [s.sql for s in steps] == ["DROP TABLE a"]
        and transactional
        and steps[0].source.endswith("001_a.sql:4 (down section)")
    )
    concurrent = load_migration(
        _write(
            tmp_path / "002_b.sql",
            "-- opsagent:no-transaction\nCREATE INDEX CONCURRENTLY b ON a (id);\n"
            "-- opsagent:down\nDROP INDEX CONCURRENTLY IF EXISTS b;\n",
        )
    )[0]
    steps, transactional = down_steps(concurrent)
    assert not transactional and steps[0].rehearse == "DROP INDEX IF EXISTS b" and "CONCURRENTLY" in steps[0].sql
    bad = load_migration(
        _write(tmp_path / "003_c.sql", "CREATE TABLE c (id int);\n-- opsagent:down\nDROP TABLE c;\nCOMMIT;\n")
    )[0]
    with pytest.raises(MigrationError, match=r"003_c\.sql:4: transaction control"):
        down_steps(bad)
    vacuum = load_migration(
        _write(
            tmp_path / "004_d.sql", "CREATE TABLE d (id int);\n-- opsagent:down\nALTER SYSTEM SET work_mem = '1MB';\n"
        )
    )[0]
    with pytest.raises(MigrationError, match="cannot be rehearsed"):
        down_steps(vacuum)


def test_target_checks_and_method_choice(tmp_path: Path) -> None:
    files = [
        load_migration(
            _write(
                tmp_path / f"00{i}_m{i}.sql",
                f"CREATE TABLE m{i} (id int);\n" + (f"-- opsagent:down\nDROP TABLE m{i};\n" if i > 1 else ""),
            )
        )[0]
        for i in (1, 2, 3)
    ]
    rows = [AppliedRow(m.version, checksum=m.checksum) for m in files]
    key, above, problems = check_target(compute_status(files, rows), "1")
    assert key == 1 and [s.version for s in above] == ["003", "002"] and problems == []
    assert choose_method(above)[0] == "down"
    steps = steps_from_down(above)
    assert (
        len(steps) == 1
        and steps[0].deletes == ["003", "002"]
        and [s.sql for s in steps[0].statements] == ["DROP TABLE m3", "DROP TABLE m2"]
    )
    failed = [rows[0], rows[1], AppliedRow("003", checksum=files[2].checksum, success=False)]
    method, note = choose_method(check_target(compute_status(files, failed), "2")[1])
    assert method == "computed" and "003 failed partway" in note
    _, _, problems = check_target(compute_status(files, rows[:1] + rows[2:]), "2")
    assert problems and "002_m2.sql is not applied" in problems[0]
    mismatch = [AppliedRow("001", checksum="0" * 64), *rows[1:]]
    assert "edited after it ran" in check_target(compute_status(files, mismatch), "2")[2][0]
    with pytest.raises(UsageError, match="no migration file with version 7"):
        check_target(compute_status(files, rows), "7")
    assert check_target(compute_status(files, rows), "0")[1][-1].version == "001"  # 0: before the first


def test_rehearsal_script_sets_lock_timeout_first_and_rolls_back() -> None:
    from opsagent.migrate.rollback import SqlStep, Step
    from opsagent.remote.markers import Markers

    script = rehearsal_script(
        [Step("x", [SqlStep("DROP TABLE a -- c", "DROP TABLE a -- c", "f:1")], True, ["002"])],
        Ledger(),
        "2s",
        "30s",
        mark=Markers(),
    )
    lines = [line for line in script.splitlines() if line and not line.startswith("\\")]
    assert lines[:3] == ["BEGIN;", "SET LOCAL lock_timeout = '2s';", "SET LOCAL statement_timeout = '30s';"]
    assert "DROP TABLE a -- c\n;" in script and script.rstrip().endswith("end") and "ROLLBACK;" in script
    assert "\nCOMMIT" not in script and "DELETE" not in script


def test_order_free_columns_and_loss_lines() -> None:
    a = "CREATE TABLE public.t (\n    a integer,\n    b text\n);\nX (\n    z,\n    y\n);"
    b = "CREATE TABLE public.t (\n    b text,\n    a integer\n);\nX (\n    z,\n    y\n);"
    assert order_free_columns(a) == order_free_columns(b)
    assert order_free_columns(a.replace("b text", "b varchar")) != order_free_columns(b)
    assert order_free_columns("X (\n    z,\n    y\n);") != order_free_columns("X (\n    y,\n    z\n);")  # only tables
    loss = Loss("column", "public.trades", "paper_trading_mode", 6)
    assert loss.blocking and loss.describe() == "drops column trades.paper_trading_mode: with values in 6 rows"
    assert not Loss("table", "public.empty", None, 0).blocking and Loss("table", "s.t", None, None).blocking
    assert "at least 1,000,000 rows" in Loss("table", "s.t", None, 1_000_000).describe()


# ---------------------------------------------------------------- more data-loss kinds, locks, groups, audit


def test_narrowing_a_type_and_dropping_a_not_null_default_are_counted_and_refused(project: Project) -> None:
    project.write_migration(
        "001_t.sql", "CREATE TABLE t (id int PRIMARY KEY, code varchar(5) NOT NULL, qty int NOT NULL);\n"
    )
    project.write_migration(
        "002_widen.sql",
        "ALTER TABLE t ALTER COLUMN code TYPE text;\n"
        "ALTER TABLE t ALTER COLUMN qty SET DEFAULT 1;\n"
        "ALTER TABLE t ADD COLUMN empty_note text;\n",
    )
    sync(project)
    project.psql("INSERT INTO t (id, code) SELECT g, 'c' || g FROM generate_series(1, 7) g")
    proc, document = run_json(project, "--to", "001", "--yes", "--no-backup")
    assert proc.returncode == 1, proc.stderr
    found = {(loss["kind"], loss["column"]): (loss["rows"], loss["blocking"]) for loss in document["losses"]}  # type: ignore[union-attr]
    assert found == {("type", "code"): (7, True), ("default", "qty"): (7, True), ("column", "empty_note"): (0, False)}
    assert "changes t.code from text to character varying(5)" in str(document["error"])
    assert ledger(project) == ["001", "002"]
    done = project.run("rollback", "--host", "sandbox", "--to", "001", "--yes", "--no-backup", "--allow-data-loss")
    assert done.returncode == 0, done.stderr
    assert ledger(project) == ["001"] and project.psql("SELECT count(*) FROM t").strip() == "7"
    assert_equals_fresh_replay(project, 1)


def test_rollback_waits_for_the_sync_lock_and_gives_up_naming_nothing_changed(project: Project) -> None:
    _slow_project(project)
    cls, obj = Ledger().lock_key
    with open_remote(project.host) as remote:
        holder = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        holder.write(f"SELECT pg_advisory_lock({cls}, {obj});\n\\echo held\n")
        assert holder.read_line(30) is not None
        started = time.monotonic()
        proc, document = run_json(
            project, "--to", "002", "--yes", "--no-backup", "--allow-data-loss", "--lock-timeout", "2"
        )
        assert proc.returncode == 1 and document["outcome"] == "lock_timeout", proc.stderr
        assert time.monotonic() - started < 60
        holder.close_stdin()
        holder.close()
    assert ledger(project) == ["001", "002", "003"]


def test_rehearsal_blocked_by_a_table_lock_is_not_verified_and_names_the_lock(project: Project) -> None:
    _slow_project(project)
    with open_remote(project.host) as remote:
        holder = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        holder.write("BEGIN;\nLOCK TABLE a IN ACCESS SHARE MODE;\n\\echo held\n")
        assert holder.read_line(30) is not None
        proc, document = run_json(project, "--to", "002", "--yes", "--no-backup", "--allow-data-loss")
        holder.close_stdin()
        holder.close()
    assert proc.returncode == 3, proc.stderr
    assert "lock not granted in time" in str(document["verification"]["rehearsal_error"])  # type: ignore[index]
    assert ledger(project) == ["001", "002", "003"]


def test_group_rollback_to_zero_on_two_hosts_and_audit(project: Project, sandbox: SandboxHandle) -> None:
    from opsagent.migrate.audit import read_audit

    from .conftest import write_inventory

    other = sandbox.host_for(sandbox.create_database(), backup_dir=project.host.backup_dir)
    write_inventory(project.root, {"sandbox": project.host, "two": other}, groups={"both": ["sandbox", "two"]})
    for name, sql in SLOW.items():
        project.write_migration(name, sql)
    assert project.run("sync", "--host", "both", "--yes", "--no-backup", "--no-drift-check").returncode == 0
    refused = project.run("rollback", "--host", "both", "--to", "0")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    proc = project.run("rollback", "--host", "both", "--to", "0", "--yes", "--no-backup", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hosts = json.loads(proc.stdout)["hosts"]
    assert [(h["host"], h["details"]["outcome"], h["details"]["versions"]) for h in hosts] == [
        ("sandbox", "rolled_back", ["003", "002", "001"]),
        ("two", "rolled_back", ["003", "002", "001"]),
    ]
    assert (
        ledger(project) == []
        and project.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").strip() == "1"
    )
    records = [r for r in read_audit(project.root / ".opsagent") if r.get("action") == "rollback"]
    assert len(records) == 2 and all(r["outcome"] == "rolled_back" and r["target"] == "0" for r in records)


def test_destructive_statements_of_down_sections_are_marked() -> None:
    from opsagent.migrate.rollback import destroys
    from opsagent.migrate.sqltext import split_statements

    marked = [
        destroys(s)
        for s in split_statements(
            "ALTER TABLE a DROP COLUMN b; ALTER TABLE a ALTER COLUMN c TYPE int; ALTER TABLE a RENAME TO z; "
            "DROP INDEX x; "
            "TRUNCATE a; ALTER TABLE a ADD COLUMN d int; CREATE INDEX y ON a (d)"
        )
    ]
    assert marked == [True, True, False, True, True, False, False]


def test_hostile_names_are_counted_and_dropped_safely(project: Project) -> None:
    project.write_migration("001_t.sql", 'CREATE TABLE "Mixed ""Case"" t" (id int);\n')
    project.write_migration(
        "002_hostile.sql",
        'CREATE TABLE "we\'ird; DROP TABLE x; --" (id int);\n'
        'ALTER TABLE "Mixed ""Case"" t" ADD COLUMN "co\'l "" $x$" text;\n',
    )
    sync(project)
    project.psql(
        'INSERT INTO "we\'ird; DROP TABLE x; --" SELECT generate_series(1, 3);'
        'INSERT INTO "Mixed ""Case"" t" SELECT g, \'v\' FROM generate_series(1, 4) g;'
    )
    proc, document = run_json(project, "--to", "001", "--yes", "--no-backup")
    assert proc.returncode == 1, proc.stderr
    rows = sorted((loss["kind"], loss["rows"]) for loss in document["losses"])  # type: ignore[union-attr]
    assert rows == [("column", 4), ("table", 3)], document["losses"]
    done = project.run("rollback", "--host", "sandbox", "--to", "001", "--yes", "--no-backup", "--allow-data-loss")
    assert done.returncode == 0, done.stderr
    assert ledger(project) == ["001"] and project.psql('SELECT count(*) FROM "Mixed ""Case"" t"').strip() == "4"
    assert_equals_fresh_replay(project, 1)


def test_a_schema_change_between_rehearsal_and_apply_rolls_the_transaction_back(project: Project) -> None:
    from opsagent.migrate.rollback import RollbackResult

    _slow_project(project)

    def confirm(result: RollbackResult) -> bool:
        assert result.verification is not None and result.verification.verified
        project.psql("ALTER TABLE a ADD COLUMN sneaky int")  # someone, after the rehearsal, without the sync lock
        return True

    with open_remote(project.host) as remote:
        result = _roll_back(remote, project, "002", confirm=confirm)
    assert result.outcome == "not_verified" and "changed since the rehearsal" in str(result.error), result.error
    assert "sneaky" in str(result.error)
    assert ledger(project) == ["001", "002", "003"]
    assert (
        project.psql("SELECT count(*) FROM information_schema.columns WHERE column_name IN ('extra', 'sneaky')").strip()
        == "2"
    )


def _lock_after_the_rehearsal(
    project: Project, release_after: float | None, taking: str = "LOCK TABLE a IN ACCESS SHARE MODE;"
) -> tuple[Any, list[Any]]:
    """A ``confirm`` callback that, once the rehearsal is done, has another session take a lock on ``a`` (by default
    ACCESS SHARE: an application's read, which the way back's ALTER TABLE must wait for) and release it
    ``release_after`` seconds later (None: when the caller closes it)."""
    holders: list[Any] = []

    def confirm(result: Any) -> bool:
        manager = open_remote(project.host)  # kept: the connection lives as long as its manager
        remote = manager.__enter__()
        holder = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        holder.write(f"BEGIN;\n{taking}\n\\echo held\n")
        assert holder.read_line(30) == "held"
        holders.append((manager, holder))
        if release_after is not None:
            threading.Timer(release_after, lambda: holder.write("COMMIT;\n")).start()
        return True

    return confirm, holders


def _release(holders: list[Any]) -> None:
    """End the sessions :func:`_lock_after_the_rehearsal` opened (a lock still held goes with its session)."""
    for manager, holder in holders:
        holder.close_stdin()
        holder.close()
        manager.__exit__(None, None, None)


@pytest.mark.parametrize("budget", ["30s", "3s"])
def test_a_rollback_step_retries_its_locks_without_queueing_then_applies_or_gives_up(
    project: Project, budget: str
) -> None:
    """A step that cannot take its lock within the attempt's short lock_timeout is rolled back, paused and tried
    again with a longer one (the sync's lock retries): applied once the application's lock is gone, or, past
    ``lock_retry_for``, given up with nothing of the step applied and nothing left waiting."""
    import dataclasses

    _slow_project(project)
    host = dataclasses.replace(project.host, lock_timeout="300ms", lock_retry_for=budget)
    confirm, holders = _lock_after_the_rehearsal(project, 1.5 if budget == "30s" else None)
    events: list[tuple[str, str]] = []
    try:
        with open_remote(host) as remote:
            result = _roll_back(
                remote, project, "001", confirm=confirm, on_event=lambda kind, message: events.append((kind, message))
            )
        waiting = project.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'opsagent rollback%' "
            "AND wait_event_type = 'Lock'"
        ).strip()
    finally:
        _release(holders)
    assert result.lock_retries >= 1 and any(kind == "lock_retry" for kind, _ in events), events
    assert waiting == "0"
    if budget == "30s":
        assert result.outcome == "rolled_back", result.error
        assert _consistent(project) == "new"
    else:
        assert result.outcome == "lock_timeout" and "3s of lock retries" in str(result.error), result.error
        assert _consistent(project) == "old"  # the step was rolled back whole: the column and the ledger row stay


@pytest.mark.parametrize("when", ["at the confirmation", "in the comparison after"])
def test_ctrl_c_outside_the_steps_says_which_side_of_them_it_came(
    project: Project, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Ctrl-C before the steps: nothing applied, said so; after them (the comparison with the target): the
    rollback committed, said so.  Either way the result travels with the interruption, for the audit record."""
    from opsagent.migrate.rollback import RollbackInterrupted, RollbackRun

    _slow_project(project)

    def interrupt(*_args: Any) -> bool:
        raise KeyboardInterrupt

    if when == "in the comparison after":
        monkeypatch.setattr(RollbackRun, "_check_after", interrupt)  # a fault injected after the commit
    with open_remote(project.host) as remote, pytest.raises(RollbackInterrupted) as info:
        _roll_back(remote, project, "001", **({"confirm": interrupt} if when == "at the confirmation" else {}))
    result = info.value.result
    if when == "at the confirmation":
        assert result.outcome == "interrupted" and result.error == "interrupted before anything was applied"
        assert _consistent(project) == "old"
    else:
        assert result.outcome == "rolled_back" and any("which had committed" in w for w in result.warnings)
        assert _consistent(project) == "new"
    assert result.audit_record("t", None)["outcome"] == result.outcome


_CONCURRENT_WAY_BACK = {  # 002 drops an index outside a transaction; its way back builds it again, CONCURRENTLY too
    "001_a.sql": "CREATE TABLE a (id int PRIMARY KEY, note text);\nCREATE INDEX a_note ON a (note);\n"
    "-- opsagent:down\nDROP TABLE a;\n",
    "002_drop_index.sql": "-- opsagent:no-transaction\nDROP INDEX CONCURRENTLY a_note;\n"
    "-- opsagent:down\nCREATE INDEX CONCURRENTLY a_note ON a (note);\n",
}


def _concurrent_way_back_while_held(project: Project, budget: str, release_after: float | None, taking: str) -> Any:
    """The rollback of :data:`_CONCURRENT_WAY_BACK` to 001 (lock_timeout 300ms, ``lock_retry_for`` ``budget``) while
    another session, from the end of the rehearsal, holds what ``taking`` takes on ``a`` (see
    :func:`_lock_after_the_rehearsal`)."""
    import dataclasses

    for name, sql in _CONCURRENT_WAY_BACK.items():
        project.write_migration(name, sql)
    sync(project)
    host = dataclasses.replace(project.host, lock_timeout="300ms", lock_retry_for=budget)
    confirm, holders = _lock_after_the_rehearsal(project, release_after, taking)
    try:
        with open_remote(host) as remote:
            return _roll_back(remote, project, "001", confirm=confirm)
    finally:
        _release(holders)


def _index_state(project: Project) -> str:
    """'valid', 'invalid' (a CONCURRENTLY build stopped partway) or 'absent' for a_note."""
    found = project.psql(
        "SELECT CASE WHEN i.indisvalid THEN 'valid' ELSE 'invalid' END FROM pg_index i "
        "WHERE i.indexrelid = to_regclass('public.a_note')"
    ).strip()
    return found or "absent"


def _ledger_success(project: Project) -> list[str]:
    return project.psql("SELECT version || ':' || success FROM schema_migrations ORDER BY version").split()


@pytest.mark.parametrize("budget", ["30s", "3s"])
def test_a_step_outside_a_transaction_retries_a_lock_it_could_not_take_before_changing_anything(
    project: Project, budget: str
) -> None:
    """The way back's CREATE INDEX CONCURRENTLY cannot take its first lock (an application holds SHARE on the
    table): nothing of it ran, so it is retried as a transactional step is: built once the lock is gone, or given up
    past ``lock_retry_for`` with nothing left behind and its ledger row as it was (not marked failed)."""
    result = _concurrent_way_back_while_held(
        project, budget, 1.5 if budget == "30s" else None, "LOCK TABLE a IN SHARE MODE;"
    )
    assert result.lock_retries >= 1, result.error
    if budget == "30s":
        assert result.outcome == "rolled_back", result.error
        assert _index_state(project) == "valid" and _ledger_success(project) == ["001:true"]
    else:
        assert result.outcome == "lock_timeout" and "3s of lock retries" in str(result.error), result.error
        assert _index_state(project) == "absent" and _ledger_success(project) == ["001:true", "002:true"]


def test_a_step_outside_a_transaction_stopped_partway_is_not_retried_and_says_so(project: Project) -> None:
    """An application's open write makes CREATE INDEX CONCURRENTLY time out after it registered the index: an invalid
    index is left, so the step is not retried; the run ends failed, the ledger row marked failed (ran partway)."""
    result = _concurrent_way_back_while_held(project, "30s", None, "INSERT INTO a VALUES (1, 'x');")
    assert result.outcome == "failed" and result.lock_retries == 0, (result.outcome, result.error)
    assert "lock timeout" in str(result.error) and "stopped partway: not retried" in str(result.error)
    assert "002_drop_index.sql" in str(result.error)  # where: the way back's statement
    assert _index_state(project) == "invalid" and _ledger_success(project) == ["001:true", "002:false"]
