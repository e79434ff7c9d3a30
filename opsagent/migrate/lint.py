"""Migration hazard linting, judged against the real target when one is given.

Text-only linters (Squawk, the paid Flyway/Atlas editions) cannot tell a
``CREATE INDEX`` on a 1,000-row table from one on a 50-million-row table.  This
module classifies every statement with PostgreSQL's own parser (pglast) into
findings, then :func:`escalate` re-grades them with live row estimates and sizes
fetched from the host's catalog in one query (:func:`table_stats_query`).

Everything here is pure except :func:`lint_against_host`, which does that one
round trip.  The library never prints: callers render :class:`Finding` objects.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from pglast import ast
from pglast.enums import (
    AlterTableType,
    ConstrType,
    DropBehavior,
    NullTestType,
    ObjectType,
    ReindexObjectType,
    TransactionStmtKind,
    VariableSetKind,
)

from ..errors import ConfigError, ExitCode
from ..sqlquote import literal
from ..units import human_bytes
from .files import field
from .sqltext import Statement, split_statements

SEVERITIES = ("info", "warning", "error")
DEFAULT_LOCK_TIMEOUT = "5s"  # the inventory's default per-attempt lock_timeout (opsagent.inventory.HostConfig)


# ---------------------------------------------------------------- rules


@dataclasses.dataclass(frozen=True)
class Rule:
    """A stable rule id with its default grading and the fix to suggest."""

    id: str
    category: str  # destructive | blocking | transaction | timing | compat
    severity: str  # default severity when linting offline
    what: str  # one line: what the statement does wrong
    fix: str  # one line: what to do instead
    escalation: str | None = None  # "large": error on a large table; "rows": error when the table holds rows


_RULES = (
    # destructive: data is lost
    Rule(
        "drop-table",
        "destructive",
        "warning",
        "DROP TABLE deletes the table and its data",
        "check no code uses it and a backup exists; rename it first and drop it in a later release",
        "rows",
    ),
    Rule(
        "drop-column",
        "destructive",
        "warning",
        "DROP COLUMN deletes the column's data and breaks code still using it",
        "deploy code that no longer uses the column first, then drop it in a later migration",
        "rows",
    ),
    Rule(
        "drop-schema",
        "destructive",
        "warning",
        "DROP SCHEMA deletes every object in the schema (with CASCADE)",
        "drop the schema's objects explicitly, without CASCADE, after a backup",
    ),
    Rule(
        "drop-database",
        "destructive",
        "warning",
        "DROP DATABASE deletes a whole database",
        "drop databases by hand after a backup, never from a migration",
    ),
    Rule(
        "drop-type",
        "destructive",
        "warning",
        "DROP TYPE/DOMAIN fails or cascades to columns that use it",
        "check no column or function still uses the type; avoid CASCADE",
    ),
    Rule(
        "drop-view",
        "destructive",
        "warning",
        "DROP VIEW breaks code and views that depend on it",
        "use CREATE OR REPLACE VIEW to change a view; drop it only after its readers are gone",
    ),
    Rule(
        "drop-function",
        "destructive",
        "warning",
        "DROP FUNCTION breaks callers, triggers and defaults using it",
        "use CREATE OR REPLACE FUNCTION to change a body; drop it only after its callers are gone",
    ),
    Rule(
        "truncate",
        "destructive",
        "warning",
        "TRUNCATE deletes every row (under an ACCESS EXCLUSIVE lock)",
        "take a backup first, or DELETE with an explicit WHERE in batches",
        "rows",
    ),
    Rule(
        "delete-without-where",
        "destructive",
        "warning",
        "DELETE without WHERE deletes every row",
        "add a WHERE clause (WHERE true if every row is really meant)",
        "rows",
    ),
    Rule(
        "update-without-where",
        "destructive",
        "warning",
        "UPDATE without WHERE rewrites every row and locks them all",
        "add a WHERE clause, and backfill large tables in batches",
        "large",
    ),
    Rule(
        "alter-column-type",
        "blocking",
        "warning",
        "ALTER COLUMN TYPE rewrites the table under an ACCESS EXCLUSIVE lock (and a narrower type may lose data)",
        "add a new column, backfill it in batches, switch the code, then drop the old column",
        "large",
    ),
    Rule(
        "add-column-not-null-without-default",
        "destructive",
        "warning",
        "ADD COLUMN NOT NULL without a DEFAULT fails as soon as the table holds rows",
        "add the column nullable or with a constant DEFAULT, backfill, then SET NOT NULL",
        "rows",
    ),
    # blocking: long ACCESS EXCLUSIVE / SHARE locks on an existing table
    Rule(
        "create-index-not-concurrently",
        "blocking",
        "warning",
        "CREATE INDEX blocks writes to the table while it builds",
        "use CREATE INDEX CONCURRENTLY in a no-transaction migration",
        "large",
    ),
    Rule(
        "add-fk-not-valid",
        "blocking",
        "warning",
        "ADD FOREIGN KEY scans the table while blocking writes to it and to the referenced table",
        "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in a later migration",
        "large",
    ),
    Rule(
        "add-check-not-valid",
        "blocking",
        "warning",
        "ADD CHECK scans the whole table under an ACCESS EXCLUSIVE lock",
        "ADD CONSTRAINT ... CHECK (...) NOT VALID, then VALIDATE CONSTRAINT in a later migration",
        "large",
    ),
    Rule(
        "set-not-null",
        "blocking",
        "warning",
        "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock",
        "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL (PostgreSQL 12+ skips the scan)",
        "large",
    ),
    Rule(
        "add-column-volatile-default",
        "blocking",
        "warning",
        "ADD COLUMN with a volatile default (or serial/identity/stored generated) rewrites the table",
        "add the column without a default (or with a constant one), then backfill in batches",
        "large",
    ),
    Rule(
        "add-unique-constraint",
        "blocking",
        "warning",
        "ADD UNIQUE builds an index under an ACCESS EXCLUSIVE lock",
        "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX",
        "large",
    ),
    Rule(
        "add-primary-key",
        "blocking",
        "warning",
        "ADD PRIMARY KEY builds an index under an ACCESS EXCLUSIVE lock",
        "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... PRIMARY KEY USING INDEX",
        "large",
    ),
    Rule(
        "table-rewrite",
        "blocking",
        "warning",
        "SET TABLESPACE / SET LOGGED / SET UNLOGGED / SET ACCESS METHOD rewrite the table",
        "run it in a maintenance window, or use pg_repack",
        "large",
    ),
    Rule(
        "reindex-not-concurrently",
        "blocking",
        "warning",
        "REINDEX blocks writes (and reads using the index) while it runs",
        "use REINDEX ... CONCURRENTLY in a no-transaction migration",
        "large",
    ),
    Rule(
        "drop-index-not-concurrently",
        "blocking",
        "info",
        "DROP INDEX waits for an ACCESS EXCLUSIVE lock on the table (brief once granted)",
        "use DROP INDEX CONCURRENTLY in a no-transaction migration, or keep a short lock_timeout",
    ),
    Rule(
        "vacuum-full",
        "blocking",
        "warning",
        "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock",
        "use plain VACUUM, or pg_repack for an online compaction",
        "large",
    ),
    Rule(
        "cluster",
        "blocking",
        "warning",
        "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock",
        "use pg_repack for an online reorder, or run CLUSTER in a maintenance window",
        "large",
    ),
    Rule(
        "lock-table",
        "blocking",
        "warning",
        "LOCK TABLE holds a lock until the migration commits",
        "drop the explicit LOCK and rely on each statement's own lock under a lock_timeout",
        "large",
    ),
    # transaction: cannot run inside the migration's transaction
    Rule(
        "non-transactional-in-transaction",
        "transaction",
        "error",
        "the statement cannot run inside a transaction block, and this migration runs in one",
        "move the statement to its own no-transaction migration",
    ),
    Rule(
        "transaction-control",
        "transaction",
        "warning",
        "BEGIN/COMMIT/ROLLBACK inside a transactional migration ends the tool's own transaction early",
        "remove it: the tool wraps each transactional migration in one transaction",
    ),
    # timing: how long a lock wait may last
    Rule(
        "lock-timeout",
        "timing",
        "info",
        "a lock_timeout bounds how long this statement may queue behind other locks",
        "keep lock_timeout short (seconds) so a lock wait cannot stall all traffic",
    ),
    Rule(
        "no-lock-timeout",
        "timing",
        "warning",
        "no lock_timeout applies: waiting for the lock queues every later query on the table",
        "SET lock_timeout = '5s' before the statement, or keep the tool's default",
    ),
    # compat: breaks running code, loses no data
    Rule(
        "rename-table",
        "compat",
        "info",
        "RENAME breaks code still using the old table name",
        "deploy code that works with both names first (e.g. through a view), then rename",
    ),
    Rule(
        "rename-column",
        "compat",
        "info",
        "RENAME COLUMN breaks code still using the old column name",
        "add the new column, backfill and switch the code, then drop the old one",
    ),
)
RULES: Mapping[str, Rule] = {rule.id: rule for rule in _RULES}


# ---------------------------------------------------------------- findings


@dataclasses.dataclass(frozen=True)
class Finding:
    """One hazard at ``source:line``; ``rows``/``bytes`` are filled by :func:`escalate`."""

    source: str
    line: int
    rule: str
    severity: str
    message: str
    fix: str
    table: str | None = None
    category: str = ""
    statement: str = ""  # first line of the statement, for context
    lock_timeout: str | None = None  # the lock_timeout that applies to this statement ("0" when disabled)
    rows: int | None = None  # live row estimate of ``table``
    bytes: int | None = None  # pg_total_relation_size of ``table``
    reason: str | None = None  # why the severity differs from the rule's default
    acknowledged: bool = False  # silenced by an ``-- opsagent:ignore RULE`` comment
    created_in: str | None = None  # an earlier file of the linted set that creates ``table`` (it exists when this runs)

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LintUnit:
    """One migration file to lint: what is needed, and nothing about the ledger."""

    source: str
    sql: str
    transactional: bool = True


class _MigrationLike(Protocol):
    filename: str
    sql: str
    transactional: bool


UnitLike = LintUnit | tuple[str, str, bool] | _MigrationLike


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def exit_code_for(findings: Iterable[Finding]) -> ExitCode:
    """``HAZARDS`` (4) when any finding is a warning or worse, else ``OK``."""
    worst = max((severity_rank(f.severity) for f in findings), default=0)
    return ExitCode.HAZARDS if worst >= severity_rank("warning") else ExitCode.OK


def has_errors(findings: Iterable[Finding]) -> bool:
    """True when a finding should block ``sync`` (unless ``--allow-hazards``)."""
    return any(f.severity == "error" for f in findings)


def count_by_severity(findings: Iterable[Finding]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for finding in findings:
        counts[finding.severity] += 1
    return counts


# ---------------------------------------------------------------- names


def _quote(name: str) -> str:
    """pglast's identifier quoting; its module loads the printers (~10 ms), so on first use, not at import."""
    from pglast.stream import maybe_double_quote_name

    return str(maybe_double_quote_name(name))


