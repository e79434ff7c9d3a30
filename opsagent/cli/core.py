"""Foundation tasks: ``hosts``, ``doctor`` and the ``sandbox`` collection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from rich.console import Console
from rich.table import Table

from ..errors import ExitCode, OpsagentError
from ..inventory import SANDBOX_FILE, HostConfig
from ..remote.doctor import DoctorReport, run_doctor
from ..remote.fleet import HostOutcome
from ..remote.sandbox import SANDBOX_ROOT, Sandbox, SandboxState, sandbox_root_for, write_inventory_fragment
from ..remote.transport import Endpoint, resolve_endpoint
from .base import HOST_HELP, JSON_HELP, command, fail, hosts_named, inventory
from .environment import environment
from .fleet import FLEET_HELP, run_and_render
from .progress import waiting


@command(help={"json_": JSON_HELP})
def hosts(c: Context, json_: bool = False) -> None:
    """List inventory hosts: name, where SSH really goes (after ~/.ssh/config and gateways), database, groups."""
    env = environment(c)
    inv = inventory()
    rows: list[dict[str, Any]] = []
    for h in inv.hosts.values():
        endpoint, problem = _endpoint_or_problem(h, inv)
        rows.append(
            {
                "name": h.name,
                "address": h.address,
                "port": h.port,
                "user": h.user,
                "database": h.database,
                "become": h.become,
                "groups": list(h.groups),
                "gateway": h.gateway,
                "endpoint": endpoint.to_dict() if endpoint else None,
                "route": endpoint.describe() if endpoint else problem,
            }
        )
    if json_:
        env.print_json(
            {
                "inventory": str(inv.source) if inv.source else None,
                "hosts": rows,
                "groups": {k: list(v) for k, v in inv.groups.items()},
            }
        )
        return
    table = Table(title=f"inventory: {inv.source or '(none; sandbox only)'}")
    for column in ("host", "address", "ssh to", "database", "groups"):
        table.add_column(column)
    for row in rows:
        address = f"{row['address']}:{row['port']}" if row["port"] else str(row["address"])
        if row["gateway"]:
            address += f" via {row['gateway']}"
        table.add_row(str(row["name"]), address, str(row["route"]), str(row["database"]), ", ".join(row["groups"]))
    env.out.print(table)


def _endpoint_or_problem(host: HostConfig, inv: Any) -> tuple[Endpoint | None, str]:
    try:
        return resolve_endpoint(host, inv), ""
    except OpsagentError as exc:
        return None, f"unresolved: {exc.message}"


@command(
    help={
        "host": HOST_HELP,
        **FLEET_HELP,
    }
)
def doctor(
    c: Context,
    host: str = "",
    json_: bool = False,
    accept_new_host_key: bool = False,
    parallel: int = 0,
    timeout: float = 0,
    fail_fast: bool = False,
) -> None:
    """Check reachability, host key, login, sudo, PostgreSQL tools, database and backup_dir."""
    env = environment(c)
    targets, inv = hosts_named(host)
    if len(targets) == 1:
        with waiting(f"checking {targets[0].name}", console=env.err):
            report = run_doctor(targets[0], inv, accept_new_host_key=accept_new_host_key)
        if json_:
            env.print_json({"ok": report.ok, "hosts": [report.to_dict()]})
        else:
            _render_doctor(report, env.out)
        if not report.ok:
            raise fail(ExitCode.FAILURE)
        return

    def action(target: HostConfig) -> HostOutcome:
        report = run_doctor(target, inv, accept_new_host_key=accept_new_host_key)
        failed = [c.name for c in report.checks if not c.ok]
        return HostOutcome(
            target.name,
            "ok" if report.ok else "failed",
            0 if report.ok else int(ExitCode.FAILURE),
            "" if report.ok else "failed: " + ", ".join(failed),
            details=report.to_dict(),
        )

    run_and_render(
        targets, action, env, title="doctor", parallel=parallel, fail_fast=fail_fast, timeout=timeout, json_=json_
    )


def _render_doctor(report: DoctorReport, out: Console) -> None:
    out.print(f"[bold]{report.host}[/]")
    for check in report.checks:
        mark = "[green]✔[/]" if check.ok else "[red]✘[/]"
        out.print(f"  {mark} {check.name}: {check.detail}", soft_wrap=True)
        if check.hint and not check.ok:
            out.print(f"      [dim]hint: {check.hint}[/]", soft_wrap=True)


# ---------------------------------------------------------------- sandbox


def _project_sandboxes(state_dir: Path) -> list[SandboxState]:
    prefix = sandbox_root_for(state_dir, "x").name[:-1]
    states = []
    for folder in sorted(SANDBOX_ROOT.glob(f"{prefix}*")):
        state = Sandbox(folder).load_state()
        if state is not None:
            states.append(state)
    return states


def _refresh_fragment(state_dir: Path) -> None:
    fragment = state_dir / SANDBOX_FILE.name
    states = _project_sandboxes(state_dir)
    if states:
        write_inventory_fragment(fragment, states)
    elif fragment.exists():
        fragment.unlink()


@command(
    name="up", help={"name": "host name to record (default: sandbox)", "database": "database to create (default: trad)"}
)
def sandbox_up(c: Context, name: str = "sandbox", database: str = "trad") -> None:
    """Start a local sandbox host (real sshd + PostgreSQL cluster) recorded as host 'sandbox'."""
    env = environment(c)
    state_dir = inventory().paths.state
    with waiting(f"starting sandbox {name} (sshd, PostgreSQL cluster)", console=env.err):
        state = Sandbox(sandbox_root_for(state_dir, name), name, database).up()
    _refresh_fragment(state_dir)
    env.out.print(
        f"[green]✔[/] sandbox host [bold]{name}[/]: sshd 127.0.0.1:{state.ssh_port}, PostgreSQL socket "
        f"{state.socket_dir} port {state.pg_port}, database {state.database}"
    )
    env.out.print(f"  recorded in {state_dir / SANDBOX_FILE.name}; try: inv doctor --host {name}")


@command(name="down", help={"name": "sandbox host to remove (default: sandbox)"})
def sandbox_down(c: Context, name: str = "sandbox") -> None:
    """Stop the sandbox host and delete its servers and data."""
    env = environment(c)
    state_dir = inventory().paths.state
    with waiting(f"removing sandbox {name}", console=env.err):
        removed = Sandbox(sandbox_root_for(state_dir, name), name).down()
    _refresh_fragment(state_dir)
    env.out.print(f"[green]✔[/] sandbox {name} removed" if removed else f"sandbox {name} was not set up")


@command(name="status", help={"json_": JSON_HELP})
def sandbox_status(c: Context, json_: bool = False) -> None:
    """Show the sandbox hosts of this project and whether their servers run."""
    env = environment(c)
    state_dir = inventory().paths.state
    rows = []
    for state in _project_sandboxes(state_dir):
        status = Sandbox(Path(state.root), state.name).status()
        rows.append(
            {
                "name": state.name,
                "ssh_port": state.ssh_port,
                "pg_port": state.pg_port,
                "database": state.database,
                "sshd_running": status.sshd_running,
                "postgres_running": status.postgres_running,
                "root": state.root,
            }
        )
    if json_:
        env.print_json({"sandboxes": rows})
        return
    if not rows:
        env.out.print("no sandbox host: run 'inv sandbox.up'")
        return
    for row in rows:
        ok = row["sshd_running"] and row["postgres_running"]
        mark = "[green]✔[/]" if ok else "[red]✘[/]"
        env.out.print(
            f"{mark} {row['name']}: sshd :{row['ssh_port']} {'up' if row['sshd_running'] else 'down'}, "
            f"postgres :{row['pg_port']} {'up' if row['postgres_running'] else 'down'}, database {row['database']}"
        )


sandbox = Collection("sandbox", up=sandbox_up, down=sandbox_down, status=sandbox_status)
