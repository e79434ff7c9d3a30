"""Quick-reference tasks: the seed's ssh one-liners as tasks (tables, describe, psql)."""

from __future__ import annotations

import os
import subprocess

from invoke.context import Context
from rich.table import Table

from ..errors import ExitCode, UsageError
from ..remote.quickref import describe_table, interactive_ssh_argv, list_tables, run_sql, tables_as_dicts
from ..units import human_bytes
from .base import (
    ACCEPT_HELP,
    HOST_HELP,
    JSON_HELP,
    command,
    connect,
    fail,
    single_host,
)
from .environment import environment
from .progress import waiting


@command(help={"host": HOST_HELP, "json_": JSON_HELP, "accept_new_host_key": ACCEPT_HELP})
def tables(c: Context, host: str = "", json_: bool = False, accept_new_host_key: bool = False) -> None:
    """Tables of the host's database with row estimate and size (like \\dt+); \
never-analysed tables are counted or "unknown"."""
    env = environment(c)
    with waiting(f"reading the tables of {host}", console=env.err), connect(host, accept_new_host_key) as remote:
        found = list_tables(remote)
        database = remote.host.database
    if json_:
        env.print_json({"database": database, "tables": tables_as_dicts(found)})
        return
    table = Table(title=f"{database}: {len(found)} tables")
    for column, justify in (("table", "left"), ("rows (est.)", "right"), ("size", "right"), ("with indexes", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for t in found:
        table.add_row(f"{t.schema}.{t.name}", t.rows_shown, human_bytes(t.table_bytes), human_bytes(t.total_bytes))
    env.out.print(table)


@command(
    help={"table": "table name, optionally schema-qualified", "host": HOST_HELP, "accept_new_host_key": ACCEPT_HELP}
)
def describe(c: Context, table: str, host: str = "", accept_new_host_key: bool = False) -> None:
    """Columns, indexes, constraints and triggers of one table (psql's \\d)."""
    env = environment(c)
    with waiting(f"describing {table} on {host}", console=env.err), connect(host, accept_new_host_key) as remote:
        text = describe_table(remote, table)
    env.out.print(text, markup=False)


@command(
    name="psql",
    help={
        "host": HOST_HELP,
        "c": "run one SQL command and print its output instead of a session",
        "accept_new_host_key": ACCEPT_HELP,
    },
)
def psql_task(c: Context, host: str = "", c_: str = "", accept_new_host_key: bool = False) -> None:
    """Interactive psql on the host as the become user (through ssh -t), or -c "SQL" for one command."""
    env = environment(c)
    if c_:
        with connect(host, accept_new_host_key) as remote:
            env.out.print(run_sql(remote, c_), markup=False, end="")
        return
    single_host(host)
    if not env.interactive:
        raise UsageError("inv psql needs a terminal; use -c \"SQL\" for one command")
    with connect(host, accept_new_host_key) as remote:  # verifies the host keys (every hop) first
        assert remote.endpoint is not None
        argv = interactive_ssh_argv(remote.endpoint, [*remote.become_prefix(), *remote.psql_argv()])
    code = subprocess.call(argv, env=os.environ.copy())
    if code != 0:
        raise fail(ExitCode.FAILURE)
