"""Versioned migration files: discovery, checks, ledger status and plans (pure logic, no SSH).

Files are ``sql/migrations/<version>_<slug>.sql``; versions are compared as integers so
``2_x`` runs before ``10_x`` and ``004`` is the same version as ``0004``.  Everything that
can be refused without a database (bad names, duplicate versions, statements that cannot
run inside a transaction, stray ``COMMIT``) is refused here, before anything runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ..errors import InvalidMigration, OpsagentError, UsageError

if TYPE_CHECKING:
    from .sqltext import Statement


def split_statements(sql: str, source: str = "<sql>") -> list[Statement]:
    """``opsagent.migrate.sqltext.split_statements``, imported on first use:
    pglast is only loaded when a file is parsed."""
    from .sqltext import split_statements as split

    return split(sql, source)


NO_TRANSACTION_MARKER = "no-transaction"
DOWN_MARKER = "down"  # a line "-- opsagent:down": what follows undoes the migration (used only by 'inv rollback')
KNOWN_MARKERS = frozenset({NO_TRANSACTION_MARKER, DOWN_MARKER})
LINT_DIRECTIVE = "ignore"  # -- opsagent:ignore drop-column (opsagent.migrate.lint)
TIMESTAMP_DIGITS = 14  # YYYYMMDDHHMMSS
NAMING_HINT = "migration files are named <version>_<description>.sql, e.g. 001_create_users.sql"

_NAME_RE = re.compile(r"^(\d+)_(.+)\.sql$")
_MARKER_LINE_RE = re.compile(r"^[^\S\n]*--[^\S\n]*opsagent:[^\S\n]*(\S*)", re.MULTILINE)
_DOWN_RE = re.compile(r"^[ \t]*--[ \t]*opsagent:[ \t]*down[ \t]*$", re.IGNORECASE | re.MULTILINE)
_FALSE_WORDS = frozenset({"false", "off", "no", "0"})

State = Literal["applied", "pending", "checksum_mismatch", "missing_file", "out_of_order", "failed", "invalid"]


# ---------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Migration:
    """One migration file, read, normalized, parsed and checked."""

    version: str  # as written in the file name ("004")
    version_key: int  # numeric value used for ordering and matching (4)
    description: str
    path: Path
    filename: str
    checksum: str  # sha256 hex of ``sql``
    sql: str  # normalized text: no BOM, LF line endings
    transactional: bool  # False when the header has "-- opsagent:no-transaction"
    size_bytes: int
    wrapped: bool = False  # a transactional file that wraps itself in BEGIN; ... COMMIT; (seed style)
    # the text after a "-- opsagent:down" line (None: no down section); never run by sync,
    # not in ``sql`` nor the checksum
    down_sql: str | None = None
    down_line: int = 0  # file line where ``down_sql`` starts
    # False: only read and checksummed (``survey``), not parsed nor checked yet: ``check_migration`` does that
    checked: bool = True

    @functools.cached_property
    def statements(self) -> list[Statement]:
        """All statements with start lines; built on first use because full ASTs are costly for thousands of files."""
        return split_statements(self.sql, str(self.path))

    @property
    def body_statements(self) -> list[Statement]:
        """The statements to run: without the BEGIN/COMMIT wrapper of a wrapped file."""
        if not self.checked:
            raise RuntimeError(
                f"{self.filename}: body_statements of a migration that was not checked (check_migration)"
            )
        return self.statements[1:-1] if self.wrapped else self.statements

    @property
    def label(self) -> str:
        return f"{self.version} ({self.description})"


@dataclasses.dataclass(frozen=True)
class DiscoveryResult:
    """The migrations of a directory in version order, plus warnings for the operator."""

    migrations: list[Migration]
    warnings: list[str]


@dataclasses.dataclass(frozen=True)
class InvalidFile:
    """A file in the migrations folder that cannot be used as it is, and why (shown by status, refused by sync).

    A ``.sql`` file whose name is not ``<version>_<description>.sql`` has no version (``version_key`` None).
    """

    path: Path
    error: OpsagentError
    version: str | None = None
    version_key: int | None = None
    description: str = ""

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def message(self) -> str:
        return self.error.message


@dataclasses.dataclass(frozen=True)
class Survey:
    """The migrations folder read for a ledger comparison: every usable file read and checksummed, NOT parsed.

    Parsing is the costly part of start-up (pglast), and only pending files need it:
    ``check_pending`` parses those once the ledger says which they are.
    """

    migrations: list[Migration]
    invalid: list[InvalidFile]
    warnings: list[str]


@dataclasses.dataclass(frozen=True)
class AppliedRow:
    """One ledger row; ``checksum`` is None for rows adopted from the seed's table."""

    version: str
    description: str | None = None
    checksum: str | None = None
    applied_at: str | dt.datetime | None = None
    applied_by: str | None = None
    execution_ms: int | None = None
    git_commit: str | None = None
    tool_version: str | None = None
    success: bool = True  # False: a no-transaction migration that started and did not finish


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """The state of one version: a file, a ledger row, or both."""

    version: str  # the ledger's text when there is a row, else the file's
    version_key: int | None  # None only for a ledger row whose version has no digits
    description: str
    state: State
    migration: Migration | None = None
    row: AppliedRow | None = None
    invalid: InvalidFile | None = None  # state "invalid": the file and its error

    @property
    def filename(self) -> str:
        if self.migration is not None:
            return self.migration.filename
        return self.invalid.filename if self.invalid is not None else self.version

    @property
    def error(self) -> str | None:
        return self.invalid.message if self.invalid is not None else None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a sync would apply, and why it must refuse (``problems`` non-empty)."""

    pending: list[Migration]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def refusal(self, action: str = "apply") -> str:
        """The one-line refusal listing every problem (sync, ``sync --sql`` and the library say it alike)."""
        count = len(self.problems)
        return f"refusing to {action}: {count} problem{'s' if count > 1 else ''}: " + "; ".join(self.problems)


@dataclasses.dataclass(frozen=True)
class RepairChange:
    """One ledger edit of ``inv repair``: refresh a checksum or forget a row."""

    action: Literal["update_checksum", "delete_row"]
    version: str  # the ledger's text, to address the row exactly
    description: str
    old_checksum: str | None = None
    new_checksum: str | None = None


# ---------------------------------------------------------------- names and text


def parse_filename(filename: str) -> tuple[str, int, str] | None:
    """``(version, version_key, description)`` of a migration file name, or None if it is not one."""
    match = _NAME_RE.match(filename)
    if match is None:
        return None
    description = " ".join(re.sub(r"[_-]+", " ", match.group(2)).split())
    if not description:
        return None
    return match.group(1), int(match.group(1)), description


def version_key(version: str | int) -> int:
    """Numeric value of a version given by an operator ('007', 7); UsageError if not all digits."""
    text = str(version).strip()
    if not text.isdigit():
        raise UsageError(f"invalid migration version {text!r}: expected digits such as 007")
    return int(text)


def _ledger_key(version: str) -> int | None:
    """Numeric value of a ledger version; tolerant of seed rows such as '004_add_x'."""
    match = re.match(r"\s*(\d+)", version)
    return int(match.group(1)) if match else None


def normalize_sql(raw: bytes | str, source: str = "<sql>") -> str:
    """Text without a UTF-8 BOM and with LF line endings, so editors and git settings do not matter."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{source}: not valid UTF-8 (byte {exc.start})") from None
    return raw.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def checksum(sql: str) -> str:
    """sha256 hex of normalized text (pass the result of :func:`normalize_sql`)."""
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


