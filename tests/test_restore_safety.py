"""Issue 12 against the real sandbox (sshd + PostgreSQL): in-place restore under a live writer,
hostile names, concurrent and interrupted backups, truncated backups without their .meta.

The sandbox server is this machine: the tests look at its files and processes directly.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest

from opsagent.backup import (
    BackupError,
    RestoreResult,
    backup_name,
    create_backup,
    derived_database_name,
    list_backups,
    restore_backup,
    restore_in_place,
    verify_backup,
)
from opsagent.errors import OpsagentError
from opsagent.remote.markers import Markers
from opsagent.remote.transport import Remote, conninfo_dbname

from .conftest import Project, SandboxHandle

T0 = datetime(2026, 11, 24, 10, 30, 0, tzinfo=UTC)


def q(remote: Remote, sql: str, database: str | None = None) -> str:
    return remote.psql(sql, database, extra=["-A", "-t"]).text.strip()


def database_state(sandbox: SandboxHandle, name: str) -> str:
    """``allowconn:connlimit`` of a database, '' when it does not exist (name passed as a psql variable)."""
    return sandbox.admin.psql(
        "SELECT datallowconn || ':' || datconnlimit FROM pg_database WHERE datname = :'n'",
        "postgres",
        extra=["-A", "-t", "-v", f"n={name}"],
    ).text.strip()


def drop_database(sandbox: SandboxHandle, name: str) -> None:
    sandbox.admin.psql('DROP DATABASE IF EXISTS :"n" WITH (FORCE)', "postgres", extra=["-v", f"n={name}"])


def local_psql(sandbox: SandboxHandle, database: str) -> list[str]:
    """psql on this machine over the sandbox's unix socket, as postgres (peer authentication)."""
    return [
        "runuser",
        "-u",
        "postgres",
        "--",
        "psql",
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        sandbox.state.socket_dir,
        "-p",
        str(sandbox.state.pg_port),
        "-d",
        conninfo_dbname(database),
    ]


def end(proc: subprocess.Popen[str]) -> None:
    """Stop a local psql: close its stdin (psql ends its session, which releases its locks), kill it if it lingers.

    Killing only ``runuser`` would leave its psql child running with its session and locks.
    """
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def dump_ids(path: str, table: str) -> set[int]:
    """The first column of ``table``'s rows in a custom-format dump (read locally: the server is this machine)."""
    out = subprocess.run(
        ["pg_restore", "--data-only", "-t", table, "-f", "-", path], capture_output=True, text=True, check=True
    ).stdout
    ids: set[int] = set()
    copying = False
    for line in out.splitlines():
        if line.startswith("COPY "):
            copying = True
        elif line == "\\.":
            copying = False
        elif copying and line:
            ids.add(int(line.split("\t")[0]))
    return ids


# ---------------------------------------------------------------- 1. in-place restore under a writer


class Writer(threading.Thread):
    """An application: autocommit inserts every 20 ms through its own psql connection, reconnecting when thrown out.

    An id counts as acknowledged only when the server's ``RETURNING`` for it came back.
    """

    def __init__(self, argv: list[str], first_id: int) -> None:
        super().__init__(daemon=True)
        self.argv = argv
        self.next_id = first_id
        self.acked: list[int] = []
        self.connections = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
            self.connections += 1
            assert proc.stdin is not None and proc.stdout is not None
            try:
                self._insert_until_thrown_out(proc.stdin, proc.stdout)
            except OSError:
                pass
            finally:
                end(proc)
            time.sleep(0.02)

    def _insert_until_thrown_out(self, stdin: IO[str], stdout: IO[str]) -> None:
        while not self.halt.is_set():
            wanted = self.next_id
            self.next_id += 1
            stdin.write(f"INSERT INTO w (id) VALUES ({wanted}) RETURNING id;\n")
            stdin.flush()
            if stdout.readline().strip() != str(wanted):
                return
            self.acked.append(wanted)
            time.sleep(0.02)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"writer stuck at {len(self.acked)} acknowledged rows"
            time.sleep(0.02)


WRITER_RUNS = 5


