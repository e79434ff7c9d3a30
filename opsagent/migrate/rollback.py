"""``inv rollback --to V``: take a database back to the structure of version V and keep its data.

The target is never guessed: migrations up to and including V are replayed in a scratch
database on the same server (as ``inv check`` does).  The way there is either the
hand-written ``-- opsagent:down`` sections of the migrations above V (in reverse order,
when every one of them has one) or the declarative plan from the live database to the
target (the ``inv plan`` engine).  Either way it is

1. rehearsed on the live database in a transaction that is rolled back (``lock_timeout``
   from its first statement), which also finds what it would destroy: tables and columns
   that disappear (by OID, so a rename is not a drop), types that change lossily and
   NOT NULL columns that lose their default, each with a live, capped row count;
2. verified twice: the rehearsed catalog against the target's (the catalog model), and
   independently ``pg_dump --schema-only`` of a scratch copy with the plan applied against
   the target's dump (``dump_comparison``); anything left over is "not verified";
3. applied (unless refused): backup, the sync advisory lock, the ledger re-read under it,
   then ONE transaction for the schema change and the deletion of the ledger rows above V.
   COMMIT is sent only once the client has seen everything before it succeed, so an
   interrupted run leaves the old or the new version, with a ledger that says which.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from .. import resources
from ..backup import BackupResult, create_backup
from ..errors import InvalidMigration, OpsagentError, RemoteError, UsageError
from ..remote.markers import Markers
from ..remote.transport import Remote, RemoteProcess
from ..schema.catalog import DEFAULT_EXCLUDED_TABLES, Catalog, introspect, introspection_sql
from ..schema.changes import Change, DiffResult
from ..schema.compare import compare, display
from ..schema.declarative import live_catalog, pin_extension_versions
from ..schema.drift import at_once, confirm_changes, dump_for_diff, read_catalog, replay_chunks
from ..schema.exclusions import ledger_exclusions
from ..schema.extract import dump_schema
from ..schema.plan import Plan, generate_plan, lossless
from ..schema.scratch import Chunk, LoadError, ScratchSet
from ..sqlquote import literal
from ..units import label
from .files import Migration, VersionStatus, compute_status, discover, not_in_transaction, version_key
from .ledger import Ledger, LedgerState
from .sqltext import Statement, split_statements
from .sync import (
    CATALOG_FINGERPRINT,
    LOCK_NOT_AVAILABLE,
    Identity,
    LockRetryPolicy,
    check_timeout,
    duration_seconds,
    pg_duration,
)

ROW_CAP = 1_000_000  # rows counted per object at most: a bounded exact count ("at least 1,000,000")
PLAN_SOURCE = "rollback plan"

Outcome = Literal[
    "rolled_back",
    "nothing_to_do",
    "refused",
    "not_verified",
    "failed",
    "lock_timeout",
    "backup_failed",
    "declined",
    "dry_run",
    "interrupted",
]
Method = Literal["computed", "down"]


# ---------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class RollbackOptions:
    """What one ``inv rollback`` run was asked to do."""

    target: str
    dry_run: bool = False
    allow_data_loss: bool = False
    backup: bool = True
    lock_timeout: float = 60.0  # seconds to wait for a sync's advisory lock


@dataclasses.dataclass(frozen=True)
class SqlStep:
    """One statement of the way back: what runs, what the rehearsal runs instead (None: skipped), where it is from."""

    sql: str
    rehearse: str | None
    source: str
    transactional: bool = True
    destructive: bool = (
        False  # drops something or changes a column's type: shown as such (the rehearsal counts the rows)
    )


@dataclasses.dataclass
class Step:
    """A unit of the apply: one transaction (or a run of autocommit statements) and the ledger rows it removes."""

    label: str
    statements: list[SqlStep]
    transactional: bool
    deletes: list[str]  # ledger versions removed by this step
    marks: list[str] = dataclasses.field(default_factory=list)  # rows marked unfinished before a non-transactional step
    status: str = "planned"  # planned | applied | failed | untouched | rolled_back | unknown
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "transactional": self.transactional,
            "deletes": self.deletes,
            "marks": self.marks,
            "status": self.status,
            "error": self.error,
            "statements": [s.sql for s in self.statements],
            "destructive": [s.sql for s in self.statements if s.destructive],
        }


@dataclasses.dataclass(frozen=True)
class Loss:
    """Data the way back would destroy, found in the rehearsal, with a live row count (capped at ``ROW_CAP``)."""

    kind: Literal["table", "column", "type", "default"]
    table: str
    column: str | None
    rows: int | None  # None: could not be counted
    estimated_rows: int | None = None
    bytes: int | None = None
    old_type: str | None = None
    new_type: str | None = None

    @property
    def blocking(self) -> bool:
        """Holds rows (or could not be counted): refused without --allow-data-loss."""
        return self.rows is None or self.rows > 0

    def rows_text(self) -> str:
        if self.rows is None:
            return "rows unknown"
        if self.rows >= ROW_CAP:
            return f"at least {ROW_CAP:,} rows"
        return f"{self.rows:,} row{'s' if self.rows != 1 else ''}"

    def describe(self) -> str:
        name = display(self.table)
        what = {
            "table": f"drops table {name}",
            "column": f"drops column {name}.{self.column}",
            "type": f"changes {name}.{self.column} from {self.old_type} to {self.new_type} (may lose data or fail)",
            "default": f"drops the default of NOT NULL column {name}.{self.column} (writes relying on it fail)",
        }[self.kind]
        held = "holding" if self.kind in ("table", "default") else "with values in"
        return f"{what}: {held} {self.rows_text()}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "blocking": self.blocking, "description": self.describe()}


@dataclasses.dataclass
class Verification:
    """Both oracles' verdicts on the rehearsed result against the target."""

    rehearsal_error: str | None = None
    catalog: list[Change] = dataclasses.field(default_factory=list)  # catalog model: rehearsed live vs target
    dump: list[str] = dataclasses.field(default_factory=list)  # pg_dump comparison: unified diff lines
    dump_error: str | None = None

    @property
    def verified(self) -> bool:
        return self.rehearsal_error is None and self.dump_error is None and not self.catalog and not self.dump

    def line(self) -> str:
        if self.rehearsal_error is not None:
            return f"not verified: the rehearsal on the live database fails: {self.rehearsal_error}"
        if self.dump_error is not None:
            return f"not verified: the pg_dump comparison fails: {self.dump_error}"
        if self.verified:
            return "verified: the rehearsed result equals the target (catalog model and pg_dump --schema-only)"
        return (
            f"not verified: {len(self.catalog)} difference(s) left by the catalog model, "
            f"{len([d for d in self.dump if d[:1] in '+-' and d[:3] not in ('+++', '---')])}"
            " line(s) by the pg_dump comparison"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "line": self.line(),
            "rehearsal_error": self.rehearsal_error,
            "catalog": [c.to_dict() for c in self.catalog],
            "dump": list(self.dump),
            "dump_error": self.dump_error,
        }


