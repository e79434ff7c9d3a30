"""Migration tasks: sync, status (alias history), baseline, repair, new."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.context import Context
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from ..errors import ExitCode, OpsagentError, UsageError
from ..inventory import HostConfig, Inventory
from ..migrate.audit import append_audit, git_commit, who
from ..migrate.files import Migration, VersionStatus
from ..migrate.ledger import Ledger
from ..migrate.sync import (
    Identity,
    LedgerEdit,
    SyncEvent,
    SyncInterrupted,
    SyncOptions,
    SyncResult,
    apply_repair,
    baseline,
    duration_seconds,
    read_state,
    repair_changes,
    statuses_for,
)
from ..migrate.sync import sync as run_sync
from ..remote.fleet import HostOutcome, sync_outcome
from ..remote.transport import Remote, open_remote
from ..schema.facts import default_cache_dir
from ..units import parse_duration
from .base import (
    ACCEPT_HELP,
    HOST_HELP,
    JSON_HELP,
    command,
    fail,
    hosts_named,
    project_inventory,
    single_host,
)
from .environment import Environment, environment
from .fleet import (
    FLEET_HELP,
    NOTHING_APPLIED,
    FleetFlags,
    audit_unfinished,
    confirm_fleet,
    opening_record,
    run_and_render,
    run_audited_fleet,
    sync_columns,
)
from .progress import waiting

if TYPE_CHECKING:  # the schema modules are loaded only when there is a schema.sql to compare with
    from ..schema.fingerprint import Probe

_STATE_STYLE = {
    "applied": "green",
    "pending": "yellow",
    "checksum_mismatch": "bold red",
    "missing_file": "bold red",
    "out_of_order": "bold magenta",
    "failed": "bold red",
    "invalid": "bold red",
}
_STEP_MARK = {
    "applied": "[green]✔[/]",
    "would_apply": "[green]✔[/]",
    "failed": "[red]✘[/]",
    "would_fail": "[red]✘[/]",
    "timed_out": "[yellow]⏱[/]",
    "not_rehearsed": "[dim]–[/]",
    "untouched": "[dim]·[/]",
    "planned": "[dim]·[/]",
}


def _seconds(value: str, flag: str) -> float:
    seconds = parse_duration(value, bare_unit="s")
    if seconds is None:
        raise UsageError(f"{flag}: expected seconds such as 60, 90s or 2min, got {value!r}")
    return seconds


def _lock_options(lock_timeout: str, migration_lock_timeout: str, lock_retry_for: str) -> tuple[str | None, str | None]:
    """``--lock-timeout`` (per attempt; ``--migration-lock-timeout`` is its older name) and ``--lock-retry-for``,
    checked.

    ``--lock-timeout`` used to be the advisory-lock wait in seconds (now ``--advisory-lock-wait``): a bare
    number is refused rather than silently read as PostgreSQL milliseconds.
    """
    if lock_timeout and migration_lock_timeout and lock_timeout.strip() != migration_lock_timeout.strip():
        raise UsageError("--lock-timeout and --migration-lock-timeout are the same setting: give one of them")
    if lock_timeout and re.fullmatch(r"\s*\d+(\.\d+)?\s*", lock_timeout) and float(lock_timeout) != 0:
        raise UsageError(
            f"--lock-timeout: give a unit, e.g. {lock_timeout.strip()}s or {lock_timeout.strip()}ms "
            "(it is PostgreSQL's lock_timeout per attempt)",
            hint="the wait for another sync's migration lock is now --advisory-lock-wait SECONDS",
        )
    chosen = lock_timeout or migration_lock_timeout or None
    if chosen is not None:
        duration_seconds(chosen, "--lock-timeout" if lock_timeout else "--migration-lock-timeout")
    if lock_retry_for and parse_duration(lock_retry_for, bare_unit=None) is None:
        raise UsageError(
            f"--lock-retry-for: expected a duration with a unit such as 2min, 90s or 0, got {lock_retry_for!r}"
        )
    return chosen, lock_retry_for or None


def _project_dir(inv: Inventory) -> Path:
    return inv.source.resolve().parent if inv.source else Path.cwd()


def _identity(inv: Inventory) -> Identity:
    return Identity(applied_by=who(), git_commit=git_commit(_project_dir(inv)))


# ---------------------------------------------------------------- rendering


def _plan_text(plan: Sequence[Migration], title: str) -> str:
    from ..units import human_bytes as human

    width = max(len(m.version) for m in plan)
    rows = [
        f"  {m.version:<{width}}  {m.description}  "
        f"({human(m.size_bytes)}{'' if m.transactional else ', no-transaction'})"
        for m in plan
    ]
    return "\n".join([title, *rows, ""])


def _plan_table(plan: Sequence[Migration], title: str) -> Text:
    """The plan on a terminal: aligned columns in one Text (a Rich Table costs ~0.6 ms a row: 200 pending, 0.1 s)."""
    from ..units import human_bytes as human

    rows = [
        (m.version, m.description, human(m.size_bytes), "transaction" if m.transactional else "no-transaction")
        for m in plan
    ]
    widths = [max(len(r[k]) for r in rows) for k in range(3)]
    text = Text(no_wrap=True, overflow="ignore")
    text.append(title + "\n", style="italic")
    for version, description, size, mode in rows:
        text.append(f"  {version:<{widths[0]}}  {description:<{widths[1]}}  {size:>{widths[2]}}  ")
        text.append(mode + "\n", style="" if mode == "transaction" else "yellow")
    return text


class _Renderer:
    """Renders sync events live (stdout, or stderr under --json)."""

    def __init__(self, env: Environment, json_: bool, options: SyncOptions) -> None:
        self.out = env.human(json_)
        self.json_ = json_
        self.options = options
        self.status: Any = None
        self.position: dict[str, int] = {}  # version -> its place in the plan: each step shows k/N (issue 15)

    def _count(self, version: str) -> str:
        return f"{self.position.get(version, '?')}/{len(self.position)}"

    def __call__(self, event: SyncEvent) -> None:
        if event.kind == "plan":
            self.position = {m.version: k for k, m in enumerate(event.plan, start=1)}
            title = "dry run: would apply" if self.options.dry_run else "pending migrations"
            if self.out.is_terminal:
                self.out.print(_plan_table(event.plan, f"{title} ({len(event.plan)})"), soft_wrap=True, end="")
            else:  # into a pipe or log: the same facts as plain lines (a Rich table costs ~2 ms a row)
                self.out.file.write(_plan_text(event.plan, f"{title} ({len(event.plan)})"))
            if event.hazards is not None and not self.json_:  # under --json the findings are in the document
                from .lint import render_findings

                note = (
                    "[yellow]--allow-hazards: applying despite hazard errors[/]" if self.options.allow_hazards else None
                )
                render_findings(event.hazards, self.out, blocking_note=note)
            if self.options.dry_run:
                from rich.panel import Panel
                from rich.syntax import Syntax  # pygments: only a dry run shows the SQL

                for m in event.plan:
                    self.out.print(
                        Panel(
                            Syntax(m.sql, "sql", line_numbers=True, word_wrap=True),
                            title=m.filename,
                            title_align="left",
                        )
                    )
        elif event.kind == "lock_wait":
            self.stop()
            self.out.print(f"[yellow]another sync holds the migration lock[/]: {escape(event.message)}", soft_wrap=True)
        elif event.kind == "lock_retry" and event.step is not None and event.wait is not None:
            self.stop()
            wait = event.wait
            then = f"retrying in {wait.retry_in_s:.1f}s" if wait.retry_in_s is not None else "giving up"
            self.out.print(
                f"[yellow]⏳ {event.step.version} {event.step.description}: lock not available "
                f"(attempt {wait.attempt}, lock_timeout {wait.lock_timeout_ms} ms, {wait.waited_s:.1f}s so far)[/], "
                f"blocked by {escape(wait.describe_blockers())}; {then}",
                soft_wrap=True,
                highlight=False,
            )
        elif event.kind == "locked":
            self.out.print("[dim]migration lock taken[/]")
        elif event.kind == "backup_start":
            self._spin(f"backing up ({event.message})…")
        elif event.kind == "backup_done":
            self.stop()
            self.out.print(f"[green]✔[/] backup {event.message}", soft_wrap=True)
        elif event.kind == "begin" and event.step is not None:
            self._spin(f"applying {self._count(event.step.version)}: {event.step.version} {event.step.description}…")
        elif event.kind == "done" and event.step is not None:
            self.stop()
            self._progress_line(
                f"✔ {event.step.version} {event.step.description} "
                f"({event.step.ms} ms, {self._count(event.step.version)})",
                "green",
            )
        elif event.kind == "failed" and event.step is not None:
            self.stop()
            self.out.print(f"[red]✘[/] {event.step.version} {event.step.description}: {event.message}", soft_wrap=True)
        elif event.kind == "rehearsed" and event.step is not None:
            self._spin(
                f"rehearsed {self._count(event.step.version)}: {event.step.version}…"
            )  # final lines come with the result (exact file:line)

    def _progress_line(self, text: str, style: str) -> None:
        """One line per migration: Rich on a terminal; a plain write into a pipe (Rich costs ~2 ms a line)."""
        if self.out.is_terminal:
            self.out.print(text, style=style, highlight=False, markup=False)
        else:
            self.out.file.write(text + "\n")
            self.out.file.flush()

    def _spin(self, text: str) -> None:
        self.stop()
        if self.out.is_terminal:
            self.status = self.out.status(text)
            self.status.start()

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _rehearsal_line(
    version: str, description: str, status: str, ms: int | None, error: str | None, location: str | None
) -> str:
    mark = _STEP_MARK.get(status, "·")
    if status == "would_apply":
        return f"{mark} {version} {description}: would apply in {ms} ms"
    if status == "would_fail":
        return f"{mark} {version} {description}: would fail: {error} at {location}"
    return f"{mark} {version} {description}: {error or status}"


def _render_result(result: SyncResult, out: Console, err: Console, renderer: _Renderer) -> None:
    renderer.stop()
    if result.action == "dry-run":
        for step in result.steps:
            if step.status != "planned":
                out.print(
                    _rehearsal_line(step.version, step.description, step.status, step.ms, step.error, step.location),
                    soft_wrap=True,
                )
        if result.outcome == "dry_run":
            out.print(f"[bold]dry run:[/] {len(result.steps)} migration(s) would apply; nothing was changed")
        elif result.outcome == "rehearsal_failed":
            out.print("[bold red]dry run: rehearsal failed[/]; nothing was changed")
    elif result.outcome == "nothing_to_do":
        out.print(f"{result.host}: nothing to apply, {result.database} is up to date")
    elif result.outcome == "applied":
        total = result.durations.get("total", 0.0)
        out.print(f"[bold green]applied {len(result.steps)} migration(s)[/] to {result.database} in {total:.1f}s")
    if result.outcome in ("refused", "lock_timeout", "backup_failed", "failed", "declined", "lost", "interrupted"):
        err.print(f"[bold red]error:[/] {result.error}", soft_wrap=True)
        if result.hint:
            err.print(f"[dim]hint:[/] {result.hint}", soft_wrap=True)
        untouched = [s.version for s in result.steps if s.status == "untouched"]
        if result.outcome in ("failed", "lock_timeout", "lost", "interrupted") and untouched:
            err.print(f"not run: {', '.join(untouched)}")


# ---------------------------------------------------------------- fleet


def _fleet_status(
    targets: Sequence[HostConfig],
    inv: Inventory,
    accept_new: bool,
    env: Environment,
    *,
    json_: bool,
    parallel: int,
    fail_fast: bool,
    timeout: float,
) -> None:
    def action(target: HostConfig) -> HostOutcome:
        with open_remote(target, inv, accept_new_host_key=accept_new) as remote:
            state = read_state(remote, Ledger.for_host(target))
        statuses, _, warnings = statuses_for(inv.migrations_dir(), state, strict=False)
        document = _status_document(target.name, target.database, state.exists, statuses, warnings)
        counts = document["counts"]
        message = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(counts.items())) or "no versions"
        return HostOutcome(target.name, "ok", 0, message, details=document)

    columns = tuple(
        (state, (lambda key: lambda o: str(o.details.get("counts", {}).get(key, 0)))(state))
        for state in ("applied", "pending")
    )
    run_and_render(
        targets,
        action,
        env,
        title="status",
        columns=columns,
        parallel=parallel,
        fail_fast=fail_fast,
        timeout=timeout,
        json_=json_,
    )


# ---------------------------------------------------------------- tasks


@command(
    help={
        "host": HOST_HELP,
        "yes": "apply without asking (needed without a terminal)",
        "force": "same as --yes (the seed script's flag)",
        "dry_run": "change nothing: show the plan with each file's SQL and rehearse it in a rolled-back transaction",
        "no_rehearse": "with --dry-run: show the plan only (the ledger is read, nothing is run)",
        "no_backup": "skip the pre-sync backup (loudly)",
        "target": "stop after this version",
        "allow_out_of_order": "apply pending versions older than the newest applied one",
        "lock_timeout": "PostgreSQL lock_timeout of each lock-retry attempt, e.g. 5s or 500ms "
        "(default: host's lock_timeout, 5s)",
        "lock_retry_for": "how long one migration keeps retrying its locks, e.g. 2min; 0 = no retries "
        "(default: host's lock_retry_for)",
        "advisory_lock_wait": "how long to wait for another sync's migration lock, seconds (default 60)",
        "migration_lock_timeout": "older name of --lock-timeout",
        "statement_timeout": "PostgreSQL statement_timeout per migration (default: host's statement_timeout, 0 = none)",
        **FLEET_HELP,
        "allow_hazards": "apply even when the hazard lint reports errors (see 'inv lint --host H')",
        "no_drift_check": "skip the closing comparison of the live schema with sql/schema.sql",
        "sql": "print the psql script sync would send (ledger rows, timeouts) instead of running it; "
        "connects only to read the ledger",
        "from_version": "with --sql: no connection at all, the pending versions are those after this one (0: all)",
    },
    needs_project=True,
)
def sync(
    c: Context,
    host: str = "",
    yes: bool = False,
    force: bool = False,
    dry_run: bool = False,
    no_rehearse: bool = False,
    no_backup: bool = False,
    target: str = "",
    allow_out_of_order: bool = False,
    lock_timeout: str = "",
    lock_retry_for: str = "",
    advisory_lock_wait: str = "60",
    migration_lock_timeout: str = "",
    statement_timeout: str = "",
    json_: bool = False,
    accept_new_host_key: bool = False,
    parallel: int = 0,
    fail_fast: bool = False,
    timeout: float = 0,
    allow_hazards: bool = False,
    no_drift_check: bool = False,
    sql: bool = False,
    from_version: str = "",
) -> None:
    """Apply pending migrations: plan, confirm, lock, back up, apply each in its own transaction with its ledger row."""
    if from_version and not sql:
        raise UsageError("--from-version goes with --sql (it names the last applied version of an offline script)")
    env = environment(c)
    targets, inv = hosts_named(host, project=True)
    attempt_timeout, retry_for = _lock_options(lock_timeout, migration_lock_timeout, lock_retry_for)
    options = SyncOptions(
        target=target or None,
        allow_out_of_order=allow_out_of_order,
        backup=not no_backup and not dry_run,
        advisory_lock_wait=_seconds(advisory_lock_wait, "--advisory-lock-wait"),
        lock_timeout=attempt_timeout,
        lock_retry_for=retry_for,
        statement_timeout=statement_timeout or None,
        dry_run=dry_run,
        rehearse=not no_rehearse,
        allow_hazards=allow_hazards,
        probe=not no_drift_check and len(targets) == 1 and inv.paths.schema.exists(),  # the closing check's
        cache_dir=default_cache_dir(inv.paths.state),
    )
    migrations_dir = inv.migrations_dir()
    if sql:
        if len(targets) > 1 or dry_run or json_:
            raise UsageError("--sql prints one host's script: give one host, without --dry-run or --json")
        _print_sql(targets[0], inv, options, from_version, accept_new_host_key, env)
        return
    if no_backup and not dry_run:
        env.err.print("[bold yellow]WARNING: --no-backup: no backup will be taken before applying migrations[/]")
    identity = _identity(inv)
    assume_yes = yes or force
    if len(targets) > 1:
        confirm_fleet(host, len(targets), assume_yes or dry_run)
        run_audited_fleet(
            targets,
            inv,
            identity,
            env,
            FleetFlags(accept_new_host_key, json_, parallel, fail_fast, timeout),
            run=lambda target, remote: run_sync(
                remote,
                migrations_dir,
                options,
                identity,
                reconnect=lambda: open_remote(target, inv, accept_new_host_key=accept_new_host_key),
            ),
            outcome=lambda target, result: sync_outcome(target.name, result.as_dict()),
            title="dry run" if dry_run else "sync",
            columns=sync_columns(dry_run),
            opening={"action": "dry-run" if dry_run else "sync"},
            nothing_applied={"applied": []},
        )
        return
    target_host = targets[0]

    def confirm(plan: Sequence[Migration]) -> bool:
        if assume_yes:
            return True
        if not env.interactive:
            raise UsageError(
                "refusing to apply without confirmation: no terminal", hint="rerun with --yes (or --force) to apply"
            )
        return env.confirm(f"apply {len(plan)} migration(s) to {target_host.name}/{target_host.database}?")

    renderer = _Renderer(env, json_, options)
    started = time.monotonic()
    record = opening_record(target_host, identity, action="dry-run" if dry_run else "sync")
    try:
        with open_remote(target_host, inv, accept_new_host_key=accept_new_host_key) as remote:
            result = run_sync(
                remote,
                migrations_dir,
                options,
                identity,
                on_event=renderer,
                confirm=confirm,
                reconnect=lambda: open_remote(target_host, inv, accept_new_host_key=accept_new_host_key),
            )
            if result.ok and not no_drift_check:
                renderer.stop()  # the last migration's spinner must not turn (nor show) during the check
                with waiting(f"comparing {target_host.database} with {inv.paths.schema.name}", console=env.err):
                    result.warnings.extend(
                        closing_drift_warning(remote, inv.paths.schema, dry_run=dry_run, probed=result.probe)
                    )
    except SyncInterrupted as interrupted:  # every run that started leaves a record, with what committed
        renderer.stop()
        append_audit(inv.paths.state, interrupted.result.audit_record(identity.applied_by, identity.git_commit))
        if json_:
            env.print_json(interrupted.result.as_dict())
        env.err.print(f"[bold red]{escape(interrupted.result.error or 'interrupted')}[/]", soft_wrap=True)
        if interrupted.result.hint:
            env.err.print(f"[dim]hint:[/] {escape(interrupted.result.hint)}", soft_wrap=True)
        raise KeyboardInterrupt from None
    except KeyboardInterrupt:
        renderer.stop()
        audit_unfinished(inv, record, started, "interrupted", NOTHING_APPLIED, applied=[])
        raise
    except OpsagentError as exc:
        audit_unfinished(inv, record, started, "error", exc.message)
        raise
    append_audit(inv.paths.state, result.audit_record(identity.applied_by, identity.git_commit))
    for warning in result.warnings:
        env.err.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    if json_:
        env.print_json(result.as_dict())
    _render_result(result, env.human(json_), env.err, renderer)
    if not result.ok:
        raise fail(ExitCode.FAILURE)


def _print_sql(
    target_host: HostConfig, inv: Inventory, options: SyncOptions, from_version: str, accept_new: bool, env: Environment
) -> None:
    """``inv sync --sql``: the script on stdout (nothing else there), notes on stderr; exit 0 even when nothing
    is pending."""
    from .. import __version__
    from ..migrate.sync import check_timeout, duration_seconds, offline_plan, offline_script, pg_duration

    ledger = Ledger.for_host(target_host)
    if from_version:
        plan, warnings = offline_plan(inv.migrations_dir(), options, from_version=from_version)
        ensure = ledger.ensure_sql([])  # idempotent: creates or completes the ledger, whatever its state
        basis = f"offline: every version after {from_version}"
    else:
        with open_remote(target_host, inv, accept_new_host_key=accept_new) as remote:
            state = read_state(remote, ledger)
        plan, warnings = offline_plan(inv.migrations_dir(), options, state=state)
        ensure = ledger.ensure_sql(state.columns) if (not state.exists or state.adoption_needed) else ""
        basis = f"after the ledger read from {target_host.name} at {time.strftime('%Y-%m-%d %H:%M:%S %z')}"
    for warning in warnings:
        env.err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    identity = _identity(inv)
    lock_timeout = pg_duration(duration_seconds(options.lock_timeout or target_host.lock_timeout, "--lock-timeout"))
    statement_timeout = check_timeout(options.statement_timeout or target_host.statement_timeout, "--statement-timeout")
    span = f"{plan[0].version} … {plan[-1].version}" if plan else "none"
    header = [
        f"opsagent {__version__} sync --sql for {target_host.name}, database {target_host.database} ({basis})",
        f"{len(plan)} migration(s): {span}; ledger rows recorded as applied by {identity.applied_by}",
        "apply with: psql -X -v ON_ERROR_STOP=1 -f FILE (NOT -1: each migration has its own transaction)",
        "no lock retries here: a lock timeout stops the script; what committed stays recorded, "
        "rerun 'inv sync' for the rest",
    ]
    text = offline_script(
        plan,
        ledger,
        identity,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        ensure_sql=ensure,
        header=header,
    )
    env.write(text)
    env.err.print(f"{len(plan)} migration(s) in the script ({span}); nothing was applied", highlight=False)


def closing_drift_warning(
    remote: Remote,
    schema: Path,
    *,
    dry_run: bool = False,
    cache_dir: Path | None = None,
    probed: Probe | None = None,
) -> list[str]:
    """The seed's "verify sync" step: how far the live schema is from schema.sql (a warning, never an error).

    ``probed``: the fingerprint probe the sync read on its own session once done.  When both oracles already found
    this very catalog equal to schema.sql (``schema.fingerprint``) that is the answer, with no command of its own;
    otherwise, with a warm desired-state cache (``<paths.state>/cache``), one remote command.  After a dry run
    nothing was applied, so the database is still at its old version: comparing it would report the pending
    migrations as drift (issue 15); nothing is said.
    """
    if dry_run or not schema.exists():
        return []
    from ..schema.exclusions import ledger_exclusions
    from ..schema.fingerprint import recall_schema

    cache_dir = cache_dir or default_cache_dir(project_inventory().paths.state)
    exclusions = ledger_exclusions(remote.host)
    if probed is not None and recall_schema(cache_dir, schema, probed, exclusions):
        return []  # both oracles found this very catalog equal to schema.sql: no model to load, no command
    from ..schema.drift import drift_count  # the catalog and diff modules: only loaded for a full comparison

    try:
        count = drift_count(remote, schema, cache_dir=cache_dir, exclude_tables=exclusions, probed=probed)
    except OpsagentError as exc:
        return [f"could not compare with {schema.name}: {exc.message}"]
    if not count:
        return []
    return [
        f"{remote.host.name}: the live schema differs from {schema.name} in {count} object(s); "
        f"run 'inv diff --host {remote.host.name}'"
    ]


def _status_document(
    host: str, database: str, exists: bool, statuses: list[VersionStatus], warnings: list[str]
) -> dict[str, Any]:
    versions = []
    for s in statuses:
        row = s.row
        path = s.migration.path if s.migration else s.invalid.path if s.invalid else None
        versions.append(
            {
                "version": s.version,
                "description": s.description,
                "state": s.state,
                "file": str(path) if path else None,
                "transactional": s.migration.transactional if s.migration else None,
                "applied_at": str(row.applied_at) if row and row.applied_at else None,
                "applied_by": row.applied_by if row else None,
                "execution_ms": row.execution_ms if row else None,
                "git_commit": row.git_commit if row else None,
                "checksum": row.checksum if row else None,
                "file_checksum": s.migration.checksum if s.migration else None,
                "error": s.error,
            }
        )
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    return {
        "host": host,
        "database": database,
        "ledger_exists": exists,
        "counts": counts,
        "versions": versions,
        "warnings": warnings,
    }


_STATUS_COLUMNS = ("version", "description", "state", "applied at", "by", "ms")


def _status_cells(item: dict[str, Any]) -> tuple[str, ...]:
    ms = "" if item["execution_ms"] is None else str(item["execution_ms"])
    return (
        item["version"],
        item["description"],
        item["state"].replace("_", " "),
        (item["applied_at"] or "")[:19],
        item["applied_by"] or "",
        ms,
    )


def render_status(document: dict[str, Any], title: str, out: Console) -> None:
    """The status table as aligned lines: one Text on a terminal (a Rich Table costs ~0.6 ms a row), plain text
    into a pipe.

    Never wrapped nor cut (a pipe gets full lines); an invalid file's error follows its row.
    """
    rows = [_status_cells(item) for item in document["versions"]]
    widths = [max([len(column), *(len(r[k]) for r in rows)]) for k, column in enumerate(_STATUS_COLUMNS)]

    def line(cells: Sequence[str]) -> tuple[str, str, str]:
        head = "  ".join(f"{c:<{w}}" for c, w in zip(cells[:2], widths[:2], strict=True))
        tail = "  ".join(f"{c:<{w}}" for c, w in zip(cells[3:], widths[3:], strict=True)).rstrip()
        return head + "  ", f"{cells[2]:<{widths[2]}}", ("  " + tail) if tail else ""

    errors = {index: item["error"] for index, item in enumerate(document["versions"]) if item.get("error")}
    if not out.is_terminal:
        lines = [title, "".join(line(_STATUS_COLUMNS)).rstrip()]
        for index, cells in enumerate(rows):
            lines.append("".join(line(cells)).rstrip())
            if index in errors:
                lines.append(f"    error: {errors[index]}")
        out.file.write("\n".join(lines) + "\n")
        out.file.flush()
        return
    text = Text(no_wrap=True, overflow="ignore")
    text.append(title + "\n", style="italic")
    text.append("".join(line(_STATUS_COLUMNS)).rstrip() + "\n", style="bold")
    for index, (cells, item) in enumerate(zip(rows, document["versions"], strict=True)):
        head, state, tail = line(cells)
        text.append(head)
        text.append(state, style=_STATE_STYLE.get(item["state"], ""))
        text.append(tail + "\n")
        if index in errors:
            text.append(f"    error: {errors[index]}\n", style="red")
    out.print(text, soft_wrap=True, end="")


@command(
    help={
        "host": HOST_HELP,
        **FLEET_HELP,
    },
    aliases=("history",),
    needs_project=True,
)
def status(
    c: Context,
    host: str = "",
    json_: bool = False,
    accept_new_host_key: bool = False,
    parallel: int = 0,
    fail_fast: bool = False,
    timeout: float = 0,
) -> None:
    """Every version: applied (when, by whom, duration), pending, checksum mismatch, missing file, \
