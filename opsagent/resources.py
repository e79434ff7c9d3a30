"""The shell scripts and SQL opsagent sends to servers, kept as package data files.

``opsagent/scripts/*.sh`` and ``opsagent/sql/*.sql`` are read with ``importlib.resources``
(as schemainspect does), so they can be read, linted (shellcheck) and diffed as what they are.

A file starts with a header: its leading comment lines (``#`` for shell, ``--`` for SQL):
shellcheck directives and what the piece is for.  The header never reaches a server; the
piece is the text after it, verbatim (a blank line after the header is the piece's leading
newline).  A SQL piece ends without the file's final newline (it is often embedded in
other text: a subquery, a shell variable).

Placeholders ``@@NAME@@`` are filled by ``fill`` in one pass (an inserted value is never
scanned again).  They carry only text built by opsagent itself (``shlex``-quoted argv, quoted
SQL literals, fixed SQL fragments), never a name as such: names travel as psql variables,
conninfo values or argv, as each caller's docstring says.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_PLACEHOLDER = re.compile(r"@@([A-Z][A-Z0-9_]*)@@")
SCRIPTS = "scripts"
SQL = "sql"


def _read(folder: str, filename: str) -> str:
    return resources.files(__package__ or "opsagent").joinpath(folder, filename).read_text(encoding="utf-8")


def _after_header(text: str, comment: str) -> str:
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].startswith(comment):
        start += 1
    return "".join(lines[start:])


@functools.cache
def script(name: str) -> str:
    """The shell piece ``opsagent/scripts/<name>.sh`` (after its header)."""
    return _after_header(_read(SCRIPTS, f"{name}.sh"), "#")


@functools.cache
def sql(name: str) -> str:
    """The SQL piece ``opsagent/sql/<name>.sql`` (after its header, without the file's final newline)."""
    text = _after_header(_read(SQL, f"{name}.sql"), "--")
    return text[:-1] if text.endswith("\n") else text


def placeholders(template: str) -> set[str]:
    """The ``@@NAME@@`` placeholders a piece expects."""
    return set(_PLACEHOLDER.findall(template))


def fill(template: str, **values: str) -> str:
    """Replace every ``@@NAME@@`` with ``values[NAME]`` in one pass.

    A placeholder without a value, or a value without a placeholder, is a programming
    error (a typo would otherwise send ``@@NAME@@`` to the server or drop a value).
    """
    expected = placeholders(template)
    if expected != set(values):
        raise KeyError(f"placeholders {sorted(expected)} but values for {sorted(values)}")
    return _PLACEHOLDER.sub(lambda match: values[match[1]], template)
