"""Backups and restores of a host's database, done on the server.

A backup is ``pg_dump -Fc`` run as the become user into ``backup_dir`` on the
server.  Each operation is ONE remote shell script (round trips cost ~0.2 s and
a half-done step must clean up after itself on the server, not from here): the
script reports back with ``@opsagent <key> <values>`` lines on stderr, so stdout
stays free for the binary dump when it is streamed down at the same time.

Next to every verified ``NAME.dump`` lives ``NAME.dump.meta`` (sha256 and size,
written only after ``pg_restore --list`` accepted the dump): listings can then
tell a verified backup from a damaged or foreign file without reading it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import OpsagentError, UsageError
from .transport import CommandResult, Remote, conninfo_dbname
from .units import human_bytes

MARK = "@opsagent"
TIMESTAMP = "%Y%m%dT%H%M%SZ"
DB_TIMESTAMP = "%Y%m%d_%H%M%S"
_NAME_RE = re.compile(r"^(?P<db>[A-Za-z0-9._-]+)-(?P<ts>\d{8}T\d{6}Z)(?:-(?P<label>[A-Za-z0-9._-]+))?\.dump$")
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*\.dump$")
ProgressCallback = Callable[[int, int | None], None]


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
class RestoreResult:
    """What a restore did: where the data went and how it compares to the live database."""

    backup: str
    database: str  # the database that now holds the backup's contents
    in_place: bool
    restored_counts: dict[str, int]
    live_counts: dict[str, int] | None  # new-database restores: the untouched live database
    pre_restore_backup: BackupResult | None = None
    old_database_kept: str | None = None  # in-place: set when the replaced database could not be dropped
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


def backup_name(database: str, when: datetime, label: str | None = None) -> str:
    """``<db>-<UTC timestamp>[-<label>].dump``: names sort by time."""
    stamp = when.astimezone(UTC).strftime(TIMESTAMP)
    clean = sanitize_label(label)
    return f"{file_prefix(database)}-{stamp}" + (f"-{clean}" if clean else "") + ".dump"


def parse_name(name: str) -> tuple[str, datetime, str | None] | None:
    """(database prefix, created_at, label) of a backup name, None for foreign files."""
    match = _NAME_RE.match(name)
    if not match:
        return None
    when = datetime.strptime(match["ts"], TIMESTAMP).replace(tzinfo=UTC)
    return match["db"], when, match["label"]


def check_name(name: str) -> str:
    """Refuse names that could escape backup_dir or are not dumps."""
    if "/" in name or not _SAFE_NAME_RE.match(name):
        raise UsageError(f"invalid backup name {name!r}: expected a file name like <db>-20261124T103000Z.dump (see 'inv backups')")
    return name


def restore_database_name(database: str, when: datetime, kind: str = "restore") -> str:
    """``<db>_restore_<timestamp>``; refuses names PostgreSQL would truncate."""
    name = f"{database}_{kind}_{when.astimezone(UTC).strftime(DB_TIMESTAMP)}"
    if len(name.encode()) > 63:
        raise UsageError(f"database name {name!r} is longer than 63 bytes; choose one with --into")
    return name


def _grep_pattern(database: str) -> str:
    return "^" + file_prefix(database) + r"-[0-9]{8}T[0-9]{6}Z(-[A-Za-z0-9._-]+)?[.]dump$"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ---------------------------------------------------------------- script pieces

_PRELUDE = r"""
set -u
umask 077
LC_ALL=C; export LC_ALL
say() { printf '@opsagent %s\n' "$*" >&2; }
fail() { say error "$@"; exit 3; }
"""

# Outer part, run as the login user: only creates backup_dir when the become user cannot.
_ENSURE_DIR = r"""
cd / || exit 1
dir=@@DIR@@
if ! @@SUDO@@ test -d "$dir"; then
  @@SUDO@@ mkdir -p -m 700 -- "$dir" 2>/dev/null \
  || install -d -m 700 @@OWNER@@ -- "$dir" 2>/dev/null \
  || sudo -n install -d -m 700 @@OWNER@@ -- "$dir" 2>/dev/null \
  || { printf '@opsagent error mkdir\n' >&2; exit 3; }
