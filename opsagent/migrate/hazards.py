"""Hazard assessment of a migration set for one host: the glue between lint and sync.

``inv lint`` and ``inv sync`` must judge the same migrations the same way: with
the lock_timeout the tool will really set on that host, the host's ``hazards:``
thresholds, and (when connected) the live size of every table a finding names.
:func:`assess` is that one entry point; it never prints and costs at most one
remote round trip.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..errors import ExitCode
from ..inventory import HostConfig
from .lint import (
    DEFAULT_LOCK_TIMEOUT,
    SEVERITIES,
    Finding,
    LintUnit,
    Thresholds,
    count_by_severity,
    escalate,
    exit_code_for,
    grade_unknown_sizes,
    has_errors,
    lint_against_host,
    lint_migrations,
    severity_rank,
    thresholds_from,
)


class QueryJson(Protocol):
    """What :func:`assess` needs of a connection (``opsagent.remote.transport.Remote`` fits)."""

    def query_json(self, sql: str, database: str | None = None) -> Any: ...


class MigrationFile(Protocol):
    """Read-only view of ``opsagent.migrate.files.Migration`` (frozen dataclasses fit)."""

    @property
    def filename(self) -> str: ...
    @property
    def sql(self) -> str: ...
    @property
    def transactional(self) -> bool: ...


Migrationish = LintUnit | tuple[str, str, bool] | MigrationFile


@dataclasses.dataclass(frozen=True)
class HazardReport:
    """Findings for a migration set, and whether they block a sync.

    ``live`` is True when the findings were re-graded with the host's live table
    sizes; ``files`` lists the linted migrations in order.
    """

    findings: tuple[Finding, ...]
    files: tuple[str, ...] = ()
    host: str | None = None
    live: bool = False
    lock_timeout: str | None = DEFAULT_LOCK_TIMEOUT
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)

    @property
    def blocking(self) -> bool:
        """True when an error-level finding should stop ``sync`` (unless ``--allow-hazards``)."""
        return has_errors(self.findings)

    @property
    def exit_code(self) -> ExitCode:
        """``HAZARDS`` (4) for any warning or error, else ``OK``."""
        return exit_code_for(self.findings)

    @property
    def counts(self) -> dict[str, int]:
        return count_by_severity(self.findings)

    def at_least(self, severity: str) -> list[Finding]:
        """Findings at ``severity`` or worse, in file order (``"warning"`` hides infos)."""
        floor = severity_rank(severity)
        return [f for f in self.findings if severity_rank(f.severity) >= floor]

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (also embedded in sync's plan)."""
        return {
            "host": self.host,
            "live": self.live,
            "files": list(self.files),
            "lock_timeout": self.lock_timeout,
            "thresholds": dataclasses.asdict(self.thresholds),
            "counts": self.counts,
            "blocking": self.blocking,
            "exit_code": int(self.exit_code),
            "findings": [f.to_dict() for f in self.findings],
        }


def _blank(sql: str, line: int, text: str) -> str:
    """``sql`` with one statement (starting on ``line``) and its ``;`` turned into spaces: offsets and lines stay."""
    start = sum(len(part) + 1 for part in sql.split("\n")[: line - 1])
    at = sql.find(text, start)
    if at < 0:
        return sql
    end = at + len(text)
    semicolon = re.match(r"\s*;", sql[end:])
    if semicolon is not None:
        end += semicolon.end()
    return sql[:at] + re.sub(r"[^\n]", " ", sql[at:end]) + sql[end:]


def lint_unit(migration: Migrationish, source: str | None = None) -> LintUnit:
    """What the linter should read for a migration: a seed-style ``BEGIN; ... COMMIT;`` wrapper is removed.

    The tool strips that wrapper before running the file (``Migration.wrapped``),
    so linting it as written would report BEGIN/COMMIT that never run.
    ``source`` overrides the name shown in ``file:line`` (default: the file name).
    """
    if isinstance(migration, LintUnit):
        return migration if source is None else dataclasses.replace(migration, source=source)
    if isinstance(migration, tuple):
        name, sql, transactional = migration
        return LintUnit(source or name, sql, transactional)
    sql = migration.sql
    statements = getattr(migration, "statements", None)
    if getattr(migration, "wrapped", False) and statements:
        for statement in (statements[-1], statements[0]):
            sql = _blank(sql, statement.line, statement.text)
    return LintUnit(source or str(migration.filename), sql, bool(migration.transactional))