out of order, invalid file.

    Exit 0 whatever the states (status reports; sync refuses): a file that cannot be used (bad SQL, bad name,
    unreadable, a refused statement, a duplicate version) is listed as "invalid" with its error.
    """
    env = environment(c)
    targets, inv = hosts_named(host, project=True)
    if len(targets) > 1:
        _fleet_status(
            targets, inv, accept_new_host_key, env, json_=json_, parallel=parallel, fail_fast=fail_fast, timeout=timeout
        )
        return
    target_host = targets[0]
    with open_remote(target_host, inv, accept_new_host_key=accept_new_host_key) as remote:
        state = read_state(remote, Ledger.for_host(target_host))
    statuses, _, warnings = statuses_for(inv.migrations_dir(), state, strict=False)
    document = _status_document(target_host.name, target_host.database, state.exists, statuses, warnings)
    if json_:
        env.print_json(document)
        return
    render_status(document, f"{target_host.name}/{target_host.database}: {len(statuses)} version(s)", env.out)
    for warning in warnings:
        env.err.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    if not state.exists:
        env.out.print(
            f"[dim]no {escape(Ledger.for_host(target_host).display)} table yet: "
            "it is created by the first sync or baseline[/]"
        )


def _render_edit(edit: LedgerEdit, json_: bool, env: Environment) -> None:
    if json_:
        env.print_json(
            {
                "host": edit.host,
                "database": edit.database,
                "recorded": edit.recorded,
                "updated": [{"version": v, "old_checksum": o, "new_checksum": n} for v, o, n in edit.updated],
                "deleted": edit.deleted,
                "remote_commands": edit.remote_commands,
            }
        )
        return
    for version in edit.recorded:
        env.out.print(f"recorded {version} as applied (not run)")
    for version, old, new in edit.updated:
        env.out.print(f"updated checksum of {version}: {(old or 'none')[:12]} -> {(new or '')[:12]}")
    for version in edit.deleted:
        env.out.print(f"deleted ledger row {version} (its file is gone)")
    if not (edit.recorded or edit.updated or edit.deleted):
        env.out.print("nothing to change")


@command(
    name="baseline",
    help={
        "host": HOST_HELP,
        "version": "record every version up to and including this one as applied",
        "json_": JSON_HELP,
        "accept_new_host_key": ACCEPT_HELP,
    },
    needs_project=True,
)
def baseline_task(
    c: Context, host: str = "", version: str = "", json_: bool = False, accept_new_host_key: bool = False
) -> None:
    """Record versions ≤ V as applied without running them (adopt an existing database)."""
    if not version:
        raise UsageError("--version is required, e.g. inv baseline --host prod --version 007")
    target_host, inv = single_host(host)
    with open_remote(target_host, inv, accept_new_host_key=accept_new_host_key) as remote:
        edit = baseline(remote, inv.migrations_dir(), version, _identity(inv))
    append_audit(
        inv.paths.state,
        {
            "host": edit.host,
            "database": edit.database,
            "action": "baseline",
            "versions": edit.recorded,
            "outcome": "ok",
        },
    )
    _render_edit(edit, json_, environment(c))


@command(
    help={
        "host": HOST_HELP,
        "yes": "apply the changes without asking",
        "json_": JSON_HELP,
        "accept_new_host_key": ACCEPT_HELP,
    },
    needs_project=True,
)
def repair(
    c: Context, host: str = "", yes: bool = False, json_: bool = False, accept_new_host_key: bool = False
) -> None:
    """Make the ledger agree with the files: refresh checksums of edited applied files, \
drop rows whose files are gone."""
    env = environment(c)
    target_host, inv = single_host(host)
    with open_remote(target_host, inv, accept_new_host_key=accept_new_host_key) as remote:
        changes, ledger = repair_changes(remote, inv.migrations_dir())
        if not changes:
            _render_edit(LedgerEdit(target_host.name, target_host.database), json_, env)
            return
        out = env.human(json_)
        for change in changes:
            what = "update checksum of" if change.action == "update_checksum" else "delete ledger row"
            out.print(f"will {what} {change.version} ({change.description})")
        if not yes:
            if not env.interactive:
                raise UsageError("refusing to repair without confirmation: no terminal", hint="rerun with --yes")
            if not env.confirm(f"apply {len(changes)} ledger change(s)?"):
                raise fail(ExitCode.FAILURE)
        edit = apply_repair(remote, ledger, changes)
    append_audit(
        inv.paths.state,
        {
            "host": edit.host,
            "database": edit.database,
            "action": "repair",
            "versions": [v for v, _, _ in edit.updated] + edit.deleted,
            "outcome": "ok",
        },
    )
    _render_edit(edit, json_, env)
