"""Schema tasks: ``extract`` (snapshot + statistics), ``diff`` (drift, exit 3) and ``check``
(migrations vs schema.sql)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from invoke.context import Context
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import ExitCode, UsageError
from ..inventory import HostConfig, Inventory
from ..remote.fleet import HostOutcome
from ..remote.transport import open_pair, open_remote
from ..schema.extract import ExtractResult, default_snapshot_path, extract, write_snapshot
from ..units import human_bytes, label
from .base import (
    ACCEPT_HELP,
    HOST_HELP,
    JSON_HELP,
    check_against,
    command,
    fail,
    hosts_named,
    inventory,
    single_host,
)
from .environment import environment
from .fleet import FLEET_HELP, run_and_render
from .progress import tracking, waiting

if TYPE_CHECKING:  # catalog, diff and drift load in the tasks that use them, not on every command (e.g. sync)
    from ..schema.changes import Change, DiffResult
    from ..schema.drift import CheckReport
    from ..schema.report import DriftReport


STAT_ROWS: list[tuple[str, str]] = [
    ("schemas", "schemas"),
    ("tables", "tables"),
    ("columns", "columns"),
    ("indexes", "indexes"),
    ("primary_keys", "constraints: primary key"),
    ("foreign_keys", "constraints: foreign key"),
    ("unique_constraints", "constraints: unique"),
    ("check_constraints", "constraints: check"),
    ("exclude_constraints", "constraints: exclude"),
    ("views", "views"),
    ("materialized_views", "materialized views"),
    ("sequences", "sequences"),
    ("functions", "functions"),
    ("procedures", "procedures"),
    ("triggers", "triggers"),
    ("enum_types", "types: enum"),
    ("composite_types", "types: composite"),
    ("domain_types", "types: domain"),
    ("extensions", "extensions"),
    ("policies", "policies"),
    ("collations", "collations"),
    ("text_search_configurations", "text search configurations"),
    ("text_search_dictionaries", "text search dictionaries"),
]
STATUS_STYLE = {"extra": ("yellow", "+"), "missing": ("red", "-"), "changed": ("cyan", "~")}


# ---------------------------------------------------------------- extract


def _extract_one(target: HostConfig, inv: Inventory, path: Path, accept_new: bool, err: Console) -> ExtractResult:
    from ..schema.exclusions import ledger_exclusions

    with (
        waiting(f"extracting the schema of {target.name}", console=err),
        open_remote(target, inv, accept_new_host_key=accept_new) as remote,
    ):
        result = extract(
            remote, exclude_tables=ledger_exclusions(target)
        )  # the statistics leave out this host's ledger only
    write_snapshot(result, path)
    return result


@command(
    name="extract",
    help={
        "host": HOST_HELP,
        "out": "write the snapshot here instead of <paths.snapshots>/<host>/schema.sql",
        **FLEET_HELP,
    },
    needs_project=True,
)
def extract_task(
    c: Context,
    host: str = "",
    out: str = "",
    json_: bool = False,
    accept_new_host_key: bool = False,
    parallel: int = 0,
    fail_fast: bool = False,
    timeout: float = 0,
) -> None:
    """Snapshot the host's schema (pg_dump --schema-only, normalized, gzip in transit) and print object counts."""
    env = environment(c)
    targets, inv = hosts_named(host, project=True)
    if len(targets) > 1:
        if out:
            raise UsageError(
                f"--out names one file but --host {host!r} names {len(targets)} hosts",
                hint="drop --out: each host's snapshot goes to <paths.snapshots>/<host>/schema.sql",
            )

        def action(target: HostConfig) -> HostOutcome:
            path = default_snapshot_path(inv.paths.snapshots, target.name)
            result = _extract_one(target, inv, path, accept_new_host_key, env.err)
            return HostOutcome(
                target.name, message=f"{result.stats.get('tables', 0)} tables", details=result.to_dict(path)
            )

        columns = (
            ("tables", lambda o: str(o.details.get("stats", {}).get("tables", ""))),
            ("snapshot", lambda o: str(o.details.get("path") or "")),
        )
        run_and_render(
            targets,
            action,
            env,
            title="extract",
            columns=columns,
            parallel=parallel,
            fail_fast=fail_fast,
            timeout=timeout,
            json_=json_,
        )
        return
    target = targets[0]
    path = Path(out) if out else default_snapshot_path(inv.paths.snapshots, target.name)
    result = _extract_one(target, inv, path, accept_new_host_key, env.err)
    if json_:
        env.print_json(result.to_dict(path))
        return
    _render_stats(result, path, env.out)


def _render_stats(result: ExtractResult, path: Path, out: Console) -> None:
    table = Table(title=f"{result.host}:{result.database} → {label(path)}")
    table.add_column("objects")
    table.add_column("count", justify="right")
    for key, title in STAT_ROWS:
        table.add_row(title, f"{result.stats.get(key, 0):,}")
    table.add_section()
    table.add_row("snapshot size", f"{human_bytes(result.size)} ({result.dump.count(chr(10)):,} lines)")
    out.print(table)


