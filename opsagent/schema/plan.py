"""The migration that turns a live database into the desired structure, from two catalogs.

``generate_plan`` is pure: it reads two ``Catalog`` models (full deparsed
definitions and pg_depend's edges included) and emits statements in phases so that
dependents (views, functions with SQL bodies, triggers, policies, constraints,
indexes) are dropped before what they depend on changes and recreated after; which
objects are dependents, and the order among views, comes from pg_depend.  Statements
that lose data are marked destructive and left commented out unless ``allow_drop``.
A plan has three stages (``STAGES``): enum values the transaction uses, one
transaction, then ``CREATE INDEX CONCURRENTLY`` builds.  A plan is a list of typed
operations (``opsagent.schema.operations``: action, object, lock, stage); its text is
written by ``opsagent.schema.render``.  Whether a plan is right is decided by applying
it (``opsagent.schema.declarative``), never by reading its text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from functools import partial
from typing import Any

import pglast

from ..sqlquote import literal, qualify, quote_ident
from . import render
from .catalog import (
    Catalog,
    Collation,
    Column,
    Constraint,
    Function,
    Index,
    Operator,
    OperatorClass,
    Privilege,
    Sequence_,
    Table,
    TextSearchConfig,
    TextSearchDictionary,
    Type,
    View,
    castable,
)
from .compare import equivalent
from .operations import STAGES as STAGES  # re-exported: where callers found them
from .operations import PlanStatement as PlanStatement
from .render import HEADER as HEADER

# phases, in the order their statements run
PHASES = (
    "drop dependents",
    "drop operator classes",
    "drop functions",
    "drop tables",
    "schemas",
    "extensions",
    "collations",
    "text search",
    "types",
    "sequences",
    "functions",
    "operators",
    "tables",
    "columns",
    "table functions",
    "late operators",
    "operator classes",
    "constraints",
    "indexes",
    "foreign keys",
    "views",
    "view functions",
    "triggers",
    "policies",
    "comments",
    "privileges",
    "drops",
    "drop types",
    "drop text search",
    "drop collations",
    "drop schemas",
    "concurrent indexes",
)
_PHASE_RANK = {name: index for index, name in enumerate(PHASES)}


@dataclasses.dataclass(frozen=True)
class Plan:
    """The operations, in the order they run (phases, then stages), and what the plan leaves to the user."""

    statements: list[PlanStatement]
    warnings: list[str]

    @property
    def is_empty(self) -> bool:
        return not self.statements

    def executable(self) -> list[PlanStatement]:
        return [s for s in self.statements if s.enabled]

    def body(self, stage: str = "main") -> str:
        """One stage's statements as text (``render.body``)."""
        return render.body(self.statements, stage)

    def script(self) -> str:
        """The SQL to run (``render.script``): enum values first, one transaction, then concurrent builds."""
        return render.script(self.statements)

    def to_dict(self) -> dict[str, Any]:
        return {"statements": [s.to_dict() for s in self.statements], "warnings": list(self.warnings)}


def _same(before: str | None, after: str | None, what: str = "statement") -> bool:
    """Equal texts, or texts PostgreSQL's parser reads as the same structure (``AT TIME ZONE`` vs ``timezone()``)."""
    return before == after or equivalent(before, after, what)


# ---------------------------------------------------------------- the builder


class _Builder:
    """Collects operations by phase; decides which run (``--allow-drop``, ``manual``) and the warnings."""

    def __init__(self, allow_drop: bool, unseen: Collection[str] = ()) -> None:
        self.allow_drop = allow_drop
        self.unseen = set(unseen)  # relations this plan creates: statements on them wait on nobody
        self.items: list[tuple[int, int, PlanStatement]] = []
        self.warnings: list[str] = []

    def add(
        self,
        phase: str,
        kind: str,
        sql: str,
        *,
        action: str,
        name: str,
        variant: str = "",
        on: str | None = None,
        destructive: bool = False,
        warning: str | None = None,
        stage: str = "main",
        manual: str | None = None,
        adds_enum_value: str | None = None,
        rerunnable: str | None = None,
    ) -> None:
        """One operation on ``name``; ``on``: the relation whose lock it takes, when not ``name`` itself.

        ``manual`` (what the user must supply) leaves it commented out whatever the options.
        """
        enabled = (self.allow_drop or not destructive) and manual is None
        if manual is not None:
            self.warnings.append(f"{warning or manual} (commented out: {manual})")
        elif destructive and warning:
            self.warnings.append(warning + ("" if enabled else " (commented out: needs --allow-drop)"))
        statement = PlanStatement(
            sql.rstrip().rstrip(";") + ";",
            kind,
            phase,
            destructive,
            enabled,
            stage,
            manual,
            action,
            name,
            variant,
            on is not None and on in self.unseen,
            adds_enum_value,
            rerunnable and rerunnable.rstrip().rstrip(";") + ";",
        )
        self.items.append((_PHASE_RANK[phase], len(self.items), statement))

    def added(self, phase: str, kind: str) -> list[PlanStatement]:
        """The operations added so far in one phase on one kind of object."""
        return [s for _, _, s in self.items if s.phase == phase and s.kind == kind]

    def plan(self) -> Plan:
        return Plan(
            _stage_enum_values([s for _, _, s in sorted(self.items, key=lambda t: (t[0], t[1]))]), self.warnings
        )


def _stage_enum_values(statements: list[PlanStatement]) -> list[PlanStatement]:
    """Enum values the transaction uses are added before it (PostgreSQL refuses a value added in the same transaction).

    All of them move together (one may be placed AFTER another), as ``IF NOT EXISTS`` so a rerun is harmless.
    Whether a later statement uses a value is the one question no field answers: a deparsed default, CHECK, view
    or function body may hold the value's literal anywhere, so that statement's text is searched for it.
    """
    added = [(i, st.adds_enum_value) for i, st in enumerate(statements) if st.adds_enum_value is not None]
    used = any(
        value in later.sql
        for i, value in added
        for later in statements[i + 1 :]
        if later.transactional and later.enabled
    )
    if not used:
        return statements
    moved = {i for i, _ in added}
    early = [
        dataclasses.replace(statements[i], stage="before", sql=statements[i].rerunnable or statements[i].sql)
        for i in sorted(moved)
    ]
    return early + [st for i, st in enumerate(statements) if i not in moved]


# ---------------------------------------------------------------- helpers

_SAFE_WIDENINGS = {
    ("smallint", "integer"),
    ("smallint", "bigint"),
    ("integer", "bigint"),
    ("real", "double precision"),
    ("character varying", "text"),
    ("character", "text"),
    ("timestamp without time zone", "timestamp with time zone"),
}
_TYPMOD = re.compile(r"^(character varying|character|numeric|varchar)\((\d+)(?:,(\d+))?\)$")


def lossless(old: str, new: str) -> bool:
    """Whether changing a column's type from ``old`` to ``new`` keeps every value."""
    if old == new or (old, new) in _SAFE_WIDENINGS:
        return True
    base_old, base_new = re.sub(r"\(.*\)$", "", old), re.sub(r"\(.*\)$", "", new)
    if (base_old, base_new) in _SAFE_WIDENINGS:
        return True
    a, b = _TYPMOD.match(old), _TYPMOD.match(new)
    if base_old == base_new and a and not b:
        return True  # varchar(10) -> varchar
    if a and b and a.group(1) == b.group(1):
        if a.group(1) == "numeric":
            return int(b.group(2)) - int(b.group(3) or 0) >= int(a.group(2)) - int(a.group(3) or 0) and int(
                b.group(3) or 0
            ) >= int(a.group(3) or 0)
        return int(b.group(2)) >= int(a.group(2))
    return False


_INT_RANGES = {
    "smallint": (-32768, 32767),
    "integer": (-2147483648, 2147483647),
    "bigint": (-9223372036854775808, 9223372036854775807),
}
_IDENTITY_WORDS = ("START WITH", "INCREMENT BY", "MINVALUE", "MAXVALUE", "CACHE")


def identity_defaults(column_type: str, increment: int) -> tuple[int, int, int, int, int, bool]:
    """What ``GENERATED ... AS IDENTITY`` without options gives a column of this type (ascending or descending)."""
    low, high = _INT_RANGES.get(column_type, _INT_RANGES["bigint"])
    minimum, maximum = (1, high) if increment > 0 else (low, -1)
    return (minimum if increment > 0 else maximum, 1, minimum, maximum, 1, False)


def identity_options(
    column: Column, base: tuple[int, int, int, int, int, bool] | None = None, prefix: str = ""
) -> list[str]:
    """The identity sequence's options that differ from ``base`` (by default: what the column's type gives
    without options)."""
    seq = column.identity_sequence
    if seq is None:
        return []
    if base is None:
        base = identity_defaults(column.type, seq[1])
    out = [
        f"{prefix}{word} {value}"
        for word, value, was in zip(_IDENTITY_WORDS, seq[:5], base[:5], strict=True)
        if value != was
    ]
    if seq[5] != base[5]:
        out.append(f"{prefix}{'CYCLE' if seq[5] else 'NO CYCLE'}")
    return out


def identity_sql(column: Column) -> str:
    """``GENERATED {ALWAYS|BY DEFAULT} AS IDENTITY`` with the sequence options the column's sequence has."""
    options = identity_options(column)
    return f"GENERATED {(column.identity or 'by default').upper()} AS IDENTITY" + (
        f" ({' '.join(options)})" if options else ""
    )


def column_sql(column: Column) -> str:
    """A column as written in CREATE TABLE / ADD COLUMN."""
    parts = [quote_ident(column.name), column.type]
    if column.collation:
        parts.append(f"COLLATE {column.collation}")
    if column.generated:
        parts.append(f"GENERATED ALWAYS AS ({column.generated}) STORED")
    elif column.default is not None:
        parts.append(f"DEFAULT {column.default}")
    if column.identity:
        parts.append(identity_sql(column))
    if column.not_null:
        parts.append("NOT NULL")
    return " ".join(parts)


def _references(text: str, key: str) -> bool:
    """Whether deparsed SQL names ``key`` (a schema-qualified name) as a whole word."""
    return re.search(r"(?<![\w.\"])" + re.escape(key) + r"(?![\w\"])", text) is not None