def _table_name(schema: str | None, name: str) -> str:
    """Display name as written (schema-qualified when it was), quoted when needed."""
    quoted = _quote(name)
    return f"{_quote(schema)}.{quoted}" if schema else quoted


def _key(schema: str | None, name: str) -> str:
    """Identity of a table for "created earlier": unqualified and public.* are the same."""
    return name if schema in (None, "public") else f"{schema}.{name}"


def _rangevar(rel: Any) -> tuple[str, str] | None:
    """(display name, key) of a RangeVar (a pglast node, or libpg_query's JSON tree of one), or None."""
    if isinstance(rel, dict):
        schema, name = rel.get("schemaname") or None, rel.get("relname")
    elif isinstance(rel, ast.RangeVar):
        schema, name = rel.schemaname, rel.relname
    else:
        return None
    if not name:
        return None
    return _table_name(schema, name), _key(schema, name)


def _names(obj: Any) -> list[str]:
    """String parts of a DropStmt object (tuple of String, TypeName, ObjectWithArgs, String)."""
    if isinstance(obj, ast.String):
        return [str(obj.sval)]
    if isinstance(obj, ast.TypeName):
        return _names(obj.names)
    if isinstance(obj, ast.ObjectWithArgs):
        return _names(obj.objname)
    if isinstance(obj, (tuple, list)):
        return [part for item in obj for part in _names(item)]
    return []


def _qualified_parts(obj: Any) -> tuple[str | None, str] | None:
    parts = _names(obj)
    if not parts:
        return None
    return (parts[-2] if len(parts) >= 2 else None), parts[-1]


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 120 else line[:117] + "..."


# ---------------------------------------------------------------- lock_timeout


def _const_text(value: Any) -> str | None:
    """A constant (A_Const, or a bare String/Integer/Boolean of a DefElem) as text, else None."""
    val = getattr(value, "val", value)
    for attr in ("sval", "ival", "fval", "boolval"):
        if val is not None and hasattr(val, attr):
            return str(getattr(val, attr)).lower() if attr == "boolval" else str(getattr(val, attr))
    return None


def timeout_disabled(value: str | None) -> bool:
    """``None`` (not set: the server default, usually 0) and ``0``/``0s``/``0ms`` mean "wait forever"."""
    return value is None or re.fullmatch(r"\s*0+(\.0*)?\s*[a-z]*\s*", value.lower()) is not None


# ---------------------------------------------------------------- linting


@dataclasses.dataclass
class _Timeout:
    value: str | None
    origin: str  # "tool default", "set at line 3"...


@dataclasses.dataclass
class _State:
    """What earlier statements of the same file tell about later ones.

    ``created`` holds the tables created earlier IN THIS FILE: new and empty, so an index
    or a constraint on them is harmless.  A table created by an earlier file is an existing
    table by the time this file runs (that file ran long ago on production), of a size only
    the host knows: ``created_by`` remembers which file, to say so in the finding.
    """

    created: set[str]
    created_by: dict[str, str] = dataclasses.field(default_factory=dict)  # table key -> earlier file creating it
    # (table key, column) -> True when a validated CHECK (col IS NOT NULL) makes SET NOT NULL instant
    not_null_checks: dict[tuple[str, str], bool] = dataclasses.field(default_factory=dict)
    # constraint name -> (table key, column) for CHECK (col IS NOT NULL) NOT VALID
    pending_checks: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)