@dataclasses.dataclass
class RollbackResult:
    """The whole run, as rendered by the CLI and recorded in the audit log."""

    host: str
    database: str
    target: str
    action: Literal["rollback", "dry-run"]
    outcome: Outcome = "nothing_to_do"
    method: Method = "computed"
    method_note: str = ""
    versions: list[str] = dataclasses.field(default_factory=list)  # ledger rows above the target, newest first
    down_sections: dict[str, bool] = dataclasses.field(default_factory=dict)
    steps: list[Step] = dataclasses.field(default_factory=list)
    plan_warnings: list[str] = dataclasses.field(default_factory=list)
    losses: list[Loss] = dataclasses.field(default_factory=list)
    verification: Verification | None = None
    after: list[Change] | None = None  # live vs target once applied (catalog model)
    backup: BackupResult | None = None
    ledger_after: list[str] | None = None  # the ledger's versions when the run ended (found out after a failure)
    error: str | None = None
    hint: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    remote_commands: int = 0
    durations: dict[str, float] = dataclasses.field(default_factory=dict)
    lock_retries: int = 0  # attempts of a step that timed out on a lock and were tried again

    @property
    def ok(self) -> bool:
        return self.outcome in ("rolled_back", "nothing_to_do", "dry_run")

    @property
    def destructive(self) -> list[Loss]:
        return [loss for loss in self.losses if loss.blocking]

    def statements(self) -> list[str]:
        return [s.sql for step in self.steps for s in step.statements]

    def to_dict(self) -> dict[str, Any]:
        backup = (
            None
            if self.backup is None
            else {
                "name": self.backup.name,
                "path": self.backup.path,
                "size_bytes": self.backup.size_bytes,
                "verified": self.backup.verified,
            }
        )
        return {
            "host": self.host,
            "database": self.database,
            "target": self.target,
            "action": self.action,
            "outcome": self.outcome,
            "ok": self.ok,
            "method": self.method,
            "method_note": self.method_note,
            "versions": self.versions,
            "down_sections": self.down_sections,
            "steps": [s.to_dict() for s in self.steps],
            "plan_warnings": self.plan_warnings,
            "losses": [loss.to_dict() for loss in self.losses],
            "verification": self.verification.to_dict() if self.verification else None,
            "after": None if self.after is None else [c.to_dict() for c in self.after],
            "backup": backup,
            "ledger_after": self.ledger_after,
            "error": self.error,
            "hint": self.hint,
            "warnings": self.warnings,
            "remote_commands": self.remote_commands,
            "durations": {k: round(v, 3) for k, v in self.durations.items()},
            "lock_retries": self.lock_retries,
        }

    def audit_record(self, who: str, git_commit: str | None) -> dict[str, Any]:
        return {
            "host": self.host,
            "database": self.database,
            "who": who,
            "git_commit": git_commit,
            "action": "rollback" if self.action == "rollback" else "rollback-dry-run",
            "target": self.target,
            "versions": self.versions,
            "method": self.method,
            "outcome": self.outcome,
            "error": self.error,
            "losses": [loss.describe() for loss in self.destructive],
            "ledger_after": self.ledger_after,
            "backup_file": self.backup.path if self.backup else None,
            "durations": {k: round(v, 3) for k, v in self.durations.items()},
            "remote_commands": self.remote_commands,
            "lock_retries": self.lock_retries,
        }


class RollbackInterrupted(KeyboardInterrupt):
    """Ctrl-C outside the rollback's steps, carrying the result (what it had done) for the audit log."""

    def __init__(self, result: RollbackResult) -> None:
        super().__init__("interrupted")
        self.result = result


EventCallback = Callable[[str, str], None]  # (kind, message): progress for the CLI
ConfirmCallback = Callable[[RollbackResult], bool]


# ---------------------------------------------------------------- choosing the target and the way back (pure)


def check_target(statuses: Sequence[VersionStatus], target: str) -> tuple[int, list[VersionStatus], list[str]]:
    """``(target key, statuses above it newest first, problems)``; UsageError for a target that is no version.

    Everything at or below the target must be applied as its file says (it is replayed to make the
    target state); above it anything goes (failed, edited, file gone): the plan starts from the live state.
    """
    key = version_key(target)
    if key and not any(s.version_key == key and s.migration is not None for s in statuses):
        raise UsageError(
            f"--to {target}: no migration file with version {target} (use 0 for the state before the first one)"
        )
    problems: list[str] = []
    for s in statuses:
        if s.version_key is None or s.version_key > key:
            continue
        if s.state != "applied":
            why = {
                "pending": "is not applied",
                "out_of_order": "is not applied",
                "checksum_mismatch": "was edited after it ran",
                "missing_file": "has no file",
                "failed": "failed partway",
            }[s.state]
            problems.append(f"{s.filename} {why}: the target state is made by replaying the files up to {target}")
    above = [s for s in statuses if s.row is not None and s.version_key is not None and s.version_key > key]
    return key, sorted(above, key=lambda s: -(s.version_key or 0)), problems


_CONCURRENTLY = re.compile(r"\bCONCURRENTLY\b\s*", re.IGNORECASE)
_SKIPPABLE = frozenset({"VACUUM"})  # changes no structure: not rehearsed


def _rehearsal_text(statement: Statement, source: str) -> tuple[str | None, bool]:
    """What the rehearsal runs for a statement (a transactional equivalent), and whether the statement itself is
    transactional."""
    what = not_in_transaction(statement)
    if what is None:
        return statement.text, True
    if "CONCURRENTLY" in what and statement.kind in ("IndexStmt", "DropStmt", "ReindexStmt"):
        return _CONCURRENTLY.sub("", statement.text, count=1), False
    if what in _SKIPPABLE:
        return None, False
    raise InvalidMigration(
        f"{source}:{statement.line}: {what} in a down section cannot be rehearsed",
        hint="keep down sections to schema changes (CREATE/DROP INDEX CONCURRENTLY are fine)",
    )


