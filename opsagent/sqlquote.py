"""Quoting for the SQL text opsagent writes itself: identifiers and literals, one place for all of it.

Two identifier rules, each for a reason:

- ``ident``: always double-quoted.  For statements opsagent generates and sends (ledger, backups,
  scratch databases, sync's scripts): correct for any name, no keyword list needed (sync never
  loads pglast).
- ``quote_ident``: PostgreSQL's own rule (quoted only when needed), so that keys built from the
  catalog match names as the server deparses them (``pg_get_indexdef``, ``format('%I')``).

Literals are standard-conforming (``standard_conforming_strings`` is on since PostgreSQL 9.1):
quotes doubled, backslashes literal.  Nothing here is for user-supplied text that could be sent
another way: names travel as psql variables or argv wherever the script allows it.
"""

from __future__ import annotations

import functools

_SAFE = set("abcdefghijklmnopqrstuvwxyz0123456789_$")
_KEYWORDS: frozenset[str] | None = None  # pglast's keyword lists, loaded on first use


def ident(name: str) -> str:
    """``"name"``, always quoted (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str | None) -> str:
    """``'text'`` with quotes doubled; ``NULL`` for None."""
    if text is None:
        return "NULL"
    return "'" + text.replace("'", "''") + "'"


def _keywords() -> frozenset[str]:
    global _KEYWORDS
    if _KEYWORDS is None:
        from pglast import keywords

        _KEYWORDS = (
            frozenset(keywords.RESERVED_KEYWORDS)
            | frozenset(keywords.COL_NAME_KEYWORDS)
            | frozenset(keywords.TYPE_FUNC_NAME_KEYWORDS)
        )
    return _KEYWORDS


@functools.lru_cache(maxsize=500_000)
def quote_ident(name: str) -> str:
    """PostgreSQL's quote_ident, so keys built here match names deparsed by the server.

    Remembered per name (bounded): a catalog's keys and dependency graph ask for the same few thousand names tens of
    thousands of times (musicbrainz: 52,000 calls per catalog read, a third of its parse)."""
    if (
        name
        and name[0] in "abcdefghijklmnopqrstuvwxyz_"
        and set(name) <= _SAFE
        and name not in (_KEYWORDS or _keywords())
    ):
        return name
    return ident(name)


def qualify(schema: str, name: str) -> str:
    """Schema-qualified name, each part quoted like PostgreSQL does when needed."""
    return f"{quote_ident(schema)}.{quote_ident(name)}"
