"""Backups and restores of a host's database, done on the server.

A backup is ``pg_dump -Fc`` run as the become user into ``backup_dir`` on the
server.  Each operation is ONE remote shell script (round trips cost ~0.2 s and
a half-done step must clean up after itself on the server, not from here): the
script reports back with marker lines (``remote/markers.py``: ``<key> <values>`` after the
script's random token) on stderr, so stdout stays free for the binary dump when it is
streamed down at the same time (else it carries the progress markers, read live).

Next to every verified ``NAME.dump`` lives ``NAME.dump.meta`` (sha256 and size,
written only after ``pg_restore --list`` accepted the dump): listings can then
tell a verified backup from a damaged or foreign file without reading it.

Rules every script here keeps (the server is production):

- names are data, never code: database names reach psql only as ``-v`` variables
  (psql quotes them itself with ``:'name'`` / ``:"name"``), pg_dump/pg_restore/psql
  only as quoted ``dbname='…'`` conninfo values, the shell only through
  ``shlex.quote``d assignments; no SQL text is built from a name, no heredoc is used;
- a script stops its own work when it is interrupted or its client is gone (a
  watchdog notices the closed SSH channel), cleans up only the files it created
  (unique per run) and, for an in-place restore, always reopens the database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import secrets
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import resources
from .errors import OpsagentError, UsageError
from .inventory import HostConfig
from .remote.markers import Marker, Markers
from .remote.transport import CommandResult, Remote, conninfo_dbname
from .sqlquote import ident
from .units import human_bytes

TIMESTAMP = "%Y%m%dT%H%M%S"
DB_TIMESTAMP = "%Y%m%d_%H%M%S"
# <db>-<YYYYmmddTHHMMSS>.<ms>Z-<4 hex>[-label].dump; names from before milliseconds (<db>-<…>Z[-label].dump) still parse
_NAME_RE = re.compile(
    r"^(?P<db>[A-Za-z0-9._-]+)-(?P<ts>\d{8}T\d{6})(?:\.(?P<ms>\d{3})Z-(?P<unique>[0-9a-f]{4})|Z)"
    r"(?:-(?P<label>[A-Za-z0-9._-]+))?\.dump$"
)
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*\.dump$")
_MAX_IDENT = 63  # PostgreSQL truncates longer names (NAMEDATALEN - 1 bytes)
ProgressCallback = Callable[[int, int | None], None]
"""Bytes done so far and the total when known (downloads; a dump growing on the server: total None)."""
PhaseCallback = Callable[[str], None]
"""The step a remote script has started (``verifying``, ``restoring``, ``swapping``...)."""
SIZE_EVERY = 1.0
"""Seconds between two reports of a dump's size while it is written on the server."""