def _slug(description: str, limit: int = 80) -> str:
    """File-name part of a description; capped so that long descriptions stay valid file names."""
    return re.sub(r"[^a-z0-9]+", "_", description.lower()).strip("_")[:limit].rstrip("_")


# ---------------------------------------------------------------- markers


def split_down(sql: str) -> tuple[str, str | None, int]:
    """``(body, down, down_line)``: the text before the first ``-- opsagent:down`` line, the text after it and
    the file line where that text starts; ``(sql, None, 0)`` without the marker.

    The body is all that sync runs, lint reads and the checksum covers, so a down section
    written or fixed after the migration was applied is not a checksum mismatch.  The blank
    lines before the marker are not part of the body: appending a down section to a file
    that ended with one newline keeps its checksum.
    """
    match = _DOWN_RE.search(sql)
    if match is None:
        return sql, None, 0
    end = sql.find("\n", match.end())
    down = "" if end < 0 else sql[end + 1 :]
    body = sql[: match.start()].rstrip(" \t\n")
    return body + "\n" if body else "", down, sql.count("\n", 0, match.end()) + 2


def _header_end(sql: str) -> int:
    """Offset of the first statement: the end of the leading whitespace/comment block."""
    pos, size = 0, len(sql)
    while pos < size:
        if sql[pos].isspace():
            pos += 1
        elif sql.startswith("--", pos):
            newline = sql.find("\n", pos)
            pos = size if newline < 0 else newline + 1
        elif sql.startswith("/*", pos):
            pos = _block_comment_end(sql, pos)
        else:
            break
    return pos


