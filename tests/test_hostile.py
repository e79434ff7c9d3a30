"""Names never become code: hostile payloads fed into every place a name reaches a shell or SQL.

Each payload tries to run ``touch CANARY`` (shell substitution, backticks, ``;``, a newline,
psql's ``\\!``, a ``$opsagent$`` dollar tag breaking out of a DO body, a heredoc
terminator) or to redirect the tool (``=`` read as a connection string, a leading ``-o``).
The sandbox server is this machine, so one canary path covers the client and the server.
Every operation must either work on the object with exactly that name or fail with a
clean one-line error; the canary must never appear.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opsagent.backup import create_backup, list_backups, restore_backup
from opsagent.errors import OpsagentError
from opsagent.migrate.ledger import Ledger
from opsagent.migrate.sync import Identity, SyncOptions, read_state, sync
from opsagent.remote.quickref import describe_table, list_tables
from opsagent.remote.transport import Remote, open_remote
from opsagent.schema.extract import dump_schema

from .conftest import Project, SandboxHandle

CANARY = Path(f"/tmp/opsagent-canary-{uuid.uuid4().hex[:8]}")
TOUCH = f"touch {CANARY}"


def payloads() -> list[tuple[str, str]]:
    """(id, payload): at least 12 kinds of attempt, each short enough for a 63-byte identifier."""
    return [
        ("single-quote", "a'b'; \\! " + TOUCH),
        ("double-quote", 'a"b"; ' + TOUCH),
        ("command-subst", "$(" + TOUCH + ")"),
        ("backticks", "`" + TOUCH + "`"),
        ("semicolon", "x; " + TOUCH),
        ("newline", "x\n" + TOUCH),
        ("psql-bang", "\\! " + TOUCH),
        ("dollar-opsagent", "$opsagent$; \\! " + TOUCH + " --"),
        ("dollar-tag", "$$ \\! " + TOUCH + " $$"),
        ("conninfo", "host=/nonexistent dbname=postgres"),
        ("dash-option", "-o " + TOUCH),
        ("heredoc-end", "x\nOPSAGENT_SQL\n\\! " + TOUCH),
        ("unicode", "dätä ☃ \u202e" + "x"),
        ("backslash", "a\\'b\\"),
    ]


IDS = [name for name, _ in payloads()]
VALUES = [value for _, value in payloads()]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.fixture(autouse=True)
def no_canary() -> Iterator[None]:
    CANARY.unlink(missing_ok=True)
    yield
    assert not CANARY.exists(), "a hostile name was executed as code"


def _clean(action: Callable[[], object]) -> object:
    """Run one operation: it may refuse the name, but only with opsagent's own error (never another exception)."""
    try:
        return action()
    except OpsagentError as exc:
        return exc


@pytest.fixture
def hostile_db(sandbox: SandboxHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    assert len(name.encode()) <= 63, "a payload longer than an identifier would be truncated by PostgreSQL"
    sandbox.admin.psql(f"CREATE DATABASE {_q(name)}", database="postgres")
    yield name
    sandbox.admin.psql(f"DROP DATABASE IF EXISTS {_q(name)} WITH (FORCE)", database="postgres", check=False)


@pytest.mark.parametrize("hostile_db", VALUES, ids=IDS, indirect=True)
def test_hostile_database_name(sandbox: SandboxHandle, hostile_db: str, tmp_path: Path) -> None:
    """The inventory's database name reaches psql, pg_dump, pg_restore and the backup scripts."""
    backups = Path(sandbox.state.root) / "backups" / uuid.uuid4().hex[:8]
    host = sandbox.host_for(hostile_db, backup_dir=str(backups))
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "001_init.sql").write_text("CREATE TABLE t (id int);\n")
    with open_remote(host) as remote:
        assert remote.query_json("SELECT to_json(current_database())") == hostile_db
        result = sync(remote, migrations, SyncOptions(backup=True), Identity("hostile-test", None))
        assert result.ok, result.error
        assert [t.name for t in list_tables(remote)] == ["schema_migrations", "t"]
        assert "CREATE TABLE public.t" in dump_schema(remote)
        state = read_state(remote, Ledger(host.ledger_schema))
        assert [r.version for r in state.rows] == ["001"]
        assert len(list_backups(remote)) == 1  # the sync's own backup, taken before 001
        after = create_backup(remote, "after")
        target = f"r_{uuid.uuid4().hex[:8]}"
        restored = restore_backup(remote, after.name, into=target)
        assert restored.restored_counts["tables"] == 2
        remote.psql(f"DROP DATABASE {_q(target)}", database="postgres")


@pytest.mark.parametrize("payload", VALUES, ids=IDS)
def test_hostile_labels_tables_and_targets(remote: Remote, sandbox: SandboxHandle, payload: str) -> None:
    """Backup labels, restore targets and the table name given to ``describe``."""
    remote.psql(f"CREATE TABLE {_q(payload)} (id int)")
    text = describe_table(remote, payload)
    assert "id" in text and "integer" in text
    host = sandbox.host_for(
        remote.host.database, backup_dir=str(Path(sandbox.state.root) / "backups" / uuid.uuid4().hex[:8])
    )
    with open_remote(host) as r:
        made = create_backup(r, payload)
        assert made.verified
        target = payload.encode()[:50].decode(errors="ignore") + "_r"
        outcome = _clean(lambda: restore_backup(r, made.name, into=target))
        if not isinstance(outcome, OpsagentError):
            exists = r.psql(
                f"SELECT count(*) FROM pg_database WHERE datname = {_lit(target)}",
                database="postgres",
                extra=["-A", "-t"],
            ).text.strip()
            assert exists == "1"
            r.psql(f"DROP DATABASE {_q(target)}", database="postgres")


def test_hostile_migration_file_names(project: Project) -> None:
    """Migration file names (their descriptions) are shown and recorded, never run: all payloads in one project."""
    for number, payload in enumerate(VALUES, start=1):
        project.write_migration(f"{number:03d}_{payload.replace('/', '_')}.sql", f"CREATE TABLE m{number} (id int);\n")
    result = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert result.returncode == 0, result.stderr
    status = project.run("status", "--host", "sandbox", "--json")
    assert status.returncode == 0, status.stderr
    # a name with a newline is not a migration name: left out, and said so (never run, never silently lost)
    plain = [v for v in VALUES if "\n" not in v]
    assert project.psql("SELECT count(*) FROM schema_migrations").strip() == str(len(plain))
    assert result.stderr.count("ignored") + result.stdout.count("ignored") >= len(VALUES) - len(plain)


@pytest.mark.parametrize("payload", VALUES, ids=IDS)
def test_hostile_inventory_values(sandbox: SandboxHandle, fresh_db: str, tmp_path: Path, payload: str) -> None:
    """Inventory values (backup_dir, ledger_schema, become) reach the server only as quoted data."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "001_init.sql").write_text("CREATE TABLE m (id int);\n")
    backup_dir = Path(sandbox.state.root) / "backups" / fresh_db / payload.replace("/", "_")
    host = sandbox.host_for(fresh_db, backup_dir=str(backup_dir), ledger_schema=payload)
    with open_remote(host) as remote:
        result = sync(remote, migrations, SyncOptions(backup=True), Identity(payload, payload))
        assert result.ok, result.error
        assert result.backup is not None and Path(result.backup.path).parent == backup_dir
        assert [r.version for r in read_state(remote, Ledger(payload)).rows] == ["001"]
    with open_remote(sandbox.host_for(fresh_db, become=payload)) as remote:
        refused = _clean(lambda: read_state(remote, Ledger("public")))
        assert isinstance(refused, OpsagentError)
