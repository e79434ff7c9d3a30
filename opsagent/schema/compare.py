"""Structural comparison of two catalogs: what is extra, missing or changed.

Every object kind is compared by identity in one pass over dictionaries (linear in
the number of objects).  A single structural mutation yields a single change: a
column is reported as a column (not as its whole table), objects that belong to a
table that exists on one side only are folded into that table's change, and a
comment or privilege difference is reported under its own kind.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pglast
from pglast.stream import RawStream

from ..sqlquote import quote_ident
from .catalog import (
    Catalog,
    Collation,
    Column,
    Extension,
    Operator,
    Sequence_,
    Table,
    TextSearchConfig,
    TextSearchDictionary,
    Type,
    View,
)
from .changes import KIND_ORDER, Change, DiffResult

_IDENTITY_FIELDS = frozenset({"schema", "name", "table", "columns"})
_FIELD_KIND = {
    "comment": "comment",
    "privileges": "privilege",
    "rls_enabled": "rls",
    "rls_forced": "rls",
    "owner": "owner",
}
_ARROW = "→"


# ---------------------------------------------------------------- formatting


def display(name: str) -> str:
    """Names in the public schema are shown unqualified, as people write them."""
    return name[len("public.") :] if name.startswith("public.") else name


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return str(value)


def excerpt(old: str, new: str, width: int = 100) -> str:
    """``<old> → <new>`` showing only the region that differs (whitespace collapsed)."""
    a, b = " ".join(old.split()), " ".join(new.split())
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[len(a) - 1 - end] == b[len(b) - 1 - end]:
        end += 1
    lead = max(0, start - 30)
    lead = a.rfind(" ", 0, lead) + 1 if lead else 0

    def cut(text: str) -> str:
        stop = len(text) - max(0, end - 30)
        piece = text[lead:stop]
        if len(piece) > width:
            piece = piece[:width] + "…"
        return ("…" if lead else "") + piece + ("…" if stop < len(text) and not piece.endswith("…") else "")

    return f"{cut(a)} {_ARROW} {cut(b)}"


def _field_detail(field: str, old: Any, new: Any) -> str:
    if field == "members":
        gone, added = sorted(set(old) - set(new)), sorted(set(new) - set(old))
        return "members: " + ", ".join([*(f"drop {m}" for m in gone), *(f"add {m}" for m in added)])
    if field == "definition" and isinstance(old, str) and isinstance(new, str):
        return f"definition differs: {excerpt(old, new)}"
    if field == "mappings":
        return _mapping_detail(dict(old), dict(new))
    if field == "privileges":
        before, after = set(old), set(new)
        parts = [f"revoke {p} from {g}" for g, p, _ in sorted(before - after)]
        parts += [f"grant {p} to {g}" + (" with grant option" if o else "") for g, p, o in sorted(after - before)]
        return "privileges: " + ", ".join(parts)
    return f"{field.replace('_', ' ')}: {_show(old)} {_ARROW} {_show(new)}"


def _mapping_detail(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """A text search configuration's mappings, only the token types that differ."""
    parts = [
        f"{token}: {old.get(token, 'none')} {_ARROW} {new.get(token, 'none')}"
        for token in sorted(old.keys() | new.keys())
        if old.get(token) != new.get(token)
    ]
    return "mappings: " + "; ".join(parts)


# ---------------------------------------------------------------- comparing


def _kind_of(attr: str, obj: Any) -> str:
    if attr == "views":
        return "materialized view" if obj.materialized else "view"
    if attr == "functions":
        return "procedure" if obj.kind == "p" else "function"
    return {
        "schemas": "schema",
        "extensions": "extension",
        "tables": "table",
        "constraints": "constraint",
        "indexes": "index",
        "sequences": "sequence",
        "triggers": "trigger",
        "types": "type",
        "policies": "policy",
        "collations": "collation",
        "text_search_dicts": "text search dictionary",
        "text_search_configs": "text search configuration",
        "statistics": "statistics",
        "operators": "operator",
        "operator_families": "operator family",
        "operator_classes": "operator class",
    }[attr]


