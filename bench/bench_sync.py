"""Benchmark: ``inv sync`` of 200 small migrations vs the floor ``ssh host 'psql -1 -f -' < all.sql``.

Brings up its own sandbox (real sshd + PostgreSQL) in a temp dir, runs the real CLI
as a subprocess (whole process timed, Python start-up included) against a fresh
database, then the floor with the real ``ssh`` client on another fresh database,
then sync again with its pre-sync backup on a third one.  Prints both times, the
ratio (target <= 1.5), the number of remote commands sync issued and the backup's
added cost.  Usage: ``python bench/bench_sync.py [--count 200] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsagent.sandbox import SandboxState, temporary_sandbox  # noqa: E402


def write_migrations(folder: Path, count: int) -> str:
    """``count`` files, each a CREATE TABLE and a CREATE INDEX; returns their concatenation (the floor's script)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(1, count + 1):
        sql = (f"CREATE TABLE bench_t{i} (id bigint PRIMARY KEY, name text NOT NULL, created_at timestamptz DEFAULT now());\n"
               f"CREATE INDEX bench_t{i}_name ON bench_t{i} (name);\n")
        (folder / f"{i:04d}_bench_table_{i}.sql").write_text(sql)
        parts.append(sql)
    return "".join(parts)


def create_database(state: SandboxState) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/createdb", "-h", state.socket_dir,
                    "-p", str(state.pg_port), name], check=True)
    return name


def write_inventory(root: Path, state: SandboxState, database: str) -> Path:
    entry = {**state.host_entry(), "database": database, "backup_dir": str(Path(state.root) / "backups" / database)}
    path = root / "inventory.yaml"
    path.write_text(yaml.safe_dump({"hosts": {"bench": entry}}, sort_keys=False))
    return path


def run_sync(project: Path, state: SandboxState, backup: bool) -> tuple[float, dict[str, object]]:
    database = create_database(state)
    inventory = write_inventory(project, state, database)
    argv = [sys.executable, "-m", "opsagent", "sync", "--host", "bench", "--yes", "--json"]
    if not backup:
        argv.append("--no-backup")
    env = {**os.environ, "OPSAGENT_INVENTORY": str(inventory), "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"sync failed ({proc.returncode}): {proc.stderr.strip()}")
    result = json.loads(proc.stdout)
    if len(result["applied"]) == 0:
        raise SystemExit("sync applied nothing")
    return elapsed, result


def run_floor(state: SandboxState, script: str) -> float:
    database = create_database(state)
    psql = ["sudo", "-n", "-u", "postgres", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", state.socket_dir,
            "-p", str(state.pg_port), "-d", database, "-1", "-f", "-"]
    argv = ["ssh", "-i", state.identity_file, "-o", f"UserKnownHostsFile={state.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-p", str(state.ssh_port), f"{state.user}@127.0.0.1", "cd / && " + shlex.join(psql)]
    started = time.perf_counter()
    proc = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"floor failed: {proc.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="number of migrations")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant (median reported)")
    args = parser.parse_args()
    with temporary_sandbox("bench", "oab-") as (base, state):
        project = base / "project"
        script = write_migrations(project / "sql" / "migrations", args.count)
        floors, syncs, backups = [], [], []
        commands: object = None
        backup_commands: object = None
        for _ in range(args.repeat):
            floors.append(run_floor(state, script))
            elapsed, result = run_sync(project, state, backup=False)
            syncs.append(elapsed)
            commands = result["remote_commands"]
            elapsed, result = run_sync(project, state, backup=True)
            backups.append(elapsed)
            backup_commands = result["remote_commands"]
        floor, plain, with_backup = (statistics.median(x) for x in (floors, syncs, backups))
        print(f"migrations:                     {args.count} (each CREATE TABLE + CREATE INDEX), median of {args.repeat}")
        print(f"floor  ssh 'psql -1 -f -':      {floor:.3f} s")
        print(f"inv sync --yes --no-backup:     {plain:.3f} s  (whole CLI process; {commands} remote commands)")
        print(f"ratio sync / floor:             {plain / floor:.2f}  (target <= 1.5; best-of: {min(syncs) / min(floors):.2f})")
        print(f"inv sync --yes (with backup):   {with_backup:.3f} s  ({backup_commands} remote commands)")
        print(f"backup's added cost:            {with_backup - plain:.3f} s")


if __name__ == "__main__":
    main()
