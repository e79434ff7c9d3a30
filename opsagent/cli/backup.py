"""Backup tasks: backup, backups (list), backups.get, restore."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..backup import (
    BackupError,
    BackupResult,
    ProgressCallback,
    RestoreResult,
    Session,
    as_dict,
    create_backup,
    download_backup,
    human,
    latest_backup,
    list_backups,
    restore_backup,
    restore_in_place,
    sessions_to_terminate,
)
from ..errors import UsageError
from ..inventory import HostConfig, Inventory
from ..remote.fleet import HostOutcome
from ..remote.transport import open_remote
from .base import (
    ACCEPT_HELP,
    HOST_HELP,
    JSON_HELP,
    command,
    hosts_named,
    require_project,
    single_host,
)
from .environment import Environment, environment
from .fleet import FLEET_HELP, run_and_render
from .progress import tracking, waiting

LOCAL_DIR = "backups"


def local_dir(inv: Inventory, host: HostConfig) -> Path:
    """``backups/<host>/`` next to the inventory (the project root), else in the current folder."""
    base = inv.source.resolve().parent if inv.source else Path.cwd()
    return base / LOCAL_DIR / host.name


def age(when: datetime, now: datetime | None = None) -> str:
    """Compact age: 42s, 5m, 3h, 2d."""
    seconds = max(0, int(((now or datetime.now(UTC)) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# ---------------------------------------------------------------- backup


@command(
    help={
        "host": HOST_HELP,
        "label": "short text added to the backup's name (letters, digits, . _ -)",
        "download": "also copy the backup to backups/<host>/ here, checked against the server's sha256",
        **FLEET_HELP,
    }
)
def backup(
    c: Context,
    host: str = "",
    label: str = "",
    download: bool = False,
    json_: bool = False,
    accept_new_host_key: bool = False,
    parallel: int = 0,
    fail_fast: bool = False,
    timeout: float = 0,
) -> None:
    """Take a verified pg_dump -Fc backup into the host's backup_dir (retention: keep_backups newest)."""
    if download:
        require_project()  # --download writes into the project's backups/, never into whatever folder this runs in
    env = environment(c)
    targets, inv = hosts_named(host)
    if len(targets) > 1:

        def action(target: HostConfig) -> HostOutcome:
            result = _backup_one(target, inv, label, download, accept_new_host_key, env.err, quiet=True)
            return HostOutcome(
                target.name, message=f"{result.name} {human(result.size_bytes)}", details=as_dict(result)
            )

        columns = (("backup", lambda o: str(o.details.get("path") or "")),)
        run_and_render(
            targets,
            action,
            env,
            title="backup",
            columns=columns,
            parallel=parallel,
            fail_fast=fail_fast,
            timeout=timeout,
            json_=json_,
        )
        return
    result = _backup_one(targets[0], inv, label, download, accept_new_host_key, env.err, quiet=False)
    if json_:
        env.print_json(as_dict(result))
        return
    _render_backup(targets[0], result, env.out)


def _backup_one(
    target: HostConfig, inv: Inventory, label: str, download: bool, accept_new: bool, err: Console, *, quiet: bool
) -> BackupResult:
    """One host's backup; ``quiet`` drops the progress bar (fleet runs show a status line per host)."""
    what = f"backup of {target.database} on {target.name}"
    with (
        tracking(what, unit="bytes", console=err) as shown,
        open_remote(target, inv, accept_new_host_key=accept_new) as remote,
    ):
        progress: ProgressCallback | None = None if quiet else shown.update
        return create_backup(
            remote, label or None, download_dir=local_dir(inv, target) if download else None, progress=progress
        )


def _render_backup(host: HostConfig, result: BackupResult, out: Console) -> None:
    out.print(
        f"[green]✔[/] {host.name}: backup [bold]{result.name}[/] {human(result.size_bytes)} verified "
        f"(database {human(result.database_bytes)}), sha256 {result.sha256[:16]}…"
    )
    out.print(f"  on the server: {result.path}", markup=False)
    if result.local_path:
        out.print(f"  downloaded to: {result.local_path} (size and sha256 match)", markup=False)
    if result.deleted_by_retention:
        out.print(
            f"  retention (keep {host.keep_backups}) deleted: {', '.join(result.deleted_by_retention)}", markup=False
        )