class BackupError(OpsagentError):
    """A backup, download or restore failed (the server is left as it was)."""

    def __init__(self, message: str, *, reason: str = "failed", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


@dataclasses.dataclass
class BackupResult:
    """One backup just taken and verified on the server."""

    name: str
    path: str
    size_bytes: int
    sha256: str
    verified: bool
    created_at: datetime
    label: str | None
    database_bytes: int = 0
    deleted_by_retention: list[str] = dataclasses.field(default_factory=list)
    remote_commands: int = 0
    local_path: Path | None = None


@dataclasses.dataclass
class BackupInfo:
    """One backup file found in ``backup_dir``."""

    name: str
    size_bytes: int
    created_at: datetime
    label: str | None
    verified: bool
    sha256: str | None

    def age_seconds(self, now: datetime | None = None) -> float:
        return ((now or datetime.now(UTC)) - self.created_at).total_seconds()


@dataclasses.dataclass
class DownloadResult:
    """A backup copied to this machine and checked against the server's copy."""

    name: str
    local_path: Path
    size_bytes: int
    sha256: str
    remote_commands: int = 0


@dataclasses.dataclass
class VerifyResult:
    """Whether the server's copy of a backup is intact."""

    name: str
    size_bytes: int
    sha256: str
    recorded_sha256: str | None


@dataclasses.dataclass
class Session:
    """A client session connected to a database (what an in-place restore terminates)."""

    pid: int
    user: str
    application: str
    state: str
    client: str


@dataclasses.dataclass
class RestoreResult:
    """What a restore did: where the data went and how it compares to the live database."""

    backup: str
    database: str  # the database that now holds the backup's contents
    in_place: bool
    restored_counts: dict[str, int]
    live_counts: dict[str, int] | None  # new-database restores: the untouched live database
    # in-place: backup of the replaced database, taken while nothing could write to it
    pre_restore_backup: BackupResult | None = None
    old_database_kept: str | None = None  # in-place: the replaced database, renamed and kept until the user drops it
    drop_hint: str | None = None  # in-place: how to drop the kept database once it is no longer needed
    terminated_sessions: int = 0  # in-place: sessions ended when the live database was closed
    terminated_applications: list[str] = dataclasses.field(default_factory=list)
    # in-place: the backup of the replaced database failed (it is still kept)
    pre_restore_backup_error: str | None = None
    remote_commands: int = 0


# ---------------------------------------------------------------- names


def sanitize_label(label: str | None) -> str | None:
    """Labels become part of a file name: keep [A-Za-z0-9._-], at most 40 characters."""
    if label is None:
        return None
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", label.strip()).strip("-.")[:40].strip("-.")
    return cleaned or None


def file_prefix(database: str) -> str:
    """The database part of a backup name (safe in a path and a grep pattern)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", database) or "db"


def backup_name(database: str, when: datetime, label: str | None = None, unique: str | None = None) -> str:
    """``<db>-<UTC timestamp with ms>Z-<4 hex>[-label].dump``: names sort by time and two runs never share one.

    ``unique`` (4 lowercase hex digits) is random unless given: backups started in the
    same millisecond (two clients, or the same fixed ``now``) still get distinct names.
    """
    moment = when.astimezone(UTC)
    tag = unique if unique is not None else secrets.token_hex(2)
    if not re.fullmatch(r"[0-9a-f]{4}", tag):
        raise ValueError(f"unique tag {tag!r} must be 4 lowercase hex digits")
    clean = sanitize_label(label)
    stamp = f"{moment.strftime(TIMESTAMP)}.{moment.microsecond // 1000:03d}Z"
    return f"{file_prefix(database)}-{stamp}-{tag}" + (f"-{clean}" if clean else "") + ".dump"


def parse_name(name: str) -> tuple[str, datetime, str | None] | None:
    """(database prefix, created_at, label) of a backup name, None for foreign files."""
    match = _NAME_RE.match(name)
    if not match:
        return None
    when = datetime.strptime(match["ts"], TIMESTAMP).replace(tzinfo=UTC, microsecond=int(match["ms"] or 0) * 1000)
    return match["db"], when, match["label"]


def check_name(name: str) -> str:
    """Refuse names that could escape backup_dir or are not dumps."""
    if "/" in name or not _SAFE_NAME_RE.match(name):
        raise UsageError(
            f"invalid backup name {name!r}: expected a file name like "
            "<db>-20261124T103000.000Z-1a2b.dump (see 'inv backups')"
        )
    return name


def restore_database_name(database: str, when: datetime, kind: str = "restore") -> str:
    """``<db>_restore_<timestamp>``; refuses names PostgreSQL would truncate."""
    name = f"{database}_{kind}_{when.astimezone(UTC).strftime(DB_TIMESTAMP)}"
    if len(name.encode()) > _MAX_IDENT:
        raise UsageError(f"database name {name!r} is longer than {_MAX_IDENT} bytes; choose one with --into")
    return name


def derived_database_name(database: str, kind: str, when: datetime) -> str:
    """``<db>_<kind>_<timestamp>``, the database part shortened (on a character boundary) to fit 63 bytes.

    Used for the names an in-place restore invents (the temporary and the replaced
    database): a long live name must not make the restore impossible.
    """
    suffix = f"_{kind}_{when.astimezone(UTC).strftime(DB_TIMESTAMP)}"
    room = _MAX_IDENT - len(suffix.encode())
    head = database.encode()[:room].decode("utf-8", errors="ignore")
    return head + suffix


def _grep_pattern(database: str) -> str:
    """Backup names of this database, old (…Z) and new (….mmmZ-xxxx) forms, for ``grep -E`` on the server."""
    return "^" + file_prefix(database) + r"-[0-9]{8}T[0-9]{6}([.][0-9]{3}Z-[0-9a-f]{4}|Z)(-[A-Za-z0-9._-]+)?[.]dump$"


# ---------------------------------------------------------------- script pieces (opsagent/scripts, opsagent/sql)

# Shell: every piece's header says what it does.  A script is the prelude, the assignments (every name a
# quoted shell value), the SQL helper, the watchdog, then the parts of one operation (see ``_script``).
_PRELUDE = resources.script("backup_prelude")
_WATCHDOG = resources.script("backup_watchdog")
_SQL_HELPER = resources.script("backup_sql_helper")
_ENSURE_DIR = resources.script("backup_ensure_dir")
_BACKUP = resources.script("backup_dump")
_LIST = resources.script("backup_list")
_VERIFY = resources.script("backup_verify")
_STREAM = resources.script("backup_stream")
_RESTORE = resources.script("restore_into")
_LIVE_COUNTS = resources.script("restore_live_counts")
_SWAP = resources.script("restore_swap")
_SPACE_CHECK = resources.script("restore_space_check")
_SAFETY_BACKUP_PREFIX = resources.script("restore_safety_backup")
_DONE = resources.script("restore_done")

# SQL: fixed text; names come from psql variables (:'live', :"target", ...), never from Python.
COUNTS_SQL = resources.sql("restore_counts")
CREATE_SQL = resources.sql("restore_create")
DROP_TARGET_SQL = 'DROP DATABASE IF EXISTS :"target" WITH (FORCE);'
CARRY_OVER_SQL = resources.sql("restore_carry_over")
SETTINGS_SQL = "SELECT datallowconn::text || ' ' || datconnlimit FROM pg_database WHERE datname = :'live';"
CLOSE_SQL = 'ALTER DATABASE :"live" ALLOW_CONNECTIONS false;'
TERMINATE_SQL = resources.sql("restore_terminate")
SWAP_SQL = resources.sql("restore_swap")
REOPEN_SQL = resources.sql("restore_reopen")
SESSIONS_SQL = resources.sql("backup_sessions")


_fill = resources.fill


def _assign(**values: str) -> str:
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def _psql(remote: Remote, database: str) -> str:
    return shlex.join(["psql", "-X", "-q", *remote.pg_args(), *remote.db_args(database)])


def _pg_dump(remote: Remote, database: str) -> str:
    """pg_dump -Fc of ``database`` that gives up on a lock after the host's lock_timeout instead of queueing."""
    lock = remote.host.lock_timeout.strip()
    wait = ["--lock-wait-timeout", lock] if lock not in ("", "0") else []
    return shlex.join(["pg_dump", "-Fc", *wait, *remote.pg_args(), *remote.db_args(database)])


def restore_appname(mark: Markers) -> str:
    """The application name of one restore script's sessions (``backup_sql_helper.sh``): its markers' random token
    makes it this run's alone (a concurrent restore of another database has its own)."""
    return f"opsagent-restore-{mark.token}"


def _admin_db(database: str) -> str:
    return "template1" if database == "postgres" else "postgres"


def _script(remote: Remote, parts: list[str], values: dict[str, str], mark: Markers, *, watchdog: bool = True) -> str:
    """Prelude (its markers carry ``mark``'s token), assignments (every name a quoted shell value), SQL helper,
    watchdog, then the parts."""
    host = remote.host
    lock = re.sub(r"\s+", "", host.lock_timeout) or "0"
    defaults = {
        "live": host.database,
        "target": "",
        "old": "",
        "allowconn": "true",
        "connlimit": "-1",
        "lock_timeout": lock,
    }
    body = _fill(_PRELUDE, MARK=mark.sh_prefix()) + _assign(**{**defaults, **values})
    body += _fill(_SQL_HELPER, ADMIN_PSQL=_psql(remote, _admin_db(host.database)), RUN=mark.token)
    return body + (_WATCHDOG if watchdog else "") + "".join(parts)


# Why (restore_own_session.sh says more): the transport's watchdog ends with SIGKILL to the command's process
# group ~3 s after the channel is lost; an in-place restore still reopening the database must not be killed there.
_OWN_SESSION = resources.script("restore_own_session").rstrip("\n")  # a one-line ``sh -c`` program


def _as_become(remote: Remote, body: str, mark: Markers, *, ensure_dir: bool, own_session: bool = False) -> list[str]:
    """argv for one remote script: ``body`` runs as become, optionally after creating backup_dir.

    ``own_session``: the script runs in a session of its own (see ``_OWN_SESSION``).
    """
    shell = ["sh", "-c", _OWN_SESSION, "opsagent-script", body] if own_session else ["sh", "-c", body]
    inner = shlex.join([*remote.become_prefix(), *shell])
    if not ensure_dir:
        return ["sh", "-c", "cd / || exit 1\nexec " + inner]
    become = remote.host.become
    script = _fill(
        _ENSURE_DIR,
        DIR=shlex.quote(remote.host.backup_dir),
        SUDO=shlex.join(remote.become_prefix()),
        OWNER=shlex.join(["-o", become]) if become else "",
        INNER=inner,
        MARK=mark.sh_prefix(),
    )
    return ["sh", "-c", script]


def _markers(result: CommandResult, mark: Markers) -> tuple[list[list[str]], str]:
    """(the marker lines on stderr split into words, first other stderr line)."""
    marks: list[list[str]] = []
    other = ""
    for line in result.stderr.splitlines():
        marker = mark.parse(line)
        if marker is not None:
            marks.append(marker.words(3))
        elif line.strip() and not other:
            other = line.strip()
    return marks, other


def _run_script(
    remote: Remote,
    argv: list[str],
    what: str,
    mark: Markers,
    *,
    on_stdout: Callable[[bytes], None] | None = None,
) -> tuple[list[list[str]], str]:
    """Run a script; failures without an ``error`` marker (sudo, ssh) become CommandFailed."""
    result = remote.run(argv, become=False, check=False, on_stdout=on_stdout, capture=on_stdout is None)
    marks, other = _markers(result, mark)
    if result.exit_status != 0 and not any(m[0] in ("error", "backup_error") for m in marks):
        raise remote.failure([what], result)
    return marks, other


def _find(marks: list[list[str]], key: str) -> list[str] | None:
    for mark in marks:
        if mark[0] == key:
            return mark[1:]
    return None


# ---------------------------------------------------------------- backup


def _backup_part(remote: Remote, database: str) -> str:
    return _fill(_BACKUP, PSQL=_psql(remote, database), PG_DUMP=_pg_dump(remote, database))


def _backup_values(remote: Remote, name: str, *, stream: bool, protect: str, size_every: float = 0) -> dict[str, str]:
    """The script's variables; ``size_every`` 0: nobody listens, no size reports."""
    host = remote.host
    every = f"{max(size_every, 0.01):g}" if size_every > 0 else "0"
    return {
        "dir": host.backup_dir,
        "name": name,
        "keep": str(host.keep_backups),
        "pattern": _grep_pattern(host.database),
        "stream": "1" if stream else "0",
        "protect": protect,
        "size_every": every,
    }


class _ProgressLines:
    """Reads the ``size N`` / ``phase TEXT`` markers a script writes on its free stdout, live."""

    def __init__(self, mark: Markers, progress: ProgressCallback | None, on_phase: PhaseCallback | None) -> None:
        self.progress = progress
        self.on_phase = on_phase
        self.feed = mark.stream(self._marker).feed

    def _marker(self, marker: Marker) -> None:
        if marker.kind == "size" and marker.text.isdigit() and self.progress:
            self.progress(int(marker.text), None)
        elif marker.kind == "phase" and self.on_phase:
            self.on_phase(marker.text)


def _backup_result(
    remote: Remote,
    name: str,
    when: datetime,
    label: str | None,
    done: list[str],
    marks: list[list[str]],
    before: int,
    local: Path | None = None,
) -> BackupResult:
    host = remote.host
    size, sha, need = int(done[0]), done[1], int(done[2])
    deleted = [m[1] for m in marks if m[0] == "deleted" and len(m) > 1]
    return BackupResult(
        name=name,
        path=f"{host.backup_dir.rstrip('/')}/{name}",
        size_bytes=size,
        sha256=sha,
        verified=True,
        created_at=when,
        label=sanitize_label(label),
        database_bytes=need,
        deleted_by_retention=deleted,
        remote_commands=remote.command_count - before,
        local_path=local,
    )


def _moment(now: datetime | None) -> datetime:
    """Now (or ``now``) in UTC, to the millisecond (what a backup name records)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def create_backup(
    remote: Remote,
    label: str | None = None,
    *,
    now: datetime | None = None,
    download_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    protect: str = "",
    size_every: float = SIZE_EVERY,
) -> BackupResult:
    """Dump, verify and store a backup on the server in ONE remote command, then apply retention.

    With ``download_dir`` the dump is also streamed down while it is written (``tee``
    on the server), and the local copy is checked against the server's sha256.
    ``progress`` hears the bytes downloaded, or else the dump's size on the server every ``size_every`` seconds.
    Retention never deletes the new backup nor ``protect`` (a backup about to be restored).
    Raises ``BackupError`` (nothing half-written is left on either side) on failure;
    interrupted (Ctrl-C, lost connection), the server script stops pg_dump and removes its files.
    """
    host = remote.host
    when = _moment(now)
    name = backup_name(host.database, when, label)
    values = _backup_values(
        remote, name, stream=download_dir is not None, protect=protect, size_every=size_every if progress else 0
    )
    mark = Markers()
    body = _script(remote, [_backup_part(remote, host.database)], values, mark)
    before = remote.command_count
    sink = _LocalFile(download_dir / name, progress, None) if download_dir else None
    on_stdout = sink.write if sink else _ProgressLines(mark, progress, None).feed if progress else None
    try:
        argv = _as_become(remote, body, mark, ensure_dir=True)
        marks, other = _run_script(remote, argv, "backup", mark, on_stdout=on_stdout)
        error = _find(marks, "error")
        if error is not None:
            raise _backup_error(remote, error, other)
        done = _find(marks, "backup")
        if done is None or len(done) < 3:
            raise BackupError(f"{host.name}: backup script ended without a result ({other or 'no output'})")
        local = sink.finish(int(done[0]), done[1]) if sink else None
        if progress and not sink:  # the last size sample is up to size_every old: end on the stored size
            progress(int(done[0]), int(done[0]))
    finally:
        if sink:
            sink.discard()
    return _backup_result(remote, name, when, label, done, marks, before, local)


def _backup_error(remote: Remote, error: list[str], detail: str, database: str | None = None) -> BackupError:
    host = remote.host
    database = database or host.database
    code = error[0] if error else "failed"
    extra = f": {detail}" if detail else ""
    become = host.become or remote.connection.user
    messages = {
        "mkdir": (
            f"{host.name}: cannot create backup_dir {host.backup_dir}: neither {become} nor "
            f"{remote.connection.user} may create it",
            f"create it once: sudo install -d -m 700 -o {become} {host.backup_dir}",
        ),
        "notwritable": (
            f"{host.name}: backup_dir {host.backup_dir} is not writable by {become}",
            f"fix its owner: sudo chown {become} {host.backup_dir} && sudo chmod 700 {host.backup_dir}",
        ),
        "dbsize": (f"{host.name}: cannot read the size of database {database}{extra}", None),
        "df": (f"{host.name}: cannot read free space of {host.backup_dir}{extra}", None),
        "exists": (f"{host.name}: a backup with the same name already exists in {host.backup_dir}; retry", None),
        "pg_dump": (f"{host.name}: pg_dump of {database} failed{extra}", None),
        "write": (f"{host.name}: writing the backup to {host.backup_dir} failed{extra}", None),
        "verify": (
            f"{host.name}: the new backup did not verify (pg_restore --list failed{extra}); it was deleted",
            None,
        ),
        "stat": (f"{host.name}: cannot read the new backup's size{extra}", None),
        "checksum": (f"{host.name}: sha256sum of the new backup failed{extra}", None),
        "mv": (f"{host.name}: cannot move the new backup into place{extra}", None),
    }
    if code == "nospace" and len(error) >= 3:
        need, avail = int(error[1]), int(error[2])
        return BackupError(
            f"{host.name}: not enough space in {host.backup_dir}: database {database} is {human(need)}, "
            f"only {human(avail)} free; refusing to start the backup",
            reason="nospace",
            hint="free some space or lower keep_backups (old backups are removed only after a successful one)",
        )
    if code == "pg_dump" and "statement timeout" in detail:
        return BackupError(
            f"{host.name}: pg_dump of {database} could not lock its tables within lock_timeout "
            f"{host.lock_timeout}: another session holds an exclusive lock",
            reason=code,
            hint="find it in pg_stat_activity / pg_locks, or retry when it is done",
        )
    message, hint = messages.get(code, (f"{host.name}: backup failed ({code}){extra}", None))
    return BackupError(message, reason=code, hint=hint)


human = human_bytes  # kept for callers of the backup module


class _LocalFile:
    """A download in progress: written to ``NAME.partial``, hashed on the fly, renamed when it checks out."""

    def __init__(self, target: Path, progress: ProgressCallback | None, total: int | None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.target = target
        self.partial = target.with_name(target.name + ".partial")
        self.handle = self.partial.open("wb")
        self.partial.chmod(0o600)
        self.digest = hashlib.sha256()
        self.size = 0
        self.progress = progress
        self.total = total
        self.done = False

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)
        if self.progress:
            self.progress(self.size, self.total)

    def finish(self, size: int, sha256: str) -> Path:
        self.handle.close()
        local = self.digest.hexdigest()
        if self.size != size or local != sha256:
            raise BackupError(
                f"downloaded copy of {self.target.name} does not match the server's: {self.size} bytes "
                f"sha256 {local[:12]}…, server has {size} bytes sha256 {sha256[:12]}…; "
                "the local copy was deleted",
                reason="download",
            )
        self.partial.replace(self.target)
        self.done = True
        return self.target

    def discard(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        if not self.done:
            self.partial.unlink(missing_ok=True)


# ---------------------------------------------------------------- list, verify, download


def list_backups(remote: Remote) -> list[BackupInfo]:
    """Backups of the host's database in backup_dir, newest first (one remote command)."""
    host = remote.host
    mark = Markers()
    values = {"dir": host.backup_dir, "pattern": _grep_pattern(host.database)}
    body = _script(remote, [_LIST], values, mark, watchdog=False)
    result = remote.run(_as_become(remote, body, mark, ensure_dir=False), become=False, check=False)
    marks, other = _markers(result, mark)
    if _find(marks, "ok") is None:
        if _find(marks, "error") is None and result.exit_status != 0:
            raise remote.failure(["backup listing"], result)
        why = other or "permission denied"
        raise BackupError(f"{host.name}: cannot list {host.backup_dir} as {host.become}: {why}", reason="access")
    found: list[BackupInfo] = []
    for line in result.text.splitlines():
        parts = line.split("\t")
        parsed = parse_name(parts[0])
        if len(parts) < 3 or parsed is None:
            continue
        meta = dict(item.split("=", 1) for item in parts[2].split() if "=" in item)
        size = int(parts[1])
        verified = "sha256" in meta and meta.get("size") == str(size)
        found.append(BackupInfo(parts[0], size, parsed[1], parsed[2], verified, meta.get("sha256")))
    return found


def latest_backup(remote: Remote) -> BackupInfo:
    """The newest backup of the host's database."""
    found = list_backups(remote)
    if not found:
        raise BackupError(
            f"{remote.host.name}: no backups of {remote.host.database} in {remote.host.backup_dir}",
            reason="missing",
            hint=f"take one with: inv backup --host {remote.host.name}",
        )
    return found[0]


def verify_backup(remote: Remote, name: str) -> VerifyResult:
    """Check a stored backup: sha256 against the one recorded at backup time, then ``pg_restore --list``."""
    host = remote.host
    mark = Markers()
    body = _script(remote, [_VERIFY], {"dir": host.backup_dir, "name": check_name(name)}, mark)
    marks, other = _run_script(remote, _as_become(remote, body, mark, ensure_dir=False), "verify", mark)
    error = _find(marks, "error")
    if error is not None:
        raise _stored_error(remote, name, error, other)
    done = _find(marks, "verified") or []
    return VerifyResult(name, int(done[0]), done[1], None if done[2] == "-" else done[2])


def _stored_error(remote: Remote, name: str, error: list[str], detail: str) -> BackupError:
    host = remote.host
    code = error[0]
    if code == "missing":
        return BackupError(
            f"{host.name}: backup {name} not found in {host.backup_dir}",
            reason="missing",
            hint=f"see: inv backups --host {host.name}",
        )
    if code == "checksum":
        return BackupError(
            f"{host.name}: backup {name} is damaged: its sha256 no longer matches the one recorded when it was taken",
            reason="checksum",
        )
    if code == "unreadable":
        return BackupError(
            f"{host.name}: backup {name} is damaged: it has no recorded checksum (.meta) and "
            f"pg_restore cannot read it to the end ({detail or 'no detail'})",
            reason="verify",
        )
    if code == "verify":
        return BackupError(
            f"{host.name}: backup {name} is damaged: pg_restore --list failed ({detail or 'no detail'})",
            reason="verify",
        )
    return BackupError(f"{host.name}: backup {name}: {code} failed{': ' + detail if detail else ''}", reason=code)


def download_backup(
    remote: Remote, name: str, dest_dir: Path, *, progress: ProgressCallback | None = None
) -> DownloadResult:
    """Copy a backup to ``dest_dir/NAME`` through ``sudo -n -u <become> cat`` and check size and sha256.

    The login user may not read files owned by the become user; the file is never
    made readable to anyone else: it is streamed on the command's binary stdout,
    after one header line with the server's size and sha256 (so progress has a total).
    """
    host = remote.host
    mark = Markers()
    body = _script(remote, [_STREAM], {"dir": host.backup_dir, "name": check_name(name)}, mark, watchdog=False)
    sink = _LocalFile(dest_dir / name, progress, None)
    header = _Header(sink)
    before = remote.command_count
    try:
        result = remote.run(
            _as_become(remote, body, mark, ensure_dir=False),
            become=False,
            check=False,
            on_stdout=header.feed,
            capture=False,
        )
        marks, other = _markers(result, mark)
        error = _find(marks, "error")
        if error is not None:
            raise _stored_error(remote, name, error, other)
        if result.exit_status != 0 or header.meta is None:
            raise BackupError(
                f"{host.name}: copying {name} failed: {other or f'exit status {result.exit_status}'}", reason="download"
            )
        size, sha = header.meta
        path = sink.finish(size, sha)
    finally:
        sink.discard()
    return DownloadResult(name, path, size, sha, remote.command_count - before)


class _Header:
    """Splits ``<size> <sha256>\n`` off the front of a stream and passes the rest on."""

    def __init__(self, sink: _LocalFile) -> None:
        self.sink = sink
        self.buffer = b""
        self.meta: tuple[int, str] | None = None

    def feed(self, chunk: bytes) -> None:
        if self.meta is not None:
            self.sink.write(chunk)
            return
        self.buffer += chunk
        line, found, rest = self.buffer.partition(b"\n")
        if not found:
            return
        size, sha = line.decode().split()
        self.meta = (int(size), sha)
        self.sink.total = int(size)
        self.buffer = b""
        if rest:
            self.sink.write(rest)
        elif self.sink.progress:
            self.sink.progress(0, self.sink.total)


# ---------------------------------------------------------------- restore


def _sql_values() -> dict[str, str]:
    """The fixed SQL texts, handed to the script as shell variables (no name is ever part of them)."""
    return {
        "create_sql": CREATE_SQL,
        "drop_target_sql": DROP_TARGET_SQL,
        "counts_sql": COUNTS_SQL,
        "carry_over_sql": CARRY_OVER_SQL,
        "settings_sql": SETTINGS_SQL,
        "close_sql": CLOSE_SQL,
        "terminate_sql": TERMINATE_SQL,
        "swap_sql": SWAP_SQL,
        "reopen_sql": REOPEN_SQL,
    }


def _restore_part(remote: Remote, target: str) -> str:
    return _fill(_RESTORE, PGARGS=shlex.join(remote.pg_args()), PSQL_TARGET=_psql(remote, target))


def _restore_values(remote: Remote, name: str, target: str) -> dict[str, str]:
    host = remote.host
    return {
        "dir": host.backup_dir,
        "name": name,
        "target": target,
        "target_dsn": conninfo_dbname(target),
        "file": f"{host.backup_dir.rstrip('/')}/{name}",
        **_sql_values(),
    }


def _counts(marks: list[list[str]], key: str) -> dict[str, int] | None:
    found = _find(marks, key)
    if not found:
        return None
    value = json.loads(" ".join(found))
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else None


def _restore_error(remote: Remote, name: str, target: str, error: list[str], detail: str) -> BackupError:
    host = remote.host
    code = error[0]
    tail = f": {detail}" if detail else ""
    if code == "createdb":
        return BackupError(f"{host.name}: cannot create database {target}{tail}", reason=code)
    if code == "restore":
        return BackupError(
            f"{host.name}: pg_restore of {name} into {target} failed{tail}; {target} was dropped, "
            f"{host.database} was not touched",
            reason=code,
        )
    if code in ("nospace", "notwritable", "dbsize", "df"):
        return _backup_error(remote, error, detail)
    if code in ("carry_over", "settings", "close", "swap"):
        return BackupError(
            f"{host.name}: swapping the restored database in failed ({code}){tail}; "
            f"{host.database} is unchanged and accepts connections again",
            reason="swap",
        )
    return _stored_error(remote, name, error, detail)


def restore_backup(
    remote: Remote,
    name: str,
    *,
    into: str | None = None,
    now: datetime | None = None,
    on_phase: PhaseCallback | None = None,
) -> RestoreResult:
    """Restore a backup into a NEW database (never the live one) and count objects in both (one remote command)."""
    host = remote.host
    check_name(name)
    target = into or restore_database_name(host.database, now or datetime.now(UTC))
    if target == host.database:
        raise UsageError(f"--into {target} is the live database; use --in-place to replace it")
    if not target or "\0" in target or len(target.encode()) > _MAX_IDENT:
        raise UsageError(f"--into {target!r}: a database name is 1 to {_MAX_IDENT} bytes")
    live_counts = _fill(_LIVE_COUNTS, PSQL=_psql(remote, host.database))
    mark = Markers()
    parts = [_VERIFY, _restore_part(remote, target), live_counts]
    body = _script(remote, parts, _restore_values(remote, name, target), mark)
    before = remote.command_count
    marks, other = _run_script(
        remote,
        _as_become(remote, body, mark, ensure_dir=False),
        "restore",
        mark,
        on_stdout=_ProgressLines(mark, None, on_phase).feed if on_phase else None,
    )
    error = _find(marks, "error")
    if error is not None:
        raise _restore_error(remote, name, target, error, other)
    return RestoreResult(
        name,
        target,
        False,
        _counts(marks, "counts_restored") or {},
        _counts(marks, "counts_live"),
        remote_commands=remote.command_count - before,
    )


def sessions_to_terminate(remote: Remote) -> list[Session]:
    """The client sessions now connected to the host's database: an in-place restore ends them all."""
    rows = remote.query_json(SESSIONS_SQL)
    return [
        Session(int(r["pid"]), str(r["user"]), str(r["application"] or ""), str(r["state"]), str(r["client"]))
        for r in rows or []
    ]


def drop_command(remote: Remote, database: str) -> str:
    """How the user drops a kept database (an opsagent command; the name quoted for SQL and for the shell)."""
    return shlex.join(["inv", "psql", "--host", remote.host.name, "-c", f"DROP DATABASE {ident(database)}"])


def restore_in_place(
    remote: Remote,
    name: str,
    *,
    now: datetime | None = None,
    on_phase: PhaseCallback | None = None,
    progress: ProgressCallback | None = None,
    reconnect: Callable[[], contextlib.AbstractContextManager[Remote]] | None = None,
) -> RestoreResult:
    """Replace the live database with a backup's contents without losing a write, in ONE remote script.

    1. the backup is verified and restored into a temporary database (the live one still serves);
    2. the live database is closed (``ALLOW_CONNECTIONS false``: nobody, not even a superuser,
       gets in) and its sessions are terminated, so every acknowledged write is in it;
    3. live -> ``<db>_replaced_<ts>`` and temporary -> live are renamed in one transaction that
       also gives the new live database the old connection settings;
    4. the replaced database is reopened under its new name, backed up (``pre-restore``) and KEPT:
       the user drops it (``drop_hint``) when satisfied.
    Whatever happens after step 2 (failure, Ctrl-C, the client vanishing) the script's EXIT trap
    puts the connection settings back, on the server, without the client.  When the script ends without saying
    how far it got, ``pg_database`` says (over ``reconnect``'s new connection when this one was lost, once the
    script has settled): see :func:`_confirm_swapped`.
    """
    host = remote.host
    check_name(name)
    when = _moment(now)
    target = derived_database_name(host.database, "opsagent_swap", when)
    old = derived_database_name(host.database, "replaced", when)
    safety = backup_name(host.database, when, "pre-restore")
    safety_values = _backup_values(remote, safety, stream=False, protect=name, size_every=SIZE_EVERY if progress else 0)
    parts = [
        _fill(_SPACE_CHECK, PSQL=_psql(remote, host.database)),
        _VERIFY,
        _restore_part(remote, target),
        _SWAP,
        _SAFETY_BACKUP_PREFIX,
        _assign(**safety_values),
        _backup_part(remote, old),
        _DONE,
    ]
    mark = Markers()
    body = _script(remote, parts, {**_restore_values(remote, name, target), "old": old}, mark)
    before = remote.command_count
    phases: list[str] = []

    def phase(text: str) -> None:
        phases.append(text)
        if on_phase is not None:
            on_phase(text)

    watch = _ProgressLines(mark, progress, phase).feed
    argv = _as_become(remote, body, mark, ensure_dir=True, own_session=True)
    try:
        marks, other = _run_script(remote, argv, "restore", mark, on_stdout=watch)
    except OpsagentError as ended_early:
        if _CLOSING not in phases:
            raise  # the live database was never closed: it is as it was (sudo, a missing tool, the backup)
        marks, other = [], ended_early.message  # the script (or the connection) ended without a word: found out
    error = _find(marks, "error")
    if error is not None and _find(marks, "swapped") is None:
        raise _restore_error(remote, name, target, error, other)
    if _find(marks, "swapped") is None:
        replaced = _found_out(remote, reconnect, name, old, target, other or "no output", restore_appname(mark))
        return RestoreResult(
            name,
            host.database,
            True,
            {},
            None,
            old_database_kept=old,
            drop_hint=drop_command(remote, old),
            remote_commands=remote.command_count - before,
            pre_restore_backup_error=f"not confirmed: the restore's output ended early ({other or 'no output'})"
            + replaced,
        )
    ended = json.loads(" ".join(_find(marks, "terminated") or ["{}"]) or "{}")
    result = RestoreResult(
        name,
        host.database,
        True,
        _counts(marks, "counts_restored") or {},
        None,
        old_database_kept=old,
        drop_hint=drop_command(remote, old),
        terminated_sessions=int(ended.get("count", 0)),
        terminated_applications=[str(a) for a in ended.get("applications") or []],
        remote_commands=remote.command_count - before,
    )
    done = _find(marks, "backup")
    failed = _find(marks, "backup_error")
    if done is not None and len(done) >= 3:
        result.pre_restore_backup = _backup_result(remote, safety, when, "pre-restore", done, marks, before)
    else:
        reason = _backup_error(remote, failed or ["failed"], other, old).message if failed else (other or "no result")
        result.pre_restore_backup_error = reason
    if _find(marks, "reopen_failed") is not None:
        raise BackupError(
            f"{host.name}: {host.database} was restored but its connection settings could not be put back",
            reason="reopen",
            hint=f"on the server, from another database: {_reopen_command(host, host.database)}",
        )
    return result


_CLOSING = "closing the live database"  # the phase of restore_swap.sh from which the live database may be closed
_SWAP_STATE_SQL = (
    "SELECT json_build_object("
    "'replaced', (SELECT datallowconn FROM pg_database WHERE datname = :'old'), "
    "'temporary', EXISTS (SELECT 1 FROM pg_database WHERE datname = :'temporary'), "
    "'open', (SELECT datallowconn FROM pg_database WHERE datname = :'live'))"
)


SETTLE_S = 30.0  # how long a restore that ended without a word waits for the server to settle
# the script's own sessions (backup_sql_helper.sh names them, restore_appname): one still running may yet commit
# the swap; another restore's sessions are not waited for
_NO_RESTORE_SESSION = (
    "NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = :'appname' AND pid <> pg_backend_pid())"
)
_SETTLED_SQL = f"SELECT to_json({_NO_RESTORE_SESSION})"
# after a lost connection the script itself runs on until its heartbeat ends it, and its trap reopens what it
# closed: settled once that is done too
_SETTLED_AFTER_TRAP_SQL = (
    f"SELECT to_json({_NO_RESTORE_SESSION} "
    "AND (SELECT datallowconn FROM pg_database WHERE datname = :'live') IS TRUE "
    "AND NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'temporary') "
    "AND (SELECT datallowconn FROM pg_database WHERE datname = :'old') IS NOT FALSE)"
)


def _found_out(
    remote: Remote,
    reconnect: Callable[[], contextlib.AbstractContextManager[Remote]] | None,
    name: str,
    old: str,
    target: str,
    cause: str,
    appname: str,
) -> str:
    """:func:`_confirm_swapped` once the server has settled: no session of the script (``appname``) left (a killed
    script's backend may still commit the swap it was sent), and, when the connection was lost, the script gone too (it
    runs on in its own session until its heartbeat finds the client gone; its trap reopens what it closed), read
    over ``reconnect``'s new connection.  Not settled after ``SETTLE_S``: unknown, and said so."""
    transport = remote.connection.client.get_transport()
    if transport is not None and transport.is_active():
        _settle(remote, _SETTLED_SQL, name, old, target, cause, appname)
        return _confirm_swapped(remote, name, old, target, cause)
    if reconnect is None:
        return _confirm_swapped(remote, name, old, target, cause)  # unknown: no way to read it
    try:
        with reconnect() as fresh:
            _settle(fresh, _SETTLED_AFTER_TRAP_SQL, name, old, target, cause, appname)
            return _confirm_swapped(fresh, name, old, target, cause)
    except BackupError:
        raise  # what _confirm_swapped found
    except (OpsagentError, ValueError) as exc:  # no new connection, or no answer on it: said so, as unknown
        reason = getattr(exc, "message", exc)
        return _confirm_swapped(remote, name, old, target, f"{cause}; reading it again failed: {reason}")


def _settle(remote: Remote, sql: str, name: str, old: str, target: str, cause: str, appname: str) -> None:
    """Wait (``SETTLE_S`` at most) until ``sql`` says the server is done with the restore; still busy by then, the
    outcome is unknown, and said so.  A server that cannot be asked is left to the reading that follows (which
    then says it is unknown)."""
    names = [*_swap_names(remote.host, old, target), "-v", f"appname={appname}"]
    deadline = time.monotonic() + SETTLE_S
    try:
        while remote.query_json(sql, _admin_db(remote.host.database), extra=names) is not True:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        else:
            return
    except (OpsagentError, ValueError):
        return
    raise BackupError(
        f"{remote.host.name}: the in-place restore of {name} ended without a result ({cause}), and the server was "
        f"still busy with it {SETTLE_S:g}s later; its outcome is unknown",
        reason="unknown",
        hint=f"check again with: inv backups --host {remote.host.name}, and pg_database for {old!r} "
        "(the swap happened if it exists)",
    )


def _swap_names(host: HostConfig, old: str, target: str) -> list[str]:
    """The in-place restore's database names as psql variables (data, never SQL text)."""
    return ["-v", f"old={old}", "-v", f"temporary={target}", "-v", f"live={host.database}"]


def _confirm_swapped(remote: Remote, name: str, old: str, target: str, cause: str) -> str:
    """An in-place restore whose script ended without saying whether it swapped: the server's catalog says.  Returns
    (what to add about the replaced database) when it did; otherwise a BackupError that says where the live
    database stands (or, when even that cannot be read, that the outcome is unknown)."""
    host = remote.host
    try:
        state = remote.query_json(_SWAP_STATE_SQL, _admin_db(host.database), extra=_swap_names(host, old, target))
    except (OpsagentError, ValueError) as exc:
        raise BackupError(
            f"{host.name}: the in-place restore ended without a result ({cause}), and where it stopped could not "
            f"be read ({getattr(exc, 'message', exc)}); its outcome is unknown",
            reason="unknown",
            hint=f"check with: inv backups --host {host.name}, and pg_database for {old!r} (the swap happened if "
            "it exists)",
        ) from None
    if state.get("replaced") is not None:  # the swap committed
        return "" if state["replaced"] else f"; {old} is closed to connections ({_reopen_command(host, old)})"
    closed = state.get("open") is False
    left = f"; the temporary database {target} is left: drop it" if state.get("temporary") else ""
    raise BackupError(
        f"{host.name}: the in-place restore of {name} ended without a result ({cause}) before the swap: "
        f"{host.database} was not replaced{' but is still closed to connections' if closed else ''}{left}",
        reason="not_swapped",
        hint=f"reopen it from another database: {_reopen_command(host, host.database)}" if closed else "rerun it",
    )


def _reopen_command(host: HostConfig, database: str) -> str:
    """The command that opens a database to connections again, run on the server from another database."""
    sql = f"ALTER DATABASE {ident(database)} ALLOW_CONNECTIONS true"
    return f"sudo -u {host.become} psql -d {_admin_db(database)} -c {shlex.quote(sql)}"


def as_dict(value: Any) -> Any:
    """JSON-ready form of the result dataclasses."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [as_dict(v) for v in value]
    if isinstance(value, dict):
        return {k: as_dict(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, Path):
        return str(value)
    return value
