"""The second oracle: two normalized ``pg_dump --schema-only`` texts compared object by object.

The catalog model (``opsagent.schema.catalog`` / ``opsagent.schema.compare``) sees what it was taught
to see; a plan rehearsed and re-diffed by the same model cannot reveal its blind
spots.  ``pg_dump`` knows every object kind PostgreSQL has, so comparing the dumps
of the two databases is an independent check: a difference here that the model
did not report is something opsagent "cannot yet describe", and a plan or a
"no drift" verdict resting on the model alone is refused.

The comparison is entry by entry (pg_dump's ``-- Name: …; Type: …`` blocks), so the
order in which objects are dumped does not count.  Differences a correct plan
legitimately leaves are normalized away, each one a stated rule (see ``RULES``):

- owners: ``ALTER … OWNER TO`` lines and the ``Owner:`` of the entry headers
  (owners are compared only by the model, and only on request);
- column order: the lines inside a ``CREATE TABLE ( … )`` are sorted (a column
  added by ``ALTER TABLE`` lands at the end; PostgreSQL cannot reorder columns),
  which also makes the order of inline CHECK constraints irrelevant;
- grant order: the lines of an ACL entry are sorted (an ACL lists grants in the
  order they were made);
- spelling: an entry that differs in text but parses to the same statements
  (``timezone('utc', x)`` vs ``x AT TIME ZONE 'utc'``) is equal, as in the model;
- session state: ``SET default_tablespace`` / ``default_table_access_method``
  are attached to the entries they apply to instead of where pg_dump emits them;
- the dump's header, trailer, ``\\restrict`` guard and blank lines.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .exclusions import (
    hidden_schema_candidates,
    is_schema_entry,
    matches_dump_entry,
)  # names only: no catalog model here

RULES = (
    "owners are not compared (ALTER ... OWNER TO lines and the Owner: of entry headers are ignored)",
    "the column lines of each CREATE TABLE are compared as a set: column order, which the model ignores by design, "
    "does not count",
    "the order in which pg_dump emits objects does not count: entries are compared by name and type",
    "the order of grants within an object's ACL does not count",
    "entries that parse to the same statements (e.g. timezone('utc', x) vs x AT TIME ZONE 'utc') are equal",
    "dump header, trailer, \\restrict guard and blank lines do not count",
)
MAX_LINES = 80  # dump lines shown per comparison (the rest is counted, not shown)

_HEADER = re.compile(
    r"^-- Name: (?P<name>.*); Type: (?P<type>.*?); Schema: (?P<schema>.*?); Owner: (?P<owner>[^;]*)"
    r"(?:; Tablespace: (?P<tablespace>.*))?$"
)
_OWNER = re.compile(r"^ALTER [A-Z][A-Z ]* .* OWNER TO .*;$")
_STATE = re.compile(r"^SET (default_tablespace|default_table_access_method) = (.*);$")
_STATE_DEFAULTS = {"default_tablespace": "''", "default_table_access_method": "heap"}
_RESTRICT = re.compile(r"^\\(un)?restrict [A-Za-z0-9]+$")
_TABLE_OPEN = re.compile(r"^CREATE (?:UNLOGGED |FOREIGN )?TABLE .*\($")
_TRAILER = "-- PostgreSQL database dump complete"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One pg_dump entry: its identity and its statement lines, normalized."""

    type: str
    schema: str
    name: str
    lines: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.type} {self.schema}.{self.name}" if self.schema != "-" else f"{self.type} {self.name}"


def entries(dump: str) -> dict[str, tuple[Entry, ...]]:
    """The dump's entries by key (several entries may share one, e.g. ACLs);
    the preamble before the first entry is dropped.  The last two dumps read are kept: a plan compares its
    rehearsal with schema.sql's dump and then with its dump-and-load form."""
    return dict(_entries(dump))


