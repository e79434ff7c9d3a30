"""Benchmark: opsagent's migration plans beside migra's, judged by applying them (issue 8).

On one sandbox host brought up for the run:

1. migra's own 26 cases (``../shared/corpora/migra``), plus the second step of the 3
   cases that have an ``additions.sql`` (applied to a, then a+additions → b again);
2. musicbrainz with single mutations of a live copy (the diff tests' mutations), planned
   back from mutated → original.

For each diff both tools' scripts are applied to a fresh copy of the from-database and
judged the same way: ``compare(introspect(copy), introspect(target)).significant == []``.
migra runs with ``--unsafe --with-privileges`` on the whole database (opsagent plans with
``allow_drop=True``); it is installed into its own venv outside the repository on first use
(pip ``migra psycopg2-binary 'sqlalchemy<2'``) and skipped with a message when pip fails.

Times per diff: migra = the CLI's wall time (it connects to both databases, inspects them
and prints the script; its interpreter start-up is reported separately); opsagent =
``introspect_many`` of both databases over SSH + ``generate_plan`` ("live"), the pure
``generate_plan`` alone ("plan"), and ``plan_against_sql`` from the live database to the
target's SQL, which also rehearses the plan on a scratch copy ("verified"), cold (a fresh desired-state cache:
the target's SQL is materialized once) and warm (from that cache; issue 14).

Run: ``python bench/bench_plan_peer.py [--json out.json] [--verify-musicbrainz N] [--only case,...]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsagent.inventory import HostConfig  # noqa: E402
from opsagent.remote.sandbox import SandboxState, pg_bindir, temporary_sandbox  # noqa: E402
from opsagent.remote.transport import Remote, open_remote  # noqa: E402
from opsagent.schema.catalog import Catalog, introspect_many  # noqa: E402
from opsagent.schema.changes import Change, DiffResult  # noqa: E402
from opsagent.schema.compare import compare  # noqa: E402
from opsagent.schema.declarative import PlanOptions, plan_against_sql  # noqa: E402
from opsagent.schema.drift import confirm_changes  # noqa: E402
from opsagent.schema.extract import dump_schema  # noqa: E402
from opsagent.schema.plan import generate_plan  # noqa: E402
from tests.catalog_helpers import role_names  # noqa: E402

CORPORA = REPO.parent / "shared" / "corpora"
MIGRA_CASES = CORPORA / "migra"
MUSICBRAINZ = CORPORA / "schemas" / "musicbrainz.sql"
VENV = Path("/var/tmp/opsagent-bench-migra-venv")
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by postgres, unlike an interpreter under /root
MIGRA_PACKAGES = ["migra", "psycopg2-binary", "sqlalchemy<2"]

# the musicbrainz mutations of tests/test_diff_corpus.py (REAL["musicbrainz"]["mutations"])
MUSICBRAINZ_MUTATIONS = {
    "drop an index": "DROP INDEX musicbrainz.artist_idx_name",
    "change a column type": "ALTER TABLE musicbrainz.artist ALTER COLUMN edits_pending TYPE bigint",
    "add a check constraint": (
        "ALTER TABLE musicbrainz.artist ADD CONSTRAINT artist_name_short CHECK (length(name) < 10000)"
    ),
    "alter a view": (
        "DO $$ BEGIN EXECUTE 'CREATE OR REPLACE VIEW musicbrainz.release_event AS '"
        " || rtrim(pg_get_viewdef('musicbrainz.release_event'::regclass), '; ') || ' LIMIT 1000'; END $$"
    ),
    "alter a function body": (
        "DO $$ BEGIN EXECUTE replace(pg_get_functiondef('musicbrainz.a_ins_event()'::regprocedure),"
        " 'BEGIN', 'BEGIN' || chr(10) || '    PERFORM 1;'); END $$"
    ),
    "add a trigger": (
        "CREATE TRIGGER artist_noop BEFORE UPDATE ON musicbrainz.artist FOR EACH ROW "
        "EXECUTE FUNCTION suppress_redundant_updates_trigger()"
    ),
    "drop a foreign key": "ALTER TABLE musicbrainz.artist DROP CONSTRAINT artist_fk_area",
}

T = TypeVar("T")


@dataclasses.dataclass
class Outcome:
    """One tool's answer for one diff: right when applied, why not, and how long the diff took."""

    ok: bool
    reason: str
    seconds: float
    artifacts: int = 0  # differences that vanish through one dump-and-load (see judge)