class _FileLinter:
    """Lints one file; holds the per-file state (transaction block, lock_timeout)."""

    def __init__(self, sql: str, source: str, transactional: bool, lock_timeout: str | None, state: _State) -> None:
        self.sql = sql
        self.source = source
        self.transactional = transactional
        self.state = state
        self.session = _Timeout(lock_timeout, "tool default" if lock_timeout is not None else "not set by the tool")
        self.local: _Timeout | None = None
        self.in_block = False  # explicit BEGIN in a no-transaction file
        self.findings: list[Finding] = []
        self.statement: Statement | None = None
        self.locks: list[tuple[str, str]] = []  # tables this statement locks strongly (display, key)
        self.table_keys: dict[str, str] = {}  # display name -> key, for the tables findings name

    # -- plumbing

    @property
    def in_transaction(self) -> bool:
        return self.transactional or self.in_block

    def timeout(self) -> _Timeout:
        return self.local if self.local is not None else self.session

    def line_of(self, node: Any) -> int:
        """The line of a sub-node (a column or constraint of a long ALTER TABLE) when the parser knows it."""
        assert self.statement is not None
        location = getattr(node, "location", None)
        if isinstance(location, int) and location >= 0:
            return self.statement.line_at(location)  # node locations are offsets into the statement's own text
        return self.statement.line

    def add(
        self,
        rule_id: str,
        *,
        table: str | None = None,
        message: str | None = None,
        node: Any = None,
        severity: str | None = None,
        category: str | None = None,
    ) -> None:
        assert self.statement is not None
        rule = RULES[rule_id]
        self.findings.append(
            Finding(
                source=self.source,
                line=self.line_of(node) if node is not None else self.statement.line,
                rule=rule.id,
                severity=severity or rule.severity,
                message=message or rule.what,
                fix=rule.fix,
                table=table,
                category=category or rule.category,
                statement=_first_line(self.statement.text),
                created_in=self.state.created_by.get(self.table_keys.get(table, "")) if table else None,
            )
        )

    def existing(self, rel: Any) -> tuple[str, str] | None:
        """The (display, key) of a relation unless it was created earlier in this file."""
        names = _rangevar(rel)
        if names is None or names[1] in self.state.created:
            return None
        self.table_keys[names[0]] = names[1]
        return names

    def lock(self, names: tuple[str, str] | None) -> None:
        if names is not None:
            self.table_keys[names[0]] = names[1]
            if names not in self.locks:
                self.locks.append(names)

    def created(self, names: tuple[str, str]) -> None:
        self.state.created.add(names[1])

    # -- driving

    def run(self) -> list[Finding]:
        statements = split_statements(self.sql, self.source)
        ignores = _ignore_comments(self.sql, statements)
        for index, statement in enumerate(statements):
            handler = _HANDLERS.get(statement.kind)
            if handler is None or not _may_matter(statement):
                continue
            ignored = ignores.get(index)
            self.statement = statement
            self.locks = []
            start = len(self.findings)
            # not kept: 400,000 ASTs would cost gigabytes; the JSON tree where it is enough: 10x cheaper than pglast's
            # node objects, and CREATE TABLE and CREATE INDEX are most of a migration set
            handler(self, statement.parse_tree() if statement.kind in _TREE_KINDS else statement.parse_node())
            self.timing(start)
            if ignored:
                self.acknowledge(start, ignored)
        return self.findings

    def acknowledge(self, start: int, rules: set[str]) -> None:
        for index in range(start, len(self.findings)):
            finding = self.findings[index]
            if finding.rule in rules or "all" in rules:
                self.findings[index] = dataclasses.replace(
                    finding, severity="info", acknowledged=True, reason="acknowledged by an opsagent:ignore comment"
                )

    def timing(self, start: int) -> None:
        """Report which lock_timeout applies to a statement that takes a strong lock on an existing table."""
        if not self.locks:
            return
        timeout = self.timeout()
        shown = timeout.value if timeout.value is not None else "server default"
        display = self.locks[0][0]
        if timeout_disabled(timeout.value):
            what = "lock_timeout is 0" if timeout.value is not None else "no lock_timeout is set"
            self.add(
                "no-lock-timeout",
                table=display,
                message=f"{what} ({timeout.origin}): waiting for the lock on {display} queues every later query on it",
            )
        else:
            self.add(
                "lock-timeout",
                table=display,
                message=f"lock_timeout {timeout.value} ({timeout.origin}) bounds the lock wait on {display}",
            )
        for index in range(start, len(self.findings)):
            self.findings[index] = dataclasses.replace(self.findings[index], lock_timeout=shown)

    def set_timeout(self, value: str | None, local: bool, origin: str) -> None:
        if local:
            if self.in_transaction:  # SET LOCAL outside a transaction block has no effect
                self.local = _Timeout(value, origin)
        else:
            self.session = _Timeout(value, origin)
            self.local = None


_IGNORE_RE = re.compile(r"--\s*opsagent:\s*ignore\s+([a-z0-9\-, ]+)", re.IGNORECASE)
# statement kinds whose handler can only report something when one of these words is in the text
# (a WITH clause, SELECT INTO, set_config): the rest of a 400,000-INSERT data load is not parsed twice
_NEEDS_WORD = {
    "InsertStmt": re.compile("with", re.IGNORECASE),
    "SelectStmt": re.compile("with|into|set_config", re.IGNORECASE),
}


def _may_matter(statement: Statement) -> bool:
    words = _NEEDS_WORD.get(statement.kind)
    return words is None or words.search(statement.text) is not None


def _ignore_comments(sql: str, statements: Sequence[Statement]) -> dict[int, set[str]]:
    """Rules acknowledged by ``-- opsagent:ignore rule-a, rule-b`` before or inside each statement.

    One regex pass over the file, then each comment goes to the first statement ending on
    or after its line (linear: a statement never rescans the file).
    """
    result: dict[int, set[str]] = {}  # statement index -> rules
    if _IGNORE_RE.search(sql) is None:
        return result
    ends = [statement.line + statement.text.count("\n") for statement in statements]
    index, line, counted_to = 0, 1, 0
    for match in _IGNORE_RE.finditer(sql):
        line += sql.count("\n", counted_to, match.start())
        counted_to = match.start()
        while index < len(ends) and ends[index] < line:
            index += 1
        if index == len(ends):
            break
        result.setdefault(index, set()).update(
            part.strip().lower() for part in match.group(1).split(",") if part.strip()
        )
    return result


# ---------------------------------------------------------------- statement handlers

_Handler = Callable[[_FileLinter, Any], None]


def _not_in_transaction(lint: _FileLinter, what: str) -> None:
    if lint.in_transaction:
        lint.add(
            "non-transactional-in-transaction",
            message=f"{what} cannot run inside a transaction block, and this migration runs in one",
        )


def _create_table(lint: _FileLinter, node: Any) -> None:
    names = _rangevar(field(node, "relation"))
    if names is not None:
        lint.state.created.add(names[1])


def _create_table_as(lint: _FileLinter, node: Any) -> None:
    into = getattr(node, "into", None)
    names = _rangevar(getattr(into, "rel", None))
    if names is not None:
        lint.state.created.add(names[1])


def _index(lint: _FileLinter, node: Any) -> None:
    if field(node, "concurrent"):
        _not_in_transaction(lint, "CREATE INDEX CONCURRENTLY")
        return
    names = lint.existing(field(node, "relation"))
    if names is None:
        return
    lint.lock(names)
    what = "CREATE UNIQUE INDEX" if field(node, "unique") else "CREATE INDEX"
    lint.add(
        "create-index-not-concurrently",
        table=names[0],
        message=f"{what} on {names[0]} blocks writes to it while the index builds",
    )


