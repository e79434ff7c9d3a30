"""Split SQL scripts into statements with PostgreSQL's own parser (pglast).

Regexes get ``$$`` bodies, ``;`` inside strings and comments wrong; the real
parser does not.  Each statement keeps its 1-based starting line so that errors
and lint findings can point at ``file:line``.

Linear in the size of the script, whatever its length: a 50 MB migration of
400,000 INSERTs is split in one pass of libpg_query's splitter, lines are counted
forward from one statement to the next (never from the start of the file again),
and each statement's kind comes from its own small JSON parse tree.  The Python
AST (:attr:`Statement.node`), which costs ten times more than the parse itself,
is built only for the statements that someone looks at.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import pglast
from pglast import parser as pg_parser

from ..errors import UsageError

_KIND_PREFIX = '{"stmt":{"'
_META_COMMAND_RE = re.compile(r"\\([A-Za-z]+|.)")
# what may lie between two statements; one alternative per character, so no backtracking blow-up
_GAP_RE = re.compile(r"(?:\s|;|--[^\n]*|/\*(?:[^*]|\*(?!/))*\*/)*")


class Statement:
    """One top-level SQL statement of a script: its text, start line and parse-node type.

    ``text`` is the statement without leading comments and its trailing semicolon;
    ``kind`` is the parse-node type (``CreateStmt``); ``node`` the pglast AST, built
    on first use and kept; :meth:`parse_node` builds one without keeping it (what a
    pass over 400,000 statements wants).
    """

    __slots__ = ("_node", "kind", "line", "text")

    def __init__(self, text: str, line: int, kind: str, node: Any = None) -> None:
        self.text = text
        self.line = line
        self.kind = kind
        self._node = node

    @property
    def node(self) -> Any:
        """pglast AST node (e.g. ``pglast.ast.CreateStmt``); locations inside are offsets into ``text``."""
        if self._node is None:
            self._node = self.parse_node()
        return self._node

    def parse_node(self) -> Any:
        """A fresh pglast AST node of this statement, not cached."""
        if self._node is not None:
            return self._node
        return pglast.parse_sql(self.text)[0].stmt

    def parsed(self) -> Any:
        """The pglast AST node when it is built already, else the JSON tree (:meth:`parse_tree`): for checks that
        read fields either form has (``migrate.files.field``)."""
        return self._node if self._node is not None else self.parse_tree()

    def parse_tree(self) -> dict[str, Any]:
        """The statement's fields as libpg_query's JSON tree (cheaper than :meth:`parse_node`), not cached."""
        tree = json.loads(pg_parser.parse_sql_json(self.text))
        node: dict[str, Any] = tree["stmts"][0]["stmt"][self.kind]
        return node

    def line_at(self, offset: int) -> int:
        """File line of a character offset inside ``text`` (a parse node's ``location``)."""
        return self.line + self.text.count("\n", 0, max(0, offset))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Statement):
            return NotImplemented
        return (self.text, self.line, self.kind) == (other.text, other.line, other.kind)

    def __hash__(self) -> int:
        return hash((self.text, self.line, self.kind))

    def __repr__(self) -> str:
        return f"Statement(line={self.line}, kind={self.kind!r}, text={self.text[:40]!r})"


class SqlSyntaxError(UsageError):
    """The script does not parse."""

    def __init__(self, message: str, *, source: str, line: int, hint: str | None = None) -> None:
        super().__init__(f"{source}:{line}: syntax error: {message}", hint=hint)
        self.source = source
        self.line = line


class UnsupportedSql(UsageError):
    """The script parses but cannot be sent through psql's stdin (``COPY ... FROM STDIN``, ``\\copy``)."""

    def __init__(self, message: str, *, source: str, line: int, hint: str | None = None) -> None:
        super().__init__(f"{source}:{line}: {message}", hint=hint)
        self.source = source
        self.line = line


COPY_HINT = (
    "load the rows with INSERT statements, or with COPY ... FROM '/server/file' (read by the server), "
    "or outside migrations with 'inv psql'"
)


def split_statements(sql: str, source: str = "<sql>") -> list[Statement]:
    """Parse ``sql`` and return its statements in order, with start lines.

    Parsed once per text, whatever ``source`` names it (only errors mention it): sync,
    lint and the hazard check all read the same files, under a path or a file name.
    Raises :class:`SqlSyntaxError` for a script that does not parse (psql
    meta-commands such as ``\\copy`` and inline COPY data included) and
    :class:`UnsupportedSql` for ``COPY`` to or from the client: through the tool's
    psql session, ``COPY ... FROM STDIN`` would read the rest of the script as data.
    """
    nul = sql.find("\x00")
    if nul >= 0:
        raise SqlSyntaxError("a NUL byte: the file is not SQL text", source=source, line=sql.count("\n", 0, nul) + 1)
    try:
        statements = _split_cached(sql)
    except pg_parser.ParseError as exc:
        raise _syntax_error(sql, source, exc) from None
    except _ClientCopy as copy:
        raise UnsupportedSql(copy.message, source=source, line=copy.line, hint=COPY_HINT) from None
    return list(statements)


