"""A typed, comparable model of a database's structure, read in one round trip.

One query (``INTROSPECTION_SQL``) asks ``pg_catalog`` for everything and returns a
single JSON document; ``Catalog.from_json`` turns it into frozen dataclasses keyed
by stable identities (schema-qualified names, functions by identity arguments,
table-bound objects by table + name).  OIDs and creation order never reach the
model, and deparsed definitions are produced with ``search_path = pg_catalog`` so
they are fully qualified and identical across databases.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..errors import RemoteError
from ..remote.markers import Markers
from ..sqlquote import qualify, quote_ident
from .exclusions import DEFAULT_EXCLUDED_TABLES

# the query's text lives in ``schema.introspection`` (light to import); re-exported for the callers that use it here
from .introspection import INTROSPECTION_SQL as INTROSPECTION_SQL
from .introspection import introspection_sql as introspection_sql
from .introspection import stats_sql as stats_sql

# the ledger's default location, re-exported for the callers that import it from here
__all__ = ["DEFAULT_EXCLUDED_TABLES"]


class QueryRunner(Protocol):
    """The part of ``Remote`` introspection needs (kept narrow so tests can read it)."""

    def query_json(self, sql: str, database: str | None = None, *, timeout: float | None = None) -> Any: ...

    def psql(self, sql: str, database: str | None = None, *, extra: Sequence[str] = ()) -> Any: ...


# ---------------------------------------------------------------- model


Privilege = tuple[str, str, bool]


class _InSchema:
    """What an object named ``schema.name`` shares: the key every comparison and statement uses."""

    schema: str
    name: str

    @property
    def key(self) -> str:
        return qualify(self.schema, self.name)


class _UsingMethod:
    """An operator family or class: named in a schema and for one index method (``schema.name USING btree``)."""

    schema: str
    name: str
    method: str

    @property
    def key(self) -> str:
        return f"{qualify(self.schema, self.name)} USING {self.method}"


class _OnTable:
    """An object named within its table (constraint, trigger, policy): ``table.name``."""

    table: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.table}.{quote_ident(self.name)}"


@dataclasses.dataclass(frozen=True)
class Schema:
    name: str
    comment: str | None = None
    privileges: tuple[Privilege, ...] = ()  # differences from the defaults (owner only)
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    @property
    def key(self) -> str:
        return quote_ident(self.name)


@dataclasses.dataclass(frozen=True)
class Extension:
    name: str
    version: str
    schema: str

    @property
    def key(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool = False
    default: str | None = None
    generated: str | None = None
    identity: str | None = None
    identity_sequence: tuple[int, int, int, int, int, bool] | None = None  # start, increment, min, max, cache, cycle
    collation: str | None = None
    comment: str | None = None
    inherited: bool = False  # comes from a parent table (partition or inheritance child)
    statistics: int | None = None  # SET STATISTICS target, when not the default
    privileges: tuple[Privilege, ...] = ()  # column-level grants only


@dataclasses.dataclass(frozen=True)
class Table(_InSchema):
    """A table (ordinary, partitioned or foreign); its columns keep their physical order."""

    schema: str
    name: str
    kind: str = "r"
    persistence: str = "p"
    partition_key: str | None = None
    partition_of: str | None = None
    partition_bound: str | None = None
    inherits: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    rls_enabled: bool = False
    rls_forced: bool = False
    # "full", "nothing" or "index <name>" (what logical replication logs of a changed row)
    replica_identity: str = "default"
    clustered_on: str | None = None  # the index CLUSTER uses by default (ALTER TABLE ... CLUSTER ON), quoted
    comment: str | None = None
    privileges: tuple[Privilege, ...] = ()
    columns: tuple[Column, ...] = ()
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    def column_map(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}


@dataclasses.dataclass(frozen=True)
class View(_InSchema):
    schema: str
    name: str
    materialized: bool
    definition: str
    options: tuple[str, ...] = ()
    comment: str | None = None
    privileges: tuple[Privilege, ...] = ()
    columns: tuple[Column, ...] = ()
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    def column_map(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}


@dataclasses.dataclass(frozen=True)
class Constraint(_OnTable):
    """A table or domain constraint; ``type`` is PostgreSQL's contype letter."""

    table: str
    name: str
    type: str
    definition: str
    on_domain: bool = False
    deferrable: bool = False
    deferred: bool = False
    validated: bool = True
    comment: str | None = None