def destroys(statement: Statement) -> bool:
    """A DROP, a TRUNCATE, or an ALTER TABLE that drops a column or changes a type."""
    if statement.kind in ("DropStmt", "TruncateStmt"):
        return True
    if statement.kind != "AlterTableStmt":
        return False
    subtypes = {
        str(getattr(getattr(cmd, "subtype", None), "name", "")) for cmd in getattr(statement.node, "cmds", None) or ()
    }
    return bool(subtypes & {"AT_DropColumn", "AT_AlterColumnType"})


def down_steps(migration: Migration) -> tuple[list[SqlStep], bool]:
    """The down section's statements (a BEGIN/COMMIT wrapper removed) and whether all of them can share a
    transaction."""
    source = label(migration.path)
    statements = [
        Statement(s.text, s.line + migration.down_line - 1, s.kind)
        for s in split_statements(migration.down_sql or "", str(migration.path))
    ]
    kinds = [getattr(s.node, "kind", None) for s in statements]
    names = [str(getattr(k, "name", k)) for k in kinds]
    if (
        len(statements) >= 2
        and statements[0].kind == "TransactionStmt"
        and statements[-1].kind == "TransactionStmt"
        and names[0] in ("TRANS_STMT_BEGIN", "TRANS_STMT_START")
        and names[-1] == "TRANS_STMT_COMMIT"
    ):
        statements = statements[1:-1]
    steps: list[SqlStep] = []
    for statement in statements:
        if statement.kind == "TransactionStmt":
            raise InvalidMigration(
                f"{label(migration.path)}:{statement.line}: transaction control inside a down section; "
                "remove it (opsagent runs the down sections in one transaction with the ledger change)"
            )
        rehearse, transactional = _rehearsal_text(statement, str(label(migration.path)))
        steps.append(
            SqlStep(
                statement.text,
                rehearse,
                f"{source}:{statement.line} (down section)",
                transactional,
                destroys(statement),
            )
        )
    return steps, all(s.transactional for s in steps)


def choose_method(above: Sequence[VersionStatus]) -> tuple[Method, str]:
    """Down sections when every version above the target has one (and ran to the end); else the computed plan,
    and why."""
    with_down = [
        s.version for s in above if s.migration is not None and s.migration.down_sql and s.migration.down_sql.strip()
    ]
    without = [s.version for s in above if s.version not in with_down]
    failed = [s.version for s in above if s.state == "failed"]
    if not without and not failed:
        return (
            "down",
            f"the down sections of {', '.join(with_down)} (every version above the target has one), newest first",
        )
    if failed:
        return "computed", (
            f"the computed plan from the live state: {', '.join(failed)} failed partway, so its down section "
            "cannot know what to undo"
        )
    if with_down:
        return "computed", (
            f"the computed plan: {', '.join(without)} {'has' if len(without) == 1 else 'have'} no down section "
            f"(the down sections of {', '.join(with_down)} are not used: they are used only when every "
            "version above the target has one)"
        )
    return "computed", "the computed plan (no version above the target has a down section)"


def steps_from_down(above: Sequence[VersionStatus]) -> list[Step]:
    """Reverse order; all in one transaction with the ledger rows when possible, else one step per version."""
    per_version = [(s, *down_steps(s.migration)) for s in above if s.migration is not None]
    if all(transactional for _, _, transactional in per_version):
        statements = [step for _, steps, _ in per_version for step in steps]
        return [
            Step(
                "down sections " + ", ".join(s.version for s, _, _ in per_version),
                statements,
                True,
                [s.row.version for s, _, _ in per_version if s.row is not None],
            )
        ]
    out: list[Step] = []
    for status, steps, transactional in per_version:
        row = [status.row.version] if status.row is not None else []
        out.append(Step(f"down section of {status.version}", steps, transactional, row, [] if transactional else row))
    return out


def steps_from_plan(plan: Plan, above: Sequence[VersionStatus]) -> list[Step]:
    """The computed plan: enum values first (on their own, the newest row marked unfinished), then one transaction."""
    rows = [s.row.version for s in above if s.row is not None]
    before = [
        SqlStep(p.statement, p.statement, PLAN_SOURCE, False, p.destructive)
        for p in plan.statements
        if p.stage == "before"
    ]
    main = [
        SqlStep(p.statement, p.statement, PLAN_SOURCE, True, p.destructive)
        for p in plan.statements
        if p.stage != "before"
    ]
    steps: list[Step] = []
    if before:
        steps.append(Step("enum values (outside the transaction)", before, False, [], rows[:1]))
    steps.append(Step("computed plan", main, True, rows))
    return steps


# ---------------------------------------------------------------- the rehearsal script (live database, rolled back)


_BEFORE_SQL = resources.sql("rollback_before")  # @@LEDGER@@: the ledger as a quoted literal

_LOSSES_SQL = resources.sql("rollback_losses")

_COUNTS_SQL = resources.fill(resources.sql("rollback_counts"), ROW_CAP=str(ROW_CAP))


def _terminated(sql: str) -> str:
    """A statement with its terminator on a line of its own (a trailing ``-- comment`` must not swallow it)."""
    return sql.rstrip().rstrip(";").rstrip() + "\n;\n"


def rehearsal_script(
    steps: Sequence[Step],
    ledger: Ledger,
    lock_timeout: str,
    statement_timeout: str,
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
    *,
    mark: Markers,
) -> str:
    """One rolled-back transaction: snapshot the tables, run the way back in a savepoint, read the catalog and the
    losses, go back to the savepoint and count the rows of what would be lost (``mark``: its markers)."""
    error = (":LAST_ERROR_SQLSTATE", ":LAST_ERROR_MESSAGE")
    parts = [
        f"\\set ON_ERROR_STOP 0\nBEGIN;\nSET LOCAL lock_timeout = '{lock_timeout}';\n"
        f"SET LOCAL statement_timeout = '{statement_timeout}';\n",
        resources.fill(_BEFORE_SQL, LEDGER=literal(ledger.table)),
        f"\\if :ERROR\n{mark.psql('error', '-1', *error)}\n\\set opsagent_failed 1\n\\else\n"
        "\\set opsagent_failed 0\n\\endif\nSAVEPOINT opsagent_rollback;\n",
    ]
    index = 0
    for step in steps:
        for statement in step.statements:
            if statement.rehearse is not None:
                parts.append(
                    f"\\if :opsagent_failed\n\\else\n{_terminated(statement.rehearse)}"
                    f"\\if :ERROR\n\\set opsagent_failed 1\n{mark.psql('error', str(index), *error)}\n"
                    "\\endif\n\\endif\n"
                )
            index += 1
    parts.append(
        f"\\if :opsagent_failed\n\\else\n{mark.psql('catalog')}\n{introspection_sql(exclude_tables)}"
        f"{mark.psql('losses')}\n{_LOSSES_SQL} \\gset\n\\echo :opsagent_losses\n"
        f"ROLLBACK TO SAVEPOINT opsagent_rollback;\n{mark.psql('counts')}\n{_COUNTS_SQL}"
        f"\\if :ERROR\n{mark.psql('counts-error', ':LAST_ERROR_MESSAGE')}\n\\endif\n\\endif\n"
        f"ROLLBACK;\n{mark.psql('end')}\n"
    )
    return "".join(parts)


