"""Sync gates through the real CLI: hazard errors block unless --allow-hazards; closing drift warning."""

from __future__ import annotations

import json

import yaml

from .conftest import Project


def _set_hazards(project: Project, hazards: dict[str, int]) -> None:
    path = project.root / "inventory.yaml"
    document = yaml.safe_load(path.read_text())
    document["hosts"]["sandbox"]["hazards"] = hazards
    path.write_text(yaml.safe_dump(document))


def test_hazard_error_on_a_large_live_table_blocks_sync_until_allowed(project: Project) -> None:
    project.psql(
        "CREATE TABLE trades (id bigint PRIMARY KEY, price numeric);"
        "INSERT INTO trades SELECT g, g FROM generate_series(1, 20000) g; ANALYZE trades;"
    )
    _set_hazards(project, {"large_table_rows": 10000})
    project.write_migration("001_index_price.sql", "CREATE INDEX idx_trades_price ON trades (price);\n")

    refused = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--json")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    document = json.loads(refused.stdout)
    assert (
        document["outcome"] == "refused" and "001_index_price.sql:1 create-index-not-concurrently" in document["error"]
    )
    assert document["hazards"]["blocking"] and document["hazards"]["findings"][0]["rows"] == 20000
    assert project.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_trades_price'").strip() == "0"

    dry = project.run("sync", "--host", "sandbox", "--dry-run")  # shows the findings, still rehearses
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "create-index-not-concurrently" in dry.stdout and "would apply" in dry.stdout

    allowed = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--allow-hazards")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert project.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_trades_price'").strip() == "1"


def test_small_table_is_not_blocked(project: Project) -> None:
    project.psql(
        "CREATE TABLE trades (id bigint PRIMARY KEY, price numeric); INSERT INTO trades VALUES (1, 1); ANALYZE trades;"
    )
    project.write_migration("001_index_price.sql", "CREATE INDEX idx_trades_price ON trades (price);\n")
    applied = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check")
    assert applied.returncode == 0, applied.stdout + applied.stderr


def test_sync_ends_with_a_drift_warning_against_schema_sql(project: Project) -> None:
    (project.root / "sql" / "schema.sql").write_text(
        "CREATE TABLE trades (id bigint PRIMARY KEY, price numeric(18,8));\n"
    )
    project.write_migration("001_trades.sql", "CREATE TABLE trades (id bigint PRIMARY KEY, price numeric(12,2));\n")
    result = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "differs from schema.sql in 1 object(s)" in result.stderr and "inv diff --host sandbox" in result.stderr
    project.write_migration("002_price.sql", "ALTER TABLE trades ALTER COLUMN price TYPE numeric(18,8);\n")
    clean = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--allow-hazards")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "differs from schema.sql" not in clean.stderr
    leftovers = project.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'opsagent_scratch_%'")
    assert leftovers.strip() == "0"