_WRAP = {"constraint": "ALTER TABLE x ADD {}", "expression": "SELECT {}"}


def _canonical(text: str, wrap: str) -> str | None:
    """PostgreSQL's parser's view of a deparsed definition, pg_catalog qualification dropped.

    The server deparses ``x AT TIME ZONE z`` and ``timezone(z, x)`` differently although
    both are the same call; parsing both and printing them one way makes them equal.
    (Introspection runs with search_path = pg_catalog, so an unqualified name *is* pg_catalog's.)
    """
    try:
        printed = RawStream()(pglast.parse_sql(wrap.format(text)))
    except Exception:  # pglast raises several types; unparsable means "not provably equal"
        return None
    return str(printed).replace("pg_catalog.", "")


def equivalent(before: Any, after: Any, what: str = "statement") -> bool:
    """Whether two differing deparsed texts are the same structure (only asked when texts differ)."""
    if not isinstance(before, str) or not isinstance(after, str):
        return False
    wrap = _WRAP.get(what, "{}")
    canonical = _canonical(before, wrap)
    return canonical is not None and canonical == _canonical(after, wrap)


_EXPRESSION_FIELDS = frozenset({"default", "generated", "using", "with_check"})


def _compare_fields(kind: str, name: str, old: Any, new: Any, owners: bool = False) -> Iterator[Change]:
    """Changes for one object present on both sides, one per change kind."""
    grouped: dict[str, list[str]] = {}
    for field in dataclasses.fields(old):
        if field.name in _IDENTITY_FIELDS or (field.name == "owner" and not owners):
            continue
        before, after = getattr(old, field.name), getattr(new, field.name)
        if (
            before != after
            and field.name in ("definition", *_EXPRESSION_FIELDS)
            and kind not in ("function", "procedure")
        ):
            what = (
                "expression"
                if field.name in _EXPRESSION_FIELDS
                else "constraint"
                if kind == "constraint"
                else "statement"
            )
            if equivalent(before, after, what):
                continue
        if before != after:
            grouped.setdefault(_FIELD_KIND.get(field.name, kind), []).append(_field_detail(field.name, before, after))
    for change_kind, details in grouped.items():
        yield Change(change_kind, name, "changed", details)


def _owned_sequences(catalog: Catalog) -> dict[str, str]:
    """Sequence name → the column that owns it (serial columns)."""
    return {key: seq.owned_by for key, seq in catalog.sequences.items() if seq.owned_by}


def _by_owner(sequences: Mapping[str, Sequence_]) -> dict[str, Sequence_]:
    """A serial's sequence is identified by its column, not its name (renaming a table keeps the old name)."""
    return {f"owned by {seq.owned_by}" if seq.owned_by else key: seq for key, seq in sequences.items()}


_NEXTVAL = re.compile(r"nextval\('((?:[^']|'')+)'::regclass\)")


def _default(value: str | None, column: str, owned: Mapping[str, str]) -> str | None:
    """``nextval('<the sequence this column owns>')`` reads the same whatever the sequence is called."""
    if value is None or "nextval(" not in value:
        return value
    return _NEXTVAL.sub(
        lambda m: "nextval(<owned sequence>)" if owned.get(m.group(1).replace("''", "'")) == column else m.group(0),
        value,
    )


# what a partition or inheritance child decides for a column its parent defines
_OWN_FIELDS = frozenset({"not_null", "default", "comment", "privileges"})


