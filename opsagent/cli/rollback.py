"""``inv rollback --host H --to V``: back to version V's structure, keeping the data
(see ``opsagent.migrate.rollback``)."""

from __future__ import annotations

import time
from typing import Any

from invoke.context import Context
from rich.console import Console
from rich.text import Text

from ..errors import ExitCode, OpsagentError, UsageError
from ..inventory import HostConfig
from ..migrate.audit import append_audit, git_commit, who
from ..migrate.sync import Identity
from ..remote.fleet import HostOutcome
from ..remote.transport import open_remote
from ..units import human_bytes
from .base import (
    HOST_HELP,
    command,
    fail,
    hosts_named,
)
from .environment import environment
from .fleet import (
    FLEET_HELP,
    NOTHING_APPLIED,
    FleetFlags,
    audit_unfinished,
    confirm_fleet,
    opening_record,
    run_audited_fleet,
)
from .plan import render_changes
from .progress import waiting

_EXIT = {"not_verified": ExitCode.DRIFT, "interrupted": ExitCode.INTERRUPTED}


def _exit_code(outcome: str) -> ExitCode:
    if outcome in ("rolled_back", "nothing_to_do", "dry_run"):
        return ExitCode.OK
    return _EXIT.get(outcome, ExitCode.FAILURE)


def _seconds(value: str) -> float:
    try:
        seconds = float(value.strip().removesuffix("s"))
    except ValueError:
        raise UsageError(f"--lock-timeout: expected seconds such as 60, got {value!r}") from None
    if seconds < 0:
        raise UsageError(f"--lock-timeout: expected seconds such as 60, got {value!r}")
    return seconds


def render_analysis(result: Any, out: Console) -> None:
    """The way back (method, statements), what it destroys, and both oracles' verdict."""
    if not result.versions:
        return
    out.print(
        f"[bold]{result.host}/{result.database}[/]: rolling back {', '.join(result.versions)} to {result.target}",
        soft_wrap=True,
    )
    out.print(f"using {result.method_note}", soft_wrap=True)
    for step in result.steps:
        mode = (
            "one transaction, with the ledger rows"
            if step.transactional
            else "outside a transaction (each statement on its own)"
        )
        out.print(f"[dim]-- {step.label}: {mode}[/]", soft_wrap=True)
        for statement in step.statements:
            if statement.destructive:
                out.print("[bold red]-- destructive:[/]")
            out.print(Text(statement.sql.rstrip().rstrip(";") + ";"), soft_wrap=True)
    for warning in result.plan_warnings:
        out.print(f"[yellow]warning[/]: {warning}", soft_wrap=True)
    for loss in result.losses:
        style = "bold red" if loss.blocking else "dim"
        size = (
            f" (estimated {loss.estimated_rows:,} rows, {human_bytes(loss.bytes or 0)})" if loss.estimated_rows else ""
        )
        out.print(f"[{style}]data loss[/]: {loss.describe()}{size}", soft_wrap=True, markup=True)
    verification = result.verification
    if verification is not None:
        style = "green" if verification.verified else "red"
        out.print(f"[{style}]{verification.line()}[/]", soft_wrap=True)
        render_changes(verification.catalog, out)
        for line in verification.dump[:80]:
            out.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)


def _render_result(result: Any, out: Console, err: Console) -> None:
    if result.outcome == "nothing_to_do":
        out.print(f"{result.host}: nothing to roll back: no applied version above {result.target}")
    elif result.outcome == "dry_run":
        out.print(f"[bold]dry run:[/] {len(result.versions)} version(s) would be rolled back; nothing was changed")
    elif result.outcome == "rolled_back":
        total = result.durations.get("total", 0.0)
        out.print(
            f"[green]rolled back[/] {', '.join(result.versions)} on {result.host}/{result.database} in {total:.1f}s; "
            f"the ledger ends at {(result.ledger_after or ['no version'])[-1]}",
            soft_wrap=True,
        )
        if result.backup is not None:
            out.print(f"backup: {result.backup.path}", soft_wrap=True)
    if result.error:
        err.print(f"[bold red]error:[/] {result.error}", soft_wrap=True)
    if result.hint:
        err.print(f"[dim]hint:[/] {result.hint}", soft_wrap=True)


def _fleet_outcome(target: HostConfig, result: Any) -> HostOutcome:
    message = result.error or (
        f"rolled back {', '.join(result.versions)}"
        if result.outcome == "rolled_back"
        else result.outcome.replace("_", " ")
    )
    code = int(_exit_code(result.outcome))
    return HostOutcome(target.name, "ok" if result.ok else "failed", code, message, details=result.to_dict())