def _sections(text: str, mark: Markers) -> tuple[dict[str, str], list[list[str]]]:
    """The output between markers, by marker kind, and every marker line (split)."""
    sections = mark.sections(text)[1]
    return {s.marker.kind: s.text for s in sections}, [s.marker.words(3) for s in sections]


def decode_losses(losses_json: str, counts_json: str, sizes: Mapping[str, Mapping[str, Any]]) -> list[Loss]:
    """The rehearsal's findings as ``Loss`` (type changes that keep every value are not losses)."""
    found = json.loads(losses_json or "[]") or []
    try:
        counts = {
            (int(c["oid"]), c.get("column"), c.get("kind")): c.get("rows")
            for c in json.loads(counts_json or "[]") or []
        }
    except (ValueError, TypeError, KeyError):
        counts = {}
    losses: list[Loss] = []
    for item in found:
        kind = str(item.get("kind"))
        if kind == "type" and lossless(str(item.get("old_type")), str(item.get("new_type"))):
            continue
        rows = counts.get((int(item["oid"]), item.get("column"), kind))
        size = sizes.get(str(item.get("table"))) or {}
        losses.append(
            Loss(
                kind,  # type: ignore[arg-type]
                str(item.get("table")),
                item.get("column"),
                None if rows is None else int(rows),
                _int(size.get("rows")),
                _int(size.get("bytes")),
                item.get("old_type"),
                item.get("new_type"),
            )
        )
    return losses


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- the independent oracle


_CREATE_TABLE = re.compile(r"^CREATE (UNLOGGED |FOREIGN )?TABLE .* \($")


def order_free_columns(dump: str) -> str:
    """Column lines of each CREATE TABLE sorted: a column a rollback adds back goes to the end, which the catalog
    model reports as column order (not drift); the dump comparison says the same."""
    out: list[str] = []
    block: list[str] | None = None
    for line in dump.split("\n"):
        if block is not None:
            if line.startswith(")"):
                out.extend(sorted(item.rstrip(",") for item in block))
                block = None
                out.append(line)
            else:
                block.append(line)
        else:
            out.append(line)
            if _CREATE_TABLE.match(line):
                block = []
    return "\n".join(out)


@dataclasses.dataclass(frozen=True)
class DumpVerdict:
    """The pg_dump comparison: the unified diff (empty: equal), or why it could not be made; the dumps, for reuse."""

    diff: list[str]
    error: str | None = None
    rehearsed_dump: str = ""
    target_dump: str = ""


def dump_comparison(
    remote: Remote,
    live_dump: str,
    statements: Sequence[str],
    target_db: str,
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
) -> DumpVerdict:
    """The independent oracle: ``pg_dump --schema-only`` (normalized) of a scratch copy of the live structure with
    ``statements`` applied, against the same of the target after one dump-and-load, so both sides went through one
    (a restored database deparses some expressions differently).  One place, so another oracle can take over."""
    target_dump = dump_schema(remote, target_db)
    script = "".join(_terminated(s) for s in statements)
    copy = [Chunk(live_dump, "live (dump)"), Chunk("RESET ALL;\n"), Chunk(script, PLAN_SOURCE)]
    try:
        with ScratchSet(remote, [copy, [Chunk(target_dump, "target (dump)")]]) as scratch:
            scratch.load()
            names = scratch.names
            (rehearsed, target), raw = at_once(
                lambda: at_once(
                    lambda: dump_for_diff(remote, names[0], exclude_tables),
                    lambda: dump_for_diff(remote, names[1], exclude_tables),
                ),
                lambda: dump_schema(remote, names[0]),
            )
    except LoadError as error:
        return DumpVerdict([], error.message, "", target_dump)
    diff = list(
        difflib.unified_diff(
            order_free_columns(rehearsed).splitlines(),
            order_free_columns(target).splitlines(),
            "rehearsed (pg_dump)",
            "target (pg_dump)",
            n=2,
            lineterm="",
        )
    )
    return DumpVerdict(diff, None, raw, target_dump)


# ---------------------------------------------------------------- the apply session