@dataclasses.dataclass(frozen=True)
class Index:
    table: str
    name: str
    definition: str
    valid: bool = True
    statistics: tuple[tuple[int, int], ...] = ()  # (column number, SET STATISTICS target) of expression columns
    comment: str | None = None

    @property
    def key(self) -> str:
        schema = self.table.rsplit(".", 1)[0]
        return f"{schema}.{quote_ident(self.name)}"


@dataclasses.dataclass(frozen=True)
class Operator:
    """A user-defined operator, identified by schema, name and argument types (``left`` is None for a prefix operator).

    Support functions and companion operators are as ``regproc``/``regoper`` print them (qualified outside pg_catalog).
    """

    schema: str
    name: str
    right: str
    result: str
    function: str
    left: str | None = None
    commutator: str | None = None
    negator: str | None = None
    restrict: str | None = None
    join: str | None = None
    hashes: bool = False
    merges: bool = False
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    @property
    def arguments(self) -> str:
        return f"{self.left or 'NONE'}, {self.right}"

    @property
    def key(self) -> str:
        return f"{quote_ident(self.schema)}.{self.name}({self.arguments})"


@dataclasses.dataclass(frozen=True)
class OperatorFamily(_UsingMethod):
    """An operator family of an index method; ``members`` are only those added loose (ALTER OPERATOR FAMILY ... ADD)."""

    schema: str
    name: str
    method: str
    members: tuple[str, ...] = ()
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ


@dataclasses.dataclass(frozen=True)
class OperatorClass(_UsingMethod):
    """An operator class: the operators and support functions an index method uses for one type."""

    schema: str
    name: str
    method: str
    type: str
    family: str
    default: bool = False
    storage: str | None = None
    members: tuple[str, ...] = ()
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ


@dataclasses.dataclass(frozen=True)
class Statistics(_InSchema):
    """An extended statistics object (CREATE STATISTICS) on one table; ``target`` is its SET STATISTICS, when set."""

    schema: str
    name: str
    table: str
    definition: str
    target: int | None = None
    comment: str | None = None


@dataclasses.dataclass(frozen=True)
class Sequence_(_InSchema):
    schema: str
    name: str
    type: str
    start: int
    increment: int
    min: int
    max: int
    cache: int
    cycle: bool
    owned_by: str | None = None
    comment: str | None = None
    privileges: tuple[Privilege, ...] = ()
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ


@dataclasses.dataclass(frozen=True)
class Function:
    """A function, procedure or aggregate; identified by name and identity arguments."""

    schema: str
    name: str
    kind: str
    arguments: str
    result: str | None = None
    definition: str | None = None
    comment: str | None = None
    privileges: tuple[Privilege, ...] = ()  # differences from the defaults (EXECUTE to PUBLIC)
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    @property
    def key(self) -> str:
        return f"{qualify(self.schema, self.name)}({self.arguments})"


@dataclasses.dataclass(frozen=True)
class Trigger(_OnTable):
    table: str
    name: str
    definition: str
    enabled: str = "O"
    comment: str | None = None


@dataclasses.dataclass(frozen=True)
class Type(_InSchema):
    """An enum, composite, domain or range type."""

    schema: str
    name: str
    kind: str
    labels: tuple[str, ...] | None = None
    attributes: tuple[tuple[str, str], ...] | None = None
    base_type: str | None = None
    not_null: bool = False
    default: str | None = None
    collation: str | None = None
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ


@dataclasses.dataclass(frozen=True)
class Policy(_OnTable):
    table: str
    name: str
    command: str
    permissive: bool
    roles: tuple[str, ...]
    using: str | None = None
    with_check: str | None = None
    comment: str | None = None


