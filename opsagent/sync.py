"""Apply pending migrations to one database over one SSH connection, or rehearse them.

A sync is ONE interactive psql session (``remote.start``) fed step by step:
read the ledger, (confirm), take a session-level advisory lock and read the ledger
again under it, take the backup as a separate remote command while the lock is
held, then stream every pending migration as one script.  ``\\echo`` markers come
back as the script runs, so progress is live and a failure names its migration;
psql's ``psql:<stdin>:LINE:`` prefix is mapped back to ``file:line``.  The number of
remote commands is constant (2 with a backup's 1), whatever the number of migrations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from . import __version__
from .backup import BackupResult, create_backup
from .errors import MigrationError, OpsagentError, RemoteError, UsageError
from .hazards import HazardReport, assess, candidate_tables
from .ledger import Ledger, LedgerState, LockHolder, quote_literal
from .lint import table_stats_query
from .migrations import Migration, Plan, VersionStatus, compute_status, discover, plan_pending
from .sqltext import Statement
from .transport import Remote, RemoteProcess

MARK = "@@opsagent"
_TIMEOUT_RE = re.compile(r"^\d+\s*(ms|s|min|h)?$")
_PSQL_ERROR_RE = re.compile(r"^psql:<stdin>:(\d+): (?:ERROR|FATAL|PANIC):\s+(.*)$")
_PSQL_LINE_RE = re.compile(r"^LINE (\d+):")
_TIMEOUT_STATES = frozenset({"55P03", "57014"})  # lock_not_available, query_canceled (statement_timeout)

Outcome = Literal["applied", "nothing_to_do", "failed", "refused", "lock_timeout", "backup_failed", "declined",
                  "dry_run", "rehearsal_failed"]
StepStatus = Literal["applied", "failed", "untouched", "would_apply", "would_fail", "not_rehearsed", "timed_out", "planned"]


# ---------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class SyncOptions:
    """What one ``inv sync`` run was asked to do."""

    target: str | None = None
    allow_out_of_order: bool = False
    backup: bool = True
    lock_timeout: float = 60.0  # seconds to wait for another applier's advisory lock
    migration_lock_timeout: str | None = None  # PostgreSQL lock_timeout per migration (default: host's)
    statement_timeout: str | None = None  # PostgreSQL statement_timeout per migration (default: host's)
    dry_run: bool = False
    rehearse: bool = True
    allow_hazards: bool = False  # apply even when the hazard lint reports errors


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

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SyncEvent:
    """Progress reported while a sync runs (the CLI renders these live)."""

    kind: Literal["plan", "lock_wait", "locked", "backup_start", "backup_done", "begin", "done", "failed", "rehearsed"]
    step: StepResult | None = None
    message: str = ""
    plan: tuple[Migration, ...] = ()
    hazards: HazardReport | None = None


EventCallback = Callable[[SyncEvent], None]
ConfirmCallback = Callable[[Sequence[Migration]], bool]


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

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "nothing_to_do", "dry_run")

    @property
    def versions(self) -> list[str]:
        return [s.version for s in self.steps]

    def as_dict(self) -> dict[str, Any]:
        backup = None
        if self.backup is not None:
            backup = {"name": self.backup.name, "path": self.backup.path, "size_bytes": self.backup.size_bytes,
                      "sha256": self.backup.sha256, "verified": self.backup.verified}
        return {
            "host": self.host, "database": self.database, "action": self.action, "outcome": self.outcome, "ok": self.ok,
            "error": self.error, "hint": self.hint, "steps": [s.as_dict() for s in self.steps],
            "applied": [s.version for s in self.steps if s.status == "applied"], "backup": backup,
            "warnings": self.warnings, "remote_commands": self.remote_commands,
            "durations": {k: round(v, 3) for k, v in self.durations.items()},
            "lock_holders": [dataclasses.asdict(h) for h in self.lock_holders], "adopted_ledger": self.adopted_ledger,
            "hazards": self.hazards.to_dict() if self.hazards is not None else None,
        }

    def audit_record(self, who: str, git_commit: str | None) -> dict[str, Any]:
        return {
            "host": self.host, "database": self.database, "who": who, "git_commit": git_commit, "action": self.action,
            "versions": self.versions, "applied": [s.version for s in self.steps if s.status == "applied"],
            "outcome": self.outcome, "error": self.error,
            "durations": {k: round(v, 3) for k, v in self.durations.items()},
            "migration_ms": {s.version: s.ms for s in self.steps if s.ms is not None},
            "backup_file": self.backup.path if self.backup else None, "remote_commands": self.remote_commands,
        }


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
    if not _TIMEOUT_RE.match(text):
        raise UsageError(f"{flag}: expected a duration such as 10s, 500ms or 0, got {value!r}")
    return text


# ---------------------------------------------------------------- session


class _Session:
    """The interactive psql session: send a script, read marker lines back."""

    def __init__(self, remote: Remote, application_name: str) -> None:
        self.remote = remote
        self.proc: RemoteProcess = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        self.closed = False
        self.proc.write(f"SET application_name = {quote_literal(application_name[:63])};\n"
                        f"\\echo {MARK} pid\nSELECT pg_backend_pid();\n")
        self.backend_pid: int | None = None

    def send(self, script: str) -> None:
        self.proc.write(script)

    def next_marker(self, timeout: float | None) -> list[str]:
        """The next ``@@opsagent ...`` line, split; RemoteError when psql ended first."""
        while True:
            line = self.proc.read_line(timeout)
            if line is None:
                raise RemoteError(f"{self.remote.host.name}: psql ended unexpectedly: {self.error_text() or 'no message'}")
            if line.startswith(MARK + " "):
                return line[len(MARK) + 1:].split(" ", 3)

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

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.proc.close_stdin()
        self.proc.wait(10)
        self.proc.close()


# ---------------------------------------------------------------- planning


def read_state(remote: Remote, ledger: Ledger) -> LedgerState:
    """The ledger and lock holders in ONE remote command (used by status, baseline, repair)."""
    return LedgerState.decode(remote.query_json(ledger.state_query()))


def statuses_for(migrations_dir: Path, state: LedgerState) -> tuple[list[VersionStatus], list[Migration], list[str]]:
    found = discover(migrations_dir)
    return compute_status(found.migrations, state.rows), found.migrations, found.warnings


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

    def locate(self, script_line: int, line_in_statement: int | None) -> _Placed | None:
        for placed in self.placed:
            if placed.first_line <= script_line <= placed.last_line:
                return placed
        return None


def _lock_script(ledger: Ledger, wait_seconds: float) -> str:
    cls, obj = ledger.lock_key
    return (
        "DO $opsagent$\n"
        f"DECLARE deadline timestamptz := clock_timestamp() + make_interval(secs => {float(wait_seconds)});\n"
        "BEGIN\n"
        "  LOOP\n"
        f"    IF pg_try_advisory_lock({cls}, {obj}) THEN PERFORM set_config('opsagent.locked', 'on', false); RETURN; END IF;\n"
        "    IF clock_timestamp() >= deadline THEN PERFORM set_config('opsagent.locked', 'off', false); RETURN; END IF;\n"
        "    PERFORM pg_sleep(0.05);\n"
        "  END LOOP;\n"
        "END $opsagent$;\n"
        f"\\echo {MARK} lock\n"
        "SELECT to_json(current_setting('opsagent.locked'));\n"
        f"\\echo {MARK} state\n"
        + ledger.state_query()
    )


def _apply_script(plan: Sequence[Migration], ledger: Ledger, ensure_sql: str, identity: Identity,
                  lock_timeout: str, statement_timeout: str, first_line: int) -> _Script:
    script = _Script(first_line)
    if ensure_sql:
        script.add(ensure_sql)
    # Commits do not wait for the WAL flush, except the last one: flushing its WAL flushes every earlier
    # commit too (WAL is sequential), so the run is fully durable when it reports success.  A server
    # crash in between loses migrations and their ledger rows together, and a rerun applies them again.
    script.add("SET synchronous_commit = off;")
    for index, m in enumerate(plan):
        script.add(f"\\echo {MARK} begin {m.version}")
        if index == len(plan) - 1:
            script.add("RESET synchronous_commit;")
        if m.transactional:
            # one round trip for the three (psql's \\; joins them into one query string)
            script.add(f"BEGIN \\; SET LOCAL lock_timeout = '{lock_timeout}' \\; SET LOCAL statement_timeout = '{statement_timeout}';")
            elapsed = "(extract(epoch FROM clock_timestamp() - now()) * 1000)::integer"
        else:
            # the row first, marked unfinished: if a statement fails, the ledger says the file ran partway
            started = ledger.insert_sql(m, applied_by=identity.applied_by, git_commit=identity.git_commit,
                                        tool_version=identity.tool_version, execution_ms="NULL", success=False)
            script.add(f"{started};\nSET lock_timeout = '{lock_timeout}';\nSET statement_timeout = '{statement_timeout}';\n"
                       "SELECT clock_timestamp() AS opsagent_t0 \\gset")
            elapsed = "(extract(epoch FROM clock_timestamp() - :'opsagent_t0'::timestamptz) * 1000)::integer"
        for statement in m.body_statements:
            script.statement(m, statement)
        if m.transactional:
            record = ledger.insert_sql(m, applied_by=identity.applied_by, git_commit=identity.git_commit,
                                       tool_version=identity.tool_version, execution_ms=elapsed, returning="execution_ms AS opsagent_ms")
        else:
            record = ledger.finish_sql(m, execution_ms=elapsed, returning="execution_ms AS opsagent_ms")
        script.add(record + " \\gset")
        script.add("COMMIT;" if m.transactional else "RESET lock_timeout;\nRESET statement_timeout;")
        script.add(f"\\echo {MARK} done {m.version} :opsagent_ms")
    script.add(f"\\echo {MARK} end")
    return script


_REHEARSE_HOLDERS = (
    "SELECT coalesce(json_agg(DISTINCT jsonb_build_object('pid', a.pid, 'application_name', a.application_name, "
    "'client', coalesce(host(a.client_addr), 'local socket'), 'user', a.usename, 'since', coalesce(a.xact_start, a.backend_start))), '[]') "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.granted AND l.locktype = 'relation' "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND l.pid <> pg_backend_pid();"
)


def _rehearse_script(plan: Sequence[Migration], lock_timeout: str, statement_timeout: str, first_line: int) -> _Script:
    """One transaction, a savepoint per migration, rolled back at the end; psql keeps going after errors."""
    script = _Script(first_line)
    script.add(f"\\set ON_ERROR_STOP 0\nBEGIN;\nSET LOCAL lock_timeout = '{lock_timeout}';\n"
               f"SET LOCAL statement_timeout = '{statement_timeout}';")
    for m in plan:
        if not m.transactional:
            continue
        script.add(f"\\echo {MARK} begin {m.version}\n\\set opsagent_failed 0\nSAVEPOINT opsagent_rehearsal;\n"
                   "SELECT clock_timestamp() AS opsagent_t0 \\gset")
        for index, statement in enumerate(m.body_statements):
            script.add("\\if :opsagent_failed\n\\else")
            script.statement(m, statement)
            script.add(f"\\if :ERROR\n\\set opsagent_failed 1\n\\echo {MARK} error {m.version} {index} :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE\n"
                       "\\endif\n\\endif")
        script.add("\\if :opsagent_failed\nROLLBACK TO SAVEPOINT opsagent_rehearsal;\n"
                   f"\\echo {MARK} holders {m.version}\n{_REHEARSE_HOLDERS}\n\\else\nRELEASE SAVEPOINT opsagent_rehearsal;\n"
                   "SELECT round(extract(epoch FROM clock_timestamp() - :'opsagent_t0'::timestamptz) * 1000)::integer AS opsagent_ms \\gset\n"
                   f"\\echo {MARK} done {m.version} :opsagent_ms\n\\endif")
    script.add(f"ROLLBACK;\n\\set ON_ERROR_STOP 1\n\\echo {MARK} end")
    return script


# ---------------------------------------------------------------- the run


class SyncRun:
    """One sync or dry-run against one database (the remote connection is the caller's)."""

    def __init__(self, remote: Remote, migrations_dir: Path, options: SyncOptions, identity: Identity, *,
                 on_event: EventCallback | None = None, confirm: ConfirmCallback | None = None) -> None:
        self.remote = remote
        self.host = remote.host
        self.migrations_dir = migrations_dir
        self.options = options
        self.identity = identity
        self.on_event = on_event or (lambda _event: None)
        self.confirm = confirm or (lambda _plan: True)
        self.ledger = Ledger(self.host.ledger_schema)
        self.result = SyncResult(self.host.name, self.host.database, "dry-run" if options.dry_run else "sync")
        self.lock_timeout = check_timeout(options.migration_lock_timeout or self.host.lock_timeout, "--migration-lock-timeout")
        self.statement_timeout = check_timeout(options.statement_timeout or self.host.statement_timeout, "--statement-timeout")
        self._phase = "plan"
        self._line = 4  # script line where the next sent text starts (lines 1-3: application_name, backend pid)

    def _send(self, session: _Session, text: str) -> None:
        session.send(text)
        self._line += text.count("\n")

    def run(self) -> SyncResult:
        started = time.monotonic()
        before = self.remote.command_count
        found = discover(self.migrations_dir)  # refuses bad files (e.g. CONCURRENTLY in a transaction) up front
        self.result.warnings.extend(found.warnings)
        session = _Session(self.remote, f"opsagent {self.result.action} {self.identity.applied_by}")
        try:
            # local work while sudo and psql start on the server (discovery has already parsed every file)
            tables = candidate_tables(found.migrations)
            session.backend_pid = int(session.read_json("pid", self.host.command_timeout))
            self._run(session, found.migrations, tables)
        except BaseException:
            if self._phase == "apply":  # interrupted (Ctrl-C, timeout) while psql still runs the script
                self._abort(session)
            raise
        finally:
            session.close()
            self.result.remote_commands = self.remote.command_count - before
            self.result.durations["total"] = time.monotonic() - started
        return self.result

    def _abort(self, session: _Session) -> None:
        """Interrupted while the script runs: end our backend so psql stops; the open migration rolls back."""
        if session.backend_pid is None:
            return
        with contextlib.suppress(OpsagentError):
            self.remote.psql(f"SELECT pg_terminate_backend({session.backend_pid})", timeout=30, check=False)

    def _read_state(self, session: _Session, tables: Sequence[str]) -> tuple[LedgerState, dict[str, Any]]:
        """Ledger, lock holders and the live size of every table a hazard could name (``tables``): one exchange."""
        stats_sql = table_stats_query(list(tables)).strip().rstrip(";")
        self._send(session, f"\\echo {MARK} state\n" + self.ledger.state_query() + f"\\echo {MARK} stats\n{stats_sql};\n")
        state = LedgerState.decode(session.read_json("state", self.host.command_timeout))
        return state, dict(session.read_json("stats", self.host.command_timeout) or {})

    def _run(self, session: _Session, migrations: list[Migration], tables: Sequence[str]) -> None:
        state, stats = self._read_state(session, tables)
        plan = self._checked_plan(migrations, state)
        if plan is None:
            return
        hazards = self.result.hazards = assess(None, plan, self.host, stats=stats)
        self.on_event(SyncEvent("plan", plan=tuple(plan), hazards=hazards))
        if hazards.blocking and not self.options.allow_hazards and not self.options.dry_run:
            self.result.outcome = "refused"
            errors = hazards.at_least("error")
            self.result.error = (f"refusing to apply: {len(errors)} hazard error{'s' if len(errors) > 1 else ''}: "
                                 + "; ".join(f"{f.location} {f.rule}" for f in errors))
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
        plan = self._checked_plan(migrations, state)
        if plan is None:
            return
        if self.options.backup and not self._backup(plan):
            return
        self._apply(session, plan, self.ledger.ensure_sql(state.columns) if (not state.exists or state.adoption_needed) else "")
        self.result.adopted_ledger = state.adoption_needed

    def _checked_plan(self, migrations: list[Migration], state: LedgerState) -> list[Migration] | None:
        plan = _plan(compute_status(migrations, state.rows), self.options)
        self.result.steps = [_step(m) for m in plan.pending]
        if plan.problems:
            self.result.outcome = "refused"
            count = len(plan.problems)
            self.result.error = f"refusing to apply: {count} problem{'s' if count > 1 else ''}: " + "; ".join(plan.problems)
            self.result.hint = "nothing was changed; 'inv status' shows every version"
            return None
        if not plan.pending:
            self.result.outcome = "nothing_to_do"
            return None
        return plan.pending

    # -- lock and backup

    def _lock(self, session: _Session, state: LedgerState) -> LedgerState | None:
        if state.holders:
            self.on_event(SyncEvent("lock_wait", message="waiting for " + "; ".join(h.describe() for h in state.holders)))
        started = time.monotonic()
        self._send(session, _lock_script(self.ledger, self.options.lock_timeout))
        locked = session.read_json("lock", self.options.lock_timeout + self.host.command_timeout) == "on"
        fresh = LedgerState.decode(session.read_json("state", self.host.command_timeout))
        self.result.durations["lock_wait"] = time.monotonic() - started
        if not locked:
            self.result.outcome = "lock_timeout"
            self.result.lock_holders = fresh.holders
            who = "; ".join(h.describe() for h in fresh.holders) or "a session that has since ended"
            self.result.error = (f"another sync holds the migration lock on {self.host.database} "
                                 f"(waited {self.options.lock_timeout:g}s): held by {who}")
            self.result.hint = "wait for it to finish, or raise --lock-timeout; nothing was changed"
            return None
        self.on_event(SyncEvent("locked"))
        return fresh

    def _backup(self, plan: Sequence[Migration]) -> bool:
        label = f"pre-{plan[0].version}..{plan[-1].version}"
        self.on_event(SyncEvent("backup_start", message=label))
        started = time.monotonic()
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

    def _apply(self, session: _Session, plan: Sequence[Migration], ensure_sql: str) -> None:
        script = _apply_script(plan, self.ledger, ensure_sql, self.identity, self.lock_timeout, self.statement_timeout, self._line)
        steps = {s.version: s for s in self.result.steps}
        for step in steps.values():
            step.status = "untouched"
        started = time.monotonic()
        self._phase = "apply"
        writer = threading.Thread(target=self._write_all, args=(session, script.text()), daemon=True)
        writer.start()
        current: StepResult | None = None
        try:
            while True:
                line = session.proc.read_line(self.host.command_timeout)
                if line is None:
                    break
                if not line.startswith(MARK + " "):
                    continue
                parts = line[len(MARK) + 1:].split(" ")
                if parts[0] == "begin":
                    current = steps[parts[1]]
                    self.on_event(SyncEvent("begin", current))
                elif parts[0] == "done":
                    step = steps[parts[1]]
                    step.status, step.ms = "applied", _int(parts[2] if len(parts) > 2 else "")
                    current = None
                    self.on_event(SyncEvent("done", step))
                elif parts[0] == "end":
                    self.result.outcome = "applied"
                    self._phase = "done"
                    return
        finally:
            self.result.durations["apply"] = time.monotonic() - started
        self._phase = "done"
        self._failed(session, script, current)

    def _write_all(self, session: _Session, text: str) -> None:
        with contextlib.suppress(RemoteError):  # the reader sees the end of output and reports
            session.send(text)

    def _failed(self, session: _Session, script: _Script, current: StepResult | None) -> None:
        status = session.proc.wait(10)
        stderr = session.proc.stderr
        self.result.outcome = "failed"
        message, location = _psql_error(stderr, script)
        if current is None:
            self.result.error = f"psql stopped outside any migration: {message or f'exit status {status}'}"
            return
        current.status = "failed"
        current.location = location
        partial = "" if current.transactional else (" (runs outside a transaction: its earlier statements stay applied and its "
                                                    "ledger row says it failed partway; check, then 'inv repair' before rerunning)")
        if not message:
            message = ("SSH connection lost" if status == -1 else f"psql exited with status {status}") + \
                ("; the migration's transaction was not committed unless its ledger row exists" if current.transactional else "")
        current.error = message
        where = location or current.filename
        self.result.error = f"{where}: {message}{partial}"
        self.result.hint = "earlier migrations stay applied and recorded; fix the file and rerun sync to continue"
        self.on_event(SyncEvent("failed", current, message=self.result.error))

    # -- dry run

    def _dry_run(self, session: _Session, plan: Sequence[Migration]) -> None:
        self.result.outcome = "dry_run"
        for step, m in zip(self.result.steps, plan, strict=True):
            step.status = "planned" if m.transactional or not self.options.rehearse else "not_rehearsed"
            if not m.transactional:
                step.error = "not rehearsed (runs outside a transaction)"
        if not self.options.rehearse:
            return
        rehearse_lock = check_timeout(self.host.rehearse_lock_timeout, "rehearse_lock_timeout")
        rehearse_statement = check_timeout(self.host.rehearse_statement_timeout, "rehearse_statement_timeout")
        script = _rehearse_script(plan, rehearse_lock, rehearse_statement, self._line)
        started = time.monotonic()
        self._send(session, script.text())
        self._read_rehearsal(session, script, {s.version: s for s in self.result.steps})
        session.close()  # psql has finished: its stderr holds every error with its script line
        _refine_locations(session.proc.stderr, script, self.result.steps)
        self.result.durations["rehearsal"] = time.monotonic() - started
        if any(s.status == "would_fail" for s in self.result.steps):
            self.result.outcome = "rehearsal_failed"
            failing = [s for s in self.result.steps if s.status == "would_fail"]
            self.result.error = "; ".join(f"would fail: {s.error} at {s.location}" for s in failing)

    def _read_rehearsal(self, session: _Session, script: _Script, steps: dict[str, StepResult]) -> None:
        while True:
            parts = session.next_marker(self.host.command_timeout)
            kind = parts[0]
            if kind == "end":
                return
            if kind == "error":
                rest = parts[3] if len(parts) > 3 else ""
                sqlstate, _, message = rest.partition(" ")
                step = steps[parts[1]]
                statement = step_statement(script, step.version, int(parts[2]))
                step.location = f"{statement.migration.path}:{statement.statement.line}" if statement else step.filename
                step.error = message
                step.status = "timed_out" if sqlstate in _TIMEOUT_STATES else "would_fail"
            elif kind == "holders":
                step = steps[parts[1]]
                holders = [h for h in _decode_holders(session.next_line(self.host.command_timeout))]
                if step.status == "timed_out":
                    held = "; ".join(h.describe() for h in holders) or "another session"
                    step.error = f"not rehearsed: timed out ({step.error}; lock held by {held})"
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
        _, location = _psql_error("\n".join(lines[index:index + 4]), script)
        placed = script.locate(int(line.split(":")[2]), None)
        if location and placed is not None:
            first.setdefault(placed.migration.version, location)
    for step in steps:
        if step.status in ("would_fail", "timed_out") and step.version in first:
            step.location = first[step.version]


def step_statement(script: _Script, version: str, index: int) -> _Placed | None:
    """The index-th statement of migration ``version`` in a script."""
    mine = [p for p in script.placed if p.migration.version == version]
    return mine[index] if 0 <= index < len(mine) else None


def _decode_holders(text: str) -> list[LockHolder]:
    from .ledger import decode_holders

    try:
        return decode_holders(json.loads(text))
    except (json.JSONDecodeError, TypeError, ValueError):
        return []


def _int(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None


def _psql_error(stderr: str, script: _Script) -> tuple[str, str | None]:
    """PostgreSQL's message and ``file:line`` from psql's ``psql:<stdin>:N: ERROR: ...`` output."""
    lines = stderr.splitlines()
    for index, line in enumerate(lines):
        match = _PSQL_ERROR_RE.match(line)
        if match is None:
            continue
        script_line, message = int(match.group(1)), match.group(2).strip()
        within: int | None = None
        for follow in lines[index + 1:index + 4]:
            inner = _PSQL_LINE_RE.match(follow)
            if inner:
                within = int(inner.group(1))
                break
        placed = script.locate(script_line, within)
        if placed is None:
            return message, None
        file_line = placed.statement.line + (within - 1 if within else 0)
        return message, f"{placed.migration.path}:{file_line}"
    text = " ".join(line.strip() for line in lines if line.strip())
    return text, None


def sync(remote: Remote, migrations_dir: Path, options: SyncOptions, identity: Identity, *,
         on_event: EventCallback | None = None, confirm: ConfirmCallback | None = None) -> SyncResult:
    """Plan, lock, back up and apply (or rehearse with ``options.dry_run``); see the module docstring."""
    return SyncRun(remote, migrations_dir, options, identity, on_event=on_event, confirm=confirm).run()


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
    from .migrations import migration_for_baseline, version_key

    before = remote.command_count
    ledger = Ledger(remote.host.ledger_schema)
    state = read_state(remote, ledger)
    statuses, migrations, _ = statuses_for(migrations_dir, state)
    limit = version_key(version)
    beyond = [s.version for s in statuses if s.row is not None and s.version_key is not None and s.version_key > limit]
    if beyond:
        raise MigrationError(f"refusing to baseline at {version}: the ledger already has later versions: {', '.join(beyond)}",
                             hint="baseline is for databases whose ledger ends at or before V")
    recorded_keys = {s.version_key for s in statuses if s.row is not None}
    chosen = [m for m in migration_for_baseline(migrations, version) if m.version_key not in recorded_keys]
    edit = LedgerEdit(remote.host.name, remote.host.database, recorded=[m.version for m in chosen])
    if chosen or not state.exists or state.adoption_needed:
        ensure = ledger.ensure_sql(state.columns) if (not state.exists or state.adoption_needed) else ""
        sql = ensure + ledger.baseline_sql(chosen, applied_by=identity.applied_by, git_commit=identity.git_commit,
                                           tool_version=identity.tool_version)
        remote.psql(sql)
    edit.remote_commands = remote.command_count - before
    return edit


def repair_changes(remote: Remote, migrations_dir: Path) -> tuple[list[Any], Ledger]:
    """What repair would change (read-only, one remote command)."""
    from .migrations import repair_plan

    ledger = Ledger(remote.host.ledger_schema)
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
