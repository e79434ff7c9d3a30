"""``inv plan`` (the SQL that turns the live database into schema.sql, rehearsed before it is shown) and
``inv new`` (a migration file: from the template, or ``--from-diff`` the verified plan)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from invoke.context import Context
from rich.console import Console
from rich.text import Text

from ..errors import ExitCode, PlanNotVerified, UsageError
from ..inventory import HostConfig, Inventory
from ..migrate.files import new_migration
from ..migrate.lint import thresholds_from
from ..remote.transport import open_remote
from ..units import label
from .base import (
    ACCEPT_HELP,
    JSON_HELP,
    check_against,
    command,
    fail,
    inventory,
    outside_project_error,
    single_host,
)
from .environment import Environment, environment
from .progress import waiting

if TYPE_CHECKING:  # the declarative modules (catalog, diff, plan) load in the tasks that use them, not on every command
    from collections.abc import Sequence

    from ..schema.changes import Change
    from ..schema.declarative import PlanOptions, PlanReport
    from ..schema.oracle import DumpDifference

PLAN_HELP = {
    "host": "inventory host name (one host): its live database is the starting point",
    "against": "target structure: 'schema' (paths.schema, default) or 'snapshot' "
    "(the host's last 'inv extract': undo drift since)",
    "against_host": "plan towards another host's live structure instead of schema.sql "
    "(e.g. prod catching up with staging)",
    "from_": "starting point: 'live' (default) or 'snapshot' "
    "(the host's last 'inv extract'; the live database is not read)",
    "allow_drop": "include destructive statements (drops of tables, columns, types; lossy type changes) "
    "instead of emitting them commented out",
    "concurrently": "build new indexes on existing tables with CREATE INDEX CONCURRENTLY: "
    "'auto' (default: tables at or above the hazards: large-table thresholds), 'always' (the flag alone), 'never'",
    "recheck": "rehearse again even when this very plan was already verified on this very live catalog "
    "(its fingerprint; see docs/SCHEMA_MANAGEMENT.md)",
    "json_": JSON_HELP,
    "accept_new_host_key": ACCEPT_HELP,
}


def _options(target: HostConfig, allow_drop: bool, concurrently: str | bool, recheck: bool = False) -> PlanOptions:
    from ..schema.declarative import CONCURRENTLY_CHOICES, PlanOptions

    mode = "always" if concurrently is True else (concurrently or "auto")
    if mode not in CONCURRENTLY_CHOICES:
        raise UsageError(f"--concurrently {mode!r}: expected one of {', '.join(CONCURRENTLY_CHOICES)}")
    from ..schema.exclusions import ledger_exclusions
    from ..schema.facts import default_cache_dir

    return PlanOptions(
        allow_drop=allow_drop,
        concurrently=mode,
        thresholds=thresholds_from(target.hazards),
        exclude_tables=ledger_exclusions(target),
        cache_dir=default_cache_dir(inventory().paths.state),
        recheck=recheck,
    )


def _make_report(
    host: str,
    against: str,
    against_host: str,
    from_: str,
    allow_drop: bool,
    concurrently: str | bool,
    accept_new: bool,
    *,
    err: Console,
    recheck: bool = False,
) -> tuple[PlanReport, Inventory]:
    target, inv = single_host(host)
    if inv.source is None:  # schema.sql and the snapshots are the project's files: not the current folder's
        raise outside_project_error()
    if from_ not in ("", "live", "snapshot"):
        raise UsageError(f"--from {from_!r}: expected 'live' or 'snapshot'")
    check_against(against, against_host, "plan towards")
    if from_ == "snapshot" and (against_host or against == "snapshot"):
        raise UsageError(
            "--from snapshot goes with schema.sql as the target: --against-host and --against snapshot "
            "exclude it (plan from one live database instead)"
        )
    from ..schema.declarative import plan_against_file, plan_against_host
    from ..schema.exclusions import ledger_exclusions
    from ..schema.extract import default_snapshot_path

    options = _options(target, allow_drop, concurrently, recheck)
    with (
        waiting(f"planning {target.name}", console=err),
        open_remote(target, inv, accept_new_host_key=accept_new) as remote,
    ):
        if against_host:
            other, _ = single_host(against_host)
            both = (*options.exclude_tables, *(e for e in ledger_exclusions(other) if e not in options.exclude_tables))
            with open_remote(other, inv, accept_new_host_key=accept_new) as other_remote:
                return plan_against_host(remote, other_remote, dataclasses.replace(options, exclude_tables=both)), inv
        snapshot = default_snapshot_path(inv.paths.snapshots, target.name)
        if against == "snapshot":
            return plan_against_file(remote, snapshot, options, what="snapshot (run 'inv extract' first)"), inv
        return plan_against_file(
            remote, inv.paths.schema, options, snapshot=snapshot if from_ == "snapshot" else None
        ), inv


@command(help=PLAN_HELP, optional=["concurrently"], needs_project=True)
def plan(
    c: Context,
    host: str = "",
    against: str = "",
    against_host: str = "",
    from_: str = "",
    allow_drop: bool = False,
    concurrently: str = "",
    recheck: bool = False,
    json_: bool = False,
    accept_new_host_key: bool = False,
) -> None:
    """Print the SQL turning the host's database into schema.sql, verified on a scratch copy; \
exit 3 if it falls short."""
    env = environment(c)
    report, _ = _make_report(
        host, against, against_host, from_, allow_drop, concurrently, accept_new_host_key, err=env.err, recheck=recheck
    )
    if json_:
        env.print_json(report.to_dict())
    else:
        render_plan(report, env)
    if not report.verified:
        raise fail(ExitCode.DRIFT)