def test_in_place_restore_loses_no_acknowledged_write(sandbox: SandboxHandle, fresh_db: str) -> None:
    backup_dir = Path(sandbox.state.root) / "backups" / fresh_db
    figures: list[str] = []
    with sandbox.remote(fresh_db, backup_dir=str(backup_dir), keep_backups=20) as r:
        r.psql(
            "CREATE TABLE w (id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp()); "
            "INSERT INTO w (id) VALUES (1), (2);"
        )
        taken = create_backup(r, now=T0)
        for run in range(WRITER_RUNS):
            writer = Writer(local_psql(sandbox, fresh_db), first_id=(run + 1) * 1_000_000)
            writer.start()
            try:
                writer.wait_for(15)
                result = restore_in_place(r, taken.name, now=T0 + timedelta(minutes=run + 1))
                after = len(writer.acked)
                writer.wait_for(after + 15)
            finally:
                writer.halt.set()
                writer.join(timeout=10)
            kept = result.old_database_kept
            assert kept and result.pre_restore_backup is not None
            try:
                live = {int(x) for x in q(r, "SELECT id FROM w").split()}
                replaced = {int(x) for x in q(r, "SELECT id FROM w", kept).split()}
                safety = dump_ids(result.pre_restore_backup.path, "w")
                acked = set(writer.acked)
                lost = acked - live - replaced - safety
                figures.append(
                    f"run {run + 1}: {len(acked)} acknowledged, {len(lost)} lost, {writer.connections} connections, "
                    f"{result.terminated_sessions} terminated"
                )
                assert lost == set(), f"run {run + 1}: acknowledged but lost: {sorted(lost)[:20]}"
                assert (
                    replaced == safety
                )  # the backup of the replaced database is exactly its content: nothing wrote after the close
                assert {1, 2} <= live and acked & live and acked & replaced  # writes landed before and after the swap
                assert result.terminated_sessions >= 1
                assert database_state(sandbox, fresh_db) == "true:-1" and database_state(sandbox, kept) == "true:-1"
            finally:
                drop_database(sandbox, kept)
    print("\n" + "\n".join(figures))


# ---------------------------------------------------------------- 2. hostile names


CANARY_DIR = Path("/tmp/oa-canary")
CANARY = CANARY_DIR / "c"
HOSTILE = [
    "q'uote\"dbl",
    f"$(touch {CANARY})",
    f"`touch {CANARY}`",
    f"; touch {CANARY};",
    f"nl\n\\! touch {CANARY}",
    f"\\! touch {CANARY}",
    f"x$opsagent$;\\! touch {CANARY}",
    "x=y host=/tmp",
    f"-oProxyCommand=touch {CANARY}",
    "$opsagent_swap$ $$ $x$",
    "dé_ß_日本",
    ":'v' :\"v\" :v %I%L%s",
    f"e\nOPSAGENT_SQL\n\\! touch {CANARY}",
    "' OR '1'='1",
]


@pytest.fixture
def canary() -> Iterator[Path]:
    """A file nothing may create; its folder is writable by everyone (root here, postgres on the server)."""
    CANARY_DIR.mkdir(mode=0o777, exist_ok=True)
    CANARY_DIR.chmod(0o777)
    CANARY.unlink(missing_ok=True)
    yield CANARY
    assert not CANARY.exists(), "a hostile name ran a command"


@pytest.mark.parametrize("payload", HOSTILE, ids=[f"p{i}" for i in range(len(HOSTILE))])
def test_hostile_names_are_data_everywhere(sandbox: SandboxHandle, canary: Path, payload: str) -> None:
    """A hostile database name and label go through backup, restore --into and restore --in-place:
    all work, nothing runs."""
    database = payload[:40]
    sandbox.admin.psql('CREATE DATABASE :"n"', "postgres", extra=["-v", f"n={database}"])
    backup_dir = Path(sandbox.state.root) / "backups" / f"hostile-{secrets.token_hex(3)}"
    into = f"{payload[:30]}_into"
    try:
        with sandbox.remote(database, backup_dir=str(backup_dir)) as r:
            r.psql("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')")
            taken = create_backup(r, label=payload, now=T0)
            r.psql("UPDATE t SET v = 'after'")
            into_result = restore_backup(r, taken.name, into=into)
            assert into_result.database == into and q(r, "SELECT v FROM t", into) == "before"
            replaced = restore_in_place(r, taken.name, now=T0 + timedelta(minutes=1))
            assert q(r, "SELECT v FROM t") == "before"
            assert replaced.old_database_kept and q(r, "SELECT v FROM t", replaced.old_database_kept) == "after"
            assert database_state(sandbox, database) == "true:-1"
            assert replaced.pre_restore_backup is not None and replaced.pre_restore_backup.name in {
                b.name for b in list_backups(r)
            }
            drop_database(sandbox, replaced.old_database_kept)
    finally:
        drop_database(sandbox, into)
        drop_database(sandbox, database)
    assert not canary.exists(), f"payload {payload!r} ran a command"


