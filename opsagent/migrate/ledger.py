"""The ledger table in the target database (``public.schema_migrations`` by default): SQL text and row decoding.

Everything here builds SQL (or decodes what it returned); running it is the job of
``opsagent.migrate.sync``, which batches it into as few remote round trips as possible.
Where it lives is configurable (inventory ``ledger_schema`` / ``ledger_table``), so
opsagent can share a database with Rails, Django or another tool that owns a
``schema_migrations`` of its own.

Which table is ours: a seed-style table ``(version, description, applied_at)`` is
adopted in place (missing columns are added and every row is kept); a table of the
configured name that lacks any of those three columns (Rails' ``schema_migrations
(version)``, a Django-like ``(id, app, name, applied)``) belongs to something else and
is never altered or written: ``refuse_foreign`` stops before anything runs.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from ..schema.exclusions import DEFAULT_SCHEMA, DEFAULT_TABLE, LedgerLocation
from ..sqlquote import ident, literal
from .files import AppliedRow, Migration, RepairChange

OWN_COLUMNS = (
    "version",
    "description",
    "applied_at",
)  # a table with all three is a ledger (ours, or the seed's to adopt)
FOREIGN_HINT_TABLE = "opsagent_migrations"
LOCK_CLASS = 0x6F707367  # "opsg": first half of the two-int advisory lock key
# columns added to a seed-style ledger; (name, type)
EXTRA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("checksum", "text"),
    ("applied_by", "text"),
    ("git_commit", "text"),
    ("execution_ms", "integer"),
    ("tool_version", "text"),
    ("success", "boolean"),  # false: a no-transaction migration started and did not finish (NULL: older rows, applied)
)


@dataclasses.dataclass(frozen=True)
class Ledger:
    """Where the ledger lives in one database, and the SQL that reads and writes it.

    Both names come from the inventory and reach SQL only through ``quote_ident`` /
    ``quote_literal``.
    """

    schema: str = DEFAULT_SCHEMA
    table_name: str = DEFAULT_TABLE

    @classmethod
    def for_host(cls, host: LedgerLocation) -> Ledger:
        """The ledger of an inventory host (``ledger_schema``, ``ledger_table``)."""
        return cls(host.ledger_schema, host.ledger_table)

    @property
    def display(self) -> str:
        """``schema.table`` as a user would write it (for messages)."""
        return f"{self.schema}.{self.table_name}"

    @property
    def table(self) -> str:
        return f"{ident(self.schema)}.{ident(self.table_name)}"

    @property
    def regclass(self) -> str:
        return literal(self.table)

    @property
    def lock_key(self) -> tuple[int, int]:
        """Two-int advisory lock key: constant class, object derived from the ledger's schema and table
        (both positive int4).

        For the default table the key is the one every earlier version used, so an old
        and a new opsagent syncing the same database still exclude each other.
        """
        return LOCK_CLASS, zlib.crc32(f"opsagent:{self.schema}.{self.table_name}".encode()) & 0x7FFFFFFF

    # -- reading

    def holders_query(self) -> str:
        """A JSON array of the sessions holding the sync lock (other than this one); no trailing semicolon."""
        cls, obj = self.lock_key
        return (
            "SELECT coalesce(json_agg(json_build_object('pid', a.pid, 'application_name', a.application_name, "
            "'client', coalesce(host(a.client_addr), 'local socket'), 'user', a.usename, "
            "'since', a.backend_start)), '[]') "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            f"WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {cls} AND l.objid = {obj} AND l.objsubid = 2 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.pid <> pg_backend_pid()"
        )

    def try_lock_sql(self) -> str:
        """Take the sync lock if it is free (never waits): a JSON boolean."""
        cls, obj = self.lock_key
        return f"SELECT to_json(pg_try_advisory_lock({cls}, {obj}))"

    def state_query(self) -> str:
        """One JSON value: ledger rows, its columns, and who holds the sync lock (psql script with \\if)."""
        holders = self.holders_query()
        columns = (
            "SELECT coalesce(json_agg(attname ORDER BY attnum), '[]') FROM pg_attribute "
            f"WHERE attrelid = to_regclass({self.regclass}) AND attnum > 0 AND NOT attisdropped"
        )
        rows = f"SELECT coalesce(json_agg(to_jsonb(t) ORDER BY t.version), '[]') FROM {self.table} t"
        own = ", ".join(literal(name) for name in OWN_COLUMNS)
        ours = (
            f"(SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass({self.regclass}) AND attnum > 0 "
            f"AND NOT attisdropped AND attname IN ({own})) = {len(OWN_COLUMNS)}"
        )
        return (  # a foreign table of that name (no version/description/applied_at): its columns only, never its rows
            f"SELECT to_regclass({self.regclass}) IS NOT NULL AS opsagent_has_ledger, "
            f"{ours} AS opsagent_ledger_ours \\gset\n"
            "\\if :opsagent_ledger_ours\n"
            f"SELECT json_build_object('exists', true, 'columns', ({columns}), 'rows', ({rows}),"
            f" 'holders', ({holders}), 'server_version', current_setting('server_version'));\n"
            "\\elif :opsagent_has_ledger\n"
            f"SELECT json_build_object('exists', true, 'columns', ({columns}), 'rows', '[]'::json,"
            f" 'holders', ({holders}), 'server_version', current_setting('server_version'));\n"
            "\\else\n"
            "SELECT json_build_object('exists', false, 'columns', '[]'::json, 'rows', '[]'::json,"
            f" 'holders', ({holders}), 'server_version', current_setting('server_version'));\n"
            "\\endif\n"
        )

    # -- writing

    def ensure_sql(self, existing_columns: Sequence[str]) -> str:
        """Create the ledger, or add the columns a seed-style table lacks; empty when nothing is needed."""
        missing = [(n, t) for n, t in EXTRA_COLUMNS if n not in existing_columns]
        if existing_columns and not missing:
            return ""
        parts: list[str] = []
        if not existing_columns:
            if self.schema != "public":
                parts.append(f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema)};")
            parts.append(
                f"CREATE TABLE IF NOT EXISTS {self.table} (version text PRIMARY KEY, description text, "
                "applied_at timestamptz NOT NULL DEFAULT now());"
            )
            missing = list(EXTRA_COLUMNS)
        adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {ident(n)} {t}" for n, t in missing)
        parts.append(f"ALTER TABLE {self.table} {adds};")
        return "\n".join(parts) + "\n"

    def insert_sql(
        self,
        migration: Migration,
        *,
        applied_by: str,
        git_commit: str | None,
        tool_version: str,
        execution_ms: str,
        returning: str = "",
        success: bool = True,
    ) -> str:
        """The ledger row of one migration; ``execution_ms`` is a SQL expression."""
        values = ", ".join(
            [
                literal(migration.version),
                literal(migration.description),
                "now()",
                literal(migration.checksum),
                literal(applied_by),
                literal(git_commit),
                execution_ms,
                literal(tool_version),
                "true" if success else "false",
            ]
        )
        tail = f" RETURNING {returning}" if returning else ""
        return (
            f"INSERT INTO {self.table} (version, description, applied_at, checksum, applied_by, git_commit, "
            f"execution_ms, tool_version, success) VALUES ({values}){tail}"
        )

    def finish_sql(self, migration: Migration, *, execution_ms: str, returning: str = "") -> str:
        """Mark a no-transaction migration's row (written with success = false before it ran) as finished."""
        tail = f" RETURNING {returning}" if returning else ""
        return (
            f"UPDATE {self.table} SET success = true, applied_at = now(), execution_ms = {execution_ms} "
            f"WHERE version = {literal(migration.version)}{tail}"
        )

    def baseline_sql(
        self, migrations: Iterable[Migration], *, applied_by: str, git_commit: str | None, tool_version: str
    ) -> str:
        """Record migrations as applied without running them (the caller passes only versions without a row)."""
        inserts = [
            self.insert_sql(
                m, applied_by=applied_by, git_commit=git_commit, tool_version=tool_version, execution_ms="NULL"
            )
            + ";"
            for m in migrations
        ]
        return "BEGIN;\n" + "\n".join(inserts) + "\nCOMMIT;\n"

    def repair_sql(self, changes: Iterable[RepairChange]) -> str:
        """Apply repair changes in one transaction."""
        lines = ["BEGIN;"]
        for change in changes:
            if change.action == "update_checksum":
                lines.append(
                    f"UPDATE {self.table} SET checksum = {literal(change.new_checksum)} "
                    f"WHERE version = {literal(change.version)};"
                )
            else:
                lines.append(f"DELETE FROM {self.table} WHERE version = {literal(change.version)};")
        lines.append("COMMIT;")
        return "\n".join(lines) + "\n"


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def decode_rows(raw: Iterable[Mapping[str, Any]]) -> list[AppliedRow]:
    """Ledger rows (any shape: seed or full) as AppliedRow."""
    rows: list[AppliedRow] = []
    for item in raw:
        rows.append(
            AppliedRow(
                version=str(item.get("version")),
                description=_str_or_none(item.get("description")),
                checksum=_str_or_none(item.get("checksum")),
                applied_at=_str_or_none(item.get("applied_at")),
                applied_by=_str_or_none(item.get("applied_by")),
                execution_ms=_int_or_none(item.get("execution_ms")),
                git_commit=_str_or_none(item.get("git_commit")),
                tool_version=_str_or_none(item.get("tool_version")),
                success=item.get("success") is not False,
            )
        )
    return rows


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """A session holding the sync lock (from pg_locks + pg_stat_activity)."""

    pid: int
    application_name: str
    client: str
    user: str
    since: str

    def describe(self) -> str:
        name = self.application_name or "unnamed session"
        return f"pid {self.pid} ({name}, user {self.user}, from {self.client}, connected since {self.since})"