fi
exec @@INNER@@
"""

_BACKUP = r"""
[ -w "$dir" ] && [ -x "$dir" ] || fail notwritable
need=$(@@PSQL@@ -A -t -c 'SELECT pg_database_size(current_database())') || fail dbsize
avail=$(df -Pk -- "$dir" | awk 'NR==2 {print $4}')
[ -n "$avail" ] || fail df
avail=$((avail * 1024))
[ "$avail" -ge "$need" ] || fail nospace "$need" "$avail"
final="$dir/$name"
[ -e "$final" ] && fail exists
tmp="$dir/.$name.partial"
trap 'rm -f -- "$tmp" "$tmp.rc" "$tmp.meta" "$tmp.fifo" "$tmp.sum"' EXIT
trap 'exit 130' INT TERM HUP
# the checksum is computed while the dump is written (a FIFO fed by tee), not by reading it again
mkfifo -m 600 -- "$tmp.fifo" || fail write
sha256sum < "$tmp.fifo" > "$tmp.sum" &
if [ "$stream" = 1 ]; then
  { @@PG_DUMP@@; echo $? > "$tmp.rc"; } | tee -- "$tmp" "$tmp.fifo" || fail write
else
  { @@PG_DUMP@@; echo $? > "$tmp.rc"; } | tee -- "$tmp" > "$tmp.fifo" || fail write
fi
wait $! || fail checksum
[ "$(cat -- "$tmp.rc" 2>/dev/null)" = 0 ] || fail pg_dump
pg_restore --list -- "$tmp" >/dev/null || fail verify
size=$(stat -c %s -- "$tmp") || fail stat
sum=$(cut -c1-64 < "$tmp.sum")
[ -n "$sum" ] || fail checksum
printf 'sha256=%s\nsize=%s\n' "$sum" "$size" > "$tmp.meta" || fail write
mv -f -- "$tmp.meta" "$final.meta" && mv -- "$tmp" "$final" || { rm -f -- "$final.meta"; fail mv; }
kept=1
if [ "$keep" -gt 0 ]; then
  for f in $(ls -1 -- "$dir" | grep -E "$pattern" | sort -r); do
    [ "$f" = "$name" ] || [ "$f" = "$protect" ] && continue
    if [ "$kept" -lt "$keep" ]; then kept=$((kept + 1)); continue; fi
    rm -f -- "$dir/$f" "$dir/$f.meta" && say deleted "$f"
  done
fi
say ok "$size" "$sum" "$need"
"""

_LIST = r"""
[ -e "$dir" ] || { say ok; exit 0; }
cd -- "$dir" || fail access
for f in $(ls -1 | grep -E "$pattern" | sort -r); do
  meta=$(tr '\n' ' ' < "$f.meta" 2>/dev/null)
  printf '%s\t%s\t%s\n' "$f" "$(stat -c %s -- "$f")" "$meta"
done
say ok
"""

# Verify one named backup: sha256 against the .meta written at backup time, then pg_restore --list.
_VERIFY = r"""
file="$dir/$name"
[ -f "$file" ] || fail missing
size=$(stat -c %s -- "$file") || fail stat
sum=$(sha256sum -- "$file" | cut -c1-64)
recorded=$(sed -n 's/^sha256=//p' "$file.meta" 2>/dev/null)
[ -z "$recorded" ] || [ "$recorded" = "$sum" ] || fail checksum "$sum" "$recorded"
pg_restore --list -- "$file" >/dev/null || fail verify
say verified "$size" "$sum" "${recorded:--}"
"""

_STREAM = r"""
file="$dir/$name"
[ -f "$file" ] && [ -r "$file" ] || fail missing
size=$(stat -c %s -- "$file") || fail stat
sum=$(sha256sum -- "$file" | cut -c1-64)
printf '%s %s\n' "$size" "$sum"
exec cat -- "$file"
"""

# Restore $file into a new database $target (created like the live one), then count objects in both.
_RESTORE = r"""
@@ADMIN_PSQL@@ -v ON_ERROR_STOP=1 <<'OPSAGENT_SQL' >/dev/null || fail createdb
@@CREATE_SQL@@
OPSAGENT_SQL
if ! pg_restore --exit-on-error --single-transaction @@PGARGS@@ -d "$target_dsn" -- "$file"; then
  @@ADMIN_PSQL@@ -c @@DROP_TARGET@@ >/dev/null 2>&1
  fail restore
fi
say counts_restored "$(@@PSQL_TARGET@@ -A -t -c @@COUNTS@@)"
"""

_LIVE_COUNTS = r"""
say counts_live "$(@@PSQL@@ -A -t -c @@COUNTS@@ 2>/dev/null || echo null)"
say ok
"""

# Swap the restored database in: terminate sessions and rename both in ONE transaction, then drop the old one.
_SWAP = r"""
if ! @@ADMIN_PSQL@@ -v ON_ERROR_STOP=1 <<'OPSAGENT_SQL' >/dev/null; then
@@SWAP_SQL@@
OPSAGENT_SQL
  @@ADMIN_PSQL@@ -c @@DROP_TARGET@@ >/dev/null 2>&1
  fail swap
