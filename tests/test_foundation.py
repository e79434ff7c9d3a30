"""Foundation: inventory validation, verified SSH, sudo, stdin streaming, quoting, CLI front doors."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import paramiko
import pytest

from opsagent.errors import CommandFailed, ConfigError, HostKeyError
from opsagent.inventory import load_inventory
from opsagent.remote.transport import open_remote

from .conftest import REPO, Project, SandboxHandle


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsagent", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------- inventory (pure)

INVENTORY_ERRORS = [
    (
        "hosts:\n  prod:\n    address: x\n    port: 22a\n",
        "inventory.yaml:4 hosts.prod.port: expected an integer, got \"22a\"",
    ),
    ("hosts:\n  prod:\n    address: x\n    colour: red\n", "inventory.yaml:4 hosts.prod.colour: unknown key"),
    ("hosts:\n  prod: {address: x}\ngroups:\n  db: [prod, nope]\n", "inventory.yaml:4 groups.db: unknown host 'nope'"),
    ("hosts:\n  a: {address: x, gateway: b}\n  b: {address: y, gateway: a}\n", "gateway loop: a -> b -> a"),
    ("defaults:\n  keep_backups: many\nhosts: {}\n", "inventory.yaml:2 defaults.keep_backups: expected an integer"),
    ("hosts:\n  prod: {address: x\n", "inventory.yaml:3: invalid YAML"),
    ("hostz: {}\n", "inventory.yaml:1 hostz: unknown key"),
    ("hosts:\n  prod:\n    address: ${NOPE_NOT_SET}\n", "environment variable NOPE_NOT_SET is not set"),
    (
        "hosts:\n  prod:\n    address: x\n    pg_bindir: usr/lib/postgresql/15/bin\n",
        "inventory.yaml:4 hosts.prod.pg_bindir: expected an absolute path",
    ),
    (
        "defaults:\n  pg_bindir: /usr/lib/postgresql/15/bin:/tmp/evil\nhosts: {}\n",
        "inventory.yaml:2 defaults.pg_bindir: expected a directory without ':'",
    ),
]


@pytest.mark.parametrize(("text", "expected"), INVENTORY_ERRORS)
def test_inventory_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "inventory.yaml").write_text(text)
    os.environ.pop("NOPE_NOT_SET", None)
    with pytest.raises(ConfigError) as info:
        load_inventory(tmp_path / "inventory.yaml")
    assert expected in info.value.message
    assert info.value.message.startswith(str(tmp_path / "inventory.yaml"))


def test_inventory_contract_keys_defaults_env_and_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROD_ADDR", "10.0.0.5")
    (tmp_path / "inventory.yaml").write_text(
        textwrap.dedent("""\
        defaults:
          user: root
          database: trad
          become: postgres
          backup_dir: /var/backups/opsagent
          keep_backups: 10
        hosts:
          prod:
            address: ${PROD_ADDR}
            port: 22
            identity_file: keys/id_ed25519
            pg_host: /var/run/postgresql
            pg_port: 5432
          staging:
            address: ${STAGING_ADDR:-staging.internal}
            gateway: prod
            database: trad_staging
        groups:
          all-db: [prod, staging]
        paths:
          migrations: db/migrations
    """)
    )
    inv = load_inventory(tmp_path / "inventory.yaml")
    prod, staging = inv.host("prod"), inv.host("staging")
    assert (prod.address, prod.port, prod.user, prod.database, prod.pg_port) == ("10.0.0.5", 22, "root", "trad", 5432)
    assert prod.identity_file == str(tmp_path / "keys" / "id_ed25519")
    assert (staging.address, staging.gateway, staging.database, staging.user) == (
        "staging.internal",
        "prod",
        "trad_staging",
        "root",
    )
    assert [h.name for h in inv.resolve("all-db")] == ["prod", "staging"]
    assert [h.name for h in inv.resolve("staging,prod")] == ["staging", "prod"]
    assert [h.name for h in inv.resolve("all")] == ["prod", "staging"]
    assert inv.paths.migrations == tmp_path / "db" / "migrations"
    assert inv.paths.schema == tmp_path / "sql" / "schema.sql"
    assert staging.groups == ("all-db",)


def test_cli_reports_inventory_error_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text("hosts:\n  prod:\n    address: x\n    port: 22a\n")
    result = run_cli("hosts", cwd=tmp_path)
    assert result.returncode == 2
    assert "inventory.yaml:4 hosts.prod.port: expected an integer" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_both_front_doors_list_the_same_tasks() -> None:
    inv_list = subprocess.run(
        [sys.executable, "-m", "invoke", "--list"], cwd=REPO, capture_output=True, text=True, check=True
    )
    ops_list = run_cli("--list", cwd=REPO)
    assert ops_list.returncode == 0
    for name in ("doctor", "hosts", "sandbox.up", "sandbox.down", "sandbox.status"):
        assert name in inv_list.stdout
        assert name in ops_list.stdout
    helped = run_cli("doctor", "--help", cwd=REPO)
    options = helped.stdout.split("Options:")[1]
    assert "--host=STRING" in options
    assert not re.search(r"(^|\s)-h\b", options)  # -h stays --help


def test_cli_start_up_leaves_task_only_modules_unloaded() -> None:
    # every command pays the CLI's imports (sync's benchmark counts them): plan/diff machinery, progress bars,
    # syntax highlighting and pglast's printers load in the tasks that use them
    code = "import sys, opsagent.cli; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert {"opsagent.cli", "invoke.program"} <= loaded  # the program itself; the transport loads with a task
    # task modules load when their task is named on the command line (stand-ins keep every name for help)
    lazy = {
        "opsagent.schema.catalog",
        "opsagent.schema.declarative",
        "opsagent.schema.compare",
        "opsagent.schema.drift",
        "opsagent.schema.plan",
        "opsagent.migrate.sync",
        "opsagent.migrate.lint",
        "opsagent.cli.sync",
        "rich.progress",
        "rich.syntax",
        "pygments",
        "pglast.stream",
    }
    assert loaded & lazy == set()


@pytest.mark.parametrize(
    ("task", "flag", "expected"),
    [("new", "--help", "--from-diff"), ("describe", "-h", "--host=STRING"), ("backups.get", "--help", "--name=STRING")],
)
def test_help_after_a_task_with_a_positional_argument_is_help(
    tmp_path: Path, task: str, flag: str, expected: str
) -> None:
    """Invoke would take ``--help`` as the positional value (``inv new --help`` would create 001_help.sql)."""
    (tmp_path / "inventory.yaml").write_text("hosts: {}\n")
    result = run_cli(task, flag, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: opsagent {task} [--options] <") and expected in result.stdout
    assert "Docstring:" in result.stdout and list(tmp_path.iterdir()) == [tmp_path / "inventory.yaml"]


def test_unknown_flag_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("hosts", "--bogus", cwd=tmp_path)
    assert result.returncode == 2
    assert "--bogus" in result.stderr


# ---------------------------------------------------------------- real sshd + PostgreSQL


def test_login_sudo_and_multi_statement_stdin(remote) -> None:  # type: ignore[no-untyped-def]
    script = textwrap.dedent("""\
        CREATE TABLE t (id int PRIMARY KEY, note text);
        CREATE FUNCTION f(x int) RETURNS int LANGUAGE plpgsql AS $$
        BEGIN
          -- a ; inside a body, and a 'quoted; string'
          RETURN x + 1;
        END;
        $$;
        INSERT INTO t VALUES (f(1), 'semi;colon'), (f(2), $q$dollar $$ quoted$q$);
        SELECT json_agg(note ORDER BY id) FROM t;
    """)
    out = remote.psql(script, extra=["-A", "-t"]).text.strip()
    assert out == '["semi;colon", "dollar $$ quoted"]'
    assert remote.run(["id", "-un"]).text.strip() == "postgres"
    assert remote.run(["id", "-un"], become=False).text.strip() == "root"


def test_large_binary_output_arrives_intact(remote) -> None:  # type: ignore[no-untyped-def]
    argv = [
        "sh",
        "-c",
        "head -c 52428800 /dev/urandom > /tmp/.oa_big && sha256sum /tmp/.oa_big | cut -c1-64 >&2 && cat /tmp/.oa_big "
        "&& rm /tmp/.oa_big",
    ]
    result = remote.run(argv, become=False, timeout=120)
    assert len(result.stdout) == 52428800
    assert hashlib.sha256(result.stdout).hexdigest() == result.stderr.strip()


def test_hostile_database_name_is_quoted(sandbox: SandboxHandle, tmp_path: Path) -> None:
    hostile = 'trad"; rm -rf /tmp/x; "'
    marker = Path("/tmp/x")
    marker.mkdir(exist_ok=True)
    (marker / "keep").write_text("still here")
    sandbox.admin.psql(
        f'DROP DATABASE IF EXISTS "{hostile.replace(chr(34), chr(34) * 2)}"; '
        f'CREATE DATABASE "{hostile.replace(chr(34), chr(34) * 2)}"',
        database="postgres",
    )
    with sandbox.remote(hostile) as r:
        assert r.psql("SELECT current_database()", extra=["-A", "-t"]).text.strip() == hostile
    assert (marker / "keep").read_text() == "still here"


def test_unknown_host_key_is_refused_with_fingerprint(sandbox: SandboxHandle, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError) as info, sandbox.remote(known_hosts=str(empty)):
        pass
    assert "unknown host key" in info.value.message and "SHA256:" in info.value.message
    assert "--accept-new-host-key" in (info.value.hint or "")
    assert empty.read_text() == ""
    # accepting once records it; the next connection verifies against it
    with open_remote(sandbox.host_for(known_hosts=str(empty)), accept_new_host_key=True) as r:
        assert r.run(["true"], become=False).ok
    assert "ssh-ed25519" in empty.read_text()
    with sandbox.remote(known_hosts=str(empty)) as r:
        assert r.run(["true"], become=False).ok


def test_changed_host_key_is_refused_always(sandbox: SandboxHandle, tmp_path: Path) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(sandbox.state.identity_file)  # any other ed25519 key
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sandbox.state.ssh_port} ssh-ed25519 {other.get_base64()}\n")
    for accept in (False, True):
        with (
            pytest.raises(HostKeyError) as info,
            open_remote(sandbox.host_for(known_hosts=str(known)), accept_new_host_key=accept),
        ):
            pass
        assert "HOST KEY CHANGED" in info.value.message


def test_sudo_without_nopasswd_fails_fast_with_hint(sandbox: SandboxHandle) -> None:
    user = "oa_nosudo"
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", user], capture_output=True, check=False)
    subprocess.run(["usermod", "-p", "*", user], capture_output=True, check=True)  # unlocked, but no password
    keyfile = Path(sandbox.state.ssh_dir) / f"authorized_keys_{user}"
    keyfile.write_text((Path(sandbox.state.ssh_dir) / "client_key.pub").read_text())
    keyfile.chmod(0o644)
    try:
        with sandbox.remote(user=user) as r, pytest.raises(CommandFailed) as info:
            r.psql("SELECT 1")
        assert "needs a password" in info.value.message
        assert "NOPASSWD" in (info.value.hint or "")
    finally:
        keyfile.unlink()


def test_doctor_passes_on_contract_keys_only(project: Project) -> None:
    result = project.run("doctor", "--host", "sandbox")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "tcp reach",
        "host key",
        "login",
        "sudo -n -u postgres",
        "psql (client)",
        "pg_dump (client)",
        "server",
        "database",
        "backup_dir",
    ):
        assert f"✔ {name}" in result.stdout
    as_json = project.run("doctor", "--host", "sandbox", "--json")
    assert '"ok": true' in as_json.stdout


def test_doctor_reports_missing_database(project: Project, sandbox: SandboxHandle) -> None:
    inv = (
        (project.root / "inventory.yaml")
        .read_text()
        .replace(f"database: {project.host.database}", "database: no_such_db")
    )
    (project.root / "inventory.yaml").write_text(inv)
    result = project.run("doctor", "--host", "sandbox")
    assert result.returncode == 1
    assert "✘ database" in result.stdout and "no_such_db" in result.stdout


def test_doctor_unreachable_port(project: Project, sandbox: SandboxHandle) -> None:
    from opsagent.remote.sandbox import free_port

    inv = (
        (project.root / "inventory.yaml").read_text().replace(f"port: {sandbox.state.ssh_port}", f"port: {free_port()}")
    )
    (project.root / "inventory.yaml").write_text(inv)
    result = project.run("doctor", "--host", "sandbox")
    assert result.returncode == 1
    assert "✘ tcp reach" in result.stdout


def test_remote_command_count_and_connection_reuse(sandbox: SandboxHandle) -> None:
    with sandbox.remote("postgres") as r:
        transport = r.connection.client.get_transport()
        for _ in range(3):
            r.psql("SELECT 1")
        assert r.command_count == 3
        assert r.connection.client.get_transport() is transport


def test_the_suites_hosts_run_commands_without_the_login_users_bashrc(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """The suite's sshd makes every command's bash a nested shell (``SHLVL``), which reads no ``~/.bashrc``; a
    sandbox made for a user keeps the login shell as sshd gives it."""
    from opsagent.remote.sandbox import Sandbox, SandboxState

    assert sandbox.admin.run(["sh", "-c", 'echo "$SHLVL"'], become=False).text.strip() == "1"
    configs = {}
    for login_rc in (True, False):
        made = Sandbox(tmp_path / str(login_rc), login_rc=login_rc)
        state = SandboxState("sandbox", str(made.root), 1, 2, "app")
        made.root.mkdir()
        made._create_ssh(state)
        configs[login_rc] = (made.root / "ssh" / "sshd_config").read_text().splitlines()
    assert "SetEnv SHLVL=1" in configs[False] and not any("SHLVL" in line for line in configs[True])


def test_a_killed_benchmark_still_stops_and_deletes_its_sandbox(tmp_path: Path) -> None:
    """``kill`` (SIGTERM) of a benchmark in its temporary sandbox: the cluster and sshd stop, the folder goes."""
    import signal

    program = textwrap.dedent(
        """
        import sys, time
        sys.path.insert(0, sys.argv[1])
        from opsagent.remote.sandbox import temporary_sandbox
        with temporary_sandbox("sandbox", "oa-killed-") as (base, state):
            print(base, state.root, flush=True)
            time.sleep(300)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", program, str(REPO)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        base, root = child.stdout.readline().split()
        assert Path(root, "pg", "data", "postmaster.pid").exists()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=120) == 143, child.stderr.read() if child.stderr else ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not Path(base).exists()
    running = subprocess.run(["pgrep", "-f", root], capture_output=True, text=True, check=False).stdout
    assert running == "", running  # neither postgres nor sshd of that sandbox


def test_host_config_is_frozen() -> None:
    from opsagent.inventory import HostConfig

    host = HostConfig(name="x", address="y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        host.address = "z"  # type: ignore[misc]