# ---------------------------------------------------------------- diff


def _drift_report(
    target: HostConfig,
    inv: Inventory,
    against: str,
    against_host: str,
    text: bool,
    accept_new: bool,
    err: Console,
    fast: bool = False,
    recheck: bool = False,
) -> DriftReport:
    from ..schema.exclusions import ledger_exclusions
    from ..schema.facts import default_cache_dir
    from ..schema.report import drift_between, drift_from_file

    ledger = ledger_exclusions(target)  # this host's ledger, and only it, is left out (never a user table of that name)
    cache_dir = default_cache_dir(inv.paths.state)
    if against_host:
        other, _ = single_host(against_host)
        with (
            waiting(f"comparing {target.name}", console=err),
            open_pair(target, other, inv, accept_new_host_key=accept_new) as (remote, other_remote),
        ):
            return drift_between(remote, other_remote, text=text, fast=fast, recheck=recheck, cache_dir=cache_dir)
    with (
        waiting(f"comparing {target.name}", console=err),
        open_remote(target, inv, accept_new_host_key=accept_new) as remote,
    ):
        if against == "snapshot":
            from ..schema.drift import diff_against_snapshot

            snapshot = default_snapshot_path(inv.paths.snapshots, target.name)
            return diff_against_snapshot(remote, snapshot, text=text, fast=fast, exclude_tables=ledger)
        return drift_from_file(
            remote, inv.paths.schema, ledger, text=text, fast=fast, recheck=recheck, cache_dir=cache_dir
        )


def _drift_outcome(target: HostConfig, report: DriftReport) -> HostOutcome:
    """A drifted host is status 'drift' with exit code 3; a failure elsewhere makes the run exit 1."""
    count = report.count
    details = {**report.to_dict(), "drift_count": count}
    if report.drift:
        return HostOutcome(target.name, "drift", int(ExitCode.DRIFT), f"{count} difference(s)", details=details)
    return HostOutcome(target.name, message="no drift", details=details)


@command(
    help={
        "host": HOST_HELP,
        "against": "what the live database is compared with: 'schema' (paths.schema, default) "
        "or 'snapshot' (last extract)",
        "against_host": "compare with another host's live database instead (e.g. staging vs prod)",
        "text": "also print a unified diff of the two normalized dumps",
        "fast": "skip the second, independent check (comparing the two normalized pg_dump --schema-only texts): "
        "faster, but differences the catalog model cannot describe go unseen",
        "recheck": "compare again even when both oracles already found no drift and the catalog has not changed "
        "since (its fingerprint); see docs/SCHEMA_MANAGEMENT.md",
        **FLEET_HELP,
    },
    needs_project=True,
)
def diff(
    c: Context,
    host: str = "",
    against: str = "",
    against_host: str = "",
    text: bool = False,
    fast: bool = False,
    recheck: bool = False,
    json_: bool = False,
    accept_new_host_key: bool = False,
    parallel: int = 0,
    fail_fast: bool = False,
    timeout: float = 0,
) -> None:
    """Drift of the host's database from schema.sql (or a snapshot, or another host); exit 3 when they differ."""
    env = environment(c)
    targets, inv = hosts_named(host, project=True)
    check_against(against, against_host, "compare with")
    if len(targets) > 1:

        def action(target: HostConfig) -> HostOutcome:
            return _drift_outcome(
                target,
                _drift_report(target, inv, against, against_host, text, accept_new_host_key, env.err, fast, recheck),
            )

        columns = (("drift", lambda o: str(o.details.get("drift_count", ""))),)
        run_and_render(
            targets,
            action,
            env,
            title="diff",
            columns=columns,
            parallel=parallel,
            fail_fast=fail_fast,
            timeout=timeout,
            json_=json_,
        )
        return
    report = _drift_report(targets[0], inv, against, against_host, text, accept_new_host_key, env.err, fast, recheck)
    if json_:
        env.print_json(report.to_dict())
    else:
        render_drift(report, env.out)
    if report.drift:
        raise fail(ExitCode.DRIFT)


def render_drift(report: DriftReport, out: Console) -> None:
    out.print(f"[bold]{report.live}[/] (live) vs [bold]{report.desired}[/] (desired)", soft_wrap=True)
    undescribed = report.undescribed
    if undescribed and report.result.is_empty:
        out.print("the catalog model sees no difference, but the schema dumps differ:")
    else:
        render_changes(report.result, "live", "desired", out)
    if undescribed:
        from ..schema.oracle import render_lines

        out.print(
            f"\n[bold red]differences opsagent cannot yet describe[/] ({len(undescribed)} object(s), seen only in the "
            "normalized pg_dump --schema-only of both sides; - live, + desired):",
            soft_wrap=True,
        )
        for line in render_lines(undescribed):
            out.print(Text(f"  {line}"), soft_wrap=True)
    elif report.dump_differences is None:
        out.print("[dim](--fast: the schema dumps were not compared)[/]")
    if report.recalled:
        out.print(
            f"[dim](both oracles found no difference at {report.recalled}; the catalog has not changed since, by its "
            "fingerprint: --recheck compares again)[/]",
            soft_wrap=True,
        )
    if report.text:
        out.print(Text(report.text), soft_wrap=True)


