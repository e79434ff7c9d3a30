"""Rendering of fleet runs: live per-host status lines, then one summary table."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import ExitCode, OpsagentError, UsageError
from ..inventory import HostConfig, Inventory
from ..migrate.audit import append_audit
from ..remote.fleet import FleetInterrupted, HostOutcome, fleet_exit_code, interruptible, run_fleet
from ..remote.transport import Remote, open_remote
from .base import ACCEPT_HELP, JSON_HELP, fail
from .environment import Environment

if (
    TYPE_CHECKING
):  # Rich's Live and Table: imported by the fleet runs that draw them, not by every task that imports this module
    from rich.table import Table

    from ..migrate.sync import Identity

PARALLEL_HELP = "hosts run at once (default: min(8, number of hosts))"
FAIL_FAST_HELP = "stop starting new hosts after the first failure"
TIMEOUT_HELP = "seconds after which a host that has not finished is reported as timed out"
# the help of the flags every task that can run over several hosts takes (its signature declares them)
FLEET_HELP = {
    "json_": JSON_HELP,
    "accept_new_host_key": ACCEPT_HELP,
    "parallel": PARALLEL_HELP,
    "fail_fast": FAIL_FAST_HELP,
    "timeout": TIMEOUT_HELP,
}

SummaryColumns = Sequence[tuple[str, Callable[[HostOutcome], str]]]


def _count(key: str) -> Callable[[HostOutcome], str]:
    return lambda outcome: str(len(outcome.details.get(key) or []))


def sync_columns(dry_run: bool) -> SummaryColumns:
    """The count column of a fleet sync summary: what was applied, or for a dry run what would be."""
    return (("would apply", _count("would_apply")),) if dry_run else (("applied", _count("applied")),)


def check_fleet_flags(parallel: float, timeout: float) -> None:
    """``--parallel`` and ``--timeout`` as the help promises them: counts and seconds, never negative
    (exit 2 otherwise)."""
    if parallel < 0 or parallel != int(parallel):
        raise UsageError(f"--parallel takes a whole number of hosts (0: automatic), got {parallel:g}")
    if not math.isfinite(timeout) or timeout < 0:
        raise UsageError(f"--timeout takes seconds (0: no limit), got {timeout:g}")


def _status_table(states: dict[str, str]) -> Table:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    for host, state in states.items():
        colour = "green" if state == "ok" else "yellow" if state == "running" or state.startswith("drift") else "red"
        table.add_row(f"[bold]{host}[/]", f"[{colour}]{state}[/]")
    return table


def run_and_render(
    hosts: Sequence[HostConfig],
    action: Callable[[HostConfig], HostOutcome],
    env: Environment,
    *,
    title: str,
    columns: SummaryColumns = (),
    parallel: int = 0,
    fail_fast: bool = False,
    timeout: float = 0,
    json_: bool = False,
    interrupts_itself: bool = False,
) -> None:
    """Run ``action`` over ``hosts`` with live status lines; print a summary; exit non-zero if any failed.
    Ctrl-C: the summary of where each host stands once their runs have ended, then exit 130
    (``interrupts_itself``: see :func:`run_fleet`)."""
    check_fleet_flags(parallel, timeout)
    from rich.live import Live

    states = {h.name: "waiting" for h in hosts}
    lock = threading.Lock()
    live = Live(_status_table(states), console=env.out, refresh_per_second=8, transient=True, redirect_stdout=False)

    def update(host: str, text: str) -> None:
        with lock:
            states[host] = text
            if not json_:
                live.update(_status_table(states))

    def run() -> list[HostOutcome]:
        return run_fleet(
            hosts,
            action,
            parallel=parallel or None,
            fail_fast=fail_fast,
            timeout=timeout or None,
            on_update=update,
            interrupts_itself=interrupts_itself,
        )

    interrupted = False
    try:
        if json_:
            outcomes = run()
        else:
            with live:
                outcomes = run()
    except FleetInterrupted as stopped:
        outcomes, interrupted = stopped.outcomes, True
    code = fleet_exit_code(outcomes)
    if json_:
        env.print_json({"ok": code == 0, "interrupted": interrupted, "hosts": [o.to_dict() for o in outcomes]})
    else:
        env.out.print(summary_table(outcomes, title, columns))
    if interrupted:
        raise KeyboardInterrupt
    if code:
        raise fail(code)  # type: ignore[arg-type]


def summary_table(outcomes: Sequence[HostOutcome], title: str, columns: SummaryColumns = ()) -> Table:
    from rich.table import Table

    table = Table(title=f"{title} summary")
    for name in ("host", "outcome", *(c[0] for c in columns), "duration", "message"):
        table.add_column(name)
    for o in outcomes:
        colour = "green" if o.ok else "yellow" if o.status == "drift" else "red"
        table.add_row(
            o.host, f"[{colour}]{o.status}[/]", *(fn(o) for _, fn in columns), f"{o.duration:.1f}s", o.message
        )
    return table


class _Audited(Protocol):
    def audit_record(self, who: str, git_commit: str | None) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Audited)


@dataclass(frozen=True)
class FleetFlags:
    """The multi-host flags of a task (``FLEET_HELP``), passed on as one value."""

    accept_new: bool
    json_: bool
    parallel: int
    fail_fast: bool
    timeout: float


def run_audited_fleet(
    targets: Sequence[HostConfig],
    inv: Inventory,
    identity: Identity,
    env: Environment,
    flags: FleetFlags,
    *,
    run: Callable[[HostConfig, Remote], R],
    outcome: Callable[[HostConfig, R], HostOutcome],
    title: str,
    columns: SummaryColumns,
    opening: dict[str, Any],
    nothing_applied: Mapping[str, Any] | None = None,
) -> None:
    """A change (sync, rollback) over several hosts: each host's ``run`` on its own connection, its audit record
    appended as soon as it ends, then the summary (no prompt, no live per-step lines).  ``opening``: the fields of
    the record of a host whose run ended without a result (``action``...); ``nothing_applied``: what that record
    adds when Ctrl-C came before the run began (a sync's ``applied: []``, as its one-host record says).

    Ctrl-C stops each host's run as in a one-host run (its own interruption, found out and recorded); a host
    interrupted before its run began is recorded so."""

    def action(target: HostConfig) -> HostOutcome:
        started, result = time.monotonic(), None
        record = opening_record(target, identity, **opening)
        try:
            with interruptible(), open_remote(target, inv, accept_new_host_key=flags.accept_new) as remote:
                result = run(target, remote)
        except KeyboardInterrupt as interruption:  # surfacing once the run has ended: the run's own result stands
            if result is None:
                return _interrupted_host(inv, target, identity, record, started, interruption, nothing_applied or {})
        except OpsagentError as exc:
            audit_unfinished(inv, record, started, "error", exc.message)
            raise
        append_audit(inv.paths.state, result.audit_record(identity.applied_by, identity.git_commit))
        return outcome(target, result)

    run_and_render(
        targets,
        action,
        env,
        title=title,
        columns=columns,
        parallel=flags.parallel,
        fail_fast=flags.fail_fast,
        timeout=flags.timeout,
        json_=flags.json_,
        interrupts_itself=True,
    )


def _interrupted_host(
    inv: Inventory,
    target: HostConfig,
    identity: Identity,
    record: dict[str, Any],
    started: float,
    interruption: KeyboardInterrupt,
    nothing_applied: Mapping[str, Any],
) -> HostOutcome:
    """The audit record and the outcome of a host whose run Ctrl-C ended: the run's own result when it carries
    one (what it had done, found out), else :data:`NOTHING_APPLIED`."""
    carried: _Audited | None = getattr(interruption, "result", None)
    if carried is not None:
        document = carried.audit_record(identity.applied_by, identity.git_commit)
        append_audit(inv.paths.state, document)
        message = str(document.get("error") or "interrupted")
    else:
        message = NOTHING_APPLIED
        audit_unfinished(inv, record, started, "interrupted", message, **nothing_applied)
    return HostOutcome(target.name, "interrupted", int(ExitCode.INTERRUPTED), message)


def opening_record(host: HostConfig, identity: Identity, /, **fields: Any) -> dict[str, Any]:
    """The first fields of a change's audit record: where, who, from which commit, and ``fields`` (the action)."""
    return {
        "host": host.name,
        "database": host.database,
        "who": identity.applied_by,
        "git_commit": identity.git_commit,
        **fields,
    }


NOTHING_APPLIED = "interrupted before anything was applied"  # a change's Ctrl-C before its run began


def audit_unfinished(
    inv: Inventory, record: dict[str, Any], started: float, outcome: str, error: str, **extra: Any
) -> None:
    """The audit record of a change that ended without a result (an error, an interrupt before any step):
    the opening ``record`` with the outcome, ``extra`` (e.g. ``applied``), the error and how long it ran."""
    durations = {"total": round(time.monotonic() - started, 3)}
    append_audit(inv.paths.state, {**record, "outcome": outcome, **extra, "error": error, "durations": durations})


def confirm_fleet(host: str, count: int, confirmed: bool) -> None:
    """A change over several hosts never prompts: it needs --yes (or is a dry run)."""
    if not confirmed:
        raise UsageError(f"--host {host!r} names {count} hosts: confirm with --yes (or use --dry-run first)")
