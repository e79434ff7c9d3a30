"""Benchmark: ``inv sync`` against its SSH floors, every ratio measured in the same run (issue 14).

Brings up its own sandbox (real sshd + PostgreSQL) in a temp dir and runs the real CLI as a
subprocess (whole process timed, Python start-up included), each variant on its own fresh database:

- 200 pending small migrations (CREATE TABLE + CREATE INDEX each) WITH a matching ``sql/schema.sql``,
  drift check on and with ``--no-drift-check``, vs ``ssh host "sudo -n -u postgres psql -1 -f -" < all.sql``
  (target <= 1.3 with the drift check on); the same with the pre-sync backup (its added cost);
- a no-op sync of the example project (``sql/migrations`` + ``sql/schema.sql`` of this repository,
  already applied), drift check on and off, vs ``ssh host "sudo -n -u postgres psql -c 'select 1'"``
  (target <= 1.5 with the drift check on).

Prints medians, best-of ratios, remote commands per sync and the machine's load (``uptime``).
Usage: ``python bench/bench_sync.py [--count 200] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsagent.remote.sandbox import SandboxState, temporary_sandbox  # noqa: E402


def write_migrations(folder: Path, count: int) -> str:
    """``count`` files, each a CREATE TABLE and a CREATE INDEX; returns their concatenation
    (the floor's script and schema.sql)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(1, count + 1):
        sql = (
            f"CREATE TABLE bench_t{i} (id bigint PRIMARY KEY, name text NOT NULL, "
            "created_at timestamptz DEFAULT now());\n"
            f"CREATE INDEX bench_t{i}_name ON bench_t{i} (name);\n"
        )
        (folder / f"{i:04d}_bench_table_{i}.sql").write_text(sql)
        parts.append(sql)
    return "".join(parts)


def create_database(state: SandboxState) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "/usr/lib/postgresql/15/bin/createdb",
            "-h",
            state.socket_dir,
            "-p",
            str(state.pg_port),
            name,
        ],
        check=True,
    )
    return name


def write_inventory(root: Path, state: SandboxState, database: str) -> Path:
    entry = {**state.host_entry(), "database": database, "backup_dir": str(Path(state.root) / "backups" / database)}
    path = root / "inventory.yaml"
    path.write_text(yaml.safe_dump({"hosts": {"bench": entry}}, sort_keys=False))
    return path


def run_cli(project: Project, *flags: str, expect_applied: bool) -> tuple[float, dict[str, object]]:
    argv = [sys.executable, "-m", "opsagent", "sync", "--host", "bench", "--yes", "--json", *flags]
    env = {**os.environ, "OPSAGENT_INVENTORY": str(project.inventory), "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=project.root, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"sync failed ({proc.returncode}): {proc.stderr.strip()}")
    result = json.loads(proc.stdout)
    if bool(result["applied"]) != expect_applied:
        raise SystemExit(
            f"sync applied {len(result['applied'])} migrations, expected {'some' if expect_applied else 'none'}"
        )
    if "no-drift-check" not in " ".join(flags) and any("differs from" in w for w in result["warnings"]):
        raise SystemExit(f"the schema does not match: {result['warnings']}")
    return elapsed, result


class Project:
    """A project folder whose inventory host 'bench' points at a database of the sandbox."""

    def __init__(self, root: Path, state: SandboxState) -> None:
        self.root = root
        self.state = state
        self.inventory = root / "inventory.yaml"

    def fresh(self) -> Project:
        write_inventory(self.root, self.state, create_database(self.state))
        return self


def ssh_argv(state: SandboxState, remote_command: list[str]) -> list[str]:
    return [
        "ssh",
        "-i",
        state.identity_file,
        "-o",
        f"UserKnownHostsFile={state.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-p",
        str(state.ssh_port),
        f"{state.user}@127.0.0.1",
        "cd / && " + shlex.join(remote_command),
    ]


def psql_remote(state: SandboxState, database: str, *args: str) -> list[str]:
    return [
        "sudo",
        "-n",
        "-u",
        "postgres",
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        state.socket_dir,
        "-p",
        str(state.pg_port),
        "-d",
        database,
        *args,
    ]


def run_floor(state: SandboxState, script: str) -> float:
    argv = ssh_argv(state, psql_remote(state, create_database(state), "-1", "-f", "-"))
    started = time.perf_counter()
    proc = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"floor failed: {proc.stderr.strip()}")
    return elapsed