@dataclasses.dataclass
class Row:
    group: str  # "migra" or "musicbrainz"
    case: str
    migra: Outcome | None
    opsagent: Outcome
    plan_seconds: float
    verified_seconds: float | None = None
    verified: bool | None = None
    verified_reason: str = ""  # what plan_against_sql's own rehearsal reported when it did not verify
    migra_warm_seconds: float | None = None  # migra's diff inside one running interpreter (no start-up)
    source: str = ""  # the databases diffed (kept until migra's in-process timing has run)
    target: str = ""
    verified_warm_seconds: float | None = None  # plan_against_sql with a warm desired-state cache

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def short(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------- the local cluster


class Cluster:
    """The sandbox's PostgreSQL, driven locally as ``postgres`` (loading, copying, applying);
    catalogs are read through opsagent over SSH like the product does."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def psql(self, database: str, sql: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
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
            self.state.socket_dir,
            "-p",
            str(self.state.pg_port),
            "-d",
            database,
            "-f",
            "-",
        ]
        proc = subprocess.run(argv, input=sql, text=True, capture_output=True, cwd="/", timeout=600, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"psql on {database} failed: {last_line(proc.stderr)}")
        return proc

    def create(self, name: str, template: str | None = None) -> str:
        self.drop(name)
        clause = f' TEMPLATE "{template}"' if template else ""
        self.psql("postgres", f'CREATE DATABASE "{name}"{clause}')
        return name

    def drop(self, name: str) -> None:
        self.psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url(self, database: str) -> str:
        return f"postgresql:///{database}?host={self.state.socket_dir}&port={self.state.pg_port}"

    def host(self, database: str) -> HostConfig:
        return HostConfig(name=self.state.name, **{**self.state.host_entry(), "database": database})  # type: ignore[arg-type]

    @contextmanager
    def remote(self, database: str = "postgres") -> Iterator[Remote]:
        with open_remote(self.host(database)) as remote:
            yield remote

    def ensure_roles(self, names: set[str]) -> None:
        for name in sorted(n for n in names if n.lower() not in ("postgres", "public")):
            literal = name.replace("'", "''")
            self.psql(
                "postgres",
                f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{literal}') THEN "
                f"EXECUTE format('CREATE ROLE %I', '{literal}'); END IF; END $$",
            )


# ---------------------------------------------------------------- migra, in its own venv


def usable(migra: Path) -> bool:
    """postgres (peer authentication) can run it: a venv on an interpreter under /root could not."""
    argv = ["runuser", "-u", "postgres", "--", str(migra.parent / "python"), "-c", "import migra, psycopg2"]
    return migra.exists() and subprocess.run(argv, capture_output=True, cwd="/", check=False).returncode == 0


def install_migra() -> Path | None:
    """The migra executable (venv created on first use), or None with the reason printed."""
    migra = VENV / "bin" / "migra"
    if usable(migra):
        return migra
    shutil.rmtree(VENV, ignore_errors=True)
    base = SYSTEM_PYTHON if Path(SYSTEM_PYTHON).exists() else sys.executable
    steps = [[base, "-m", "venv", str(VENV)], [str(VENV / "bin" / "pip"), "install", "-q", *MIGRA_PACKAGES]]
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            print(f"migra skipped: {' '.join(argv[:3])} failed: {last_line(proc.stderr or proc.stdout)}")
            return None
    if not usable(migra):
        print(f"migra skipped: {migra} cannot be run by the postgres user")
        return None
    return migra


def round_trip(cluster: Cluster) -> float:
    """opsagent's floor per diff: one psql over SSH through sudo (introspect_many reads both databases in one)."""
    with cluster.remote() as remote:
        remote.psql("SELECT 1")
        return statistics.median(timed(lambda: remote.psql("SELECT 1"))[1] for _ in range(5))


def migra_startup(migra: Path) -> float:
    """What each migra invocation pays before it diffs: interpreter start and its imports."""
    python = str(migra.parent / "python")
    argv = ["runuser", "-u", "postgres", "--", python, "-c", "import migra.command, sqlbag, psycopg2"]
    subprocess.run(argv, capture_output=True, cwd="/", check=True)  # warm the page cache
    return statistics.median(
        timed(lambda: subprocess.run(argv, capture_output=True, cwd="/", check=True))[1] for _ in range(3)
    )


# migra's own CLI code path (migra.command.run), timed inside one interpreter after a warm-up diff
MIGRA_DRIVER = """
import io, json, statistics, sys, time
from migra.command import parse_args, run
pairs, repeat = json.load(sys.stdin)
def once(a, b):
    started = time.perf_counter()
    run(parse_args(["--unsafe", "--with-privileges", a, b]), out=io.StringIO(), err=io.StringIO())
    return time.perf_counter() - started
once(*pairs[0])
print(json.dumps([statistics.median(once(a, b) for _ in range(repeat)) for a, b in pairs]))
"""


def migra_warm(cluster: Cluster, migra: Path, rows: list[Row], repeat: int) -> None:
    """Fill ``migra_warm_seconds``: every diff of ``rows`` again, in one process, median of ``repeat``."""
    if not rows:
        return
    pairs = [[cluster.url(row.source), cluster.url(row.target)] for row in rows]
    argv = ["runuser", "-u", "postgres", "--", str(migra.parent / "python"), "-c", MIGRA_DRIVER]
    proc = subprocess.run(
        argv, input=json.dumps([pairs, repeat]), capture_output=True, text=True, cwd="/", timeout=900, check=False
    )
    if proc.returncode != 0:
        print(f"migra in-process timing failed: {last_line(proc.stderr)}")
        return
    for row, seconds in zip(rows, json.loads(proc.stdout), strict=True):
        row.migra_warm_seconds = seconds


def run_migra(cluster: Cluster, migra: Path, source: str, target: str) -> tuple[str | None, str, float]:
    """(script or None, why it failed, wall time) of ``migra --unsafe --with-privileges source target``."""
    argv = [
        "runuser",
        "-u",
        "postgres",
        "--",
        str(migra),
        "--unsafe",
        "--with-privileges",
        cluster.url(source),
        cluster.url(target),
    ]
    proc, seconds = timed(
        lambda: subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=600, check=False)
    )
    if proc.returncode not in (0, 2, 3):  # 2 (3 in old releases): differences found
        return None, f"migra exited {proc.returncode}: {last_line(proc.stderr)}", seconds
    return proc.stdout, "", seconds


