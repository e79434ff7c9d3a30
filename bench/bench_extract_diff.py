"""Benchmark: ``extract`` and ``diff`` at realistic size, on a sandbox host brought up for the run.

1. extract of musicbrainz over SSH vs plain ``ssh host pg_dump -s`` (real ssh binary, same key
   and known_hosts) of the same database; target ratio <= 1.3.
2. diff of musicbrainz against itself (live vs schema materialized in a scratch database).
3. diff scaling from 100 to 2,000 generated tables: time per table at each size.

Run: ``python bench/bench_extract_diff.py [--repeat 5] [--sizes 100,500,1000,2000]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsagent.drift import diff_against_sql  # noqa: E402
from opsagent.extract import extract  # noqa: E402
from opsagent.inventory import HostConfig  # noqa: E402
from opsagent.sandbox import SandboxState, pg_bindir, temporary_sandbox  # noqa: E402
from opsagent.transport import open_remote  # noqa: E402

MUSICBRAINZ = REPO.parent / "shared" / "corpora" / "schemas" / "musicbrainz.sql"


def host(state: SandboxState, database: str) -> HostConfig:
    return HostConfig(name=state.name, **{**state.host_entry(), "database": database})  # type: ignore[arg-type]


def local_psql(state: SandboxState, database: str, *args: str, stdin: str | None = None) -> None:
    argv = ["runuser", "-u", "postgres", "--", str(pg_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", state.socket_dir, "-p", str(state.pg_port), "-d", database, *args]
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True)


def create_db(state: SandboxState, name: str) -> None:
    local_psql(state, "postgres", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    local_psql(state, "postgres", "-c", f'CREATE DATABASE "{name}"')


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ssh_argv(state: SandboxState, database: str) -> list[str]:
    return ["ssh", "-i", state.identity_file, "-o", f"UserKnownHostsFile={state.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-p", str(state.ssh_port), f"{state.user}@127.0.0.1",
            f"cd / && sudo -n -u postgres pg_dump -s -h {state.socket_dir} -p {state.pg_port} -d {database}"]


def bench_extract(state: SandboxState, repeat: int) -> None:
    database = "musicbrainz"
    create_db(state, database)
    local_psql(state, database, "-f", str(MUSICBRAINZ))

    def plain() -> None:
        subprocess.run(ssh_argv(state, database), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    sizes: list[int] = []

    def ours() -> None:
        with open_remote(host(state, database)) as remote:
            sizes.append(extract(remote).size)

    plain()
    ours()  # warm both paths (page cache, sshd)
    floor = median_time(plain, repeat)
    mine = median_time(ours, repeat)
    print(f"extract musicbrainz ({sizes[-1] / 1024:.0f} KiB normalized):")
    print(f"  {'ssh host pg_dump -s (floor)':<40}{floor * 1000:8.0f} ms")
    print(f"  {'opsagent extract (connect+dump+stats)':<40}{mine * 1000:8.0f} ms   ratio {mine / floor:.2f}x (target <= 1.30)")

    sql = MUSICBRAINZ.read_text()
    with open_remote(host(state, database)) as remote:
        started = time.perf_counter()
        report = diff_against_sql(remote, sql, "musicbrainz.sql")
        took = time.perf_counter() - started
    status = "no drift" if report.result.is_empty else f"{len(report.result.changes)} differences (UNEXPECTED)"
    print(f"diff musicbrainz vs itself (materialize + introspect both + drop): {took * 1000:.0f} ms, {status}")


def generated_schema(tables: int) -> str:
    """``tables`` tables of 8 columns, 2 indexes (PK + one) and 1 FK each, plus one view per 10 tables."""
    out = ["CREATE TABLE t0 (id bigserial PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
           "amount numeric(12,2), flags int NOT NULL DEFAULT 0, note text, parent_id bigint, ref uuid);"]
    out.append("CREATE INDEX t0_created_idx ON t0 (created_at);")
    for i in range(1, tables):
        out.append(f"CREATE TABLE t{i} (id bigserial PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
                   f"amount numeric(12,2), flags int NOT NULL DEFAULT 0, note text, parent_id bigint REFERENCES t{i - 1} (id), ref uuid);")
        out.append(f"CREATE INDEX t{i}_parent_idx ON t{i} (parent_id);")
    for v in range(0, tables, 10):
        out.append(f"CREATE VIEW v{v} AS SELECT id, name, amount FROM t{v} WHERE flags > 0;")
    return "\n".join(out) + "\n"


def bench_scaling(state: SandboxState, sizes: list[int]) -> None:
    print("diff scaling (live vs schema materialized in scratch, no drift):")
    print(f"  {'tables':>7} {'total ms':>10} {'ms/table':>9}")
    for size in sizes:
        database = f"scale_{size}"
        sql = generated_schema(size)
        create_db(state, database)
        local_psql(state, database, stdin=sql)
        with open_remote(host(state, database)) as remote:
            started = time.perf_counter()
            report = diff_against_sql(remote, sql, f"generated_{size}.sql")
            took = time.perf_counter() - started
        assert report.result.is_empty, report.result.to_dict()
        print(f"  {size:>7} {took * 1000:>10.0f} {took * 1000 / size:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="100,500,1000,2000")
    args = parser.parse_args()
    if not MUSICBRAINZ.exists():
        print(f"skipped: {MUSICBRAINZ} not found (the shared corpora are absent)")
        return
    with temporary_sandbox("sandbox", "oab-") as (_base, state):
        bench_extract(state, args.repeat)
        bench_scaling(state, [int(s) for s in args.sizes.split(",")])


if __name__ == "__main__":
    main()
