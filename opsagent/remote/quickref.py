"""The seed's ssh one-liners (``\\dt``, ``\\d table``, psql) as library calls."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from .. import resources
from ..errors import UsageError
from ..inventory import HostConfig, Inventory
from ..sqlquote import ident, literal
from .transport import Endpoint, Remote, resolve_endpoint, ssh_argv

COUNT_LIMIT_BYTES = 8 * 1024 * 1024
"""A never-analysed table up to this size is counted (milliseconds); a larger one says "unknown"."""

# never-analysed tables: counted when small, else "unknown" (the file says why)
TABLES_SQL = resources.fill(resources.sql("quickref_tables"), COUNT_LIMIT_BYTES=str(COUNT_LIMIT_BYTES))


@dataclasses.dataclass(frozen=True)
class TableInfo:
    """One table; ``rows_estimate`` is None when unknown (never analysed and too big to count), see ``rows_source``."""

    schema: str
    name: str
    kind: str
    rows_estimate: int | None
    total_bytes: int
    table_bytes: int
    rows_source: str = "statistics"
    """``statistics`` (the planner's estimate), ``count`` (counted now: never analysed, small) or ``unknown``."""

    @property
    def rows_shown(self) -> str:
        return "unknown" if self.rows_estimate is None else f"{self.rows_estimate:,}"


def list_tables(remote: Remote) -> list[TableInfo]:
    """Tables with row estimate and size, in one round trip."""
    return [TableInfo(**row) for row in remote.query_json(TABLES_SQL)]


def describe_table(remote: Remote, table: str) -> str:
    """psql's own ``\\d`` output for one table (the seed's describe one-liner).

    The name never reaches a shell or psql's command-line parser: the quoted pattern
    travels over stdin as a SQL literal, lands in a psql variable (``\\gset``) and
    ``\\d :var`` uses the value as is (psql does not rescan an interpolated value, so
    backquotes, ``:names`` and newlines in it stay part of the name).
    """
    if not table.strip():
        raise UsageError("describe needs a table name")
    pattern = ".".join(ident(part) for part in table.split(".", 1))
    script = f"SELECT {literal(pattern)} AS opsagent_describe \\gset\n\\d :opsagent_describe\n"
    result = remote.psql(script, check=False)
    text = result.text.strip()
    if result.exit_status != 0 and result.stderr.strip() and "Did not find any relation" not in result.stderr:
        raise remote.failure(["psql"], result)
    if not text:
        raise UsageError(f"{remote.host.name}: no table named {table!r} in database {remote.host.database}")
    return text


def run_sql(remote: Remote, sql: str) -> str:
    """SQL (or psql meta-commands) through psql over stdin, its aligned output as text.

    Over stdin, never ``-c``: a command line is visible to every user of the server
    (``ps``), and the SQL may hold a password (``ALTER ROLE ... PASSWORD``).
    """
    return remote.psql(sql if sql.endswith("\n") else sql + "\n").text


def interactive_ssh_argv(
    host: HostConfig | Endpoint, remote_argv: list[str], *, inventory: Inventory | None = None, tty: bool = True
) -> list[str]:
    """The real ``ssh -t`` command line for an interactive psql (a terminal needs a real ssh client).

    Built from the endpoint opsagent itself connects to (alias, port, user, keys,
    known_hosts, gateways and ProxyJump hops resolved once), with host keys checked
    strictly on every hop.
    """
    endpoint = host if isinstance(host, Endpoint) else resolve_endpoint(host, inventory)
    return ssh_argv(endpoint, shlex.join(remote_argv), tty=tty)


def tables_as_dicts(tables: list[TableInfo]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(t) for t in tables]