# ---------------------------------------------------------------- judging by applying


def judge(cluster: Cluster, remote: Remote, copy_name: str, script: str, target: Catalog, target_db: str) -> Outcome:
    """Apply ``script`` to ``copy_name`` (a fresh copy of the from-database, dropped here); right when nothing
    significant differs from ``target``.

    A "changed" finding that disappears once both sides go through one dump-and-load
    (``confirm_changes``, as opsagent's own verification does) is a deparse artifact:
    counted as right, but marked (``artifacts``) so the strict count stays visible.
    """
    try:
        proc = cluster.psql(copy_name, script, check=False)
        if proc.returncode != 0:
            return Outcome(False, "apply failed: " + last_line(proc.stderr), 0.0)
        result = introspect_many(remote, [copy_name])[copy_name]
        remaining = compare(result, target).significant
        if not remaining:
            return Outcome(True, "", 0.0)
        confirmed = confirm_changes(
            remote,
            DiffResult(remaining),
            lambda: dump_schema(remote, copy_name),
            lambda: dump_schema(remote, target_db),
        ).changes
        if confirmed:
            return Outcome(False, f"{len(confirmed)} left: " + describe(confirmed), 0.0)
        return Outcome(True, "deparse artifacts only: " + describe(remaining), 0.0, artifacts=len(remaining))
    finally:
        cluster.drop(copy_name)


def describe(changes: list[Change]) -> str:
    return "; ".join(f"{c.kind} {c.status} {c.name} {' '.join(c.details)}".strip() for c in changes)