_DROP_RULES: dict[ObjectType, tuple[str, str]] = {
    ObjectType.OBJECT_TABLE: ("drop-table", "DROP TABLE"),
    ObjectType.OBJECT_FOREIGN_TABLE: ("drop-table", "DROP FOREIGN TABLE"),
    ObjectType.OBJECT_SCHEMA: ("drop-schema", "DROP SCHEMA"),
    ObjectType.OBJECT_TYPE: ("drop-type", "DROP TYPE"),
    ObjectType.OBJECT_DOMAIN: ("drop-type", "DROP DOMAIN"),
    ObjectType.OBJECT_VIEW: ("drop-view", "DROP VIEW"),
    ObjectType.OBJECT_MATVIEW: ("drop-view", "DROP MATERIALIZED VIEW"),
    ObjectType.OBJECT_FUNCTION: ("drop-function", "DROP FUNCTION"),
    ObjectType.OBJECT_PROCEDURE: ("drop-function", "DROP PROCEDURE"),
    ObjectType.OBJECT_ROUTINE: ("drop-function", "DROP ROUTINE"),
}


_DROP_EFFECT = {
    "drop-table": "deletes the table and its data",
    "drop-schema": "deletes the schema and, with CASCADE, everything in it",
    "drop-type": "fails or cascades to the columns using it",
    "drop-view": "breaks code and views reading it",
    "drop-function": "breaks its callers, triggers and defaults",
}


def _drop(lint: _FileLinter, node: Any) -> None:
    if node.concurrent:
        _not_in_transaction(lint, "DROP INDEX CONCURRENTLY")
        return
    if node.removeType == ObjectType.OBJECT_INDEX:
        for obj in node.objects or ():
            parts = _qualified_parts(obj)
            if parts is not None:
                display = _table_name(*parts)
                lint.lock((display, _key(*parts)))  # the index's table, really: the timing rule names the index
                lint.add("drop-index-not-concurrently", message=f"DROP INDEX {display} locks its table while it waits")
        return
    entry = _DROP_RULES.get(node.removeType)
    if entry is None:
        return
    rule_id, verb = entry
    cascade = " CASCADE" if node.behavior == DropBehavior.DROP_CASCADE else ""
    for obj in node.objects or ():
        parts = _qualified_parts(obj)
        if parts is None:
            continue
        schema, name = parts
        if node.removeType == ObjectType.OBJECT_SCHEMA:
            schema, name = None, _names(obj)[-1]
        display = _table_name(schema, name)
        is_table = rule_id == "drop-table"
        if is_table:
            if _key(schema, name) in lint.state.created:
                continue
            lint.lock((display, _key(schema, name)))
        lint.add(
            rule_id, table=display if is_table else None, message=f"{verb} {display}{cascade}: {_DROP_EFFECT[rule_id]}"
        )


def _truncate(lint: _FileLinter, node: Any) -> None:
    for rel in node.relations or ():
        names = lint.existing(rel)
        if names is None:
            continue
        lint.lock(names)
        lint.add("truncate", table=names[0], message=f"TRUNCATE {names[0]} deletes every row")


def _dml(lint: _FileLinter, node: Any) -> None:
    """DELETE/UPDATE, also inside WITH, EXPLAIN ANALYZE and INSERT ... SELECT."""
    for dml in _dml_nodes(node):
        if getattr(dml, "whereClause", None) is not None:
            continue
        names = lint.existing(dml.relation)
        if names is None:
            continue
        if isinstance(dml, ast.DeleteStmt):
            lint.add(
                "delete-without-where",
                table=names[0],
                message=f"DELETE FROM {names[0]} without WHERE deletes every row",
            )
        else:
            lint.add(
                "update-without-where",
                table=names[0],
                message=f"UPDATE {names[0]} without WHERE rewrites and locks every row",
            )