def render_changes(result: DiffResult, live: str, desired: str, out: Console) -> None:
    """Changes grouped by object kind; extra = only in live, missing = only in desired."""
    from ..schema.changes import KIND_ORDER

    words = {"extra": f"only in {live}", "missing": f"only in {desired}", "changed": "changed"}
    if result.is_empty:
        out.print("[green]no drift[/]: the structures are identical")
        return
    groups = result.by_kind()
    for kind in sorted(groups, key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER)):
        out.print(f"\n[bold]{kind}[/]")
        for change in groups[kind]:
            _render_change(change, words[change.status], out)
    counts = result.counts()
    summary = ", ".join(f"{n} {words[s]}" for s, n in counts.items() if n)
    low = len(result.changes) - len(result.significant)
    tail = f" ({low} cosmetic, not counted as drift)" if low else ""
    colour = "red" if result.significant else "yellow"
    out.print(f"\n[{colour}]{len(result.significant)} difference(s)[/]: {summary}{tail}", soft_wrap=True)


def _render_change(change: Change, word: str, out: Console) -> None:
    from ..schema.compare import display

    colour, mark = STATUS_STYLE[change.status]
    line = Text(f"  {mark} ", style=colour)
    line.append(display(change.name), style="bold")
    line.append(f"  {word}" + ("  (cosmetic)" if change.severity == "low" else ""), style="dim")
    out.print(line, soft_wrap=True)
    for detail in change.details:
        out.print(Text(f"      {detail}"), soft_wrap=True)


# ---------------------------------------------------------------- check


@command(
    help={
        "host": "server whose PostgreSQL hosts the scratch databases (default: sandbox; its database is not touched)",
        "json_": JSON_HELP,
        "accept_new_host_key": ACCEPT_HELP,
    },
    needs_project=True,
)
def check(c: Context, host: str = "sandbox", json_: bool = False, accept_new_host_key: bool = False) -> None:
    """Replay all migrations and load schema.sql into scratch databases and compare them; exit 3 when they disagree."""
    env = environment(c)
    inv = inventory()
    if host == "sandbox" and "sandbox" not in inv.hosts:
        raise UsageError("no host 'sandbox' in the inventory", hint="start one with 'inv sandbox.up' or pass --host")
    target, _ = single_host(host)
    from ..schema.drift import check_project
    from ..schema.exclusions import ledger_exclusions
    from ..schema.facts import default_cache_dir

    # a bar of scratch databases built (the replayed migrations, and schema.sql when the cache does not know it)
    with (
        tracking(
            f"checking migrations against schema.sql on {target.name}: databases", unit="count", console=env.err
        ) as shown,
        open_remote(target, inv, accept_new_host_key=accept_new_host_key) as remote,
    ):
        report = check_project(
            remote,
            inv.paths.migrations,
            inv.paths.schema,
            cache_dir=default_cache_dir(inv.paths.state),
            exclude_tables=ledger_exclusions(target),
            progress=shown.update,
        )
    if json_:
        env.print_json(report.to_dict())
    else:
        _render_check(report, label(inv.paths.schema), env.out)
    if not report.ok:
        raise fail(ExitCode.DRIFT)


def _render_check(report: CheckReport, schema: str, out: Console) -> None:
    for warning in report.warnings:
        out.print(Text("warning: ", style="yellow") + Text(warning), soft_wrap=True)
    for problem in report.problems:
        out.print(Text("problem: ", style="bold red") + Text(problem), soft_wrap=True)
    if report.result is None:
        out.print(f"[red]{len(report.problems)} problem(s) in the migration files[/]: not replayed")
        return
    out.print(
        f"[bold]{report.migrations} migration(s)[/] replayed vs [bold]{schema}[/] on {report.host}", soft_wrap=True
    )
    undescribed = report.undescribed
    if undescribed and report.result.is_empty:
        out.print("the catalog model sees no difference, but the schema dumps differ:")
    else:
        render_changes(report.result, "migrations", schema, out)
    if undescribed:
        from ..schema.oracle import render_lines

        out.print(
            f"\n[bold red]differences opsagent cannot yet describe[/] ({len(undescribed)} object(s), seen only in the "
            "normalized pg_dump --schema-only of both sides; - migrations, + schema.sql):",
            soft_wrap=True,
        )
        for line in render_lines(undescribed):
            out.print(Text(f"  {line}"), soft_wrap=True)
