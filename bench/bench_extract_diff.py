"""Benchmark: ``extract`` and ``diff`` at realistic size, on a sandbox host brought up for the run.

1. extract of musicbrainz over SSH vs plain ``ssh host pg_dump -s`` (real ssh binary, same key
   and known_hosts) of the same database; target ratio <= 1.3.
2. diff of musicbrainz against itself (live vs schema materialized in a scratch database).
3. diff scaling from 100 to 2,000 generated tables: time per table at each size.
4. the deploy path of issue 14, each as the real CLI (``python -m opsagent``) beside its floor in the same run,
   warm (desired-state cache filled) and cold (``.opsagent/cache`` removed first):
   ``diff`` of musicbrainz vs ``ssh host pg_dump -s`` (target warm <= 1.0x); ``diff --against-host`` vs migra
   between the same two databases (<= 0.5x); ``plan`` of musicbrainz with one mutation, verified by both oracles,
   vs migra (<= 2x warm, <= 5x cold); 5,000 generated tables: diff (<= 2x migra) and plan (<= 4x migra); the
   closing drift check: a no-op ``sync`` with the example schema vs ``ssh host psql -c 'select 1'`` (<= 1.5x) and
   with musicbrainz as schema.sql vs ``ssh host pg_dump -s`` (<= 1.0x); the server-side load of the 5,000 tables
   (the floor of any cold run, which materializes schema.sql); peak memory of a full comparison at 1,000 and 5,000
   tables (linear: the same memory per table).  migra comes from bench_plan_peer's venv
   (installed there on first use; its rows are skipped when it cannot be installed).

Run: ``python bench/bench_extract_diff.py [--repeat 5] [--sizes 100,500,1000,2000] [--only deploy]``.
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
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsagent.inventory import HostConfig  # noqa: E402
from opsagent.remote.sandbox import SandboxState, pg_bindir, temporary_sandbox  # noqa: E402
from opsagent.remote.transport import open_remote  # noqa: E402
from opsagent.schema.drift import diff_against_sql  # noqa: E402
from opsagent.schema.extract import extract  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from bench_plan_peer import MUSICBRAINZ_MUTATIONS, Cluster, install_migra, run_migra  # noqa: E402

# cold musicbrainz runs measured for a median: one run on this machine's disk varied 10-17 s for the same plan
COLD_RUNS = 3
MUSICBRAINZ = REPO.parent / "shared" / "corpora" / "schemas" / "musicbrainz.sql"


def host(state: SandboxState, database: str) -> HostConfig:
    return HostConfig(name=state.name, **{**state.host_entry(), "database": database})  # type: ignore[arg-type]


def local_psql(state: SandboxState, database: str, *args: str, stdin: str | None = None) -> None:
    argv = [
        "runuser",
        "-u",
        "postgres",
        "--",
        str(pg_bindir() / "psql"),
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
        f"cd / && sudo -n -u postgres pg_dump -s -h {state.socket_dir} -p {state.pg_port} -d {database}",
    ]


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
    print(
        f"  {'opsagent extract (connect+dump+stats)':<40}{mine * 1000:8.0f} ms   ratio {mine / floor:.2f}x "
        "(target <= 1.30)"
    )

    sql = MUSICBRAINZ.read_text()
    with open_remote(host(state, database)) as remote:
        started = time.perf_counter()
        report = diff_against_sql(remote, sql, "musicbrainz.sql")
        took = time.perf_counter() - started
    status = "no drift" if report.result.is_empty else f"{len(report.result.changes)} differences (UNEXPECTED)"
    print(f"diff musicbrainz vs itself (materialize + introspect both + drop): {took * 1000:.0f} ms, {status}")


def generated_schema(tables: int) -> str:
    """``tables`` tables of 8 columns, 2 indexes (PK + one) and 1 FK each, plus one view per 10 tables."""
    out = [
        "CREATE TABLE t0 (id bigserial PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
        "amount numeric(12,2), flags int NOT NULL DEFAULT 0, note text, parent_id bigint, ref uuid);"
    ]
    out.append("CREATE INDEX t0_created_idx ON t0 (created_at);")
    for i in range(1, tables):
        out.append(
            f"CREATE TABLE t{i} (id bigserial PRIMARY KEY, name text NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now(), "
            "amount numeric(12,2), flags int NOT NULL DEFAULT 0, note text, "
            f"parent_id bigint REFERENCES t{i - 1} (id), ref uuid);"
        )
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


# ---------------------------------------------------------------- issue 14: the deploy path, CLI beside its floors

EXAMPLE_SQL = REPO / "sql"


def ssh_command(state: SandboxState, command: list[str]) -> list[str]:
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
        "cd / && " + shlex.join(command),
    ]


def make_project(
    root: Path, state: SandboxState, hosts: dict[str, str], schema: str, migrations: dict[str, str] | None = None
) -> Path:
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    (root / "sql" / "migrations").mkdir(parents=True, exist_ok=True)
    (root / "sql" / "schema.sql").write_text(schema)
    for name, text in (migrations or {}).items():
        (root / "sql" / "migrations" / name).write_text(text)
    entries = {
        name: {**state.host_entry(), "database": db, "backup_dir": str(Path(state.root) / "backups" / db)}
        for name, db in hosts.items()
    }
    (root / "inventory.yaml").write_text(yaml.safe_dump({"hosts": entries}, sort_keys=False))
    return root


def cli(project: Path, *args: str, ok: tuple[int, ...] = (0,)) -> float:
    # bytecode is kept as an installed package keeps it: with PYTHONDONTWRITEBYTECODE (set in some shells and CI
    # images) every run would compile opsagent again, 0.1-0.3 s that no installed copy pays
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "OPSAGENT_INVENTORY": str(project / "inventory.yaml"),
        "PYTHONPATH": str(REPO),
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "opsagent", *args], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - started
    if proc.returncode not in ok:
        raise SystemExit(f"opsagent {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
    return took


def cold(project: Path, *args: str, ok: tuple[int, ...] = (0,)) -> float:
    shutil.rmtree(project / ".opsagent" / "cache", ignore_errors=True)
    return cli(project, *args, ok=ok)


def line(name: str, seconds: float, floor: float | None = None, floor_name: str = "", target: str = "") -> None:
    ratio = f"   {seconds / floor:5.2f}x {floor_name}" if floor else ""
    print(f"  {name:<58}{seconds * 1000:8.0f} ms{ratio}{f'  (target {target})' if target else ''}")


def settle(cluster: Cluster, seconds: float = 120) -> None:
    """A quiet server before timed rows: the loads just made flushed (CHECKPOINT) and autovacuum done with them (its
    workers gone, or ``seconds`` passed), so that they are not measured as part of a cold run."""
    cluster.psql("postgres", "CHECKPOINT;")
    deadline = time.monotonic() + seconds
    query = "COPY (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker') TO STDOUT;"
    while time.monotonic() < deadline and cluster.psql("postgres", query).stdout.strip() not in ("0", ""):
        time.sleep(1)


def bench_deploy(state: SandboxState, repeat: int, large: bool = True) -> None:
    cluster = Cluster(state)
    base = Path(state.root) / "bench-deploy"
    migra = install_migra()
    mb_sql = MUSICBRAINZ.read_text()
    cluster.create("mb_live")
    cluster.psql("mb_live", mb_sql)
    cluster.create("mb_other", template="mb_live")
    cluster.create("mb_mut", template="mb_live")
    cluster.psql("mb_mut", MUSICBRAINZ_MUTATIONS["drop an index"])
    mb = make_project(base / "mb", state, {"live": "mb_live", "other": "mb_other", "mut": "mb_mut"}, mb_sql)

    def floor(command: list[str]) -> float:
        argv = ssh_command(state, command)
        return median_time(
            lambda: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), repeat
        )

    pg = ["sudo", "-n", "-u", "postgres"]
    conn = ["-h", state.socket_dir, "-p", str(state.pg_port)]
    dump_floor = floor([*pg, "pg_dump", "-s", *conn, "-d", "mb_live"])
    select_floor = floor([*pg, "psql", "-X", *conn, "-d", "postgres", "-c", "select 1"])

    def migra_time(a: str, b: str) -> float | None:
        if migra is None:
            return None
        run_migra(cluster, migra, a, b)
        return statistics.median(run_migra(cluster, migra, a, b)[2] for _ in range(repeat))

    settle(cluster)  # the musicbrainz rows run before the 5,000-table databases exist (their autovacuum is no load)
    print(
        "issue 14, deploy path (CLI wall time; median of", repeat, "runs; ratios against floors measured in this run):"
    )
    line("floor: ssh host pg_dump -s (musicbrainz)", dump_floor)
    line("floor: ssh host psql -c 'select 1'", select_floor)
    cli(mb, "diff", "--host", "live")  # fills the cache
    line(
        "diff musicbrainz, warm",
        median_time(lambda: cli(mb, "diff", "--host", "live"), repeat),
        dump_floor,
        "pg_dump -s",
        "<= 1.0",
    )
    line(
        "diff musicbrainz, cold",
        median_time(lambda: cold(mb, "diff", "--host", "live"), COLD_RUNS),
        dump_floor,
        "pg_dump -s",
    )
    line(
        "diff musicbrainz --fast, warm",
        median_time(lambda: cli(mb, "diff", "--host", "live", "--fast"), repeat),
        dump_floor,
        "pg_dump -s",
    )
    migra_hosts = migra_time("mb_live", "mb_other")
    if migra_hosts:
        line("migra mb_live mb_other (CLI)", migra_hosts)
    line(
        "diff --against-host (musicbrainz, two databases)",
        median_time(lambda: cli(mb, "diff", "--host", "live", "--against-host", "other"), repeat),
        migra_hosts,
        "migra",
        "<= 0.5",
    )
    migra_plan = migra_time("mb_mut", "mb_live")
    if migra_plan:
        line("migra mb_mut mb_live (CLI)", migra_plan)
    cli(mb, "plan", "--host", "mut")
    line(
        "plan musicbrainz, 1 mutation, both oracles, warm",
        median_time(lambda: cli(mb, "plan", "--host", "mut"), repeat),
        migra_plan,
        "migra",
        "<= 2",
    )
    line(
        "plan musicbrainz, 1 mutation, both oracles, cold",
        median_time(lambda: cold(mb, "plan", "--host", "mut"), COLD_RUNS),
        migra_plan,
        "migra",
        "<= 5",
    )
    if not large:
        bench_closing_check(state, cluster, base, repeat, select_floor, dump_floor, mb_sql)
        return
    gen = generated_schema(5000)
    cluster.create("gen_live")
    started = time.perf_counter()
    cluster.psql("gen_live", gen)
    gen_load = time.perf_counter() - started  # what any cold run must pay to materialize schema.sql, at the least
    small_gen = generated_schema(1000)
    cluster.create("gen_small")
    cluster.psql("gen_small", small_gen)
    cluster.create("gen_target", template="gen_live")
    cluster.create("gen_mut", template="gen_live")
    cluster.psql("gen_mut", "DROP INDEX t2500_parent_idx; ALTER TABLE t4000 DROP COLUMN note;")
    gen_project = make_project(base / "gen", state, {"live": "gen_live", "mut": "gen_mut"}, gen)
    small_project = make_project(base / "gen-small", state, {"live": "gen_small"}, small_gen)
    settle(cluster)
    migra_gen = migra_time("gen_live", "gen_target")
    if migra_gen:
        line("migra 5,000 tables, identical (CLI)", migra_gen)
    cli(gen_project, "diff", "--host", "live")
    line(
        "diff 5,000 tables, warm",
        median_time(lambda: cli(gen_project, "diff", "--host", "live"), repeat),
        migra_gen,
        "migra",
        "<= 2",
    )
    line(
        "diff 5,000 tables, cold",
        median_time(lambda: cold(gen_project, "diff", "--host", "live"), 1),
        migra_gen,
        "migra",
    )
    line("floor of any cold run: psql -f schema.sql, 5,000 tables (server-side load)", gen_load, migra_gen, "migra")
    bench_memory(small_project, gen_project, 1000, 5000)
    migra_gen_plan = migra_time("gen_mut", "gen_target")
    if migra_gen_plan:
        line("migra 5,000 tables, 2 changes (CLI)", migra_gen_plan)
    cli(gen_project, "plan", "--host", "mut")
    line(
        "plan 5,000 tables, 2 changes, warm",
        median_time(lambda: cli(gen_project, "plan", "--host", "mut"), repeat),
        migra_gen_plan,
        "migra",
        "<= 4",
    )
    line(
        "plan 5,000 tables, 2 changes, cold",
        median_time(lambda: cold(gen_project, "plan", "--host", "mut"), 1),
        migra_gen_plan,
        "migra",
    )
    bench_closing_check(state, cluster, base, repeat, select_floor, dump_floor, mb_sql)


def peak_memory(project: Path, *args: str) -> float:
    """The CLI's peak resident memory in MiB (``wait4``'s ``ru_maxrss`` of that one process)."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "OPSAGENT_INVENTORY": str(project / "inventory.yaml"),
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsagent", *args],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"opsagent {' '.join(args)} exited {proc.returncode}")
    return usage.ru_maxrss / 1024