def _dml_nodes(node: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(node, ast.ExplainStmt):
        analyze = any(getattr(opt, "defname", "") == "analyze" for opt in node.options or ())
        return _dml_nodes(node.query) if analyze else []
    if isinstance(node, (ast.DeleteStmt, ast.UpdateStmt)):
        found.append(node)
    with_clause = getattr(node, "withClause", None)
    for cte in getattr(with_clause, "ctes", None) or ():
        found.extend(_dml_nodes(getattr(cte, "ctequery", None)))
    if isinstance(node, ast.InsertStmt):
        found.extend(_dml_nodes(node.selectStmt))
    return found


def _select(lint: _FileLinter, node: Any) -> None:
    _dml(lint, node)
    into = getattr(node, "intoClause", None)
    names = _rangevar(getattr(into, "rel", None))
    if names is not None:
        lint.state.created.add(names[1])
    for target in node.targetList or ():  # SELECT set_config('lock_timeout', '5s', is_local)
        call = getattr(target, "val", None)
        if (
            isinstance(call, ast.FuncCall)
            and _names(call.funcname)[-1:] == ["set_config"]
            and len(call.args or ()) == 3
        ):
            name, value, local = tuple(call.args or ())
            if _const_text(name) == "lock_timeout":
                is_local = getattr(getattr(local, "val", None), "boolval", False) is True
                lint.set_timeout(_const_text(value), is_local, f"set_config at line {lint.line_of(call)}")


def _variable_set(lint: _FileLinter, node: Any) -> None:
    if node.name != "lock_timeout":
        return
    assert lint.statement is not None
    origin = f"set at line {lint.statement.line}"
    if node.kind == VariableSetKind.VAR_SET_VALUE and node.args:
        value = _const_text(node.args[0])
        if value is not None and value.isdigit() and value.strip("0"):
            value += "ms"  # a bare number is milliseconds
        lint.set_timeout(value, bool(node.is_local), origin)
    elif node.kind in (VariableSetKind.VAR_SET_DEFAULT, VariableSetKind.VAR_RESET):
        # back to the server's default, usually 0 (wait forever)
        lint.set_timeout(None, bool(node.is_local), f"reset to the server default at line {lint.statement.line}")


def _transaction(lint: _FileLinter, node: Any) -> None:
    kind = node.kind
    begins = (TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START)
    ends = (
        TransactionStmtKind.TRANS_STMT_COMMIT,
        TransactionStmtKind.TRANS_STMT_ROLLBACK,
        TransactionStmtKind.TRANS_STMT_PREPARE,
    )
    if lint.transactional and (kind in begins or kind in ends):
        lint.add("transaction-control")
        return
    if kind in begins:
        lint.in_block = True
    elif kind in ends:
        lint.in_block = False
        lint.local = None


def _vacuum(lint: _FileLinter, node: Any) -> None:
    if not node.is_vacuumcmd:
        return  # ANALYZE runs fine in a transaction and takes a weak lock
    _not_in_transaction(lint, "VACUUM")
    if not any(getattr(opt, "defname", "") == "full" for opt in node.options or ()):
        return
    for rel in node.rels or ():
        names = lint.existing(getattr(rel, "relation", None))
        if names is not None:
            lint.lock(names)
            lint.add(
                "vacuum-full",
                table=names[0],
                message=f"VACUUM FULL {names[0]} rewrites it under an ACCESS EXCLUSIVE lock",
            )
    if not node.rels:
        lint.add(
            "vacuum-full", message="VACUUM FULL of the whole database rewrites every table under ACCESS EXCLUSIVE locks"
        )


def _cluster(lint: _FileLinter, node: Any) -> None:
    if node.relation is None:
        _not_in_transaction(lint, "CLUSTER without a table")
    names = lint.existing(node.relation) if node.relation is not None else None
    if node.relation is not None and names is None:
        return
    lint.lock(names)
    target = names[0] if names else "every previously clustered table"
    lint.add(
        "cluster",
        table=names[0] if names else None,
        message=f"CLUSTER rewrites {target} under an ACCESS EXCLUSIVE lock",
    )


def _lock(lint: _FileLinter, node: Any) -> None:
    for rel in node.relations or ():
        names = lint.existing(rel)
        if names is not None:
            lint.lock(names)
            lint.add(
                "lock-table",
                table=names[0],
                message=f"LOCK TABLE {names[0]} holds the lock until the migration commits",
            )


def _reindex(lint: _FileLinter, node: Any) -> None:
    concurrent = any(getattr(p, "defname", "") == "concurrently" for p in node.params or ())
    whole = node.kind in (ReindexObjectType.REINDEX_OBJECT_SYSTEM, ReindexObjectType.REINDEX_OBJECT_DATABASE)
    if concurrent or whole:
        _not_in_transaction(lint, "REINDEX CONCURRENTLY" if concurrent else "REINDEX DATABASE/SYSTEM")
    if concurrent:
        return
    names = lint.existing(node.relation) if node.relation is not None else None
    if node.kind == ReindexObjectType.REINDEX_OBJECT_TABLE and names is not None:
        lint.lock(names)
        lint.add(
            "reindex-not-concurrently", table=names[0], message=f"REINDEX TABLE {names[0]} blocks writes while it runs"
        )
    elif node.kind == ReindexObjectType.REINDEX_OBJECT_INDEX and names is not None:
        lint.add(
            "reindex-not-concurrently", message=f"REINDEX INDEX {names[0]} blocks writes to its table while it runs"
        )
    elif whole or node.kind == ReindexObjectType.REINDEX_OBJECT_SCHEMA:
        lint.add("reindex-not-concurrently", message="REINDEX of a whole schema/database blocks writes table by table")


def _rename(lint: _FileLinter, node: Any) -> None:
    names = _rangevar(node.relation)
    if names is None:
        return
    created = names[1] in lint.state.created
    if node.renameType == ObjectType.OBJECT_TABLE:
        if created:
            lint.state.created.add(_key(node.relation.schemaname, node.newname))
            return
        lint.lock(names)
        lint.add(
            "rename-table",
            table=names[0],
            message=f"renaming {names[0]} to {node.newname} breaks code using the old name",
        )
    elif node.renameType == ObjectType.OBJECT_COLUMN and node.relationType == ObjectType.OBJECT_TABLE and not created:
        lint.lock(names)
        lint.add(
            "rename-column",
            table=names[0],
            message=f"renaming column {names[0]}.{node.subname} to {node.newname} breaks code using the old name",
        )


def _create_trigger(lint: _FileLinter, node: Any) -> None:
    lint.lock(lint.existing(node.relation))  # SHARE ROW EXCLUSIVE: blocks writes while it waits


def _simple_not_transactional(what: str) -> _Handler:
    def handler(lint: _FileLinter, node: Any) -> None:
        _not_in_transaction(lint, what)

    return handler


def _drop_database(lint: _FileLinter, node: Any) -> None:
    _not_in_transaction(lint, "DROP DATABASE")
    lint.add("drop-database", message=f"DROP DATABASE {_quote(node.dbname)}: deletes the whole database")


def _option_text(arg: Any) -> str:
    """A DefElem value (``true``, ``off``, ``'x'``...) as lower-case text."""
    text = _const_text(arg)
    if text is None:
        names = _names(arg)
        text = names[-1] if names else "true"  # a bare option name means "on"
    return text.lower()


def _subscription(lint: _FileLinter, node: Any) -> None:
    options = {getattr(o, "defname", ""): _option_text(getattr(o, "arg", None)) for o in node.options or ()}
    if options.get("create_slot", "true") not in ("false", "off", "0", "no"):
        _not_in_transaction(lint, "CREATE SUBSCRIPTION with create_slot")


# ---------------------------------------------------------------- ALTER TABLE


_VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "uuidv4",
        "uuidv7",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "currval",
        "lastval",
        "setval",
        "txid_current",
        "pg_current_xact_id",
        "gen_random_bytes",
        "gen_salt",
        "crypt",
    }
)
_STABLE_FUNCTIONS = frozenset(
    {
        "now",
        "statement_timestamp",
        "transaction_timestamp",
        "current_setting",
        "lower",
        "upper",
        "btrim",
        "trim",
        "length",
        "concat",
        "concat_ws",
        "to_char",
        "to_timestamp",
        "to_date",
        "make_date",
        "make_time",
        "make_interval",
        "make_timestamp",
        "make_timestamptz",
        "date_trunc",
        "timezone",
        "jsonb_build_object",
        "json_build_object",
        "jsonb_build_array",
        "json_build_array",
        "to_jsonb",
        "to_json",
        "array_fill",
        "md5",
        "abs",
        "round",
        "replace",
        "format",
        "current_database",
        "current_schema",
        "current_user",
        "session_user",
        "inet_client_addr",
    }
)
_SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
# target types that can hold less than a wider source type, or reject some of its values
_NARROW_TYPES = frozenset({"int2", "int4", "float4", "date", "bool"})
_BOUNDED_TYPES = frozenset(
    {"varchar", "bpchar", "numeric", "bit", "varbit", "time", "timestamp", "timestamptz", "interval"}
)


def _functions(expr: Any) -> list[str]:
    """Names of the functions an expression calls (walks the pglast tree)."""
    names: list[str] = []
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, (tuple, list)):
            stack.extend(node)
        elif isinstance(node, ast.Node):
            if isinstance(node, ast.FuncCall):
                names.append(_names(node.funcname)[-1].lower())
            children = (getattr(node, attr, None) for attr in node)
            stack.extend(child for child in children if isinstance(child, (ast.Node, tuple, list)))
    return names


def _volatile_reason(column: Any) -> tuple[str | None, bool]:
    """Why adding ``column`` rewrites the table, and whether that is certain (False: an unknown function)."""
    type_names = _names(getattr(column.typeName, "names", ()))
    if type_names and type_names[-1].lower() in _SERIAL_TYPES:
        return f"a {type_names[-1]} column fills every row from a sequence", True
    for constraint in column.constraints or ():
        if constraint.contype == ConstrType.CONSTR_IDENTITY:
            return "an identity column fills every row from a sequence", True
        if constraint.contype == ConstrType.CONSTR_GENERATED:
            return "a stored generated column is computed for every row", True
        if constraint.contype == ConstrType.CONSTR_DEFAULT:
            called = _functions(constraint.raw_expr)
            volatile = [f for f in called if f in _VOLATILE_FUNCTIONS]
            if volatile:
                return f"the default calls {volatile[0]}(), which is volatile", True
            unknown = [f for f in called if f not in _STABLE_FUNCTIONS]
            if unknown:
                return f"the default calls {unknown[0]}(); if it is VOLATILE", False
    return None, False


def _has_default(column: Any) -> bool:
    kinds = {c.contype for c in column.constraints or ()}
    if kinds & {ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED}:
        return True
    type_names = _names(getattr(column.typeName, "names", ()))
    return bool(type_names) and type_names[-1].lower() in _SERIAL_TYPES


def _is_not_null(column: Any) -> bool:
    return bool(column.is_not_null) or any(c.contype == ConstrType.CONSTR_NOTNULL for c in column.constraints or ())