def diff_both(
    cluster: Cluster,
    migra: Path | None,
    group: str,
    case: str,
    source: str,
    target: str,
    target_sql: str,
    *,
    verified: bool = True,
    repeat: int = 3,
) -> Row:
    """Both tools from ``source`` to ``target`` (two databases on the sandbox), each judged by applying."""
    migra_outcome = None
    if migra is not None:
        script, why, seconds = run_migra(cluster, migra, source, target)
        if script is None:
            migra_outcome = Outcome(False, why, seconds)
    with cluster.remote(source) as remote:  # one SSH connection per case; no database session stays open
        live = [timed(lambda: introspect_many(remote, [source, target], dependencies=True)) for _ in range(repeat)]
        catalogs = live[0][0]
        plans = [
            timed(lambda: generate_plan(catalogs[source], catalogs[target], allow_drop=True)) for _ in range(repeat)
        ]
        plan, plan_seconds = plans[0][0], statistics.median(seconds for _, seconds in plans)
        live_seconds = statistics.median(seconds for _, seconds in live) + plan_seconds
        report, verified_seconds = None, None
        warm_seconds = None
        if verified:  # cold: schema.sql materialized into a fresh desired-state cache; warm: from that cache (issue 14)
            with tempfile.TemporaryDirectory() as cache:
                options = PlanOptions(allow_drop=True, cache_dir=Path(cache))
                report, verified_seconds = timed(lambda: plan_against_sql(remote, target_sql, f"{case}/b.sql", options))
                warm_seconds = statistics.median(
                    timed(lambda: plan_against_sql(remote, target_sql, f"{case}/b.sql", options))[1]
                    for _ in range(repeat)
                )
        desired = catalogs[target]
        scripts = {"opsagent": plan.script()}
        if migra is not None and migra_outcome is None:
            scripts["migra"] = script or ""
        for tool in scripts:  # copied one after the other: a template must have no other session
            cluster.create(f"peer_copy_{tool}", template=source)
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:  # judging is not timed
            verdicts = dict(
                zip(
                    scripts,
                    pool.map(
                        lambda tool: judge(cluster, remote, f"peer_copy_{tool}", scripts[tool], desired, target),
                        scripts,
                    ),
                    strict=True,
                )
            )
        if "migra" in verdicts:
            migra_outcome = dataclasses.replace(verdicts["migra"], seconds=seconds)
        outcome = dataclasses.replace(verdicts["opsagent"], seconds=live_seconds)
    row = Row(
        group,
        case,
        migra_outcome,
        outcome,
        plan_seconds,
        verified_seconds,
        source=source,
        target=target,
        verified_warm_seconds=warm_seconds,
    )
    if report is not None:
        row.verified = report.verified
        row.verified_reason = report.error or describe(report.remaining)
    return row


# ---------------------------------------------------------------- the two corpora


def migra_cases(cluster: Cluster, migra: Path | None, only: set[str] | None, repeat: int) -> list[Row]:
    if not MIGRA_CASES.exists():
        print(f"migra cases skipped: {MIGRA_CASES} not found (the shared corpora are absent)")
        return []
    cases = sorted(p for p in MIGRA_CASES.iterdir() if (p / "a.sql").exists() and (only is None or p.name in only))
    texts = {(c.name, side): (c / f"{side}.sql").read_text() for c in cases for side in ("a", "b")}
    cluster.ensure_roles(set().union(*(role_names(t) for t in texts.values())))
    rows: list[Row] = []
    for index, case in enumerate(cases):
        a, b = cluster.create(f"peer_{index}_a"), cluster.create(f"peer_{index}_b")
        cluster.psql(a, texts[(case.name, "a")])
        cluster.psql(b, texts[(case.name, "b")])
        rows.append(diff_both(cluster, migra, "migra", case.name, a, b, texts[(case.name, "b")], repeat=repeat))
        additions = case / "additions.sql"
        if additions.exists() and additions.read_text().strip():
            second = cluster.create(f"peer_{index}_a2", template=a)
            cluster.psql(second, additions.read_text())
            rows.append(
                diff_both(
                    cluster, migra, "migra+additions", case.name, second, b, texts[(case.name, "b")], repeat=repeat
                )
            )
    if migra is not None:
        migra_warm(cluster, migra, rows, repeat)
    for db in dict.fromkeys(name for row in rows for name in (row.source, row.target)):
        cluster.drop(db)
    return rows