class _ClientCopy(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message, self.line = message, line


@functools.lru_cache(maxsize=2048)
def _split_cached(sql: str) -> tuple[Statement, ...]:
    try:
        # the scanner cuts at top-level semicolons without building the whole file's parse tree
        # (hundreds of MB in C for a 50 MB script); each piece is then parsed on its own (_kind)
        parts = pg_parser.split(sql, with_parser=False, only_slices=True)
        if _covers(sql, parts):
            return _statements(sql, parts)
    except pg_parser.ParseError:
        pass  # a piece is not a statement (a BEGIN ATOMIC body cut at its semicolons) or the text does not parse
    return _statements(sql, pg_parser.split(sql, with_parser=True, only_slices=True))  # the grammar's cut, or its error


def _covers(sql: str, parts: tuple[slice, ...]) -> bool:
    """True when nothing but blanks, semicolons and comments lies outside the pieces
    (the scanner drops an unclosed tail)."""
    previous = 0
    for part in parts:
        if _GAP_RE.fullmatch(sql, previous, part.start) is None:
            return False
        previous = part.stop
    return _GAP_RE.fullmatch(sql, previous, len(sql)) is not None


def _statements(sql: str, parts: tuple[slice, ...]) -> tuple[Statement, ...]:
    statements: list[Statement] = []
    line, counted_to = 1, 0
    for part in parts:
        start = part.start
        text = sql[part]
        stripped = text.lstrip()
        offset = start + (len(text) - len(stripped))
        text = stripped.rstrip()
        if text.startswith(("--", "/*")):
            offset, text = _skip_leading_comments(offset, text)
        if text.endswith(";"):
            text = text[:-1].rstrip()
        if not text:
            continue
        try:
            kind = _kind(text)
        except pg_parser.ParseError as exc:
            location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
            raise pg_parser.ParseError(exc.args[0] if exc.args else str(exc), offset + max(0, location)) from None
        if not kind:
            continue  # only comments
        line += sql.count("\n", counted_to, offset)  # forward only: linear in the whole script
        counted_to = offset
        statement = Statement(text, line, kind)
        if kind == "CopyStmt":
            _refuse_client_copy(statement)
        statements.append(statement)
    return tuple(statements)


def _kind(text: str) -> str:
    """The parse-node type of one statement, read off the head of its JSON tree (no json.loads)."""
    tree = pg_parser.parse_sql_json(text)
    at = tree.find(_KIND_PREFIX)
    if at < 0:
        return ""
    at += len(_KIND_PREFIX)
    return tree[at : tree.index('"', at)]


def _refuse_client_copy(statement: Statement) -> None:
    node = statement.parse_tree()
    if node.get("filename") is not None or node.get("is_program"):
        return  # the server reads or writes a file (or runs a program): nothing flows through psql
    if node.get("is_from"):
        raise _ClientCopy(
            "COPY ... FROM STDIN cannot run in a migration: the tool sends the whole file to psql on "
            "its standard input, so psql would read the rest of the script as the COPY's data",
            statement.line,
        )
    raise _ClientCopy(
        "COPY ... TO STDOUT cannot run in a migration: its rows would go to the tool's psql session and be discarded",
        statement.line,
    )


def _syntax_error(sql: str, source: str, exc: pg_parser.ParseError) -> SqlSyntaxError:
    """One line that names the real cause: a psql meta-command, inline COPY data, or the parser's message."""
    location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
    location = min(max(0, location), len(sql))
    line = sql.count("\n", 0, location) + 1
    message = str(exc.args[0] if exc.args else exc)
    meta = _META_COMMAND_RE.match(sql, location)
    if meta is not None:
        name = meta.group(1)
        if name.lower() == "copy":
            return SqlSyntaxError(
                "\\copy is a psql meta-command, not SQL: a migration is plain SQL, and \\copy ... from stdin "
                "would read the rest of the script as data",
                source=source,
                line=line,
                hint=COPY_HINT,
            )
        return SqlSyntaxError(
            f"\\{name} is a psql meta-command, not SQL: a migration is plain SQL sent to the server",
            source=source,
            line=line,
        )
    copy_line = _copy_before(sql, location)
    if copy_line is not None:
        return SqlSyntaxError(
            f"inline COPY data after the COPY ... FROM STDIN at line {copy_line}: COPY from the client "
            "cannot run in a migration (psql would read the rest of the script as data)",
            source=source,
            line=line,
            hint=COPY_HINT,
        )
    return SqlSyntaxError(message, source=source, line=line)


def _copy_before(sql: str, location: int) -> int | None:
    """Start line of a ``COPY ... FROM STDIN`` right before ``location`` (the data that follows it fails to parse)."""
    head = sql[:location]
    try:
        parts = pg_parser.split(head, with_parser=False, only_slices=True)
    except pg_parser.ParseError:
        return None
    for part in parts[-2:]:
        text = head[part].strip()
        try:
            tree = json.loads(pg_parser.parse_sql_json(text))
        except (pg_parser.ParseError, ValueError):
            continue
        stmts = tree.get("stmts") or [{}]
        copy = stmts[0].get("stmt", {}).get("CopyStmt")
        if copy is not None and copy.get("is_from") and copy.get("filename") is None and not copy.get("is_program"):
            return head.count("\n", 0, part.start + (len(head[part]) - len(head[part].lstrip()))) + 1
    return None


def _skip_leading_comments(offset: int, text: str) -> tuple[int, str]:
    """Drop the comments before a statement's first keyword (block comments nest, as in PostgreSQL)."""
    while True:
        if text.startswith("--"):
            newline = text.find("\n")
            if newline < 0:
                return offset, ""
            consumed = newline + 1
        elif text.startswith("/*"):
            consumed = _block_comment_end(text)
            if consumed < 0:
                return offset, text
        else:
            return offset, text
        rest = text[consumed:]
        stripped = rest.lstrip()
        offset += consumed + (len(rest) - len(stripped))
        text = stripped


def _block_comment_end(text: str) -> int:
    """Offset just past the block comment opening ``text``, or -1 when it is not closed."""
    depth, pos = 0, 0
    while True:
        opening, closing = text.find("/*", pos), text.find("*/", pos)
        if closing < 0:
            return -1
        if 0 <= opening < closing:
            depth, pos = depth + 1, opening + 2
            continue
        depth, pos = depth - 1, closing + 2
        if depth == 0:
            return pos
