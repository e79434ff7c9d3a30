"""One SSH endpoint everywhere: ~/.ssh/config aliases, ProxyJump and inventory gateways mean the same thing
to the connection, ``doctor``, ``hosts``, ``psql -c``, ``status`` and the interactive ``ssh`` command line."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from opsagent.inventory import load_inventory
from opsagent.remote.quickref import interactive_ssh_argv
from opsagent.remote.transport import Remote, open_remote, resolve_endpoint

from .conftest import Project, SandboxHandle

SERVER_KEYS = ("become", "pg_host", "pg_port", "database", "backup_dir")


def server_part(project: Project) -> dict[str, object]:
    return {key: getattr(project.host, key) for key in SERVER_KEYS}


@pytest.fixture
def fake_home(tmp_path: Path, sandbox: SandboxHandle) -> Path:
    """A HOME whose ~/.ssh/config knows the sandbox only by aliases (Fabric reads ~/.ssh/config from $HOME)."""
    home = tmp_path / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True)
    state = sandbox.state
    (ssh / "config").write_text(
        f"Host revdb\n  HostName 127.0.0.1\n  Port {state.ssh_port}\n  User root\n"
        f"  IdentityFile {state.identity_file}\n"
        f"  UserKnownHostsFile {state.known_hosts}\n\n"
        f"Host revjump\n  HostName 127.0.0.1\n  Port {state.ssh_port}\n  User root\n"
        f"  IdentityFile {state.identity_file}\n\n"
        f"Host revdb-behind\n  HostName 127.0.0.1\n  Port {state.ssh_port}\n  User root\n"
        f"  IdentityFile {state.identity_file}\n"
        f"  ProxyJump revjump\n"
    )
    (ssh / "known_hosts").write_text(Path(state.known_hosts).read_text())  # the default known_hosts of that HOME
    return home


def write(project: Project, hosts: dict[str, dict[str, object]]) -> None:
    (project.root / "inventory.yaml").write_text(yaml.safe_dump({"hosts": hosts}, sort_keys=False))


def in_home(home: Path) -> dict[str, str]:
    return {"HOME": str(home)}


def run_built_ssh(argv: list[str], home: Path, sql: str) -> subprocess.CompletedProcess[str]:
    """Run the interactive command line without a terminal, SQL on stdin: proves it connects where it should."""
    assert argv[0] == "ssh"
    return subprocess.run(
        ["ssh", "-o", "BatchMode=yes", *argv[1:]],
        input=sql,
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=False,
    )


# ---------------------------------------------------------------- an alias known only to ~/.ssh/config


def test_alias_only_host_works_for_doctor_psql_status_and_hosts(project: Project, fake_home: Path) -> None:
    write(project, {"revdb": server_part(project)})  # no address, user, port, key or known_hosts: all from ssh_config
    doctor = project.run("doctor", "--host", "revdb", env=in_home(fake_home))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "✔ tcp reach: 127.0.0.1:" in doctor.stdout and "(revdb)" in doctor.stdout
    assert "✔ host key" in doctor.stdout and "✔ login" in doctor.stdout and "✔ database" in doctor.stdout

    psql = project.run("psql", "--host", "revdb", "-c", "SELECT current_database() AS db", env=in_home(fake_home))
    assert psql.returncode == 0, psql.stderr
    assert project.host.database in psql.stdout

    project.write_migration("001_alias.sql", "CREATE TABLE through_alias (id int);\n")
    synced = project.run("sync", "--host", "revdb", "--yes", env=in_home(fake_home))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    status = project.run("status", "--host", "revdb", "--json", env=in_home(fake_home))
    assert status.returncode == 0, status.stderr
    assert "001" in status.stdout and "through_alias" in project.psql(
        "SELECT relname FROM pg_class WHERE relname = 'through_alias'"
    )

    hosts = project.run("hosts", "--json", env=in_home(fake_home))
    endpoint = json.loads(hosts.stdout)["hosts"][0]["endpoint"]
    assert (endpoint["alias"], endpoint["hostname"], endpoint["user"]) == ("revdb", "127.0.0.1", "root")

    without = project.run(
        "doctor", "--host", "revdb"
    )  # the real HOME knows no 'revdb': the same resolution fails the same way
    assert without.returncode == 1 and "✘ tcp reach" in without.stdout and "✔ host key" not in without.stdout


def test_alias_endpoint_drives_the_interactive_ssh_command(
    project: Project, fake_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(fake_home))
    write(project, {"revdb": server_part(project), "behind": {**server_part(project), "address": "revdb-behind"}})
    inv = load_inventory(project.root / "inventory.yaml")
    for name in ("revdb", "behind"):
        host = inv.host(name)
        with open_remote(host, inv) as remote:
            assert remote.endpoint is not None
            argv = interactive_ssh_argv(
                remote.endpoint, [*remote.become_prefix(), *remote.psql_argv(extra=["-A", "-t"])], tty=False
            )
        assert "StrictHostKeyChecking=yes" in argv and "revdb" not in argv
        done = run_built_ssh(argv, fake_home, "SELECT 'through ' || current_database();\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"through {project.host.database}"
    behind = resolve_endpoint(inv.host("behind"), inv)
    assert behind.via is not None and behind.via.alias == "revjump"  # ProxyJump from ~/.ssh/config is a hop


# ---------------------------------------------------------------- an inventory gateway


def gateway_inventory(project: Project, sandbox: SandboxHandle, gateway: SandboxHandle) -> None:
    hop = {
        k: v
        for k, v in gateway.state.host_entry().items()
        if k in ("address", "port", "user", "identity_file", "known_hosts")
    }
    target = {
        k: v
        for k, v in sandbox.state.host_entry().items()
        if k in ("address", "port", "user", "identity_file", "known_hosts")
    }
    write(project, {"gw": hop, "db": {**target, **server_part(project), "gateway": "gw"}})


@pytest.fixture(scope="module")
def gateway_sandbox(sandbox_factory: object) -> SandboxHandle:
    return sandbox_factory("gw")  # type: ignore[operator, no-any-return]


def test_gateway_host_for_doctor_and_interactive_psql(
    project: Project, sandbox: SandboxHandle, gateway_sandbox: SandboxHandle
) -> None:
    gateway_inventory(project, sandbox, gateway_sandbox)
    doctor = project.run("doctor", "--host", "db")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"✔ tcp reach: 127.0.0.1:{gateway_sandbox.state.ssh_port}" in doctor.stdout and "first hop" in doctor.stdout
    assert "(2 hops)" in doctor.stdout

    inv = load_inventory(project.root / "inventory.yaml")
    endpoint = resolve_endpoint(inv.host("db"), inv)
    assert endpoint.via is not None and endpoint.via.port == gateway_sandbox.state.ssh_port
    remote = Remote(inv.host("db"), None)  # type: ignore[arg-type]  # only to build the remote argv
    argv = interactive_ssh_argv(endpoint, [*remote.become_prefix(), *remote.psql_argv(extra=["-A", "-t"])], tty=False)
    assert "-J" not in argv and not any(a.endswith(" gw") for a in argv)  # 'gw' is an inventory name, not a DNS name
    done = run_built_ssh(argv, Path("/nonexistent"), "SELECT 40 + 2;\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"


def test_gateway_hop_host_key_is_checked_by_the_interactive_command(
    project: Project, sandbox: SandboxHandle, gateway_sandbox: SandboxHandle, tmp_path: Path
) -> None:
    gateway_inventory(project, sandbox, gateway_sandbox)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    document = yaml.safe_load((project.root / "inventory.yaml").read_text())
    document["hosts"]["gw"]["known_hosts"] = str(empty)
    (project.root / "inventory.yaml").write_text(yaml.safe_dump(document))
    inv = load_inventory(project.root / "inventory.yaml")
    argv = interactive_ssh_argv(inv.host("db"), ["true"], inventory=inv, tty=False)
    done = run_built_ssh(argv, Path("/nonexistent"), "")
    assert done.returncode != 0 and "Host key verification failed" in done.stderr
    doctor = project.run("doctor", "--host", "db")
    assert doctor.returncode == 1 and "✘ host key" in doctor.stdout and "gateway" in doctor.stdout


# ---------------------------------------------------------------- doctor never claims a handshake it did not have


@pytest.fixture
def not_ssh_port() -> Iterator[int]:
    """A TCP port that accepts and hangs up at once: reachable, but no SSH server."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(2)
    server.close()


