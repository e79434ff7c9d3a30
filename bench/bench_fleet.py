"""Benchmark: ``sync`` of the same 20 migrations to 20 hosts (``--parallel 20``) vs to 1 host, same run.

Brings up ONE sandbox (real sshd + PostgreSQL) in a temp dir plus 20 more sshd
processes on other ports (same host key, one known_hosts line per port): 20 SSH
endpoints, each host with its own database on the one cluster.  Every host, and
every sshd, sudo, psql and backend, shares this machine's CPUs: the figures include
the servers' work, which a real fleet spreads over 20 machines.  Times the whole
CLI process (``python -m opsagent sync --yes --no-backup``) for one host, then for
the group of 20, each on fresh databases; prints both, the ratio (target <= 2)
and best-of.  Usage: ``python bench/bench_fleet.py [--hosts 20] [--count 20] [--repeat 3] [--login-rc]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsagent.remote.sandbox import SandboxState, free_port, temporary_sandbox  # noqa: E402


def write_migrations(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        (folder / f"{i:04d}_fleet_table_{i}.sql").write_text(
            f"CREATE TABLE fleet_t{i} (id bigint PRIMARY KEY, name text NOT NULL);\n"
            f"CREATE INDEX fleet_t{i}_name ON fleet_t{i} (name);\n"
        )


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"sshd on port {port} did not start")


def start_extra_sshd(state: SandboxState, folder: Path, count: int) -> list[tuple[int, Path]]:
    """``count`` more sshd processes: the sandbox's config (and so its ``login_rc``) on other ports; known_hosts
    gets a line per port."""
    folder.mkdir(parents=True, exist_ok=True)
    config = (state.ssh_dir / "sshd_config").read_text().splitlines()
    host_key = (state.ssh_dir / "host_key.pub").read_text().split()
    started: list[tuple[int, Path]] = []
    lines = []
    for i in range(count):
        port = free_port()
        pidfile = folder / f"sshd-{port}.pid"
        body = [
            f"Port {port}"
            if line.startswith("Port ")
            else f"PidFile {pidfile}"
            if line.startswith("PidFile ")
            else line
            for line in config
        ]
        path = folder / f"sshd_config-{i}"
        path.write_text("\n".join(body) + "\n")
        subprocess.run(["/usr/sbin/sshd", "-f", str(path), "-E", str(folder / f"sshd-{port}.log")], check=True)
        started.append((port, pidfile))
        lines.append(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    with open(state.known_hosts, "a") as known:
        known.writelines(lines)
    for port, _ in started:
        wait_port(port)
    return started


def stop_sshd(started: list[tuple[int, Path]]) -> None:
    for _, pidfile in started:
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)


def create_databases(state: SandboxState, count: int) -> list[str]:
    names = [f"fleet_{uuid.uuid4().hex[:8]}" for _ in range(count)]
    sql = "".join(f'CREATE DATABASE "{n}";\n' for n in names)
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "/usr/lib/postgresql/15/bin/psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            state.socket_dir,
            "-p",
            str(state.pg_port),
            "-d",
            "postgres",
        ],
        input=sql,
        text=True,
        check=True,
    )
    return names


def write_inventory(project: Path, state: SandboxState, ports: list[int], databases: list[str]) -> Path:
    hosts = {
        f"h{i + 1:02d}": {**state.host_entry(), "port": port, "database": db}
        for i, (port, db) in enumerate(zip(ports, databases, strict=True))
    }
    path = project / "inventory.yaml"
    path.write_text(yaml.safe_dump({"hosts": hosts, "groups": {"fleet": list(hosts)}}, sort_keys=False))
    return path


def server_pids(state: SandboxState, extra: list[tuple[int, Path]]) -> list[int]:
    """The postmaster and every sshd listener: they reap backends and sessions,
    so their children's CPU is the servers'."""
    files = [state.pg_dir / "data" / "postmaster.pid", state.ssh_dir / "sshd.pid", *(pidfile for _, pidfile in extra)]
    return [int(f.read_text().split()[0]) for f in files]


def server_cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_sync(
    project: Path, state: SandboxState, ports: list[int], spec: str, parallel: int, pids: list[int]
) -> tuple[float, float, float]:
    """One whole CLI run on fresh databases: wall, client CPU, server CPU; checks every host applied every migration."""
    inventory = write_inventory(project, state, ports, create_databases(state, len(ports)))
    argv = [
        sys.executable,
        "-m",
        "opsagent",
        "sync",
        "--host",
        spec,
        "--yes",
        "--no-backup",
        "--json",
        "--parallel",
        str(parallel),
    ]
    env = {**os.environ, "OPSAGENT_INVENTORY": str(inventory), "PYTHONPATH": str(REPO)}
    server = server_cpu(pids)
    cpu = child_cpu()
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    cpu = child_cpu() - cpu
    server = server_cpu(pids) - server
    if proc.returncode != 0:
        raise SystemExit(
            f"sync --host {spec} failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr.strip()[-2000:]}"
        )
    document = json.loads(proc.stdout)
    results = [h["details"] for h in document["hosts"]] if "hosts" in document else [document]
    if any(not r.get("applied") for r in results):
        raise SystemExit(f"sync --host {spec}: a host applied nothing")
    return elapsed, cpu, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20, help="number of hosts (sshd endpoints)")
    parser.add_argument("--count", type=int, default=20, help="number of migrations")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant (median reported)")
    parser.add_argument("--login-rc", action="store_true", help="let SSH sessions source the login user's ~/.bashrc")
    args = parser.parse_args()
    extra: list[tuple[int, Path]] = []
    # without --login-rc, bash does not source this machine's ~/.bashrc (root's runs ``pyenv init``: ~0.15 s of CPU
    # per SSH command, a property of this box, not of a server's deploy account): see Sandbox's login_rc
    with temporary_sandbox("bench", "oaf-", login_rc=args.login_rc) as (base, state):
        try:
            extra = start_extra_sshd(state, base / "sshd", args.hosts)
            ports = [port for port, _ in extra]  # the single host and the fleet use the same kind of endpoint
            project = base / "project"
            write_migrations(project / "sql" / "migrations", args.count)
            pids = server_pids(state, extra)
            singles, fleets, cpus, servers = [], [], [], []
            for _ in range(args.repeat):
                singles.append(timed_sync(project, state, ports[:1], "h01", 1, pids)[0])
                elapsed, cpu, server = timed_sync(project, state, ports, "fleet", args.hosts, pids)
                servers.append(server)
                fleets.append(elapsed)
                cpus.append(cpu)
            serial = timed_sync(project, state, ports, "fleet", 1, pids)[0]
            single, fleet = statistics.median(singles), statistics.median(fleets)
            print(
                f"migrations:                        {args.count} (each CREATE TABLE + CREATE INDEX), "
                f"median of {args.repeat}; "
                f"login ~/.bashrc {'sourced' if args.login_rc else 'skipped'}"
            )
            print(f"sync --host h01:                   {single:.3f} s  (whole CLI process)")
            print(
                f"sync --host fleet --parallel {args.hosts}:  {fleet:.3f} s  ({args.hosts} hosts, "
                f"{args.hosts} sshd endpoints; "
                f"client CPU {statistics.median(cpus):.2f} s)"
            )
            print(
                f"ratio fleet / one host:            {fleet / single:.2f}  (target <= 2; "
                f"best-of: {min(fleets) / min(singles):.2f})"
            )
            print(
                f"sync --host fleet --parallel 1:    {serial:.3f} s  (serial, once: "
                f"parallel is {serial / fleet:.1f}x faster "
                f"on {os.cpu_count()} CPUs shared by every sshd, sudo, psql and backend)"
            )
            server = statistics.median(servers)
            print(
                f"server-side CPU of the fleet run:  {server:.2f} s  (sshd, sudo, psql, "
                f"backends of {args.hosts} hosts on one machine: "
                f">= {server / (os.cpu_count() or 1):.2f} s of wall time on {os.cpu_count()} CPUs "
                "before any client work)"
            )
        finally:
            stop_sshd(extra)


if __name__ == "__main__":
    main()
