"""Drift: the live database against ``schema.sql``, a snapshot, another host, or the migrations.

The desired side is never parsed by us: it is materialized in a scratch database
on the same server (same PostgreSQL, same extensions) and both sides are read
with the same catalog query, so "equal" means equal to PostgreSQL itself.
``inv diff`` costs two round trips of wall time: loading the scratch database
and reading its catalog happen in one psql session while the live catalog is
read on a second channel; then the drop.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .catalog import DEFAULT_EXCLUDED_TABLES, Catalog, introspect, introspection_sql
from .diff import DiffResult, compare
from .errors import OpsagentError, RemoteError, UsageError
from .exclusions import dump_exclude_args, ledger_exclusions, strip_ledger_only_schemas
from .extract import dump_schema, gunzip, normalize_dump, pg_dump_argv, strip_restrict
from .migrations import NAMING_HINT, Migration, load_migration, parse_filename
from .oracle import DumpDifference, compare_dumps, unexplained
from .scratch import Chunk, DumpStep, ScratchSet
from .transport import Remote
from .units import label

A = TypeVar("A")
B = TypeVar("B")


@dataclasses.dataclass(frozen=True)
class DriftReport:
    """Live against desired: the structured difference and, on request, a text diff of the dumps."""

    live: str  # e.g. "prod:trad"
    desired: str  # e.g. "sql/schema.sql", "prod:trad (snapshot sql/snapshots/prod/schema.sql)"
    result: DiffResult
    text: str | None = None
    dump_differences: list[DumpDifference] | None = None  # the dump oracle's findings; None: not run (--fast)

    @property
    def undescribed(self) -> list[DumpDifference]:
        """Dump differences no model finding accounts for: "differences opsagent cannot yet describe"."""
        return unexplained(self.dump_differences or [], [c.name for c in self.result.changes])

    @property
    def drift(self) -> bool:
        """Drift worth alerting on (column order alone is reported but is not drift), by either oracle."""
        return bool(self.result.significant) or bool(self.undescribed)

    @property
    def count(self) -> int:
        """Differences: the model's significant findings plus the objects only the dump comparison sees."""
        return len(self.result.significant) + len(self.undescribed)

    def to_dict(self) -> dict[str, Any]:
        oracle: dict[str, Any] = {"checked": self.dump_differences is not None}
        if self.dump_differences is not None:
            oracle |= {"differences": len(self.dump_differences), "cannot_describe": [d.to_dict() for d in self.undescribed]}
        return {"live": self.live, "desired": self.desired, "drift": self.drift,
                "significant": len(self.result.significant), **self.result.to_dict(), "dump_oracle": oracle,
                **({"text": self.text} if self.text is not None else {})}


def read_sql(path: Path, what: str = "schema file") -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{label(path)}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{label(path)}: cannot read {what}: {exc}") from None


def where(remote: Remote, database: str | None = None) -> str:
    return f"{remote.host.name}:{database or remote.host.database}"


# ---------------------------------------------------------------- text diff


def dump_for_diff(remote: Remote, database: str, exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES) -> str:
    """A dump meant for reading side by side: no owners, no grants, no ledger, no guard lines."""
    argv = [*pg_dump_argv(remote, database, no_owner=True), *dump_exclude_args(exclude_tables)]
    result = remote.run(argv, check=False)
    if not result.ok:
        raise remote.failure(["pg_dump"], result)
    raw = strip_ledger_only_schemas(gunzip(result.stdout, remote.host.name), exclude_tables)  # before the preamble is judged
    return strip_restrict(normalize_dump(raw))


def unified(live: str, desired: str, live_name: str, desired_name: str) -> str:
    return "".join(difflib.unified_diff(live.splitlines(keepends=True), desired.splitlines(keepends=True),
                                        fromfile=live_name, tofile=desired_name, n=3))


def _both(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """Run two remote reads at once on two channels of the one SSH connection."""
    box: dict[str, Any] = {}

    def side() -> None:
        try:
            box["value"] = second()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=side, daemon=True)
    worker.start()
    try:
        value = first()
    finally:  # also on errors: a scratch database must not be created after it was dropped
        worker.join()
    if "error" in box:
        raise box["error"]
    return value, box["value"]