def _dependency_order(keys: Iterable[str], needs: Callable[[str], Iterable[str]]) -> list[str]:
    """``keys`` sorted, each after what ``needs(key)`` names (depth first; a cycle, which PostgreSQL forbids,
    is cut)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(key: str) -> None:
        if key in seen:
            return
        seen.add(key)
        for other in needs(key):
            visit(other)
        order.append(key)

    for key in sorted(keys):
        visit(key)
    return order


def _view_order(views: Mapping[str, View], depends: Mapping[str, frozenset[str]] | None = None) -> list[str]:
    """Views ordered so that each comes after the views it depends on (pg_depend when known, else the names
    in its text)."""

    def needs(key: str) -> list[str]:
        if depends:
            return sorted(
                ref[6:] for ref in depends.get(f"views:{key}", ()) if ref.startswith("views:") and ref[6:] in views
            )
        return [other for other in views if other != key and _references(views[key].definition, other)]

    return _dependency_order(views, needs)


def _table_order(tables: Mapping[str, Table]) -> list[str]:
    """Parents (partitioned tables, inheritance parents) before their children."""

    def needs(key: str) -> list[str]:
        table = tables[key]
        return [
            candidate
            for parent in (table.partition_of, *table.inherits)
            if parent
            for candidate in tables
            if candidate == parent or candidate.endswith("." + parent) or parent.endswith(candidate)
        ]

    return _dependency_order(tables, needs)


_COMMAND = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}


def policy_sql(policy: Any) -> str:
    roles = ", ".join(r if r == "PUBLIC" else quote_ident(r) for r in policy.roles) or "PUBLIC"
    sql = (
        f"CREATE POLICY {quote_ident(policy.name)} ON {policy.table} "
        f"AS {'PERMISSIVE' if policy.permissive else 'RESTRICTIVE'} "
        f"FOR {_COMMAND.get(policy.command, 'ALL')} TO {roles}"
    )
    if policy.using is not None:
        sql += f" USING ({policy.using})"
    if policy.with_check is not None:
        sql += f" WITH CHECK ({policy.with_check})"
    return sql


def type_sql(item: Type) -> str:
    name = item.key
    if item.kind == "enum":
        return f"CREATE TYPE {name} AS ENUM ({', '.join(literal(v) for v in item.labels or ())})"
    if item.kind == "composite":
        return f"CREATE TYPE {name} AS ({', '.join(f'{quote_ident(n)} {t}' for n, t in item.attributes or ())})"
    if item.kind == "range":
        return f"CREATE TYPE {name} AS RANGE (SUBTYPE = {item.base_type})"
    sql = f"CREATE DOMAIN {name} AS {item.base_type}"
    if item.collation:
        sql += f" COLLATE {item.collation}"
    if item.default is not None:
        sql += f" DEFAULT {item.default}"
    if item.not_null:
        sql += " NOT NULL"
    return sql


def function_sql(item: Function) -> str:
    if item.kind in ("f", "p") and item.definition:
        return item.definition
    spec = json.loads(item.definition or "{}")
    parts = [f"SFUNC = {spec['transition']}", f"STYPE = {spec['state']}"]
    if spec.get("final") and spec["final"] != "-":
        parts.append(f"FINALFUNC = {spec['final']}")
    if spec.get("combine") and spec["combine"] != "-":
        parts.append(f"COMBINEFUNC = {spec['combine']}")
    if spec.get("initial") is not None:
        parts.append(f"INITCOND = {literal(spec['initial'])}")
    return f"CREATE AGGREGATE {qualify(item.schema, item.name)}({item.arguments or '*'}) ({', '.join(parts)})"


def _drop_function(item: Function) -> str:
    word = {"p": "PROCEDURE", "a": "AGGREGATE"}.get(item.kind, "FUNCTION")
    return f"DROP {word} {item.key}"


def constraint_sql(item: Constraint) -> str:
    if item.on_domain:
        return f"ALTER DOMAIN {item.table} ADD CONSTRAINT {quote_ident(item.name)} {item.definition}"
    return f"ALTER TABLE {item.table} ADD CONSTRAINT {quote_ident(item.name)} {item.definition}"


def _drop_constraint(item: Constraint) -> str:
    word = "DOMAIN" if item.on_domain else "TABLE"
    return f"ALTER {word} {item.table} DROP CONSTRAINT {quote_ident(item.name)}"


def sequence_sql(item: Sequence_, create: bool = True) -> str:
    head = f"CREATE SEQUENCE {item.key} AS {item.type}" if create else f"ALTER SEQUENCE {item.key} AS {item.type}"
    return (
        f"{head} INCREMENT BY {item.increment} MINVALUE {item.min} MAXVALUE {item.max} START WITH {item.start} "
        f"CACHE {item.cache} {'CYCLE' if item.cycle else 'NO CYCLE'}"
    )


def table_sql(table: Table) -> str:
    own = [c for c in table.columns if not c.inherited]
    unlogged = "UNLOGGED " if table.persistence == "u" else ""
    if table.kind == "f":
        raise ValueError("foreign tables are not planned")
    if table.partition_of:
        sql = f"CREATE {unlogged}TABLE {table.key} PARTITION OF {table.partition_of}"
        defaults = [c for c in table.columns if c.inherited]
        del defaults  # partition columns come from the parent
        sql += f" {table.partition_bound}"
    else:
        body = ",\n    ".join(column_sql(c) for c in own)
        sql = (
            f"CREATE {unlogged}TABLE {table.key} (\n    {body}\n)" if own else f"CREATE {unlogged}TABLE {table.key} ()"
        )
        if table.inherits:
            sql += f" INHERITS ({', '.join(table.inherits)})"
    if table.partition_key:
        sql += f" PARTITION BY {table.partition_key}"
    if table.options:
        sql += f" WITH ({', '.join(table.options)})"
    return sql


# ---------------------------------------------------------------- privileges and comments


def _grantee(name: str, owner: str | None) -> str:
    if name == "PUBLIC":
        return "PUBLIC"
    if name == "<owner>":
        return quote_ident(owner) if owner else "CURRENT_USER"
    return quote_ident(name)


def privilege_sql(
    target: str, before: Iterable[Privilege], after: Iterable[Privilege], owner: str | None, columns: str = ""
) -> list[tuple[str, str]]:
    """GRANT/REVOKE turning one ACL (as introspected: differences from the defaults) into another: (action, SQL)."""
    old, new = set(before), set(after)
    out: list[tuple[str, str]] = []
    cols = f" ({columns})" if columns else ""
    for grantee, privilege, grantable in sorted(old - new):
        who = _grantee(grantee, owner)
        if privilege.startswith("no "):
            option = " WITH GRANT OPTION" if grantable else ""
            out.append(("grant", f"GRANT {privilege[3:]}{cols} ON {target} TO {who}{option}"))
        elif not (grantable and (grantee, privilege, False) in new):
            out.append(("revoke", f"REVOKE {privilege}{cols} ON {target} FROM {who}"))
    for grantee, privilege, grantable in sorted(new - old):
        who = _grantee(grantee, owner)
        if privilege.startswith("no "):
            out.append(("revoke", f"REVOKE {privilege[3:]}{cols} ON {target} FROM {who}"))
        elif grantable:
            out.append(("grant", f"GRANT {privilege}{cols} ON {target} TO {who} WITH GRANT OPTION"))
        elif (grantee, privilege, True) in old:
            out.append(("revoke", f"REVOKE GRANT OPTION FOR {privilege}{cols} ON {target} FROM {who}"))
        else:
            out.append(("grant", f"GRANT {privilege}{cols} ON {target} TO {who}"))
    return out


# ---------------------------------------------------------------- the plan


def generate_plan(
    live: Catalog, desired: Catalog, *, allow_drop: bool = False, concurrent_tables: Collection[str] = ()
) -> Plan:
    """Statements turning ``live`` into ``desired``, in dependency-safe phases (pure).

    New indexes on the existing tables named in ``concurrent_tables`` are built
    ``CONCURRENTLY`` after the transactional part (writes go on meanwhile).
    """
    ctx = _Context(live, desired)
    ctx.concurrent_tables = set(concurrent_tables)
    b = _Builder(allow_drop, _created_relations(ctx))
    _plan_types_and_schemas(b, ctx)
    _plan_collations_and_text_search(b, ctx)
    _plan_tables(b, ctx)  # before sequences: a rebuilt table's sequences are owned anew
    _plan_sequences(b, ctx)
    _plan_operators(b, ctx)
    _plan_operator_classes(b, ctx)
    _plan_functions(b, ctx)
    _plan_constraints(b, ctx)
    _plan_views(b, ctx)
    _plan_indexes(b, ctx)
    _plan_statistics(b, ctx)
    _plan_index_settings(b, ctx)
    _plan_triggers_policies(b, ctx)
    _plan_comments(b, ctx)
    _plan_privileges(b, ctx)
    return b.plan()


def _created_relations(ctx: _Context) -> set[str]:
    """Tables and views this plan creates (new, rebuilt, or dropped and created again): nobody else can see them yet."""
    return (
        (ctx.desired.tables.keys() - ctx.live.tables.keys())
        | ctx.rebuilt_tables
        | (ctx.desired.views.keys() - ctx.live.views.keys())
        | ctx.rebuilt_views
    )


class _Context:
    """Both catalogs plus what the phases decide together (which tables/types change shape)."""

    def __init__(self, live: Catalog, desired: Catalog) -> None:
        self.live = live
        self.desired = desired
        self.reshaped: set[str] = set()  # tables/types whose columns change type or go away: dependents rebuilt
        self.recreated_types: set[str] = set()
        self.dropped_functions: set[str] = set()
        self.recreated: set[str] = set()  # "<attr>:<key>" of objects dropped and created again (comments lost)
        self.recreated_views: set[str] = set()
        self.created_views: set[str] = set()
        self.reowned: set[str] = set()  # sequences whose owning table is rebuilt
        self.dropped_sequences: set[str] = set()  # owned sequences already dropped (making room for an identity's)
        self.concurrent_tables: set[str] = set()  # existing tables whose new indexes are built CONCURRENTLY
        self.concurrent_indexes: set[str] = set()
        self.rebuilt_indexes: set[str] = set()
        self.changed_columns: set[str] = (
            set()
        )  # "columns:<table>.<column>" dropped or changing type (pg_depend's roots)
        for key, table in live.tables.items():
            other = desired.tables.get(key)
            if other is None:
                self.reshaped.add(key)
                continue
            after = other.column_map()
            for column in table.columns:
                new = after.get(column.name)
                if (
                    new is None
                    or new.type != column.type
                    or new.generated != column.generated
                    or new.collation != column.collation
                ):
                    self.reshaped.add(key)
                    self.changed_columns.add(f"columns:{key}.{quote_ident(column.name)}")
        self.rebuilt_tables = {
            key
            for key, table in live.tables.items()
            if key in desired.tables and _needs_rebuild(table, desired.tables[key])
        }
        self.reshaped |= self.rebuilt_tables
        for key in self.rebuilt_tables | (live.tables.keys() - desired.tables.keys()):
            self.changed_columns |= {f"columns:{key}.{quote_ident(c.name)}" for c in live.tables[key].columns}
        self.detached = {
            c.key for c in live.tables.values() if c.partition_of in self.rebuilt_tables
        }  # from a rebuilt parent
        for key, item in live.types.items():
            new_type = desired.types.get(key)
            if new_type is None or (new_type != item and not _altered_in_place(item, new_type)):
                self.reshaped.add(key)
                if new_type is not None:
                    self.recreated_types.add(key)
        for key, func in live.functions.items():
            new_func = desired.functions.get(key)
            redefined = (
                new_func is not None
                and dataclasses.replace(new_func, comment=func.comment, privileges=func.privileges) != func
            )
            if new_func is None or (
                redefined and (new_func.result != func.result or new_func.kind != func.kind or func.kind == "a")
            ):
                self.dropped_functions.add(key)
        # tables whose columns use a recreated type are reshaped too
        for key, table in desired.tables.items():
            if any(_uses_type(c.type, t) for c in table.columns for t in self.recreated_types):
                self.reshaped.add(key)
        self.changed_views = {key for key, view in live.views.items() if _view_changed(view, desired.views.get(key))}
        self.affected = self._dependents_of_changes()
        # functions whose recorded dependencies change (a SQL-standard body reading a rebuilt view, an argument of a
        # recreated type) are dropped first and created again
        self.dropped_functions |= {key for key in live.functions if f"functions:{key}" in self.affected}
        self.rebuilt_views = _rebuilt_views(self)  # dropped and created again (after the functions they need)

    @property
    def uses_graph(self) -> bool:
        """Whether pg_depend's edges are known (introspected catalogs); hand-built ones fall back to name scanning."""
        return bool(self.live.depends)

    def _dependents_of_changes(self) -> set[str]:
        """Every live object that depends (directly or not, per pg_depend) on something dropped or reshaped."""
        whole = self.rebuilt_tables | (self.live.tables.keys() - self.desired.tables.keys())
        roots = (
            {f"tables:{k}" for k in whole}
            | self.changed_columns
            | {f"types:{k}" for k in self.reshaped | self.recreated_types}
            | {f"functions:{k}" for k in self.dropped_functions}
            | {f"views:{k}" for k in self.changed_views}
        )
        dependents: dict[str, set[str]] = {}
        for obj, refs in self.live.depends.items():
            for ref in refs:
                dependents.setdefault(ref, set()).add(obj)
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            for obj in dependents.get(todo.pop(), ()):
                # tables, sequences and types stay (their own changes are roots): what depends on them does not change
                if obj not in seen and obj.split(":", 1)[0] not in ("tables", "sequences", "types"):
                    seen.add(obj)
                    todo.append(obj)
        return seen

    def is_affected(self, attr: str, key: str) -> bool:
        return f"{attr}:{key}" in self.affected

    def rebuilt_with(self, attr: str, key: str, table: str) -> bool:
        """Whether an object on ``table`` is dropped and recreated because of what changes under it.

        With pg_depend: when it depends on a changing column, type, function or view (or
        its table is rebuilt), so dropping one unused column rebuilds nothing else.
        Without: whenever its table changes shape.
        """
        if self.uses_graph:
            return table in self.rebuilt_tables or self.is_affected(attr, key)
        return table in self.reshaped


