"""``inv lint``: migration hazards, offline or judged against a host's live tables."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from invoke.context import Context
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..errors import InvalidMigration, RemoteError, UsageError
from ..inventory import HostConfig, Inventory
from ..migrate.files import (
    NO_TRANSACTION_MARKER,
    Migration,
    _markers,
    compute_status,
    load_migration,
    normalize_sql,
    parse_filename,
    scan_names,
)
from ..migrate.hazards import HazardReport, assess, candidate_tables, lint_unit, summary_line
from ..migrate.ledger import Ledger, LedgerState
from ..migrate.lint import Finding, LintUnit, Thresholds, describe_size, table_stats_query, thresholds_from
from ..remote.transport import Remote, open_remote
from ..units import label
from .base import ACCEPT_HELP, JSON_HELP, command, fail, inventory, single_host
from .environment import environment
from .progress import waiting

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
REFUSED_RULE = "refused-by-sync"
_SPLIT = "--opsagent-lint-split--"
OFFLINE_BLOCKING_NOTE = (
    "[bold red]errors block 'inv sync'[/] when they hold on the host: 'inv lint --host H' judges "
    "them by live table sizes (sync does the same)"
)
NARROW = 120  # narrower consoles get one block per finding instead of the table


@dataclasses.dataclass
class _Loaded:
    """One file to lint: the parsed migration when the tool would accept it, else why it refuses it."""

    path: Path
    unit: LintUnit
    migration: Migration | None
    refusal: InvalidMigration | None = None


def _raw_unit(path: Path, source: str) -> LintUnit:
    sql = normalize_sql(path.read_bytes(), source)
    markers, _ = _markers(sql, source)
    return LintUnit(source, sql, NO_TRANSACTION_MARKER not in markers)


def _load(path: Path) -> _Loaded:
    """Load a file as sync would; a refused file is still linted as written (the rules say why)."""
    source = label(path)
    if not path.is_file():
        raise UsageError(f"{source}: no such migration file")
    if parse_filename(path.name) is None:
        return _Loaded(path, _raw_unit(path, source), None)
    try:
        migration, _warnings = load_migration(path)
    except InvalidMigration as exc:
        return _Loaded(path, _raw_unit(path, source), None, exc)
    return _Loaded(path, lint_unit(migration, source), migration)


def _files(spec: str, migrations_dir: Path) -> list[_Loaded]:
    if spec:
        return [_load(Path(part.strip()).expanduser()) for part in spec.split(",") if part.strip()]
    entries, _ = scan_names(migrations_dir)
    return [_load(path) for _, _, path in entries]


def _refusal_findings(loaded: list[_Loaded], findings: list[Finding]) -> list[Finding]:
    """An error for each file sync would refuse, unless a lint error already points at that line."""
    extra: list[Finding] = []
    for item in loaded:
        if item.refusal is None:
            continue
        match = re.match(r"^.*?:(\d+): (.*)$", item.refusal.message)
        line, message = (int(match.group(1)), match.group(2)) if match else (1, item.refusal.message)
        if any(f.source == item.unit.source and f.line == line and f.severity == "error" for f in findings):
            continue
        extra.append(
            Finding(
                source=item.unit.source,
                line=line,
                rule=REFUSED_RULE,
                severity="error",
                message=message,
                fix=item.refusal.hint or "fix the file: sync refuses it before running anything",
                category="transaction",
            )
        )
    return extra


def _pending(loaded: list[_Loaded], state: LedgerState) -> tuple[list[_Loaded], str]:
    """The files not applied on the host yet, and how that was decided (shown to the operator)."""
    if not state.exists:
        return loaded, f"all {len(loaded)} file{'' if len(loaded) == 1 else 's'} (no ledger yet)"
    statuses = compute_status([item.migration for item in loaded if item.migration is not None], state.rows)
    applied = {s.version_key for s in statuses if s.row is not None}
    pending: list[_Loaded] = []
    for item in loaded:
        parsed = parse_filename(item.path.name)
        if parsed is None or parsed[1] not in applied:  # refused files count when their version is not applied
            pending.append(item)
    return pending, f"{len(pending)} pending of {len(loaded)} files (ledger: {len(state.rows)} applied)"


def _fetch(remote: Remote, host: HostConfig, tables: list[str]) -> tuple[LedgerState, dict[str, Any]]:
    """Ledger state and live table sizes in ONE psql round trip."""
    script = f"{Ledger.for_host(host).state_query()}\\echo {_SPLIT}\n{table_stats_query(tables)};\n"
    ledger_part, found, stats_part = remote.psql(script, extra=["-A", "-t"]).text.partition(_SPLIT)
    try:
        state = LedgerState.decode(json.loads(ledger_part))
        state.refuse_foreign(Ledger.for_host(host))
        stats = json.loads(stats_part) if found else None
    except ValueError:
        stats = None
    if not isinstance(stats, dict):
        raise RemoteError(f"{host.name}: unexpected output from the ledger and table-size query")
    return state, stats


def _with_refusals(report: HazardReport, loaded: list[_Loaded]) -> HazardReport:
    extra = _refusal_findings(loaded, list(report.findings))
    if not extra:
        return report
    order = {item.unit.source: index for index, item in enumerate(loaded)}
    merged = sorted([*report.findings, *extra], key=lambda f: (order.get(f.source, len(order)), f.line))
    return dataclasses.replace(report, findings=tuple(merged))


def _offline_thresholds(inv: Inventory) -> Thresholds:
    """The ``hazards:`` settings offline lint grades by: the hosts' own when they all agree, else the defaults.

    Offline, an existing table's size is unknown; ``hazards.unknown_table_size`` says how
    to grade it.  Without a host to ask, only a setting every host shares (e.g. under
    ``defaults:``) is taken: one host left at the default keeps the strict grading.
    """
    settings = {repr(sorted(thresholds_from(host.hazards).__dict__.items())): host for host in inv.hosts.values()}
    if len(settings) == 1:
        return thresholds_from(next(iter(settings.values())).hazards)
    return Thresholds()


def _offline(loaded: list[_Loaded], inv: Inventory) -> HazardReport:
    return _with_refusals(assess(None, [item.unit for item in loaded], thresholds=_offline_thresholds(inv)), loaded)


def _against_host(
    spec: str, loaded: list[_Loaded], explicit: bool, accept_new_host_key: bool, err: Console
) -> tuple[HazardReport, str]:
    host, inv = single_host(spec)
    thresholds_from(host.hazards)  # a bad hazards: setting fails before connecting
    tables = candidate_tables([item.unit for item in loaded])  # and a file that does not parse
    with (
        waiting(f"reading the ledger and table sizes of {host.name}", console=err),
        open_remote(host, inv, accept_new_host_key=accept_new_host_key) as remote,
    ):
        state, stats = _fetch(remote, host, tables)
    pending, how = (loaded, "the given files") if explicit else _pending(loaded, state)
    report = assess(None, [item.unit for item in pending], host, stats=stats)
    return _with_refusals(report, pending), how


# ---------------------------------------------------------------- rendering


def _table_cell(finding: Finding, live: bool) -> Text:
    if not finding.table:
        return Text("")
    cell = Text(finding.table)
    size = describe_size(finding.rows, finding.bytes)
    if size:
        cell.append(f"\n{size}", style="bold" if finding.severity == "error" else "dim")
    elif live:
        cell.append("\nnot on the host yet", style="dim")
    else:
        cell.append("\nsize unknown offline", style="dim")
    return cell


def _finding_cell(finding: Finding) -> Text:
    cell = Text(finding.message)
    if finding.reason:
        cell.append(f"\n{finding.reason}", style="dim")
    cell.append("\nfix: ", style="green")
    cell.append(finding.fix)
    return cell


def _findings_table(shown: list[Finding], live: bool) -> Table:
    table = Table(show_lines=False)
    table.add_column("location", overflow="fold")
    table.add_column("severity", no_wrap=True)
    table.add_column("rule", overflow="fold")
    table.add_column("table (live size)" if live else "table", overflow="fold")
    table.add_column("finding / fix", ratio=1, min_width=40)
    previous: str | None = None
    for finding in shown:
        if previous is not None and finding.source != previous:
            table.add_section()
        previous = finding.source
        table.add_row(
            finding.location,
            Text(finding.severity, style=SEVERITY_STYLE.get(finding.severity, "")),
            finding.rule,
            _table_cell(finding, live),
            _finding_cell(finding),
        )
    return table


def _print_blocks(shown: list[Finding], live: bool, out: Console) -> None:
    """The same content for a narrow terminal, where a five-column table would be unreadable."""
    for finding in shown:
        head = Text.assemble(
            (finding.location, "bold"),
            "  ",
            (finding.severity, SEVERITY_STYLE.get(finding.severity, "")),
            "  ",
            finding.rule,
        )
        if finding.table:
            size = describe_size(finding.rows, finding.bytes)
            head.append(
                f"  {finding.table}"
                + (f" ({size})" if size else " (not on the host yet)" if live else " (size unknown offline)")
            )
        out.print(head, soft_wrap=True)
        out.print(Padding(_finding_cell(finding), (0, 0, 0, 4)))


def render_findings(
    report: HazardReport, out: Console, *, verbose: bool = False, blocking_note: str | None = None
) -> None:
    """The findings table grouped by file, the hidden-info count and a summary (``inv sync`` reuses it in its plan).

    ``blocking_note`` replaces the line printed when errors would block a sync.
    """
    shown = list(report.findings) if verbose else report.at_least("warning")
    if shown and out.width >= NARROW:
        out.print(_findings_table(shown, report.live))
    elif shown:
        _print_blocks(shown, report.live, out)
    hidden = len(report.findings) - len(shown)
    if hidden:
        out.print(f"[dim]{hidden} info finding{'' if hidden == 1 else 's'} hidden (--verbose)[/]")
    mark = "[green]✔[/]" if not report.exit_code else ("[bold red]✘[/]" if report.blocking else "[yellow]![/]")
    out.print(f"{mark} {summary_line(report)}")
    if report.blocking:
        out.print(
            blocking_note or "[bold red]errors block 'inv sync'[/] (rerun it with --allow-hazards to apply anyway)"
        )


def _header(report: HazardReport, how: str) -> str:
    count = len(report.files)
    if not report.live:
        grading = "a large" if report.thresholds.unknown_table_size == "large" else "a small"
        return (
            f"linted {count} migration file{'' if count == 1 else 's'} offline, each on its own (only a table created "
            "earlier in the same file is new; other tables exist, their size is unknown offline: graded as on "
            f"{grading} table; --host H lints only what is pending there, with live table sizes)"
        )
    limits = report.thresholds
    return (
        f"host [bold]{report.host}[/]: linted {how}, judged against its live tables "
        f"(lock_timeout {report.lock_timeout}; large table: {limits.large_table_rows:,} rows or "
        f"{describe_size(None, limits.large_table_bytes)})"
    )


@command(
    help={
        "host": "judge the host's PENDING migrations against its live tables (row estimates and sizes, one round trip)",
        "file": "lint these files instead (comma-separated paths); default: every file in the migrations folder",
        "json_": JSON_HELP,
        "verbose": "also show info findings (hidden by default)",
        "accept_new_host_key": ACCEPT_HELP,
    },
    needs_project=True,
)
def lint(
    c: Context,
    host: str = "",
    file: str = "",
    json_: bool = False,
    verbose: bool = False,
    accept_new_host_key: bool = False,
) -> None:
    """Report migration hazards (file:line, rule, severity, table size, fix); exit 4 on warnings or errors."""
    env = environment(c)
    inv = inventory()
    loaded = _files(file, inv.paths.migrations)
    if host:
        report, how = _against_host(host, loaded, bool(file), accept_new_host_key, env.err)
    else:
        report, how = _offline(loaded, inv), "all files"
    if json_:
        env.print_json({**report.to_dict(), "linted": how})
    else:
        if not loaded:
            env.err.print(f"no migration files in {label(inv.paths.migrations)}")
        env.out.print(_header(report, how), soft_wrap=True)
        render_findings(report, env.out, verbose=verbose, blocking_note=None if report.live else OFFLINE_BLOCKING_NOTE)
    if report.exit_code:
        raise fail(report.exit_code)