@dataclasses.dataclass(frozen=True)
class Collation(_InSchema):
    """A collation; ``locale`` is the ICU (or builtin) locale, ``lc_*`` the libc ones.

    The version is the library's, not compared.
    """

    schema: str
    name: str
    provider: str = "libc"
    locale: str | None = None
    lc_collate: str | None = None
    lc_ctype: str | None = None
    deterministic: bool = True
    rules: str | None = None
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ


@dataclasses.dataclass(frozen=True)
class TextSearchDictionary(_InSchema):
    """A text search dictionary: a template (qualified) and its options as PostgreSQL prints them."""

    schema: str
    name: str
    template: str
    options: str | None = None
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ


@dataclasses.dataclass(frozen=True)
class TextSearchConfig(_InSchema):
    """A text search configuration: its parser and, per token type, the dictionaries tried in order."""

    schema: str
    name: str
    parser: str
    mappings: tuple[tuple[str, str], ...] = ()  # (token type, "dict, dict"), sorted by token type
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    def mapping_map(self) -> dict[str, str]:
        return dict(self.mappings)


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(tuple(v) if isinstance(v, list) else v for v in value or ())


_SET_FIELDS = ("privileges", "roles")  # sets in meaning: order must not matter


_FIELD_NAMES: dict[type[Any], frozenset[str]] = {}


