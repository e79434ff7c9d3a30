"""The introspection query's text (``opsagent/sql/catalog_*.sql``), built without loading the catalog model: what
``inv extract`` and the fingerprinted recall paths need is only the SQL."""

from __future__ import annotations

from collections.abc import Iterable

from .. import resources
from .exclusions import DEFAULT_EXCLUDED_TABLES, always_quoted, canonical, hidden_schema_candidates, split_exclusion

_QUERY = resources.sql("catalog_introspection")
_DEPENDS = resources.sql("catalog_depends")  # pg_depend's edges: only plans need them
_MEMBERS = resources.sql("catalog_members")  # operator family members, with what they belong to
_CASTS = resources.sql("catalog_casts")  # what ``expr::type`` can do: whether a type change can run


def _sql_text_array(values: Iterable[str]) -> str:
    """A safely quoted ``ARRAY[...]::text[]`` literal (names come from configuration)."""
    quoted = ", ".join("'" + value.replace("'", "''") + "'" for value in values)
    return f"ARRAY[{quoted}]::text[]"


def introspection_sql(exclude_tables: Iterable[str] = DEFAULT_EXCLUDED_TABLES, *, dependencies: bool = False) -> str:
    """The introspection script: a fixed search_path, then one query returning one JSON document.

    ``exclude_tables`` entries (see ``opsagent.schema.exclusions``) are ``"schema"."table"``
    (exactly that table: the ledger) or bare names (that name in any schema).  A
    non-public schema of an entry that holds nothing but excluded tables (the
    ledger's own ``ledger_schema``) is left out of the schema list too.
    ``dependencies`` adds pg_depend's edges (``Catalog.depends``), which only plans
    need: they double the document's size.
    """
    names = list(exclude_tables)
    split = [split_exclusion(name) for name in names]  # refuses NUL bytes
    bare = [table for schema, table in split if schema is None]
    qualified = [canonical(name) for name, (schema, _) in zip(names, split, strict=True) if schema is not None]
    hidden = [always_quoted(schema) for schema in hidden_schema_candidates(names)]
    query = resources.fill(
        _QUERY,
        BARE=_sql_text_array(bare),
        QUALIFIED=_sql_text_array(qualified),
        HIDDEN_SCHEMAS=_sql_text_array(hidden),
        DEPENDS=_DEPENDS if dependencies else "NULL",
        CASTS=_CASTS if dependencies else "NULL",
        MEMBERS=_MEMBERS,
    )
    # separate SETs (not set_config inside the query) so that they are in force before any deparsing starts
    return f"SET search_path = pg_catalog;\n{WITHOUT_JIT}" + query.strip() + ";\n"


# JIT off for the introspection query's session.  The planner prices this query by the size of the catalogs, and on a
# large schema that price passes ``jit_above_cost``: the query then spent most of its time compiling expressions
# that each run a few thousand times.  Measured on PostgreSQL 15 with 5,000 generated tables (the plan's form, with
# pg_depend's edges): 9.2-9.6 s with JIT, 2.2-2.8 s without; 1,000 tables: 1.07 s against 0.50 s; the form without
# the edges, 5,000 tables: 2.3-2.5 s against 1.7-2.1 s.  Musicbrainz stays under the threshold (same time either
# way).  Only the rest of an opsagent session sees the setting (a scratch database's load session, a live read, the
# sync's closing probe): a migration never runs after it on the same session.
WITHOUT_JIT = "SET jit = off;\n"


INTROSPECTION_SQL = introspection_sql()

# ``Catalog.stats()`` computed by the server: the same relations, filters and exclusions as the introspection
# query (its leading CTEs are reused verbatim), counted instead of deparsed.  ``inv extract`` needs only the
# counts; deparsing every definition would cost as much as the pg_dump it accompanies.
# (tests pin it to ``introspect(...).stats()`` on real schemas)
_STATS = resources.sql("catalog_stats")
_STATS_CTES = resources.sql("catalog_stats_ctes")


def stats_sql(exclude_tables: Iterable[str] = DEFAULT_EXCLUDED_TABLES) -> str:
    """One query returning ``Catalog.stats()`` as a JSON object, without deparsing anything (``inv extract``)."""
    full = introspection_sql(exclude_tables)
    # SET search_path + WITH ext_objs, nsp, rel, excluded, ledger_only
    body = full[: full.index("\nacl AS (")].rstrip().rstrip(",")
    return f"{body},{_STATS_CTES}{_STATS};\n"