def blockers_query(pid: int) -> str:
    """A JSON array describing the sessions that block backend ``pid`` (``pg_blocking_pids``):
    who, state, age, query."""
    return (
        "SELECT coalesce(json_agg(json_build_object('pid', a.pid, 'application_name', a.application_name, "
        "'state', a.state, 'user', a.usename, 'client', coalesce(host(a.client_addr), 'local socket'), "
        "'xact_age_s', round(extract(epoch FROM clock_timestamp() - a.xact_start)::numeric, 1), "
        "'query', left(split_part(btrim(a.query, E' \\n\\t\\r'), E'\\n', 1), 200)) ORDER BY a.pid), '[]') "
        f"FROM pg_stat_activity a WHERE a.pid = ANY (pg_blocking_pids({int(pid)}))"
    )


@dataclasses.dataclass(frozen=True)
class Blocker:
    """A session that blocked one of our statements (seen through ``pg_blocking_pids``)."""

    pid: int
    application_name: str
    state: str
    user: str
    client: str
    xact_age_s: float | None
    query: str

    def describe(self) -> str:
        name = self.application_name or "unnamed session"
        age = f", transaction open {self.xact_age_s:g}s" if self.xact_age_s is not None else ""
        query = f": {self.query}" if self.query else ""
        return f"pid {self.pid} ({name}, user {self.user}, {self.state or 'state unknown'}{age}){query}"