def _add_column(lint: _FileLinter, names: tuple[str, str], cmd: Any) -> None:
    column = cmd.def_
    if not isinstance(column, ast.ColumnDef):
        return
    reason, certain = _volatile_reason(column)
    if reason is not None:
        where = f"ADD COLUMN {column.colname} on {names[0]}"
        if certain:
            lint.add(
                "add-column-volatile-default",
                table=names[0],
                node=column,
                message=f"{where} rewrites the table under an ACCESS EXCLUSIVE lock: {reason}",
            )
        else:
            lint.add(
                "add-column-volatile-default",
                table=names[0],
                node=column,
                severity="info",
                message=f"{where}: {reason}, the table is rewritten under an ACCESS EXCLUSIVE lock",
            )
    if _is_not_null(column) and not _has_default(column):
        lint.add(
            "add-column-not-null-without-default",
            table=names[0],
            node=column,
            message=f"ADD COLUMN {column.colname} NOT NULL without DEFAULT fails if {names[0]} holds any row",
        )
    for constraint in column.constraints or ():
        if constraint.contype == ConstrType.CONSTR_FOREIGN and not constraint.skip_validation:
            lint.add(
                "add-fk-not-valid",
                table=names[0],
                node=constraint,
                message=f"ADD COLUMN {column.colname} REFERENCES validates the new foreign key on {names[0]} "
                "while blocking writes to both tables",
            )


def _add_constraint(lint: _FileLinter, names: tuple[str, str], cmd: Any) -> None:
    constraint = cmd.def_
    if not isinstance(constraint, ast.Constraint):
        return
    label = f" {constraint.conname}" if constraint.conname else ""
    if constraint.contype == ConstrType.CONSTR_FOREIGN and not constraint.skip_validation:
        lint.add(
            "add-fk-not-valid",
            table=names[0],
            node=constraint,
            message=(
                f"ADD FOREIGN KEY{label} on {names[0]} scans it while blocking writes to it and to the referenced table"
            ),
        )
    elif constraint.contype == ConstrType.CONSTR_CHECK:
        column = _not_null_check_column(constraint.raw_expr)
        if column is not None and constraint.conname:
            if constraint.skip_validation:
                lint.state.pending_checks[constraint.conname] = (names[1], column)
            else:
                lint.state.not_null_checks[(names[1], column)] = True
        if not constraint.skip_validation:
            lint.add(
                "add-check-not-valid",
                table=names[0],
                node=constraint,
                message=f"ADD CHECK{label} on {names[0]} scans the whole table under an ACCESS EXCLUSIVE lock",
            )
    elif constraint.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY) and not constraint.indexname:
        rule_id = "add-unique-constraint" if constraint.contype == ConstrType.CONSTR_UNIQUE else "add-primary-key"
        verb = "ADD UNIQUE" if rule_id == "add-unique-constraint" else "ADD PRIMARY KEY"
        lint.add(
            rule_id,
            table=names[0],
            node=constraint,
            message=f"{verb}{label} on {names[0]} builds its index under an ACCESS EXCLUSIVE lock",
        )


def _not_null_check_column(expr: Any) -> str | None:
    """``col`` for a ``CHECK (col IS NOT NULL)`` constraint expression."""
    if (
        isinstance(expr, ast.NullTest)
        and expr.nulltesttype == NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
    ):
        fields = _names(expr.arg.fields)
        return fields[-1] if fields else None
    return None


def _alter_type(lint: _FileLinter, names: tuple[str, str], cmd: Any) -> None:
    column = cmd.def_
    type_name = getattr(column, "typeName", None)
    parts = _names(getattr(type_name, "names", ()))
    target = parts[-1].lower() if parts else "?"
    using = getattr(column, "raw_default", None) is not None
    lossy = target in _NARROW_TYPES or (target in _BOUNDED_TYPES and bool(getattr(type_name, "typmods", None))) or using
    shown = _type_display(type_name)
    if lossy:
        why = "a USING conversion" if using else f"{shown} may not hold every existing value"
        lint.add(
            "alter-column-type",
            table=names[0],
            category="destructive",
            message=f"ALTER COLUMN {cmd.name} TYPE {shown} on {names[0]} rewrites the table and may lose data ({why})",
        )
    else:
        lint.add(
            "alter-column-type",
            table=names[0],
            message=f"ALTER COLUMN {cmd.name} TYPE {shown} on {names[0]} rewrites it under an ACCESS EXCLUSIVE lock "
            "(unless the change is binary-compatible, e.g. varchar(n) to text)",
        )


def _type_display(type_name: Any) -> str:
    parts = [p for p in _names(getattr(type_name, "names", ())) if p != "pg_catalog"]
    mods = [_const_text(m) for m in getattr(type_name, "typmods", None) or ()]
    base = ".".join(parts) or "?"
    return f"{base}({', '.join(m for m in mods if m)})" if mods else base


def _set_not_null(lint: _FileLinter, names: tuple[str, str], cmd: Any) -> None:
    if lint.state.not_null_checks.get((names[1], cmd.name)):
        return  # a validated CHECK (col IS NOT NULL) lets PostgreSQL 12+ skip the scan
    lint.add(
        "set-not-null",
        table=names[0],
        message=(
            f"ALTER COLUMN {cmd.name} SET NOT NULL on {names[0]} scans the whole table under an ACCESS EXCLUSIVE lock"
        ),
    )


def _validate(lint: _FileLinter, names: tuple[str, str], cmd: Any) -> None:
    pending = lint.state.pending_checks.pop(cmd.name, None)
    if pending is not None and pending[0] == names[1]:
        lint.state.not_null_checks[pending] = True


def _rewrite(lint: _FileLinter, names: tuple[str, str], cmd: Any) -> None:
    what = {
        AlterTableType.AT_SetTableSpace: "SET TABLESPACE",
        AlterTableType.AT_SetLogged: "SET LOGGED",
        AlterTableType.AT_SetUnLogged: "SET UNLOGGED",
    }.get(cmd.subtype, "SET ACCESS METHOD")
    lint.add("table-rewrite", table=names[0], message=f"{what} rewrites {names[0]} under an ACCESS EXCLUSIVE lock")


def _drop_column(lint: _FileLinter, names: tuple[str, str], cmd: Any) -> None:
    lint.add("drop-column", table=names[0], message=f"DROP COLUMN {cmd.name} deletes its data from {names[0]}")


def _detach(lint: _FileLinter, names: tuple[str, str], cmd: Any) -> None:
    if getattr(cmd.def_, "concurrent", False):
        _not_in_transaction(lint, "DETACH PARTITION CONCURRENTLY")


_AlterHandler = Callable[[_FileLinter, tuple[str, str], Any], None]
_ALTER_HANDLERS: dict[AlterTableType, _AlterHandler] = {
    AlterTableType.AT_AddColumn: _add_column,
    AlterTableType.AT_AddConstraint: _add_constraint,
    AlterTableType.AT_AlterColumnType: _alter_type,
    AlterTableType.AT_SetNotNull: _set_not_null,
    AlterTableType.AT_ValidateConstraint: _validate,
    AlterTableType.AT_SetTableSpace: _rewrite,
    AlterTableType.AT_SetLogged: _rewrite,
    AlterTableType.AT_SetUnLogged: _rewrite,
    AlterTableType.AT_DropColumn: _drop_column,
    AlterTableType.AT_DetachPartition: _detach,
}
if hasattr(AlterTableType, "AT_SetAccessMethod"):
    _ALTER_HANDLERS[AlterTableType.AT_SetAccessMethod] = _rewrite


def _alter_table(lint: _FileLinter, node: Any) -> None:
    if node.objtype != ObjectType.OBJECT_TABLE:
        return
    names = _rangevar(node.relation)
    if names is None:
        return
    if names[1] in lint.state.created:  # a new table is empty and unused: only CONCURRENTLY still matters
        for cmd in node.cmds or ():
            if cmd.subtype == AlterTableType.AT_DetachPartition:
                _detach(lint, names, cmd)
        return
    lint.lock(names)
    for cmd in node.cmds or ():
        handler = _ALTER_HANDLERS.get(cmd.subtype)
        if handler is not None:
            handler(lint, names, cmd)