def test_doctor_does_not_claim_a_verified_host_key_without_a_handshake(project: Project, not_ssh_port: int) -> None:
    write(
        project,
        {
            "odd": {
                "address": "127.0.0.1",
                "port": not_ssh_port,
                "known_hosts": project.host.known_hosts,
                **server_part(project),
            }
        },
    )
    result = project.run("doctor", "--host", "odd")
    assert result.returncode == 1
    assert "✔ tcp reach" in result.stdout and "✘ ssh handshake" in result.stdout
    assert "host key" not in result.stdout


def test_doctor_login_failure_after_a_verified_host_key(project: Project, sandbox: SandboxHandle) -> None:
    write(
        project,
        {
            "nobody": {
                "address": "127.0.0.1",
                "port": sandbox.state.ssh_port,
                "user": "oa_no_such_user",
                "identity_file": sandbox.state.identity_file,
                "known_hosts": sandbox.state.known_hosts,
                **server_part(project),
            }
        },
    )
    result = project.run("doctor", "--host", "nobody")
    assert result.returncode == 1
    assert "✔ host key" in result.stdout and "✘ login" in result.stdout


def test_three_hop_chain_with_percent_in_paths(
    project: Project,
    sandbox: SandboxHandle,
    gateway_sandbox: SandboxHandle,
    fake_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """db -> inventory gateway 'gw' -> whose alias has a ProxyJump in ~/.ssh/config: two jumps, nested ProxyCommands,
    and a known_hosts path with '%' (ssh would expand %h in it) on the way."""
    monkeypatch.setenv("HOME", str(fake_home))
    odd = tmp_path / "kh%h%%dir"
    odd.mkdir()
    known = odd / "known_hosts"
    known.write_text(Path(sandbox.state.known_hosts).read_text())
    target = {k: v for k, v in sandbox.state.host_entry().items() if k in ("address", "port", "user", "identity_file")}
    write(
        project,
        {
            "gw": {"address": "revdb-behind", "known_hosts": str(known)},
            "db": {**target, "known_hosts": str(known), **server_part(project), "gateway": "gw"},
        },
    )
    inv = load_inventory(project.root / "inventory.yaml")
    endpoint = resolve_endpoint(inv.host("db"), inv)
    assert [hop.alias for hop in endpoint.chain()] == ["revjump", "revdb-behind", "127.0.0.1"]
    with open_remote(inv.host("db"), inv) as remote:  # opsagent's own connection takes the same three hops
        assert remote.run(["true"], become=False).ok
    argv = interactive_ssh_argv(endpoint, ["echo", "three hops"], tty=False)
    done = run_built_ssh(argv, fake_home, "")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "three hops"