def _entry_header(lines: Sequence[str], index: int) -> re.Match[str] | None:
    """The header of the pg_dump entry that ``lines[index]`` opens (framed by ``--`` lines), else None."""
    line = lines[index]
    if not line.startswith("-- Name: ") or not 0 < index < len(lines) - 1:
        return None
    return _HEADER.match(line) if lines[index - 1] == "--" and lines[index + 1] == "--" else None


@functools.lru_cache(maxsize=2)
def _entries(dump: str) -> dict[str, tuple[Entry, ...]]:
    found: dict[str, list[Entry]] = {}
    state = dict(_STATE_DEFAULTS)
    current: tuple[str, str, str] | None = None
    body: list[str] = []

    def finish() -> None:
        if current is not None:
            lines = _normalize_body(body)
            if current[0] in ("ACL", "DEFAULT ACL"):  # the order of grants in an ACL is the order they were made in
                lines.sort()
            entry = Entry(*current, tuple(lines))
            found.setdefault(entry.key, []).append(entry)

    lines = dump.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(lines):
        header = _entry_header(lines, index)
        if header:
            finish()
            current = (header["type"], header["schema"], header["name"])
            body = [f"SET {k} = {v};" for k, v in state.items() if v != _STATE_DEFAULTS[k]]
            if header["tablespace"]:
                body.append(f"-- Tablespace: {header['tablespace']}")
            continue
        setting = _STATE.match(line)
        if setting:
            state[setting[1]] = setting[2]
            continue
        if current is not None:
            body.append(line)
    finish()
    return {key: tuple(sorted(items, key=lambda e: e.lines)) for key, items in found.items()}


def _normalize_body(lines: Sequence[str]) -> list[str]:
    """An entry's lines without noise (blank, ``--`` frame, owners, guard, trailer), its table columns sorted."""
    kept: list[str] = []
    previous_blank = True
    for line in lines:
        blank = not line.strip()
        noise = (
            blank
            or line == "--"
            or line == _TRAILER
            or bool(_RESTRICT.match(line))
            or (previous_blank and bool(_OWNER.match(line)))
        )
        previous_blank = blank
        if not noise:
            kept.append(line.rstrip())
    return _sort_table_columns(kept)


def _sort_table_columns(lines: list[str]) -> list[str]:
    """Inside ``CREATE TABLE x (`` … ``)``: the lines as a sorted set, trailing commas dropped."""
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        out.append(line)
        index += 1
        if not _TABLE_OPEN.match(line):
            continue
        end = index
        while end < len(lines) and not lines[end].startswith(")"):
            end += 1
        if end == len(lines):  # not a table body after all
            continue
        items = sorted(item.rstrip(",") for item in lines[index:end])
        out.extend(
            f"{item}," if n < len(items) - 1 else item for n, item in enumerate(items)
        )  # still SQL, for ``_canonical``
        index = end
    return out


def _canonical(lines: Sequence[str]) -> str | None:
    """An entry as PostgreSQL's parser sees it, printed one way, ``pg_catalog.`` dropped (None: does not parse).

    The server deparses the same call differently depending on how it was written
    (``timezone('utc', x)`` vs ``x AT TIME ZONE 'utc'``); both parse to one tree.
    The same rule as the model's (``opsagent.schema.compare.equivalent``), applied to whole entries.
    """
    import pglast
    from pglast.stream import RawStream

    try:
        statements = pglast.parse_sql("\n".join(lines))
        return "; ".join(str(RawStream()(statement)) for statement in statements).replace("pg_catalog.", "")
    except Exception:  # pglast raises several types; unparsable means "not provably equal"
        return None


def _same(old: Sequence[Entry], new: Sequence[Entry]) -> bool:
    if [e.lines for e in old] == [e.lines for e in new]:
        return True
    if len(old) != len(new) or not old:
        return False
    for a, b in zip(old, new, strict=True):
        if a.lines != b.lines:
            canonical = _canonical(a.lines)
            if canonical is None or canonical != _canonical(b.lines):
                return False
    return True