def decode_blockers(raw: Iterable[Mapping[str, Any]] | None) -> list[Blocker]:
    blockers: list[Blocker] = []
    for item in raw or ():
        age = item.get("xact_age_s")
        blockers.append(
            Blocker(
                pid=int(item.get("pid") or 0),
                application_name=str(item.get("application_name") or ""),
                state=str(item.get("state") or ""),
                user=str(item.get("user") or ""),
                client=str(item.get("client") or ""),
                xact_age_s=None if age is None else float(age),
                query=str(item.get("query") or ""),
            )
        )
    return blockers


def decode_holders(raw: Iterable[Mapping[str, Any]] | None) -> list[LockHolder]:
    return [
        LockHolder(
            pid=int(h.get("pid") or 0),
            application_name=str(h.get("application_name") or ""),
            client=str(h.get("client") or ""),
            user=str(h.get("user") or ""),
            since=str(h.get("since") or ""),
        )
        for h in raw or ()
    ]


@dataclasses.dataclass(frozen=True)
class LedgerState:
    """What one preflight query learned about the ledger."""

    exists: bool
    columns: list[str]
    rows: list[AppliedRow]
    holders: list[LockHolder]
    server_version: str = ""

    @classmethod
    def decode(cls, document: Mapping[str, Any]) -> LedgerState:
        return cls(
            exists=bool(document.get("exists")),
            columns=[str(c) for c in document.get("columns") or ()],
            rows=decode_rows(document.get("rows") or ()),
            holders=decode_holders(document.get("holders")),
            server_version=str(document.get("server_version") or ""),
        )

    @property
    def adoption_needed(self) -> bool:
        return self.exists and any(name not in self.columns for name, _ in EXTRA_COLUMNS)

    @property
    def foreign(self) -> bool:
        """A table of the ledger's name that is not a ledger (lacks version, description or applied_at)."""
        return self.exists and any(name not in self.columns for name in OWN_COLUMNS)

    def refuse_foreign(self, ledger: Ledger) -> None:
        """Stop (exit 2) before reading rows from, altering or writing into a table that belongs to another tool."""
        if not self.foreign:
            return
        columns = ", ".join(self.columns) or "none"
        suggestion = FOREIGN_HINT_TABLE if ledger.table_name != FOREIGN_HINT_TABLE else "opsagent_ledger"
        raise ConfigError(
            f"{ledger.display} belongs to something else (columns: {columns}; not an opsagent ledger, which has "
            f"version, description, applied_at): set 'ledger_table: {suggestion}' in inventory.yaml",
            hint="nothing was read from or written to that table; the setting goes under defaults: or the host",
        )