def render_plan(report: PlanReport, env: Environment) -> None:
    """The script on stdout (pipe-able to psql); warnings and the verification line on stderr."""
    if report.plan.is_empty and report.verified:
        env.err.print(f"{report.live} already matches {report.desired}: nothing to do")
    elif not report.plan.is_empty:
        env.out.print(Text(report.plan.script()), soft_wrap=True, end="")
    _render_verdict(report, env.err)


def _render_verdict(report: PlanReport, err: Console) -> None:
    for warning in report.plan.warnings:
        err.print(f"[yellow]warning[/]: {warning}", soft_wrap=True)
    style = "green" if report.verified else "red"
    err.print(f"[{style}]{report.verification_line()}[/]", soft_wrap=True)
    render_changes(report.remaining, err)
    render_undescribed(report.undescribed, err)


def render_changes(changes: Sequence[Change], console: Console) -> None:
    """The catalog differences a verification left, one line each: kind, name, status and details."""
    from ..schema.compare import display

    for change in changes:
        console.print(
            f"  {change.kind} {display(change.name)} ({change.status}): {'; '.join(change.details)}",
            soft_wrap=True,
            markup=False,
        )


def render_undescribed(differences: Sequence[DumpDifference], err: Console) -> None:
    """The dump oracle's findings the model did not report, as bounded unified-diff lines
    (``-`` live, ``+`` desired)."""
    from ..schema.oracle import render_lines

    if not differences:
        return
    err.print(
        "[red]differences opsagent cannot yet describe[/] "
        f"(seen only in the schema dumps, {len(differences)} object(s); - live, + desired):",
        soft_wrap=True,
    )
    for line in render_lines(differences):
        err.print(Text(f"  {line}"), soft_wrap=True)


@command(
    help={
        "description": "what the migration does, e.g. \"add paper trading mode\"",
        "from_diff": "write the verified plan from --host's live database to schema.sql (see 'inv plan') "
        "instead of a template",
        "force": "with --from-diff: write the file even when the rehearsal leaves differences",
        **{k: v for k, v in PLAN_HELP.items() if k != "json_"},
        "json_": JSON_HELP,
    },
    optional=["concurrently"],
    needs_project=True,
)
def new(
    c: Context,
    description: str,
    from_diff: bool = False,
    host: str = "",
    against: str = "",
    against_host: str = "",
    from_: str = "",
    allow_drop: bool = False,
    concurrently: str = "",
    force: bool = False,
    recheck: bool = False,
    json_: bool = False,
    accept_new_host_key: bool = False,
) -> None:
    """Create the next-numbered migration file (template, or --from-diff the verified plan) and print its path."""
    env = environment(c)
    if not from_diff:
        if host or against or against_host or from_ or allow_drop or concurrently or force or recheck:
            raise UsageError(
                "--host, --against, --against-host, --from, --allow-drop, --concurrently, --force and --recheck "
                "go with --from-diff"
            )
        path = new_migration(inventory().paths.migrations, description)
        if json_:
            env.print_json({"files": [str(path)]})
        else:
            env.write(label(path) + "\n")
        return
    report, inv = _make_report(
        host, against, against_host, from_, allow_drop, concurrently, accept_new_host_key, err=env.err, recheck=recheck
    )
    if report.plan.is_empty and report.verified:
        _emit_new(report, [], json_, env)
        return
    if report.plan.is_empty or (not report.verified and not force):
        _emit_new(report, [], json_, env)
        raise PlanNotVerified(
            "no migration written: the plan is not verified",
            hint="see 'inv plan' for what remains; --force writes it anyway, for editing by hand",
        )
    from ..schema.declarative import write_migrations

    paths = write_migrations(report, inv.paths.migrations, description)
    _emit_new(report, paths, json_, env)


def _emit_new(report: PlanReport, paths: list[Path], json_: bool, env: Environment) -> None:
    if json_:
        env.print_json({"files": [str(p) for p in paths], **report.to_dict()})
        return
    if report.plan.is_empty and report.verified:
        env.err.print(f"{report.live} already matches {report.desired}: no migration written")
        return
    _render_verdict(report, env.err)
    for path in paths:
        env.write(label(path) + "\n")
