"""Which tables the structure comparisons leave out: the ledger, and only the ledger.

opsagent's own ledger (``<ledger_schema>.<ledger_table>``, ``public.schema_migrations``
by default) is the tool's bookkeeping, not part of the user's schema, so diff, plan,
extract and the drift check hide it.  They hide exactly that one table: a user table
of the same name in another schema (or Rails' ``schema_migrations`` when the ledger
is configured elsewhere) is compared like any other table.

An exclusion entry is a string in one of two forms:

- ``"schema"."table"``: one table, both parts always double-quoted (``""`` for a
  quote inside), so a name with dots, quotes or capitals is unambiguous; this is
  what ``table_exclusion`` and ``ledger_exclusions`` produce, and it is also a
  valid ``pg_dump --exclude-table`` pattern as it stands (quoted text is literal
  there, ``*``, ``?`` and ``.`` included);
- a bare name (``audit_log``): that table name in every schema (kept for callers
  that want it; nothing in opsagent passes one by default any more).

A legacy unquoted ``schema.table`` is read as split at its first dot.
No entry ever becomes SQL or shell text except through quoting.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Protocol

DEFAULT_SCHEMA = "public"
DEFAULT_TABLE = "schema_migrations"


class LedgerLocation(Protocol):
    """Where a host keeps its ledger (``HostConfig`` has both)."""

    @property
    def ledger_schema(self) -> str: ...

    @property
    def ledger_table(self) -> str: ...


def always_quoted(name: str) -> str:
    """``"name"`` (``""`` for a quote inside): one spelling for every name, in SQL text arrays and pg_dump patterns."""
    return '"' + name.replace('"', '""') + '"'


def table_exclusion(schema: str, table: str) -> str:
    """The entry for exactly one table: ``"schema"."table"``."""
    for part in (schema, table):
        if "\x00" in part:
            raise ValueError("table name contains a NUL byte")
    return f"{always_quoted(schema)}.{always_quoted(table)}"


DEFAULT_EXCLUDED_TABLES: tuple[str, ...] = (table_exclusion(DEFAULT_SCHEMA, DEFAULT_TABLE),)


def ledger_exclusions(host: LedgerLocation) -> tuple[str, ...]:
    """What to hide for ``host``: its ledger table (schema-qualified), nothing else."""
    return (table_exclusion(host.ledger_schema, host.ledger_table),)


def _read_quoted(text: str, start: int) -> tuple[str, int] | None:
    """A double-quoted identifier starting at ``start``: (its name, the index after it), None if unterminated."""
    out: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == '"':
            if text[index + 1 : index + 2] == '"':
                out.append('"')
                index += 2
                continue
            return "".join(out), index + 1
        out.append(char)
        index += 1
    return None


@functools.lru_cache(maxsize=256)
def split_exclusion(entry: str) -> tuple[str | None, str]:
    """(schema or None for "any schema", table) of an entry (cached: the dump oracle asks for every entry of a
    dump, 13,000 times on musicbrainz)."""
    if "\x00" in entry:
        raise ValueError("table name contains a NUL byte")
    if entry.startswith('"'):
        first = _read_quoted(entry, 0)
        if first is not None:
            name, end = first
            if end == len(entry):
                return None, name
            if entry[end : end + 2] == '."':
                second = _read_quoted(entry, end + 1)
                if second is not None and second[1] == len(entry):
                    return name, second[0]
    if "." in entry:
        schema, _, table = entry.partition(".")
        return schema, table
    return None, entry


def canonical(entry: str) -> str:
    """The entry in its one spelling: ``"schema"."table"``, or ``"table"`` for a bare name."""
    schema, table = split_exclusion(entry)
    return always_quoted(table) if schema is None else table_exclusion(schema, table)


def dump_pattern(entry: str) -> str:
    """The ``pg_dump --exclude-table`` pattern of an entry (quoted: ``*``, ``?`` and ``.`` in names stay literal)."""
    schema, table = split_exclusion(entry)
    return f"*.{always_quoted(table)}" if schema is None else table_exclusion(schema, table)


def dump_exclude_args(entries: Iterable[str]) -> list[str]:
    """``--exclude-table PATTERN`` for each entry (argv items: shell-quoted by whoever builds the command)."""
    return [arg for entry in entries for arg in ("--exclude-table", dump_pattern(entry))]


def hidden_schema_candidates(entries: Iterable[str]) -> list[str]:
    """Schemas of qualified entries other than ``public``: hidden from the model
    when they hold nothing but excluded tables.

    ``public`` exists in every database (template0 has it), so it is never hidden:
    hiding an empty ``public`` on one side only would read as "drop schema public".
    """
    schemas = [schema for schema, _ in map(split_exclusion, entries) if schema is not None and schema != DEFAULT_SCHEMA]
    return list(dict.fromkeys(schemas))


def is_schema_entry(schema: str, name: str, hidden: str) -> bool:
    """Whether a pg_dump entry is schema ``hidden`` itself (its CREATE SCHEMA, COMMENT or ACL entry)."""
    return schema == "-" and name in {
        hidden,
        always_quoted(hidden),
        f"SCHEMA {hidden}",
        f"SCHEMA {always_quoted(hidden)}",
    }


def matches_dump_entry(entries: Iterable[str], schema: str, name: str) -> bool:
    """Whether a pg_dump entry (its ``Schema:`` and ``Name:``) belongs to an excluded table.

    pg_dump names a table's attached objects ``table constraint`` (constraints,
    defaults, triggers) and its comments and grants ``TABLE table`` / ``COLUMN table.col``.
    """
    for entry in entries:
        entry_schema, table = split_exclusion(entry)
        if entry_schema is not None and entry_schema != schema:
            continue
        for spelling in {table, always_quoted(table)}:
            if (
                name == spelling
                or name.startswith(spelling + " ")
                or name == "TABLE " + spelling
                or name.startswith("COLUMN " + spelling + ".")
            ):
                return True
    return False


def strip_ledger_only_schemas(dump: str, entries: Iterable[str]) -> str:
    """A pg_dump text (the excluded tables already left out by ``--exclude-table``) without the ``CREATE SCHEMA``
    entry of a ledger schema that holds nothing else in it: for text comparisons, like the model and the oracle."""
    lines = dump.split("\n")
    for schema in hidden_schema_candidates(entries):
        names = {schema, always_quoted(schema)}
        if any(line.startswith("-- Name: ") and f"; Schema: {name};" in line for line in lines for name in names):
            continue  # something else lives there: shown as usual
        for index, line in enumerate(lines):
            if (
                line.startswith("-- Name: ")
                and line.split(";", 1)[0][9:] in names
                and "; Type: SCHEMA; Schema: -;" in line
                and 0 < index < len(lines) - 1
                and lines[index - 1] == "--"
                and lines[index + 1] == "--"
            ):
                end = index + 2
                while end < len(lines) and not lines[end].strip():
                    end += 1
                while end < len(lines) and lines[end].strip():  # the CREATE SCHEMA statement
                    end += 1
                while end < len(lines) and not lines[end].strip():
                    end += 1
                lines[index - 1 : end] = []
                break
    return "\n".join(lines)