# ---------------------------------------------------------------- diff


def read_catalog(output: str, what: str) -> Catalog:
    """A catalog from the introspection query's output in a load session."""
    try:
        return Catalog.from_json(json.loads(output))
    except (ValueError, TypeError) as exc:
        raise RemoteError(f"introspection of {what} returned no usable result ({exc})") from None


def oracle_dump(remote: Remote, database: str, exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES) -> str:
    """The normalized schema dump the dump oracle compares (the model's excluded tables, e.g. the ledger, left out)."""
    argv = [*pg_dump_argv(remote, database), *dump_exclude_args(exclude_tables)]
    result = remote.run(argv, check=False)
    if not result.ok:
        raise remote.failure(["pg_dump"], result)
    return normalize_dump(gunzip(result.stdout, remote.host.name))


def introspect_and_dump(remote: Remote, database: str, exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES) -> tuple[Catalog, str]:
    """The catalog and the dump oracle's schema dump of a live database, in one remote command (psql runs pg_dump)."""
    step = DumpStep.for_remote(remote, exclude_tables)
    text = remote.psql(introspection_sql(exclude_tables) + "\n" + step.step(database, 0) + "\n", database, extra=["-A", "-t"]).text
    rest, dumps = step.split(text, 1)
    return read_catalog(rest.strip(), where(remote, database)), normalize_dump(dumps[0])


def diff_against_sql(remote: Remote, sql: str, source: str, *, desired_label: str | None = None,
                     text: bool = False, exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES, fast: bool = False) -> DriftReport:
    """Live database vs ``sql`` materialized in a scratch database on the same server, by the model and (unless
    ``fast``) by the dump oracle.

    Two round trips of wall time: (load scratch + introspect it + dump it, one psql
    session) alongside (introspect live + dump it, one psql session), then drop.
    """
    live_db = remote.host.database
    diff_text: str | None = None
    query = introspection_sql(exclude_tables)
    dump_step = None if fast else DumpStep.for_remote(remote, exclude_tables)
    with ScratchSet(remote, [[Chunk(sql, source)]], query=query, dump=dump_step) as scratch:
        def live_side() -> tuple[Catalog, str | None]:
            if fast:
                return introspect(remote, live_db, exclude_tables=exclude_tables), None
            return introspect_and_dump(remote, live_db, exclude_tables)

        outputs, (live, live_dump) = _both(scratch.load, live_side)
        result = compare(live, read_catalog(outputs[0], source))
        name = scratch.names[0]
        desired_dump = scratch.dumps[0] if scratch.dumps else None
        differences = compare_dumps(live_dump, desired_dump, exclude_tables) if live_dump is not None and desired_dump is not None else None
        result, differences = confirm(remote, result, lambda: live_dump or dump_schema(remote, live_db),
                                      lambda: desired_dump or dump_schema(remote, name), exclude_tables, differences)
        if text:
            live_text, desired_text = _both(lambda: dump_for_diff(remote, live_db, exclude_tables),
                                            lambda: dump_for_diff(remote, name, exclude_tables))
            diff_text = unified(live_text, desired_text, where(remote), desired_label or source)
    return DriftReport(where(remote), desired_label or source, result, diff_text, differences)


def confirm_changes(remote: Remote, result: DiffResult, live_dump: Callable[[], str], desired_dump: Callable[[], str],
                    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES) -> DiffResult:
    """``confirm`` for the model's findings alone."""
    return confirm(remote, result, live_dump, desired_dump, exclude_tables)[0]