def _compare_columns(
    table: str,
    old: tuple[Column, ...],
    new: tuple[Column, ...],
    *,
    view: bool,
    owned: tuple[Mapping[str, str], Mapping[str, str]] = ({}, {}),
) -> Iterator[Change]:
    before = {c.name: c for c in old}
    after = {c.name: c for c in new}
    for column in old:
        key = f"{table}.{column.name}"
        if column.name not in after:
            if (
                not view and not column.inherited
            ):  # an inherited one is reported on the parent, where the change was made
                yield Change("column", key, "extra", [f"{display(table)}.{column.name}: {column.type}"])
            continue
        other = after[column.name]
        if view:  # a view's columns follow from its definition: only their comments and grants are its own
            if column.comment != other.comment:
                yield Change("comment", key, "changed", [_field_detail("comment", column.comment, other.comment)])
            if column.privileges != other.privileges:
                yield Change(
                    "privilege", key, "changed", [_field_detail("privileges", column.privileges, other.privileges)]
                )
            continue
        details: list[str] = []
        comment: list[str] = []
        grants: list[str] = []
        inherited = column.inherited and other.inherited
        for field in dataclasses.fields(Column):
            if field.name in ("name", "inherited"):  # inheritance shows as the table's partition_of/inherits
                continue
            if inherited and field.name not in _OWN_FIELDS:
                continue  # its type and generation are the parent's, reported there
            a, b = getattr(column, field.name), getattr(other, field.name)
            if field.name == "default" and a != b:
                where = f"{table}.{quote_ident(column.name)}"
                a, b = _default(a, where, owned[0]), _default(b, where, owned[1])
            if a == b or (field.name in ("default", "generated") and equivalent(a, b, "expression")):
                continue
            if field.name == "comment":
                comment.append(_field_detail("comment", a, b))
            elif field.name == "privileges":
                grants.append(_field_detail("privileges", a, b))
            else:
                details.append(_column_field(table, column.name, field.name, a, b))
        if details:
            yield Change("column", key, "changed", details)
        if comment:
            yield Change("comment", key, "changed", comment)
        if grants:
            yield Change("privilege", key, "changed", grants)
    if not view:
        for column in new:
            if column.name not in before and not column.inherited:
                yield Change(
                    "column", f"{table}.{column.name}", "missing", [f"{display(table)}.{column.name}: {column.type}"]
                )
    common_old = [c.name for c in old if c.name in after]
    common_new = [c.name for c in new if c.name in before]
    if common_old != common_new and not view:
        yield Change(
            "table",
            table,
            "changed",
            [f"column order: {', '.join(common_old)} {_ARROW} {', '.join(common_new)}"],
            "low",
        )


_SEQUENCE_FIELDS = ("start", "increment", "min", "max", "cache", "cycle")


def _column_field(table: str, column: str, field: str, old: Any, new: Any) -> str:
    where = f"{display(table)}.{column}"
    if field == "type":
        return f"{where}: {old} {_ARROW} {new}"
    if field == "identity_sequence" and old is not None and new is not None:
        parts = [
            f"{name} {_show(a)} {_ARROW} {_show(b)}"
            for name, a, b in zip(_SEQUENCE_FIELDS, old, new, strict=True)
            if a != b
        ]
        return f"{where} identity sequence: {', '.join(parts)}"
    if field == "not_null":
        return f"{where}: {'NOT NULL' if old else 'NULL'} {_ARROW} {'NOT NULL' if new else 'NULL'}"
    return f"{where} {field.replace('_', ' ')}: {_show(old)} {_ARROW} {_show(new)}"


def _owner_table(attr: str, obj: Any) -> str | None:
    """The table an object lives and dies with (folded into that table's change)."""
    if attr in ("constraints", "triggers", "policies", "indexes", "statistics"):
        return str(obj.table)  # for a domain constraint: the domain
    if attr == "sequences" and obj.owned_by:
        return str(obj.owned_by).rsplit(".", 1)[0]
    return None