def candidate_tables(migrations: Iterable[Migrationish]) -> list[str]:
    """Every table any of these files could report, whichever of them turn out pending.

    Each file is linted on its own, so the list is a superset for any pending subset: a caller can fetch
    their sizes (``lint.table_stats_query``) in the same round trip as the ledger.
    """
    tables: dict[str, None] = {}
    for migration in migrations:
        for finding in lint_migrations([lint_unit(migration)]):
            if finding.table:
                tables[finding.table] = None
    return list(tables)


def assess(
    remote: QueryJson | None,
    migrations: Iterable[Migrationish],
    host: HostConfig | None = None,
    *,
    stats: Mapping[str, Mapping[str, Any]] | None = None,
    tables_created_earlier: set[str] | None = None,
    thresholds: Mapping[str, Any] | Thresholds | None = None,
) -> HazardReport:
    """Lint ``migrations`` (in apply order) as ``host`` would run them; re-grade live when ``remote`` is given.

    ``migrations`` are objects with ``filename``, ``sql`` and ``transactional``
    (``opsagent.migrate.files.Migration``), ``lint.LintUnit`` or ``(source, sql,
    transactional)`` tuples: with a host, pass only the PENDING ones.  Each file is
    linted on its own: only a table created earlier in the same file is new; one
    created by an earlier file is an existing table (its findings say which file
    created it).  ``host`` supplies ``lock_timeout`` and
    the ``hazards:`` thresholds (validated first: a bad value raises ConfigError
    before any remote work); ``None`` means the tool's defaults.  With a
    ``remote`` (connected to the host's database) one query fetches the live row
    estimate and size of every table a finding names (a table missing there that an
    earlier pending file creates is new: info); without one (and no ``stats``),
    nothing remote happens and existing tables are graded by
    ``hazards.unknown_table_size`` (default: as large tables, so errors), since
    their size is unknown offline.  ``thresholds`` overrides the host's (offline lint).
    Raises ``SqlSyntaxError`` (exit 2, ``file:line``) for a
    migration that does not parse.

    Sync uses it as::

        report = assess(remote, plan.pending, host)   # or stats= fetched with the ledger
        if report.blocking and not allow_hazards: refuse (MigrationError), nothing run
        # CLI: opsagent.cli.lint.render_findings(report); --json: report.to_dict()
    """
    units = [lint_unit(m) for m in migrations]
    limits = thresholds_from(thresholds if thresholds is not None else host.hazards if host is not None else None)
    lock_timeout = host.lock_timeout if host is not None else DEFAULT_LOCK_TIMEOUT
    findings: Sequence[Finding] = lint_migrations(
        units, lock_timeout=lock_timeout, tables_created_earlier=tables_created_earlier
    )
    if stats is not None:
        findings = escalate(findings, stats, limits)
    elif remote is not None:
        findings = lint_against_host(remote, findings, limits)
    else:  # offline: an existing table's size is unknown, never an all-clear
        findings = grade_unknown_sizes(findings, limits)
    return HazardReport(
        findings=tuple(findings),
        files=tuple(u.source for u in units),
        host=host.name if host is not None else None,
        live=stats is not None or remote is not None,
        lock_timeout=lock_timeout,
        thresholds=limits,
    )


def summary_line(report: HazardReport) -> str:
    """``2 errors, 1 warning, 3 infos in 4 migrations`` (for plans and logs)."""
    counts = report.counts
    parts = [f"{counts[s]} {s}{'' if counts[s] == 1 else 's'}" for s in reversed(SEVERITIES) if counts[s]]
    where = f"{len(report.files)} migration{'' if len(report.files) == 1 else 's'}"
    return f"{', '.join(parts)} in {where}" if parts else f"no hazards in {where}"