def confirm(remote: Remote, result: DiffResult, live_dump: Callable[[], str], desired_dump: Callable[[], str],
            exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
            differences: list[DumpDifference] | None = None) -> tuple[DiffResult, list[DumpDifference] | None]:
    """Drop findings that are only dump/restore deparse artifacts: the model's "changed" ones and the dump oracle's.

    A database restored from a dump deparses some expressions differently from one
    built from the original SQL (``ARRAY['a'::varchar]::text[]`` vs
    ``ARRAY[('a'::varchar)::text]``).  Putting both sides through one dump-and-load
    makes them comparable: a change that disappears there was never a change.
    Both dumps are loaded on ``remote``'s server (in one session that reads both
    catalogs and, for the dump oracle, dumps both again).  Costs round trips only
    when something changed; any failure keeps the findings.
    """
    doubtful = unexplained(differences or [], [c.name for c in result.changes])
    if not doubtful and not any(c.status == "changed" for c in result.changes):
        return result, differences
    try:
        dumps = _both(live_dump, desired_dump)
        contents = [[Chunk(dumps[0], "live (dump)")], [Chunk(dumps[1], "desired (dump)")]]
        step = DumpStep.for_remote(remote, exclude_tables) if differences else None
        with ScratchSet(remote, contents, query=introspection_sql(exclude_tables), dump=step) as scratch:
            live_out, desired_out = scratch.load()
        again = compare(read_catalog(live_out, "live (dump)"), read_catalog(desired_out, "desired (dump)"))
    except OpsagentError:
        return result, differences
    still = {(c.kind, c.name) for c in again.changes}
    confirmed = DiffResult([c for c in result.changes if c.status != "changed" or (c.kind, c.name) in still])
    if differences and scratch.dumps:
        remaining = {d.key for d in compare_dumps(scratch.dumps[0], scratch.dumps[1], exclude_tables)}
        differences = [d for d in differences if d.key in remaining]
    return confirmed, differences


def diff_against_file(remote: Remote, path: Path, *, text: bool = False, what: str = "schema file",
                      desired_label: str | None = None, fast: bool = False,
                      exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES) -> DriftReport:
    """Live database vs a SQL file (``schema.sql`` or an extracted snapshot)."""
    source = label(path)
    return diff_against_sql(remote, read_sql(path, what), source, desired_label=desired_label or source, text=text, fast=fast,
                            exclude_tables=exclude_tables)


def diff_against_snapshot(remote: Remote, path: Path, *, text: bool = False, fast: bool = False,
                          exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES) -> DriftReport:
    """Live database vs its last extract: both sides go through one dump-and-load, so they compare like with like.

    A restored database deparses some expressions differently from the one that was
    dumped (``ARRAY[...]::text[]`` becomes ``ARRAY[(...)::text]``, view columns gain
    aliases); a snapshot has been through that once, so a fresh dump of live is too.
    Round trips: dump live, then (load both + introspect both + dump both for the dump oracle), then drop.
    """
    source = label(path)
    snapshot = read_sql(path, "snapshot (run 'inv extract' first)")
    live_dump = dump_schema(remote)
    live_label = f"{where(remote)} (fresh dump)"
    step = None if fast else DumpStep.for_remote(remote, exclude_tables)
    query = introspection_sql(exclude_tables)
    with ScratchSet(remote, [[Chunk(live_dump, live_label)], [Chunk(snapshot, source)]], query=query, dump=step) as scratch:
        live_out, snapshot_out = scratch.load()
    result = compare(read_catalog(live_out, live_label), read_catalog(snapshot_out, source))
    differences = compare_dumps(scratch.dumps[0], scratch.dumps[1], exclude_tables) if scratch.dumps else None
    diff_text = unified(strip_restrict(live_dump), strip_restrict(snapshot), where(remote), source) if text else None
    return DriftReport(where(remote), f"snapshot {source}", result, diff_text, differences)


def diff_hosts(live: Remote, other: Remote, *, text: bool = False, fast: bool = False) -> DriftReport:
    """Two live databases (e.g. prod vs staging); ``other`` plays the desired side.

    Each side hides its own host's ledger; the steps that see both dumps at once hide both ledgers.
    """

    def side(remote: Remote) -> tuple[Catalog, str | None]:
        if fast:
            return introspect(remote, exclude_tables=ledger_exclusions(remote.host)), None
        return introspect_and_dump(remote, remote.host.database, ledger_exclusions(remote.host))

    both_ledgers = tuple(dict.fromkeys([*ledger_exclusions(live.host), *ledger_exclusions(other.host)]))
    (live_catalog, live_dump), (other_catalog, other_dump) = _both(lambda: side(live), lambda: side(other))
    differences = compare_dumps(live_dump, other_dump, both_ledgers) if live_dump is not None and other_dump is not None else None
    result, differences = confirm(live, compare(live_catalog, other_catalog), lambda: live_dump or dump_schema(live),
                                  lambda: other_dump or dump_schema(other), both_ledgers, differences)
    diff_text: str | None = None
    if text:
        a, b = _both(lambda: dump_for_diff(live, live.host.database, ledger_exclusions(live.host)),
                     lambda: dump_for_diff(other, other.host.database, ledger_exclusions(other.host)))
        diff_text = unified(a, b, where(live), where(other))
    return DriftReport(where(live), where(other), result, diff_text, differences)


