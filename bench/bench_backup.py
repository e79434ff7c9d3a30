"""Time ``inv backup --download`` against the plain ssh floor on a ~200 MB dump.

Usage: ``python bench/bench_backup.py [--rows N] [--runs 2]`` (as root: it brings up
its own sandbox host, a real sshd + PostgreSQL cluster, in a temporary folder).

Floor: ``ssh host "sudo -u postgres pg_dump -Fc db" > file`` with the real ``ssh``
binary, the sandbox key and known_hosts.  Ours: the real CLI, which additionally
stores the dump on the server, verifies it with ``pg_restore --list``, checksums
both copies and applies retention.  The table is filled with md5 text so that
``-Fc`` compression cannot shrink it to nothing.  Target: ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opsagent.inventory import HostConfig
from opsagent.remote.sandbox import SandboxState, temporary_sandbox
from opsagent.remote.transport import open_remote

DATABASE = "bench"
FILL = """
CREATE TABLE filler (id bigint, a text, b text);
INSERT INTO filler SELECT g, md5(random()::text) || md5(random()::text), md5(g::text || random()::text)
  FROM generate_series(1, {rows}) g;
"""


def fill(state: SandboxState, rows: int) -> None:
    host = HostConfig(name="bench", **{**state.host_entry(), "database": DATABASE})  # type: ignore[arg-type]
    with open_remote(host) as remote:
        remote.psql(f"CREATE DATABASE {DATABASE}", database="postgres")
        remote.psql(FILL.format(rows=rows), timeout=1800)


def floor(state: SandboxState, out: Path) -> float:
    remote_cmd = "cd / && " + shlex.join(
        ["sudo", "-u", "postgres", "pg_dump", "-Fc", "-h", state.socket_dir, "-p", str(state.pg_port), DATABASE]
    )
    argv = [
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
        remote_cmd,
    ]
    started = time.monotonic()
    with out.open("wb") as handle:
        subprocess.run(argv, stdout=handle, check=True)
    return time.monotonic() - started


def ours(project: Path) -> float:
    env = {**os.environ, "OPSAGENT_INVENTORY": str(project / "inventory.yaml")}
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "opsagent", "backup", "--host", "bench", "--download"],
        cwd=project,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    shutil.rmtree(project / "backups", ignore_errors=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_400_000, help="rows of md5 text (default gives a ~200 MB dump)")
    parser.add_argument(
        "--runs", type=int, default=3, help="alternating timed runs of each (best and median are reported)"
    )
    args = parser.parse_args()
    with temporary_sandbox("bench", "oa-bench-") as (base, state):
        started = time.monotonic()
        fill(state, args.rows)
        print(f"filled {args.rows:,} rows in {time.monotonic() - started:.1f}s")
        project = base / "project"
        project.mkdir()
        entry = {
            **state.host_entry(),
            "database": DATABASE,
            "keep_backups": 1,
            "backup_dir": str(base / "server-backups"),
        }
        (project / "inventory.yaml").write_text(yaml.safe_dump({"hosts": {"bench": entry}}))
        dump = base / "floor.dump"
        floor_times, our_times = [], []
        for _ in range(args.runs):
            floor_times.append(floor(state, dump))
            our_times.append(ours(project))
        size = dump.stat().st_size
        best_floor, best_ours = min(floor_times), min(our_times)
        print(f"dump size:                     {size / 1e6:.0f} MB")
        print(
            f"ssh ... pg_dump -Fc > file:    best {best_floor:.2f}s  median {statistics.median(floor_times):.2f}s  "
            f"(runs: {', '.join(f'{t:.2f}' for t in floor_times)})"
        )
        print(
            f"inv backup --download:         best {best_ours:.2f}s  median {statistics.median(our_times):.2f}s  "
            f"(runs: {', '.join(f'{t:.2f}' for t in our_times)})"
        )
        ratio = best_ours / best_floor
        print(
            f"ratio (best/best): {ratio:.2f}x, median/median: "
            f"{statistics.median(our_times) / statistics.median(floor_times):.2f}x "
            f"(target <= 1.3x) {'OK' if ratio <= 1.3 else 'OVER TARGET'}"
        )


if __name__ == "__main__":
    main()