def bench_memory(small: Path, large: Path, small_tables: int, large_tables: int) -> None:
    """Peak memory of a full comparison (``diff --recheck``: the live read, both oracles; schema.sql cached) at two
    sizes of the same generated schema, beside a no-op's start-up memory: linear means the added memory per table
    stays the same."""
    baseline = peak_memory(small, "diff", "--help")
    cli(small, "diff", "--host", "live")  # schema.sql cached, as it is for the large one
    sizes = {small_tables: peak_memory(small, "diff", "--host", "live", "--recheck")}
    sizes[large_tables] = peak_memory(large, "diff", "--host", "live", "--recheck")
    print(f"  peak memory: start-up (diff --help) {baseline:.0f} MiB")
    for tables, mib in sizes.items():
        per_table = (mib - baseline) * 1024 / tables
        print(f"  peak memory: diff --recheck, {tables:,} tables {mib:7.0f} MiB ({per_table:.0f} KiB per table)")


def bench_closing_check(
    state: SandboxState, cluster: Cluster, base: Path, repeat: int, select_floor: float, dump_floor: float, mb_sql: str
) -> None:
    """A no-op sync (nothing pending) with its closing drift check, warm cache."""
    example = make_project(
        base / "example",
        state,
        {"h": "ex_live"},
        (EXAMPLE_SQL / "schema.sql").read_text(),
        {p.name: p.read_text() for p in sorted((EXAMPLE_SQL / "migrations").glob("*.sql"))},
    )
    cluster.create("ex_live")
    cli(example, "sync", "--host", "h", "--yes", "--no-backup", "--allow-hazards")
    line(
        "no-op sync, example schema (27 tables), drift check, warm",
        median_time(lambda: cli(example, "sync", "--host", "h", "--yes", "--no-backup"), repeat),
        select_floor,
        "select 1",
        "<= 1.5",
    )
    line(
        "no-op sync, example schema, --no-drift-check",
        median_time(lambda: cli(example, "sync", "--host", "h", "--yes", "--no-backup", "--no-drift-check"), repeat),
        select_floor,
        "select 1",
    )
    cluster.create("mb_sync", template="mb_live")
    mbsync = make_project(base / "mbsync", state, {"h": "mb_sync"}, mb_sql, {"001_ledger.sql": "SELECT 1;\n"})
    cli(mbsync, "sync", "--host", "h", "--yes", "--no-backup")
    line(
        "no-op sync, musicbrainz as schema.sql, drift check, warm",
        median_time(lambda: cli(mbsync, "sync", "--host", "h", "--yes", "--no-backup"), repeat),
        dump_floor,
        "pg_dump -s",
        "<= 1.0",
    )
    line(
        "no-op sync, musicbrainz as schema.sql, drift check, cold",
        median_time(lambda: cold(mbsync, "sync", "--host", "h", "--yes", "--no-backup"), 1),
        dump_floor,
        "pg_dump -s",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
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
    parser.add_argument("--sizes", default="100,500,1000,2000")
    parser.add_argument("--only", choices=("extract", "scaling", "deploy"), help="run one part only")
    parser.add_argument("--no-large", action="store_true", help="deploy part: skip the 5,000-table figures")
    args = parser.parse_args()
    if not MUSICBRAINZ.exists():
        print(f"skipped: {MUSICBRAINZ} not found (the shared corpora are absent)")
        return
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on {os.cpu_count()} cores")
    with temporary_sandbox("sandbox", "oab-", login_rc=not args.no_login_rc, with_pg_bindir=args.pg_bindir) as (
        _base,
        state,
    ):
        if args.only in (None, "extract"):
            bench_extract(state, args.repeat)
        if args.only in (None, "scaling"):
            bench_scaling(state, [int(s) for s in args.sizes.split(",")])
        if args.only in (None, "deploy"):
            bench_deploy(state, args.repeat, large=not args.no_large)
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