# ---------------------------------------------------------------- backups, backups.get


@command(name="list", default=True, help={"host": HOST_HELP, "json_": JSON_HELP, "accept_new_host_key": ACCEPT_HELP})
def backups_list(c: Context, host: str = "", json_: bool = False, accept_new_host_key: bool = False) -> None:
    """Backups of the host's database on the server, newest first."""
    env = environment(c)
    target, inv = single_host(host)
    with open_remote(target, inv, accept_new_host_key=accept_new_host_key) as remote:
        found = list_backups(remote)
    if json_:
        env.print_json(
            {
                "host": target.name,
                "database": target.database,
                "backup_dir": target.backup_dir,
                "backups": as_dict(found),
            }
        )
        return
    now = datetime.now(UTC)
    table = Table(title=f"{target.name}: {len(found)} backups of {target.database} in {target.backup_dir}")
    for column, justify in (
        ("name", "left"),
        ("size", "right"),
        ("age", "right"),
        ("label", "left"),
        ("verified", "center"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for item in found:
        table.add_row(
            item.name,
            human(item.size_bytes),
            age(item.created_at, now),
            item.label or "",
            "[green]✔[/]" if item.verified else "[red]✘[/]",
        )
    env.out.print(table)


@command(
    help={"name": "backup file name (see 'inv backups')", "host": HOST_HELP, "accept_new_host_key": ACCEPT_HELP},
    needs_project=True,
)
def get(c: Context, name: str, host: str = "", accept_new_host_key: bool = False) -> None:
    """Copy a backup to backups/<host>/NAME here, checked against the server's size and sha256."""
    env = environment(c)
    target, inv = single_host(host)
    with (
        tracking(f"download of {name}", unit="bytes", console=env.err) as shown,
        open_remote(target, inv, accept_new_host_key=accept_new_host_key) as remote,
    ):
        result = download_backup(remote, name, local_dir(inv, target), progress=shown.update)
    env.out.print(
        f"[green]✔[/] {result.local_path} {human(result.size_bytes)}, "
        f"sha256 {result.sha256[:16]}… matches the server's copy"
    )


backups = Collection("backups")
backups.add_task(backups_list)
backups.add_task(get)


# ---------------------------------------------------------------- restore


@command(
    help={
        "host": HOST_HELP,
        "backup": "backup file name to restore (see 'inv backups')",
        "latest": "restore the newest backup",
        "into": "name of the NEW database to restore into (default: <db>_restore_<timestamp>)",
        "in_place": "replace the live database (a backup of its current state is taken first)",
        "yes": "with --in-place: do not ask for the database name",
        "json_": JSON_HELP,
        "accept_new_host_key": ACCEPT_HELP,
    }
)
def restore(
    c: Context,
    host: str = "",
    backup: str = "",
    latest: bool = False,
    into: str = "",
    in_place: bool = False,
    yes: bool = False,
    json_: bool = False,
    accept_new_host_key: bool = False,
) -> None:
    """Restore a backup into a new database (default) or, with --in-place, replace the live one."""
    if bool(backup) == latest:
        raise UsageError("name the backup with --backup NAME or use --latest")
    if in_place and into:
        raise UsageError("--into and --in-place exclude each other")
    env = environment(c)
    target, inv = single_host(host)
    with open_remote(target, inv, accept_new_host_key=accept_new_host_key) as remote:
        name = backup or latest_backup(remote).name
        if in_place:
            _confirm(env, target, name, yes, sessions_to_terminate(remote))
            with waiting(f"restoring {name} in place of {target.database} on {target.name}", console=env.err) as shown:
                result = restore_in_place(
                    remote,
                    name,
                    on_phase=shown.phase,
                    reconnect=lambda: open_remote(target, inv, accept_new_host_key=accept_new_host_key),
                )
        else:
            with waiting(
                f"restoring {name} into {into or 'a new database'} on {target.name}", console=env.err
            ) as shown:
                result = restore_backup(remote, name, into=into or None, on_phase=shown.phase)
    if json_:
        env.print_json(as_dict(result))
    else:
        _render_restore(target, result, env.out)
    if result.pre_restore_backup_error:
        raise BackupError(
            f"{target.name}: {target.database} was restored, but the backup of the database it replaced failed "
            f"({result.pre_restore_backup_error}); that database is kept as {result.old_database_kept}",
            reason="pre_restore_backup",
            hint="do not drop it before taking a backup of it",
        )


def describe_sessions(sessions: list[Session]) -> str:
    """``3 sessions (app1, app2, 1 without a name)``: who an in-place restore disconnects."""
    if not sessions:
        return "no sessions are connected"
    names = sorted({s.application for s in sessions if s.application})
    unnamed = sum(1 for s in sessions if not s.application)
    shown = names + ([f"{unnamed} without an application name"] if unnamed else [])
    return f"{len(sessions)} session{'s' if len(sessions) != 1 else ''} will be terminated ({', '.join(shown)})"


def _confirm(env: Environment, host: HostConfig, name: str, yes: bool, sessions: list[Session] | None = None) -> None:
    who = describe_sessions(sessions or [])
    if yes:
        env.err.print(f"{escape(host.name)}: closing {escape(host.database)}: {escape(who)}", soft_wrap=True)
        return
    if not env.interactive:
        raise UsageError(
            f"--in-place replaces database {host.database} on {host.name}: pass --yes (no terminal to ask on)"
        )
    env.err.print(
        f"This replaces database [bold]{escape(host.database)}[/] on {escape(host.name)} with backup {escape(name)}. "
        "New connections are refused and its sessions terminated while it is swapped; "
        "the replaced database is kept under a new name and backed up.",
        soft_wrap=True,
    )
    env.err.print(f"[yellow]{escape(who)}[/]", soft_wrap=True)
    env.err.print(f"Type the database name ({escape(host.database)}) to continue: ", end="")
    answer = env.stdin.readline().strip()
    if answer != host.database:
        raise UsageError("not confirmed: nothing was changed")


def _render_restore(host: HostConfig, result: RestoreResult, out: Console) -> None:
    if result.in_place:
        out.print(
            f"[green]✔[/] {escape(host.name)}: database [bold]{escape(result.database)}[/] "
            f"replaced by backup {escape(result.backup)}"
        )
        if result.terminated_sessions:
            apps = ", ".join(a or "(no name)" for a in result.terminated_applications)
            out.print(f"  {result.terminated_sessions} session(s) terminated: {apps}", markup=False)
        if result.pre_restore_backup:
            out.print(f"  its previous state is in backup {result.pre_restore_backup.name}", markup=False)
        if result.old_database_kept:
            out.print(
                f"  the replaced database is kept as {result.old_database_kept}; "
                f"drop it when no longer needed: {result.drop_hint}",
                markup=False,
                soft_wrap=True,
            )
    else:
        out.print(
            f"[green]✔[/] {escape(host.name)}: backup {escape(result.backup)} restored into NEW database "
            f"[bold]{escape(result.database)}[/] ({escape(host.database)} untouched)"
        )
    table = Table(title="objects")
    table.add_column("kind")
    table.add_column(escape(result.database) if not result.in_place else "restored", justify="right")
    if result.live_counts is not None:
        table.add_column(f"{escape(host.database)} (live)", justify="right")
    for kind, count in result.restored_counts.items():
        shown = human(count) if kind == "bytes" else str(count)
        row = [kind, shown]
        if result.live_counts is not None:
            live = result.live_counts.get(kind, 0)
            row.append(human(live) if kind == "bytes" else str(live))
        table.add_row(*row)
    out.print(table)