def _altered_in_place(old: Type, new: Type) -> bool:
    """Enum values appended, a domain's default or NOT NULL, a comment: no need to recreate the type."""
    if _enum_appendable(old, new) or dataclasses.replace(old, comment=new.comment) == new:
        return True
    return old.kind == "domain" and new.kind == "domain" and old.base_type == new.base_type


def _view_changed(view: View, other: View | None) -> bool:
    """The view's own definition or options change (not a comment or privilege)."""
    if other is None:
        return True
    same_shape = dataclasses.replace(
        view, comment=other.comment, privileges=other.privileges, definition=other.definition, columns=view.columns
    ) == dataclasses.replace(other, columns=view.columns)
    return not same_shape or not _same(view.definition, other.definition)


def _uses_type(column_type: str, type_key: str) -> bool:
    base = column_type.removesuffix("[]")
    return base == type_key or "public." + base == type_key


def _is_user_type(ctx: _Context, type_name: str) -> bool:
    """Enums and other user types cast to each other only through text."""
    keys = ctx.live.types.keys() | ctx.desired.types.keys()
    base = type_name.removesuffix("[]")
    return base in keys or f"public.{base}" in keys


def _enum_appendable(old: Type, new: Type) -> bool:
    """Whether ``new``'s labels are ``old``'s with values inserted (ALTER TYPE ... ADD VALUE suffices)."""
    if old.kind != "enum" or new.kind != "enum" or dataclasses.replace(old, labels=new.labels) != new:
        return False
    labels = list(new.labels or ())
    positions = [labels.index(v) if v in labels else -1 for v in old.labels or ()]
    return -1 not in positions and positions == sorted(positions)


def _drop_extra(
    b: _Builder,
    phase: str,
    kind: str,
    live: Iterable[str],
    desired: Collection[str],
    sql: Callable[[str], str],
    *,
    kept: Callable[[str], bool] = lambda key: False,
    warning: Callable[[str], str] | None = None,
) -> None:
    """The drop step the kinds share: what only the live side has (in ``live``'s order), destructive.

    ``kept``: objects that go without a statement of their own (with their table or owner).
    """
    for key in live:
        if key not in desired and not kept(key):
            why = warning(key) if warning is not None else f"drops {kind} {key}"
            b.add(phase, kind, sql(key), action="drop", name=key, destructive=True, warning=why)


def _drop_to_recreate(
    b: _Builder, ctx: _Context, attr: str, phase: str, kind: str, key: str, sql: str, why: str | None = None
) -> None:
    """The first half of the recreate step the kinds share: dropped now, created again later in the plan
    (``_is_created``), its comment and privileges starting from the defaults.

    ``why``: it cannot be altered in place, and the drop fails while other objects use it (destructive: shown
    commented out without --allow-drop).
    """
    warning = None if why is None else f"recreates {kind} {key} ({why})"
    b.add(phase, kind, sql, action="drop", name=key, destructive=why is not None, warning=warning)
    ctx.recreated.add(f"{attr}:{key}")


def _is_created(ctx: _Context, attr: str, key: str) -> bool:
    """Whether the plan creates the object: new, or dropped to be created again (``_drop_to_recreate``)."""
    return key not in getattr(ctx.live, attr) or f"{attr}:{key}" in ctx.recreated


def _plan_types_and_schemas(b: _Builder, ctx: _Context) -> None:
    live, desired = ctx.live, ctx.desired
    for key in desired.schemas:
        if key not in live.schemas:
            # IF NOT EXISTS: the ledger's own schema (ledger_schema) is hidden from the model while it holds
            # only the ledger
            b.add("schemas", "schema", f"CREATE SCHEMA IF NOT EXISTS {key}", action="create", name=key)
    # extensions before the schemas: an extension's objects may live in one of them
    _drop_extra(
        b,
        "drop schemas",
        "extension",
        live.extensions,
        desired.extensions,
        lambda k: f"DROP EXTENSION {quote_ident(k)}",
    )
    _drop_extra(b, "drop schemas", "schema", live.schemas, desired.schemas, lambda k: f"DROP SCHEMA {k}")
    for key, ext in desired.extensions.items():
        current = live.extensions.get(key)
        add = partial(b.add, "extensions", "extension", name=key)
        if current is None:
            add(
                f"CREATE EXTENSION {quote_ident(ext.name)} WITH SCHEMA {quote_ident(ext.schema)} "
                f"VERSION {literal(ext.version)}",
                action="create",
            )
        elif current.version != ext.version:
            add(f"ALTER EXTENSION {quote_ident(ext.name)} UPDATE TO {literal(ext.version)}", action="alter")
        if current is not None and current.schema != ext.schema:
            add(f"ALTER EXTENSION {quote_ident(ext.name)} SET SCHEMA {quote_ident(ext.schema)}", action="alter")
    _plan_types(b, ctx)


# ---------------------------------------------------------------- collations and text search


def collation_sql(item: Collation) -> str:
    """CREATE COLLATION with every property the catalog records (the library version is the server's own)."""
    parts = [f"provider = {item.provider}"]
    if item.provider in ("icu", "builtin"):
        parts.append(f"locale = {literal(item.locale or '')}")
    else:
        parts += [f"lc_collate = {literal(item.lc_collate or '')}", f"lc_ctype = {literal(item.lc_ctype or '')}"]
    if not item.deterministic:
        parts.append("deterministic = false")
    if item.rules is not None:
        parts.append(f"rules = {literal(item.rules)}")
    return f"CREATE COLLATION {item.key} ({', '.join(parts)})"


def text_search_dictionary_sql(item: TextSearchDictionary) -> str:
    options = f", {item.options}" if item.options else ""
    return f"CREATE TEXT SEARCH DICTIONARY {item.key} (TEMPLATE = {item.template}{options})"


_OPTION_NAME = re.compile(r"(?:^|,\s*)(\w+)\s*=")


def _option_names(options: str | None) -> list[str]:
    """Option names in ``dictinitoption`` text (``name = 'value', ...``; values are quoted, so ``=`` inside them
    is not matched first)."""
    names: list[str] = []
    rest = options or ""
    while rest:
        match = _OPTION_NAME.match(rest)
        if match is None:
            break
        names.append(match.group(1))
        rest = rest[match.end() :].lstrip()
        if rest.startswith("'"):  # skip a quoted value ('' is an escaped quote)
            end = 1
            while end < len(rest):
                if rest[end] == "'" and rest[end + 1 : end + 2] != "'":
                    break
                end += 2 if rest[end] == "'" else 1
            rest = rest[end + 1 :]
        else:
            rest = rest[len(rest.split(",", 1)[0]) :]
    return names