def _block_comment_end(sql: str, pos: int) -> int:
    depth = 0
    while pos < len(sql):
        if sql.startswith("/*", pos):
            depth, pos = depth + 1, pos + 2
        elif sql.startswith("*/", pos):
            depth, pos = depth - 1, pos + 2
            if depth == 0:
                return pos
        else:
            pos += 1
    return len(sql)


def _markers(sql: str, source: str) -> tuple[set[str], list[str]]:
    """Markers found in the header, and warnings for unknown or misplaced ones (one regex pass, no per-line split)."""
    found: set[str] = set()
    warnings: list[str] = []
    if "opsagent:" not in sql:
        return found, warnings
    end = _header_end(sql)
    header_lines = sql.count("\n") + 1 if end >= len(sql) else sql.count("\n", 0, end)
    number, counted_to = 1, 0
    for match in _MARKER_LINE_RE.finditer(sql):
        number += sql.count("\n", counted_to, match.start())
        counted_to = match.start()
        name = match.group(1).lower()
        if name == LINT_DIRECTIVE:
            continue  # "-- opsagent:ignore rule" acknowledges a lint finding: anywhere, and not a marker
        if name not in KNOWN_MARKERS:
            warnings.append(
                f"{source}:{number}: unknown marker '-- opsagent:{match.group(1)}' ignored (known: "
                f"{', '.join(sorted(KNOWN_MARKERS))})"
            )
        elif number > header_lines:
            warnings.append(
                f"{source}:{number}: marker '-- opsagent:{name}' ignored: "
                "markers belong in the comment block at the top of the file"
            )
        else:
            found.add(name)
    return found, warnings


# ---------------------------------------------------------------- statement checks
#
# The checks read PostgreSQL's parse tree (node types and fields), never the text.  They accept
# both pglast AST nodes (``Statement.node``) and the parser's JSON tree, which discovery uses
# because it is ten times cheaper than building Python AST objects for every statement.


def field(node: Any, name: str) -> Any:
    """A parse-tree field of a pglast node or of libpg_query's JSON tree of one (absent: None; the JSON tree leaves
    out false and empty fields; ``def_`` is ``def`` in JSON)."""
    if isinstance(node, dict):
        return node.get(name.rstrip("_"))
    return getattr(node, name, None)


def _unwrap(value: Any) -> Any:
    """JSON wraps generic nodes as ``{"DefElem": {...}}``; pglast nodes are already objects."""
    if isinstance(value, dict) and len(value) == 1:
        tag, inner = next(iter(value.items()))
        if tag[:1].isupper() and isinstance(inner, dict):
            return inner
    return value


def _enum(value: Any) -> str | None:
    """An enum field's name ('TRANS_STMT_BEGIN') from a pglast enum or a JSON string."""
    return None if value is None else str(getattr(value, "name", value))


def _const(arg: Any) -> Any:
    """The value of a DefElem argument: String, Integer, Boolean, or a bare word (TypeName, e.g. ``off``)."""
    if isinstance(arg, dict):
        tag, inner = next(iter(arg.items()))
        if tag == "TypeName":
            names = inner.get("names") or []
            return _const(names[-1]) if names else None
        return {
            "Boolean": inner.get("boolval", False),
            "Integer": inner.get("ival", 0),
            "String": inner.get("sval", ""),
        }.get(tag)
    if type(arg).__name__ == "TypeName":
        return _const(arg.names[-1]) if arg.names else None
    for attr in ("boolval", "ival", "sval"):
        if hasattr(arg, attr):
            return getattr(arg, attr)
    return None


def _option_on(elem: Any) -> bool:
    """Value of an option such as ``CONCURRENTLY`` or ``create_slot = false``; a bare option means on."""
    arg = field(elem, "arg")
    if arg is None:
        return True
    value = _const(arg)
    return value is None or str(value).lower() not in _FALSE_WORDS


def _options(node: Any, name: str) -> dict[str, bool]:
    elems = [_unwrap(o) for o in field(node, name) or ()]
    return {str(field(e, "defname")): _option_on(e) for e in elems}


def _reindex(node: Any) -> str | None:
    if _options(node, "params").get("concurrently"):
        return "REINDEX CONCURRENTLY"
    return {"REINDEX_OBJECT_DATABASE": "REINDEX DATABASE", "REINDEX_OBJECT_SYSTEM": "REINDEX SYSTEM"}.get(
        _enum(field(node, "kind")) or ""
    )


