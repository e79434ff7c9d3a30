"""Split SQL scripts into statements with PostgreSQL's own parser (pglast).

Regexes get ``$$`` bodies, ``;`` inside strings and comments wrong; the real
parser does not.  Each statement keeps its 1-based starting line so that errors
and lint findings can point at ``file:line``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pglast
from pglast import parser as pg_parser

from .errors import UsageError


@dataclasses.dataclass(frozen=True)
class Statement:
    """One top-level SQL statement of a script."""

    text: str  # the statement without its trailing semicolon
    line: int  # 1-based line where the statement starts
    node: Any  # pglast AST node (e.g. pglast.ast.CreateStmt)

    @property
    def kind(self) -> str:
        return type(self.node).__name__


class SqlSyntaxError(UsageError):
    """The script does not parse."""

    def __init__(self, message: str, *, source: str, line: int) -> None:
        super().__init__(f"{source}:{line}: syntax error: {message}")
        self.source = source
        self.line = line


def split_statements(sql: str, source: str = "<sql>") -> list[Statement]:
    """Parse ``sql`` and return its statements in order, with start lines.

    Parsed once per text, whatever ``source`` names it (only errors mention it): sync,
    lint and the hazard check all read the same files, under a path or a file name,
    and building pglast's Python nodes costs more than the parse itself.
    """
    try:
        return list(_split_cached(sql))
    except pg_parser.ParseError as exc:
        location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line = sql[: max(0, location)].count("\n") + 1
        raise SqlSyntaxError(str(exc.args[0] if exc.args else exc), source=source, line=line) from None


@functools.lru_cache(maxsize=2048)
def _split_cached(sql: str) -> tuple[Statement, ...]:
    raw = pglast.parse_sql(sql)
    statements: list[Statement] = []
    for item in raw:  # pglast reports character (not byte) offsets; length 0 = to the end
        start = item.stmt_location or 0
        end = start + item.stmt_len if item.stmt_len else len(sql)
        chunk = sql[start:end]
        stripped = chunk.lstrip()
        if stripped.rstrip().endswith(";"):
            stripped = stripped.rstrip()[:-1]
        offset = start + (len(chunk) - len(stripped))
        # skip leading comments so the line points at the statement keyword
        offset, text = _skip_leading_comments(sql, offset, stripped.rstrip())
        statements.append(Statement(text=text, line=sql[:offset].count("\n") + 1, node=item.stmt))
    return tuple(statements)


def _skip_leading_comments(sql: str, offset: int, text: str) -> tuple[int, str]:
    while True:
        if text.startswith("--"):
            newline = text.find("\n")
            if newline < 0:
                return offset, text
            consumed = newline + 1
        elif text.startswith("/*"):
            close = text.find("*/")
            if close < 0:
                return offset, text
            consumed = close + 2
        else:
            return offset, text
        rest = text[consumed:]
        stripped = rest.lstrip()
        offset += consumed + (len(rest) - len(stripped))
        text = stripped
