"""``inv sync --sql``: Alembic's offline mode.

The script is fed to a real psql on a fresh database of the sandbox cluster; afterwards
``inv status`` must see every version applied with its checksum, and the ledger rows must be
those a normal sync writes.  Hostile file names and descriptions travel through it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from opsagent.migrate.files import load_migration
from opsagent.migrate.ledger import Ledger
from opsagent.migrate.sync import Identity, offline_script
from opsagent.remote.transport import open_remote

from .conftest import Project, SandboxHandle, write_inventory

FILES = {
    "001_create_orders.sql": "-- the first one\nCREATE TABLE orders (id bigint PRIMARY KEY, note text);\n",
    # a description with a quote, dollars and a backslash: all go into ledger literals
    "002_o'brien $$ costs \\ x.sql": (
        "ALTER TABLE orders ADD COLUMN price numeric;\nINSERT INTO orders VALUES (1, 'it''s $$ \\ fine', 2);\n"
    ),
    "003_index_concurrently.sql": (
        "-- opsagent:no-transaction\nCREATE INDEX CONCURRENTLY orders_price ON orders (price);\n"
    ),
    "004_wrapped.sql": "BEGIN;\nCREATE TABLE lines (order_id bigint REFERENCES orders);\nCOMMIT;\n",
}
COMPARED = (
    "version, description, checksum, applied_by, git_commit, tool_version, success, execution_ms IS NOT NULL AS timed"
)


def write_files(project: Project) -> None:
    project.migrations.mkdir(parents=True, exist_ok=True)
    for name, sql in FILES.items():
        (project.migrations / name).write_text(sql)


def apply_script(host_database: tuple[SandboxHandle, str], script: str, *extra: str) -> tuple[int, str]:
    """Feed ``script`` to psql (``-f -``) on a database, as a DBA would; (exit status, stderr)."""
    sandbox, database = host_database
    with sandbox.remote(database) as remote:
        result = remote.run(remote.psql_argv(extra=[*extra, "-f", "-"]), stdin=script, check=False)
    return result.exit_status, result.stderr


def ledger(sandbox: SandboxHandle, database: str) -> list[str]:
    with sandbox.remote(database) as remote:
        return remote.psql(
            f"SELECT {COMPARED} FROM schema_migrations ORDER BY version", extra=["-A", "-t"]
        ).text.splitlines()


def test_the_script_applied_by_psql_records_what_a_sync_records(project: Project, sandbox: SandboxHandle) -> None:
    write_files(project)
    proc = project.run("sync", "--host", "sandbox", "--sql")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert "4 migration(s) in the script (001 … 004); nothing was applied" in " ".join(proc.stderr.split())
    assert (
        project.psql("SELECT to_regclass('schema_migrations') IS NULL").strip() == "t"
    )  # reading the ledger changed nothing
    assert (
        "opsagent:no-transaction" not in script and script.count("\nBEGIN;\n") == 3
    )  # markers gone; 004 unwrapped, in our own
    # the CONCURRENTLY statement is outside any BEGIN ... COMMIT
    before_index = script[: script.index("CREATE INDEX CONCURRENTLY")]
    assert before_index.count("BEGIN;") == before_index.count("COMMIT;")

    status, stderr = apply_script((sandbox, project.host.database), script)
    assert status == 0, stderr
    shown = json.loads(project.run("status", "--host", "sandbox", "--json").stdout)
    assert [v["state"] for v in shown["versions"]] == ["applied"] * 4
    assert all(v["checksum"] == v["file_checksum"] for v in shown["versions"])
    assert shown["versions"][1]["description"] == "o'brien $$ costs \\ x"
    assert project.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'orders_price'::regclass").strip() == "t"
    assert project.psql("SELECT note FROM orders").strip() == "it's $$ \\ fine"
    assert (
        project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check").returncode == 0
    )  # nothing to do

    # the same files applied by a normal sync into another database: the same ledger rows
    other = sandbox.create_database()
    write_inventory(
        project.root, {"sandbox": project.host, "other": sandbox.host_for(other, backup_dir=project.host.backup_dir)}
    )
    assert project.run("sync", "--host", "other", "--yes", "--no-backup", "--no-drift-check").returncode == 0
    assert ledger(sandbox, other) == ledger(sandbox, project.host.database)
    assert len(ledger(sandbox, other)) == 4

    # applied again (e.g. after a stop): every recorded version is skipped, nothing runs twice
    status, stderr = apply_script((sandbox, project.host.database), script)
    assert status == 0, stderr
    assert (
        project.psql("SELECT count(*) FROM orders").strip() == "1" and len(ledger(sandbox, project.host.database)) == 4
    )


def test_from_version_needs_no_connection_and_only_pending_versions_run(
    project: Project, sandbox: SandboxHandle
) -> None:
    write_files(project)
    assert (
        project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check", "--target", "2").returncode
        == 0
    )
    inventory = project.root / "inventory.yaml"
    document = yaml.safe_load(inventory.read_text())
    document["hosts"]["sandbox"]["port"] = 1  # nothing listens there: any connection attempt fails
    inventory.write_text(yaml.safe_dump(document))
    proc = project.run("sync", "--host", "sandbox", "--sql", "--from-version", "2")
    assert proc.returncode == 0, proc.stderr
    assert "CREATE INDEX CONCURRENTLY" in proc.stdout and "CREATE TABLE orders" not in proc.stdout
    assert re.search(r"^-- .*every version after 2", proc.stdout, re.MULTILINE)
    status, stderr = apply_script((sandbox, project.host.database), proc.stdout)
    assert status == 0, stderr
    assert [row.split("|")[0] for row in ledger(sandbox, project.host.database)] == ["001", "002", "003", "004"]
    none_left = project.run("sync", "--host", "sandbox", "--sql", "--from-version", "4")
    assert none_left.returncode == 0 and "0 migration(s)" in none_left.stderr
    bad = project.run("sync", "--host", "sandbox", "--from-version", "2")
    assert bad.returncode == 2 and "--from-version goes with --sql" in bad.stderr


def test_the_script_refuses_psql_single_transaction_and_another_applier(
    project: Project, sandbox: SandboxHandle
) -> None:
    write_files(project)
    script = project.run("sync", "--host", "sandbox", "--sql", "--from-version", "0").stdout
    status, stderr = apply_script((sandbox, project.host.database), script, "-1")
    assert status != 0 and "without -1" in stderr
    assert project.psql("SELECT to_regclass('orders') IS NULL").strip() == "t"
    cls, obj = Ledger().lock_key
    with open_remote(project.host) as remote:
        holder = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        holder.write(f"SELECT pg_advisory_lock({cls}, {obj});\n\\echo held\n")
        while holder.read_line(30) != "held":
            pass
        try:
            status, stderr = apply_script((sandbox, project.host.database), script)
        finally:
            holder.close_stdin()
            holder.wait(10)
    assert status != 0 and "another sync holds the migration lock" in stderr
    assert project.psql("SELECT to_regclass('orders') IS NULL").strip() == "t"


def test_bad_files_are_refused_as_sync_refuses_them(project: Project) -> None:
    write_files(project)
    (project.migrations / "005_bad.sql").write_text("CREATE INDEX CONCURRENTLY x ON orders (id);\n")
    proc = project.run("sync", "--host", "sandbox", "--sql", "--from-version", "0")
    assert proc.returncode == 2 and "005_bad.sql:1" in proc.stderr and proc.stdout == ""


def test_hostile_descriptions_stay_inside_literals_and_comments(tmp_path: Path) -> None:
    """Whatever a file name holds, it cannot end a literal, a comment line or start a psql meta-command."""
    names = ["001_x'); DROP TABLE t; --.sql", "002_a\rb \\! rm -rf x.sql", "003_$opsagent$ END $opsagent$.sql"]
    loaded = []
    for name in names:
        path = tmp_path / name
        path.write_text("SELECT 1;\n")
        loaded.append(load_migration(path)[0])
    script = offline_script(
        loaded,
        Ledger(),
        Identity("o'neil\\", "abc'def"),
        lock_timeout="5s",
        statement_timeout="0",
        ensure_sql="",
        header=["line\nwith a break \\! and a backslash"],
    )
    for line in script.splitlines():
        if line.startswith("--"):
            assert "\\" not in line and "\r" not in line
        assert (
            not line.startswith("\\")
            or line in ("\\set ON_ERROR_STOP on", "\\if :opsagent_applied", "\\else", "\\endif")
            or re.fullmatch(r"\\echo \d+ is already recorded as applied: skipped", line)
        )
    assert "'x''); DROP TABLE t;'" in script and "'o''neil\\'" in script and "'abc''def'" in script
    assert "$opsagent$ END $opsagent$'" in script  # inside a literal, never inside a dollar-quoted body


def test_a_lock_timeout_stops_the_script_and_the_same_script_finishes_later(
    project: Project, sandbox: SandboxHandle
) -> None:
    write_files(project)
    inventory = project.root / "inventory.yaml"
    document = yaml.safe_load(inventory.read_text())
    document["hosts"]["sandbox"]["lock_timeout"] = "1s"
    inventory.write_text(yaml.safe_dump(document))
    assert (
        project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--no-drift-check", "--target", "1").returncode
        == 0
    )
    script = project.run("sync", "--host", "sandbox", "--sql").stdout
    assert "SET LOCAL lock_timeout = '1000ms';" in script
    with open_remote(project.host) as remote:
        holder = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        holder.write("BEGIN;\nSELECT count(*) FROM orders;\n\\echo held\n")
        while holder.read_line(30) != "held":
            pass
        try:
            status, stderr = apply_script((sandbox, project.host.database), script)
        finally:
            holder.close_stdin()
            holder.wait(10)
    assert status != 0 and "lock timeout" in stderr
    assert [row.split("|")[0] for row in ledger(sandbox, project.host.database)] == ["001"]  # 002 rolled back whole
    status, stderr = apply_script((sandbox, project.host.database), script)
    assert status == 0, stderr
    assert [row.split("|")[0] for row in ledger(sandbox, project.host.database)] == ["001", "002", "003", "004"]