def musicbrainz_cases(
    cluster: Cluster, migra: Path | None, verified: int, only: set[str] | None, repeat: int
) -> list[Row]:
    if not MUSICBRAINZ.exists():
        print(f"musicbrainz skipped: {MUSICBRAINZ} not found (the shared corpora are absent)")
        return []
    sql = MUSICBRAINZ.read_text()
    original = cluster.create("peer_mb")
    cluster.psql(original, sql)
    rows: list[Row] = []
    for index, (name, mutation) in enumerate(MUSICBRAINZ_MUTATIONS.items()):
        if only is not None and name not in only:
            continue
        mutated = cluster.create(f"peer_mb_{index}", template=original)
        cluster.psql(mutated, mutation)
        rows.append(
            diff_both(
                cluster, migra, "musicbrainz", name, mutated, original, sql, verified=index < verified, repeat=repeat
            )
        )
        print(f"  musicbrainz: {name} done", file=sys.stderr)
    if migra is not None:
        migra_warm(cluster, migra, rows, repeat)
    for db in [row.source for row in rows] + [original]:
        cluster.drop(db)
    return rows


# ---------------------------------------------------------------- report


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def verdict(outcome: Outcome | None) -> str:
    if outcome is None:
        return "skipped"
    return ("ok*" if outcome.artifacts else "ok") if outcome.ok else "FAIL"


def print_table(rows: list[Row]) -> None:
    print(
        f"{'group':<16} {'case':<24} {'migra':<7} {'CLI ms':>6} {'warm ms':>7}  {'opsagent':<8} {'live ms':>7} "
        f"{'plan ms':>7} {'verif. ms':>9}"
    )
    for row in rows:
        verified = ms(row.verified_seconds) + ("" if row.verified is None else (" v" if row.verified else " ✗"))
        print(
            f"{row.group:<16} {row.case:<24} {verdict(row.migra):<7} {ms(row.migra.seconds if row.migra else None):>6} "
            f"{ms(row.migra_warm_seconds):>7}  {verdict(row.opsagent):<8} {ms(row.opsagent.seconds):>7} "
            f"{ms(row.plan_seconds):>7} {verified:>9}"
        )
    failures = [
        (row, tool, outcome)
        for row in rows
        for tool, outcome in (("migra", row.migra), ("opsagent", row.opsagent))
        if outcome is not None and outcome.reason
    ]
    if failures:
        print("failures (FAIL) and deparse artifacts (ok*):")
        for row, tool, outcome in failures:
            print(f"  {tool:<8} {row.group}/{row.case}: {short(outcome.reason, 300)}")
    for row in rows:
        if row.verified is False:
            print(
                f"  opsagent plan_against_sql not verified for {row.group}/{row.case}: "
                f"{short(row.verified_reason, 300)}"
            )


def summary(rows: list[Row], startup: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"migra_startup_seconds": startup, "round_trip_seconds": None, "groups": {}}
    for group in dict.fromkeys(row.group for row in rows):
        chosen = [row for row in rows if row.group == group]
        ops = [row.opsagent.seconds for row in chosen]
        doc: dict[str, Any] = {
            "cases": len(chosen),
            "opsagent_right": sum(row.opsagent.ok for row in chosen),
            "opsagent_right_strict": sum(row.opsagent.ok and not row.opsagent.artifacts for row in chosen),
            "opsagent_live_median": statistics.median(ops),
            "opsagent_live_total": sum(ops),
            "opsagent_plan_median": statistics.median(row.plan_seconds for row in chosen),
            "opsagent_verified_right": sum(bool(row.verified) for row in chosen),
            "opsagent_verified_cases": sum(row.verified is not None for row in chosen),
        }
        verified = [row.verified_seconds for row in chosen if row.verified_seconds is not None]
        if verified:
            doc["opsagent_verified_median"] = statistics.median(verified)
        warm_verified = [row.verified_warm_seconds for row in chosen if row.verified_warm_seconds is not None]
        if warm_verified:
            doc["opsagent_verified_warm_median"] = statistics.median(warm_verified)
        migra = [row.migra for row in chosen if row.migra is not None]
        if migra:
            doc.update(
                migra_right=sum(o.ok for o in migra),
                migra_right_strict=sum(o.ok and not o.artifacts for o in migra),
                migra_median=statistics.median(o.seconds for o in migra),
                migra_total=sum(o.seconds for o in migra),
            )
            doc["ratio_live_vs_migra"] = doc["opsagent_live_median"] / doc["migra_median"]
        warm = [row.migra_warm_seconds for row in chosen if row.migra_warm_seconds is not None]
        if warm:
            doc.update(migra_warm_median=statistics.median(warm), migra_warm_total=sum(warm))
            doc["ratio_live_vs_migra_warm"] = doc["opsagent_live_median"] / doc["migra_warm_median"]
        out["groups"][group] = doc
    return out


