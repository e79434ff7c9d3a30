"""inv rollback: the down-section parsing (unit) and rollbacks against a real sshd + PostgreSQL sandbox.

The example schema of the repository (sql/migrations 001..005) is synced, filled with rows,
rolled back and synced forward again; the structure is compared with a fresh replay of
001..003 by the catalog model and by pg_dump --schema-only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from opsagent.catalog import introspect
from opsagent.diff import compare
from opsagent.drift import dump_for_diff
from opsagent.errors import MigrationError, UsageError
from opsagent.migrations import AppliedRow, compute_status, load_migration, split_down
from opsagent.rollback import (
    Loss,
    check_target,
    choose_method,
    down_steps,
    order_free_columns,
    rehearsal_script,
    steps_from_down,
)
from opsagent.ledger import Ledger
from opsagent.scratch import scratch_databases
from opsagent.drift import replay_chunks
from opsagent.transport import open_remote

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
ALTER TABLE strategy_signals RENAME CONSTRAINT strategy_signals_instrument_id_fkey TO pattern_signals_instrument_id_fkey;
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
INSERT INTO orders (account_id, instrument_id, side, quantity) SELECT a.id, i.id, 'buy', 1 FROM accounts a, instruments i;
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
    assert project.psql("SELECT count(*) FROM information_schema.columns WHERE column_name = 'paper_trading_mode'").strip() == "1"
    project.psql(ROWS)
    before = counts(project, UNTOUCHED)

    dry, document = run_json(project, "--to", "003", "--dry-run")
    assert dry.returncode == 1, dry.stderr  # the real run would refuse: 005's down section drops a column holding values
    assert document["method"] == "down" and document["outcome"] == "refused"
    blocking = [loss for loss in document["losses"] if loss["blocking"]]  # type: ignore[union-attr]
    # renames keep the table (same OID): only the column 005 added is lost
    assert [(loss["kind"], loss["table"], loss["column"], loss["rows"]) for loss in blocking] == \
        [("column", "public.trades", "paper_trading_mode", 6)]
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
    assert ledger(project) == ["001", "002", "003", "004", "005"] and counts(project, ("strategies",)) == {"strategies": 2}


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
    line = (project.migrations / "005_add_paper_trading_mode_to_trades.sql").read_text().split("\n").index("DROP INDEX no_such_index;") + 1
    assert f"005_add_paper_trading_mode_to_trades.sql:{line} (down section)" in error and "no_such_index" in error, error
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
    project.write_migration("003_index.sql", "-- opsagent:no-transaction\nCREATE INDEX CONCURRENTLY a_note ON a (note);\n"
                                             "CREATE INDEX CONCURRENTLY b_missing ON b (missing);\n"
                                             "-- opsagent:down\nDROP INDEX CONCURRENTLY IF EXISTS a_note;\n")
    failed = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check")
    assert failed.returncode == 1
    assert project.psql("SELECT version || ':' || success FROM schema_migrations ORDER BY version").split() == \
        ["001:true", "002:true", "003:false"]
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
    "003_c.sql": "ALTER TABLE a ADD COLUMN extra int;\n\n-- opsagent:down\nALTER TABLE a DROP COLUMN extra;\nSELECT pg_sleep(2);\n",
}


def _slow_project(project: Project) -> None:
    for name, sql in SLOW.items():
        project.write_migration(name, sql)
    sync(project)
    project.psql("INSERT INTO a SELECT g, 'n' FROM generate_series(1, 100) g")


def _consistent(project: Project) -> str:
    """Which version the database is at; fails unless the structure and the ledger agree."""
    versions = ledger(project)
    has_b = project.psql("SELECT to_regclass('public.b') IS NOT NULL").strip() == "t"
    has_extra = project.psql("SELECT count(*) FROM information_schema.columns WHERE column_name = 'extra'").strip() == "1"
    assert project.psql("SELECT count(*) FROM a").strip() == "100"
    if versions == ["001", "002", "003"]:
        assert has_b and has_extra
        return "old"
    assert versions == ["001"] and not has_b and not has_extra, (versions, has_b, has_extra)
    return "new"


def _lock_is_free(project: Project) -> bool:
    cls, obj = Ledger().lock_key
    return project.psql(f"SELECT pg_try_advisory_lock({cls}, {obj})").strip() == "t"


@pytest.mark.parametrize(("delay", "expected"), [(0.5, "old"), (1.8, "old"), (12.0, "new")])
def test_ctrl_c_during_apply_leaves_old_or_new_version_with_a_true_ledger(project: Project, delay: float, expected: str) -> None:
    _slow_project(project)
    env = {**os.environ, "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml"), "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "opsagent", "rollback", "--host", "sandbox", "--to", "001", "--yes",
                             "--no-backup", "--allow-data-loss"], cwd=project.root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # "locked": the apply session holds the lock and is about to send the down sections
        if line.startswith("locked"):
            break
    time.sleep(delay)
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
    assert project.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'opsagent rollback%'").strip() == "0"
    if state == "old":  # and it can be finished afterwards
        done = project.run("rollback", "--host", "sandbox", "--to", "001", "--yes", "--no-backup", "--allow-data-loss")
        assert done.returncode == 0, done.stderr
        assert _consistent(project) == "new"


def test_lost_connection_during_apply_leaves_the_old_version(project: Project, sandbox: SandboxHandle) -> None:
    from opsagent.rollback import RollbackOptions, rollback
    from opsagent.sync import Identity

    from .test_sync import _sshd_children

    _slow_project(project)
    before = _sshd_children(sandbox)
    with open_remote(project.host) as remote:
        ours = _sshd_children(sandbox) - before
        assert len(ours) == 1

        def on_event(kind: str, message: str) -> None:
            if kind == "apply":
                threading.Timer(0.8, os.kill, (next(iter(ours)), signal.SIGKILL)).start()

        result = rollback(remote, project.migrations, RollbackOptions("001", allow_data_loss=True, backup=False),
                          Identity("tester@test", None), on_event=on_event)
    assert result.outcome == "failed" and result.error is not None
    assert "SSH connection lost" in result.error and "the open step was not committed" in result.error, result.error
    time.sleep(3)  # the server notices the closed connection once pg_sleep returns
    assert _consistent(project) == "old"
    assert _lock_is_free(project)