@dataclasses.dataclass(frozen=True)
class DumpDifference:
    """One entry that differs between the two dumps:
    only in live (``extra``), only in desired (``missing``) or ``changed``."""

    key: str
    type: str
    schema: str
    name: str
    status: str
    lines: tuple[str, ...]  # unified-diff lines (``-`` live, ``+`` desired)

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": self.key,
            "type": self.type,
            "schema": self.schema,
            "name": self.name,
            "status": self.status,
            "lines": list(self.lines),
        }


def _excluded(entry: Entry, tables: Sequence[str]) -> bool:
    """An entry of a table the model leaves out (the ledger): the table, its constraints, defaults, comments, grants."""
    return matches_dump_entry(tables, entry.schema, entry.name)


def _without_ledger(side: dict[str, tuple[Entry, ...]], tables: Sequence[str]) -> dict[str, tuple[Entry, ...]]:
    """The entries without the excluded tables, and without the ledger's own schema when nothing else is in it
    (the model hides it the same way: ``ledger_schema: ops`` is not drift)."""
    kept = {k: v for k, v in side.items() if not _excluded(v[0], tables)}
    occupied = {entry.schema for items in kept.values() for entry in items}
    hidden = [schema for schema in hidden_schema_candidates(tables) if schema not in occupied]
    return {
        k: v for k, v in kept.items() if not any(is_schema_entry(v[0].schema, v[0].name, schema) for schema in hidden)
    }


def compare_dumps(
    live: str,
    desired: str,
    exclude_tables: Sequence[str] = (),
    *,
    desired_entries: dict[str, tuple[Entry, ...]] | None = None,
) -> list[DumpDifference]:
    """Entries that differ after normalization, in key order (entries of ``exclude_tables`` left out).

    ``desired_entries``: ``entries(desired)`` already computed (e.g. while the live side was being read)."""
    before, after = entries(live), desired_entries if desired_entries is not None else entries(desired)
    if exclude_tables:
        before, after = (_without_ledger(side, exclude_tables) for side in (before, after))
    out: list[DumpDifference] = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key, ()), after.get(key, ())
        if _same(old, new):
            continue
        sample = (old or new)[0]
        status = "extra" if not new else "missing" if not old else "changed"
        old_lines = [line for e in old for line in e.lines]
        new_lines = [line for e in new for line in e.lines]
        diff = [line.rstrip("\n") for line in difflib.unified_diff(old_lines, new_lines, lineterm="", n=2)][
            2:
        ]  # no ---/+++ pair
        out.append(DumpDifference(key, sample.type, sample.schema, sample.name, status, tuple(diff)))
    return out


# ---------------------------------------------------------------- what the model already said


def _unquote(part: str) -> str:
    return part[1:-1].replace('""', '"') if len(part) >= 2 and part.startswith('"') and part.endswith('"') else part


def split_key(name: str) -> list[str]:
    """``public."Odd.name".col`` → ``['public', 'Odd.name', 'col']`` (model names are quote_ident-ed)."""
    parts: list[str] = []
    current = ""
    quoted = False
    for char in name.split("(", 1)[0]:
        if char == '"':
            quoted = not quoted
        if char == "." and not quoted:
            parts.append(_unquote(current))
            current = ""
        else:
            current += char
    parts.append(_unquote(current))
    return parts


def _entry_objects(difference: DumpDifference) -> set[tuple[str, str]]:
    """(schema, object) pairs an entry is about: its own name, and the table an attached object
    (``t cname``) belongs to."""
    name = difference.name
    words = name.split(" ")
    found = {(difference.schema, name.split("(", 1)[0])}
    if len(words) >= 2 and words[0] in (
        "TABLE",
        "VIEW",
        "SEQUENCE",
        "FUNCTION",
        "TYPE",
        "SCHEMA",
        "COLUMN",
        "INDEX",
        "DOMAIN",
        "PROCEDURE",
        "AGGREGATE",
        "MATERIALIZED",
    ):
        rest = name.split(" ", 2 if words[0] == "MATERIALIZED" else 1)[
            -1
        ]  # COMMENT / ACL entries: "TABLE t", "COLUMN t.c"
        found.add((difference.schema, rest.split("(", 1)[0].split(".", 1)[0]))
    found.add(
        (difference.schema, words[0].split("(", 1)[0])
    )  # "t cname" (constraints, defaults, triggers, policies, rules)
    if difference.schema == "-":
        found.add((name.split("(", 1)[0], ""))  # a schema or an extension: everything in it
    return found


