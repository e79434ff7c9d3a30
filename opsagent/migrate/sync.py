"""Apply pending migrations to one database over one SSH connection, or rehearse them.

A sync is ONE interactive psql session (``remote.start``) fed step by step.  Its first
statement sets the host's ``lock_timeout``, so nothing it runs (ledger read, table sizes,
migrations) can queue behind another session's lock for longer than that.  Then: read the
ledger, (confirm), take the session-level advisory lock (polled from the client, with
backoff, so Ctrl-C stops it at once) and read the ledger again under it, take the backup
as a separate remote command, then stream the pending migrations as one script.
``\\echo`` markers come back as the script runs, so progress is live and a failure names
its migration; psql's ``psql:<stdin>:LINE:`` prefix is mapped back to ``file:line``.

Lock retries (GitLab's ``with_lock_retries``): each migration runs with a short
per-attempt ``lock_timeout``.  When one of its statements fails with ``lock_not_available``
(55P03) psql rolls it back and skips the rest of the streamed script (``\\if`` guards,
``ON_ERROR_STOP`` off inside the apply script); the client pauses (jittered), and streams
the rest again from that migration with a longer per-attempt timeout, until the
``lock_retry_for`` budget is spent.  A second psql session watches ``pg_blocking_pids``
of ours meanwhile, so every failed attempt names who blocks.  The number of remote
commands is constant (session, blocker watch, backup), whatever the number of migrations
or attempts.

After psql or the SSH connection is lost mid-apply, the outcome is not guessed: our
backend is stopped if it still runs, the ledger is read (over a new connection when the
old one is gone) and the result says which migrations committed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import __version__, resources
from ..errors import MigrationError, OpsagentError, RemoteError, UsageError
from ..remote.markers import Markers
from ..remote.transport import CLIENT_CHECK_SQL, Remote, RemoteProcess, open_remote
from ..sqlquote import ident, literal
from ..units import parse_duration
from .files import (
    NAMING_HINT,
    Migration,
    Plan,
    Survey,
    VersionStatus,
    check_pending,
    compute_status,
    plan_pending,
    survey,
)
from .ledger import Blocker, Ledger, LedgerState, LockHolder, blockers_query, decode_blockers
from .memo import likely_pending, remember_applied, versions_digest

if (
    TYPE_CHECKING
):  # the hazard lint (pglast), backups and statements are imported where a run needs them: a no-op sync does not
    from ..backup import BackupResult
    from ..schema.fingerprint import Probe
    from .hazards import HazardReport
    from .sqltext import Statement

_PSQL_ERROR_RE = re.compile(r"^psql:<stdin>:(\d+): (?:ERROR|FATAL|PANIC):\s+(.*)$")
_PSQL_LINE_RE = re.compile(r"^LINE (\d+):")
LOCK_NOT_AVAILABLE = "55P03"
_TIMEOUT_STATES = frozenset({LOCK_NOT_AVAILABLE, "57014"})  # lock_not_available, query_canceled (statement_timeout)
# what a multi-transaction statement (CREATE INDEX CONCURRENTLY, REINDEX/DROP INDEX CONCURRENTLY) leaves behind when it
# stops partway: relations and index validity (temporary relations of other sessions excluded)
CATALOG_FINGERPRINT = (
    "(SELECT md5(coalesce(string_agg(c.oid::text || coalesce(':' || i.indisvalid::text || i.indisready::text, ''), "
    "',' ORDER BY c.oid), '')) FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid "
    "WHERE c.relpersistence <> 't')"
)

Outcome = Literal[
    "applied",
    "nothing_to_do",
    "failed",
    "refused",
    "lock_timeout",
    "backup_failed",
    "declined",
    "dry_run",
    "rehearsal_failed",
    "interrupted",
    "lost",
]
StepStatus = Literal[
    "applied", "failed", "untouched", "would_apply", "would_fail", "not_rehearsed", "timed_out", "planned"
]


# ---------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class SyncOptions:
    """What one ``inv sync`` run was asked to do."""

    target: str | None = None
    allow_out_of_order: bool = False
    backup: bool = True
    advisory_lock_wait: float = 60.0  # seconds to wait for another applier's advisory lock
    lock_timeout: str | None = None  # PostgreSQL lock_timeout per attempt (default: the host's lock_timeout)
    lock_retry_for: str | None = None  # total lock-retry budget per migration (default: the host's lock_retry_for)
    migration_lock_timeout: str | None = None  # older name of lock_timeout (used when lock_timeout is not given)
    statement_timeout: str | None = None  # PostgreSQL statement_timeout per migration (default: host's)
    dry_run: bool = False
    rehearse: bool = True
    allow_hazards: bool = False  # apply even when the hazard lint reports errors
    probe: bool = False  # once done, read the fingerprint probe on the session (for the closing drift check)
    cache_dir: Path | None = None  # where the start-up hint of ``migrate.memo`` lives (None: no hint)


@dataclasses.dataclass
class StepResult:
    """One migration's fate in this run."""

    version: str
    description: str
    filename: str
    transactional: bool
    size_bytes: int
    status: StepStatus
    ms: int | None = None
    error: str | None = None
    location: str | None = None  # file:line of the failing statement
    attempts: int = 0  # how many times it was tried (lock retries)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LockWait:
    """One failed attempt to take a migration's locks: who blocked it and what happens next."""

    version: str
    attempt: int
    lock_timeout_ms: int  # the attempt's lock_timeout
    waited_s: float  # since the migration's first attempt began
    blockers: tuple[Blocker, ...]
    retry_in_s: float | None  # None: the budget is spent, no further attempt

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "attempt": self.attempt,
            "lock_timeout_ms": self.lock_timeout_ms,
            "waited_s": round(self.waited_s, 3),
            "retry_in_s": None if self.retry_in_s is None else round(self.retry_in_s, 3),
            "blockers": [dataclasses.asdict(b) for b in self.blockers],
        }

    def describe_blockers(self) -> str:
        return (
            "; ".join(b.describe() for b in self.blockers)
            or "a session that could not be identified (it may have ended)"
        )


@dataclasses.dataclass(frozen=True)
class SyncEvent:
    """Progress reported while a sync runs (the CLI renders these live)."""

    kind: Literal[
        "plan",
        "lock_wait",
        "locked",
        "backup_start",
        "backup_done",
        "begin",
        "done",
        "failed",
        "rehearsed",
        "lock_retry",
    ]
    step: StepResult | None = None
    message: str = ""
    plan: tuple[Migration, ...] = ()
    hazards: HazardReport | None = None
    wait: LockWait | None = None  # lock_retry: the failed attempt and its blockers
    holders: tuple[LockHolder, ...] = ()  # lock_wait: who holds the migration lock


EventCallback = Callable[[SyncEvent], None]
ConfirmCallback = Callable[[Sequence[Migration]], bool]
Reconnect = Callable[[], contextlib.AbstractContextManager[Remote]]


@dataclasses.dataclass
class SyncResult:
    """The whole run, as rendered by the CLI and recorded in the audit log."""

    host: str
    database: str
    action: Literal["sync", "dry-run"]
    outcome: Outcome = "nothing_to_do"
    steps: list[StepResult] = dataclasses.field(default_factory=list)
    backup: BackupResult | None = None
    error: str | None = None
    hint: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    remote_commands: int = 0
    durations: dict[str, float] = dataclasses.field(default_factory=dict)
    lock_holders: list[LockHolder] = dataclasses.field(default_factory=list)
    adopted_ledger: bool = False
    hazards: HazardReport | None = None
    lock_waits: list[LockWait] = dataclasses.field(default_factory=list)
    probe: Probe | None = None  # the facts and catalog fingerprint once done (``SyncOptions.probe``); None: not read

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "nothing_to_do", "dry_run")

    @property
    def versions(self) -> list[str]:
        return [s.version for s in self.steps]

    @property
    def applied(self) -> list[str]:
        return [s.version for s in self.steps if s.status == "applied"]

    def as_dict(self) -> dict[str, Any]:
        backup = None
        if self.backup is not None:
            backup = {
                "name": self.backup.name,
                "path": self.backup.path,
                "size_bytes": self.backup.size_bytes,
                "sha256": self.backup.sha256,
                "verified": self.backup.verified,
            }
        return {
            "host": self.host,
            "database": self.database,
            "action": self.action,
            "outcome": self.outcome,
            "ok": self.ok,
            "error": self.error,
            "hint": self.hint,
            "steps": [s.as_dict() for s in self.steps],
            "applied": self.applied,
            "backup": backup,
            "warnings": self.warnings,
            "remote_commands": self.remote_commands,
            "durations": {k: round(v, 3) for k, v in self.durations.items()},
            "lock_holders": [dataclasses.asdict(h) for h in self.lock_holders],
            "adopted_ledger": self.adopted_ledger,
            "hazards": self.hazards.to_dict() if self.hazards is not None else None,
            "lock_waits": [w.as_dict() for w in self.lock_waits],
        }

    def audit_record(self, who: str, git_commit: str | None) -> dict[str, Any]:
        return {
            "host": self.host,
            "database": self.database,
            "who": who,
            "git_commit": git_commit,
            "action": self.action,
            "versions": self.versions,
            "applied": self.applied,
            "outcome": self.outcome,
            "error": self.error,
            "durations": {k: round(v, 3) for k, v in self.durations.items()},
            "migration_ms": {s.version: s.ms for s in self.steps if s.ms is not None},
            "backup_file": self.backup.path if self.backup else None,
            "remote_commands": self.remote_commands,
            "lock_waits": [w.as_dict() for w in self.lock_waits],
        }


class SyncInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sync, carrying what the run had done (and what committed) for the audit log and the report."""

    def __init__(self, result: SyncResult) -> None:
        super().__init__("interrupted")
        self.result = result


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who applies: recorded in every ledger row."""

    applied_by: str
    git_commit: str | None
    tool_version: str = __version__


def _step(m: Migration, status: StepStatus = "planned") -> StepResult:
    return StepResult(m.version, m.description, m.filename, m.transactional, m.size_bytes, status)


def check_timeout(value: str, flag: str) -> str:
    """A PostgreSQL duration such as 10s, 500ms or 0 (refused otherwise: it is pasted into SQL)."""
    text = value.strip()
    if parse_duration(text, bare_unit="ms", whole=True) is None:
        raise UsageError(f"{flag}: expected a duration such as 10s, 500ms or 0, got {value!r}")
    return text


def duration_seconds(value: str, flag: str, *, bare_unit: str = "ms") -> float:
    """Seconds in a duration such as 5s, 500ms, 2min, 1.5s or 0; a bare number is in ``bare_unit`` (PostgreSQL: ms)."""
    seconds = parse_duration(value, bare_unit=bare_unit)
    if seconds is None:
        raise UsageError(f"{flag}: expected a duration such as 5s, 500ms, 2min or 0, got {value!r}")
    return seconds


def pg_duration(seconds: float) -> str:
    """A lock_timeout value for SQL, in whole milliseconds ('0' disables the timeout)."""
    return f"{max(0, round(seconds * 1000))}ms" if seconds > 0 else "0"


# ---------------------------------------------------------------- lock retries


@dataclasses.dataclass(frozen=True)
class LockRetryPolicy:
    """How a migration retries its locks: short attempts that grow, jittered pauses, one total budget.

    Attempt n waits at most ``min(cap, first * 2**(n-1))`` for each lock (0.5 s, 1 s, 2 s, 4 s, then the cap: the
    host's ``lock_timeout``), then pauses ``uniform(0.5, 1.5) * clamp(attempt timeout, 1 s, 5 s)`` so the traffic
    queued behind the attempt drains.  Attempts stop when the next one would start after ``budget`` seconds
    (counted from the migration's first attempt).  A budget of 0 means one attempt with the full cap; a cap of 0
    (lock_timeout disabled) means one attempt that waits as long as it takes.
    """

    cap: float
    budget: float
    first: float = 0.5
    pause_min: float = 1.0
    pause_max: float = 5.0

    @property
    def retries(self) -> bool:
        return self.budget > 0 and self.cap > 0

    def timeout_for(self, attempt: int, remaining: float | None = None) -> float:
        if not self.retries:
            return self.cap
        timeout = min(self.cap, self.first * 2.0 ** (attempt - 1))
        if remaining is not None:
            timeout = max(0.1, min(timeout, remaining))
        return timeout

    def pause_after(self, attempt: int, rng: random.Random) -> float:
        base = min(self.pause_max, max(self.pause_min, self.timeout_for(attempt)))
        return base * rng.uniform(0.5, 1.5)

    def next_attempt(self, attempt: int, elapsed: float, rng: random.Random) -> tuple[float, float] | None:
        """(pause, lock_timeout) of the attempt after ``attempt``, or None when the budget is spent."""
        if not self.retries:
            return None
        pause = self.pause_after(attempt, rng)
        remaining = self.budget - elapsed - pause
        if remaining < 0.1:
            return None
        return pause, self.timeout_for(attempt + 1, remaining)


def relations_of(statement: Statement) -> list[str]:
    """The relations a statement names (every RangeVar of its parse tree), quoted and qualified as written, for
    ``to_regclass``."""
    found: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            # a RangeVar: wrapped as {"RangeVar": {...}} in a generic node list, bare where the field's type says so
            rangevar = node.get("RangeVar", node)
            if isinstance(rangevar, dict) and isinstance(rangevar.get("relname"), str):
                schema = rangevar.get("schemaname")
                name = ident(str(rangevar["relname"]))
                found[f"{ident(str(schema))}.{name}" if schema else name] = None
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        walk(statement.parse_tree())
    except Exception:  # naming a blocker is best effort (pglast errors); the server accepted the statement itself
        return []
    return list(found)


def holders_query(pid: int, relations: Sequence[str]) -> str:
    """A JSON array (the shape of ``blockers_query``) of the other sessions holding or awaiting a lock on ``relations``.

    After a lock timeout our backend no longer waits, so ``pg_blocking_pids`` of it is empty: the sessions
    still holding locks on the relations of the statement that timed out are the ones that blocked it.
    Relation names go in as literals (``to_regclass``), never as SQL text.
    """
    regclasses = ", ".join(f"to_regclass({literal(name)})" for name in relations) or "NULL"
    return (
        "SELECT coalesce(json_agg(json_build_object("
        "'pid', a.pid, 'application_name', a.application_name, 'state', a.state, "
        "'user', a.usename, 'client', coalesce(host(a.client_addr), 'local socket'), "
        "'xact_age_s', round(extract(epoch FROM clock_timestamp() - a.xact_start)::numeric, 1), "
        "'query', left(split_part(btrim(a.query, E' \\n\\t\\r'), E'\\n', 1), 200)) ORDER BY a.pid), '[]') "
        "FROM pg_stat_activity a WHERE a.pid IN (SELECT l.pid FROM pg_locks l WHERE l.locktype = 'relation' "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        f"AND l.relation::regclass = ANY (ARRAY[{regclasses}]::regclass[]) "
        f"AND l.pid <> {int(pid)} AND l.pid <> pg_backend_pid())"
    )


class _BlockerWatch:
    """A second psql session that names who blocks our backend; started only when a lock wait has happened.

    Most syncs never wait for a lock, so they never start it (one remote command fewer).  When an attempt
    has timed out, the watch starts and first names the sessions still holding locks on the relations of
    the statement that timed out (:func:`holders_query`): the blocker of that attempt.  Then it polls
    ``pg_blocking_pids`` of our backend, so every later attempt that fails names its blockers too.
    """

    def __init__(
        self, remote: Remote, pid: int, lock_timeout: str, relations: Sequence[str] = (), interval: float = 0.2
    ) -> None:
        self.proc = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        self.mark = Markers()
        self.query = blockers_query(pid) + ";\n"
        self.interval = interval
        self.seen: dict[int, Blocker] = {}
        self.last: list[Blocker] = []
        self.guard = threading.Lock()
        self.stopped = threading.Event()
        self.proc.write(f"SET lock_timeout = '{lock_timeout}';\nSET application_name = 'opsagent blocker watch';\n")
        self.first: tuple[Blocker, ...] = ()
        if relations:
            with contextlib.suppress(RemoteError, ValueError, json.JSONDecodeError):
                self.first = tuple(decode_blockers(self._ask(holders_query(pid, relations) + ";\n", 30)))
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _ask(self, script: str, timeout: float) -> Any:
        """Run ``script`` (its last output line one JSON value) and decode that line."""
        self.proc.write(f"{script}{self.mark.psql('answered')}\n")
        lines: list[str] = []
        while True:
            line = self.proc.read_line(timeout)
            if line is None:
                raise RemoteError(
                    f"{self.proc.host}: the blocker watch session ended: {self.proc.stderr.strip()[:200]}"
                )
            marker = self.mark.parse(line)
            if marker is not None and marker.kind == "answered":
                return json.loads(lines[-1])
            if line.strip():
                lines.append(line)

    def _poll(self) -> None:
        with contextlib.suppress(RemoteError, ValueError, json.JSONDecodeError):
            while not self.stopped.is_set():
                self.proc.write(self.query)
                line = self.proc.read_line(30)
                if line is None:
                    return
                blockers = decode_blockers(json.loads(line) if line.strip() else [])
                if blockers:
                    with self.guard:
                        for blocker in blockers:
                            self.seen[blocker.pid] = blocker
                        self.last = blockers
                self.stopped.wait(self.interval)

    def query_json(self, script: str, timeout: float) -> Any:
        """Stop polling and run ``script`` (ending in one JSON value) on this already connected session.

        Used to settle an interrupted run: it saves starting sudo and psql when every second counts.
        """
        self.stopped.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RemoteError(f"{self.proc.host}: the blocker watch session does not answer")
        return self._ask(script, timeout)

    def take(self) -> tuple[Blocker, ...]:
        """The blockers seen since the last call (else the last ones seen at all)."""
        with self.guard:
            found = list(self.seen.values()) or self.last
            self.seen = {}
        return tuple(found)

    def close(self) -> None:
        self.stopped.set()
        self.proc.close_stdin()  # psql ends at end of input
        self.thread.join(0.5)
        self.proc.close()


# ---------------------------------------------------------------- session


