"""Batch loading of many small schemas into one scratch database, introspected in the same psql session.

Creating a database per corpus case costs ~35 ms each; resetting one database
(drop every schema and extension) costs a few.  One psql session per batch loads
each case, prints a marker with the case's error state, and runs the
introspection query, so a whole batch costs one remote round trip.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

from pglast import parser

from opsagent.remote.transport import Remote
from opsagent.schema.catalog import Catalog, introspection_sql
from opsagent.sqlquote import quote_ident

MARK = "@@opsagent-load "
END = "@@opsagent-end"

RESET_SQL = r"""
COMMIT;
RESET ROLE;
RESET SESSION AUTHORIZATION;
RESET ALL;
SET client_min_messages = warning;
DO $reset$
DECLARE r record;
BEGIN
  FOR r IN SELECT evtname FROM pg_event_trigger LOOP
    EXECUTE format('DROP EVENT TRIGGER %I', r.evtname);
  END LOOP;
  FOR r IN SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' LOOP
    EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
  END LOOP;
  FOR r IN SELECT nspname FROM pg_namespace
           WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname !~ '^pg_' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
  FOR r IN SELECT pubname FROM pg_publication LOOP
    EXECUTE format('DROP PUBLICATION %I', r.pubname);
  END LOOP;
END
$reset$;
CREATE SCHEMA public;
RESET client_min_messages;
"""


@dataclasses.dataclass
class Loaded:
    """One loaded case: its catalog, or why it failed to load."""

    key: str
    error: str | None
    catalog: Catalog | None


def role_names(sql: str) -> set[str]:
    """Role names a script grants to or names in policies (so they can be created first)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            spec = node.get("RoleSpec")
            if isinstance(spec, dict) and spec.get("roletype") == "ROLESPEC_CSTRING" and spec.get("rolename"):
                found.add(spec["rolename"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(parser.parse_sql_json(sql)))
    return found


def parses(sql: str) -> bool:
    try:
        parser.parse_sql(sql)
    except Exception:
        return False
    return True


def ensure_roles(remote: Remote, names: Iterable[str]) -> None:
    """Create the roles the corpora grant to (cluster-wide, idempotent, one round trip)."""
    wanted = sorted({n for n in names if n.lower() not in ("postgres", "public")})
    if not wanted:
        return
    body = "\n".join(
        "  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = " + _literal(n) + ") THEN "
        "EXECUTE format('CREATE ROLE %I', " + _literal(n) + "); END IF;"
        for n in wanted
    )
    remote.psql(f"DO $roles$\nBEGIN\n{body}\nEND\n$roles$;", "postgres")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclasses.dataclass(frozen=True)
class LoadItem:
    """A script to load: ``schemas`` are created first (a harness's schemas), and a
    ``declarative`` script whose statements fail in file order is retried in dependency order."""

    key: str
    sql: str
    schemas: tuple[str, ...] = ()
    declarative: bool = False


def _prelude(schemas: Sequence[str]) -> str:
    return "".join(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(s)};\n" for s in schemas)


def declarative_block(sql: str) -> str:
    """A DO block running the statements repeatedly until none fails or no progress is made.

    psqldef's desired schemas are declarations, not scripts: a foreign key may name
    a table declared further down.  Retrying failed statements finds an order.
    """
    statements = [s for s in parser.split(sql) if s.strip()]
    array = ", ".join(f"$opsagent_s${s}$opsagent_s$" for s in statements)
    return f"""DO $opsagent_load$
DECLARE todo text[] := ARRAY[{array}]::text[]; pending text[]; s text; progress boolean; last text;
BEGIN
  LOOP
    pending := '{{}}'; progress := false;
    FOREACH s IN ARRAY todo LOOP
      BEGIN
        EXECUTE s; progress := true;
      EXCEPTION WHEN others THEN
        pending := pending || s; last := SQLERRM;
      END;
    END LOOP;
    EXIT WHEN cardinality(pending) = 0 OR NOT progress;
    todo := pending;
  END LOOP;
  IF cardinality(pending) > 0 THEN RAISE EXCEPTION '%', last; END IF;
END
$opsagent_load$;
"""


def load_script(
    items: Sequence[LoadItem], exclude_tables: Sequence[str] = ("schema_migrations",), *, dependencies: bool = False
) -> str:
    """The psql script: for each item, reset, load (retrying declaratively if asked), mark, introspect."""
    query = introspection_sql(exclude_tables, dependencies=dependencies)
    parts: list[str] = []
    for item in items:
        parts.append(RESET_SQL + _prelude(item.schemas))
        parts.append("\\set LAST_ERROR_SQLSTATE 00000\n\\set LAST_ERROR_MESSAGE ''\n")
        parts.append(item.sql.rstrip() + "\n;\n")
        if item.declarative and "$opsagent_" not in item.sql:
            parts.append("SELECT :'LAST_ERROR_SQLSTATE' <> '00000' AS opsagent_retry \\gset\n\\if :opsagent_retry\n")
            parts.append(RESET_SQL + _prelude(item.schemas))
            parts.append("\\set LAST_ERROR_SQLSTATE 00000\n\\set LAST_ERROR_MESSAGE ''\n")
            parts.append(declarative_block(item.sql))
            parts.append("\\endif\n")
        parts.append(f"\\echo {MARK}{item.key} :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE\n")
        parts.append("COMMIT;\nRESET ROLE;\nRESET SESSION AUTHORIZATION;\n")
        parts.append(query)
        parts.append(f"\\echo {END}\n")
    return "".join(parts)


def load_many(
    remote: Remote, database: str, cases: Sequence[LoadItem], *, dependencies: bool = False
) -> dict[str, Loaded]:
    """Load each item into ``database`` in turn and introspect it (with pg_depend's edges: for plans);
    one round trip."""
    if not cases:
        return {}
    result = remote.psql(
        load_script(cases, dependencies=dependencies),
        database,
        extra=["-A", "-t", "-v", "ON_ERROR_STOP=0"],
        check=False,
        timeout=900,
    )
    loaded: dict[str, Loaded] = {}
    key: str | None = None
    error: str | None = None
    body: list[str] = []

    def finish() -> None:
        if key is None:
            return
        text = "\n".join(body).strip()
        catalog = None
        problem = error
        if problem is None:
            try:
                catalog = Catalog.from_json(json.loads(text))
            except ValueError as exc:
                problem = f"introspection output unreadable: {exc}: {text[:200]}"
        loaded[key] = Loaded(key, problem, catalog)

    for line in result.text.splitlines():
        if line.startswith(MARK):
            finish()
            rest = line[len(MARK) :]
            key, _, state = rest.partition(" ")
            code, _, message = state.partition(" ")
            error = None if code == "00000" else f"{code} {message}".strip()
            body = []
        elif line == END:
            finish()
            key = None
        elif key is not None:
            body.append(line)
    finish()
    for item in cases:
        loaded.setdefault(item.key, Loaded(item.key, "no output (script aborted?): " + result.stderr[-300:], None))
    return loaded


# ---------------------------------------------------------------- sqldef cases

PG_MAJOR = 15


@dataclasses.dataclass
class SqldefCase:
    """One psqldef YAML case, with whether current and desired are expected to differ."""

    name: str
    current: str
    desired: str
    expect_difference: bool
    skip: str | None = None


def _major(version: str) -> int:
    return int(str(version).split(".")[0])


def classify(name: str, case: dict[str, Any]) -> SqldefCase:
    """Decide what the case expects from a structural diff, or why it does not apply."""
    current = case.get("current") or ""
    desired = case.get("desired") or ""
    up = (case.get("up") or "").strip()
    result = SqldefCase(name, current, desired, bool(up))
    if "min_version" in case and _major(case["min_version"]) > PG_MAJOR:
        result.skip = f"needs PostgreSQL >= {case['min_version']}"
    elif "max_version" in case and _major(case["max_version"]) < PG_MAJOR:
        result.skip = f"needs PostgreSQL <= {case['max_version']}"
    elif "error" in case:
        result.skip = "expects psqldef to report an error"
    elif "up" not in case and current.strip():
        result.skip = "idempotency-only case with a current schema (no expected migration)"
    elif "up" not in case:
        result.expect_difference = bool(desired.strip())  # psqldef builds desired from an empty database
    elif not up and case.get("enable_drop") is False:
        result.skip = "enable_drop: false (psqldef's empty migration omits drops)"
    elif not up and case.get("manage"):
        result.skip = "manage: limits what psqldef compares"
    elif not up and "managed_roles" in case:
        result.skip = "managed_roles: limits which grants psqldef compares"
    elif case.get("flavor") == "pgvector":
        result.skip = "needs the pgvector extension (not installed)"
    if result.skip is None and not (parses(current) and parses(desired)):
        result.skip = "SQL does not parse with PostgreSQL 15's parser"
    return result


def load_items(case: SqldefCase) -> tuple[LoadItem, LoadItem]:
    """Both sides of a case; schemas a side uses without creating come from the harness (as in psqldef's tests)."""
    named_cur, created_cur = schema_refs(case.current)
    named_des, created_des = schema_refs(case.desired)
    harness = (named_cur - created_cur) | (named_des - created_des)
    return (
        LoadItem(case.name + "#current", case.current, tuple(sorted(harness - created_cur)), declarative=True),
        LoadItem(case.name + "#desired", case.desired, tuple(sorted(harness - created_des)), declarative=True),
    )


_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "public", "information_schema"})


def schema_refs(sql: str) -> tuple[set[str], set[str]]:
    """(schemas the script names, schemas it creates) — from the parse tree, not regexes."""
    named: set[str] = set()
    created: set[str] = set()

    def strings(items: Any) -> list[str]:
        out = []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and isinstance(item.get("String"), dict):
                out.append(str(item["String"].get("sval", "")))
        return out

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "relname" in node and node.get("schemaname"):  # a RangeVar
                named.add(str(node["schemaname"]))
            if "CreateSchemaStmt" in node and isinstance(node["CreateSchemaStmt"], dict):
                created.add(str(node["CreateSchemaStmt"].get("schemaname")))
            stmt = node.get("VariableSetStmt")
            if isinstance(stmt, dict) and stmt.get("name") == "search_path":
                for arg in stmt.get("args", []):
                    value = arg.get("A_Const", {}).get("sval", {}).get("sval") if isinstance(arg, dict) else None
                    if value:
                        named.add(value)
            for key in ("typeName", "defnames", "funcname", "names"):
                parts = strings(node.get(key))
                if len(parts) >= 2:
                    named.add(parts[0])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(parser.parse_sql_json(sql)))
    return named - _SYSTEM_SCHEMAS, created