fi
if @@ADMIN_PSQL@@ -c @@DROP_OLD@@ >/dev/null; then say dropped_old; else say kept_old "$old"; fi
say ok
"""

COUNTS_SQL = """SELECT json_build_object(
 'schemas', (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_toast%'
             AND nspname NOT LIKE 'pg\\_temp\\_%'),
 'tables', (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'),
 'views', (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')),
 'indexes', (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('i', 'I') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'),
 'sequences', (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')),
 'functions', (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')),
 'constraints', (SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')),
 'triggers', (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal),
 'extensions', (SELECT count(*) FROM pg_extension),
 'bytes', pg_database_size(current_database()))"""


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace(f"@@{key}@@", value)
    return template


def _assign(**values: str) -> str:
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def _psql(remote: Remote, database: str) -> str:
    return shlex.join(["psql", "-X", "-q", *remote.pg_args(), *remote.db_args(database)])


def _admin_db(database: str) -> str:
    return "template1" if database == "postgres" else "postgres"


def _as_become(remote: Remote, body: str, *, ensure_dir: bool) -> list[str]:
    """argv for one remote script: ``body`` runs as become, optionally after creating backup_dir."""
    inner = shlex.join([*remote.become_prefix(), "sh", "-c", body])
    if not ensure_dir:
        return ["sh", "-c", "cd / || exit 1\nexec " + inner]
    become = remote.host.become
    script = _fill(_ENSURE_DIR, DIR=shlex.quote(remote.host.backup_dir), SUDO=shlex.join(remote.become_prefix()),
                   OWNER=shlex.join(["-o", become]) if become else "", INNER=inner)
    return ["sh", "-c", script]


def _markers(result: CommandResult) -> tuple[list[list[str]], str]:
    """(``@opsagent`` marker lines split into words, first other stderr line)."""
    marks: list[list[str]] = []
    other = ""
    for line in result.stderr.splitlines():
        if line.startswith(MARK + " "):
            marks.append(line[len(MARK) + 1:].split(" ", 3))
        elif line.strip() and not other:
            other = line.strip()
    return marks, other


def _run_script(remote: Remote, argv: list[str], what: str, *, on_stdout: Callable[[bytes], None] | None = None,
                ) -> tuple[list[list[str]], str]:
    """Run a script; failures without an ``error`` marker (sudo, ssh) become CommandFailed."""
    result = remote.run(argv, become=False, check=False, on_stdout=on_stdout, capture=on_stdout is None)
    marks, other = _markers(result)
    if result.exit_status != 0 and not any(m[0] == "error" for m in marks):
        raise remote.failure([what], result)
    return marks, other


def _find(marks: list[list[str]], key: str) -> list[str] | None:
    for mark in marks:
        if mark[0] == key:
            return mark[1:]
    return None


# ---------------------------------------------------------------- backup


def create_backup(remote: Remote, label: str | None = None, *, now: datetime | None = None,
                  download_dir: Path | None = None, progress: ProgressCallback | None = None, protect: str = "") -> BackupResult:
    """Dump, verify and store a backup on the server in ONE remote command, then apply retention.

    With ``download_dir`` the dump is also streamed down while it is written (``tee``
    on the server), and the local copy is checked against the server's sha256.
    Retention never deletes the new backup nor ``protect`` (a backup about to be restored).
    Raises ``BackupError`` (nothing half-written is left on either side) on failure.
    """
    host = remote.host
    when = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    name = backup_name(host.database, when, label)
    # a session holding an exclusive lock must not make the backup (and a sync waiting on it) hang
    wait = ["--lock-wait-timeout", host.lock_timeout] if host.lock_timeout.strip() not in ("", "0") else []
    pg_dump = shlex.join(["pg_dump", "-Fc", *wait, *remote.pg_args(), *remote.db_args()])
    body = _PRELUDE + _assign(dir=host.backup_dir, name=name, keep=str(host.keep_backups), pattern=_grep_pattern(host.database),
                              stream="1" if download_dir else "0", protect=protect)
    body += _fill(_BACKUP, PSQL=_psql(remote, host.database), PG_DUMP=pg_dump)
    before = remote.command_count
    sink = _LocalFile(download_dir / name, progress, None) if download_dir else None
    try:
        marks, other = _run_script(remote, _as_become(remote, body, ensure_dir=True), "backup", on_stdout=sink.write if sink else None)
        error = _find(marks, "error")
        if error is not None:
            raise _backup_error(remote, error, other)
        done = _find(marks, "ok")
        if done is None or len(done) < 3:
            raise BackupError(f"{host.name}: backup script ended without a result ({other or 'no output'})")
        size, sha, need = int(done[0]), done[1], int(done[2])
        local = sink.finish(size, sha) if sink else None
    finally:
        if sink:
            sink.discard()
    deleted = [m[1] for m in marks if m[0] == "deleted" and len(m) > 1]
    return BackupResult(name=name, path=f"{host.backup_dir.rstrip('/')}/{name}", size_bytes=size, sha256=sha, verified=True,
                        created_at=when, label=sanitize_label(label), database_bytes=need, deleted_by_retention=deleted,
                        remote_commands=remote.command_count - before, local_path=local)


def _backup_error(remote: Remote, error: list[str], detail: str) -> BackupError:
    host = remote.host
    code = error[0] if error else "failed"
    extra = f": {detail}" if detail else ""
    become = host.become or remote.connection.user
    messages = {
        "mkdir": (f"{host.name}: cannot create backup_dir {host.backup_dir}: neither {become} nor {remote.connection.user} may create it",
                  f"create it once: sudo install -d -m 700 -o {become} {host.backup_dir}"),
        "notwritable": (f"{host.name}: backup_dir {host.backup_dir} is not writable by {become}",
                        f"fix its owner: sudo chown {become} {host.backup_dir} && sudo chmod 700 {host.backup_dir}"),
        "dbsize": (f"{host.name}: cannot read the size of database {host.database}{extra}", None),
        "df": (f"{host.name}: cannot read free space of {host.backup_dir}{extra}", None),
        "exists": (f"{host.name}: a backup with the same name already exists in {host.backup_dir}; retry in a second", None),
        "pg_dump": (f"{host.name}: pg_dump of {host.database} failed{extra}", None),
        "write": (f"{host.name}: writing the backup to {host.backup_dir} failed{extra}", None),
        "verify": (f"{host.name}: the new backup did not verify (pg_restore --list failed{extra}); it was deleted", None),
        "stat": (f"{host.name}: cannot read the new backup's size{extra}", None),
        "checksum": (f"{host.name}: sha256sum of the new backup failed{extra}", None),
        "mv": (f"{host.name}: cannot move the new backup into place{extra}", None),
    }
    if code == "nospace" and len(error) >= 3:
        need, avail = int(error[1]), int(error[2])
        return BackupError(f"{host.name}: not enough space in {host.backup_dir}: database {host.database} is {human(need)}, "
                           f"only {human(avail)} free; refusing to start the backup", reason="nospace",
                           hint="free some space or lower keep_backups (old backups are removed only after a successful one)")
    if code == "pg_dump" and "statement timeout" in detail:
        return BackupError(f"{host.name}: pg_dump of {host.database} could not lock its tables within lock_timeout {host.lock_timeout}: "
                           "another session holds an exclusive lock", reason=code,
                           hint="find it in pg_stat_activity / pg_locks, or retry when it is done")
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
            raise BackupError(f"downloaded copy of {self.target.name} does not match the server's: {self.size} bytes sha256 {local[:12]}…, "
                              f"server has {size} bytes sha256 {sha256[:12]}…; the local copy was deleted", reason="download")
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
    body = _PRELUDE + _assign(dir=host.backup_dir, pattern=_grep_pattern(host.database)) + _LIST
    result = remote.run(_as_become(remote, body, ensure_dir=False), become=False, check=False)
    marks, other = _markers(result)
    if _find(marks, "ok") is None:
        if _find(marks, "error") is None and result.exit_status != 0:
            raise remote.failure(["backup listing"], result)
        raise BackupError(f"{host.name}: cannot list {host.backup_dir} as {host.become}: {other or 'permission denied'}", reason="access")
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
        raise BackupError(f"{remote.host.name}: no backups of {remote.host.database} in {remote.host.backup_dir}", reason="missing",
                          hint=f"take one with: inv backup --host {remote.host.name}")
    return found[0]


def verify_backup(remote: Remote, name: str) -> VerifyResult:
    """Check a stored backup: sha256 against the one recorded at backup time, then ``pg_restore --list``."""
    host = remote.host
    body = _PRELUDE + _assign(dir=host.backup_dir, name=check_name(name)) + _VERIFY
    marks, other = _run_script(remote, _as_become(remote, body, ensure_dir=False), "verify")
    error = _find(marks, "error")
    if error is not None:
        raise _stored_error(remote, name, error, other)
    done = _find(marks, "verified") or []
    return VerifyResult(name, int(done[0]), done[1], None if done[2] == "-" else done[2])


def _stored_error(remote: Remote, name: str, error: list[str], detail: str) -> BackupError:
    host = remote.host
    code = error[0]
    if code == "missing":
        return BackupError(f"{host.name}: backup {name} not found in {host.backup_dir}", reason="missing", hint=f"see: inv backups --host {host.name}")
    if code == "checksum":
        return BackupError(f"{host.name}: backup {name} is damaged: its sha256 no longer matches the one recorded when it was taken",
                           reason="checksum")
    if code == "verify":
        return BackupError(f"{host.name}: backup {name} is damaged: pg_restore --list failed ({detail or 'no detail'})", reason="verify")
    return BackupError(f"{host.name}: backup {name}: {code} failed{': ' + detail if detail else ''}", reason=code)


def download_backup(remote: Remote, name: str, dest_dir: Path, *, progress: ProgressCallback | None = None) -> DownloadResult:
    """Copy a backup to ``dest_dir/NAME`` through ``sudo -n -u <become> cat`` and check size and sha256.

    The login user may not read files owned by the become user; the file is never
    made readable to anyone else: it is streamed on the command's binary stdout,
    after one header line with the server's size and sha256 (so progress has a total).
    """
    host = remote.host
    body = _PRELUDE + _assign(dir=host.backup_dir, name=check_name(name)) + _STREAM
    sink = _LocalFile(dest_dir / name, progress, None)
    header = _Header(sink)
    before = remote.command_count
    try:
        result = remote.run(_as_become(remote, body, ensure_dir=False), become=False, check=False, on_stdout=header.feed, capture=False)
        marks, other = _markers(result)
        error = _find(marks, "error")
        if error is not None:
            raise _stored_error(remote, name, error, other)
        if result.exit_status != 0 or header.meta is None:
            raise BackupError(f"{host.name}: copying {name} failed: {other or f'exit status {result.exit_status}'}", reason="download")
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- restore


def _create_sql(target: str, live: str) -> str:
    """CREATE DATABASE target like the live one (owner, encoding, locale), from template0."""
    return (f"SELECT format('CREATE DATABASE %I TEMPLATE template0', {quote_literal(target)}) || coalesce(format("
            f"' OWNER %I ENCODING %L LC_COLLATE %L LC_CTYPE %L', pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), "
            f"d.datcollate, d.datctype), '') FROM (SELECT 1) AS one LEFT JOIN pg_database d ON d.datname = {quote_literal(live)}\n\\gexec")


_LIST_SETTINGS = "('search_path', 'temp_tablespaces', 'session_preload_libraries', 'local_preload_libraries')"


def _carry_over_sql(live: str, target: str) -> str:
    """Database-level grants and settings are not in a pg_dump: copy them from the live database."""
    lv, tg = quote_literal(live), quote_literal(target)
    return f"""SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', {tg}) FROM pg_database WHERE datname = {lv} AND datacl IS NOT NULL
\\gexec
SELECT format('GRANT %s ON DATABASE %I TO %s%s', a.privilege_type, {tg},
              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
              CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
  FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = {lv} AND a.grantee <> d.datdba
\\gexec
SELECT CASE WHEN s.setrole = 0 THEN format('ALTER DATABASE %I', {tg}) ELSE format('ALTER ROLE %I IN DATABASE %I', pg_get_userbyid(s.setrole), {tg}) END
       || format(' SET %s = ', split_part(c.item, '=', 1))
       || CASE WHEN split_part(c.item, '=', 1) IN {_LIST_SETTINGS} THEN substr(c.item, strpos(c.item, '=') + 1)
               ELSE quote_literal(substr(c.item, strpos(c.item, '=') + 1)) END
  FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) AS c(item) WHERE d.datname = {lv}
\\gexec
"""


def _swap_sql(live: str, swap: str, old: str) -> str:
    """Terminate sessions and rename both databases in one transaction (retried while sessions reconnect)."""
    return _carry_over_sql(live, swap) + f"""DO $opsagent$
DECLARE tries int := 0;
BEGIN
  LOOP
    PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE datname IN ({quote_literal(live)}, {quote_literal(swap)}) AND pid <> pg_backend_pid();
    BEGIN
      ALTER DATABASE {quote_ident(live)} RENAME TO {quote_ident(old)};
      ALTER DATABASE {quote_ident(swap)} RENAME TO {quote_ident(live)};
      EXIT;
    EXCEPTION WHEN object_in_use THEN
      tries := tries + 1;
      IF tries >= 50 THEN RAISE; END IF;
      PERFORM pg_sleep(0.1);
    END;
  END LOOP;
END
$opsagent$;"""


def _restore_body(remote: Remote, name: str, target: str, *, verify: bool = True) -> str:
    host = remote.host
    admin = _psql(remote, _admin_db(host.database))
    body = _PRELUDE + _assign(dir=host.backup_dir, name=name, target=target, target_dsn=conninfo_dbname(target),
                              file=f"{host.backup_dir.rstrip('/')}/{name}")
    body += _VERIFY if verify else ""
    return body + _fill(_RESTORE, ADMIN_PSQL=admin, CREATE_SQL=_create_sql(target, host.database),
                        PGARGS=shlex.join(remote.pg_args()), DROP_TARGET=shlex.quote(f"DROP DATABASE IF EXISTS {quote_ident(target)}"),
                        PSQL_TARGET=_psql(remote, target), COUNTS=shlex.quote(COUNTS_SQL))


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
        return BackupError(f"{host.name}: pg_restore of {name} into {target} failed{tail}; {target} was dropped, "
                           f"{host.database} was not touched", reason=code)
    if code == "swap":
        return BackupError(f"{host.name}: swapping the restored database in failed{tail}; {host.database} is unchanged", reason=code)
    return _stored_error(remote, name, error, detail)


def restore_backup(remote: Remote, name: str, *, into: str | None = None, now: datetime | None = None) -> RestoreResult:
    """Restore a backup into a NEW database (never the live one) and count objects in both (one remote command)."""
    host = remote.host
    check_name(name)
    target = into or restore_database_name(host.database, now or datetime.now(UTC))
    if target == host.database:
        raise UsageError(f"--into {target} is the live database; use --in-place to replace it")
    body = _restore_body(remote, name, target) + _fill(_LIVE_COUNTS, PSQL=_psql(remote, host.database), COUNTS=shlex.quote(COUNTS_SQL))
    before = remote.command_count
    marks, other = _run_script(remote, _as_become(remote, body, ensure_dir=False), "restore")
    error = _find(marks, "error")
    if error is not None:
        raise _restore_error(remote, name, target, error, other)
    return RestoreResult(name, target, False, _counts(marks, "counts_restored") or {}, _counts(marks, "counts_live"),
                         remote_commands=remote.command_count - before)


def restore_in_place(remote: Remote, name: str, *, now: datetime | None = None) -> RestoreResult:
    """Replace the live database with a backup's contents.

    A fresh backup of the current state is taken first.  The backup is restored into
    a temporary database, then both databases are renamed in one transaction, so a
    failure at any point leaves either the old or the restored database in place.
    """
    host = remote.host
    check_name(name)
    when = (now or datetime.now(UTC)).astimezone(UTC)
    before = remote.command_count
    verify_backup(remote, name)  # a damaged backup is refused before anything else happens
    safety = create_backup(remote, "pre-restore", now=when, protect=name)
    swap = restore_database_name(host.database, when, "opsagent_swap")
    old = restore_database_name(host.database, when, "opsagent_old")
    body = _restore_body(remote, name, swap, verify=False) + _assign(old=old)  # verified above
    admin = _psql(remote, _admin_db(host.database))
    body += _fill(_SWAP, ADMIN_PSQL=admin, SWAP_SQL=_swap_sql(host.database, swap, old),
                  DROP_TARGET=shlex.quote(f"DROP DATABASE IF EXISTS {quote_ident(swap)}"),
                  DROP_OLD=shlex.quote(f"DROP DATABASE {quote_ident(old)} WITH (FORCE)"))
    marks, other = _run_script(remote, _as_become(remote, body, ensure_dir=False), "restore")
    error = _find(marks, "error")
    if error is not None:
        raise _restore_error(remote, name, swap, error, other)
    kept = _find(marks, "kept_old")
    return RestoreResult(name, host.database, True, _counts(marks, "counts_restored") or {}, None, pre_restore_backup=safety,
                         old_database_kept=kept[0] if kept else None, remote_commands=remote.command_count - before)


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