class _Session:
    """The interactive psql session: send a script, read marker lines back.

    Its first statement sets ``lock_timeout``: no statement of the session waits longer for a lock.  The second
    makes the backend notice a vanished client during a long statement (``CLIENT_CHECK_SQL``).
    """

    def __init__(self, remote: Remote, application_name: str, lock_timeout: str) -> None:
        self.remote = remote
        # knowing pg_dump: the closing drift check's probe reads the server facts on this session
        self.proc: RemoteProcess = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"], knowing_pg_dump=True))
        self.closed = False
        self.lock_timeout = lock_timeout
        self.mark = Markers()  # the session's output also carries what the migrations print
        self.proc.write(
            f"SET lock_timeout = '{lock_timeout}';\n{CLIENT_CHECK_SQL}\n"
            f"SET application_name = {literal(application_name[:63])};\n"
            f"{self.mark.psql('pid')}\nSELECT json_build_object('pid', pg_backend_pid(), 'started', "
            "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()));\n"
        )
        self.backend_pid: int | None = None
        self.backend_start: str | None = None

    FIRST_FREE_LINE = 6  # script lines 1-5: lock_timeout, client check, application_name, the pid marker and query

    def identify(self, timeout: float) -> None:
        document = self.read_json("pid", timeout)
        self.backend_pid = int(document["pid"])
        self.backend_start = str(document["started"])

    def send(self, script: str) -> None:
        self.proc.write(script)

    def next_marker(self, timeout: float | None) -> list[str]:
        """The next marker line, split (``[kind, field, field, rest]``); RemoteError when psql ended first."""
        while True:
            line = self.proc.read_line(timeout)
            if line is None:
                raise RemoteError(
                    f"{self.remote.host.name}: psql ended unexpectedly: {self.error_text() or 'no message'}"
                )
            marker = self.mark.parse(line)
            if marker is not None:
                return marker.words(3)

    def next_line(self, timeout: float | None) -> str:
        line = self.proc.read_line(timeout)
        if line is None:
            raise RemoteError(f"{self.remote.host.name}: psql ended unexpectedly: {self.error_text() or 'no message'}")
        return line

    def read_json(self, tag: str, timeout: float | None) -> Any:
        """Send nothing; wait for marker ``tag`` then decode the JSON line that follows it."""
        while self.next_marker(timeout)[0] != tag:
            pass
        return json.loads(self.next_line(timeout))

    def error_text(self) -> str:
        self.proc.wait(2)
        lines = [line for line in self.proc.stderr.splitlines() if line.strip()]
        return " ".join(lines[:3])

    def close(self, wait: float = 10) -> None:
        """End of input: psql ends; ``wait`` for its exit status and last stderr (short after Ctrl-C)."""
        if self.closed:
            return
        self.closed = True
        self.proc.close_stdin()
        self.proc.wait(wait)
        self.proc.close()


# ---------------------------------------------------------------- planning


def read_state(remote: Remote, ledger: Ledger) -> LedgerState:
    """The ledger and lock holders in ONE remote command (used by status, baseline, repair)."""
    state = LedgerState.decode(
        remote.query_json(f"SET lock_timeout = '{remote.host.lock_timeout}';\n" + ledger.state_query())
    )
    state.refuse_foreign(ledger)  # Rails' or Django's table of that name: never read as ours, never written
    return state


Checked = dict[int, "tuple[Migration, list[str]] | OpsagentError"]


def statuses_for(
    migrations_dir: Path, state: LedgerState, *, strict: bool = True
) -> tuple[list[VersionStatus], list[Migration], list[str]]:
    """Every version's status; only files not yet applied are parsed (applied ones are compared by checksum).

    ``strict`` (sync, baseline, repair): a file that cannot be used raises its error (exit 2), as it always
    did.  Not strict (``status``): such a file is a status ``invalid`` with its error, beside all the others.
    """
    found = survey(migrations_dir)
    statuses, warnings = ledger_statuses(found, state, {}, strict=strict)
    return statuses, found.migrations, warnings


def ledger_statuses(
    found: Survey, state: LedgerState, checked: Checked, *, strict: bool
) -> tuple[list[VersionStatus], list[str]]:
    """Statuses of a surveyed folder against the ledger, pending files parsed and checked (results kept in
    ``checked``)."""
    statuses, more = check_pending(compute_status(found.migrations, state.rows, found.invalid), checked)
    for status in statuses:
        if status.migration is not None and status.migration.checked:
            checked.setdefault(status.migration.version_key, (status.migration, []))
    warnings = [*found.warnings, *more]
    if strict:
        statuses, ignored = refuse_invalid(statuses)
        warnings += ignored
    return statuses, warnings


def refuse_invalid(statuses: Sequence[VersionStatus]) -> tuple[list[VersionStatus], list[str]]:
    """Raise the first unusable file's error (in version order); a ``.sql`` file with a bad name is left out with
    a warning."""
    kept: list[VersionStatus] = []
    warnings: list[str] = []
    for status in statuses:
        if status.invalid is not None and status.invalid.version_key is None:
            warnings.append(f"{status.invalid.path}: ignored ({NAMING_HINT})")
            continue
        if status.invalid is not None:
            raise status.invalid.error
        kept.append(status)
    return kept, warnings


def _plan(statuses: list[VersionStatus], options: SyncOptions) -> Plan:
    return plan_pending(statuses, allow_out_of_order=options.allow_out_of_order, target=options.target)


# ---------------------------------------------------------------- scripts


@dataclasses.dataclass(frozen=True)
class _Placed:
    """A statement of a migration as placed in the streamed script."""

    migration: Migration
    statement: Statement
    first_line: int
    last_line: int


class _Script:
    """A psql script being built, remembering which script lines belong to which file statement."""

    def __init__(self, first_line: int) -> None:
        self.parts: list[str] = []
        self.line = first_line  # script line the next text starts on
        self.placed: list[_Placed] = []

    def add(self, text: str) -> None:
        if not text.endswith("\n"):
            text += "\n"
        self.parts.append(text)
        self.line += text.count("\n")

    def statement(self, migration: Migration, statement: Statement) -> None:
        # the terminator on its own line: a trailing "-- comment" must not swallow it
        start = self.line
        self.add(statement.text + "\n;")
        self.placed.append(_Placed(migration, statement, start, self.line - 1))

    def text(self) -> str:
        return "".join(self.parts)

    def locate(self, script_line: int) -> _Placed | None:
        for placed in self.placed:
            if placed.first_line <= script_line <= placed.last_line:
                return placed
        return None


def _failure_guard(at: str) -> str:
    """After a statement of the apply script: on error, skip everything that follows and remember where it failed."""
    return f"\\if :ERROR \\set opsagent_go false \\set opsagent_fail true \\set opsagent_at {at} \\endif"


def _apply_script(
    plan: Sequence[Migration],
    ledger: Ledger,
    identity: Identity,
    lock_timeouts: dict[str, str],
    first_attempt: str,
    session_lock_timeout: str,
    statement_timeout: str,
    last_version: str,
    first_line: int,
    mark: Markers,
) -> _Script:
    """One round of the apply: every migration of ``plan`` in its own transaction, until one fails.

    ``ON_ERROR_STOP`` is off inside: a failing statement sets ``opsagent_go`` false, psql skips the
    rest of the round (``\\if`` guards), rolls the open migration back and reports
    ``error VERSION WHERE SQLSTATE [untouched]``; the client decides whether to retry (lock
    timeouts) or to stop.  A no-transaction migration whose first statement failed on a lock
    without changing the catalog is "untouched": its started ledger row is deleted, so it can be
    retried (or left pending).
    """
    script = _Script(first_line)
    # Commits do not wait for the WAL flush, except the last one: flushing its WAL flushes every earlier
    # commit too (WAL is sequential), so the run is fully durable when it reports success.  A server
    # crash in between loses migrations and their ledger rows together, and a rerun applies them again.
    script.add(
        "\\set ON_ERROR_STOP 0\n\\set opsagent_go true\n\\set opsagent_fail false\nSET synchronous_commit = off;"
    )
    for m in plan:
        lock_timeout = lock_timeouts.get(m.version, first_attempt)  # a retried migration: its next attempt's timeout
        script.add(f"\\if :opsagent_go\n{mark.psql('begin', m.version)}")
        if m.version == last_version:
            script.add("RESET synchronous_commit;")
        if m.transactional:
            # one round trip for the three (psql's \\; joins them into one query string)
            script.add(
                f"BEGIN \\; SET LOCAL lock_timeout = '{lock_timeout}' \\; "
                f"SET LOCAL statement_timeout = '{statement_timeout}';"
            )
            elapsed = "(extract(epoch FROM clock_timestamp() - now()) * 1000)::integer"
        else:
            # the row first, marked unfinished: if a statement fails, the ledger says the file ran partway
            started = ledger.insert_sql(
                m,
                applied_by=identity.applied_by,
                git_commit=identity.git_commit,
                tool_version=identity.tool_version,
                execution_ms="NULL",
                success=False,
            )
            script.add(
                f"SELECT {CATALOG_FINGERPRINT} AS opsagent_fp \\gset\n{started};\n{_failure_guard('ledger')}\n"
                f"SET lock_timeout = '{lock_timeout}';\nSET statement_timeout = '{statement_timeout}';\n"
                "SELECT clock_timestamp() AS opsagent_t0 \\gset"
            )
            elapsed = "(extract(epoch FROM clock_timestamp() - :'opsagent_t0'::timestamptz) * 1000)::integer"
        script.add("\\endif")
        for index, statement in enumerate(m.body_statements):
            script.add("\\if :opsagent_go")
            script.statement(m, statement)
            script.add(f"{_failure_guard(str(index))} \\endif")  # the guard and the statement's endif: one line
        if m.transactional:
            record = ledger.insert_sql(
                m,
                applied_by=identity.applied_by,
                git_commit=identity.git_commit,
                tool_version=identity.tool_version,
                execution_ms=elapsed,
                returning="execution_ms AS opsagent_ms",
            )
            script.add(f"\\if :opsagent_go\n{record} \\gset\n{_failure_guard('ledger')}\n\\endif")
            script.add(f"\\if :opsagent_go\nCOMMIT;\n{_failure_guard('commit')}\n\\endif")
            script.add(
                "\\if :opsagent_fail\nROLLBACK;\n"
                f"{mark.psql('error', m.version, ':opsagent_at', ':LAST_ERROR_SQLSTATE')}\n"
                "\\set opsagent_fail false\n\\endif"
            )
        else:
            record = ledger.finish_sql(m, execution_ms=elapsed, returning="execution_ms AS opsagent_ms")
            restore = f"SET lock_timeout = '{session_lock_timeout}';\nRESET statement_timeout;"
            script.add(f"\\if :opsagent_go\n{restore}\n{record} \\gset\n{_failure_guard('ledger')}\n\\endif")
            delete = f"DELETE FROM {ledger.table} WHERE version = {literal(m.version)} AND success IS false;"
            script.add(
                f"\\if :opsagent_fail\n\\set opsagent_state :LAST_ERROR_SQLSTATE\n{restore}\n"
                "\\set opsagent_untouched false\n"
                f"SELECT (:'opsagent_at' = '0' AND :'opsagent_state' = '{LOCK_NOT_AVAILABLE}' "
                f"AND {CATALOG_FINGERPRINT} = "
                ":'opsagent_fp') AS opsagent_untouched \\gset\n"
                f"\\if :opsagent_untouched\n{delete}\n\\endif\n"
                f"{mark.psql('error', m.version, ':opsagent_at', ':opsagent_state', ':opsagent_untouched')}\n"
                "\\set opsagent_fail false\n\\endif"
            )
        script.add(f"\\if :opsagent_go\n{mark.psql('done', m.version, ':opsagent_ms')}\n\\endif")
    script.add(f"\\set ON_ERROR_STOP 1\n{mark.psql('end')}")
    return script