def unexplained(differences: Iterable[DumpDifference], model_names: Iterable[str]) -> list[DumpDifference]:
    """The dump differences no model finding accounts for (a model finding covers its object and what hangs on it).

    Only the naming is matched (schema and object), never the content: this decides
    what is *listed* as "cannot yet describe" next to the model's own findings; the
    verdict is "differs" either way.
    """
    named: set[tuple[str, str]] = set()
    for name in model_names:
        parts = split_key(name)
        named.add((parts[0], parts[1]) if len(parts) >= 2 else (parts[0], ""))
    return [d for d in differences if not (_entry_objects(d) & named)]


def render_lines(differences: Sequence[DumpDifference], limit: int = MAX_LINES) -> list[str]:
    """The differences as bounded unified-diff text: a ``@@ key (status)`` line per entry, then its lines."""
    out: list[str] = []
    total = sum(1 + len(d.lines) for d in differences)
    for difference in differences:
        for line in (f"@@ {difference.key} ({difference.status})", *difference.lines):
            if len(out) >= limit:
                out.append(f"... {total - limit} more dump line(s) not shown (--json has them all)")
                return out
            out.append(line)
    return out


# ---------------------------------------------------------------- a lighter dump to reload

# Post-data entries that are most of a large dump's load (index builds, foreign keys and their triggers, triggers)
# and on which no entry kept beside them depends, except comments on them (left out with them).  musicbrainz's dump
# loads in about half the time without them.
_HEAVY_TYPES = frozenset({"INDEX", "INDEX ATTACH", "CONSTRAINT", "FK CONSTRAINT", "TRIGGER"})
_ON_HEAVY = ("INDEX ", "CONSTRAINT ", "TRIGGER ")  # COMMENT / SECURITY LABEL names of what those entries make


def _heavy(kind: str, name: str) -> bool:
    if kind in _HEAVY_TYPES:
        return True
    return kind in ("COMMENT", "SECURITY LABEL") and name.startswith(_ON_HEAVY) and " ON DOMAIN " not in name


def without_heavy_entries(dump: str) -> tuple[str, frozenset[str]]:
    """``dump`` (pg_dump's output, its entry headers kept) without its heavy post-data entries, and their keys.

    For the reloaded target of a comparison (``drift.against_reloaded``) when the findings it must settle lie in
    none of them: views, inline checks and defaults, where dump-and-load deparse artifacts live.  Every other entry
    is kept (pre-data entries never depend on post-data ones).  A left-out entry's session settings
    (``SET default_tablespace``) and psql commands (the trailer's ``\\unrestrict``) stay.  A dump with a RULE
    entry (a view pg_dump split off because its query needs a primary key, say) is returned whole."""
    lines = dump.split("\n")
    headers = {i - 1: header for i in range(len(lines)) if (header := _entry_header(lines, i))}
    kept: list[str] = []
    skipped: set[str] = set()
    bounds = sorted({0, *headers})
    for start, end in zip(bounds, [*bounds[1:], len(lines)], strict=True):
        block = lines[start:end]
        header = headers.get(start)
        if header is not None and header["type"] == "RULE":
            return dump, frozenset()
        if header is not None and _heavy(header["type"], header["name"]):
            skipped.add(Entry(header["type"], header["schema"], header["name"], ()).key)
            kept += [line for line in block if _STATE.match(line) or line.startswith("\\")]  # and \unrestrict
        else:
            kept += block
    return "\n".join(kept), frozenset(skipped)