@command(
    help={
        "host": HOST_HELP,
        "to": "the version to go back to (its migration and every earlier one stay applied; 0: before the first)",
        "dry_run": "change nothing: show the way back, the data it would lose, the rehearsal and the verification",
        "yes": "roll back without asking (needed without a terminal)",
        "allow_data_loss": "proceed although tables or columns holding rows are dropped, or types narrowed "
        "(after a verified backup)",
        "no_backup": "skip the pre-rollback backup (loudly)",
        "lock_timeout": "how long to wait for a sync's migration lock, seconds (default 60)",
        **FLEET_HELP,
    },
    needs_project=True,
)
def rollback(
    c: Context,
    host: str = "",
    to: str = "",
    dry_run: bool = False,
    yes: bool = False,
    allow_data_loss: bool = False,
    no_backup: bool = False,
    lock_timeout: str = "60",
    json_: bool = False,
    accept_new_host_key: bool = False,
    parallel: int = 0,
    fail_fast: bool = False,
    timeout: float = 0,
) -> None:
    """Take the database back to version V's structure, keeping its data: rehearsed, verified twice, \
data loss refused."""
    from ..migrate.files import version_key
    from ..migrate.rollback import RollbackInterrupted, RollbackOptions
    from ..migrate.rollback import rollback as run_rollback

    if not to:
        raise UsageError("--to is required, e.g. inv rollback --host staging --to 003")
    version_key(to)
    env = environment(c)
    targets, inv = hosts_named(host)
    options = RollbackOptions(
        target=to.strip(),
        dry_run=dry_run,
        allow_data_loss=allow_data_loss,
        backup=not no_backup and not dry_run,
        lock_timeout=_seconds(lock_timeout),
    )
    identity = Identity(applied_by=who(), git_commit=git_commit(inv.source.resolve().parent if inv.source else None))
    if no_backup and not dry_run:
        env.err.print("[bold yellow]WARNING: --no-backup: no backup will be taken before rolling back[/]")
    if len(targets) > 1:
        confirm_fleet(host, len(targets), yes or dry_run)
        run_audited_fleet(
            targets,
            inv,
            identity,
            env,
            FleetFlags(accept_new_host_key, json_, parallel, fail_fast, timeout),
            run=lambda _, remote: run_rollback(remote, inv.paths.migrations, options, identity),
            outcome=_fleet_outcome,
            title="rollback dry run" if dry_run else "rollback",
            columns=(("versions", lambda o: ", ".join(o.details.get("versions") or [])),),
            opening={"action": "rollback-dry-run" if dry_run else "rollback", "target": to},
        )
        return
    target = targets[0]
    out = env.human(json_)

    def confirm(result: Any) -> bool:
        render_analysis(result, out)
        if yes:
            return True
        if not env.interactive:
            raise UsageError(
                "refusing to roll back without confirmation: no terminal", hint="rerun with --yes (see --dry-run first)"
            )
        return env.confirm(f"roll back {target.name}/{target.database} to {to}?")

    def on_event(kind: str, message: str) -> None:
        if kind in ("rehearse", "backup_done", "locked", "step", "lock_retry"):
            out.print(f"[dim]{kind.replace('_', ' ')}{': ' + message if message else ''}[/]", soft_wrap=True)

    started = time.monotonic()
    record = opening_record(target, identity, action="rollback-dry-run" if dry_run else "rollback", target=to)
    try:
        with (
            waiting(f"{'rehearsing' if dry_run else 'rolling back'} {target.name} to {to}", console=env.err) as shown,
            open_remote(target, inv, accept_new_host_key=accept_new_host_key) as remote,
        ):

            def confirm_paused(result: Any) -> bool:
                with shown.paused():  # no spinner turning under the question
                    return confirm(result)

            result = run_rollback(
                remote, inv.paths.migrations, options, identity, on_event=on_event, confirm=confirm_paused
            )
    except RollbackInterrupted as stopped:  # outside its steps: the rollback says which side of them
        append_audit(inv.paths.state, stopped.result.audit_record(identity.applied_by, identity.git_commit))
        raise KeyboardInterrupt from None
    except KeyboardInterrupt:  # before the rollback began (connecting)
        audit_unfinished(inv, record, started, "interrupted", NOTHING_APPLIED)
        raise
    except OpsagentError as exc:
        audit_unfinished(inv, record, started, "error", exc.message)
        raise
    append_audit(inv.paths.state, result.audit_record(identity.applied_by, identity.git_commit))
    if result.outcome in ("dry_run", "not_verified", "refused") and result.steps:
        render_analysis(result, out)
    for warning in result.warnings:
        env.err.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    if json_:
        env.print_json(result.to_dict())
    _render_result(result, out, env.err)
    code = _exit_code(result.outcome)
    if code != ExitCode.OK:
        raise fail(code)