def _rehearse_script(
    plan: Sequence[Migration],
    lock_timeout: str,
    statement_timeout: str,
    first_line: int,
    mark: Markers,
    *,
    stop_on_lock: bool,
) -> _Script:
    """One transaction, a savepoint per migration, rolled back at the end; psql keeps going after errors.

    With ``stop_on_lock`` a lock timeout ends the attempt (``locked VERSION``): the client rolls
    everything back, pauses and rehearses again, rather than holding the locks the earlier
    migrations took while it waits.
    """
    script = _Script(first_line)
    script.add(
        f"\\set ON_ERROR_STOP 0\n\\set opsagent_go true\nBEGIN;\nSET LOCAL lock_timeout = '{lock_timeout}';\n"
        f"SET LOCAL statement_timeout = '{statement_timeout}';"
    )
    for m in plan:
        if not m.transactional:
            continue
        script.add(
            f"\\if :opsagent_go\n{mark.psql('begin', m.version)}\n"
            "\\set opsagent_failed 0\nSAVEPOINT opsagent_rehearsal;\n"
            "SELECT clock_timestamp() AS opsagent_t0 \\gset"
        )
        for index, statement in enumerate(m.body_statements):
            script.add("\\if :opsagent_failed\n\\else")
            script.statement(m, statement)
            script.add(
                f"\\if :ERROR\n\\set opsagent_failed 1\n\\set opsagent_state :LAST_ERROR_SQLSTATE\n"
                f"{mark.psql('error', m.version, str(index), ':LAST_ERROR_SQLSTATE', ':LAST_ERROR_MESSAGE')}\n"
                "\\endif\n\\endif"
            )
        locked = ""
        if stop_on_lock:
            locked = (
                f"SELECT :'opsagent_state' = '{LOCK_NOT_AVAILABLE}' AS opsagent_locked \\gset\n"
                f"\\if :opsagent_locked\n\\set opsagent_go false\n{mark.psql('locked', m.version)}\n\\endif\n"
            )
        script.add(
            "\\if :opsagent_failed\nROLLBACK TO SAVEPOINT opsagent_rehearsal;\n"
            f"{locked}{mark.psql('settled', m.version)}\n\\else\nRELEASE SAVEPOINT opsagent_rehearsal;\n"
            "SELECT round(extract(epoch FROM clock_timestamp() - :'opsagent_t0'::timestamptz) * 1000)::integer "
            "AS opsagent_ms \\gset\n"
            f"{mark.psql('done', m.version, ':opsagent_ms')}\n\\endif\n\\endif"
        )
    script.add(f"ROLLBACK;\n\\set ON_ERROR_STOP 1\n{mark.psql('end')}")
    return script


def _settle_script(ledger: Ledger, lock_timeout: str, pid: int | None, started: str | None) -> str:
    """Stop our old backend if it still runs (wait until it is gone), then read the ledger: what really committed.

    The pid and start time are passed as data (``set_config``), never pasted into the DO body.
    """
    stop = ""
    if pid is not None and started is not None:
        stop = resources.fill(resources.sql("sync_settle_stop"), PID=literal(str(int(pid))), STARTED=literal(started))
    return f"SET lock_timeout = '{lock_timeout}';\n{stop}" + ledger.state_query()


# ---------------------------------------------------------------- the run


@dataclasses.dataclass(frozen=True)
class _RoundFailure:
    """Where a round of the apply script stopped."""

    version: str
    at: str  # statement index, "ledger" or "commit"
    sqlstate: str
    untouched: bool  # a no-transaction migration of which nothing ran (its started row was deleted)


class _Lost(Exception):
    """psql's output ended before the round did: psql or the SSH connection is gone."""


_LINT_MODULE = "opsagent.migrate.hazards"  # pglast and the lint: what a sync with pending files loads
_COMPARISON_MODULE = "opsagent.schema.drift"  # what a closing drift check loads when its verdict is not remembered


def _prefetch(module: str) -> threading.Thread:
    """Import ``module`` in a thread, started when the client is about to wait on the server (the session's start,
    the apply), so that the step that needs it finds it loaded.  A failed import is left for the real one to
    report."""

    def load() -> None:
        with contextlib.suppress(Exception):  # the check's own import raises it again, where it is handled
            importlib.import_module(module)

    thread = threading.Thread(target=load, name="opsagent-prefetch", daemon=True)
    thread.start()
    return thread