class _Session:
    """An interactive psql session: the script is sent piece by piece, ``\\echo`` markers read back."""

    def __init__(self, remote: Remote, application_name: str, timeout: float) -> None:
        self.remote = remote
        self.timeout = timeout
        self.mark = Markers()  # the session's output also carries what the statements print
        self.proc: RemoteProcess = remote.start(remote.psql_argv(extra=["-A", "-t", "-f", "-"]))
        self.output: list[str] = []
        self.closed = False
        self.proc.write(
            f"SET application_name = {literal(application_name[:63])};\n"
            f"{self.mark.psql('pid')}\nSELECT pg_backend_pid();\n"
        )
        self.pid = int(self.after("pid")[0])

    def send(self, text: str) -> None:
        self.proc.write(text)

    def marker(self, timeout: float | None = None) -> list[str]:
        """The next marker line (split); RemoteError when psql ended first (its error is in ``error_text``)."""
        while True:
            line = self.proc.read_line(timeout or self.timeout)
            if line is None:
                raise self.ended()
            marker = self.mark.parse(line)
            if marker is not None:
                return marker.words(3)
            self.output.append(line)

    def after(self, tag: str, timeout: float | None = None) -> list[str]:
        """Wait for marker ``tag``; the lines up to the next marker are read by the caller through ``value``."""
        while self.marker(timeout)[0] != tag:
            pass
        line = self.proc.read_line(timeout or self.timeout)
        if line is None:
            raise self.ended()
        return [line]

    def ended(self) -> RemoteError:
        """Why the output ended: psql's error, or the connection."""
        if self.proc.wait(5) == -1:
            return RemoteError(f"{self.remote.host.name}: SSH connection lost")
        return RemoteError(f"{self.remote.host.name}: psql ended: {self.error_text() or 'no message'}")

    def error_text(self) -> str:
        self.proc.wait(5)
        lines = [line.strip() for line in self.proc.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR:" in line or "FATAL:" in line]
        return " ".join((errors or lines)[:2])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(RemoteError):
            self.proc.close_stdin()
            self.proc.wait(10)
        self.proc.close()


def _lock_sql(ledger: Ledger, wait_seconds: float, mark: Markers) -> str:
    cls, obj = ledger.lock_key
    return resources.fill(
        resources.sql("rollback_lock"),
        WAIT_SECONDS=str(float(wait_seconds)),
        LOCK_CLASS=str(cls),
        LOCK_OBJECT=str(obj),
        LOCK_MARKER=mark.psql("lock"),
    )


def _versions_query(ledger: Ledger) -> str:
    """The ledger's versions as one JSON line (``[]`` without a ledger)."""
    return (
        f"SELECT CASE WHEN to_regclass({ledger.regclass}) IS NULL THEN '[]'::json ELSE "
        f"(SELECT coalesce(array_to_json(array_agg(version ORDER BY version)), '[]') FROM {ledger.table}) END;\n"
    )


def _versions_sql(ledger: Ledger, mark: Markers) -> str:
    return f"{mark.psql('ledger')}\n" + _versions_query(ledger)


def _guarded(mark: Markers, index: int, texts: Sequence[str], *, at: bool = False) -> str:
    """Each of ``texts`` run only while none before it failed (``ON_ERROR_STOP`` off around them): the first failure
    sets ``opsagent_failed`` (``at``: also ``opsagent_at``, its position) and
    reports ``failed INDEX SQLSTATE MESSAGE``."""
    failed = mark.psql("failed", str(index), ":LAST_ERROR_SQLSTATE", ":LAST_ERROR_MESSAGE")
    return "".join(
        f"\\if :opsagent_failed\n\\else\n{text}\\if :ERROR\n\\set opsagent_failed 1\n"
        + (f"\\set opsagent_at {number}\n" if at else "")
        + f"{failed}\n\\endif\n\\endif\n"
        for number, text in enumerate(texts)
    )


def _in_list(versions: Sequence[str]) -> str:
    return ", ".join(literal(v) for v in versions)


# ---------------------------------------------------------------- the run


class RollbackRun:
    """One rollback (or dry run) of one database; the connection is the caller's."""

    def __init__(
        self,
        remote: Remote,
        migrations_dir: Path,
        options: RollbackOptions,
        identity: Identity,
        *,
        on_event: EventCallback | None = None,
        confirm: ConfirmCallback | None = None,
    ) -> None:
        self.remote = remote
        self.host = remote.host
        self.migrations_dir = migrations_dir
        self.options = options
        self.identity = identity
        self.on_event = on_event or (lambda _kind, _message: None)
        self.confirm = confirm or (lambda _result: True)
        self.ledger = Ledger.for_host(self.host)
        self.exclusions = ledger_exclusions(self.host)  # the ledger, and no user table, is left out of every comparison
        self.result = RollbackResult(
            self.host.name, self.host.database, options.target, "dry-run" if options.dry_run else "rollback"
        )
        # each transactional step retries its locks as a sync's migration does (short attempts that grow, pauses,
        # one budget: the host's lock_timeout and lock_retry_for)
        self.policy = LockRetryPolicy(
            cap=duration_seconds(self.host.lock_timeout, "lock_timeout"),
            budget=duration_seconds(self.host.lock_retry_for, "lock_retry_for", bare_unit="s"),
        )
        self.rng = random.Random()
        self.statement_timeout = check_timeout(self.host.statement_timeout, "statement_timeout")
        self._current: str | None = None  # source of the statement the apply is running
        self._rehearsed: Catalog | None = None  # the live catalog the rehearsal ended with
        self._catalog_from = 0  # where the apply transaction's own catalog starts in the session output

    def run(self) -> RollbackResult:
        started = time.monotonic()
        before = self.remote.command_count
        try:
            self._run()
        except KeyboardInterrupt:  # outside the steps (Ctrl-C during them is handled there): say which side of them
            if self.result.outcome == "rolled_back":
                self.result.warnings.append(
                    "interrupted during the comparison after the rollback, which had committed: see 'inv diff'"
                )
            elif self.result.outcome != "interrupted":
                self._stop("interrupted", "interrupted before anything was applied", "nothing was changed")
            raise RollbackInterrupted(self.result) from None
        finally:
            self.result.remote_commands = self.remote.command_count - before
            self.result.durations["total"] = time.monotonic() - started
        return self.result

    def _run(self) -> None:
        found = discover(self.migrations_dir)
        self.result.warnings.extend(found.warnings)
        state = LedgerState.decode(self.remote.query_json(self.ledger.state_query()))
        state.refuse_foreign(self.ledger)
        statuses = compute_status(found.migrations, state.rows)
        key, above, problems = check_target(statuses, self.options.target)
        self.result.versions = [s.version for s in above]
        self.result.down_sections = {
            s.version: bool(s.migration and s.migration.down_sql and s.migration.down_sql.strip()) for s in above
        }
        if problems:
            return self._stop(
                "refused",
                f"refusing to roll back to {self.options.target}: " + "; ".join(problems),
                "nothing was changed; 'inv status' shows every version",
            )
        if not above:
            self.result.outcome = "nothing_to_do"
            return None
        self.on_event("plan", f"rolling back {', '.join(self.result.versions)} (to {self.options.target})")
        target = [m for m in found.migrations if m.version_key <= key]
        self._analyse(target, above)
        if self.result.outcome in ("not_verified", "refused"):
            return None
        if self.options.dry_run:
            self.result.outcome = "dry_run"
            return None
        if not self.confirm(self.result):
            return self._stop("declined", "not confirmed: nothing was changed")
        self._apply(target)
        return None

    def _stop(self, outcome: Outcome, error: str, hint: str | None = None) -> None:
        self.result.outcome = outcome
        self.result.error = error
        self.result.hint = hint

    # -- analysis: target, way back, rehearsal, both oracles, losses

    def _analyse(self, target: Sequence[Migration], above: Sequence[VersionStatus]) -> None:
        started = time.monotonic()
        method, note = choose_method(above)
        self.result.method, self.result.method_note = method, note
        query = introspection_sql(self.exclusions, dependencies=True)
        with ScratchSet(self.remote, [replay_chunks(target)], query=query) as scratch:
            outputs, ((live, sizes), live_dump) = at_once(
                scratch.load,
                lambda: at_once(lambda: live_catalog(self.remote, self.exclusions), lambda: dump_schema(self.remote)),
            )
            desired = read_catalog(outputs[0], f"the migrations up to {self.options.target}")
            self.result.durations["target"] = time.monotonic() - started
            if method == "down":
                self.result.steps = steps_from_down(above)
            else:
                plan = generate_plan(live, desired, allow_drop=True)
                self.result.plan_warnings = list(plan.warnings)
                self.result.steps = steps_from_plan(plan, above)
            self.on_event("rehearse", "rehearsing on the live database (rolled back) and on a scratch copy")
            started = time.monotonic()
            live_dump = pin_extension_versions(live_dump, live)
            rehearsable = [s.rehearse for step in self.result.steps for s in step.statements if s.rehearse is not None]
            (verification, losses_json, counts_json), dumps = at_once(
                lambda: self._rehearse(desired),
                lambda: dump_comparison(self.remote, live_dump, rehearsable, scratch.names[0], self.exclusions),
            )
        self._verdict(verification, dumps)
        self.result.losses = decode_losses(losses_json, counts_json, sizes)
        self.result.durations["rehearsal"] = time.monotonic() - started
        if not verification.verified:
            return self._stop(
                "not_verified",
                f"not verified, nothing applied: {verification.line()}",
                (
                    "see the differences below; fix the down sections "
                    "(or roll back with the computed plan by removing them)"
                )
                if self.result.method == "down"
                else "see the differences below",
            )
        blocking = self.result.destructive
        if blocking and not self.options.allow_data_loss:
            return self._stop(
                "refused",
                "refusing to roll back: it would lose data: " + "; ".join(loss.describe() for loss in blocking),
                "nothing was changed; rerun with --allow-data-loss to accept (a verified backup is taken first), "
                "or write -- opsagent:down sections that keep the data",
            )
        return None

    def _verdict(self, verification: Verification, dumps: DumpVerdict) -> None:
        verification.dump, verification.dump_error = dumps.diff, dumps.error
        if verification.catalog and dumps.rehearsed_dump:
            # a plan recreates objects from deparsed definitions: drop "changes" that are only deparse artifacts
            result = confirm_changes(
                self.remote,
                DiffResult(verification.catalog),
                lambda: dumps.rehearsed_dump,
                lambda: dumps.target_dump,
                self.exclusions,
            )
            verification.catalog = result.significant
        self.result.verification = verification

    def _rehearse(self, desired: Catalog) -> tuple[Verification, str, str]:
        lock = check_timeout(self.host.rehearse_lock_timeout, "rehearse_lock_timeout")
        statement = check_timeout(self.host.rehearse_statement_timeout, "rehearse_statement_timeout")
        mark = Markers()
        steps, exclusions = self.result.steps, self.exclusions
        script = rehearsal_script(steps, self.ledger, lock, statement, exclude_tables=exclusions, mark=mark)
        output = self.remote.psql(script, extra=["-A", "-t", "-f", "-"], check=False)
        sections, marks = _sections(output.text, mark)
        verification = Verification()
        errors = [m for m in marks if m[0] == "error"]
        if errors or "end" not in sections:
            verification.rehearsal_error = self._rehearsal_error(errors, output.stderr)
            return verification, "[]", "[]"
        rehearsed = self._rehearsed = read_catalog(sections.get("catalog", ""), "the rehearsal")
        verification.catalog = compare(rehearsed, desired).significant
        counts = sections.get("counts", "[]")
        if any(m[0] == "counts-error" for m in marks):
            counts = "[]"  # rows unknown: every finding blocks
        return verification, sections.get("losses", "[]"), counts

    def _rehearsal_error(self, errors: list[list[str]], stderr: str) -> str:
        if not errors:
            return f"psql stopped: {' '.join(stderr.split())[:300] or 'no message'}"
        first = errors[0]
        index = int(first[1])
        rest = first[3] if len(first) > 3 else ""
        flat = [s for step in self.result.steps for s in step.statements]
        where = flat[index].source if 0 <= index < len(flat) else "preparing the rehearsal"
        code = first[2] if len(first) > 2 else ""
        why = " (lock not granted in time: another session holds it)" if code in ("55P03", "57014") else ""
        return f"{where}: {rest}{why}"

    # -- apply

    def _apply(self, target: Sequence[Migration]) -> None:
        session = _Session(self.remote, f"opsagent rollback {self.identity.applied_by}", self.host.command_timeout)
        try:
            if not self._lock(session) or (self.options.backup and not self._backup()):
                return None
            if not self._apply_steps(session):
                return None
        finally:
            session.close()
        self._check_after(target)
        return None

    def _apply_steps(self, session: _Session) -> bool:
        """Run the steps in order; on Ctrl-C or a failure, end the backend and find out where the ledger stands."""
        self.on_event("apply", f"applying ({self.result.method})")
        started = time.monotonic()
        committing = False
        for step in self.result.steps:
            step.status = "untouched"
        try:
            for index, step in enumerate(self.result.steps):
                step.status = "running"
                if not self._with_lock_retries(session, index, step):
                    return False
                if step.transactional:
                    if self._checks(index) and not self._unchanged_since_rehearsal(session, index):
                        return False
                    committing = True
                    session.send(f"COMMIT;\n{session.mark.psql('committed', str(index))}\n")
                    self._until(session, "committed")
                committing = False
                step.status = "applied"
                self.on_event("step", step.label)
        except KeyboardInterrupt:
            self._interrupted(session, committing, "interrupted")
            return False
        except RemoteError as exc:
            self._interrupted(session, committing, "failed", exc.message)
            return False
        finally:
            self.result.durations["apply"] = time.monotonic() - started
        self.result.outcome = "rolled_back"
        return True

    def _with_lock_retries(self, session: _Session, index: int, step: Step) -> bool:
        """Run a step: a transactional one up to its COMMIT, another to its end.  A lock it cannot take within the
        attempt's ``lock_timeout``, with nothing of the step applied, is retried: the transactional step was rolled
        back; the other one failed at its first statement and left the relations and index states as they were
        (a CONCURRENTLY statement stopped later leaves an invalid index: not retried), its ledger marks undone.
        The session and its migration lock are kept; the pause grows and the attempt's ``lock_timeout`` with it,
        until ``lock_retry_for`` is spent.  False: the step failed (reported; one outside a transaction that may
        have run partway ends the run as before, its ledger rows marked failed)."""
        first_try, attempt, timeout = time.monotonic(), 1, self.policy.timeout_for(1)
        while True:
            self._send_step(session, index, step, timeout)
            failure = self._until(session, "prepared" if step.transactional else "committed")
            if failure is None:
                return True
            sqlstate, message, untouched = failure
            following = None
            if sqlstate == LOCK_NOT_AVAILABLE and untouched:
                following = self.policy.next_attempt(attempt, time.monotonic() - first_try, self.rng)
            if following is None:
                if not untouched:
                    message = f"{message} (it runs outside a transaction and stopped partway: not retried)"
                elif sqlstate == LOCK_NOT_AVAILABLE and self.policy.retries:
                    message = (
                        f"could not take its locks within {self.policy.budget:g}s of lock retries ({attempt} attempts)"
                    )
                outcome: Outcome = "lock_timeout" if sqlstate == LOCK_NOT_AVAILABLE and untouched else "failed"
                self._interrupted(session, False, outcome, message)
                return False
            self.result.lock_retries += 1
            self.on_event("lock_retry", f"{step.label}: attempt {attempt} timed out waiting for a lock; retrying")
            time.sleep(following[0])
            attempt, timeout = attempt + 1, following[1]

    def _checks(self, index: int) -> bool:
        """The last step, when transactional, compares its result with the rehearsal's before it commits."""
        return (
            index == len(self.result.steps) - 1
            and self.result.steps[index].transactional
            and self._rehearsed is not None
        )

    def _unchanged_since_rehearsal(self, session: _Session, index: int) -> bool:
        """The catalog inside the uncommitted transaction must be the rehearsal's: else something changed the live
        database since (the lock keeps out syncs, not people), so ROLLBACK and say so."""
        applied = read_catalog("\n".join(session.output[self._catalog_from :]), "the rollback transaction")
        changes = compare(applied, self._rehearsed).significant if self._rehearsed is not None else []
        if not changes:
            return True
        session.send(f"ROLLBACK;\n{session.mark.psql('aborted', str(index))}\n")
        self._until(session, "aborted")
        self.result.steps[index].status = "rolled_back"
        names = ", ".join(f"{c.kind} {display(c.name)} ({c.status})" for c in changes[:5])
        self._stop(
            "not_verified",
            f"not applied: the live database changed since the rehearsal ({names}); the transaction was rolled back",
            "rerun the rollback to plan and rehearse it again",
        )
        return False

    def _until(self, session: _Session, tag: str) -> tuple[str, str, bool] | None:
        """Read markers up to ``tag``, remembering the statement running (a failure names it).  A step that failed
        (its guards skipped the rest) ends at ``step-failed`` instead when nothing of it is applied (a transactional
        one rolled back, another stopped at its first statement with the catalog as before), or at
        ``step-partial`` (another that may have run partway): its (SQLSTATE, message, whether nothing of it applied)."""
        failure = ("", "")
        while True:
            parts = session.marker()
            if parts[0] == tag:
                return None
            if parts[0] == "failed" and len(parts) >= 3:
                failure = (parts[2], parts[3] if len(parts) > 3 else "")
            if parts[0] in ("step-failed", "step-partial"):
                return (*failure, parts[0] == "step-failed")
            if parts[0] == "catalog":
                self._catalog_from = len(session.output)
            if parts[0] == "statement" and len(parts) >= 3:
                step = self.result.steps[int(parts[1])]
                self._current = step.statements[int(parts[2])].source

    def _send_step(self, session: _Session, index: int, step: Step, lock_timeout: float) -> None:
        """A transactional step runs up to its ``prepared`` marker (the client commits), each statement guarded: after
        a failure the rest is skipped and the step rolled back in the session (``step-failed``).  Another step runs
        under ``ON_ERROR_STOP``, as psql's default for opsagent's sessions."""
        mark, timeouts = session.mark, (pg_duration(lock_timeout), self.statement_timeout)
        statements = [
            f"{mark.psql('statement', str(index), str(number))}\n{_terminated(statement.sql)}"
            for number, statement in enumerate(step.statements)
        ]
        if step.deletes:
            statements.append(f"DELETE FROM {self.ledger.table} WHERE version IN ({_in_list(step.deletes)});\n")
        if not step.transactional:
            session.send(self._autocommit_step(session, index, step, statements, timeouts))
            return
        if self._checks(index):
            statements.append(f"{mark.psql('catalog')}\n{introspection_sql(self.exclusions)}")
        guarded = _guarded(
            mark,
            index,
            [
                f"SET LOCAL lock_timeout = '{timeouts[0]}';\nSET LOCAL statement_timeout = '{timeouts[1]}';\n",
                *statements,
            ],
        )
        session.send(
            f"{mark.psql('step', str(index))}\n\\set ON_ERROR_STOP 0\n\\set opsagent_failed 0\nBEGIN;\n{guarded}"
            f"\\if :opsagent_failed\nROLLBACK;\n{mark.psql('step-failed', str(index))}\n"
            f"\\else\n{mark.psql('prepared', str(index))}\n\\endif\n\\set ON_ERROR_STOP 1\n"
        )

    def _autocommit_step(
        self, session: _Session, index: int, step: Step, statements: list[str], timeouts: tuple[str, str]
    ) -> str:
        """A step outside a transaction: its ledger rows marked unfinished first (each row's success kept in a psql
        variable), the catalog's relations and index states read, each statement guarded as in a transaction.  On
        a failure: ``step-failed`` (its marks undone) when the first statement failed with that catalog unchanged
        (nothing of it applied: a lock is then retried), else ``step-partial``."""
        mark, table = session.mark, self.ledger.table
        kept = "".join(
            f"SELECT coalesce((SELECT success IS NOT false FROM {table} WHERE version = {literal(version)}), false) "
            f"AS opsagent_mark_{number} \\gset\n"
            for number, version in enumerate(step.marks)
        )
        marking = (
            f"UPDATE {table} SET success = false WHERE version IN ({_in_list(step.marks)});\n" if step.marks else ""
        )
        unmarking = "".join(
            f"\\if :opsagent_mark_{number}\nUPDATE {table} SET success = true WHERE version = {literal(version)};\n"
            "\\endif\n"
            for number, version in enumerate(step.marks)
        )
        reset = "RESET lock_timeout;\nRESET statement_timeout;\n"
        return (
            f"{mark.psql('step', str(index))}\n{kept}{marking}"
            f"SET lock_timeout = '{timeouts[0]}';\nSET statement_timeout = '{timeouts[1]}';\n"
            f"SELECT {CATALOG_FINGERPRINT} AS opsagent_fp \\gset\n"
            "\\set ON_ERROR_STOP 0\n\\set opsagent_failed 0\n\\set opsagent_at 0\n"
            + _guarded(mark, index, statements, at=True)
            + f"{reset}\\if :opsagent_failed\n"
            f"SELECT (:'opsagent_at' = '0' AND {CATALOG_FINGERPRINT} = :'opsagent_fp') AS opsagent_untouched \\gset\n"
            f"\\if :opsagent_untouched\n{unmarking}{mark.psql('step-failed', str(index))}\n"
            f"\\else\n{mark.psql('step-partial', str(index))}\n\\endif\n"
            f"\\else\n{mark.psql('committed', str(index))}\n\\endif\n\\set ON_ERROR_STOP 1\n"
        )

    def _lock(self, session: _Session) -> bool:
        session.send(_lock_sql(self.ledger, self.options.lock_timeout, session.mark))
        locked = session.after("lock", self.options.lock_timeout + self.host.command_timeout)[0].strip() == "on"
        if not locked:
            self._stop(
                "lock_timeout",
                f"another sync or rollback holds the migration lock on {self.host.database} "
                f"(waited {self.options.lock_timeout:g}s)",
                "wait for it to finish; nothing was changed",
            )
            session.close()
            return False
        self.on_event("locked", "")
        session.send(_versions_sql(self.ledger, session.mark))
        versions = json.loads(session.after("ledger")[0])
        expected = sorted(v for step in self.result.steps for v in step.deletes)
        present = sorted(v for v in versions if v in expected)
        if present != expected:
            self._stop(
                "refused",
                "the ledger changed since the rollback was planned (another sync or rollback ran): "
                f"expected {', '.join(expected)} above {self.options.target}, found {', '.join(present) or 'none'}",
                "nothing was changed; rerun the rollback to plan it again",
            )
            return False
        return True

    def _backup(self) -> bool:
        self.on_event("backup", f"pre-rollback-to-{self.options.target}")
        started = time.monotonic()
        try:
            self.result.backup = create_backup(self.remote, f"pre-rollback-to-{self.options.target}")
        except OpsagentError as exc:
            self._stop("backup_failed", f"backup failed, nothing changed: {exc.message}", exc.hint)
            return False
        finally:
            self.result.durations["backup"] = time.monotonic() - started
        self.on_event("backup_done", self.result.backup.path)
        return True

    def _interrupted(self, session: _Session, committing: bool, outcome: Outcome, message: str | None = None) -> None:
        """End our backend (an open transaction rolls back), then find out which version the database is at.

        ``committing``: COMMIT was sent and not yet confirmed, so only the ledger can tell whether it happened.
        """
        with contextlib.suppress(OpsagentError):
            self.remote.psql(f"SELECT pg_terminate_backend({session.pid})", timeout=30, check=False)
        session.close()
        detail = message or "interrupted"
        if outcome == "failed" and self._current:
            detail = f"{self._current}: {detail}"
        try:
            versions = self.remote.query_json(_versions_query(self.ledger), timeout=60)
        except (OpsagentError, ValueError) as exc:
            running = next((step for step in self.result.steps if step.status == "running"), None)
            unknown = "whether the last step committed is unknown" if committing else "the open step was not committed"
            if running is not None and not running.transactional:
                unknown = (
                    f"'{running.label}' runs outside a transaction "
                    "and may have run partway (its ledger row is marked failed)"
                )
            self._stop(
                outcome,
                f"{detail}; {unknown} (the ledger could not be read: {getattr(exc, 'message', exc)})",
                "run 'inv status': the ledger is exact, each step commits together with its ledger rows",
            )
            return
        self.result.ledger_after = [str(v) for v in versions]
        for step in self.result.steps:
            if step.deletes and all(v not in self.result.ledger_after for v in step.deletes):
                step.status = "applied"
            elif step.status == "running":
                step.status = "rolled_back" if step.transactional else "failed"
        gone = [v for step in self.result.steps for v in step.deletes if v not in self.result.ledger_after]
        where = f"rolled back {', '.join(gone)}" if gone else "nothing was rolled back"
        last = self.result.ledger_after[-1] if self.result.ledger_after else "no version"
        self._stop(
            outcome,
            f"{detail}; {where}: the ledger ends at {last}",
            "the ledger is exact (each step commits together with its ledger rows); rerun the rollback to continue",
        )

    def _check_after(self, target: Sequence[Migration]) -> None:
        """The live database against the target, once more, now that it is committed (catalog model)."""
        try:
            with ScratchSet(self.remote, [replay_chunks(target)], query=introspection_sql(self.exclusions)) as scratch:
                outputs, live = at_once(scratch.load, lambda: introspect(self.remote, exclude_tables=self.exclusions))
            self.result.after = compare(live, read_catalog(outputs[0], "the target")).significant
            self.result.ledger_after = [str(v) for v in self.remote.query_json(_versions_query(self.ledger))]
        except OpsagentError as exc:
            self.result.warnings.append(f"could not compare the result with the target: {exc.message}")
            return
        if self.result.after:
            self.result.warnings.append(
                f"after the rollback the live database differs from the target in {len(self.result.after)} "
                "object(s): something else changed it meanwhile? see 'inv diff'"
            )


def rollback(
    remote: Remote,
    migrations_dir: Path,
    options: RollbackOptions,
    identity: Identity,
    *,
    on_event: EventCallback | None = None,
    confirm: ConfirmCallback | None = None,
) -> RollbackResult:
    """Plan, rehearse, verify and (unless ``options.dry_run`` or refused) apply a rollback; see the module docstring."""
    return RollbackRun(remote, migrations_dir, options, identity, on_event=on_event, confirm=confirm).run()