def _detach_concurrently(node: Any) -> str | None:
    for cmd in field(node, "cmds") or ():
        if field(_unwrap(field(_unwrap(cmd), "def_")), "concurrent"):
            return "ALTER TABLE ... DETACH PARTITION CONCURRENTLY"
    return None


def _create_subscription(node: Any) -> str | None:
    options = _options(node, "options")
    if options.get("connect", True) and options.get("create_slot", True):
        return "CREATE SUBSCRIPTION (creating a replication slot)"
    return None


_Check = Callable[[Any], "str | None"]
_NOT_IN_TRANSACTION: dict[str, _Check] = {
    "IndexStmt": lambda n: "CREATE INDEX CONCURRENTLY" if field(n, "concurrent") else None,
    "DropStmt": lambda n: "DROP INDEX CONCURRENTLY" if field(n, "concurrent") else None,
    "ReindexStmt": _reindex,
    "VacuumStmt": lambda n: "VACUUM" if field(n, "is_vacuumcmd") else None,  # ANALYZE alone is fine
    "ClusterStmt": lambda n: "CLUSTER without a table" if field(n, "relation") is None else None,
    "CreatedbStmt": lambda n: "CREATE DATABASE",
    "DropdbStmt": lambda n: "DROP DATABASE",
    "AlterDatabaseStmt": lambda n: (
        "ALTER DATABASE ... SET TABLESPACE" if "tablespace" in _options(n, "options") else None
    ),
    "AlterSystemStmt": lambda n: "ALTER SYSTEM",
    "CreateTableSpaceStmt": lambda n: "CREATE TABLESPACE",
    "DropTableSpaceStmt": lambda n: "DROP TABLESPACE",
    "AlterTableStmt": _detach_concurrently,
    "CreateSubscriptionStmt": _create_subscription,
    "DiscardStmt": lambda n: "DISCARD ALL" if _enum(field(n, "target")) == "DISCARD_ALL" else None,
}


def _not_in_transaction(kind: str, node: Any) -> str | None:
    check = _NOT_IN_TRANSACTION.get(kind)
    return check(node) if check is not None else None


def not_in_transaction(statement: Statement) -> str | None:
    """What makes this statement impossible inside a transaction block (e.g. 'VACUUM'), or None.  Only the kinds
    that can be are parsed at all, into the JSON tree unless the AST is built already (a 5,000-table schema.sql
    spent 4 s building the ASTs of its CREATE TABLEs and CREATE INDEXes for this)."""
    if statement.kind not in _NOT_IN_TRANSACTION:
        return None
    return _not_in_transaction(statement.kind, statement.parsed())