def _summary(attr: str, obj: Any) -> list[str]:
    if isinstance(obj, Table):
        return [f"{len(obj.columns)} columns"]
    if isinstance(obj, View):
        return [" ".join(obj.definition.split())[:120]]
    if isinstance(obj, Type):
        extra = {
            "enum": _show(obj.labels),
            "domain": obj.base_type,
            "range": obj.base_type,
            "composite": ", ".join(f"{n} {t}" for n, t in obj.attributes or ()),
        }.get(obj.kind)
        return [f"{obj.kind}: {extra}" if extra else obj.kind]
    if isinstance(obj, Extension):
        return [f"version {obj.version}"]
    if isinstance(obj, Collation):
        return [
            f"provider {obj.provider}, locale {obj.locale or obj.lc_collate}"
            + ("" if obj.deterministic else ", nondeterministic")
        ]
    if isinstance(obj, TextSearchDictionary):
        return [f"template {obj.template}" + (f" ({obj.options})" if obj.options else "")]
    if isinstance(obj, TextSearchConfig):
        return [f"parser {obj.parser}, {len(obj.mappings)} token types mapped"]
    if isinstance(obj, Operator):
        return [f"{obj.arguments} → {obj.result} by {obj.function}"]
    if isinstance(obj, Sequence_) and obj.owned_by:
        return [f"owned by {obj.owned_by}"]
    definition = getattr(obj, "definition", None)
    return [" ".join(definition.split())[:160]] if isinstance(definition, str) else []


def _compare_maps(
    attr: str,
    live: Mapping[str, Any],
    desired: Mapping[str, Any],
    folded: set[str],
    owned: tuple[Mapping[str, str], Mapping[str, str]] = ({}, {}),
    owners: bool = False,
) -> Iterator[Change]:
    for key, obj in live.items():
        other = desired.get(key)
        if other is None:
            if _owner_table(attr, obj) not in folded:
                yield Change(_kind_of(attr, obj), obj.key, "extra", _summary(attr, obj))
            continue
        key = obj.key
        kind = _kind_of(attr, obj)
        if kind != _kind_of(attr, other):  # e.g. view became materialized
            yield Change(kind, key, "extra", _summary(attr, obj))
            yield Change(_kind_of(attr, other), key, "missing", _summary(attr, other))
            continue
        if obj != other or (owners and getattr(obj, "owner", None) != getattr(other, "owner", None)):
            yield from _compare_fields(kind, key, obj, other, owners)
            if attr in ("tables", "views"):
                yield from _compare_columns(key, obj.columns, other.columns, view=attr == "views", owned=owned)
    for key, obj in desired.items():
        if key not in live and _owner_table(attr, obj) not in folded:
            yield Change(_kind_of(attr, obj), obj.key, "missing", _summary(attr, obj))


_ATTRS = (
    "extensions",
    "schemas",
    "collations",
    "text_search_dicts",
    "text_search_configs",
    "types",
    "sequences",
    "tables",
    "constraints",
    "indexes",
    "statistics",
    "views",
    "functions",
    "operators",
    "operator_families",
    "operator_classes",
    "triggers",
    "policies",
)


def compare(live: Catalog, desired: Catalog, *, owners: bool = False) -> DiffResult:
    """Everything that differs between the live database and the desired one.

    Owners are compared only when asked: a scratch copy is owned by whoever loaded it.
    """
    folded = set(live.tables.keys() ^ desired.tables.keys()) | set(live.types.keys() ^ desired.types.keys())
    owned = (_owned_sequences(live), _owned_sequences(desired))
    changes: list[Change] = []
    for attr in _ATTRS:
        before, after = getattr(live, attr), getattr(desired, attr)
        if attr == "sequences":
            before, after = _by_owner(before), _by_owner(after)
        changes.extend(_compare_maps(attr, before, after, folded, owned, owners))
    rank = {kind: index for index, kind in enumerate(KIND_ORDER)}
    changes.sort(key=lambda c: (rank.get(c.kind, len(rank)), c.name, c.status))
    return DiffResult(changes)
