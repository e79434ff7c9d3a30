"""quickref: SQL never on the remote command line; table names for describe are data, never code."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from opsagent.errors import UsageError
from opsagent.remote.quickref import describe_table, run_sql
from opsagent.remote.transport import Remote

from .conftest import Project, SandboxHandle


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def server_side_cmdlines(sandbox: SandboxHandle) -> list[str]:
    """Command lines of the processes that sshd of the sandbox started (the "server" side)."""
    sshd = int((Path(sandbox.state.ssh_dir) / "sshd.pid").read_text().split()[0])
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid, hops = int(entry.name), 0
        while pid > 1 and hops < 20 and pid != sshd:
            pid, hops = _parent(pid), hops + 1
        if pid == sshd:
            try:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
            except OSError:
                continue
    return found


def test_psql_c_sends_the_sql_over_stdin_not_the_command_line(project: Project, sandbox: SandboxHandle) -> None:
    secret = f"s3cr3t_{uuid.uuid4().hex[:8]}"
    sql = f"SELECT pg_sleep(2.5), '{secret}' AS password"
    env = {"OPSAGENT_INVENTORY": str(project.root / "inventory.yaml"), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsagent", "psql", "--host", "sandbox", "-c", sql],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    seen_psql = False
    leaked: list[str] = []
    while proc.poll() is None:
        lines = server_side_cmdlines(sandbox)
        seen_psql = seen_psql or any(" psql " in f" {line} " or "/psql " in line for line in lines)
        leaked += [line for line in lines if secret in line]
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert secret in out  # the command ran and printed its result
    assert seen_psql, "the remote psql was never seen: the check would prove nothing"
    assert leaked == []


def test_psql_c_takes_meta_commands_and_sql_without_semicolon(remote: Remote) -> None:
    assert "42" in run_sql(remote, "SELECT 42 AS answer")
    assert "List of relations" in run_sql(remote, "CREATE TABLE t1 (id int);\n\\dt")


HOSTILE_NAMES = [
    'dq"uote',
    "it's",
    "semi; DROP TABLE victim; --",
    "$(touch {canary})",
    "`touch {canary}`",
    "x \\! touch {canary}",
    "\\! touch {canary}",
    "new\nline \\! touch {canary}",
    ":canary :'canary' :\"canary\"",
    "$opsagent$ $$ $q$",
    "-o x -f {canary}",
    "dbname=evil host=x",
    "star*",
    "ünïcødé ✓ 表",
    "tab\tname",
    "back\\slash\\\\",
    "%I %s %L",
    "'; \\gexec",
]


@pytest.mark.parametrize("payload", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_describe_hostile_table_names(remote: Remote, payload: str) -> None:
    canary = Path(f"/tmp/oaq{uuid.uuid4().hex[:8]}")
    name = payload.format(canary=canary)
    assert len(name.encode()) < 64
    remote.psql(
        f"CREATE TABLE victim (id int); CREATE TABLE {quote_ident(name)} (hostile_col int);"
        f"CREATE TABLE {quote_ident(name + 'x')} (decoy_col int);"
    )
    text = describe_table(remote, name)
    assert "hostile_col" in text and "decoy_col" not in text, text
    assert name.split("\n")[0] in text
    with pytest.raises(UsageError, match="no table named"):
        describe_table(remote, name + "_absent")
    assert remote.psql("SELECT to_regclass('public.victim') IS NOT NULL", extra=["-A", "-t"]).text.strip() == "t"
    assert not canary.exists(), "a table name ran a shell command"


def test_describe_hostile_schema_qualified_name(remote: Remote) -> None:
    canary = Path(f"/tmp/oaq{uuid.uuid4().hex[:8]}")
    schema, table = f"s`touch {canary}`", f"t$(touch {canary})"
    remote.psql(
        f"CREATE SCHEMA {quote_ident(schema)}; CREATE TABLE {quote_ident(schema)}.{quote_ident(table)} (inner_col int);"
    )
    text = describe_table(remote, f"{schema}.{table}")
    assert "inner_col" in text
    assert not canary.exists()


def test_describe_hostile_name_through_the_cli(project: Project) -> None:
    canary = Path(f"/tmp/oaq{uuid.uuid4().hex[:8]}")
    name = f"cli`touch {canary}`;\\! touch {canary}"
    project.psql(f"CREATE TABLE {quote_ident(name)} (cli_col int)")
    result = project.run("describe", name, "--host", "sandbox")
    assert result.returncode == 0, result.stderr
    assert "cli_col" in result.stdout
    assert not canary.exists()