def print_summary(doc: dict[str, Any]) -> None:
    startup = doc["migra_startup_seconds"]
    print(
        "opsagent floor (one psql round trip over SSH + sudo, paid by each live diff): "
        f"{ms(doc['round_trip_seconds'])} ms"
    )
    if startup is not None:
        print(f"migra start-up (interpreter + imports, paid by each CLI call): {ms(startup)} ms")
    for group, g in doc["groups"].items():
        line = f"{group}: opsagent {g['opsagent_right']}/{g['cases']} right ({g['opsagent_right_strict']} strictly)"
        if "migra_right" in g:
            line += f", migra {g['migra_right']}/{g['cases']} ({g['migra_right_strict']} strictly)"
        print(line)
        print(
            f"  opsagent live (introspect both + plan): median {ms(g['opsagent_live_median'])} ms, "
            f"total {ms(g['opsagent_live_total'])} ms; "
            f"generate_plan alone median {g['opsagent_plan_median'] * 1000:.1f} ms"
        )
        if "opsagent_verified_median" in g:
            print(
                "  opsagent plan_against_sql (materialize + plan + rehearse): "
                f"median {ms(g['opsagent_verified_median'])} ms, "
                f"self-verified {g['opsagent_verified_right']}/{g['opsagent_verified_cases']}"
            )
        if "opsagent_verified_warm_median" in g:
            line = (
                "  opsagent plan_against_sql with a warm desired-state cache: "
                f"median {ms(g['opsagent_verified_warm_median'])} ms"
            )
            if "migra_median" in g:
                line += (
                    f"; vs migra CLI: cold {g['opsagent_verified_median'] / g['migra_median']:.2f}x (target <= 5), "
                    f"warm {g['opsagent_verified_warm_median'] / g['migra_median']:.2f}x (target <= 2)"
                )
            print(line)
        if "migra_median" in g:
            print(
                f"  migra CLI: median {ms(g['migra_median'])} ms, total {ms(g['migra_total'])} ms; "
                f"ratio opsagent live / migra {g['ratio_live_vs_migra']:.2f}x"
            )
        if "migra_warm_median" in g:
            print(
                f"  migra in-process (no start-up): median {ms(g['migra_warm_median'])} ms, "
                f"total {ms(g['migra_warm_total'])} ms; "
                f"ratio opsagent live / migra in-process {g['ratio_live_vs_migra_warm']:.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write every row and the summary to this file")
    parser.add_argument(
        "--verify-musicbrainz",
        type=int,
        default=1,
        metavar="N",
        help="run plan_against_sql (cold, then warm) for the first N musicbrainz mutations only",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timings (opsagent live, migra in-process) are medians of this many runs"
    )
    parser.add_argument("--only", help="comma-separated case or mutation names (debugging)")
    args = parser.parse_args()
    started = time.perf_counter()
    migra = install_migra()
    with temporary_sandbox("sandbox", "opp-") as (_base, state):
        cluster = Cluster(state)
        startup = migra_startup(migra) if migra is not None else None
        floor = round_trip(cluster)
        only = set(args.only.split(",")) if args.only else None
        rows = migra_cases(cluster, migra, only, args.repeat)
        rows += musicbrainz_cases(cluster, migra, args.verify_musicbrainz, only, args.repeat)
    print_table(rows)
    doc = summary(rows, startup)
    doc["round_trip_seconds"] = floor
    print_summary(doc)
    print(f"bench wall time: {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": [row.to_dict() for row in rows], **doc}, indent=2) + "\n")


if __name__ == "__main__":
    main()
