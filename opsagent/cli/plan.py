"""``inv plan``: the SQL that turns the live database into schema.sql, rehearsed before it is shown."""

from __future__ import annotations

from invoke.context import Context
from rich.text import Text

from ..diff import display
from ..errors import ExitCode
from ..plan import PlanReport, plan_against_file
from ..transport import open_remote
from .base import ACCEPT_HELP, JSON_HELP, command, console, err_console, fail, print_json, single_host


@command(help={"host": "inventory host name (one host)",
               "allow_drop": "include destructive statements (drops of tables, columns, types; lossy type changes) "
                             "instead of emitting them commented out",
               "json_": JSON_HELP, "accept_new_host_key": ACCEPT_HELP})
def plan(c: Context, host: str = "", allow_drop: bool = False, json_: bool = False, accept_new_host_key: bool = False) -> None:
    """Print the SQL turning the host's database into schema.sql, verified on a scratch copy; exit 3 if it falls short."""
    target, inv = single_host(host)
    with open_remote(target, inv, accept_new_host_key=accept_new_host_key) as remote:
        report = plan_against_file(remote, inv.paths.schema, allow_drop=allow_drop)
    if json_:
        print_json(report.to_dict())
    else:
        render_plan(report)
    if not report.verified:
        raise fail(ExitCode.DRIFT)


def render_plan(report: PlanReport) -> None:
    """The script on stdout (pipe-able to psql); warnings and the verification line on stderr."""
    if report.plan.is_empty:
        err_console.print(f"{report.live} already matches {report.desired}: nothing to do")
    else:
        console.print(Text(report.plan.script()), soft_wrap=True, end="")
    for warning in report.plan.warnings:
        err_console.print(f"[yellow]warning[/]: {warning}", soft_wrap=True)
    style = "green" if report.verified else "red"
    err_console.print(f"[{style}]{report.verification_line()}[/]", soft_wrap=True)
    for change in report.remaining:
        err_console.print(f"  {change.kind} {display(change.name)} ({change.status}): {'; '.join(change.details)}",
                          soft_wrap=True, markup=False)