def drift_count(remote: Remote, schema_path: Path) -> int:
    """Differences between the live database and ``schema.sql`` by both oracles (for ``inv sync``'s closing warning)."""
    return diff_against_file(remote, schema_path, exclude_tables=ledger_exclusions(remote.host)).count


# ---------------------------------------------------------------- check (migrations vs schema.sql)


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """Replayed migrations against schema.sql, plus problems found in the migration files."""

    host: str
    migrations: int
    problems: list[str]  # invalid names, duplicate versions, unparsable or mis-transactional files
    warnings: list[str]
    result: DiffResult | None  # None when the files were not replayed (validation failed)

    @property
    def drift(self) -> bool:
        return bool(self.result and self.result.significant)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.drift

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "ok": self.ok, "migrations": self.migrations, "problems": list(self.problems),
                "warnings": list(self.warnings),
                "drift": self.drift, "diff": self.result.to_dict() if self.result else None}


def validate_migrations(migrations_dir: Path) -> tuple[list[Migration], list[str], list[str]]:
    """Every migration file checked, all problems collected (not just the first): (migrations, problems, warnings)."""
    if not migrations_dir.is_dir():
        return [], [], [f"{label(migrations_dir)}: no migrations directory"]
    problems: list[str] = []
    warnings: list[str] = []
    by_version: dict[int, list[Path]] = {}
    for path in sorted(p for p in migrations_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        parsed = parse_filename(path.name)
        if parsed is None:
            (problems if path.suffix == ".sql" else warnings).append(
                f"{label(path)}: not a migration file name, sync would ignore it ({NAMING_HINT})")
            continue
        by_version.setdefault(parsed[1], []).append(path)
    migrations: list[Migration] = []
    for key in sorted(by_version):
        paths = by_version[key]
        if len(paths) > 1:
            problems.append(f"duplicate migration version {key}: {', '.join(p.name for p in paths)}; renumber all but one")
            continue
        try:
            migration, file_warnings = load_migration(paths[0])
        except OpsagentError as exc:  # syntax errors, non-transactional statements in transactional files
            problems.append(exc.message)
            continue
        migrations.append(migration)
        warnings.extend(file_warnings)
    return migrations, problems, warnings


def replay_chunks(migrations: Sequence[Migration]) -> list[Chunk]:
    """The migrations as one psql script: each transactional file in its own BEGIN/COMMIT, statements mapped to file:line."""
    chunks: list[Chunk] = []
    for migration in migrations:
        source = label(migration.path)
        statements = migration.body_statements if migration.transactional else migration.statements
        if not statements:
            continue
        if migration.transactional:
            chunks.append(Chunk("BEGIN;", source, statements[0].line))
        # the semicolon on its own line: a statement may end in a -- comment
        chunks.extend(Chunk(f"{s.text}\n;", source, s.line) for s in statements)
        if migration.transactional:
            chunks.append(Chunk("COMMIT;", source, statements[-1].line))
    return chunks


def check_project(remote: Remote, migrations_dir: Path, schema_path: Path,
                  exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES) -> CheckReport:
    """Replay all migrations into one scratch database, load schema.sql into another, compare (2 round trips)."""
    migrations, problems, warnings = validate_migrations(migrations_dir)
    if problems:
        return CheckReport(remote.host.name, len(migrations), problems, warnings, None)
    schema_sql = read_sql(schema_path)
    contents = [replay_chunks(migrations), [Chunk(schema_sql, label(schema_path))]]
    with ScratchSet(remote, contents, query=introspection_sql(exclude_tables)) as scratch:
        replayed, desired = scratch.load()
    result = compare(read_catalog(replayed, "the replayed migrations"), read_catalog(desired, label(schema_path)))
    return CheckReport(remote.host.name, len(migrations), problems, warnings, result)