def test_hostile_backup_names_are_refused_before_the_server(
    sandbox: SandboxHandle, fresh_db: str, canary: Path
) -> None:
    with sandbox.remote(fresh_db) as r:
        for payload in HOSTILE:
            for call in (
                lambda p=payload: verify_backup(r, p),
                lambda p=payload: restore_backup(r, p, into="x_hostile"),
                lambda p=payload: restore_in_place(r, p + ".dump"),
            ):
                with pytest.raises(OpsagentError):
                    call()
    assert not canary.exists()


# ---------------------------------------------------------------- 3. concurrency and interruption


def _dotfiles(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


@pytest.mark.parametrize("same_now", [False, True], ids=["clock", "same-millisecond"])
def test_three_backups_at_once_all_succeed(sandbox: SandboxHandle, fresh_db: str, same_now: bool) -> None:
    backup_dir = Path(sandbox.state.root) / "backups" / f"{fresh_db}-conc-{int(same_now)}"
    with sandbox.remote(fresh_db) as r:
        r.psql("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    start = threading.Barrier(3)
    results: list[object] = []

    def one() -> None:
        with sandbox.remote(fresh_db, backup_dir=str(backup_dir), keep_backups=10) as mine:
            start.wait()
            try:
                results.append(create_backup(mine, "same", now=T0 if same_now else None))
            except OpsagentError as exc:
                results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [type(x).__name__ for x in results] == ["BackupResult"] * 3, results
    names = {x.name for x in results}  # type: ignore[attr-defined]
    assert len(names) == 3
    with sandbox.remote(fresh_db, backup_dir=str(backup_dir)) as r:
        listed = list_backups(r)
        assert {b.name for b in listed} == names and all(b.verified for b in listed)
        for name in names:
            verify_backup(r, name)
    assert _dotfiles(backup_dir) == []


def _pg_dump_pids(database: str) -> list[int]:
    """pg_dump processes on this machine (the sandbox server) whose command line names ``database``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pg_dump") and any(database.encode() in a for a in argv):
            found.append(int(entry.name))
    return found


def _start_cli(project: Project, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml"), "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "opsagent", *args],
        cwd=project.root,
        env=env,
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _until(check: Callable[[], bool], timeout: float, what: str, seen: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what} {seen()}"
        time.sleep(0.05)


def q_list(sandbox: SandboxHandle) -> str:
    return sandbox.admin.psql(
        "SELECT string_agg(datname || '=' || datallowconn, ' ') FROM pg_database", "postgres", extra=["-A", "-t"]
    ).text.strip()


def sessions(sandbox: SandboxHandle) -> str:
    return sandbox.admin.psql(
        "SELECT string_agg(coalesce(datname, '-') || '/' || application_name || '/' || state || '/'"
        " || coalesce(wait_event, '-') || '/' || left(query, 60), ' | ') FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        "postgres",
        extra=["-A", "-t"],
    ).text.strip()


@pytest.mark.parametrize(
    ("phase", "how"),
    [("dumping", signal.SIGINT), ("waiting-for-a-lock", signal.SIGINT), ("dumping", signal.SIGKILL)],
    ids=["ctrl-c-dumping", "ctrl-c-lock-wait", "client-killed-dumping"],
)
def test_ctrl_c_during_backup_stops_pg_dump_and_leaves_nothing(
    project: Project, sandbox: SandboxHandle, phase: str, how: signal.Signals
) -> None:
    database = project.host.database
    backup_dir = Path(project.host.backup_dir)
    holder = None
    if phase == "dumping":  # big enough for pg_dump to run several seconds
        project.psql(
            "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS t "
            "FROM generate_series(1, 1500000) g"
        )
    else:  # pg_dump waits (up to lock_timeout, 10 s by default) behind a session holding an exclusive lock
        project.psql("CREATE TABLE locked (id int)")
        holder = subprocess.Popen(
            local_psql(sandbox, database), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("BEGIN; LOCK locked; SELECT 'locked';\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"
    try:
        cli = _start_cli(project, "backup", "--host", "sandbox")
        _until(
            lambda: (
                _pg_dump_pids(database)
                and (
                    phase != "dumping"
                    or any(p.name.endswith(".partial") and p.stat().st_size > 0 for p in backup_dir.iterdir())
                )
            ),
            60,
            "pg_dump to start",
        )
        time.sleep(0.3)
        assert cli.poll() is None, "the backup ended before it could be interrupted"
        started = time.monotonic()
        cli.send_signal(how)
        _, stderr = cli.communicate(timeout=10)
        returned = time.monotonic() - started
        print(f"\n{how.name} during backup ({phase}): CLI returned in {returned:.2f}s, exit {cli.returncode}")
        if how == signal.SIGINT:
            assert returned < 2.0 and cli.returncode == 130, stderr
            assert "Traceback" not in stderr
        _until(lambda: not _pg_dump_pids(database), 5, "pg_dump to stop on the server")
        # removed by the server script's exit trap: seconds on a loaded machine
        _until(lambda: _dotfiles(backup_dir) == [], 15, "temporary files to be removed")
        assert [p.name for p in backup_dir.iterdir()] == []  # no half backup under its final name either
    finally:
        if holder is not None:
            end(holder)


# ---------------------------------------------------------------- 5. truncated backup without .meta


def test_truncated_backup_without_meta_is_refused_before_any_restore(sandbox: SandboxHandle, fresh_db: str) -> None:
    backup_dir = Path(sandbox.state.root) / "backups" / fresh_db
    with sandbox.remote(fresh_db, backup_dir=str(backup_dir)) as r:
        r.psql("CREATE TABLE t AS SELECT g, md5(g::text) AS m FROM generate_series(1, 100000) g")
        taken = create_backup(r, now=T0)
        source = Path(taken.path)
        # a copy (as if copied by hand) cut at two thirds: its table of contents is intact, its data is not
        cut = backup_dir / backup_name(fresh_db, T0 + timedelta(minutes=1), "copied", unique="0c0c")
        cut.write_bytes(source.read_bytes()[: source.stat().st_size * 2 // 3])
        shutil.chown(cut, "postgres", "postgres")
        cut.chmod(0o600)
        assert (
            subprocess.run(["pg_restore", "--list", str(cut)], capture_output=True, check=False).returncode == 0
        )  # --list alone is fooled
        whole = backup_dir / backup_name(fresh_db, T0 + timedelta(minutes=2), "whole-copy", unique="0d0d")
        shutil.copy2(source, whole)
        shutil.chown(whole, "postgres", "postgres")
        assert (
            verify_backup(r, whole.name).recorded_sha256 is None
        )  # an intact file without .meta still verifies (full read)

        with pytest.raises(BackupError) as info:
            verify_backup(r, cut.name)
        assert info.value.reason == "verify" and "damaged" in info.value.message
        with pytest.raises(BackupError, match="damaged"):
            restore_backup(r, cut.name, into=f"{fresh_db}_cut")
        assert database_state(sandbox, f"{fresh_db}_cut") == ""
        with pytest.raises(BackupError, match="damaged"):
            restore_in_place(r, cut.name, now=T0 + timedelta(minutes=3))
        assert q(r, "SELECT count(*) FROM t") == "100000"
        assert database_state(sandbox, fresh_db) == "true:-1"
        leftovers = q(
            sandbox.admin, f"SELECT count(*) FROM pg_database WHERE datname LIKE '{fresh_db}\\_%'", "postgres"
        )
        assert leftovers == "0"
        assert _dotfiles(backup_dir) == []


# ---------------------------------------------------------------- the closed database is always reopened


def test_failed_swap_reopens_the_live_database(sandbox: SandboxHandle, fresh_db: str) -> None:
    backup_dir = Path(sandbox.state.root) / "backups" / fresh_db
    when = T0 + timedelta(minutes=7)
    with sandbox.remote(fresh_db, backup_dir=str(backup_dir)) as r:
        r.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        taken = create_backup(r, now=T0)
        r.psql("INSERT INTO t VALUES (2)")
        sandbox.admin.psql(f"ALTER DATABASE {fresh_db} CONNECTION LIMIT 25", "postgres")
        blocker = f"{fresh_db}_replaced_20261124_103700"  # the name the replaced database would get: the rename fails
        sandbox.admin.psql(f'CREATE DATABASE "{blocker}"', "postgres")
        try:
            with pytest.raises(BackupError) as info:
                restore_in_place(r, taken.name, now=when)
            assert info.value.reason == "swap" and "unchanged" in info.value.message
            assert database_state(sandbox, fresh_db) == "true:25"
            assert q(r, "SELECT count(*) FROM t") == "2"
            leftovers = q(
                sandbox.admin,
                f"SELECT count(*) FROM pg_database WHERE datname LIKE '{fresh_db}\\_opsagent%'",
                "postgres",
            )
            assert leftovers == "0"
            assert _dotfiles(backup_dir) == []
        finally:
            drop_database(sandbox, blocker)


def test_client_killed_while_the_database_is_closed_reopens_it(project: Project, sandbox: SandboxHandle) -> None:
    """The client vanishes (SIGKILL) while the database is closed: the server script alone reopens it.

    A session waits for the database to be closed, then takes a SHARE lock on pg_database: the
    swap's renames (and any reopening) must wait for it.  The client is killed meanwhile; once the
    lock is released the database must be open again, untouched, without the temporary database.
    """
    database = project.host.database
    project.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
    taken = project.run("backup", "--host", "sandbox")
    assert taken.returncode == 0, taken.stderr
    holder = _hold_pg_database_once_closed(sandbox, database)
    assert holder.stdout is not None
    try:
        cli = _start_cli(project, "restore", "--host", "sandbox", "--latest", "--in-place", "--yes")
        assert holder.stdout.readline().strip() == "held"
        time.sleep(0.5)
        assert cli.poll() is None, cli.communicate()
        assert database_state(sandbox, database).startswith("false")
        cli.kill()
        cli.wait()
        # the server script notices the closed channel and waits, in its trap, to reopen; held past the
        # transport watchdog's SIGKILL (~3 s after the channel is lost), which must not reach the trap
        time.sleep(4.0)
    finally:
        end(holder)
    _until(
        lambda: database_state(sandbox, database) == "true:-1",
        10,
        "the database to be reopened by the server script",
        lambda: (
            f"state {database_state(sandbox, database)!r}; databases {q_list(sandbox)}; sessions {sessions(sandbox)}"
        ),
    )
    assert project.psql("SELECT count(*) FROM t").strip() == "1"
    _until(lambda: q_count(sandbox, f"{database}\\_opsagent%") == "0", 10, "the temporary database to be dropped")
    assert q_count(sandbox, f"{database}\\_replaced%") == "0"
    assert _dotfiles(Path(project.host.backup_dir)) == []


def _sessions_of_commands_naming(word: str) -> set[int]:
    """The session ids of the processes whose command line holds ``word``, except PostgreSQL's own: a backend's
    title names its database, and its session is the server's (killing it killed the cluster's backends: "terminating
    connection because of crash of another server process", seen on a loaded run).  A process gone meanwhile is
    skipped."""
    found = subprocess.run(["pgrep", "-f", word], capture_output=True, text=True, check=False).stdout.split()
    sessions: set[int] = set()
    for pid in found:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                continue
            sessions.add(os.getsid(int(pid)))
        except (OSError, ProcessLookupError):
            continue
    return sessions - {os.getsid(0)}


def _restore_with_its_swap_blocked(
    sandbox: SandboxHandle, remote: Remote, name: str, when: datetime, fault: Callable[[], None], **kwargs: Any
) -> object:
    """An in-place restore of ``name`` on a thread; once its swap waits for a lock on pg_database, ``fault()``
    strikes, then the lock is released.  What the restore returned or raised."""
    outcome: list[object] = []

    def restore() -> None:
        try:
            outcome.append(restore_in_place(remote, name, now=when, **kwargs))
        except BaseException as exc:
            outcome.append(exc)

    holder = _hold_pg_database_once_closed(sandbox, remote.host.database)
    assert holder.stdout is not None
    worker = threading.Thread(target=restore)
    try:
        worker.start()
        assert holder.stdout.readline().strip() == "held"
        time.sleep(0.5)  # the swap now waits for the lock
        fault()
        time.sleep(1.0)
    finally:
        end(holder)
    worker.join(120)
    assert len(outcome) == 1, outcome
    return outcome[0]


def test_a_restore_script_killed_during_its_swap_is_found_out_not_guessed(
    sandbox: SandboxHandle, fresh_db: str
) -> None:
    """The server script dies by SIGKILL (no trap runs) while its swap waits for a lock on pg_database.  It ends
    without a word.  Depending on how much of the swap had reached the server, it commits once the lock is free or
    dies with its psql; the restore reads which from the server and says that: restored (the replaced database
    kept, still closed, its backup not confirmed) or not replaced (still closed, the temporary database left)."""
    backup_dir = Path(sandbox.state.root) / "backups" / fresh_db
    when = T0 + timedelta(minutes=9)
    temporary = derived_database_name(fresh_db, "opsagent_swap", when)
    old = derived_database_name(fresh_db, "replaced", when)
    with sandbox.remote(fresh_db, backup_dir=str(backup_dir)) as r:
        r.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        taken = create_backup(r, now=T0)
        r.psql("INSERT INTO t VALUES (2)")

        def kill_the_script() -> None:
            sessions_of_script = _sessions_of_commands_naming(temporary)
            assert sessions_of_script, "the restore script is not running"
            for sid in sessions_of_script:
                subprocess.run(["pkill", "-KILL", "-s", str(sid)], check=False)

        result = _restore_with_its_swap_blocked(sandbox, r, taken.name, when, kill_the_script)
    try:
        if database_state(sandbox, old):  # the swap had reached the server whole: it committed without the script
            assert isinstance(result, RestoreResult) and result.old_database_kept == old, result
            assert database_state(sandbox, old).startswith("false")  # no trap ran to reopen it
            error = str(result.pre_restore_backup_error)
            assert "not confirmed" in error and f"{old} is closed to connections" in error, error
            assert "ALLOW_CONNECTIONS true" in error
            assert database_state(sandbox, fresh_db).startswith("true")  # the restored database, open
            assert q(sandbox.admin, "SELECT count(*) FROM t", fresh_db) == "1"  # the backup's contents
        else:  # it died with its psql: nothing replaced, and no trap ran to reopen the live database
            assert isinstance(result, BackupError) and result.reason == "not_swapped", result
            assert database_state(sandbox, fresh_db).startswith("false")
            assert "was not replaced but is still closed to connections" in result.message
            assert f"temporary database {temporary} is left" in result.message
            assert result.hint is not None and "ALLOW_CONNECTIONS true" in result.hint
            sandbox.admin.psql(f'ALTER DATABASE "{fresh_db}" ALLOW_CONNECTIONS true', "postgres")
            assert q(sandbox.admin, "SELECT count(*) FROM t", fresh_db) == "2"  # untouched
    finally:
        sandbox.admin.psql(f'ALTER DATABASE "{fresh_db}" ALLOW_CONNECTIONS true', "postgres")
        drop_database(sandbox, old)
        drop_database(sandbox, temporary)


def test_a_restore_whose_connection_is_lost_during_its_swap_finds_out_over_a_new_one(
    sandbox: SandboxHandle, fresh_db: str
) -> None:
    """The SSH connection dies (its sshd process killed) while the swap waits for a lock on pg_database.  The script
    runs on in its own session until its heartbeat finds the client gone; the restore opens a new connection,
    waits for the server to settle and reports what pg_database then holds, never "unknown"."""
    from .test_sync import _sshd_children

    backup_dir = str(Path(sandbox.state.root) / "backups" / fresh_db)
    when = T0 + timedelta(minutes=11)
    old, temporary = (derived_database_name(fresh_db, kind, when) for kind in ("replaced", "opsagent_swap"))
    with sandbox.remote(fresh_db, backup_dir=backup_dir) as setup:
        setup.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        taken = create_backup(setup, now=T0)
    before = _sshd_children(sandbox)
    with sandbox.remote(fresh_db, backup_dir=backup_dir) as r:
        (ours,) = _sshd_children(sandbox) - before
        reconnect = lambda: sandbox.remote(fresh_db, backup_dir=backup_dir)  # noqa: E731
        result = _restore_with_its_swap_blocked(
            sandbox, r, taken.name, when, lambda: os.kill(ours, signal.SIGKILL), reconnect=reconnect
        )
    try:
        swapped = database_state(sandbox, old) != ""
        assert database_state(sandbox, fresh_db).startswith("true")  # settled: open again, whichever way it went
        if swapped:
            assert isinstance(result, RestoreResult) and result.old_database_kept == old, result
            assert "not confirmed" in str(result.pre_restore_backup_error)
        else:
            assert isinstance(result, BackupError) and result.reason == "not_swapped", result
            assert "still closed" not in result.message
    finally:
        drop_database(sandbox, old)
        drop_database(sandbox, temporary)


@pytest.mark.parametrize("state", ["swapped", "closed, not swapped", "open, not swapped", "unreadable"])
def test_where_an_in_place_restore_stopped_is_read_from_the_server(
    sandbox: SandboxHandle, fresh_db: str, state: str
) -> None:
    """What an in-place restore says when its script ended without a word is what pg_database holds."""
    from opsagent.backup import _confirm_swapped

    old, temporary = f"{fresh_db}_replaced_x", f"{fresh_db}_opsagent_swap_x"
    try:
        if state == "swapped":
            sandbox.admin.psql(f'CREATE DATABASE "{old}" WITH ALLOW_CONNECTIONS false', "postgres")
        if state.startswith("closed"):
            sandbox.admin.psql(f'CREATE DATABASE "{temporary}"', "postgres")
            sandbox.admin.psql(f'ALTER DATABASE "{fresh_db}" ALLOW_CONNECTIONS false', "postgres")
        overrides = {"pg_port": 1} if state == "unreadable" else {}
        with sandbox.remote(fresh_db, **overrides) as r:
            if state == "swapped":
                assert f"{old} is closed to connections" in _confirm_swapped(r, "b", old, temporary, "cut")
                return
            with pytest.raises(BackupError) as info:
                _confirm_swapped(r, "b", old, temporary, "cut")
        error = info.value
        if state == "unreadable":
            assert error.reason == "unknown" and "its outcome is unknown" in error.message
        elif state.startswith("closed"):
            assert error.reason == "not_swapped" and "not replaced but is still closed" in error.message
            assert f"temporary database {temporary} is left" in error.message
            assert error.hint is not None and "ALLOW_CONNECTIONS true" in error.hint
        else:
            assert error.reason == "not_swapped" and error.message.endswith("was not replaced")
            assert error.hint == "rerun it"
    finally:
        sandbox.admin.psql(f'ALTER DATABASE "{fresh_db}" ALLOW_CONNECTIONS true', "postgres")
        drop_database(sandbox, old)
        drop_database(sandbox, temporary)


def _hold_pg_database_once_closed(sandbox: SandboxHandle, database: str) -> subprocess.Popen[str]:
    """A local psql that waits for ``database`` to be closed, then takes a SHARE lock on pg_database (the swap's
    renames and any reopening wait for it) and prints ``held``."""
    holder = subprocess.Popen(local_psql(sandbox, "postgres"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write(
        "BEGIN; DO $$ BEGIN LOOP EXIT WHEN NOT (SELECT datallowconn FROM pg_database WHERE datname = "
        f"'{database}'); PERFORM pg_sleep(0.001); END LOOP; END $$; LOCK pg_database IN SHARE MODE; "
        "SELECT 'held';\n"
    )
    holder.stdin.flush()
    return holder


def q_count(sandbox: SandboxHandle, pattern: str) -> str:
    return sandbox.admin.psql(
        "SELECT count(*) FROM pg_database WHERE datname LIKE :'p'", "postgres", extra=["-A", "-t", "-v", f"p={pattern}"]
    ).text.strip()


# ---------------------------------------------------------------- the confirmation names the sessions


def test_confirmation_names_the_sessions_it_will_terminate() -> None:
    import io

    from opsagent.backup import Session
    from opsagent.cli import backup as cli
    from opsagent.cli.environment import Environment
    from opsagent.inventory import HostConfig

    sessions = [
        Session(11, "app", "billing", "idle", "10.0.0.5"),
        Session(12, "app", "billing", "active", "10.0.0.6"),
        Session(13, "app", "[red]worker[/]", "idle", "local"),
        Session(14, "postgres", "", "idle", "local"),
    ]
    assert (
        cli.describe_sessions(sessions)
        == "4 sessions will be terminated ([red]worker[/], billing, 1 without an application name)"
    )
    assert cli.describe_sessions([]) == "no sessions are connected"
    stderr = io.StringIO()
    env = Environment(stdout=io.StringIO(), stderr=stderr, stdin=io.StringIO("trad\n"), stdin_isatty=True)
    cli._confirm(
        env,
        HostConfig(name="prod", address="x", database="trad"),
        "trad-20261124T103000.000Z-beef.dump",
        False,
        sessions,
    )
    shown = stderr.getvalue()
    assert "4 sessions will be terminated ([red]worker[/], billing, 1 without an application name)" in shown.replace(
        "\n", " "
    )


def test_cli_in_place_reports_sessions_and_the_kept_database(project: Project, sandbox: SandboxHandle) -> None:
    import json

    project.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
    assert project.run("backup", "--host", "sandbox").returncode == 0
    project.psql("INSERT INTO t VALUES (2)")
    app = subprocess.Popen(
        local_psql(sandbox, project.host.database),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PGAPPNAME": "billing-api"},
    )
    assert app.stdin is not None and app.stdout is not None
    try:
        app.stdin.write("SELECT 'in';\n")
        app.stdin.flush()
        assert app.stdout.readline().strip() == "in"
        done = project.run("restore", "--host", "sandbox", "--latest", "--in-place", "--yes", "--json")
    finally:
        end(app)
    assert done.returncode == 0, done.stderr
    assert "1 session will be terminated (billing-api)" in done.stderr
    document = json.loads(done.stdout)
    kept = document["old_database_kept"]
    try:
        assert document["terminated_sessions"] == 1 and document["terminated_applications"] == ["billing-api"]
        assert (
            kept.startswith(f"{project.host.database}_replaced_")
            and f'DROP DATABASE \\"{kept}\\"' not in document["drop_hint"]
        )
        assert document["drop_hint"] == f"inv psql --host sandbox -c 'DROP DATABASE \"{kept}\"'"
        assert document["pre_restore_backup"]["label"] == "pre-restore" and document["pre_restore_backup_error"] is None
        assert project.psql("SELECT count(*) FROM t").strip() == "1"
    finally:
        drop_database(sandbox, kept)


def test_the_canary_would_catch_a_command_run_as_the_become_user(sandbox: SandboxHandle) -> None:
    """The hostile-name tests can fail: the server user (postgres) can create the canary, so an injection would show."""
    CANARY_DIR.mkdir(mode=0o777, exist_ok=True)
    CANARY_DIR.chmod(0o777)
    CANARY.unlink(missing_ok=True)
    sandbox.admin.run(["sh", "-c", f"touch {CANARY}"])  # runs as become (postgres), like an injected command would
    assert CANARY.exists()
    CANARY.unlink()


def test_a_restore_script_still_busy_on_the_server_is_an_unknown_outcome(
    sandbox: SandboxHandle, fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session of the script still runs (it may yet commit the swap): what pg_database says now is not the end,
    so it is not reported; the outcome is unknown, said so, once the wait is over."""
    import opsagent.backup as backup

    mine, another = backup.restore_appname(Markers()), backup.restore_appname(Markers())
    # another's pass must not wait: a long settle time, so two loaded round trips never pass for a wait
    for session, expected, settle in ((another, "not_swapped", 30.0), (mine, "unknown", 3.0)):
        monkeypatch.setattr(backup, "SETTLE_S", settle)
        with sandbox.remote(fresh_db) as r:
            busy = r.start(r.psql_argv("postgres", ["-A", "-t", "-f", "-"]))
            busy.write(f"SET application_name = '{session}';\n\\echo ready\n")
            assert busy.read_line(30) == "ready"
            started = time.monotonic()
            try:
                with pytest.raises(BackupError) as info:
                    backup._found_out(r, None, "b", f"{fresh_db}_replaced_x", f"{fresh_db}_swap_x", "cut", mine)
            finally:
                busy.close_stdin()
                busy.close()
        assert info.value.reason == expected, (session, info.value.message)
        if session == another:  # a concurrent restore of another database: not waited for, and not this outcome
            assert time.monotonic() - started < 15.0 and "was not replaced" in info.value.message
        else:
            assert "still busy with it 3s later" in info.value.message