def mapping_sql(key: str, before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """ALTER TEXT SEARCH CONFIGURATION statements turning one token→dictionaries mapping into another
    (token types grouped)."""
    out: list[str] = []
    dropped = sorted(before.keys() - after.keys())
    if dropped:
        out.append(f"ALTER TEXT SEARCH CONFIGURATION {key} DROP MAPPING FOR {', '.join(dropped)}")
    for verb, tokens in (
        ("ADD", sorted(after.keys() - before.keys())),
        ("ALTER", sorted(t for t in after.keys() & before.keys() if after[t] != before[t])),
    ):
        groups: dict[str, list[str]] = {}
        for token in tokens:
            groups.setdefault(after[token], []).append(token)
        for dictionaries, members in sorted(groups.items(), key=lambda kv: kv[1]):
            out.append(
                f"ALTER TEXT SEARCH CONFIGURATION {key} {verb} MAPPING FOR {', '.join(members)} WITH {dictionaries}"
            )
    return out


def text_search_config_sql(item: TextSearchConfig) -> list[str]:
    """An empty configuration on its parser, then its mappings (COPY would tie it to another configuration's
    current state)."""
    return [
        f"CREATE TEXT SEARCH CONFIGURATION {item.key} (PARSER = {item.parser})",
        *mapping_sql(item.key, {}, item.mapping_map()),
    ]


def _plan_collations_and_text_search(b: _Builder, ctx: _Context) -> None:
    """Created before the types and tables using them, dropped after everything that could."""
    live, desired = ctx.live, ctx.desired
    for key, coll in desired.collations.items():
        current = live.collations.get(key)
        changed = current is not None and dataclasses.replace(current, comment=coll.comment) != coll
        if changed:
            why = "its properties cannot be altered; fails while columns or indexes use it"
            _drop_to_recreate(b, ctx, "collations", "collations", "collation", key, f"DROP COLLATION {key}", why)
        if current is None or changed:
            b.add("collations", "collation", collation_sql(coll), action="create", name=key)
    for key, dictionary in desired.text_search_dicts.items():
        old = live.text_search_dicts.get(key)
        add = partial(b.add, "text search", "text search dictionary", name=key)
        if old is None:
            add(text_search_dictionary_sql(dictionary), action="create")
        elif old.template != dictionary.template:
            why = "its template changes; fails while configurations use it"
            sql = f"DROP TEXT SEARCH DICTIONARY {key}"
            _drop_to_recreate(b, ctx, "text_search_dicts", "text search", "text search dictionary", key, sql, why)
            add(text_search_dictionary_sql(dictionary), action="create")
        elif old.options != dictionary.options:
            names = _option_names(dictionary.options)
            removed = [n for n in _option_names(old.options) if n not in names]
            settings = ", ".join([*([dictionary.options] if dictionary.options else []), *removed])
            add(f"ALTER TEXT SEARCH DICTIONARY {key} ({settings})", action="alter")
    for key, config in desired.text_search_configs.items():
        was = live.text_search_configs.get(key)
        add = partial(b.add, "text search", "text search configuration", name=key)
        if was is not None and was.parser != config.parser:
            why = "its parser changes; fails while indexes use it"
            sql = f"DROP TEXT SEARCH CONFIGURATION {key}"
            _drop_to_recreate(b, ctx, "text_search_configs", "text search", "text search configuration", key, sql, why)
            was = None
        if was is None:
            for i, sql in enumerate(text_search_config_sql(config)):
                add(sql, action="alter" if i else "create")  # the configuration, then its mappings
        else:
            for sql in mapping_sql(key, was.mapping_map(), config.mapping_map()):
                add(sql, action="alter")
    for attr, word in (
        ("text_search_configs", "TEXT SEARCH CONFIGURATION"),
        ("text_search_dicts", "TEXT SEARCH DICTIONARY"),
        ("collations", "COLLATION"),
    ):
        phase = "drop collations" if attr == "collations" else "drop text search"
        _drop_extra(
            b, phase, word.lower(), getattr(live, attr), getattr(desired, attr), partial("DROP {} {}".format, word)
        )


def _plan_types(b: _Builder, ctx: _Context) -> None:
    live, desired = ctx.live, ctx.desired
    for key, item in desired.types.items():
        current = live.types.get(key)
        if current is None:
            b.add("types", "type", type_sql(item), action="create", name=key)
        elif key in ctx.recreated_types:  # decided once, in _Context (_altered_in_place)
            _recreate_type(b, ctx, current, item)
        elif _enum_appendable(current, item):
            _add_enum_values(b, current, item)
        elif current.kind == "domain":  # its default or NOT NULL (a comment alone is planned with the comments)
            if current.default != item.default:
                setting = f"SET DEFAULT {item.default}" if item.default is not None else "DROP DEFAULT"
                b.add("types", "type", f"ALTER DOMAIN {key} {setting}", action="alter", name=key)
            if current.not_null != item.not_null:
                word = "SET" if item.not_null else "DROP"
                b.add("types", "type", f"ALTER DOMAIN {key} {word} NOT NULL", action="alter", name=key)
    _drop_extra(b, "drop types", "type", live.types, desired.types, lambda k: f"DROP TYPE {k}")


def _add_enum_values(b: _Builder, old: Type, new: Type) -> None:
    labels = list(new.labels or ())
    present = set(old.labels or ())
    for index, value in enumerate(labels):
        if value in present:
            continue
        after = next((labels[i] for i in range(index - 1, -1, -1) if labels[i] in present), None)
        where = (
            f" AFTER {literal(after)}"
            if after is not None
            else (f" BEFORE {literal(next(v for v in labels if v in present))}" if present else "")
        )
        b.add(
            "types",
            "type",
            f"ALTER TYPE {new.key} ADD VALUE {literal(value)}{where}",
            action="alter",
            name=new.key,
            variant="enum value",
            adds_enum_value=literal(value),
            rerunnable=f"ALTER TYPE {new.key} ADD VALUE IF NOT EXISTS {literal(value)}{where}",
        )
        present.add(value)


def _recreate_type(b: _Builder, ctx: _Context, old: Type, new: Type) -> None:
    """Rename the old type away, create the new one, move columns over (values through text), drop the old."""
    temp = qualify(old.schema, old.name + "__old")
    b.add(
        "types",
        "type",
        f"ALTER TYPE {old.key} RENAME TO {quote_ident(old.name + '__old')}",
        action="rename",
        name=old.key,
    )
    b.add("types", "type", type_sql(new), action="create", name=new.key)
    lossy = old.kind != "enum" or not set(old.labels or ()) <= set(new.labels or ())
    for key, table in ctx.live.tables.items():
        wanted = ctx.desired.tables.get(key)
        if wanted is None:
            continue
        for column in table.columns:
            if column.inherited or not _uses_type(column.type, old.key):
                continue
            target = wanted.column_map().get(column.name)
            if target is None:
                continue
            col = quote_ident(column.name)
            array = "[]" if column.type.endswith("[]") else ""
            add = partial(b.add, "tables", "column", action="alter", name=f"{key}.{col}")
            if column.default is not None:
                add(f"ALTER TABLE {key} ALTER COLUMN {col} DROP DEFAULT")
            add(
                f"ALTER TABLE {key} ALTER COLUMN {col} TYPE {target.type} USING {col}::text{array}::{target.type}",
                destructive=lossy,
                warning=f"{key}.{column.name}: values of {old.key} missing from the new type are lost",
            )
            if target.default is not None:
                add(f"ALTER TABLE {key} ALTER COLUMN {col} SET DEFAULT {target.default}")
    b.add(
        "drops",
        "type",
        f"DROP TYPE {temp}",
        action="drop",
        name=temp,
        destructive=lossy,
        warning=f"drops the old definition of {old.key}",
    )


def _plan_sequences(b: _Builder, ctx: _Context) -> None:
    live, desired = ctx.live, ctx.desired
    for key, seq in desired.sequences.items():
        current = live.sequences.get(key)
        alter = partial(b.add, kind="sequence", action="alter", name=key)
        if current is not None and _dies_with_owner(ctx, current):  # kept: freed before its column goes
            alter("drop dependents", sql=f"ALTER SEQUENCE {key} OWNED BY NONE")
            current = dataclasses.replace(current, owned_by=None)
        if current is None:
            b.add("sequences", "sequence", sequence_sql(seq), action="create", name=key)
        elif dataclasses.replace(current, owned_by=seq.owned_by, comment=seq.comment, privileges=seq.privileges) != seq:
            alter("sequences", sql=sequence_sql(seq, create=False))
        if (current is None or current.owned_by != seq.owned_by or key in ctx.reowned) and (
            seq.owned_by or current is not None
        ):
            alter("constraints", sql=f"ALTER SEQUENCE {key} OWNED BY {seq.owned_by or 'NONE'}")
    # an owned sequence goes with its table or column
    gone = {k for k, seq in live.sequences.items() if k in ctx.dropped_sequences or _dies_with_owner(ctx, seq)}
    _drop_extra(
        b, "drops", "sequence", live.sequences, desired.sequences, "DROP SEQUENCE {}".format, kept=gone.__contains__
    )


def _owner_column(owned_by: str | None) -> tuple[str, str] | None:
    """``schema.table.column`` (as introspected, quoted) → (table key, column name)."""
    if not owned_by:
        return None
    table, column = owned_by.rsplit(".", 1)
    return table, unquote(column)


def _dies_with_owner(ctx: _Context, seq: Sequence_) -> bool:
    """An owned (serial) sequence is dropped by PostgreSQL with its table or column: the plan must not drop it again."""
    owner = _owner_column(seq.owned_by)
    if owner is None or owner[0] in ctx.rebuilt_tables:
        return False  # a rebuilt table's sequences are freed first (OWNED BY NONE) and owned anew
    wanted, live = ctx.desired.tables.get(owner[0]), ctx.live.tables.get(owner[0])
    if wanted is None:
        return True
    new = wanted.column_map().get(owner[1])
    old = live.column_map().get(owner[1]) if live is not None else None
    return new is None or (
        old is not None and not _same(old.generated, new.generated, "expression")
    )  # dropped and added again


def _drop_owned_sequences(b: _Builder, ctx: _Context, table: str, column: Column) -> None:
    """A serial column becoming an identity: its sequence goes first, so the identity's own can take its name."""
    owned_by = f"{table}.{quote_ident(column.name)}"
    for key, seq in ctx.live.sequences.items():
        if seq.owned_by == owned_by and key not in ctx.desired.sequences:
            b.add(
                "columns",
                "sequence",
                f"DROP SEQUENCE {key}",
                action="drop",
                name=key,
                destructive=True,
                warning=f"drops sequence {key}",
            )
            ctx.dropped_sequences.add(key)


def operator_sql(item: Operator) -> str:
    """CREATE OPERATOR with every property the catalog records (a companion not yet defined is created as a shell)."""
    parts = [
        f"FUNCTION = {item.function}",
        *([f"LEFTARG = {item.left}"] if item.left else []),
        f"RIGHTARG = {item.right}",
    ]
    if item.commutator:
        parts.append(f"COMMUTATOR = OPERATOR({item.commutator})")
    if item.negator:
        parts.append(f"NEGATOR = OPERATOR({item.negator})")
    parts += [f"{word} = {value}" for word, value in (("RESTRICT", item.restrict), ("JOIN", item.join)) if value]
    parts += [word for word, flag in (("HASHES", item.hashes), ("MERGES", item.merges)) if flag]
    return f"CREATE OPERATOR {quote_ident(item.schema)}.{item.name} ({', '.join(parts)})"


def _operator_target(item: Operator) -> str:
    return f"{quote_ident(item.schema)}.{item.name} ({item.arguments})"


def _plan_operators(b: _Builder, ctx: _Context) -> None:
    """Operators: created once their functions exist (before constraints, indexes and views), dropped before
    their functions.

    Only the estimators can be altered in place; any other change drops and creates the operator again.
    """
    for key, item in ctx.live.operators.items():
        other = ctx.desired.operators.get(key)
        if other is None:
            b.add(
                "drop functions",
                "operator",
                f"DROP OPERATOR {_operator_target(item)}",
                action="drop",
                name=key,
                destructive=True,
                warning=f"drops operator {key}",
            )
            continue
        if dataclasses.replace(item, comment=other.comment) == other and not ctx.is_affected("operators", key):
            continue
        if dataclasses.replace(
            item, comment=other.comment, restrict=other.restrict, join=other.join
        ) == other and not ctx.is_affected("operators", key):
            estimators = ", ".join(
                f"{word} = {value or 'NONE'}" for word, value in (("RESTRICT", other.restrict), ("JOIN", other.join))
            )
            sql = f"ALTER OPERATOR {_operator_target(item)} SET ({estimators})"
            b.add("operators", "operator", sql, action="alter", name=key)
            continue
        _drop_to_recreate(
            b, ctx, "operators", "drop functions", "operator", key, f"DROP OPERATOR {_operator_target(item)}"
        )
    phases = _function_phases(ctx.desired)
    for key, item in ctx.desired.operators.items():
        if _is_created(ctx, "operators", key):
            b.add(_operator_phase(ctx.desired, key, phases), "operator", operator_sql(item), action="create", name=key)


def _operator_phase(desired: Catalog, key: str, phases: Mapping[str, str]) -> str:
    """Before the tables (defaults, generated columns and CHECKs may use it), unless its function or types need
    the tables."""
    refs = desired.depends.get(f"operators:{key}", frozenset())
    late = any(r.startswith(("tables:", "views:")) for r in refs) or any(
        phases.get(r[len("functions:") :], "functions") != "functions" for r in refs if r.startswith("functions:")
    )
    return "late operators" if late else "operators"


def operator_class_sql(item: OperatorClass) -> str:
    """CREATE OPERATOR CLASS; without FAMILY when the family has its name (created with it, as PostgreSQL does)."""
    own = item.family == qualify(item.schema, item.name)
    head = (
        f"CREATE OPERATOR CLASS {qualify(item.schema, item.name)}{' DEFAULT' if item.default else ''} "
        f"FOR TYPE {item.type} USING {item.method}"
    )
    items = [*item.members, *([f"STORAGE {item.storage}"] if item.storage else [])]
    return f"{head}{'' if own else f' FAMILY {item.family}'} AS {', '.join(items)}"


_MEMBER_KEY = re.compile(r"^(OPERATOR \d+) \S+?(\([^()]*\))|^(FUNCTION \d+ \([^()]*\))")


def _member_drop(member: str) -> str:
    """``OPERATOR 5 >(integer, integer)`` → ``OPERATOR 5 (integer, integer)``, as ALTER OPERATOR FAMILY ... DROP
    names it."""
    match = _MEMBER_KEY.match(member)
    if match is None:
        return member
    return match.group(3) or f"{match.group(1)} {match.group(2)}"


def _plan_operator_classes(b: _Builder, ctx: _Context) -> None:
    """Operator families and classes: created after their operators and functions, before the indexes using them; any
    change to a class recreates it, loose family members are added and dropped one by one."""
    live, desired = ctx.live, ctx.desired
    for key, item in live.operator_classes.items():
        other = desired.operator_classes.get(key)
        family_goes = f"{item.family} USING {item.method}" not in desired.operator_families
        if other is None and family_goes:
            continue  # dropped with its family
        if other is None or dataclasses.replace(item, comment=other.comment) != other:
            b.add(
                "drop operator classes",
                "operator class",
                f"DROP OPERATOR CLASS {key}",
                action="drop",
                name=key,
                destructive=other is None,
                warning=f"drops operator class {key}",
            )
            ctx.recreated.add(f"operator_classes:{key}")
    created_with_class = {
        f"{c.family} USING {c.method}"
        for k, c in desired.operator_classes.items()
        if c.family == qualify(c.schema, c.name) and _is_created(ctx, "operator_classes", k)
    }
    for key, family in live.operator_families.items():
        wanted = desired.operator_families.get(key)
        if wanted is None:
            b.add(
                "drop operator classes",
                "operator family",
                f"DROP OPERATOR FAMILY {key}",
                action="drop",
                name=key,
                destructive=True,
                warning=f"drops operator family {key} and its classes",
            )
            continue
        for member in sorted(set(family.members) - set(wanted.members)):
            sql = f"ALTER OPERATOR FAMILY {key} DROP {_member_drop(member)}"
            b.add("drop operator classes", "operator family", sql, action="alter", name=key)
    for key, family in desired.operator_families.items():
        if key not in live.operator_families and key not in created_with_class:
            sql = f"CREATE OPERATOR FAMILY {qualify(family.schema, family.name)} USING {family.method}"
            b.add("operator classes", "operator family", sql, action="create", name=key)
    for key, item in desired.operator_classes.items():
        if _is_created(ctx, "operator_classes", key):
            b.add("operator classes", "operator class", operator_class_sql(item), action="create", name=key)
    for key, family in desired.operator_families.items():
        was = live.operator_families.get(key)
        for member in sorted(set(family.members) - set(was.members if was is not None else ())):
            sql = f"ALTER OPERATOR FAMILY {key} ADD {member}"
            b.add("operator classes", "operator family", sql, action="alter", name=key)


def _plan_functions(b: _Builder, ctx: _Context) -> None:
    """Functions created after what they use (SQL-standard bodies are checked at creation), dropped before it."""
    live, desired = ctx.live, ctx.desired
    live_order = _function_order(live.functions, live.depends)
    for key in reversed(live_order):  # a function calling another goes first
        if key in desired.functions and key in ctx.dropped_functions:
            # after the views and triggers using it are dropped; before the views it uses
            phase = "drop dependents" if _uses_rebuilt_view(ctx, key) else "drop functions"
            _drop_to_recreate(b, ctx, "functions", phase, "function", key, _drop_function(live.functions[key]))
    phases = _function_phases(desired)
    for key in _function_order(desired.functions, desired.depends):
        func, current = desired.functions[key], live.functions.get(key)
        if (
            current is not None
            and dataclasses.replace(current, comment=func.comment, privileges=func.privileges) == func
            and key not in ctx.dropped_functions
        ):
            continue
        action = "create" if _is_created(ctx, "functions", key) else "replace"
        b.add(phases[key], "function", function_sql(func), action=action, name=key)
    for key in sorted(
        reversed(live_order), key=lambda k: live.functions[k].kind != "a"
    ):  # aggregates before their functions
        if key not in desired.functions:
            func = live.functions[key]
            # a function using a table's row type goes before the table; others last (defaults may use them)
            uses_dropped = any(_references(_signature(func), t) for t in live.tables.keys() - desired.tables.keys())
            b.add(
                "drop functions" if uses_dropped else "drops", "function", _drop_function(func), action="drop", name=key
            )


def _called(key: str, functions: Mapping[str, Function], depends: Mapping[str, frozenset[str]]) -> list[str]:
    """The functions a function's SQL-standard body or defaults use (pg_depend)."""
    return sorted(
        ref[len("functions:") :]
        for ref in depends.get(f"functions:{key}", ())
        if ref.startswith("functions:") and ref[len("functions:") :] in functions and ref[len("functions:") :] != key
    )


def _function_order(functions: Mapping[str, Function], depends: Mapping[str, frozenset[str]]) -> list[str]:
    """Every function after the functions it calls (by name otherwise)."""
    return _dependency_order(functions, lambda key: _called(key, functions, depends))


def _function_phases(desired: Catalog) -> dict[str, str]:
    """Each function's phase: its own (what it reads), and never before a function it calls."""
    phases: dict[str, str] = {}
    for key in _function_order(desired.functions, desired.depends):
        phase = _function_phase(desired.functions[key], desired)
        for other in _called(key, desired.functions, desired.depends):
            if _PHASE_RANK[phases[other]] > _PHASE_RANK[phase]:
                phase = phases[other]
        phases[key] = phase
    return phases


def _uses_rebuilt_view(ctx: _Context, key: str) -> bool:
    return any(
        ref.startswith("views:") and ref[6:] in ctx.rebuilt_views
        for ref in ctx.live.depends.get(f"functions:{key}", ())
    )


def _signature(func: Function) -> str:
    return f"{func.arguments} {func.result or ''}"


def _function_phase(func: Function, desired: Catalog) -> str:
    """Functions taking or returning a table's (or view's) row type, or whose SQL body reads one, are created
    after it."""
    if desired.depends:
        refs = desired.depends.get(f"functions:{func.key}", frozenset())
        if any(r.startswith("views:") for r in refs):
            return "view functions"
        # a SQL-standard body using an operator: after the operators (created after the plain functions)
        return (
            "table functions"
            if func.kind == "a" or any(r.startswith(("tables:", "operators:")) for r in refs)
            else "functions"
        )
    signature = _signature(func)
    if any(_references(signature, key) for key in desired.views):
        return "view functions"
    if func.kind == "a" or any(_references(signature, key) for key in desired.tables):
        return "table functions"  # aggregates: after their support functions
    return "functions"


def _table_parent(table: Table) -> tuple[str, str | None]:
    """(variant, parent) of a new table: it locks nothing of its own, but a partition locks its parent and an
    inheritance child its parents."""
    if table.partition_of:
        return "partition", table.partition_of
    if table.inherits:
        return "inherits", table.inherits[0]
    return "", None


def _plan_tables(b: _Builder, ctx: _Context) -> None:
    live, desired = ctx.live, ctx.desired
    for key in _table_order(desired.tables):
        table = desired.tables[key]
        current = live.tables.get(key)
        if current is None:
            variant, parent = _table_parent(table)
            b.add("tables", "table", table_sql(table), action="create", name=key, variant=variant, on=parent)
            for column in table.columns:
                if column.inherited:
                    _inherited_column(b, ctx, table, column, None)
                else:
                    _column_statistics(b, key, column)
        elif key in ctx.rebuilt_tables:
            _rebuild_table(b, ctx, current, table)
        else:
            _alter_table(b, ctx, current, table)
        _row_level_security(b, key, current, table)
    _drop_extra(
        b,
        "drop tables",
        "table",
        reversed(_table_order(live.tables)),
        desired.tables,
        "DROP TABLE {}".format,
        warning="drops table {} and its data".format,
    )


def _row_level_security(b: _Builder, key: str, current: Table | None, table: Table) -> None:
    """ENABLE / FORCE (or DISABLE / NO FORCE) ROW LEVEL SECURITY, with the policies."""
    add = partial(b.add, "policies", "rls", action="alter", name=key, on=key)
    if table.rls_enabled and (current is None or not current.rls_enabled):
        add(f"ALTER TABLE {key} ENABLE ROW LEVEL SECURITY")
    if table.rls_forced and (current is None or not current.rls_forced):
        add(f"ALTER TABLE {key} FORCE ROW LEVEL SECURITY")
    if current is not None and current.rls_enabled and not table.rls_enabled:
        add(f"ALTER TABLE {key} DISABLE ROW LEVEL SECURITY")
    if current is not None and current.rls_forced and not table.rls_forced:
        add(f"ALTER TABLE {key} NO FORCE ROW LEVEL SECURITY")


def _needs_rebuild(old: Table, new: Table) -> bool:
    """A table turning partitioned (or back) cannot be altered into shape: it is rebuilt."""
    return (old.kind, old.partition_key) != (new.kind, new.partition_key)


def _rebuild_table(b: _Builder, ctx: _Context, old: Table, new: Table) -> None:
    """Rename the old table away, create the new one, copy the rows over, drop the old one last."""
    key = new.key
    temp = old.name + "__old"
    for seq in ctx.live.sequences.values():
        if seq.owned_by and seq.owned_by.rsplit(".", 1)[0] == key:
            b.add("tables", "sequence", f"ALTER SEQUENCE {seq.key} OWNED BY NONE", action="alter", name=seq.key)
            ctx.reowned.add(seq.key)
    for child in ctx.live.tables.values():
        if child.partition_of and _same_table(child.partition_of, key) and child.key in ctx.desired.tables:
            b.add("tables", "table", f"ALTER TABLE {key} DETACH PARTITION {child.key}", action="detach", name=child.key)
    b.add("tables", "table", f"ALTER TABLE {key} RENAME TO {quote_ident(temp)}", action="rename", name=key)
    before = old.column_map()
    carried = [c.name for c in new.columns if c.identity and c.name in before and before[c.name].identity]
    for name in carried:
        for action, sql in _park_identity(key, qualify(old.schema, temp), name):
            parked = f"{qualify(old.schema, temp)}.{quote_ident(name)}"
            variant = "identity" if action == "alter" else ""  # ALTER TABLE ... DROP IDENTITY
            b.add("tables", "sequence", sql, action=action, name=parked, variant=variant)
    variant, parent = _table_parent(new)
    b.add("tables", "table", table_sql(new), action="create", name=key, variant=variant, on=parent)
    for column in new.columns:
        if not column.inherited:
            _column_statistics(b, key, column)
    common = [
        quote_ident(c.name)
        for c in new.columns
        if c.name in before and not c.generated and not before[c.name].generated
    ]
    if common:
        names = ", ".join(common)
        override = " OVERRIDING SYSTEM VALUE" if any(c.identity for c in new.columns) else ""
        sql = f"INSERT INTO {key} ({names}){override} SELECT {names} FROM {qualify(old.schema, temp)}"
        b.add("columns", "table", sql, action="copy", name=key, on=key)
        for name in carried:
            b.add("columns", "sequence", _carry_identity(key, name), action="copy", name=f"{key}.{quote_ident(name)}")
    b.add(
        "drops",
        "table",
        f"DROP TABLE {qualify(old.schema, temp)}",
        action="drop",
        name=qualify(old.schema, temp),
        destructive=True,
        warning=f"rebuilds table {key} (partitioning changes): the old copy is dropped after its rows are copied",
    )


def _identity_setting(table: str) -> str:
    """A transaction-local setting that carries one table's identity position across its rebuild."""
    return "opsagent.identity_" + hashlib.sha1(table.encode()).hexdigest()[:12]


def _park_identity(table: str, old_table: str, column: str) -> list[tuple[str, str]]:
    """Remember where the old identity stopped, then free its sequence's name for the new table.

    Dropping the old identity (the renamed copy keeps its rows) lets the new table's sequence take the
    usual name instead of ``…_seq1``. pg_sequences reads the position without dynamic SQL.
    """
    old_seq = f"pg_get_serial_sequence({literal(old_table)}, {literal(column)})"
    position = (
        f"(SELECT s.last_value FROM pg_catalog.pg_sequences s "
        f"WHERE format('%I.%I', s.schemaname, s.sequencename)::regclass = {old_seq}::regclass)"
    )
    return [
        ("copy", f"SELECT set_config({literal(_identity_setting(table))}, coalesce({position}::text, ''), true)"),
        ("alter", f"ALTER TABLE {old_table} ALTER COLUMN {quote_ident(column)} DROP IDENTITY"),
    ]


def _carry_identity(table: str, column: str) -> str:
    """Continue the new identity where the old one stopped: copied rows used their own values, so a fresh
    sequence would hand out 1 and collide with a copied key. An old sequence never used changes nothing."""
    setting = literal(_identity_setting(table))
    return (
        f"SELECT setval(pg_get_serial_sequence({literal(table)}, {literal(column)}), "
        f"current_setting({setting})::bigint) "
        f"WHERE current_setting({setting}) <> ''"
    )


def _alter_table(b: _Builder, ctx: _Context, old: Table, new: Table) -> None:
    key = new.key
    table = partial(b.add, kind="table", name=key)
    if old.persistence != new.persistence:
        table(
            "tables", sql=f"ALTER TABLE {key} SET {'UNLOGGED' if new.persistence == 'u' else 'LOGGED'}", action="alter"
        )
    if old.options != new.options:
        if old.options:
            names = ", ".join(o.split("=", 1)[0] for o in old.options)
            table("tables", sql=f"ALTER TABLE {key} RESET ({names})", action="alter")
        if new.options:
            table("tables", sql=f"ALTER TABLE {key} SET ({', '.join(new.options)})", action="alter")
    # detached before any table is dropped: dropping the parent would take its partitions (or fail on its children)
    for parent in old.inherits:
        if parent not in new.inherits:
            table("drop tables", sql=f"ALTER TABLE {key} NO INHERIT {parent}", action="detach")
    # joined once its columns match (types, NOT NULL: the columns phase) and it has its new parent's CHECKs
    for parent in new.inherits:
        if parent not in old.inherits:
            _parent_checks(b, ctx, key, parent)
            table("constraints", sql=f"ALTER TABLE {key} INHERIT {parent}", action="attach")
    if (old.partition_of, old.partition_bound) != (new.partition_of, new.partition_bound) or key in ctx.detached:
        if old.partition_of and key not in ctx.detached:
            table("drop tables", sql=f"ALTER TABLE {old.partition_of} DETACH PARTITION {key}", action="detach")
        if new.partition_of:
            if key not in ctx.detached:
                _parent_checks(b, ctx, key, new.partition_of)
            sql = f"ALTER TABLE {new.partition_of} ATTACH PARTITION {key} {new.partition_bound}"
            table("constraints", sql=sql, action="attach")
    before = old.column_map()
    after = new.column_map()
    for column in old.columns:
        if column.name not in after and not column.inherited:
            b.add(
                "columns",
                "column",
                f"ALTER TABLE {key} DROP COLUMN {quote_ident(column.name)}",
                action="drop",
                name=f"{key}.{quote_ident(column.name)}",
                destructive=True,
                warning=f"drops column {key}.{column.name} and its data",
            )
    for column in new.columns:
        current = before.get(column.name)
        if column.inherited:
            if current is not None and current.inherited:
                _inherited_column(b, ctx, new, column, current)
            elif current is not None:  # about to join a parent: made to match it first
                _alter_column(b, ctx, key, current, column)
            continue
        if current is not None and current.inherited and _freed(old, new):
            _alter_column(b, ctx, key, current, column)  # detached or NO INHERIT: the column stays, as the table's own
            continue
        if current is None or current.inherited:
            # an inherited column the parent drops would vanish: (re)add it as the table's own
            exists = "" if current is None else "IF NOT EXISTS "
            sql = f"ALTER TABLE {key} ADD COLUMN {exists}{column_sql(column)}"
            b.add("columns", "column", sql, action="create", name=f"{key}.{quote_ident(column.name)}")
            _column_statistics(b, key, column, current.statistics if current is not None else None)
            continue
        _alter_column(b, ctx, key, current, column)


def _live_table(ctx: _Context, reference: str | None) -> Table | None:
    """A live table named as ``regclass::text`` names it (unqualified in public)."""
    if not reference:
        return None
    return ctx.live.tables.get(reference) or ctx.live.tables.get(f"public.{reference}")


def _parent_checks(b: _Builder, ctx: _Context, child: str, reference: str) -> None:
    """ATTACH PARTITION and INHERIT need the child to have the parent's CHECKs already (then merged into the parent's).

    Only those the parent keeps through the plan: one it gets later is added to the child by the parent's own ADD.
    """
    parent = _live_table(ctx, reference)
    current = ctx.live.tables.get(child)
    if parent is None or current is None:
        return
    # what it inherits now stays its own when it leaves its old parent
    had = {
        item.name
        for item in ctx.live.constraints.values()
        if any(
            old is not None and item.table == old.key
            for old in map(partial(_live_table, ctx), (current.partition_of, *current.inherits))
        )
    }
    for key, item in ctx.live.constraints.items():
        own = f"{child}.{quote_ident(item.name)}"
        if (
            item.table != parent.key
            or item.type != "c"
            or "NO INHERIT" in item.definition
            or own in ctx.live.constraints
            or item.name in had
        ):
            continue
        wanted = ctx.desired.constraints.get(key)
        if (
            wanted is not None
            and f"constraints:{key}" not in ctx.recreated
            and _same(wanted.definition, item.definition, "constraint")
        ):
            b.add(
                "constraints",
                "constraint",
                f"ALTER TABLE {child} ADD CONSTRAINT {quote_ident(item.name)} {item.definition}",
                action="create",
                name=f"{child}.{quote_ident(item.name)}",
            )


def _merged_on_join(ctx: _Context, item: Constraint) -> bool:
    """A table's own CHECK that its new parent (ATTACH/INHERIT in this plan) has too: kept, it becomes the parent's."""
    old, new = ctx.live.tables.get(item.table), ctx.desired.tables.get(item.table)
    if old is None or new is None or item.type != "c":
        return False
    for reference in {new.partition_of, *new.inherits} - {old.partition_of, *old.inherits}:
        parent = ctx.live.tables.get(reference or "") or ctx.live.tables.get(f"public.{reference}")
        key = f"{parent.key}.{quote_ident(item.name)}" if parent is not None else ""
        theirs = ctx.live.constraints.get(key)
        if (
            theirs is not None
            and not _constraint_changed(ctx, key, theirs)
            and _same(theirs.definition, item.definition, "constraint")
        ):
            return True
    return False


_COPIED = object()  # "whatever the parent has": a child created in this plan


def _freed(old: Table, new: Table) -> bool:
    """The table leaves its partitioned parent or all its INHERITS parents (its columns and CHECKs become its own)."""
    detached = bool(old.partition_of) and old.partition_of != new.partition_of
    return detached or (bool(old.inherits) and not set(old.inherits) & set(new.inherits))


def _inherited_on_release(ctx: _Context, item: Constraint) -> bool:
    """A CHECK the table had from a parent it leaves in this plan: PostgreSQL keeps it as the table's own."""
    old, new = ctx.live.tables.get(item.table), ctx.desired.tables.get(item.table)
    if old is None or new is None or item.type != "c" or not _freed(old, new):
        return False
    for reference in (old.partition_of, *old.inherits):
        parent = ctx.live.tables.get(reference or "") or ctx.live.tables.get(f"public.{reference}")
        inherited = ctx.live.constraints.get(f"{parent.key}.{quote_ident(item.name)}") if parent is not None else None
        if inherited is not None and _same(inherited.definition, item.definition, "constraint"):
            return True
    return False


def _parent_column(catalog: Catalog, table: Table, name: str) -> tuple[Table, Column] | None:
    """The parent (partitioned table or first INHERITS parent having it) a column comes from."""
    for reference in (table.partition_of, *table.inherits):
        if not reference:
            continue
        parent = catalog.tables.get(reference) or catalog.tables.get(f"public.{reference}")
        column = parent.column_map().get(name) if parent is not None else None
        if parent is not None and column is not None:
            return parent, column
    return None


def _cascaded(ctx: _Context, table: Table, column: str, field: str, value: Any) -> Any:
    """What an inherited column's NOT NULL or default is once the parents' own changes have run.

    ALTER COLUMN SET/DROP DEFAULT and SET/DROP NOT NULL on a parent recurse to every child,
    so a child ends with the parent's new value when the parent's changes, and keeps its own otherwise.
    """
    found = _parent_column(ctx.desired, table, column)
    if found is None:
        return value
    parent, wanted = found
    if value is _COPIED:
        value = getattr(wanted, field)  # a new child starts with its parent's value
    live_parent = ctx.live.tables.get(parent.key)
    was = live_parent.column_map().get(column) if live_parent is not None else None
    if was is None:
        return getattr(wanted, field)  # the parent is created (or gets the column) in this plan: the child copies it
    before = _cascaded(ctx, parent, column, field, getattr(was, field)) if was.inherited else getattr(was, field)
    same = (
        _same(before, getattr(wanted, field), "expression") if field == "default" else before == getattr(wanted, field)
    )
    return value if same else getattr(wanted, field)


def _inherited_column(b: _Builder, ctx: _Context, table: Table, new: Column, old: Column | None) -> None:
    """A partition's or child's own NOT NULL and default on a column its parent defines (created from the parent's)."""
    prefix = f"ALTER TABLE {table.key} ALTER COLUMN {quote_ident(new.name)}"
    add = partial(b.add, "columns", "column", action="alter", name=f"{table.key}.{quote_ident(new.name)}", on=table.key)
    not_null = _cascaded(ctx, table, new.name, "not_null", old.not_null if old is not None else _COPIED)
    if not_null is not _COPIED and not_null != new.not_null:
        add(f"{prefix} {'SET' if new.not_null else 'DROP'} NOT NULL")
    default = _cascaded(ctx, table, new.name, "default", old.default if old is not None else _COPIED)
    if default is _COPIED:
        return
    if not _same(default, new.default, "expression"):
        add(f"{prefix} SET DEFAULT {new.default}" if new.default is not None else f"{prefix} DROP DEFAULT")


def _alter_column(b: _Builder, ctx: _Context, table: str, old: Column, new: Column) -> None:
    col = quote_ident(new.name)
    prefix = f"ALTER TABLE {table} ALTER COLUMN {col}"
    column = partial(b.add, "columns", "column", name=f"{table}.{col}")
    alter = partial(column, action="alter")
    if not _same(old.generated, new.generated, "expression"):
        column(
            f"ALTER TABLE {table} DROP COLUMN {col}",
            action="drop",
            destructive=True,
            warning=f"recreates column {table}.{new.name} (generation expression changed)",
        )
        column(f"ALTER TABLE {table} ADD COLUMN {column_sql(new)}", action="create", destructive=True)
        return
    type_moved = any(_uses_type(old.type, t) for t in ctx.recreated_types)
    if old.identity and not new.identity:
        alter(f"{prefix} DROP IDENTITY")
    default_changed = not _same(old.default, new.default, "expression") or old.type != new.type
    via = "::text" if _is_user_type(ctx, old.type) or _is_user_type(ctx, new.type) else ""
    # no cast at all (bigint → timestamp): only the user knows the conversion; the statement is left for them
    no_cast = (
        None
        if via or old.type == new.type or castable(ctx.live, old.type, new.type)
        else f"no cast from {old.type} to {new.type}: write the USING expression, then run"
    )
    if old.default is not None and default_changed and not type_moved and no_cast is None:
        alter(f"{prefix} DROP DEFAULT")
    if (old.type != new.type or old.collation != new.collation) and not type_moved:
        collate = f" COLLATE {new.collation}" if new.collation else ""
        using = (
            f"{col}{via}::{new.type}"
            if no_cast is None
            else f"{col} /* an expression turning {old.type} into {new.type} */"
        )
        alter(
            f"{prefix} TYPE {new.type}{collate} USING {using}",
            destructive=not lossless(old.type, new.type),
            manual=no_cast,
            warning=f"{table}.{new.name}: {old.type} → {new.type} "
            + ("has no cast" if no_cast else "may lose data or fail"),
        )
    if new.default is not None and default_changed and not type_moved:
        alter(
            f"{prefix} SET DEFAULT {new.default}",
            manual=no_cast and "run after the type change above",
            warning=f"{table}.{new.name}: the new default waits for the type change",
        )
    if old.not_null != new.not_null:
        alter(f"{prefix} {'SET' if new.not_null else 'DROP'} NOT NULL")
    _column_statistics(b, table, new, old.statistics)
    if new.identity and not old.identity:
        _drop_owned_sequences(b, ctx, table, old)
        alter(f"{prefix} ADD {identity_sql(new)}")
    elif new.identity and old.identity:
        _alter_identity(alter, prefix, old, new)


def _alter_identity(alter: Callable[..., None], prefix: str, old: Column, new: Column) -> None:
    """``SET GENERATED`` and ``SET <sequence option>`` on an identity column (its sequence and current value are kept).

    After a type change PostgreSQL moves a default MAXVALUE/MINVALUE to the new type's: every option is then
    written out.
    """
    settings = [f"SET GENERATED {(new.identity or '').upper()}"] if old.identity != new.identity else []
    if new.identity_sequence is not None and (old.identity_sequence != new.identity_sequence or old.type != new.type):
        base = old.identity_sequence if old.type == new.type else None
        settings += identity_options(new, base, "SET ") if base is not None else _all_identity_options(new)
    if settings:
        alter(f"{prefix} {' '.join(settings)}")


def _all_identity_options(column: Column) -> list[str]:
    seq = column.identity_sequence
    assert seq is not None
    return [
        *(f"SET {word} {value}" for word, value in zip(_IDENTITY_WORDS, seq[:5], strict=True)),
        "SET CYCLE" if seq[5] else "SET NO CYCLE",
    ]


_CONSTRAINT_ORDER = {"p": 0, "u": 1, "x": 2, "c": 3, "t": 4, "f": 5}


def _constraint_changed(ctx: _Context, key: str, item: Constraint) -> bool:
    other = ctx.desired.constraints.get(key)
    if other is None or ctx.rebuilt_with("constraints", key, item.table):
        return True
    return dataclasses.replace(item, comment=other.comment, definition=other.definition) != other or not _same(
        item.definition, other.definition, "constraint"
    )


def _unkeyed_tables(ctx: _Context) -> set[str]:
    """Tables whose unique keys (constraints or unique indexes) go away: foreign keys to them are rebuilt."""
    out = set(
        ctx.rebuilt_tables if ctx.uses_graph else ctx.reshaped
    )  # with pg_depend, FKs on changing columns are affected
    for key, item in ctx.live.constraints.items():
        if item.type in ("p", "u", "x") and not item.on_domain and _constraint_changed(ctx, key, item):
            out.add(item.table)
    for key, index in ctx.live.indexes.items():
        other = ctx.desired.indexes.get(key)
        if index.definition.startswith("CREATE UNIQUE") and (
            other is None or not _same(other.definition, index.definition)
        ):
            out.add(index.table)
    return out


def _plan_constraints(b: _Builder, ctx: _Context) -> None:
    live, desired = ctx.live, ctx.desired
    dropped: set[str] = set()
    unkeyed = _unkeyed_tables(ctx)
    ordered = sorted(live.constraints.items(), key=lambda kv: -_CONSTRAINT_ORDER.get(kv[1].type, 9))
    for key, item in ordered:
        gone = item.table not in desired.tables and item.table not in desired.types
        if (gone and item.type != "f") or (item.on_domain and item.table in ctx.recreated_types):
            continue  # goes with its table/domain (foreign keys go first: tables are dropped in any order)
        if not gone and key not in ctx.desired.constraints and _merged_on_join(ctx, item):
            continue
        if (
            gone
            or _constraint_changed(ctx, key, item)
            or (item.type == "f" and any(_references(item.definition, t) for t in unkeyed))
        ):
            _drop_to_recreate(b, ctx, "constraints", "drop dependents", "constraint", key, _drop_constraint(item))
            dropped.add(key)
    for key, item in sorted(desired.constraints.items(), key=lambda kv: _CONSTRAINT_ORDER.get(kv[1].type, 9)):
        if key not in live.constraints and _inherited_on_release(ctx, item):
            continue
        if key not in live.constraints or key in dropped or (item.on_domain and item.table in ctx.recreated_types):
            # foreign keys last: the unique index they need may be a plain CREATE UNIQUE INDEX
            foreign = item.type == "f"
            b.add(
                "foreign keys" if foreign else "constraints",
                "constraint",
                constraint_sql(item),
                action="create",
                name=key,
                variant="foreign key" if foreign else "",
                on=None if item.on_domain or foreign else item.table,  # a foreign key locks the table it references too
            )


def _plan_indexes(b: _Builder, ctx: _Context) -> None:
    live, desired = ctx.live, ctx.desired
    for key, item in live.indexes.items():
        other = desired.indexes.get(key)
        if item.table in ctx.recreated_views or (item.table not in desired.tables and item.table not in desired.views):
            continue  # goes with its table or view
        if (
            other is None
            or not _same(other.definition, item.definition)
            or ctx.rebuilt_with("indexes", key, item.table)
            or item.valid != other.valid
        ):
            _drop_to_recreate(b, ctx, "indexes", "drop dependents", "index", key, f"DROP INDEX {key}")
            ctx.rebuilt_indexes.add(key)
    for key, item in desired.indexes.items():
        other = live.indexes.get(key)
        if item.table in ctx.created_views:
            continue  # created right after its materialized view
        if (
            other is None
            or not _same(other.definition, item.definition)
            or key in ctx.rebuilt_indexes
            or (not ctx.uses_graph and item.table in ctx.reshaped)
            or item.table in ctx.rebuilt_tables
        ):
            partitions = _partitions_built_concurrently(ctx, item)
            if partitions:
                ctx.concurrent_indexes.add(key)
                _build_partitioned_concurrently(b, ctx, item, partitions)
            elif _can_build_concurrently(b, ctx, item):
                ctx.concurrent_indexes.add(key)
                _build_concurrently(b, key, item.definition)
            else:
                b.add("indexes", "index", _cascading(item.definition), action="create", name=key, on=item.table)
            _index_statistics(b, item, (), *_index_phase(ctx, item.table, item.name))
        elif other is not None and other.statistics != item.statistics:
            _index_statistics(b, item, other.statistics, "indexes", "main")


def _build_concurrently(b: _Builder, key: str, definition: str) -> None:
    """DROP INDEX CONCURRENTLY IF EXISTS, then CREATE INDEX CONCURRENTLY, after the transaction.

    A build that failed before leaves an INVALID index behind: dropping it first lets a retry succeed.
    """
    add = partial(b.add, "concurrent indexes", "index", name=key, variant="concurrently", stage="after")
    add(f"DROP INDEX CONCURRENTLY IF EXISTS {key}", action="drop")
    add(_concurrently(definition), action="create")


def _index_statistics(b: _Builder, index: Index, before: Iterable[tuple[int, int]], phase: str, stage: str) -> None:
    """ALTER INDEX ... ALTER COLUMN n SET STATISTICS (an expression column's target), after the index is built."""
    wanted = dict(index.statistics)
    add = partial(
        b.add, phase, "index", action="alter", name=index.key, variant="statistics", on=index.table, stage=stage
    )
    for number in sorted(dict(before)):
        if number not in wanted:
            add(f"ALTER INDEX {index.key} ALTER COLUMN {number} SET STATISTICS -1")
    for number, target in sorted(wanted.items()):
        if dict(before).get(number) != target:
            add(f"ALTER INDEX {index.key} ALTER COLUMN {number} SET STATISTICS {target}")


def _column_statistics(b: _Builder, table: str, column: Column, before: int | None = None) -> None:
    """ALTER COLUMN ... SET STATISTICS (-1: back to the default)."""
    if column.statistics != before:
        target = -1 if column.statistics is None else column.statistics
        col = quote_ident(column.name)
        sql = f"ALTER TABLE {table} ALTER COLUMN {col} SET STATISTICS {target}"
        b.add("columns", "column", sql, action="alter", name=f"{table}.{col}", variant="statistics", on=table)


_CREATE_INDEX = re.compile(r"^CREATE (UNIQUE )?INDEX ")
_ON_ONLY = re.compile(r"^(CREATE (?:UNIQUE )?INDEX (?:\S+|\"(?:[^\"]|\"\")*\") ON )ONLY ")


def _cascading(definition: str) -> str:
    """A partitioned table's index as introspected reads ``ON ONLY parent``: built that way no partition gets
    it and it stays invalid.  Without ONLY, PostgreSQL builds (or attaches) one on every partition."""
    return _ON_ONLY.sub(r"\1", definition, count=1)


def _partitions_built_concurrently(ctx: _Context, index: Index) -> list[Table]:
    """The partitions of an existing partitioned table to index one by one CONCURRENTLY (when some are large).

    Only when every partition is a plain table that exists already and keeps its rows; otherwise (none large,
    sub-partitions, a rebuild) the index is built on the parent in one statement.
    """
    parent = ctx.live.tables.get(index.table)
    wanted = ctx.desired.tables.get(index.table)
    if (
        parent is None
        or wanted is None
        or parent.kind != "p"
        or wanted.kind != "p"
        or index.table in ctx.rebuilt_tables
    ):
        return []
    partitions = [t for t in ctx.desired.tables.values() if t.partition_of and _same_table(t.partition_of, index.table)]
    if not any(t.key in ctx.concurrent_tables for t in partitions):
        return []
    if any(t.kind != "r" or t.key not in ctx.live.tables or t.key in ctx.rebuilt_tables for t in partitions):
        return []
    return sorted(partitions, key=lambda t: t.key)


def _same_table(reference: str, key: str) -> bool:
    """``regclass::text`` names a table in the public schema without its schema."""
    return reference == key or f"public.{reference}" == key


def _build_partitioned_concurrently(b: _Builder, ctx: _Context, index: Index, partitions: list[Table]) -> None:
    """``ON ONLY`` the parent (invalid), each partition's index CONCURRENTLY, each attached: the parent becomes valid.

    The partitions' indexes get the names PostgreSQL would give them, so the result equals a plain build.
    """
    taken = _relation_names(ctx)
    on_only = _CREATE_INDEX.sub(lambda m: f"CREATE {m.group(1) or ''}INDEX IF NOT EXISTS ", index.definition, count=1)
    add = partial(b.add, "concurrent indexes", "index", stage="after")
    add(on_only, action="create", name=index.key)  # ON ONLY: the parent alone, invalid until every partition attaches
    for partition in partitions:
        name = choose_index_name(
            partition.name, index_column_names(index.definition), taken.setdefault(partition.schema, set())
        )
        child = qualify(partition.schema, name)
        _build_concurrently(b, child, _child_index_sql(index.definition, quote_ident(name), partition.key))
        add(f"ALTER INDEX {index.key} ATTACH PARTITION {child}", action="attach", name=child)


def _relation_names(ctx: _Context) -> dict[str, set[str]]:
    """Relation names per schema (both sides): a chosen index name must not collide with one."""
    names: dict[str, set[str]] = {}
    for catalog in (ctx.live, ctx.desired):
        relations: list[Table | View | Sequence_] = [
            *catalog.tables.values(),
            *catalog.views.values(),
            *catalog.sequences.values(),
        ]
        for item in relations:
            names.setdefault(item.schema, set()).add(item.name)
        for index in catalog.indexes.values():
            names.setdefault(_schema_of(index.table), set()).add(index.name)
        for con in catalog.constraints.values():
            if con.type in ("p", "u", "x") and not con.on_domain:
                names.setdefault(_schema_of(con.table), set()).add(con.name)
    return names


def _schema_of(key: str) -> str:
    """The schema of a qualified key as the catalog quotes it, unquoted."""
    head = key[: _split_point(key)]
    return head[1:-1].replace('""', '"') if head.startswith('"') else head


def _split_point(key: str) -> int:
    if key.startswith('"'):
        index = 1
        while index < len(key):
            if key[index] == '"':
                if key[index + 1 : index + 2] == '"':
                    index += 2
                    continue
                return index + 1
            index += 1
    return key.index(".")


def _child_index_sql(definition: str, name: str, table: str) -> str:
    """The parent's index definition, renamed and put on one partition."""
    statement: Any = pglast.parse_sql(definition)[0].stmt
    rest = definition[definition.index(" USING ") :]
    unique = "UNIQUE " if statement.unique else ""
    return f"CREATE {unique}INDEX {name} ON {table}{rest}"


def index_column_names(definition: str) -> list[str]:
    """The names PostgreSQL derives from an index's columns to name it (ChooseIndexColumnNames, FigureIndexColname)."""
    statement: Any = pglast.parse_sql(definition)[0].stmt
    names: list[str] = []
    for element in (*(statement.indexParams or ()), *(statement.indexIncludingParams or ())):
        name = element.indexcolname or element.name or _figure_colname(element.expr) or "expr"
        base, suffix = name, 0
        while name in names:  # a repeated name gets a number, as in PostgreSQL
            suffix += 1
            name = f"{base}{suffix}"
        names.append(name)
    return names


def _figure_colname(node: Any) -> str | None:
    """PostgreSQL's FigureColname for the expressions indexes commonly hold."""
    kind = type(node).__name__
    if kind == "ColumnRef":
        last = node.fields[-1]
        return str(last.sval) if type(last).__name__ == "String" else None
    if kind == "FuncCall":
        return str(node.funcname[-1].sval)
    if kind == "TypeCast":
        return _figure_colname(node.arg) or str(node.typeName.names[-1].sval)
    if kind == "CoalesceExpr":
        return "coalesce"
    if kind == "CaseExpr":
        return "case"
    if kind == "MinMaxExpr":
        return "greatest" if node.op == 0 else "least"
    return None


_NAMEDATALEN = 64


def choose_index_name(table: str, columns: list[str], taken: set[str]) -> str:
    """The name PostgreSQL gives an unnamed index on ``table`` (ChooseIndexNameAddition + makeObjectName
    + ChooseRelationName)."""
    addition = ""
    for column in columns:
        addition = f"{addition}_{column}" if addition else column
        if len(addition.encode()) >= _NAMEDATALEN - 1:
            addition = addition.encode()[: _NAMEDATALEN - 1].decode(errors="ignore")
            break
    pass_number = 0
    while True:
        label = "idx" if pass_number == 0 else f"idx{pass_number}"
        name = _make_object_name(table, addition, label)
        if name not in taken:
            taken.add(name)
            return name
        pass_number += 1


def _make_object_name(first: str, second: str, label: str) -> str:
    one, two = first.encode(), second.encode()
    available = _NAMEDATALEN - 1 - (len(label) + 1) - (1 if two else 0)
    a, c = len(one), len(two)
    while a + c > available:
        if a > c:
            a -= 1
        else:
            c -= 1
    parts = [one[:a].decode(errors="ignore"), *([two[:c].decode(errors="ignore")] if two else []), label]
    return "_".join(parts)


def _concurrently(definition: str) -> str:
    return _CREATE_INDEX.sub(lambda m: f"CREATE {m.group(1) or ''}INDEX CONCURRENTLY ", definition, count=1)


def _can_build_concurrently(b: _Builder, ctx: _Context, index: Index) -> bool:
    """Only on tables that exist and keep their rows, never for a partitioned parent, nor when a new foreign key
    needs it."""
    table = ctx.live.tables.get(index.table)
    if index.table not in ctx.concurrent_tables or table is None or index.table in ctx.rebuilt_tables:
        return False
    if table.kind == "p" or " ON ONLY " in index.definition or not _CREATE_INDEX.match(index.definition):
        return False
    unique = index.definition.startswith("CREATE UNIQUE")
    return not (unique and any(_needs_table(ctx, fk.name, index.table) for fk in b.added("foreign keys", "constraint")))


def _needs_table(ctx: _Context, key: str, table: str) -> bool:
    """Whether the foreign key the plan adds as ``key`` is on ``table`` or references it."""
    item = ctx.desired.constraints[key]
    return item.table == table or _references(item.definition, table)


def _rebuilt_views(ctx: _Context) -> set[str]:
    """Views to drop and create again: changed ones and those depending on what changes (pg_depend, else their text)."""
    if ctx.uses_graph:
        return set(ctx.changed_views) | {key for key in ctx.live.views if ctx.is_affected("views", key)}
    changing = set(ctx.reshaped) | set(ctx.dropped_functions)
    rebuilt = set(ctx.changed_views) | {
        key for key, view in ctx.live.views.items() if any(_references(view.definition, t) for t in changing)
    }
    grew = True
    while grew:  # views built on rebuilt views are rebuilt too
        grew = False
        for key, view in ctx.live.views.items():
            if key not in rebuilt and any(_references(view.definition, r) for r in rebuilt):
                rebuilt.add(key)
                grew = True
    return rebuilt


def _plan_views(b: _Builder, ctx: _Context) -> None:
    live, desired = ctx.live, ctx.desired
    rebuilt = ctx.rebuilt_views
    for key in reversed(_view_order(live.views, live.depends)):
        if key in rebuilt:
            word = "MATERIALIZED VIEW" if live.views[key].materialized else "VIEW"
            _drop_to_recreate(b, ctx, "views", "drop dependents", "view", key, f"DROP {word} {key}")
            ctx.recreated_views.add(key)
    for key in _view_order(desired.views, desired.depends):
        if key in live.views and key not in rebuilt:
            continue
        view = desired.views[key]
        word = "MATERIALIZED VIEW" if view.materialized else "VIEW"
        options = f" WITH ({', '.join(view.options)})" if view.options else ""
        sql = f"CREATE {word} {key}{options} AS\n{view.definition.rstrip().rstrip(';')}"
        b.add("views", "view", sql, action="create", name=key)
        ctx.created_views.add(key)
        for index in desired.indexes.values():
            if index.table == key:
                b.add("views", "index", index.definition, action="create", name=index.key, on=key)
                _index_statistics(b, index, (), "views", "main")


def _index_recreated(ctx: _Context, table: str, name: str) -> bool:
    """Whether the plan drops and builds again the index ``name`` on ``table`` (its own, or a key constraint's)."""
    return (
        f"indexes:{qualify(_schema_of(table), name)}" in ctx.recreated
        or f"constraints:{table}.{quote_ident(name)}" in ctx.recreated
    )


def _index_phase(ctx: _Context, table: str, name: str) -> tuple[str, str]:
    """After the index exists: in the transaction, or after its CONCURRENTLY build."""
    if qualify(_schema_of(table), name) in ctx.concurrent_indexes:
        return "concurrent indexes", "after"
    return "foreign keys", "main"


def _plan_statistics(b: _Builder, ctx: _Context) -> None:
    """Extended statistics: dropped before what they read changes, created once their columns are in shape."""
    for key, item in ctx.live.statistics.items():
        other = ctx.desired.statistics.get(key)
        if item.table not in ctx.desired.tables:
            continue  # goes with its table
        if (
            other is None
            or other.table != item.table
            or not _same(item.definition, other.definition)
            or ctx.rebuilt_with("statistics", key, item.table)
        ):
            _drop_to_recreate(b, ctx, "statistics", "drop dependents", "statistics", key, f"DROP STATISTICS {key}")
    for key, item in ctx.desired.statistics.items():
        fresh = _is_created(ctx, "statistics", key)
        add = partial(b.add, "indexes", "statistics", name=key, on=item.table)
        if fresh:
            add(item.definition, action="create")
        current = None if fresh else ctx.live.statistics[key].target
        if item.target != current:
            add(f"ALTER STATISTICS {key} SET STATISTICS {-1 if item.target is None else item.target}", action="alter")


def _plan_index_settings(b: _Builder, ctx: _Context) -> None:
    """Table settings naming an index: REPLICA IDENTITY (USING INDEX), CLUSTER ON; lost when the table or that
    index is rebuilt."""
    for key, table in ctx.desired.tables.items():
        current = ctx.live.tables.get(key)
        fresh = current is None or key in ctx.rebuilt_tables
        clustered = None if fresh or current is None else current.clustered_on
        alter = partial(b.add, kind="table", action="alter", name=key, on=key)
        if table.clustered_on != clustered or (
            table.clustered_on is not None and _index_recreated(ctx, key, unquote(table.clustered_on))
        ):
            if table.clustered_on is None:
                alter("foreign keys", sql=f"ALTER TABLE {key} SET WITHOUT CLUSTER", variant="cluster")
            else:
                phase, stage = _index_phase(ctx, key, unquote(table.clustered_on))
                sql = f"ALTER TABLE {key} CLUSTER ON {table.clustered_on}"
                alter(phase, sql=sql, variant="cluster", stage=stage)
        was = "default" if fresh or current is None else current.replica_identity
        wanted = table.replica_identity
        uses = wanted[len("index ") :] if wanted.startswith("index ") else None
        if was != wanted or (uses is not None and _index_recreated(ctx, key, unquote(uses))):
            phase, stage = _index_phase(ctx, key, unquote(uses)) if uses is not None else ("foreign keys", "main")
            setting = f"USING INDEX {uses}" if uses is not None else wanted.upper()
            alter(phase, sql=f"ALTER TABLE {key} REPLICA IDENTITY {setting}", stage=stage)


def unquote(name: str) -> str:
    """An identifier as quote_ident wrote it, back to the name."""
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def _plan_triggers_policies(b: _Builder, ctx: _Context) -> None:
    live, desired = ctx.live, ctx.desired
    for attr, kind in (("triggers", "trigger"), ("policies", "policy")):
        before: Mapping[str, Any] = getattr(live, attr)
        after: Mapping[str, Any] = getattr(desired, attr)
        for key, item in before.items():
            other = after.get(key)
            if item.table in ctx.recreated_views:
                before = {**before, key: None}  # dropped with its view
                continue
            if item.table not in desired.tables and item.table not in desired.views:
                continue
            if (
                other is None
                or dataclasses.replace(item, comment=other.comment) != other
                or ctx.rebuilt_with(attr, key, item.table)
                or (
                    not ctx.uses_graph
                    and kind == "trigger"
                    and any(f.split("(")[0] in item.definition for f in ctx.dropped_functions)
                )
            ):
                sql = f"DROP {kind.upper()} {quote_ident(item.name)} ON {item.table}"
                _drop_to_recreate(b, ctx, attr, "drop dependents", kind, key, sql)
                before = {**before, key: None}
        for key, item in after.items():
            if before.get(key) is not None:
                continue
            add = partial(b.add, "triggers" if kind == "trigger" else "policies", kind, name=key, on=item.table)
            add(item.definition if kind == "trigger" else policy_sql(item), action="create")
            if kind == "trigger" and item.enabled != "O":
                state = {"D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}.get(item.enabled, "ENABLE")
                add(f"ALTER TABLE {item.table} {state} TRIGGER {quote_ident(item.name)}", action="alter")


_COMMENT_TARGET = {
    "tables": "TABLE",
    "sequences": "SEQUENCE",
    "types": "TYPE",
    "schemas": "SCHEMA",
    "collations": "COLLATION",
    "text_search_dicts": "TEXT SEARCH DICTIONARY",
    "text_search_configs": "TEXT SEARCH CONFIGURATION",
}


def _comment_targets(catalog: Catalog) -> dict[str, tuple[str, str | None]]:
    """Every commentable object: its COMMENT ON target and its comment."""
    out: dict[str, tuple[str, str | None]] = {}
    for attr, word in _COMMENT_TARGET.items():
        for key, item in getattr(catalog, attr).items():
            target = "DOMAIN" if attr == "types" and item.kind == "domain" else word
            out[f"{attr}:{key}"] = (f"{target} {key}", item.comment)
    for key, table in catalog.tables.items():
        for column in table.columns:
            out[f"column:{key}.{column.name}"] = (f"COLUMN {key}.{quote_ident(column.name)}", column.comment)
    for key, view in catalog.views.items():
        out[f"views:{key}"] = (f"{'MATERIALIZED VIEW' if view.materialized else 'VIEW'} {key}", view.comment)
        for column in view.columns:
            out[f"column:{key}.{column.name}"] = (f"COLUMN {key}.{quote_ident(column.name)}", column.comment)
    for key, func in catalog.functions.items():
        word = {"p": "PROCEDURE", "a": "AGGREGATE"}.get(func.kind, "FUNCTION")
        out[f"functions:{key}"] = (f"{word} {key}", func.comment)
    for key, con in catalog.constraints.items():
        on = f"ON DOMAIN {con.table}" if con.on_domain else f"ON {con.table}"
        out[f"constraints:{key}"] = (f"CONSTRAINT {quote_ident(con.name)} {on}", con.comment)
    for key, index in catalog.indexes.items():
        out[f"indexes:{key}"] = (f"INDEX {key}", index.comment)
    for key, trig in catalog.triggers.items():
        out[f"triggers:{key}"] = (f"TRIGGER {quote_ident(trig.name)} ON {trig.table}", trig.comment)
    for key, pol in catalog.policies.items():
        out[f"policies:{key}"] = (f"POLICY {quote_ident(pol.name)} ON {pol.table}", pol.comment)
    for key, op in catalog.operators.items():
        out[f"operators:{key}"] = (f"OPERATOR {_operator_target(op)}", op.comment)
    for attr, word in (("operator_families", "OPERATOR FAMILY"), ("operator_classes", "OPERATOR CLASS")):
        for key, item in getattr(catalog, attr).items():
            out[f"{attr}:{key}"] = (f"{word} {key}", item.comment)
    for key, stat in catalog.statistics.items():
        out[f"statistics:{key}"] = (f"STATISTICS {key}", stat.comment)
    return out


def _plan_comments(b: _Builder, ctx: _Context) -> None:
    before = _comment_targets(ctx.live)
    after = _comment_targets(ctx.desired)
    for key, (target, comment) in after.items():
        old = before.get(key)
        owner = (
            key[7:].rsplit(".", 1)[0] if key.startswith("column:") else key[7:] if key.startswith("tables:") else None
        )
        recreated = (
            key in ctx.recreated
            or owner in ctx.rebuilt_tables
            or (key.startswith("column:") and owner in ctx.recreated_views)
        )
        if (old is None and comment is not None) or (old is not None and old[1] != comment) or (recreated and comment):
            later = key.startswith("indexes:") and key[8:] in ctx.concurrent_indexes
            b.add(
                "concurrent indexes" if later else "comments",
                "comment",
                f"COMMENT ON {target} IS {literal(comment)}",
                action="comment",
                name=key.split(":", 1)[1],
                stage="after" if later else "main",
            )


def _plan_privileges(b: _Builder, ctx: _Context) -> None:
    live, desired = ctx.live, ctx.desired
    for attr, word in (("tables", "TABLE"), ("views", "TABLE"), ("sequences", "SEQUENCE")):
        for key, item in getattr(desired, attr).items():
            current = getattr(live, attr).get(key)
            if key in ctx.recreated_views or key in ctx.rebuilt_tables:
                current = None  # created again: it starts from the defaults
            old: tuple[Privilege, ...] = current.privileges if current is not None else ()
            _privileges(b, key, privilege_sql(f"{word} {key}", old, item.privileges, item.owner))
            if attr in ("tables", "views"):  # column grants (GRANT SELECT (col)), on views too
                cols = current.column_map() if current is not None else {}
                for column in item.columns:
                    was = cols.get(column.name)
                    col = quote_ident(column.name)
                    before = was.privileges if was else ()
                    changes = privilege_sql(f"TABLE {key}", before, column.privileges, item.owner, col)
                    _privileges(b, f"{key}.{col}", changes)
    _plan_schema_and_routine_privileges(b, ctx)


def _privileges(b: _Builder, key: str, changes: Iterable[tuple[str, str]]) -> None:
    """GRANT and REVOKE statements on one object (``privilege_sql``)."""
    for action, sql in changes:
        b.add("privileges", "privilege", sql, action=action, name=key)


def _plan_schema_and_routine_privileges(b: _Builder, ctx: _Context) -> None:
    """USAGE/CREATE on schemas, EXECUTE on functions and procedures (a recreated routine starts from the defaults)."""
    for key, schema in ctx.desired.schemas.items():
        was = ctx.live.schemas.get(key)
        _privileges(
            b, key, privilege_sql(f"SCHEMA {key}", was.privileges if was else (), schema.privileges, schema.owner)
        )
    for key, func in ctx.desired.functions.items():
        current = ctx.live.functions.get(key)
        old = current.privileges if current is not None and f"functions:{key}" not in ctx.recreated else ()
        _privileges(b, key, privilege_sql(f"ROUTINE {key}", old, func.privileges, func.owner))