def run_select1(state: SandboxState, database: str) -> float:
    argv = ssh_argv(state, psql_remote(state, database, "-c", "select 1"))
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"select 1 failed: {proc.stderr.strip()}")
    return elapsed


def median_and_best(samples: dict[str, list[float]], name: str, floor: str) -> str:
    mid = statistics.median(samples[name]) / statistics.median(samples[floor])
    best = min(samples[name]) / min(samples[floor])
    return f"{mid:.2f} (best-of {best:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="number of migrations")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant (median reported)")
    parser.add_argument(
        "--no-login-rc",
        action="store_true",
        help="the login shell reads no ~/.bashrc (SSH commands as on a server whose login shell is light)",
    )
    parser.add_argument(
        "--pg-bindir",
        action="store_true",
        help="the host's inventory names pg_bindir: psql and pg_dump start without Debian's pg_wrapper",
    )
    args = parser.parse_args()
    with temporary_sandbox("bench", "oab-", login_rc=not args.no_login_rc, with_pg_bindir=args.pg_bindir) as (
        base,
        state,
    ):
        many = Project(base / "many", state)
        script = write_migrations(many.root / "sql" / "migrations", args.count)
        (many.root / "sql" / "schema.sql").write_text(script)  # the matching desired state
        example = Project(base / "example", state)
        shutil.copytree(REPO / "sql" / "migrations", example.root / "sql" / "migrations")
        shutil.copy(REPO / "sql" / "schema.sql", example.root / "sql" / "schema.sql")
        example.fresh()
        run_cli(example, "--no-backup", "--no-drift-check", expect_applied=True)
        example_db = yaml.safe_load(example.inventory.read_text())["hosts"]["bench"]["database"]
        run_cli(example, "--no-backup", expect_applied=False)  # warm-up: whatever the drift check keeps, it is kept now
        samples: dict[str, list[float]] = {}
        commands: dict[str, object] = {}

        def measure(name: str, action: Callable[[], tuple[float, dict[str, object]] | float]) -> None:
            outcome = action()
            elapsed, result = outcome if isinstance(outcome, tuple) else (outcome, {})
            samples.setdefault(name, []).append(elapsed)
            if "remote_commands" in result:
                commands[name] = result["remote_commands"]

        for _ in range(args.repeat):
            measure("floor", lambda: run_floor(state, script))
            measure("sync", lambda: run_cli(many.fresh(), "--no-backup", expect_applied=True))
            measure(
                "sync_nodrift", lambda: run_cli(many.fresh(), "--no-backup", "--no-drift-check", expect_applied=True)
            )
            measure("sync_backup", lambda: run_cli(many.fresh(), "--no-drift-check", expect_applied=True))
            measure("select1", lambda: run_select1(state, example_db))
            measure("noop", lambda: run_cli(example, "--no-backup", expect_applied=False))
            measure("noop_nodrift", lambda: run_cli(example, "--no-backup", "--no-drift-check", expect_applied=False))
        med = {name: statistics.median(values) for name, values in samples.items()}
        load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
        print(f"machine: {load}; median of {args.repeat}")
        print(f"floor  ssh 'psql -1 -f -' < all.sql ({args.count} migrations): {med['floor']:.3f} s")
        print(
            f"sync, schema.sql + drift check:        {med['sync']:.3f} s  ratio "
            f"{median_and_best(samples, 'sync', 'floor')}  "
            f"target <= 1.3  ({commands.get('sync')} remote commands in the apply)"
        )
        print(
            f"sync --no-drift-check:                 {med['sync_nodrift']:.3f} s  ratio "
            f"{median_and_best(samples, 'sync_nodrift', 'floor')}"
        )
        print(
            f"sync --no-drift-check with backup:     {med['sync_backup']:.3f} s  backup's added cost "
            f"{med['sync_backup'] - med['sync_nodrift']:.3f} s ({commands.get('sync_backup')} remote commands)"
        )
        print(f"floor  ssh 'psql -c select 1':         {med['select1']:.3f} s")
        print(
            f"no-op sync (example), drift check:     {med['noop']:.3f} s  ratio "
            f"{median_and_best(samples, 'noop', 'select1')}  "
            f"target <= 1.5  ({commands.get('noop')} remote command(s) before the drift check)"
        )
        print(
            f"no-op sync --no-drift-check:           {med['noop_nodrift']:.3f} s  ratio "
            f"{median_and_best(samples, 'noop_nodrift', 'select1')}"
        )


if __name__ == "__main__":
    main()