_TREE_KINDS = frozenset({"CreateStmt", "IndexStmt"})  # their handlers read libpg_query's JSON tree (files.field)
_HANDLERS: dict[str, _Handler] = {
    "CreateStmt": _create_table,
    "CreateForeignTableStmt": _create_table,
    "CreateTableAsStmt": _create_table_as,
    "IndexStmt": _index,
    "DropStmt": _drop,
    "TruncateStmt": _truncate,
    "DeleteStmt": _dml,
    "UpdateStmt": _dml,
    "InsertStmt": _dml,
    "ExplainStmt": _dml,
    "SelectStmt": _select,
    "VariableSetStmt": _variable_set,
    "TransactionStmt": _transaction,
    "VacuumStmt": _vacuum,
    "ClusterStmt": _cluster,
    "LockStmt": _lock,
    "ReindexStmt": _reindex,
    "RenameStmt": _rename,
    "CreateTrigStmt": _create_trigger,
    "AlterTableStmt": _alter_table,
    "AlterSystemStmt": _simple_not_transactional("ALTER SYSTEM"),
    "CreatedbStmt": _simple_not_transactional("CREATE DATABASE"),
    "DropdbStmt": _drop_database,
    "CreateTableSpaceStmt": _simple_not_transactional("CREATE TABLESPACE"),
    "DropTableSpaceStmt": _simple_not_transactional("DROP TABLESPACE"),
    "CreateSubscriptionStmt": _subscription,
}


# ---------------------------------------------------------------- public entry points


def lint_sql(
    sql: str,
    source: str = "<sql>",
    *,
    transactional: bool = True,
    lock_timeout: str | None = DEFAULT_LOCK_TIMEOUT,
    tables_created_earlier: set[str] | None = None,
) -> list[Finding]:
    """Findings for one file; ``tables_created_earlier`` is read and extended (tables created in the run).

    ``lock_timeout`` is what the tool sets on the migration's session (None: it sets none).
    Raises :class:`opsagent.migrate.sqltext.SqlSyntaxError` when the file does not parse.
    """
    created = tables_created_earlier if tables_created_earlier is not None else set()
    return _FileLinter(sql, source, transactional, lock_timeout, _State(created)).run()


def _as_unit(unit: UnitLike) -> LintUnit:
    if isinstance(unit, LintUnit):
        return unit
    if isinstance(unit, tuple):
        source, sql, transactional = unit
        return LintUnit(source, sql, transactional)
    return LintUnit(str(unit.filename), unit.sql, bool(unit.transactional))


def lint_migrations(
    units: Iterable[UnitLike],
    *,
    lock_timeout: str | None = DEFAULT_LOCK_TIMEOUT,
    tables_created_earlier: set[str] | None = None,
) -> list[Finding]:
    """Findings for a migration set in order, each file on its own.

    Only a table created earlier in the SAME file is new.  A table created by an earlier
    file exists when this one runs (on production that file ran long ago), so its findings
    stay, marked ``created_in`` that file: offline its size is unknown (:func:`grade_unknown_sizes`),
    live the host knows it (:func:`escalate`).  ``tables_created_earlier`` are new in every file.
    """
    created_by: dict[str, str] = {}
    findings: list[Finding] = []
    for unit in map(_as_unit, units):
        state = _State(set(tables_created_earlier or ()), created_by)
        findings.extend(_FileLinter(unit.sql, unit.source, unit.transactional, lock_timeout, state).run())
        for key in state.created:
            created_by.setdefault(key, unit.source)
    return findings


# ---------------------------------------------------------------- live sizes


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Host ``hazards:`` settings: above ``large_*`` blocking findings become errors; below ``small_*`` infos."""

    large_table_rows: int = 1_000_000
    large_table_bytes: int = 1 << 30
    small_table_rows: int = 10_000  # 0 disables the downgrade of blocking findings on small tables
    small_table_bytes: int = 64 << 20
    unknown_table_size: str = "large"  # offline, an existing table's size is unknown: graded as "large" or "small"

    def is_large(self, rows: int | None, size: int | None) -> bool:
        return (rows is not None and rows >= self.large_table_rows) or (
            size is not None and size >= self.large_table_bytes
        )


UNKNOWN_SIZE_CHOICES = ("large", "small")
_UNITS = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}


def _threshold_int(key: str, value: Any, *, sizes: bool) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"hazards.{key}: expected a number, got {value!r}")
    if isinstance(value, int) and value >= 0:
        return value
    text = str(value).strip().lower().replace("_", "").replace(",", "")
    match = re.fullmatch(r"(\d+)\s*([a-z]*)", text)
    if match is None or (match.group(2) and (not sizes or match.group(2) not in _UNITS)):
        unit_hint = " (units: kB, MB, GB, TB)" if sizes else ""
        raise ConfigError(f"hazards.{key}: expected a non-negative integer{unit_hint}, got {value!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def thresholds_from(hazards: Mapping[str, Any] | Thresholds | None) -> Thresholds:
    """Validate a host's ``hazards:`` mapping (``large_table_rows: 1000000``, ``large_table_bytes: 1GB``...)."""
    if isinstance(hazards, Thresholds):
        return hazards
    values: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(Thresholds)}
    for key, value in (hazards or {}).items():
        if key not in known:
            raise ConfigError(f"hazards.{key}: unknown key (expected one of: {', '.join(sorted(known))})")
        if key == "unknown_table_size":
            if str(value).strip().lower() not in UNKNOWN_SIZE_CHOICES:
                raise ConfigError(f"hazards.{key}: expected one of {', '.join(UNKNOWN_SIZE_CHOICES)}, got {value!r}")
            values[key] = str(value).strip().lower()
            continue
        values[key] = _threshold_int(key, value, sizes=key.endswith("_bytes"))
    return Thresholds(**values)


def lock_free_bytes(alias: str) -> str:
    """SQL for a table's size (heap + TOAST + indexes) from ``pg_class.relpages``.

    ``pg_total_relation_size`` opens the relation with ACCESS SHARE, so a size query
    queues behind an ``ALTER TABLE`` waiting for its lock (and everything queues
    behind both).  ``relpages`` is the estimate VACUUM/ANALYZE keep, read without a lock.
    """
    return (
        f"(({alias}.relpages::bigint"
        f" + coalesce((SELECT t.relpages FROM pg_class t WHERE t.oid = {alias}.reltoastrelid), 0)"
        f" + coalesce((SELECT sum(i.relpages) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        f" WHERE x.indrelid = {alias}.oid), 0)) * current_setting('block_size')::bigint)"
    )


def table_stats_query(tables: Iterable[str]) -> str:
    """One query returning ``{"name": {"rows": estimate, "bytes": total size, "table": qualified}}``.

    Names resolve like the migration would (``to_regclass``, so via search_path);
    unknown tables are left out.  Partitioned tables sum their leaf partitions.
    Rows come from ``reltuples`` (the planner's estimate), or from the statistics
    collector's live tuple count when the table was never analyzed; bytes from
    ``relpages``.  Nothing here takes a lock on the tables.
    """
    names = list(dict.fromkeys(tables))
    if not names:
        return "SELECT '{}'::json"
    values = ", ".join(f"({literal(name)})" for name in names)
    return _without_jit(
        "SELECT coalesce(json_object_agg(q.name, json_build_object("
        "'table', quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
        "'rows', s.rows, 'bytes', s.bytes)), '{}'::json) "
        f"FROM (VALUES {values}) AS q(name) "
        "JOIN pg_class c ON c.oid = to_regclass(q.name) "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace {_ROWS_AND_BYTES}"
    )