_BEGINS = frozenset({"TRANS_STMT_BEGIN", "TRANS_STMT_START"})
_ENDS = frozenset({"TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK", "TRANS_STMT_PREPARE"})
_PREPARED = frozenset({"TRANS_STMT_COMMIT_PREPARED", "TRANS_STMT_ROLLBACK_PREPARED"})
_TX_NAMES = {
    "TRANS_STMT_BEGIN": "BEGIN",
    "TRANS_STMT_START": "START TRANSACTION",
    "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK",
    "TRANS_STMT_PREPARE": "PREPARE TRANSACTION",
    "TRANS_STMT_COMMIT_PREPARED": "COMMIT PREPARED",
    "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}


class _Raw(NamedTuple):
    """A top-level statement: its kind, and its JSON parse tree when a check reads it."""

    kind: str
    node: dict[str, Any]
    tx: str | None  # TRANS_STMT_BEGIN... for a TransactionStmt


_INSPECTED = frozenset({"TransactionStmt", *_NOT_IN_TRANSACTION})


def _parse_tree(statements: Sequence[Statement]) -> list[_Raw]:
    """Kind of every statement, and the JSON fields of the few kinds the checks read (linear, no Python AST).

    Statements of the other kinds share one ``_Raw`` per kind: 400,000 INSERTs cost a dict lookup each.
    """
    plain: dict[str, _Raw] = {}
    raws: list[_Raw] = []
    for statement in statements:
        kind = statement.kind
        if kind in _INSPECTED:
            node = statement.parse_tree()
            raws.append(_Raw(kind, node, _enum(node.get("kind")) if kind == "TransactionStmt" else None))
            continue
        raw = plain.get(kind)
        if raw is None:
            raw = plain[kind] = _Raw(kind, {}, None)
        raws.append(raw)
    return raws


class _Refusal(Exception):
    """A check failed at statement ``index`` (its line is in the statement list)."""

    def __init__(self, index: int, message: str, *, opened: int | None = None) -> None:
        super().__init__(message)
        self.index, self.message, self.opened = index, message, opened  # opened: index of an open BEGIN


def _is_wrapped(raw: list[_Raw]) -> bool:
    if len(raw) < 2:
        return False
    first, last = raw[0], raw[-1]
    return (
        first.tx in _BEGINS
        and not first.node.get("options")
        and last.tx == "TRANS_STMT_COMMIT"
        and not last.node.get("chain")
    )


def _check_transactional(raw: list[_Raw]) -> bool:
    """Refuse transaction control (except a whole-file BEGIN/COMMIT wrapper) and non-transactional statements."""
    wrapped = _is_wrapped(raw)
    start, stop = (1, len(raw) - 1) if wrapped else (0, len(raw))
    for index in range(start, stop):
        item = raw[index]
        if item.kind not in _INSPECTED:
            continue
        if item.tx in _BEGINS or item.tx in _ENDS or item.tx in _PREPARED:
            raise _Refusal(
                index,
                f"{_TX_NAMES[item.tx or '']} inside a migration would break its atomicity with the ledger row; "
                "remove it (opsagent wraps each migration in a transaction) "
                "or add \"-- opsagent:no-transaction\" at the top of the file",
            )
        what = _not_in_transaction(item.kind, item.node)
        if what is not None:
            raise _Refusal(
                index,
                f"{what} cannot run inside a transaction; add \"-- opsagent:no-transaction\" at the top of the file",
            )
    return wrapped


def _check_autocommit(raw: list[_Raw], source: str) -> list[str]:
    """In a no-transaction file: refuse non-transactional statements inside explicit blocks;
    warn when the marker is useless."""
    open_at: int | None = None
    needs_marker = False
    for index, item in enumerate(raw):
        if item.tx in _BEGINS:
            open_at = index
        elif item.tx in _ENDS:
            open_at = None
        what = _not_in_transaction(item.kind, item.node)
        # an enum value must be committed before a later migration's transaction may use it
        needs_marker = needs_marker or what is not None or item.tx in _PREPARED or item.kind == "AlterEnumStmt"
        if what is not None and open_at is not None:
            raise _Refusal(index, f"{what} cannot run inside the transaction block", opened=open_at)
    if open_at is not None:
        raise _Refusal(open_at, "transaction block opened here is never committed")
    if raw and not needs_marker:
        return [
            f"{source}: runs outside a transaction but has no statement that needs it; "
            "remove \"-- opsagent:no-transaction\" so it applies atomically with its ledger row"
        ]
    return []


# ---------------------------------------------------------------- loading and discovery


def read_migration(path: Path) -> tuple[Migration, list[str]]:
    """Read, normalize and checksum one migration file and read its markers, without parsing it (``checked`` False)."""
    parsed = parse_filename(path.name)
    if parsed is None:
        raise UsageError(f"{path}: not a migration file name ({NAMING_HINT})")
    version, key, description = parsed
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{source}: cannot read: {exc.strerror or exc}") from None
    sql, down_sql, down_line = split_down(normalize_sql(raw, source))
    markers, warnings = _markers(sql, source)
    migration = Migration(
        version=version,
        version_key=key,
        description=description,
        path=path,
        filename=path.name,
        checksum=checksum(sql),
        sql=sql,
        transactional=NO_TRANSACTION_MARKER not in markers,
        size_bytes=len(raw),
        down_sql=down_sql,
        down_line=down_line,
        checked=False,
    )
    return migration, warnings


def check_migration(migration: Migration) -> tuple[Migration, list[str]]:
    """Parse and check a migration read by :func:`read_migration`; returns it checked, with the check's warnings.

    Raises SqlSyntaxError/UnsupportedSql (file:line) or InvalidMigration (exit 2).
    """
    if migration.checked:
        return migration, []
    source = str(migration.path)
    statements = split_statements(migration.sql, source)  # SqlSyntaxError/UnsupportedSql: exit 2, file:line
    tree = _parse_tree(statements)
    warnings: list[str] = []
    wrapped = False
    try:
        if migration.transactional:
            wrapped = _check_transactional(tree)
        else:
            warnings += _check_autocommit(tree, source)
    except _Refusal as refusal:
        opened = f" opened at line {statements[refusal.opened].line}" if refusal.opened is not None else ""
        raise InvalidMigration(f"{source}:{statements[refusal.index].line}: {refusal.message}{opened}") from None
    if not tree:
        warnings.append(f"{source}: contains no statements")
    return dataclasses.replace(migration, wrapped=wrapped, checked=True), warnings


def load_migration(path: Path) -> tuple[Migration, list[str]]:
    """Read, normalize, parse and check one migration file; returns it with its warnings."""
    migration, warnings = read_migration(path)
    migration, more = check_migration(migration)
    return migration, warnings + more


def _scan(
    migrations_dir: Path,
) -> tuple[list[tuple[int, str, Path]], list[tuple[int, str, Path]], list[Path], list[str]]:
    """``(entries, duplicates, badly named .sql files, warnings)`` of a migrations folder, without reading any file."""
    if not migrations_dir.exists():
        return [], [], [], []  # a new project
    if not migrations_dir.is_dir():
        raise UsageError(f"{migrations_dir} is not a directory")
    found: dict[int, tuple[int, str, Path]] = {}
    duplicates: list[tuple[int, str, Path]] = []
    misnamed: list[Path] = []
    warnings: list[str] = []
    try:
        paths = sorted(migrations_dir.iterdir())
    except OSError as exc:
        raise UsageError(f"{migrations_dir}: cannot list the migrations folder: {exc.strerror or exc}") from None
    for path in paths:
        if path.name.startswith(".") or not path.is_file():
            continue  # .gitkeep, editor swap files, sub-folders
        parsed = parse_filename(path.name)
        if parsed is None:
            warnings.append(f"{path}: ignored ({NAMING_HINT})")
            if path.name.lower().endswith(".sql"):
                misnamed.append(path)
            continue
        version, key, _ = parsed
        if key in found:
            duplicates.append((key, version, path))
            continue
        found[key] = (key, version, path)
    return sorted(found.values(), key=lambda item: item[0]), duplicates, misnamed, warnings


def _duplicate_error(first: Path, second: Path, key: int, migrations_dir: Path) -> UsageError:
    return UsageError(
        f"duplicate migration version {key}: {first.name} and {second.name} in {migrations_dir}; renumber one of them"
    )


def scan_names(migrations_dir: Path) -> tuple[list[tuple[int, str, Path]], list[str]]:
    """Migration files by version without reading them: ``[(key, version, path)]`` sorted, plus warnings.

    Raises UsageError when two files share a numeric version.
    """
    entries, duplicates, _, warnings = _scan(migrations_dir)
    if duplicates:
        key, _, path = duplicates[0]
        first = next(p for k, _, p in entries if k == key)
        raise _duplicate_error(first, path, key, migrations_dir)
    return entries, warnings


def survey(migrations_dir: Path) -> Survey:
    """Every file of the folder read and checksummed, none parsed; files that cannot be used are listed, not raised.

    Unusable: unreadable, not UTF-8, a ``.sql`` file with a bad name, two files with one version (both listed).
    """
    entries, duplicates, misnamed, warnings = _scan(migrations_dir)
    duplicated = {key for key, _, _ in duplicates}
    invalid: list[InvalidFile] = []
    migrations: list[Migration] = []
    for key, version, path in [*entries, *duplicates]:
        description = (parse_filename(path.name) or ("", 0, ""))[2]
        if key in duplicated:
            first = next(p for k, _, p in entries if k == key)
            other = path if path != first else next(p for k, _, p in duplicates if k == key)
            invalid.append(
                InvalidFile(path, _duplicate_error(first, other, key, migrations_dir), version, key, description)
            )
            continue
        try:
            migration, file_warnings = read_migration(path)
        except OpsagentError as exc:
            invalid.append(InvalidFile(path, exc, version, key, description))
            continue
        migrations.append(migration)
        warnings.extend(file_warnings)
    for path in misnamed:
        invalid.append(InvalidFile(path, UsageError(f"{path}: not a migration file name ({NAMING_HINT})")))
    warnings = [w for w in warnings if not any(w.startswith(f"{p}: ignored") for p in misnamed)]
    return Survey(migrations, invalid, warnings)


def discover(migrations_dir: Path) -> DiscoveryResult:
    """All migrations of a directory in version order; a missing directory is a new project (none)."""
    entries, warnings = scan_names(migrations_dir)
    migrations: list[Migration] = []
    for _, _, path in entries:
        migration, file_warnings = load_migration(path)
        migrations.append(migration)
        warnings.extend(file_warnings)
    return DiscoveryResult(migrations=migrations, warnings=warnings)


# ---------------------------------------------------------------- status and plans


def compute_status(
    migrations: Sequence[Migration], applied_rows: Iterable[AppliedRow], invalid: Sequence[InvalidFile] = ()
) -> list[VersionStatus]:
    """Join files and ledger rows by numeric version; one status per version (and per invalid file), in version order.

    An invalid file (``survey``) is state ``invalid`` with its error, joined to its version's ledger row if any.
    """
    by_key = {m.version_key: m for m in migrations}
    bad_keys = {f.version_key: f for f in invalid if f.version_key is not None}
    rows = list(applied_rows)
    row_keys = [_ledger_key(row.version) for row in rows]
    highest = max((k for k in row_keys if k is not None), default=None)
    statuses: list[VersionStatus] = []
    matched: set[int] = set()
    for row, key in zip(rows, row_keys, strict=True):
        migration = by_key.get(key) if key is not None else None
        bad = bad_keys.get(key) if key is not None else None
        if bad is not None:
            statuses.append(VersionStatus(row.version, key, bad.description, "invalid", row=row, invalid=bad))
            if migration is not None:
                matched.add(migration.version_key)
            continue
        if migration is None:
            statuses.append(VersionStatus(row.version, key, row.description or "", "missing_file", row=row))
            continue
        matched.add(migration.version_key)
        state: State = "applied" if row.success else "failed"
        if row.success and row.checksum is not None and row.checksum.strip().lower() != migration.checksum:
            state = "checksum_mismatch"
        statuses.append(VersionStatus(row.version, key, migration.description, state, migration=migration, row=row))
    for migration in migrations:
        if migration.version_key in matched:
            continue
        late = highest is not None and migration.version_key < highest
        statuses.append(
            VersionStatus(
                migration.version,
                migration.version_key,
                migration.description,
                "out_of_order" if late else "pending",
                migration=migration,
            )
        )
    shown = {id(s.invalid) for s in statuses if s.invalid is not None}
    for bad in invalid:
        if id(bad) not in shown:
            statuses.append(
                VersionStatus(bad.version or bad.filename, bad.version_key, bad.description, "invalid", invalid=bad)
            )
    return sorted(statuses, key=lambda s: (s.version_key is None, s.version_key or 0))


def check_pending(
    statuses: Sequence[VersionStatus],
    checked: dict[int, tuple[Migration, list[str]] | OpsagentError] | None = None,
) -> tuple[list[VersionStatus], list[str]]:
    """Parse and check the files not yet applied (pending, out of order); a file that fails becomes ``invalid``.

    Applied files are not parsed again (their checksums still are compared): that is what keeps a no-op sync
    and ``status`` from parsing hundreds of files.  ``checked`` holds results already known (by version key).
    """
    result: list[VersionStatus] = []
    warnings: list[str] = []
    known = checked or {}
    for status in statuses:
        migration = status.migration
        if migration is None or migration.checked or status.state not in ("pending", "out_of_order"):
            result.append(status)
            continue
        outcome = known.get(migration.version_key)
        if outcome is None:
            try:
                outcome = check_migration(migration)
            except OpsagentError as exc:
                outcome = exc
        if isinstance(outcome, OpsagentError):
            bad = InvalidFile(migration.path, outcome, migration.version, migration.version_key, migration.description)
            result.append(dataclasses.replace(status, state="invalid", migration=None, invalid=bad))
            continue
        warnings.extend(outcome[1])
        result.append(dataclasses.replace(status, migration=outcome[0]))
    return result, warnings


def _when(row: AppliedRow | None) -> str:
    value = row.applied_at if row is not None else None
    return str(value)[:19] if value is not None else "an unknown time"


def _problem(status: VersionStatus, highest: int | None) -> str | None:
    if status.state == "invalid":
        return status.error
    if status.state == "checksum_mismatch":
        return (
            f"{status.filename}: checksum mismatch (applied file was edited after it ran); "
            "run 'inv repair' if the edit is intended"
        )
    if status.state == "missing_file":
        return (
            f"{status.version} ({status.description or 'no description'}): applied but its file is missing; "
            "restore the file, or run 'inv repair' to forget the row"
        )
    if status.state == "failed":
        return (
            f"{status.filename}: failed partway at {_when(status.row)} (it runs outside a transaction: "
            "the statements before the failing one stayed applied); "
            "check the database, then run 'inv repair' to clear its row and sync again"
        )
    if status.state == "out_of_order":
        return (
            f"{status.filename}: pending but older than the newest applied version {highest}; "
            "rerun with --allow-out-of-order to apply it anyway"
        )
    return None


def plan_pending(
    statuses: Sequence[VersionStatus], *, allow_out_of_order: bool = False, target: str | int | None = None
) -> Plan:
    """Pending migrations in order up to ``target`` (inclusive, numeric), and the problems that refuse the plan."""
    limit = version_key(target) if target is not None else None
    if limit is not None and not any(s.version_key == limit for s in statuses):
        raise UsageError(f"no migration with version {target}")
    highest = max((s.version_key for s in statuses if s.row is not None and s.version_key is not None), default=None)
    pending: list[Migration] = []
    problems: list[str] = []
    for status in statuses:
        beyond = limit is not None and status.version_key is not None and status.version_key > limit
        runnable = status.state == "pending" or (status.state == "out_of_order" and allow_out_of_order)
        if runnable and not beyond and status.migration is not None:
            pending.append(status.migration)
            continue
        if status.state == "out_of_order" and (allow_out_of_order or beyond):
            continue
        problem = _problem(status, highest)
        if problem is not None:
            problems.append(problem)
    return Plan(pending=pending, problems=problems)


def migration_for_baseline(migrations: Sequence[Migration], version: str | int) -> list[Migration]:
    """The migrations ``inv baseline --version V`` records as applied: every file up to V (numeric)."""
    limit = version_key(version)
    if not any(m.version_key == limit for m in migrations):
        raise UsageError(f"no migration with version {version}: baseline needs an existing version")
    return [m for m in migrations if m.version_key <= limit]


def repair_plan(statuses: Sequence[VersionStatus], *, record_unknown: bool = False) -> list[RepairChange]:
    """Ledger edits that make the ledger agree with the files; ``record_unknown`` also fills adopted rows' checksums."""
    changes: list[RepairChange] = []
    for status in statuses:
        row, migration = status.row, status.migration
        if row is None:
            continue
        if status.state in ("missing_file", "failed"):  # a failed row: the next sync runs the file again
            changes.append(RepairChange("delete_row", row.version, status.description, old_checksum=row.checksum))
        elif migration is not None and (
            status.state == "checksum_mismatch" or (record_unknown and row.checksum is None)
        ):
            changes.append(
                RepairChange(
                    "update_checksum",
                    row.version,
                    status.description,
                    old_checksum=row.checksum,
                    new_checksum=migration.checksum,
                )
            )
    return changes


# ---------------------------------------------------------------- new files


_TEMPLATE = """\
-- {version}: {description}
-- Created {date}.
-- Why: <the problem this solves, the choice made, and what the operator must know (a table rewrite, a deploy order)>
--
-- No BEGIN/COMMIT needed: opsagent wraps each migration in a transaction with its ledger row.
-- For a statement that cannot run in a transaction (CREATE INDEX CONCURRENTLY, VACUUM,
-- ALTER SYSTEM...), add a line "-- opsagent:no-transaction" to this header: every statement
-- then runs on its own, so keep such a file small.

"""


def _next_version(entries: list[tuple[int, str, Path]], now: dt.datetime) -> str:
    if not entries:
        return "001"
    key, version, _ = entries[-1]
    if len(version) == TIMESTAMP_DIGITS:
        stamp = (
            int(now.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S")) if now.tzinfo else int(now.strftime("%Y%m%d%H%M%S"))
        )
        return str(max(stamp, key + 1))
    return str(key + 1).zfill(len(version))


def new_migration(
    migrations_dir: Path,
    description: str,
    *,
    today: dt.datetime | dt.date | None = None,
    body: str | None = None,
    notes: Sequence[str] = (),
    no_transaction: bool = False,
) -> Path:
    """Create the next-numbered migration file (the template, or ``body`` under a header of ``notes``);
    never overwrites."""
    slug = _slug(description)
    if not slug:
        raise UsageError("a migration needs a description made of letters or digits, e.g. \"add paper trading mode\"")
    if today is None:
        now = dt.datetime.now(dt.UTC)
    elif isinstance(today, dt.datetime):
        now = today
    else:
        now = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)
    entries, _ = scan_names(migrations_dir)
    version = _next_version(entries, now)
    migrations_dir.mkdir(parents=True, exist_ok=True)
    path = migrations_dir / f"{version}_{slug}.sql"
    title, date = " ".join(description.split()), now.date().isoformat()
    if body is None:
        text = _TEMPLATE.format(version=version, description=title, date=date)
    else:
        header = [
            f"-- {version}: {title}",
            f"-- Created {date}.",
            *(f"-- {line}".rstrip() for line in notes),
            *([f"-- opsagent:{NO_TRANSACTION_MARKER}"] if no_transaction else []),
        ]
        text = "\n".join(header) + "\n\n" + body
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise UsageError(f"{path} already exists") from None
    return path
