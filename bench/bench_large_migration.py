"""Benchmark: one huge migration (default 400,000 small statements, ~50 MB): ``inv lint`` and ``inv sync``
vs their floors.

Statement splitting used to be quadratic (a 10 MB file cost 180 CPU-seconds before anything
was sent; 50 MB did not finish in 25 minutes).  This generates one migration of CREATE TABLEs
each followed by INSERTs into it, then times, as whole CLI processes (Python start-up included):

- ``opsagent lint`` offline, against the floor of reading the file and ``wc -l`` on it;
- the local phases in this process: discovery (read, split, checks) and the hazard lint;
- ``opsagent sync --yes --no-backup`` into a fresh database of its own sandbox host (real sshd
  + PostgreSQL), against the floor ``ssh host 'psql -1 -f -' < file`` into another fresh one.

Each line gives wall seconds, CPU seconds and peak RSS of the process.  Targets: lint under
30 s, and lint/floor and sync/floor ratios that stay flat as ``--statements`` grows.
Usage: ``python bench/bench_large_migration.py [--statements 400000] [--no-sync]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsagent.remote.sandbox import SandboxState, temporary_sandbox  # noqa: E402


def write_migration(path: Path, statements: int, per_table: int = 1000) -> None:
    """``statements`` small statements (~120 bytes each): a CREATE TABLE, then INSERTs into it, block after block.

    Streamed to the file: this process stays small, and a child's peak RSS (which Linux
    counts from the fork, parent's pages included) is the child's own.
    """
    table = 0
    with path.open("w") as out:
        out.write("-- generated large migration\n\n")
        for i in range(statements):
            if i % per_table == 0:
                table += 1
                out.write(
                    f"CREATE TABLE big_t{table} (id bigint PRIMARY KEY, name text NOT NULL, qty integer, note text);\n"
                )
                continue
            out.write(
                f"INSERT INTO big_t{table} (id, name, qty, note) VALUES ({i}, 'name {i:08d}', {i % 977}, "
                f"'some note text about row {i:09d}');\n"
            )


class Measured:
    """Wall and CPU seconds and peak RSS of one child process (``os.wait4``: its own rusage, not the maximum so far)."""

    def __init__(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stdin_path: Path | None = None,
    ) -> None:
        started = time.perf_counter()
        with (
            open(stdin_path or os.devnull, "rb") as stdin,
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
        ):
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=stdin, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.wall = time.perf_counter() - started
            out.seek(0)
            err.seek(0)
            self.stdout, self.stderr = out.read().decode(), err.read().decode()
        self.returncode = proc.returncode
        self.cpu = usage.ru_utime + usage.ru_stime
        self.rss_mb = usage.ru_maxrss / 1024

    def line(self, label: str, floor: float | None = None) -> str:
        ratio = f"  ratio {self.wall / floor:6.1f}x floor" if floor else ""
        return f"{label:<34} {self.wall:8.2f} s wall {self.cpu:8.2f} s CPU {self.rss_mb:8.0f} MB peak RSS{ratio}"


def local_phases(folder: Path) -> tuple[float, float, int]:
    """CPU seconds of discovery and of the offline lint, in this process (fresh caches: a new text)."""
    from opsagent.migrate.files import discover
    from opsagent.migrate.hazards import assess

    started = time.process_time()
    found = discover(folder)
    discovered = time.process_time()
    assess(None, found.migrations)
    return discovered - started, time.process_time() - discovered, len(found.migrations[0].statements)


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


def sync_figures(project: Path, migration: Path) -> tuple[Measured, Measured, int]:
    with temporary_sandbox("bench", "oalm-") as (_, state):
        floor_db = create_database(state)
        psql = [
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
            floor_db,
            "-1",
            "-f",
            "-",
        ]
        ssh = [
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
            "cd / && " + shlex.join(psql),
        ]
        floor = Measured(ssh, stdin_path=migration)
        if floor.returncode != 0:
            raise SystemExit(f"floor failed: {floor.stderr.strip()[-500:]}")
        database = create_database(state)
        entry = {**state.host_entry(), "database": database, "backup_dir": str(Path(state.root) / "backups" / database)}
        inventory = project / "inventory.yaml"
        inventory.write_text(yaml.safe_dump({"hosts": {"bench": entry}}, sort_keys=False))
        env = {**os.environ, "OPSAGENT_INVENTORY": str(inventory), "PYTHONPATH": str(REPO)}
        sync = Measured(
            [sys.executable, "-m", "opsagent", "sync", "--host", "bench", "--yes", "--no-backup", "--json"],
            cwd=project,
            env=env,
        )
        if sync.returncode != 0:
            raise SystemExit(f"sync failed ({sync.returncode}): {sync.stderr.strip()[-800:]}")
        applied = len(json.loads(sync.stdout)["applied"])
        return floor, sync, applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=400_000, help="statements in the one migration")
    parser.add_argument("--no-sync", action="store_true", help="lint only (no sandbox host)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oalm-") as temp:
        project = Path(temp) / "project"
        folder = project / "sql" / "migrations"
        folder.mkdir(parents=True)
        migration = folder / "001_large_data_load.sql"
        write_migration(migration, args.statements)
        (project / "inventory.yaml").write_text("hosts: {}\n")
        size_mb = migration.stat().st_size / 1e6
        env = {**os.environ, "OPSAGENT_INVENTORY": str(project / "inventory.yaml"), "PYTHONPATH": str(REPO)}
        floor = Measured([sys.executable, "-c", "import sys; open(sys.argv[1], 'rb').read()", str(migration)])
        wc = Measured(["wc", "-l", str(migration)])
        lint = Measured([sys.executable, "-m", "opsagent", "lint"], cwd=project, env=env)
        if lint.returncode != 0:
            raise SystemExit(f"lint failed ({lint.returncode}): {lint.stderr.strip()[-500:]}")
        print(f"migration:                         {args.statements:,} statements, {size_mb:.1f} MB (one file)")
        print(wc.line("floor  wc -l"))
        print(floor.line("floor  python: read the file"))
        print(lint.line("opsagent lint (offline)", floor.wall), flush=True)
        if not args.no_sync:
            ssh_floor, sync, applied = sync_figures(project, migration)
            print(ssh_floor.line("floor  ssh 'psql -1 -f -' < file"))
            print(
                sync.line("opsagent sync --yes --no-backup", ssh_floor.wall) + f"  ({applied} migration applied)",
                flush=True,
            )
        discovery, linting, statements = local_phases(folder)  # last: it grows this process
        print(
            f"  in process: {statements:,} statements; discovery {discovery:.2f} CPU s (read, split, checks), "
            f"hazard lint {linting:.2f} CPU s"
        )


if __name__ == "__main__":
    main()