def _field_names(cls: type[Any]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


_TYPMOD_TEXT = re.compile(r"\(\d+(?:,\d+)?\)")


def castable(catalog: Catalog, source: str, target: str) -> bool:
    """Whether ``value::target`` works for a ``source`` value (as ALTER COLUMN ... USING col::target needs).

    From the server's pg_cast and string types, read with the catalog; a catalog read without them
    (hand-built, or introspected without dependencies) says yes: the rehearsal will tell.
    """
    if not catalog.casts:
        return True
    a, b = _TYPMOD_TEXT.sub("", source), _TYPMOD_TEXT.sub("", target)
    if a == b or a in catalog.string_types or b in catalog.string_types:
        return True
    if a.endswith("[]") and b.endswith("[]"):
        return castable(catalog, a[:-2], b[:-2])
    return (a, b) in catalog.casts


def _build(cls: type[Any], data: Mapping[str, Any], **overrides: Any) -> Any:
    """One model object from its JSON entry: lists become tuples, absent/null keys take defaults."""
    names = _field_names(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if value is None or key not in names:
            continue  # null means "the default" (the query strips nulls anyway)
        if isinstance(value, list):
            value = tuple(sorted(_tuple(value))) if key in _SET_FIELDS else _tuple(value)
        kwargs[key] = value
    kwargs.update(overrides)
    return cls(**kwargs)


def _columns(items: Sequence[Mapping[str, Any]]) -> tuple[Column, ...]:
    ordered = sorted(items, key=lambda c: c.get("position", 0))
    return tuple(_build(Column, c) for c in ordered)


def _keyed(items: Iterable[Any]) -> dict[str, Any]:
    return {item.key: item for item in items}


def dependency_id(descriptor: Sequence[str]) -> str:
    """``[attr, schema-or-table, name(, arguments)]`` from the introspection query as ``"<attr>:<key>"``."""
    attr, owner, name, *rest = descriptor
    if attr in ("triggers", "constraints", "policies"):
        return f"{attr}:{owner}.{quote_ident(name)}"
    if attr == "columns":
        return f"columns:{qualify(owner, name)}.{quote_ident(rest[0])}"
    if attr == "operators":
        return f"operators:{quote_ident(owner)}.{name}({rest[0]})"
    key = qualify(owner, name)
    return f"{attr}:{key}({rest[0]})" if attr == "functions" else f"{attr}:{key}"


def _dependencies(pairs: Iterable[Sequence[Sequence[str]]]) -> dict[str, frozenset[str]]:
    graph: dict[str, set[str]] = {}
    for dependent, referenced in pairs:
        source = dependency_id(dependent)
        targets = {dependency_id(referenced)}
        if referenced[0] == "columns" and len(referenced) > 4:  # a column's relation too: dropping it touches all users
            targets.add(f"{referenced[4]}:{qualify(referenced[1], referenced[2])}")
        graph.setdefault(source, set()).update(targets - {source})
    return {key: frozenset(refs) for key, refs in graph.items()}


# facts about the server, not the schema
_NOT_COMPARED = frozenset({"server_version", "depends", "casts", "string_types"})


@dataclasses.dataclass(frozen=True)
class Catalog:
    """Everything structural about one database, keyed by stable identity."""

    schemas: dict[str, Schema] = dataclasses.field(default_factory=dict)
    extensions: dict[str, Extension] = dataclasses.field(default_factory=dict)
    tables: dict[str, Table] = dataclasses.field(default_factory=dict)
    views: dict[str, View] = dataclasses.field(default_factory=dict)
    constraints: dict[str, Constraint] = dataclasses.field(default_factory=dict)
    indexes: dict[str, Index] = dataclasses.field(default_factory=dict)
    sequences: dict[str, Sequence_] = dataclasses.field(default_factory=dict)
    functions: dict[str, Function] = dataclasses.field(default_factory=dict)
    triggers: dict[str, Trigger] = dataclasses.field(default_factory=dict)
    types: dict[str, Type] = dataclasses.field(default_factory=dict)
    policies: dict[str, Policy] = dataclasses.field(default_factory=dict)
    collations: dict[str, Collation] = dataclasses.field(default_factory=dict)
    text_search_dicts: dict[str, TextSearchDictionary] = dataclasses.field(default_factory=dict)
    text_search_configs: dict[str, TextSearchConfig] = dataclasses.field(default_factory=dict)
    statistics: dict[str, Statistics] = dataclasses.field(default_factory=dict)
    operators: dict[str, Operator] = dataclasses.field(default_factory=dict)
    operator_families: dict[str, OperatorFamily] = dataclasses.field(default_factory=dict)
    operator_classes: dict[str, OperatorClass] = dataclasses.field(default_factory=dict)
    server_version: int | None = None
    # "<attr>:<key>" -> what it depends on (pg_depend), e.g. "views:public.v" -> {"tables:public.t", ...}; not compared
    depends: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    # explicit casts the server knows, (source, target) without typmods; with ``strings``, which need none; not compared
    casts: frozenset[tuple[str, str]] = frozenset()
    string_types: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Catalog:
        """Build the model from the introspection document (pure: tests feed it JSON)."""
        return cls(
            schemas=_keyed(_build(Schema, s) for s in doc.get("schemas", [])),
            extensions=_keyed(_build(Extension, e) for e in doc.get("extensions", [])),
            tables=_keyed(_build(Table, t, columns=_columns(t.get("columns", []))) for t in doc.get("tables", [])),
            views=_keyed(_build(View, v, columns=_columns(v.get("columns", []))) for v in doc.get("views", [])),
            constraints=_keyed(_build(Constraint, c) for c in doc.get("constraints", [])),
            indexes=_keyed(_build(Index, i) for i in doc.get("indexes", [])),
            sequences=_keyed(_build(Sequence_, s) for s in doc.get("sequences", [])),
            functions=_keyed(_build(Function, f) for f in doc.get("functions", [])),
            triggers=_keyed(_build(Trigger, t) for t in doc.get("triggers", [])),
            types=_keyed(_build(Type, t) for t in doc.get("types", [])),
            policies=_keyed(_build(Policy, p) for p in doc.get("policies", [])),
            collations=_keyed(_build(Collation, c) for c in doc.get("collations", [])),
            text_search_dicts=_keyed(_build(TextSearchDictionary, d) for d in doc.get("text_search_dicts", [])),
            text_search_configs=_keyed(_build(TextSearchConfig, c) for c in doc.get("text_search_configs", [])),
            statistics=_keyed(_build(Statistics, st) for st in doc.get("statistics", [])),
            operators=_keyed(_build(Operator, o) for o in doc.get("operators", [])),
            operator_families=_keyed(_build(OperatorFamily, f) for f in doc.get("operator_families", [])),
            operator_classes=_keyed(_build(OperatorClass, c) for c in doc.get("operator_classes", [])),
            server_version=doc.get("server_version"),
            depends=_dependencies(doc.get("depends", [])),
            casts=frozenset((source, target) for source, target in (doc.get("casts") or {}).get("pairs") or ()),
            string_types=frozenset((doc.get("casts") or {}).get("strings") or ()),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Catalog):
            return NotImplemented
        return all(
            getattr(self, f.name) == getattr(other, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _NOT_COMPARED
        )

    __hash__ = None  # type: ignore[assignment]

    def stats(self) -> dict[str, int]:
        """Object counts for ``inv extract`` (from the catalog, never from grepping a dump)."""
        table_constraints = [c for c in self.constraints.values() if not c.on_domain]
        by_type = {letter: sum(1 for c in table_constraints if c.type == letter) for letter in "pfucx"}
        type_kinds = [t.kind for t in self.types.values()]
        return {
            "schemas": len(self.schemas),
            "tables": len(self.tables),
            "columns": sum(len(t.columns) for t in self.tables.values()),
            "indexes": len(self.indexes),
            "primary_keys": by_type["p"],
            "foreign_keys": by_type["f"],
            "unique_constraints": by_type["u"],
            "check_constraints": by_type["c"],
            "exclude_constraints": by_type["x"],
            "views": sum(1 for v in self.views.values() if not v.materialized),
            "materialized_views": sum(1 for v in self.views.values() if v.materialized),
            "sequences": len(self.sequences),
            "functions": sum(1 for f in self.functions.values() if f.kind != "p"),
            "procedures": sum(1 for f in self.functions.values() if f.kind == "p"),
            "triggers": len(self.triggers),
            "enum_types": type_kinds.count("enum"),
            "composite_types": type_kinds.count("composite"),
            "domain_types": type_kinds.count("domain"),
            "extensions": len(self.extensions),
            "policies": len(self.policies),
            "collations": len(self.collations),
            "text_search_configurations": len(self.text_search_configs),
            "text_search_dictionaries": len(self.text_search_dicts),
        }


# ---------------------------------------------------------------- reading it


def introspect(
    remote: QueryRunner,
    database: str | None = None,
    *,
    exclude_tables: Iterable[str] = DEFAULT_EXCLUDED_TABLES,
    dependencies: bool = False,
) -> Catalog:
    """Read one database's catalog in a single round trip."""
    doc = remote.query_json(introspection_sql(exclude_tables, dependencies=dependencies), database)
    if not isinstance(doc, dict):
        raise RemoteError("introspection returned an unexpected document")
    return Catalog.from_json(doc)


def _conninfo(database: str) -> str:
    """``dbname='…'``: a bare \\connect argument containing ``=`` would be read as a connection string."""
    return "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _psql_quote(value: str) -> str:
    """A psql meta-command argument: backslashes are escapes there, quotes are doubled."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def introspect_many(
    remote: QueryRunner,
    databases: Sequence[str],
    *,
    exclude_tables: Iterable[str] = DEFAULT_EXCLUDED_TABLES,
    dependencies: bool = False,
) -> dict[str, Catalog]:
    """Read several databases' catalogs in one psql session (one round trip)."""
    if not databases:
        return {}
    sql = introspection_sql(exclude_tables, dependencies=dependencies)
    mark = Markers()
    parts = []
    for index, name in enumerate(databases):
        parts.append(
            f"\\connect -reuse-previous=on {_psql_quote(_conninfo(name))}\n{mark.psql('catalog', str(index))}\n{sql}"
        )
    result = remote.psql("".join(parts), databases[0], extra=["-A", "-t"])
    return _split_many(result.stdout.decode("utf-8"), databases, mark)


def _split_many(text: str, databases: Sequence[str], mark: Markers) -> dict[str, Catalog]:
    import json

    catalogs: dict[str, Catalog] = {}
    for name, body in zip(databases, mark.numbered(text, "catalog", len(databases)), strict=True):
        if not body:
            raise RemoteError(f"introspection of {name} returned no result")
        catalogs[name] = Catalog.from_json(json.loads(body))
    return catalogs