class SyncRun:
    """One sync or dry-run against one database (the remote connection is the caller's)."""

    def __init__(
        self,
        remote: Remote,
        migrations_dir: Path,
        options: SyncOptions,
        identity: Identity,
        *,
        on_event: EventCallback | None = None,
        confirm: ConfirmCallback | None = None,
        reconnect: Reconnect | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.remote = remote
        self.host = remote.host
        self.migrations_dir = migrations_dir
        self.options = options
        self.identity = identity
        self.on_event = on_event or (lambda _event: None)
        self.confirm = confirm or (lambda _plan: True)
        self.reconnect: Reconnect = reconnect or (lambda: open_remote(remote.host))
        self.rng = rng or random.Random()
        self.ledger = Ledger.for_host(self.host)
        self.result = SyncResult(self.host.name, self.host.database, "dry-run" if options.dry_run else "sync")
        flag = (
            "--lock-timeout"
            if options.lock_timeout
            else "--migration-lock-timeout"
            if options.migration_lock_timeout
            else "lock_timeout"
        )
        cap = duration_seconds(options.lock_timeout or options.migration_lock_timeout or self.host.lock_timeout, flag)
        budget = duration_seconds(
            options.lock_retry_for or self.host.lock_retry_for,
            "--lock-retry-for" if options.lock_retry_for else "lock_retry_for",
            bare_unit="s",
        )
        self.policy = LockRetryPolicy(cap=cap, budget=budget)
        self.session_lock_timeout = pg_duration(cap)
        self.statement_timeout = check_timeout(
            options.statement_timeout or self.host.statement_timeout, "--statement-timeout"
        )
        self._phase = "plan"
        self._line = _Session.FIRST_FREE_LINE  # script line where the next sent text starts
        self._watch: _BlockerWatch | None = None
        self._current: StepResult | None = (
            None  # the migration psql is running (for the report when the outcome is unknown)
        )
        self._checked: Checked = {}  # pending files parsed and checked, by version key (parsed once per run)
        self._session: _Session | None = None
        self._comparison: threading.Thread | None = None  # the closing check's modules, loading during the apply
        self._lock_failure: tuple[Migration | None, str] = (None, "")  # rehearsal: the statement whose lock timed out

    def _send(self, session: _Session, text: str) -> None:
        session.send(text)
        self._line += text.count("\n")

    def run(self) -> SyncResult:
        started = time.monotonic()
        before = self.remote.command_count
        found = survey(
            self.migrations_dir
        )  # read and checksummed; only the pending files get parsed (after the ledger read)
        session = self._session = _Session(
            self.remote, f"opsagent {self.result.action} {self.identity.applied_by}", self.session_lock_timeout
        )
        interrupted = False
        # when something is likely pending (``migrate.memo``: not this very set applied at the end of the last sync
        # from here), the parser and the hazard lint load while the session starts on the server; joined before
        # anything else is imported
        versions = versions_digest(m.version_key for m in found.migrations)
        hint = likely_pending(self.options.cache_dir, self.host.name, self.host.database, versions)
        parser = _prefetch(_LINT_MODULE) if found.migrations and hint else None
        try:
            session.identify(self.host.command_timeout)
            if parser is not None:
                parser.join()
            self._run(session, found)
            if self._comparison is not None:
                self._comparison.join()  # before the probe's own imports: one importer of these modules at a time
            if self.options.probe and self.result.ok and not self.options.dry_run:
                self.result.probe = self._probe(session)
            if self.result.ok and not self.options.dry_run and self.options.target is None and not found.invalid:
                remember_applied(self.options.cache_dir, self.host.name, self.host.database, versions)
        except KeyboardInterrupt:
            self._interrupted(session)
            interrupted = True
            raise SyncInterrupted(self.result) from None
        except BaseException:
            if self._phase == "apply":  # failed (timeout) while psql still runs the script
                self._settle(session, "failed")
            raise
        finally:
            self._stop_watch()
            session.close(wait=0.5 if interrupted else 10)
            self.result.remote_commands = self.remote.command_count - before
            self.result.durations["total"] = time.monotonic() - started
        return self.result

    def _probe(self, session: _Session) -> Probe | None:
        """The fingerprint probe on this session, after everything it did (``schema.fingerprint``): the closing drift
        check then needs no command of its own when its verdict is remembered.  None when it cannot be read."""
        from ..schema.fingerprint import probe_from, probe_script

        start_read = bool(self.result.applied) and self.options.cache_dir is not None
        end = session.mark.psql("probe-end")
        self._send(session, f"{probe_script(session.mark)}{end}\n")
        lines: list[str] = []
        try:
            while (line := session.proc.read_line(self.host.command_timeout)) is not None:
                marker = session.mark.parse(line)
                if start_read and marker is not None and marker.kind == "facts":  # the fingerprint is read
                    self._start_closing_read()
                    start_read = False
                if marker is not None and marker.kind == "probe-end":
                    return probe_from(session.mark, "\n".join(lines), self.host.name)
                lines.append(line.rstrip("\n"))
        except OpsagentError:
            pass
        return None

    def _interrupted(self, session: _Session) -> None:
        """Ctrl-C: stop the server-side work; say what committed (only an apply can have committed anything)."""
        self.result.outcome = "interrupted"
        self.result.error = "interrupted"
        if self._phase == "apply":
            self._settle(session, "interrupted")
        else:
            self.result.error = "interrupted before anything was applied"

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _read_state(self, session: _Session) -> LedgerState:
        """Ledger and lock holders: one exchange on the session."""
        self._send(session, f"{session.mark.psql('state')}\n" + self.ledger.state_query())
        return LedgerState.decode(session.read_json("state", self.host.command_timeout))

    def query_json(self, sql: str, database: str | None = None) -> Any:
        """Run one query returning a JSON value on the sync's own session (the hazard lint's table sizes: no new
        command)."""
        if self._session is None or database is not None:
            raise RemoteError(f"{self.host.name}: no sync session to ask on")
        self._send(self._session, f"{self._session.mark.psql('answer')}\n{sql.strip().rstrip(';')};\n")
        return self._session.read_json("answer", self.host.command_timeout)

    def _run(self, session: _Session, found: Survey) -> None:
        state = self._read_state(session)
        plan = self._checked_plan(found, state)
        if plan is None:
            return
        if self.options.probe and not self.options.dry_run:
            self._hold_closing_read()
        from .hazards import assess

        # linted once; the live size of the tables its findings name comes over this session (one exchange, if any)
        hazards = self.result.hazards = assess(self, plan, self.host)
        self.on_event(SyncEvent("plan", plan=tuple(plan), hazards=hazards))
        if hazards.blocking and not self.options.allow_hazards and not self.options.dry_run:
            self.result.outcome = "refused"
            errors = hazards.at_least("error")
            self.result.error = (
                f"refusing to apply: {len(errors)} hazard error{'s' if len(errors) > 1 else ''}: "
                + "; ".join(f"{f.location} {f.rule}" for f in errors)
            )
            self.result.hint = "nothing was changed; review with 'inv lint --host', or rerun with --allow-hazards"
            return
        if self.options.dry_run:
            self._dry_run(session, plan)
            return
        if not self.confirm(plan):
            self.result.outcome = "declined"
            self.result.error = "not confirmed: nothing was applied"
            return
        locked = self._lock(session, state)
        if locked is None:
            return
        state = locked
        plan = self._checked_plan(found, state)
        if plan is None:
            return
        if self.options.backup and not self._backup(plan):
            return
        if self.options.probe:
            self._comparison = _prefetch(_COMPARISON_MODULE)
        self._apply(
            session, plan, self.ledger.ensure_sql(state.columns) if (not state.exists or state.adoption_needed) else ""
        )
        self.result.adopted_ledger = state.adoption_needed

    def _hold_closing_read(self) -> None:
        """Something is pending and a closing drift check follows: start its live read now, held until the check
        asks for it (``schema.liveread``), so that its exec, the server's login shell and sudo cost nothing then."""
        from ..schema.exclusions import ledger_exclusions
        from ..schema.liveread import hold_live_read

        with contextlib.suppress(OpsagentError):  # only a head start: the check starts its own command without it
            hold_live_read(self.remote, self.host.database, ledger_exclusions(self.host))

    def _start_closing_read(self) -> None:
        """Migrations were applied: the catalog has new rows, for which no verdict can be remembered yet (a row
        version never comes back), so the closing check will read the live side; its held read starts now, while
        the probe reads the server facts.  Only after the probe's fingerprint: the check keeps a verdict only when
        the fingerprint read before its read (this one) equals the one read after it, and a dump whose snapshot
        came before that first fingerprint would escape the comparison.  When the probe recalls a verdict after
        all (migrations that wrote data only), the read is killed with its channel, unread."""
        from ..schema.drift import start_closing_read
        from ..schema.exclusions import ledger_exclusions

        with contextlib.suppress(OpsagentError):
            start_closing_read(self.remote, ledger_exclusions(self.host))

    def _checked_plan(self, found: Survey, state: LedgerState) -> list[Migration] | None:
        """The plan against this ledger state; an unusable file raises its error (exit 2) before anything runs."""
        state.refuse_foreign(self.ledger)  # before any plan, lock or write: the table belongs to another tool
        statuses, warnings = ledger_statuses(found, state, self._checked, strict=True)
        self.result.warnings.extend(w for w in warnings if w not in self.result.warnings)
        plan = _plan(statuses, self.options)
        self.result.steps = [_step(m) for m in plan.pending]
        if plan.problems:
            self.result.outcome = "refused"
            self.result.error = plan.refusal()
            self.result.hint = "nothing was changed; 'inv status' shows every version"
            return None
        if not plan.pending:
            self.result.outcome = "nothing_to_do"
            return None
        return plan.pending

    # -- lock and backup

    def _lock(self, session: _Session, state: LedgerState) -> LedgerState | None:
        """Take the migration lock, polling from here with backoff (Ctrl-C stops the wait at once), bounded."""
        started = time.monotonic()
        deadline = started + self.options.advisory_lock_wait
        delay = 0.1
        shown: tuple[int, ...] = ()
        holders = state.holders
        while True:
            self._send(session, f"{session.mark.psql('lock')}\n{self.ledger.try_lock_sql()};\n")
            if session.read_json("lock", self.host.command_timeout) is True:
                break
            self._send(session, f"{session.mark.psql('holders')}\n{self.ledger.holders_query()};\n")
            holders = LedgerState.decode({"holders": session.read_json("holders", self.host.command_timeout)}).holders
            now = time.monotonic()
            if now >= deadline:
                self.result.durations["lock_wait"] = now - started
                self.result.outcome = "lock_timeout"
                self.result.lock_holders = holders
                who = "; ".join(h.describe() for h in holders) or "a session that has since ended"
                self.result.error = (
                    f"another sync holds the migration lock on {self.host.database} "
                    f"(waited {self.options.advisory_lock_wait:g}s): held by {who}"
                )
                self.result.hint = "wait for it to finish, or raise --advisory-lock-wait; nothing was changed"
                return None
            pids = tuple(h.pid for h in holders)
            if pids != shown:
                shown = pids
                self.on_event(
                    SyncEvent(
                        "lock_wait",
                        message="waiting for " + ("; ".join(h.describe() for h in holders) or "another sync"),
                        holders=tuple(holders),
                    )
                )
            time.sleep(min(deadline - now, delay * self.rng.uniform(0.7, 1.3)))
            delay = min(2.0, delay * 1.5)
        self._send(session, f"{session.mark.psql('state')}\n" + self.ledger.state_query())
        fresh = LedgerState.decode(session.read_json("state", self.host.command_timeout))
        self.result.durations["lock_wait"] = time.monotonic() - started
        self.on_event(SyncEvent("locked"))
        return fresh

    def _backup(self, plan: Sequence[Migration]) -> bool:
        label = f"pre-{plan[0].version}..{plan[-1].version}"
        self.on_event(SyncEvent("backup_start", message=label))
        started = time.monotonic()
        from ..backup import create_backup

        try:
            self.result.backup = create_backup(self.remote, label)
        except OpsagentError as exc:
            self.result.outcome = "backup_failed"
            self.result.error = f"backup failed, nothing applied: {exc.message}"
            self.result.hint = exc.hint
            return False
        finally:
            self.result.durations["backup"] = time.monotonic() - started
        self.on_event(SyncEvent("backup_done", message=self.result.backup.path))
        return True

    # -- apply

    def _blockers(self, migration: Migration | None = None, at: str = "") -> tuple[Blocker, ...]:
        """Who blocked the attempt that just timed out on statement ``at`` of ``migration`` ("ledger": the ledger row).

        The first time, this starts the blocker watch (one remote command, only in runs that waited for a lock),
        which names the sessions still holding locks on that statement's relations.
        """
        if self._watch is not None:
            return self._watch.take()
        if self._session is None or self._session.backend_pid is None:
            return ()
        relations: list[str] = []
        if at == "ledger":
            relations = [self.ledger.table]
        elif migration is not None and at.isdigit() and int(at) < len(migration.body_statements):
            relations = relations_of(migration.body_statements[int(at)])
        try:
            self._watch = _BlockerWatch(self.remote, self._session.backend_pid, self.session_lock_timeout, relations)
        except RemoteError:
            return ()  # blockers then go unnamed; the run itself does not depend on the watch
        return self._watch.first

    def _apply(self, session: _Session, plan: Sequence[Migration], ensure_sql: str) -> None:
        steps = {s.version: s for s in self.result.steps}
        for step in steps.values():
            step.status = "untouched"
        started = time.monotonic()
        self._phase = "apply"
        if ensure_sql:  # the ledger table (ON_ERROR_STOP is on: a failure ends psql and is reported as such)
            self._send(session, f"{ensure_sql}{session.mark.psql('ledger')}\nSELECT 'true';\n")
            session.read_json("ledger", self.host.command_timeout)
        self._apply_rounds(session, plan, steps)
        self._phase = "done"  # not on an exception: run() must know psql may still be running the script
        self.result.durations["apply"] = time.monotonic() - started

    def _apply_rounds(self, session: _Session, plan: Sequence[Migration], steps: dict[str, StepResult]) -> None:
        """Rounds of the apply script: again from a migration whose locks were not available, until done or given up."""
        position = {m.version: i for i, m in enumerate(plan)}
        index = 0
        timeouts: dict[str, str] = {}  # the next attempt's lock_timeout of a migration being retried
        first_try: dict[str, float] = {}
        while index < len(plan):
            script = _apply_script(
                plan[index:],
                self.ledger,
                self.identity,
                timeouts,
                pg_duration(self.policy.timeout_for(1)),
                self.session_lock_timeout,
                self.statement_timeout,
                plan[-1].version,
                self._line,
                session.mark,
            )
            try:
                failure = self._round(session, script, steps, first_try)
            except _Lost:
                self._settle(session, "lost")
                return
            except RemoteError as exc:  # no answer within command_timeout, or the script could not be sent
                self._settle(session, "failed", exc.message)
                return
            if failure is None:
                self.result.outcome = "applied"
                return
            step = steps[failure.version]
            if failure.sqlstate == LOCK_NOT_AVAILABLE and (step.transactional or failure.untouched):
                following = self._lock_retry(step, first_try[step.version], plan[position[step.version]], failure.at)
                if following is not None:
                    timeouts = {step.version: pg_duration(following)}
                    index = position[step.version]
                    continue
                self._locks_exhausted(step)
                return
            self._failed(session, script, step, failure)
            return

    def _round(
        self, session: _Session, script: _Script, steps: dict[str, StepResult], first_try: dict[str, float]
    ) -> _RoundFailure | None:
        """Stream one round of the apply script and follow its markers to ``end``."""
        text = script.text()
        self._line += text.count("\n")
        writer = threading.Thread(target=self._write_all, args=(session, text), daemon=True)
        writer.start()
        failure: _RoundFailure | None = None
        while True:
            line = session.proc.read_line(self.host.command_timeout)
            if line is None:
                raise _Lost
            marker = session.mark.parse(line)
            if marker is None:
                continue
            parts = marker.words()
            if parts[0] == "begin":
                step = steps[parts[1]]
                step.attempts += 1
                first_try.setdefault(step.version, time.monotonic())
                self._current = step
                self.on_event(SyncEvent("begin", step))
            elif parts[0] == "done":
                step = steps[parts[1]]
                step.status, step.ms = "applied", _int(parts[2] if len(parts) > 2 else "")
                self._current = None
                self.on_event(SyncEvent("done", step))
            elif parts[0] == "error":
                failure = _RoundFailure(
                    parts[1],
                    parts[2] if len(parts) > 2 else "",
                    parts[3] if len(parts) > 3 else "",
                    len(parts) > 4 and parts[4] in ("t", "true", "on"),
                )
            elif parts[0] == "end":
                writer.join(5)
                return failure

    def _write_all(self, session: _Session, text: str) -> None:
        with contextlib.suppress(RemoteError):  # the reader sees the end of output and reports
            session.send(text)

    def _lock_retry(self, step: StepResult, first_try: float, migration: Migration, at: str) -> float | None:
        """After a lock timeout: report who blocks, pause, and return the next attempt's lock_timeout (None: give
        up)."""
        elapsed = time.monotonic() - first_try
        following = self.policy.next_attempt(step.attempts, elapsed, self.rng)
        timeout = self.policy.timeout_for(step.attempts)
        asked = time.monotonic()
        blockers = self._blockers(migration, at)
        if following is not None:  # naming the blockers (perhaps starting the watch) is part of the pause
            following = (max(0.0, following[0] - (time.monotonic() - asked)), following[1])
        wait = LockWait(
            step.version,
            step.attempts,
            round(timeout * 1000),
            elapsed,
            blockers,
            None if following is None else following[0],
        )
        self.result.lock_waits.append(wait)
        self.on_event(SyncEvent("lock_retry", step, wait=wait, message=wait.describe_blockers()))
        if following is None:
            return None
        time.sleep(following[0])
        return following[1]

    def _locks_exhausted(self, step: StepResult) -> None:
        wait = self.result.lock_waits[-1]
        step.status = "timed_out"
        budget = (
            f"{self.policy.budget:g}s of lock retries"
            if self.policy.retries
            else f"lock_timeout {self.session_lock_timeout}"
        )
        step.error = (
            f"could not take its locks within {budget} ({step.attempts} attempt{'s' if step.attempts > 1 else ''})"
        )
        self.result.outcome = "lock_timeout"
        self.result.error = (
            f"{step.filename}: {step.error}: blocked by {wait.describe_blockers()}; nothing of it was applied"
        )
        self.result.hint = (
            "earlier migrations stay applied and recorded; end the blocking session or rerun when it is done "
            "(raise lock_retry_for / --lock-retry-for to wait longer)"
        )
        self.on_event(SyncEvent("failed", step, message=self.result.error))

    def _failed(self, session: _Session, script: _Script, step: StepResult, failure: _RoundFailure) -> None:
        session.close()  # psql has finished the round: its stderr holds the error with its script line
        message, location = _psql_error(session.proc.stderr, script)
        self.result.outcome = "failed"
        if failure.at.isdigit() and location is None:
            placed = step_statement(script, step.version, int(failure.at))
            location = f"{placed.migration.path}:{placed.statement.line}" if placed else None
        step.status = "failed"
        step.location = location
        if not message:
            message = f"failed with SQLSTATE {failure.sqlstate or 'unknown'} ({failure.at})"
        partial = ""
        if not step.transactional and not failure.untouched:
            partial = (
                " (runs outside a transaction: its earlier statements stay applied and its "
                "ledger row says it failed partway; check, then 'inv repair' before rerunning)"
            )
        step.error = message
        self.result.error = f"{location or step.filename}: {message}{partial}"
        self.result.hint = "earlier migrations stay applied and recorded; fix the file and rerun sync to continue"
        self.on_event(SyncEvent("failed", step, message=self.result.error))

    # -- when the outcome is not known: find it out

    def _settle(self, session: _Session, outcome: Literal["lost", "interrupted", "failed"], detail: str = "") -> None:
        """Stop our backend if it still runs, then read the ledger and say what committed (never a guess)."""
        current = self._current
        cause, before = {
            "lost": ("the connection was lost", "before the connection was lost"),
            "interrupted": ("the run was interrupted", "before the interruption"),
            "failed": ("the run failed", "before the failure"),
        }[outcome]
        if detail:
            cause = f"{cause} ({detail})"
        script = _settle_script(self.ledger, self.session_lock_timeout, session.backend_pid, session.backend_start)
        state: LedgerState | None = None
        problem = ""
        transport = self.remote.connection.client.get_transport()
        if outcome != "lost" and self._watch is not None:  # a session that is already connected: fastest
            with contextlib.suppress(OpsagentError, ValueError):
                state = LedgerState.decode(self._watch.query_json(script, timeout=10))
        if state is None and outcome != "lost" and transport is not None and transport.is_active():
            try:
                state = LedgerState.decode(self.remote.query_json(script, timeout=30))
            except OpsagentError as exc:
                problem = exc.message
        if state is None:  # the connection is gone (or not to be trusted): one new connection, same host config
            try:
                with self.reconnect() as fresh:
                    state = LedgerState.decode(fresh.query_json(script, timeout=30))
            except OpsagentError as exc:
                problem = exc.message
        self.result.outcome = "interrupted" if outcome == "interrupted" else "lost" if outcome == "lost" else "failed"
        if state is None:
            which = current.version if current is not None else "the migration that was running"
            if current is not None:
                current.status, current.error = "failed", "outcome unknown: the ledger could not be read again"
            self.result.error = (
                f"{cause}; whether {which} committed is unknown: could not read the ledger again ({problem})"
            )
            self.result.hint = f"run 'inv status --host {self.host.name}' to see what is recorded as applied"
            return
        rows = {row.version: row for row in state.rows}
        notes: list[str] = []
        for step in self.result.steps:
            row = rows.get(step.version)
            if step.status == "applied":
                continue
            if row is not None and row.success:
                step.status = "applied"
                notes.append(f"{step.version} committed {before}")
            elif step is current or (current is not None and step.version == current.version):
                step.status = "failed"
                if row is not None:
                    step.error = "ran partway (outside a transaction): its ledger row says it did not finish"
                    notes.append(f"{step.version} ran partway: check it, then 'inv repair'")
                else:
                    step.error = "rolled back" if step.transactional else "did not run"
                    notes.append(
                        f"{step.version} was rolled back" if step.transactional else f"{step.version} did not run"
                    )
        self.result.error = f"{cause}: " + ("; ".join(notes) if notes else "nothing had been applied by this run")
        self.result.hint = (
            f"run 'inv status --host {self.host.name}' to see every version, then rerun sync to apply the rest"
        )
        if self._current is not None:
            self.on_event(SyncEvent("failed", self._current, message=self.result.error))

    # -- dry run

    def _dry_run(self, session: _Session, plan: Sequence[Migration]) -> None:
        self.result.outcome = "dry_run"
        for step, m in zip(self.result.steps, plan, strict=True):
            step.status = "planned" if m.transactional or not self.options.rehearse else "not_rehearsed"
            if not m.transactional:
                step.error = "not rehearsed (runs outside a transaction)"
        if not self.options.rehearse:
            return
        cap = duration_seconds(self.host.rehearse_lock_timeout, "rehearse_lock_timeout")
        policy = dataclasses.replace(self.policy, cap=cap)
        rehearse_statement = check_timeout(self.host.rehearse_statement_timeout, "rehearse_statement_timeout")
        steps = {s.version: s for s in self.result.steps}
        started = time.monotonic()
        attempt, timeout = 1, policy.timeout_for(1)
        try:
            while True:
                for step in self.result.steps:
                    if step.status != "not_rehearsed":
                        step.status, step.error, step.location, step.ms = "planned", None, None, None
                script = _rehearse_script(
                    plan,
                    pg_duration(timeout),
                    rehearse_statement,
                    self._line,
                    session.mark,
                    stop_on_lock=policy.retries,
                )
                self._send(session, script.text())
                locked = self._read_rehearsal(session, script, steps, plan)
                if locked is None:
                    break
                step = steps[locked]
                step.attempts = attempt
                elapsed = time.monotonic() - started
                following = policy.next_attempt(attempt, elapsed, self.rng)
                asked = time.monotonic()
                blockers = self._blockers(*self._lock_failure)
                if following is not None:
                    following = (max(0.0, following[0] - (time.monotonic() - asked)), following[1])
                wait = LockWait(
                    locked,
                    attempt,
                    round(timeout * 1000),
                    elapsed,
                    blockers,
                    None if following is None else following[0],
                )
                self.result.lock_waits.append(wait)
                self.on_event(SyncEvent("lock_retry", step, wait=wait, message=wait.describe_blockers()))
                if following is None:
                    self._rehearsal_locked(step, wait, policy)
                    break
                time.sleep(following[0])
                attempt, timeout = attempt + 1, following[1]
        finally:
            self._stop_watch()
        session.close()  # psql has finished: its stderr holds every error with its script line
        _refine_locations(session.proc.stderr, script, self.result.steps)
        self.result.durations["rehearsal"] = time.monotonic() - started
        self._rehearsal_outcome()

    def _rehearsal_locked(self, step: StepResult, wait: LockWait, policy: LockRetryPolicy) -> None:
        step.status = "timed_out"
        step.error = (
            f"not rehearsed: timed out waiting for a lock "
            f"({policy.budget:g}s of lock retries, {wait.attempt} attempts; "
            f"lock held by {wait.describe_blockers()})"
        )
        later = False
        for other in self.result.steps:
            if other is step:
                later = True
            elif later and other.status == "planned":
                other.status = "not_rehearsed"
                other.error = f"not rehearsed: {step.version} could not take its locks"

    def _rehearsal_outcome(self) -> None:
        failing = [s for s in self.result.steps if s.status == "would_fail"]
        timed = [s for s in self.result.steps if s.status == "timed_out"]
        if not failing and not timed:
            return
        self.result.outcome = "rehearsal_failed" if failing else "lock_timeout"
        parts = [f"would fail: {s.error} at {s.location}" for s in failing]
        parts += [f"{s.filename}: {s.error}" for s in timed]
        self.result.error = "; ".join(parts)
        if timed and not failing:
            self.result.hint = "nothing was changed; end the blocking session or rerun when it is done"

    def _read_rehearsal(
        self, session: _Session, script: _Script, steps: dict[str, StepResult], plan: Sequence[Migration]
    ) -> str | None:
        """Follow one rehearsal attempt; returns the version that stopped it on a lock (None: it ran to the end)."""
        locked: str | None = None
        while True:
            parts = session.next_marker(self.host.command_timeout)
            kind = parts[0]
            if kind == "end":
                return locked
            if kind == "error":
                rest = parts[3] if len(parts) > 3 else ""
                sqlstate, _, message = rest.partition(" ")
                step = steps[parts[1]]
                statement = step_statement(script, step.version, int(parts[2]))
                step.location = f"{statement.migration.path}:{statement.statement.line}" if statement else step.filename
                step.error = message
                step.status = "timed_out" if sqlstate in _TIMEOUT_STATES else "would_fail"
                if sqlstate == LOCK_NOT_AVAILABLE:
                    self._lock_failure = (next((m for m in plan if m.version == step.version), None), parts[2])
            elif kind == "locked":
                locked = parts[1]
            elif kind == "settled":
                step = steps[parts[1]]
                if step.status == "timed_out" and locked is None:
                    held = "; ".join(b.describe() for b in self._blockers(*self._lock_failure)) or "another session"
                    step.error = f"not rehearsed: timed out ({step.error}; lock held by {held})"
                if locked is None:
                    self.on_event(SyncEvent("rehearsed", step))
            elif kind == "done":
                step = steps[parts[1]]
                step.status, step.ms = "would_apply", _int(parts[2] if len(parts) > 2 else "")
                self.on_event(SyncEvent("rehearsed", step))


def _refine_locations(stderr: str, script: _Script, steps: Sequence[StepResult]) -> None:
    """Point rehearsal failures at the exact line (psql's ``LINE n`` within the statement)."""
    first: dict[str, str] = {}
    lines = stderr.splitlines()
    for index, line in enumerate(lines):
        if _PSQL_ERROR_RE.match(line) is None:
            continue
        _, location = _psql_error("\n".join(lines[index : index + 4]), script, last=False)
        placed = script.locate(int(line.split(":")[2]))
        if location and placed is not None:
            first.setdefault(placed.migration.version, location)
    for step in steps:
        if step.status in ("would_fail", "timed_out") and step.version in first:
            step.location = first[step.version]


def step_statement(script: _Script, version: str, index: int) -> _Placed | None:
    """The index-th statement of migration ``version`` in a script."""
    mine = [p for p in script.placed if p.migration.version == version]
    return mine[index] if 0 <= index < len(mine) else None


def _int(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None


def _psql_error(stderr: str, script: _Script, *, last: bool = True) -> tuple[str, str | None]:
    """PostgreSQL's message and ``file:line`` from psql's ``psql:<stdin>:N: ERROR: ...`` output.

    The LAST error counts (unless ``last`` is False): earlier ones may be lock timeouts of attempts that were retried.
    """
    lines = stderr.splitlines()
    order = range(len(lines) - 1, -1, -1) if last else range(len(lines))
    for index in order:
        match = _PSQL_ERROR_RE.match(lines[index])
        if match is None:
            continue
        script_line, message = int(match.group(1)), match.group(2).strip()
        within: int | None = None
        for follow in lines[index + 1 : index + 4]:
            inner = _PSQL_LINE_RE.match(follow)
            if inner:
                within = int(inner.group(1))
                break
        placed = script.locate(script_line)
        if placed is None:
            return message, None
        file_line = placed.statement.line + (within - 1 if within else 0)
        return message, f"{placed.migration.path}:{file_line}"
    text = " ".join(line.strip() for line in lines if line.strip())
    return text, None


def sync(
    remote: Remote,
    migrations_dir: Path,
    options: SyncOptions,
    identity: Identity,
    *,
    on_event: EventCallback | None = None,
    confirm: ConfirmCallback | None = None,
    reconnect: Reconnect | None = None,
) -> SyncResult:
    """Plan, lock, back up and apply (or rehearse with ``options.dry_run``); see the module docstring.

    ``reconnect`` opens a new connection to the same host (with the inventory's gateways) when the
    first one is lost mid-apply, to find out what committed; Ctrl-C raises :class:`SyncInterrupted`.
    """
    return SyncRun(
        remote, migrations_dir, options, identity, on_event=on_event, confirm=confirm, reconnect=reconnect
    ).run()


# ---------------------------------------------------------------- baseline and repair


@dataclasses.dataclass
class LedgerEdit:
    """What baseline or repair changed in the ledger."""

    host: str
    database: str
    recorded: list[str] = dataclasses.field(default_factory=list)
    updated: list[tuple[str, str | None, str | None]] = dataclasses.field(default_factory=list)  # version, old, new
    deleted: list[str] = dataclasses.field(default_factory=list)
    remote_commands: int = 0


def baseline(remote: Remote, migrations_dir: Path, version: str, identity: Identity) -> LedgerEdit:
    """Record every version ≤ V as applied (checksums from the files) without running them."""
    from .files import migration_for_baseline, version_key

    before = remote.command_count
    ledger = Ledger.for_host(remote.host)
    state = read_state(remote, ledger)
    statuses, migrations, _ = statuses_for(migrations_dir, state)
    limit = version_key(version)
    beyond = [s.version for s in statuses if s.row is not None and s.version_key is not None and s.version_key > limit]
    if beyond:
        raise MigrationError(
            f"refusing to baseline at {version}: the ledger already has later versions: {', '.join(beyond)}",
            hint="baseline is for databases whose ledger ends at or before V",
        )
    recorded_keys = {s.version_key for s in statuses if s.row is not None}
    chosen = [m for m in migration_for_baseline(migrations, version) if m.version_key not in recorded_keys]
    edit = LedgerEdit(remote.host.name, remote.host.database, recorded=[m.version for m in chosen])
    if chosen or not state.exists or state.adoption_needed:
        ensure = ledger.ensure_sql(state.columns) if (not state.exists or state.adoption_needed) else ""
        sql = ensure + ledger.baseline_sql(
            chosen, applied_by=identity.applied_by, git_commit=identity.git_commit, tool_version=identity.tool_version
        )
        remote.psql(sql)
    edit.remote_commands = remote.command_count - before
    return edit


def repair_changes(remote: Remote, migrations_dir: Path) -> tuple[list[Any], Ledger]:
    """What repair would change (read-only, one remote command)."""
    from .files import repair_plan

    ledger = Ledger.for_host(remote.host)
    state = read_state(remote, ledger)
    statuses, _, _ = statuses_for(migrations_dir, state)
    return repair_plan(statuses), ledger


def apply_repair(remote: Remote, ledger: Ledger, changes: Sequence[Any]) -> LedgerEdit:
    """Apply repair changes in one transaction."""
    edit = LedgerEdit(remote.host.name, remote.host.database)
    if changes:
        remote.psql(ledger.repair_sql(changes))
    for change in changes:
        if change.action == "update_checksum":
            edit.updated.append((change.version, change.old_checksum, change.new_checksum))
        else:
            edit.deleted.append(change.version)
    return edit


# ---------------------------------------------------------------- offline script (inv sync --sql)


_UNPRINTABLE = re.compile(
    r"[^\x20-\x5b\x5d-\x7e]"
)  # printable ASCII without the backslash: safe in a psql comment line


def _comment(text: str) -> str:
    """Text for a ``--`` comment line: no line breaks, control characters nor backslashes (psql meta-commands)."""
    return _UNPRINTABLE.sub("?", text)


def offline_plan(
    migrations_dir: Path, options: SyncOptions, *, state: LedgerState | None = None, from_version: str | None = None
) -> tuple[list[Migration], list[str]]:
    """The migrations a sync would apply, checked: after the ledger ``state``, or (offline) every version after
    ``from_version``.

    Refuses exactly what sync refuses: unusable files (exit 2) and ledger problems (exit 1).
    """
    from .files import check_migration, version_key

    found = survey(migrations_dir)
    if state is not None:
        statuses, warnings = ledger_statuses(found, state, {}, strict=True)
        plan = _plan(statuses, options)
        if plan.problems:
            raise MigrationError(plan.refusal("write the script"), hint="'inv status' shows every version")
        return plan.pending, warnings
    after = version_key(from_version or "0")
    limit = version_key(options.target) if options.target else None
    _, warnings = refuse_invalid(compute_status([], [], found.invalid))  # an unusable file is refused wherever it is
    chosen = [m for m in found.migrations if m.version_key > after and (limit is None or m.version_key <= limit)]
    if limit is not None and not any(m.version_key == limit for m in found.migrations):
        raise UsageError(f"no migration with version {options.target}")
    checked: list[Migration] = []
    for migration in chosen:
        migration, more = check_migration(migration)
        checked.append(migration)
        warnings.extend(more)
    return checked, [*found.warnings, *warnings]


def offline_script(
    plan: Sequence[Migration],
    ledger: Ledger,
    identity: Identity,
    *,
    lock_timeout: str,
    statement_timeout: str,
    ensure_sql: str,
    header: Sequence[str] = (),
) -> str:
    """The psql script of a sync without lock retries: one transaction per migration with its ledger row, as sync
    writes it.

    A no-transaction migration runs outside any transaction, between its "started" ledger row and the
    update that marks it finished (as sync does).  Everything user-supplied (versions, descriptions,
    identity) is a quoted literal; file names appear only in sanitized comments.  A version already recorded is
    skipped, so after a stop (a lock timeout) the same script can run again.  Run it with
    ``psql -X -v ON_ERROR_STOP=1 -f`` and WITHOUT ``-1`` (the script refuses to run inside one transaction).
    """
    cls, obj = ledger.lock_key
    lines = [f"-- {_comment(line)}" for line in header]
    lines += [
        "\\set ON_ERROR_STOP on",
        f"SET lock_timeout = '{lock_timeout}';",
        "SET application_name = 'opsagent sql script';",
        "-- each migration commits on its own (some cannot run in a transaction): "
        "refuse psql -1 / --single-transaction",
        "DO $opsagent$ BEGIN IF now() <> statement_timestamp() THEN RAISE EXCEPTION "
        "'run this script without -1 (--single-transaction): each migration has its own transaction'; "
        "END IF; END $opsagent$;",
        "-- the migration lock of 'inv sync': never two appliers at once",
        f"DO $opsagent$ BEGIN IF NOT pg_try_advisory_lock({cls}, {obj}) THEN RAISE EXCEPTION "
        "'another sync holds the migration lock: nothing was applied'; END IF; END $opsagent$;",
    ]
    if ensure_sql:
        lines += [
            "-- the ledger table (created, or completed with the columns opsagent records)",
            ensure_sql.rstrip("\n"),
        ]
    for m in plan:
        lines += [
            "",
            f"-- {_comment(m.filename)}: "
            f"{'transaction' if m.transactional else 'no-transaction: each statement commits on its own'}",
            # rerunnable: a version already recorded as applied is skipped (one that failed partway stops on its row)
            f"SELECT EXISTS (SELECT FROM {ledger.table} WHERE version = {literal(m.version)} AND success IS NOT false) "
            "AS opsagent_applied \\gset",
            "\\if :opsagent_applied",
            f"\\echo {_comment(m.version)} is already recorded as applied: skipped",
            "\\else",
            *_offline_migration(m, ledger, identity, lock_timeout, statement_timeout),
            "\\endif",
        ]
    lines += ["", f"SELECT pg_advisory_unlock({cls}, {obj});", ""]
    return "\n".join(lines)


def _offline_migration(
    m: Migration, ledger: Ledger, identity: Identity, lock_timeout: str, statement_timeout: str
) -> list[str]:
    statements = [
        statement.text + "\n;" for statement in m.body_statements
    ]  # the terminator alone: a trailing comment cannot eat it
    if m.transactional:
        elapsed = "(extract(epoch FROM clock_timestamp() - now()) * 1000)::integer"
        record = ledger.insert_sql(
            m,
            applied_by=identity.applied_by,
            git_commit=identity.git_commit,
            tool_version=identity.tool_version,
            execution_ms=elapsed,
        )
        return [
            "BEGIN;",
            f"SET LOCAL lock_timeout = '{lock_timeout}';",
            f"SET LOCAL statement_timeout = '{statement_timeout}';",
            *statements,
            f"{record};",
            "COMMIT;",
        ]
    started = ledger.insert_sql(
        m,
        applied_by=identity.applied_by,
        git_commit=identity.git_commit,
        tool_version=identity.tool_version,
        execution_ms="NULL",
        success=False,
    )
    elapsed = "(extract(epoch FROM clock_timestamp() - current_setting('opsagent.t0')::timestamptz) * 1000)::integer"
    return [
        f"{started};",
        f"SET statement_timeout = '{statement_timeout}';",
        "DO $opsagent$ BEGIN PERFORM set_config('opsagent.t0', clock_timestamp()::text, false); END $opsagent$;",
        *statements,
        "RESET statement_timeout;",
        f"{ledger.finish_sql(m, execution_ms=elapsed)};",
    ]
