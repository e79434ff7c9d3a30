"""Backups and restores against the real sandbox host (sshd + PostgreSQL), plus name rules."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opsagent.backup import (
    BackupError,
    _grep_pattern,
    backup_name,
    check_name,
    create_backup,
    download_backup,
    latest_backup,
    list_backups,
    parse_name,
    restore_backup,
    restore_database_name,
    restore_in_place,
    sanitize_label,
    sessions_to_terminate,
    verify_backup,
)
from opsagent.errors import UsageError
from opsagent.remote.transport import Remote

from .conftest import Project, SandboxHandle

T0 = datetime(2026, 11, 24, 10, 30, 0, tzinfo=UTC)


# ---------------------------------------------------------------- names (pure)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("pre-sync", "pre-sync"),
        ("before deploy #42", "before-deploy-42"),
        ("../../etc/passwd", "etc-passwd"),
        ("  ", None),
        (None, None),
        ("ünïcode", "n-code"),
        ("x" * 60, "x" * 40),
    ],
)
def test_labels_are_sanitized(label: str | None, expected: str | None) -> None:
    assert sanitize_label(label) == expected


@pytest.mark.parametrize(
    ("database", "label", "name"),
    [
        ("trad", None, "trad-20261124T103000.000Z-beef.dump"),
        ("trad", "pre sync", "trad-20261124T103000.000Z-beef-pre-sync.dump"),
        ('we"ird db/x', None, "we_ird_db_x-20261124T103000.000Z-beef.dump"),
    ],
)
def test_backup_names_round_trip(database: str, label: str | None, name: str) -> None:
    assert backup_name(database, T0, label, unique="beef") == name
    parsed = parse_name(name)
    assert parsed is not None
    assert parsed[1] == T0 and parsed[2] == sanitize_label(label)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("trad-20261124T103000Z.dump", None),
        ("trad-20261124T103000Z-pre-sync.dump", "pre-sync"),
        ("trad-20261124T103000Z-beef.dump", "beef"),  # an old name whose label looks like a unique tag stays a label
    ],
)
def test_names_from_before_milliseconds_still_parse(name: str, label: str | None) -> None:
    assert parse_name(name) == ("trad", T0, label)
    assert re.match(_grep_pattern("trad"), name)
    assert check_name(name) == name


def test_names_are_unique_within_a_millisecond_and_sort_by_time() -> None:
    same = {backup_name("db", T0) for _ in range(50)}
    assert len(same) > 40  # 4 random hex digits: 50 draws collide rarely; the server refuses to overwrite anyway
    later = backup_name("db", T0 + timedelta(milliseconds=1))
    assert all(later > name for name in same)
    assert parse_name(later) == ("db", T0 + timedelta(milliseconds=1), None)
    for name in same | {later}:
        assert re.match(_grep_pattern("db"), name) and check_name(name) == name


def test_names_sort_by_time() -> None:
    names = [backup_name("db", T0 + timedelta(seconds=s)) for s in (5, 3600, 0, 86400 * 40)]
    assert sorted(names) == [n for _, n in sorted(zip((5, 3600, 0, 86400 * 40), names, strict=True))]


@pytest.mark.parametrize("bad", ["../x.dump", "a/b.dump", ".hidden.dump", "x.sql", "", "x.dump.meta"])
def test_unsafe_names_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        check_name(bad)


def test_restore_database_name_is_lowercase_and_bounded() -> None:
    assert restore_database_name("trad", T0) == "trad_restore_20261124_103000"
    with pytest.raises(UsageError):
        restore_database_name("x" * 50, T0)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def bremote(sandbox: SandboxHandle, fresh_db: str) -> Iterator[Remote]:
    """A Remote to a fresh database with its own (not yet existing) backup_dir."""
    backup_dir = Path(sandbox.state.root) / "backups" / fresh_db
    with sandbox.remote(fresh_db, backup_dir=str(backup_dir), keep_backups=10) as r:
        yield r


def q(remote: Remote, sql: str, database: str | None = None) -> str:
    return remote.psql(sql, database, extra=["-A", "-t"]).text.strip()


SCHEMA = """
CREATE TABLE customer (id int PRIMARY KEY, name text NOT NULL, email text);
CREATE INDEX customer_name ON customer (name);
CREATE VIEW named AS SELECT name FROM customer;
INSERT INTO customer VALUES (1, 'ada', 'ada@x'), (2, 'bob', NULL);
"""

MUTATE = """
INSERT INTO customer VALUES (3, 'eve', 'eve@x');
UPDATE customer SET name = 'ADA' WHERE id = 1;
DROP VIEW named;
ALTER TABLE customer DROP COLUMN email;
CREATE TABLE extra (id int);
"""


def db_exists(sandbox: SandboxHandle, name: str) -> bool:
    return q(sandbox.admin, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'", "postgres") == "1"


# ---------------------------------------------------------------- backup


def test_backup_is_verified_private_and_one_command(bremote: Remote) -> None:
    bremote.psql(SCHEMA)
    before = bremote.command_count
    result = create_backup(bremote, "first run", now=T0)
    assert bremote.command_count - before == 1 == result.remote_commands
    assert re.fullmatch(rf"{bremote.host.database}-20261124T103000[.]000Z-[0-9a-f]{{4}}-first-run[.]dump", result.name)
    assert result.verified and result.label == "first-run" and result.created_at == T0
    path = Path(result.path)  # the sandbox server is this machine
    assert hashlib.sha256(path.read_bytes()).hexdigest() == result.sha256
    assert path.stat().st_size == result.size_bytes
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.owner() == path.parent.owner() == "postgres"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no partial files left
    listed = list_backups(bremote)
    assert [(b.name, b.verified, b.sha256, b.label) for b in listed] == [
        (result.name, True, result.sha256, "first-run")
    ]


def test_restore_into_new_database_has_the_old_state(bremote: Remote, sandbox: SandboxHandle) -> None:
    bremote.psql(SCHEMA)
    taken = create_backup(bremote, now=T0)
    bremote.psql(MUTATE)
    result = restore_backup(bremote, taken.name, now=T0)
    target = f"{bremote.host.database}_restore_20261124_103000"
    assert result.database == target and not result.in_place
    try:
        assert (
            q(
                bremote,
                "SELECT string_agg(id || ':' || name || ':' || coalesce(email, '-'), ',' ORDER BY id) FROM customer",
                target,
            )
            == "1:ada:ada@x,2:bob:-"
        )
        assert q(bremote, "SELECT count(*) FROM named", target) == "2"
        assert q(bremote, "SELECT to_regclass('extra') IS NULL", target) == "t"
        # the live database was not touched
        assert q(bremote, "SELECT string_agg(name, ',' ORDER BY id) FROM customer") == "ADA,bob,eve"
        assert result.restored_counts["tables"] == 1 and result.restored_counts["views"] == 1
        assert result.live_counts is not None
        assert result.live_counts["tables"] == 2 and result.live_counts["views"] == 0
        assert result.restored_counts["indexes"] == result.live_counts["indexes"] == 2
    finally:
        sandbox.admin.psql(f'DROP DATABASE IF EXISTS "{target}"', "postgres")


def test_restore_refuses_existing_target_and_live_name(bremote: Remote, sandbox: SandboxHandle) -> None:
    taken = create_backup(bremote, now=T0)
    with pytest.raises(UsageError, match="--in-place"):
        restore_backup(bremote, taken.name, into=bremote.host.database)
    with pytest.raises(BackupError, match="cannot create database postgres"):
        restore_backup(bremote, taken.name, into="postgres")
    assert db_exists(sandbox, "postgres")


def test_in_place_restore_swaps_and_keeps_a_backup_of_what_it_replaced(bremote: Remote, sandbox: SandboxHandle) -> None:
    bremote.psql(SCHEMA)
    taken = create_backup(bremote, now=T0)
    bremote.psql(MUTATE)
    db = bremote.host.database
    sandbox.admin.psql(
        f"""REVOKE ALL ON DATABASE {db} FROM PUBLIC; GRANT CONNECT ON DATABASE {db} TO pg_monitor;
                           ALTER DATABASE {db} SET work_mem = '7MB';
                           ALTER DATABASE {db} SET search_path = public, "Odd Schema";
                           ALTER DATABASE {db} CONNECTION LIMIT 40;""",
        "postgres",
    )
    result = restore_in_place(bremote, taken.name, now=T0 + timedelta(minutes=5))
    kept = f"{db}_replaced_20261124_103500"
    assert result.in_place and result.database == db and result.old_database_kept == kept
    assert result.drop_hint == f"inv psql --host sandbox -c 'DROP DATABASE \"{kept}\"'"
    try:
        # database-level grants and settings (not part of a dump) were carried over
        acl = q(sandbox.admin, f"SELECT datacl::text FROM pg_database WHERE datname = '{db}'", "postgres")
        assert "pg_monitor=c/" in acl and "{=" not in acl and ",=" not in acl
        settings = q(
            sandbox.admin,
            f"SELECT setconfig::text FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            f"WHERE d.datname = '{db}' AND s.setrole = 0",
            "postgres",
        )
        assert "work_mem=7MB" in settings and 'public, \\"Odd Schema\\"' in settings
        # both databases are open again, with the connection settings the live one had
        assert (
            q(
                sandbox.admin,
                f"SELECT string_agg(datname || ':' || datallowconn || ':' || datconnlimit, ',' ORDER BY datname) "
                f"FROM pg_database WHERE datname IN ('{db}', '{kept}')",
                "postgres",
            )
            == f"{db}:true:40,{kept}:true:40"
        )
        assert (
            q(bremote, "SELECT string_agg(name || ':' || coalesce(email, '-'), ',' ORDER BY id) FROM customer")
            == "ada:ada@x,bob:-"
        )
        assert q(bremote, "SELECT to_regclass('extra') IS NULL") == "t"
        # the replaced database is kept, as it was
        assert q(bremote, "SELECT string_agg(name, ',' ORDER BY id) FROM customer", kept) == "ADA,bob,eve"
        leftovers = q(
            sandbox.admin, f"SELECT count(*) FROM pg_database WHERE datname LIKE '{db}_opsagent%'", "postgres"
        )
        assert leftovers == "0"
        safety = result.pre_restore_backup
        assert safety is not None and safety.label == "pre-restore" and result.pre_restore_backup_error is None
        assert [b.name for b in list_backups(bremote)] == [safety.name, taken.name]
        replaced = restore_backup(bremote, safety.name, into=f"{db}_check")
        try:
            assert (
                q(bremote, "SELECT string_agg(name, ',' ORDER BY id) FROM customer", replaced.database) == "ADA,bob,eve"
            )
            assert q(bremote, "SELECT to_regclass('extra') IS NOT NULL", replaced.database) == "t"
        finally:
            sandbox.admin.psql(f'DROP DATABASE IF EXISTS "{replaced.database}"', "postgres")
    finally:
        sandbox.admin.psql(f'DROP DATABASE IF EXISTS "{kept}"', "postgres")


def test_truncated_backup_is_detected_and_never_restored(bremote: Remote, sandbox: SandboxHandle) -> None:
    bremote.psql(SCHEMA + "INSERT INTO customer SELECT g, md5(g::text) FROM generate_series(10, 5000) g;")
    taken = create_backup(bremote, now=T0)
    assert verify_backup(bremote, taken.name).sha256 == taken.sha256
    path = Path(taken.path)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(BackupError) as info:
        verify_backup(bremote, taken.name)
    assert info.value.reason == "checksum" and "damaged" in info.value.message
    assert [b.verified for b in list_backups(bremote)] == [False]
    with pytest.raises(BackupError, match="damaged"):
        restore_backup(bremote, taken.name, into=f"{bremote.host.database}_bad")
    assert not db_exists(sandbox, f"{bremote.host.database}_bad")
    # without the recorded checksum, pg_restore --list still catches a cut-off table of contents
    Path(taken.path + ".meta").unlink()
    os.truncate(path, 64)
    with pytest.raises(BackupError) as info:
        verify_backup(bremote, taken.name)
    assert info.value.reason == "verify"


def test_unwritable_backup_dir_is_a_clear_error(sandbox: SandboxHandle, fresh_db: str, tmp_path: Path) -> None:
    root_owned = Path(sandbox.state.root) / "backups" / f"{fresh_db}-rootonly"
    root_owned.mkdir(parents=True, mode=0o755)
    with sandbox.remote(fresh_db, backup_dir=str(root_owned)) as r, pytest.raises(BackupError) as info:
        create_backup(r, now=T0)
    assert info.value.reason == "notwritable"
    assert info.value.message.endswith(f"backup_dir {root_owned} is not writable by postgres")
    assert list(root_owned.iterdir()) == []
    with sandbox.remote(fresh_db, backup_dir="/proc/opsagent-backups") as r, pytest.raises(BackupError) as info:
        create_backup(r, now=T0)
    assert info.value.reason == "mkdir" and "cannot create backup_dir /proc/opsagent-backups" in info.value.message


def test_login_user_creates_backup_dir_for_become_when_become_cannot(sandbox: SandboxHandle, fresh_db: str) -> None:
    backup_dir = Path(sandbox.state.root) / f"fallback-{fresh_db}" / "dumps"  # the sandbox root is root-owned
    with sandbox.remote(fresh_db, backup_dir=str(backup_dir)) as r:
        taken = create_backup(r, now=T0)
    assert backup_dir.owner() == "postgres" and stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    assert (backup_dir / taken.name).exists()


def test_backup_refuses_when_the_database_cannot_fit(sandbox: SandboxHandle, fresh_db: str) -> None:
    small = Path(sandbox.state.root) / f"tiny-{fresh_db}"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(small)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        os.chown(small, *_postgres_ids())
        with sandbox.remote(fresh_db, backup_dir=str(small)) as r, pytest.raises(BackupError) as info:
            create_backup(r, now=T0)
        assert info.value.reason == "nospace"
        assert "not enough space" in info.value.message and "refusing" in info.value.message
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def test_retention_keeps_exactly_n_and_never_the_new_one(sandbox: SandboxHandle, fresh_db: str) -> None:
    backup_dir = Path(sandbox.state.root) / "backups" / f"{fresh_db}-ret"
    with sandbox.remote(fresh_db, backup_dir=str(backup_dir), keep_backups=3) as r:
        foreign = backup_dir / "otherdb-20200101T000000Z.dump"
        deleted: list[str] = []
        names = []
        for minute in range(5):
            result = create_backup(r, "pre-sync" if minute % 2 else None, now=T0 + timedelta(minutes=minute))
            names.append(result.name)
            deleted += result.deleted_by_retention
            if minute == 0:
                foreign.write_bytes(b"not ours")
        assert deleted == names[:2]
        assert [b.name for b in list_backups(r)] == names[:1:-1]
        # a backup whose clock is behind is still kept (with the newest others)
        late = create_backup(r, now=T0 - timedelta(days=1))
        assert sorted(late.deleted_by_retention) == [names[2]]
        assert [b.name for b in list_backups(r)] == [names[4], names[3], late.name]
        assert latest_backup(r).name == names[4]
        assert foreign.exists()


def test_downloaded_copy_matches_the_server(bremote: Remote, tmp_path: Path) -> None:
    bremote.psql(SCHEMA + "INSERT INTO customer SELECT g, md5(g::text) FROM generate_series(10, 20000) g;")
    seen: list[tuple[int, int | None]] = []
    taken = create_backup(
        bremote, now=T0, download_dir=tmp_path / "a", progress=lambda n, total: seen.append((n, total))
    )
    server_sha = bremote.run(["sha256sum", taken.path], become=False).text.split()[0]
    assert taken.local_path == tmp_path / "a" / taken.name
    assert hashlib.sha256(taken.local_path.read_bytes()).hexdigest() == server_sha == taken.sha256
    assert seen and seen[-1][0] == taken.size_bytes
    got = download_backup(bremote, taken.name, tmp_path / "b", progress=lambda n, total: seen.append((n, total)))
    assert got.sha256 == server_sha and got.local_path.read_bytes() == taken.local_path.read_bytes()
    assert seen[-1] == (taken.size_bytes, taken.size_bytes)
    assert stat.S_IMODE(got.local_path.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [taken.name]
    with pytest.raises(BackupError, match="not found"):
        download_backup(bremote, "nope-20200101T000000Z.dump", tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


def test_failed_in_place_restore_leaves_the_live_database(bremote: Remote, sandbox: SandboxHandle) -> None:
    role = f"oa_{bremote.host.database[-10:]}"
    sandbox.admin.psql(f"CREATE ROLE {role}", "postgres")
    try:
        bremote.psql(SCHEMA + f"ALTER TABLE customer OWNER TO {role};")
        taken = create_backup(bremote, now=T0)
        sandbox.admin.psql(f"ALTER ROLE {role} RENAME TO {role}_x", "postgres")  # the dump's OWNER TO now fails
        bremote.psql("INSERT INTO customer VALUES (3, 'eve', NULL)")
        with pytest.raises(BackupError) as info:
            restore_in_place(bremote, taken.name, now=T0 + timedelta(minutes=1))
        assert info.value.reason == "restore" and "was not touched" in info.value.message
        assert q(bremote, "SELECT count(*) FROM customer") == "3"
        leftovers = q(
            sandbox.admin,
            f"SELECT count(*) FROM pg_database WHERE datname LIKE '{bremote.host.database}_%'",
            "postgres",
        )
        assert leftovers == "0"
    finally:
        bremote.psql("DROP TABLE IF EXISTS customer CASCADE")
        sandbox.admin.psql(f"DROP ROLE IF EXISTS {role}_x; DROP ROLE IF EXISTS {role}", "postgres")


def test_in_place_restore_terminates_other_sessions(bremote: Remote, sandbox: SandboxHandle) -> None:
    bremote.psql(SCHEMA)
    taken = create_backup(bremote, now=T0)
    bremote.psql("DELETE FROM customer")
    session = bremote.start(bremote.psql_argv(extra=["-A", "-t"]))
    try:
        session.write("BEGIN; SELECT count(*) FROM customer; SELECT pg_backend_pid();\n")
        assert session.read_line(timeout=20) == "0"
        pid = session.read_line(timeout=20)
        sessions = sessions_to_terminate(bremote)
        assert [str(s.pid) for s in sessions] == [pid] and sessions[0].application == "psql"
        result = restore_in_place(bremote, taken.name, now=T0 + timedelta(minutes=1))
        assert q(sandbox.admin, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}", "postgres") == "0"
        assert result.terminated_sessions == 1 and result.terminated_applications == ["psql"]
    finally:
        session.close()
    assert q(bremote, "SELECT count(*) FROM customer") == "2"
    assert result.old_database_kept and q(bremote, "SELECT count(*) FROM customer", result.old_database_kept) == "0"
    sandbox.admin.psql(f'DROP DATABASE "{result.old_database_kept}"', "postgres")


def test_backup_behind_an_exclusive_lock_fails_fast(sandbox: SandboxHandle, fresh_db: str) -> None:
    backup_dir = Path(sandbox.state.root) / "backups" / f"{fresh_db}-lock"
    with sandbox.remote(fresh_db, backup_dir=str(backup_dir), lock_timeout="1s") as r:
        r.psql(SCHEMA)
        session = r.start(r.psql_argv(extra=["-A", "-t"]))
        try:
            session.write("BEGIN; LOCK customer; SELECT 'locked';\n")
            assert session.read_line(timeout=20) == "locked"
            with pytest.raises(BackupError) as info:
                create_backup(r, now=T0)
        finally:
            session.close()
        assert info.value.reason == "pg_dump" and "lock" in info.value.message
        assert list(backup_dir.iterdir()) == []


NOLOGIN_USER = "oa_backuponly"


@pytest.fixture
def unprivileged(sandbox: SandboxHandle, fresh_db: str) -> Iterator[Remote]:
    """A Remote whose login user may only sudo to postgres (and cannot read postgres's files)."""
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", NOLOGIN_USER], capture_output=True, check=False)
    subprocess.run(["usermod", "-p", "*", NOLOGIN_USER], capture_output=True, check=True)
    sudoers = Path("/etc/sudoers.d/opsagent_test_backup")
    sudoers.write_text(f"{NOLOGIN_USER} ALL=(postgres) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    keyfile = Path(sandbox.state.ssh_dir) / f"authorized_keys_{NOLOGIN_USER}"
    keyfile.write_text((Path(sandbox.state.ssh_dir) / "client_key.pub").read_text())
    keyfile.chmod(0o644)
    try:
        with sandbox.remote(
            fresh_db, user=NOLOGIN_USER, backup_dir=str(Path(sandbox.state.root) / f"backups-{fresh_db}-u")
        ) as r:
            yield r
    finally:
        keyfile.unlink()
        sudoers.unlink()


def test_unprivileged_login_user_backs_up_and_downloads_without_opening_permissions(
    unprivileged: Remote, sandbox: SandboxHandle, tmp_path: Path
) -> None:
    # neither postgres nor the login user may create the folder under the root-owned sandbox root
    with pytest.raises(BackupError) as info:
        create_backup(unprivileged, now=T0)
    assert info.value.reason == "mkdir" and "sudo install -d -m 700 -o postgres" in (info.value.hint or "")
    backup_dir = Path(unprivileged.host.backup_dir)
    backup_dir.mkdir(mode=0o700)
    os.chown(backup_dir, *_postgres_ids())
    unprivileged.psql(SCHEMA)
    taken = create_backup(unprivileged, now=T0, download_dir=tmp_path)
    assert (
        unprivileged.run(["cat", taken.path], become=False, check=False).exit_status != 0
    )  # login user cannot read it
    assert stat.S_IMODE(Path(taken.path).stat().st_mode) == 0o600
    got = download_backup(unprivileged, taken.name, tmp_path / "again")
    assert got.sha256 == taken.sha256 == hashlib.sha256(Path(taken.path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- CLI


def test_cli_backup_download_list_get_and_restore(project: Project, sandbox: SandboxHandle) -> None:
    project.psql(SCHEMA)
    done = project.run("backup", "--host", "sandbox", "--label", "from cli", "--download")
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout and "downloaded to" in done.stdout
    listed = json.loads(project.run("backups", "--host", "sandbox", "--json").stdout)
    assert [(b["label"], b["verified"]) for b in listed["backups"]] == [("from-cli", True)]
    name = listed["backups"][0]["name"]
    local = project.root / "backups" / "sandbox" / name
    assert hashlib.sha256(local.read_bytes()).hexdigest() == listed["backups"][0]["sha256"]
    table = project.run("backups", "--host", "sandbox")
    assert name in table.stdout and "from-cli" in table.stdout and "✔" in table.stdout
    local.unlink()
    got = project.run("backups.get", "--host", "sandbox", name)
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(local.read_bytes()).hexdigest() == listed["backups"][0]["sha256"]

    project.psql("DELETE FROM customer WHERE id = 2")
    refused = project.run("restore", "--host", "sandbox", "--latest", "--in-place")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    restored = project.run("restore", "--host", "sandbox", "--latest", "--json")
    assert restored.returncode == 0, restored.stderr
    document = json.loads(restored.stdout)
    try:
        assert document["restored_counts"]["tables"] == document["live_counts"]["tables"] == 1
        assert project.psql("SELECT 1") and q_db(project, document["database"]) == "2"
    finally:
        sandbox.admin.psql(f'DROP DATABASE IF EXISTS "{document["database"]}"', "postgres")
    swapped = project.run("restore", "--host", "sandbox", "--backup", name, "--in-place", "--yes")
    assert swapped.returncode == 0, swapped.stderr
    assert "replaced by backup" in swapped.stdout and "pre-restore" in swapped.stdout
    assert project.psql("SELECT count(*) FROM customer").strip() == "2"
    kept = project.psql(
        f"SELECT datname FROM pg_database WHERE datname LIKE '{project.host.database}_replaced_%'"
    ).strip()
    assert kept and kept in swapped.stdout and "DROP DATABASE" in swapped.stdout
    sandbox.admin.psql(f'DROP DATABASE "{kept}"', "postgres")
    missing = project.run("restore", "--host", "sandbox", "--backup", "nope-20200101T000000Z.dump")
    assert missing.returncode == 1 and "not found" in missing.stderr


def q_db(project: Project, database: str) -> str:
    from opsagent.remote.transport import open_remote

    with open_remote(project.host) as r:
        return r.psql("SELECT count(*) FROM customer", database, extra=["-A", "-t"]).text.strip()


@pytest.mark.parametrize(
    ("interactive", "typed", "yes", "accepted"),
    [
        (False, "", True, True),
        (False, "trad\n", False, False),  # no terminal: only --yes will do
        (True, "trad\n", False, True),
        (True, "TRAD\n", False, False),
        (True, "\n", False, False),
    ],
)
def test_in_place_confirmation(interactive: bool, typed: str, yes: bool, accepted: bool) -> None:
    import io

    from opsagent.cli import backup as cli
    from opsagent.cli.environment import Environment
    from opsagent.inventory import HostConfig

    stdout = io.StringIO()
    env = Environment(stdout=stdout, stderr=io.StringIO(), stdin=io.StringIO(typed), stdin_isatty=interactive)
    host = HostConfig(name="prod", address="x", database="trad")
    if accepted:
        cli._confirm(env, host, "trad-20261124T103000Z.dump", yes)
    else:
        with pytest.raises(UsageError):
            cli._confirm(env, host, "trad-20261124T103000Z.dump", yes)
    assert stdout.getvalue() == ""  # the question goes to stderr, the answer comes from stdin