# Rows and bytes of pg_class ``c`` (the sum of its leaf partitions when partitioned), lock-free: the one size
# computation behind lint --host, sync's hazard grading and the plan's CONCURRENTLY choice.
_ROWS_AND_BYTES = (
    "CROSS JOIN LATERAL ("
    "SELECT coalesce(sum(CASE WHEN l.reltuples >= 0 THEN l.reltuples::bigint "
    "ELSE pg_stat_get_live_tuples(l.oid) END), 0)::bigint AS rows, "
    f"coalesce(sum({lock_free_bytes('l')}), 0)::bigint AS bytes "
    "FROM (SELECT c.oid AS relid WHERE c.relkind NOT IN ('p', 'I') UNION ALL "
    "SELECT p.relid FROM pg_partition_tree(c.oid) AS p WHERE p.isleaf AND c.relkind IN ('p', 'I')) AS leaf "
    "JOIN pg_class l ON l.oid = leaf.relid) AS s"
)


def every_table_stats_query() -> str:
    """``{"schema.table": {"rows": estimate, "bytes": total size}}`` for every ordinary table of the user's schemas
    (keyed like the catalog), computed as :func:`table_stats_query` does."""
    return _without_jit(
        "SELECT coalesce(json_object_agg(quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
        "json_build_object('rows', s.rows, 'bytes', s.bytes)), '{}'::json) "
        f"FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace {_ROWS_AND_BYTES} "
        "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_toast%'"
    )


def _without_jit(query: str) -> str:
    """``query`` run with JIT off, then the session's setting back.  pg_partition_tree's default estimate (1,000
    rows per table) prices the size query far above ``jit_above_cost``: on 400 tables the JIT compilation took
    0.6 s of a 0.62 s query (16 ms without).  Statements, not a subquery: callers send it as a script's statement
    (each output line stays the query's one row; SET and RESET print nothing under ``psql -q``)."""
    return f"SET jit = off;\n{query};\nRESET jit"


def describe_size(rows: int | None, size: int | None) -> str:
    """``~20,000 rows, 1.1 MB`` for a finding's live stats."""
    parts = []
    if rows is not None:
        parts.append(f"~{rows:,} rows")
    if size is not None:
        parts.append(human_bytes(size))
    return ", ".join(parts)


def _regrade(finding: Finding, rows: int | None, size: int | None, limits: Thresholds) -> tuple[str, str | None]:
    """New severity and the reason for it, from the rule's escalation kind."""
    rule = RULES.get(finding.rule)
    kind = rule.escalation if rule else None
    if finding.acknowledged or kind is None or finding.severity == "error":
        return finding.severity, finding.reason
    shown = describe_size(rows, size)
    if finding.rule == "alter-column-type" and finding.category == "destructive":
        kind = "rows"  # a narrowing type change loses data as soon as there is data
    if kind == "rows" and (rows or 0) > 0:
        return "error", f"{finding.table} holds data ({shown})"
    large = limits.is_large(rows, size)
    if large and kind in ("large", "rows"):
        return "error", (
            f"{finding.table} is large ({shown}; thresholds {limits.large_table_rows:,} rows "
            f"or {human_bytes(limits.large_table_bytes)})"
        )
    small = rows is not None and size is not None and rows < limits.small_table_rows and size < limits.small_table_bytes
    if small and kind == "large" and finding.category == "blocking" and finding.severity == "warning":
        return "info", f"{finding.table} is small ({shown}): the lock is brief"
    return finding.severity, finding.reason


def escalate(
    findings: Iterable[Finding],
    stats: Mapping[str, Mapping[str, Any]],
    thresholds: Mapping[str, Any] | Thresholds | None = None,
) -> list[Finding]:
    """Attach live sizes to findings and re-grade them (pure: ``stats`` as from :func:`table_stats_query`).

    Blocking rules become errors on tables at or above ``large_table_rows`` or
    ``large_table_bytes``, and infos below ``small_table_rows`` and
    ``small_table_bytes``; destructive rules become errors when the table holds rows.
    """
    limits = thresholds_from(thresholds)
    result: list[Finding] = []
    for finding in findings:
        entry = stats.get(finding.table) if finding.table else None
        if entry is None:
            result.append(_not_on_host(finding))
            continue
        rows = _optional_int(entry.get("rows"))
        size = _optional_int(entry.get("bytes"))
        severity, reason = _regrade(finding, rows, size, limits)
        result.append(dataclasses.replace(finding, rows=rows, bytes=size, severity=severity, reason=reason))
    return result


def _escalates(finding: Finding) -> str | None:
    """The rule's escalation kind ("large"/"rows") when live sizes could change this finding's grade."""
    rule = RULES.get(finding.rule)
    if (
        rule is None
        or rule.escalation is None
        or finding.acknowledged
        or finding.severity == "error"
        or not finding.table
    ):
        return None
    return rule.escalation


def _not_on_host(finding: Finding) -> Finding:
    """A table the host does not have: created by an earlier PENDING file of this run, it is new and empty then."""
    if finding.created_in is None or _escalates(finding) is None:
        return finding
    return dataclasses.replace(
        finding,
        severity="info",
        reason=f"{finding.table} is not on the host yet: {finding.created_in}, pending before this file, "
        "creates it, so it is new and empty when this runs",
    )


def grade_unknown_sizes(
    findings: Iterable[Finding], thresholds: Mapping[str, Any] | Thresholds | None = None
) -> list[Finding]:
    """Offline: grade findings on existing tables, whose size no file tells, as the ``hazards:`` settings say.

    ``unknown_table_size: large`` (the default) grades them as on a large table (errors), so a
    ``CREATE INDEX`` on a table of an earlier migration is never an all-clear; ``small`` grades
    blocking findings as on a small table (infos) and leaves destructive ones warnings.
    ``inv lint --host H`` replaces both with the live size.
    """
    limits = thresholds_from(thresholds)
    result: list[Finding] = []
    for finding in findings:
        kind = _escalates(finding)
        if kind is None or finding.severity != "warning":  # an info (e.g. an unknown default function) stays one
            result.append(finding)
            continue
        origin = (
            f"an existing table (created by {finding.created_in}, an earlier migration)"
            if finding.created_in
            else "an existing table"
        )
        if limits.unknown_table_size == "large":
            severity = "error"
            reason = (
                f"{finding.table} is {origin} of unknown size offline: graded as on a large table "
                "('inv lint --host H' judges it by its live size)"
            )
        elif kind == "large" and finding.category == "blocking":
            severity, reason = (
                "info",
                (
                    f"{finding.table} is {origin} of unknown size offline: graded as a small table "
                    "(hazards.unknown_table_size: small)"
                ),
            )
        else:
            severity, reason = finding.severity, f"{finding.table} is {origin} of unknown size offline"
        result.append(dataclasses.replace(finding, severity=severity, reason=reason))
    return result


def _optional_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class _QueryJson(Protocol):
    def query_json(self, sql: str, database: str | None = None) -> Any: ...


def lint_against_host(
    remote: _QueryJson,
    findings: Sequence[Finding],
    thresholds: Mapping[str, Any] | Thresholds | None = None,
    *,
    database: str | None = None,
) -> list[Finding]:
    """Fetch the live size of every table the findings touch in one query, then :func:`escalate`."""
    limits = thresholds_from(thresholds)  # validate before the round trip
    tables = [f.table for f in findings if f.table]
    if not tables:
        return list(findings)
    stats = remote.query_json(table_stats_query(tables), database)
    return escalate(findings, stats if isinstance(stats, dict) else {}, limits)
