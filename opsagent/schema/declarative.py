"""Declarative mode over SSH: the plan from a live database (or its snapshot) to ``schema.sql`` (or another host),
rehearsed on a scratch copy on the same server and re-diffed, then written as migration files.

``opsagent.schema.plan`` decides the statements (pure); this module gathers both sides
(catalogs, dumps, live table sizes) in as few round trips as possible and proves the
plan by applying it: "verified" means a copy of the live structure, with the plan
applied, has 0 differences from the target, by the catalog model AND by the
normalized schema dumps.

Cost (issue 14): the live side is one command (server facts, catalog with table
sizes by psql, and ``pg_dump`` at the same time on the server); ``schema.sql``'s side comes from the desired-state
cache (``opsagent.schema.desired``; materialized once when cold).  The rehearsal is ONE
scratch database per plan, loaded from the live dump (or, with
``PlanOptions.template``, a copy of a kept template of the live structure named by
the hash of its dump, built in the same session when missing, so an edit-plan-edit
loop on an unchanged live database loads nothing), made in one psql session that applies the plan,
reads the catalog and dumps the result, and
then hands its drop to the background: both oracles read that one session's
output, and nothing rebuilds it.  The live dump loads in batched transactions
(``scratch.dump_chunks``).  The rehearsal starts from a dump, so it carries a restored
dump's deparse: what differs is first compared with the target after one dump-and-load
(``desired.reloaded``, made once and cached), and ``confirm`` (two more loads) only runs
for what is still left.  The rehearsal is committed, not rolled
back: ``pg_dump`` runs in its own session and cannot see another transaction's
uncommitted work, and the dump oracle needs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import RemoteError
from ..migrate.files import new_migration
from ..migrate.lint import Thresholds, every_table_stats_query
from ..remote.transport import Remote
from ..sqlquote import literal
from ..units import label
from .ahead import Ahead
from .catalog import DEFAULT_EXCLUDED_TABLES, Catalog, introspect, introspection_sql
from .changes import Change, DiffResult
from .compare import compare
from .desired import (
    Reloaded,
    cache_key,
    desired_query,
    desired_state,
    introspection_document,
    known_schema,
    load_cached,
    reload_unneeded,
    reloaded,
    remember_reload_unneeded,
)
from .drift import (
    LiveState,
    against_reloaded,
    at_once,
    confirm,
    live_and_desired,
    oracle_dump,
    read_catalog,
    read_sql,
)
from .extract import dump_schema
from .facts import FACTS_SQL, PG_DUMP_VERSION, ServerFacts, schema_digest
from .fingerprint import Probe, load_catalog, plan_verdict_key, probe, recall, remember, store_catalog
from .oracle import DumpDifference, compare_dumps, unexplained
from .plan import Plan, generate_plan
from .render import HEADER
from .report import where
from .scratch import Chunk, DumpStep, LoadError, ScratchSet, Template, drop_active, dump_chunks


@dataclasses.dataclass(frozen=True)
class PlanReport:
    """A plan and what applying it to a copy of the live structure left over (``remaining``)."""

    live: str
    desired: str
    plan: Plan
    remaining: list[Change]
    error: str | None = None  # the plan failed to apply: where and why
    dump_differences: list[DumpDifference] = dataclasses.field(default_factory=list)  # rehearsal vs target, by pg_dump
    verified_at: str | None = None  # this very plan, rehearsed then on this very live catalog (``schema.fingerprint``)

    @property
    def undescribed(self) -> list[DumpDifference]:
        """What the schema dumps still show and the model did not report: opsagent cannot yet describe it."""
        return unexplained(self.dump_differences, [c.name for c in self.remaining])

    @property
    def verified(self) -> bool:
        """Both oracles agree: the model sees 0 differences and the two schema dumps match."""
        return self.error is None and not self.remaining and not self.dump_differences

    def verification_line(self) -> str:
        if self.error is not None:
            return f"not verified: applying this plan fails: {self.error}"
        if not self.remaining and not self.dump_differences:  # by the catalog model and the schema dumps alike
            if self.verified_at is not None:
                return (
                    f"verified: applying this plan leaves 0 differences (rehearsed at {self.verified_at}; the live "
                    "catalog has not changed since, by its fingerprint)"
                )
            return "verified: applying this plan leaves 0 differences"
        if not self.remaining:
            return (
                f"not verified: the schema dumps still differ in {len(self.dump_differences)} object(s) "
                "opsagent cannot yet describe"
            )
        return f"not verified: applying this plan leaves {len(self.remaining)} difference(s)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "desired": self.desired,
            **self.plan.to_dict(),
            "script": self.plan.script(),
            "verified": self.verified,
            "verification": self.verification_line(),
            "error": self.error,
            "remaining": [c.to_dict() for c in self.remaining],
            "cannot_describe": [d.to_dict() for d in self.undescribed],
            **({"recalled": {"verified_at": self.verified_at}} if self.verified_at else {}),
        }


PLAN_SOURCE = "plan"
CONCURRENTLY_CHOICES = ("auto", "always", "never")


@dataclasses.dataclass(frozen=True)
class PlanOptions:
    """How a plan is made: drops included or commented out; which new indexes are built CONCURRENTLY.

    ``concurrently``: "auto" builds them so on existing tables at or above the host's
    ``hazards:`` large-table thresholds (live sizes, read in the same round trip as
    the catalog), "always" on every existing table, "never" inside the transaction.
    """

    allow_drop: bool = False
    concurrently: str = "auto"
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES
    cache_dir: Path | None = None  # the desired-state cache (``<paths.state>/cache``); None: always materialize
    # rehearse on a copy of a kept template of the live structure (``scratch.Template``).  Off by default: a kept
    # template holds objects owned by (and granted to) the live database's roles, so ``DROP OWNED BY r; DROP ROLE r``
    # on the server fails until the template is dropped; opt in where that is acceptable.
    template: bool = False
    recheck: bool = False  # rehearse even when this very plan was verified on this very catalog (still remembered)

    def concurrent_tables(self, live: Catalog, sizes: Mapping[str, Mapping[str, Any]]) -> set[str]:
        if self.concurrently == "always":
            return set(live.tables)
        if self.concurrently == "never":
            return set()
        return {key for key, size in sizes.items() if self.thresholds.is_large(size.get("rows"), size.get("bytes"))}


TABLE_SIZES_SQL = every_table_stats_query()  # rows and bytes of every table, lock-free (lint computes them alike)


def live_catalog(
    remote: Remote, exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES
) -> tuple[Catalog, dict[str, Any]]:
    """The live catalog and every ordinary table's estimated rows and total bytes (keyed like the catalog), in one
    query run."""
    text = remote.psql(
        introspection_sql(exclude_tables, dependencies=True) + TABLE_SIZES_SQL + ";\n", extra=["-A", "-t"]
    ).text.strip()
    try:
        document, end = json.JSONDecoder().raw_decode(text)
        sizes = json.loads(text[end:])
    except ValueError as exc:
        raise RemoteError(f"{remote.host.name}: introspection returned no usable result ({exc})") from None
    return Catalog.from_json(document), sizes if isinstance(sizes, dict) else {}


@dataclasses.dataclass(frozen=True)
class _Side:
    """One side of a plan: its catalog, where it is from, its schema dump, and (live side) its table sizes."""

    label: str
    catalog: Catalog
    dump: Callable[[], str]
    sizes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    # desired side: the same structure after one dump-and-load (``desired.reloaded``, cached); None: not available
    reloaded: Callable[[bool], Reloaded] | None = None  # its argument: the whole structure (see ``desired.reloaded``)


@dataclasses.dataclass(frozen=True)
class Rehearsal:
    """What applying a plan to a copy of the live structure left: by the model, by the dump, or the error."""

    remaining: list[Change]
    dump: str | None
    error: str | None = None
    catalog: Catalog | None = None  # the rehearsed structure, as the model read it


def _rehearsal(live_dump: str, plan: Plan) -> tuple[list[Chunk], list[Chunk]]:
    """A copy of the live structure (the dump, loaded in batched transactions), then the plan applied as it will run
    (errors in the plan name the plan, not the dump)."""
    return dump_chunks(live_dump, "live (dump)"), [Chunk("RESET ALL;\n"), Chunk(plan.script(), PLAN_SOURCE)]


def verify_plan(
    remote: Remote,
    live_dump: str,
    desired: Catalog,
    plan: Plan,
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
    *,
    template: bool = False,
) -> Rehearsal:
    """Rehearse ``plan`` on a scratch copy of the live structure and diff the result against ``desired``.

    One psql session loads the dump, applies the plan, reads the catalog and dumps the
    rehearsed schema (for the dump oracle); the live database is never touched (a
    TEMPLATE copy of it would need it free of connections).  ``template``: the copy
    is made from a kept template of the live structure, named by its dump's hash
    (built in the same session when missing), so an unchanged live structure is not
    loaded again on the next plan (``scratch.Template``).
    """
    try:
        dump, applied = _rehearsal(live_dump, plan)
        base, rest = (dump, applied) if template else ([], [*dump, *applied])
        with ScratchSet(
            remote,
            [rest],
            query=introspection_sql(exclude_tables),
            dump=DumpStep.for_remote(remote, exclude_tables),
            detached=True,
            template=Template(tuple(base)) if template else None,
        ) as scratch:
            output = scratch.load()[0]
    except LoadError as error:
        return _failed_rehearsal(error)
    return _rehearsed(output, scratch.dumps[0], desired)


def _failed_rehearsal(error: LoadError) -> Rehearsal:
    """The plan failed on the copy: that is the rehearsal's finding; a failure to load the copy itself is raised."""
    if error.source != PLAN_SOURCE:
        raise error
    return Rehearsal([], None, error.message.removeprefix(f"{PLAN_SOURCE}:"))


def _rehearsed(output: str, dump: str, desired: Catalog) -> Rehearsal:
    rehearsed = read_catalog(output, "the rehearsal")
    return Rehearsal(compare(rehearsed, desired).significant, dump, catalog=rehearsed)


def _loaded(scratch: ScratchSet) -> list[str]:
    """``scratch.load()`` inside its context: a session that stopped before its own drop (the plan failed on the copy,
    an error) hands its database to the background drop."""
    with scratch:
        return scratch.load()


class _EarlyRehearsal:
    """The rehearsal's copy of the live structure, loaded while schema.sql is still being materialized (cold plans).

    The copy needs only the live dump, the plan needs both sides: so the scratch session starts as soon as the live
    read is in (:meth:`start`, on the live read's thread), loads the dump and waits, its stdin held open
    (``ScratchSet(deferred=True)``); :meth:`finish` sends it the plan and reads the result, :meth:`cancel` only
    drops it (an empty plan, or an error).  The two loads then share the server's cores instead of following each
    other.
    """

    def __init__(self, remote: Remote, exclude_tables: Sequence[str]) -> None:
        self._remote = remote
        self._exclude = exclude_tables
        self._scratch: ScratchSet | None = None
        self._load: Ahead[list[str]] | None = None

    def start(self, live: LiveState) -> None:
        # the extensions alone: the model of the whole catalog takes a while to build (5,000 tables: 0.6 s), and the
        # copy's load is what a large cold plan waits for; the plan builds the model later, while the copy loads
        extensions = Catalog.from_json({"extensions": live.document.get("extensions", [])})
        live_dump = pin_extension_versions(live.dump or "", extensions)
        scratch = ScratchSet(
            self._remote,
            [dump_chunks(live_dump, "live (dump)")],
            query=introspection_sql(self._exclude),
            dump=DumpStep.for_remote(self._remote, self._exclude),
            detached=True,
            deferred=True,
        )
        self._scratch, self._load = scratch, Ahead(lambda: _loaded(scratch))
        self._load.start()

    @property
    def started(self) -> bool:
        return self._scratch is not None

    @property
    def copy_loaded(self) -> threading.Event | None:
        """Set once the server has loaded the copy (or its session ended); None when it was never started."""
        return self._scratch.head_loaded if self._scratch is not None else None

    def finish(self, plan: Plan, desired: Catalog) -> Rehearsal:
        assert self._scratch is not None and self._load is not None
        self._scratch.resume([Chunk("RESET ALL;\n"), Chunk(plan.script(), PLAN_SOURCE)])
        try:
            output = self._load()[0]
        except LoadError as error:
            return _failed_rehearsal(error)
        return _rehearsed(output, self._scratch.dumps[0], desired)

    def release(self) -> None:
        """Ctrl-C: let a session still waiting for its plan end (its database goes with ``drop_active``), unawaited."""
        if self._scratch is not None:
            with contextlib.suppress(ValueError):
                self._scratch.resume(None)

    def cancel(self) -> None:
        """Nothing to rehearse after all: the copy is dropped (in the background); waits for its session to end."""
        if self._scratch is None or self._load is None:
            return
        with contextlib.suppress(ValueError):  # finish() or cancel() came first
            self._scratch.resume(None)
        with contextlib.suppress(Exception):  # the plan's own outcome (or error) is what is reported
            self._load()


def _plan_and_verify(
    remote: Remote, live: _Side, desired: _Side, options: PlanOptions, early: _EarlyRehearsal | None = None
) -> PlanReport:
    """Generate the plan, rehearse it on a copy of ``live`` on ``remote``'s server (``early``: the copy already
    loading), confirm what remains."""
    plan = generate_plan(
        live.catalog,
        desired.catalog,
        allow_drop=options.allow_drop,
        concurrent_tables=options.concurrent_tables(live.catalog, live.sizes),
    )
    if plan.is_empty:  # nothing to rehearse: the live structure itself is compared, by both oracles
        if early is not None:
            early.cancel()
        rehearsed_catalog: Catalog | None = live.catalog
        remaining, rehearsed = compare(live.catalog, desired.catalog).significant, live.dump
    else:
        if early is not None and early.started:
            rehearsal = early.finish(plan, desired.catalog)
        else:
            live_dump = pin_extension_versions(live.dump(), live.catalog)
            rehearsal = verify_plan(
                remote, live_dump, desired.catalog, plan, options.exclude_tables, template=options.template
            )
        if rehearsal.dump is None:
            return PlanReport(live.label, desired.label, plan, [], rehearsal.error)
        remaining, rehearsed, rehearsed_catalog = rehearsal.remaining, (lambda: rehearsal.dump or ""), rehearsal.catalog
    differences = compare_dumps(rehearsed(), desired.dump(), options.exclude_tables)
    if (remaining or differences) and desired.reloaded is not None and rehearsed_catalog is not None:
        remaining, differences = against_reloaded(
            remaining, differences, rehearsed_catalog, rehearsed(), desired.reloaded, options.exclude_tables
        )
    # a dump-and-load deparses some expressions differently: confirm what either oracle still sees through one
    result, confirmed = confirm(
        remote, DiffResult(remaining), rehearsed, desired.dump, options.exclude_tables, differences
    )
    return PlanReport(live.label, desired.label, plan, result.changes, None, confirmed or [])


_CREATE_EXTENSION = re.compile(r"^(CREATE EXTENSION IF NOT EXISTS (\S+) WITH SCHEMA \S+);$", re.MULTILINE)


def pin_extension_versions(dump: str, catalog: Catalog) -> str:
    """pg_dump leaves extension versions out (a restore gets the default): put the live ones back for the rehearsal,
    or a plan that updates an extension would be rehearsed from the wrong version."""

    def pinned(match: re.Match[str]) -> str:
        extension = catalog.extensions.get(match.group(2).strip('"').replace('""', '"'))
        if extension is None or not extension.version:
            return match.group(0)
        return f"{match.group(1)} VERSION {literal(extension.version)};"

    return _CREATE_EXTENSION.sub(pinned, dump)


def _live_side(remote: Remote, exclude_tables: Sequence[str]) -> _Side:
    """The live database: catalog with table sizes, and schema dump, read at once on two channels."""
    (catalog, sizes), dump = at_once(lambda: live_catalog(remote, exclude_tables), lambda: dump_schema(remote))
    return _Side(where(remote), catalog, lambda: dump, sizes)


def plan_against_sql(remote: Remote, sql: str, source: str, options: PlanOptions | None = None) -> PlanReport:
    """The plan from the live database to ``sql`` (its materialized state, cached), verified by applying it.

    With a cache folder the live catalog is probed first (``schema.fingerprint``): when this very plan was already
    rehearsed on a copy of this very catalog and left no difference by both oracles, that verdict is the answer (no
    dump, no rehearsal); otherwise a clean verdict is remembered for next time.
    """
    options = options or PlanOptions()
    exclude = options.exclude_tables
    seen = probe(remote, remote.host.database, TABLE_SIZES_SQL) if options.cache_dir is not None else None
    if seen is not None and not options.recheck:
        recalled = _recalled_plan(remote, sql, source, options, seen)
        if recalled is not None:
            return recalled
    before = seen.fingerprint if seen is not None else None
    # schema.sql to materialize (cold): the rehearsal's copy of the live structure loads meanwhile (not with a kept
    # template: copying one is cheaper than any load)
    digest = schema_digest(sql)
    cold = not options.template and not known_schema(options.cache_dir, digest)
    early = _EarlyRehearsal(remote, exclude) if cold else None
    try:
        # one command: facts, catalog with table sizes, and (at the same time, on the server) the dump oracle's pg_dump
        live, desired = live_and_desired(
            remote,
            sql,
            source,
            exclude,
            options.cache_dir,
            dependencies=True,
            extra_sql=TABLE_SIZES_SQL,
            fingerprint=before is not None,
            on_live=early.start if early is not None else None,
        )
    except Exception:
        if early is not None:
            early.cancel()
        raise
    except BaseException:
        if early is not None:
            early.release()
        raise
    live_dump = live.dump or ""
    # the target after one dump-and-load settles the rehearsal's deparse artifacts; when it is not cached yet it is
    # built on its own channel while the rehearsal runs (it is then kept, for every later plan of this schema.sql)
    # (the lighter target: ``desired.reloaded``; the whole one only when a finding needs it, see ``against_reloaded``)
    # (started ahead only while no earlier plan found it unneeded; one nobody asked for is stopped, not awaited)
    target = Ahead(lambda: reloaded(remote, desired, sql, exclude, options.cache_dir, abandoned=target.abandoned))
    if (
        options.cache_dir is not None
        and desired.reloaded_dump is None
        and not reload_unneeded(options.cache_dir, digest, desired)
    ):
        # beside the rehearsal's own copy, the two loads would share the server: it waits until that copy is in
        target.start(after=early.copy_loaded if early is not None else None)

    def target_of(whole: bool) -> Reloaded:
        light = target()
        return reloaded(remote, desired, sql, exclude, options.cache_dir, whole=True) if whole else light

    try:
        live_side = _Side(where(remote), live.catalog, lambda: live_dump, _table_sizes(remote, live.extra))
        report = _plan_and_verify(
            remote, live_side, _Side(source, desired.catalog, lambda: desired.dump, reloaded=target_of), options, early
        )
    except Exception:
        if early is not None:
            early.cancel()
        target.abandon()  # nothing outlives the plan on the server, and nobody needs it now
        raise
    except BaseException:  # Ctrl-C: the other channels' scratch sessions go to the background drop, unawaited
        target.abandoned.set()  # a target still waiting to start never does
        if early is not None:
            early.release()
        drop_active()
        raise
    if target.asked:
        target.settle()
    else:  # the rehearsal matched without it (or failed): stop its load instead of waiting for it
        target.abandon()
        if report.verified and not report.plan.is_empty:  # a rehearsal from the live dump matched: no artifacts
            remember_reload_unneeded(options.cache_dir, digest, desired)
    if seen is not None and before is not None and report.verified and live.fingerprint == before:
        store_catalog(options.cache_dir, before, exclude, _live_query(exclude), live.document)
        key = plan_verdict_key(sql, seen.facts, before, exclude, report.plan.script())
        remember(options.cache_dir, key, where(remote), source)
    return report


def _live_query(exclude: Sequence[str]) -> str:
    """The introspection a plan reads the live side with (dependencies included)."""
    return introspection_sql(exclude, dependencies=True)


def _table_sizes(remote: Remote, text: str) -> dict[str, Any]:
    try:
        sizes = json.loads(text) if text else {}
    except ValueError as exc:
        raise RemoteError(f"{remote.host.name}: table sizes returned no usable result ({exc})") from None
    return sizes if isinstance(sizes, dict) else {}


def _recalled_plan(remote: Remote, sql: str, source: str, options: PlanOptions, seen: Probe) -> PlanReport | None:
    """The plan made again from the kept live catalog and schema.sql's cached state, when this very plan was verified
    on this very catalog (None: anything missing, and the full plan runs)."""
    fingerprint, exclude, cache_dir = seen.fingerprint, options.exclude_tables, options.cache_dir
    if fingerprint is None:
        return None
    document = load_catalog(cache_dir, fingerprint, exclude, _live_query(exclude))
    digest = schema_digest(sql)
    desired = load_cached(cache_dir, digest, cache_key(digest, seen.facts, exclude), source)
    if document is None or desired is None:
        return None
    try:
        live = Catalog.from_json(document)
    except (ValueError, TypeError, AttributeError):
        return None
    plan = generate_plan(
        live,
        desired.catalog,
        allow_drop=options.allow_drop,
        concurrent_tables=options.concurrent_tables(live, _table_sizes(remote, seen.extra)),
    )
    at = recall(cache_dir, plan_verdict_key(sql, seen.facts, fingerprint, exclude, plan.script()))
    if at is None:
        return None
    return PlanReport(where(remote), source, plan, [], None, [], verified_at=at)


def plan_from_snapshot(
    remote: Remote, snapshot: str, snapshot_label: str, sql: str, source: str, options: PlanOptions | None = None
) -> PlanReport:
    """The plan from a snapshot (``inv extract``) to ``sql``, both materialized on ``remote``'s server (``sql`` from the
    desired-state cache when warm): the live database is not read."""
    options = options or PlanOptions()
    exclude = options.exclude_tables
    cold = not known_schema(options.cache_dir, schema_digest(sql))
    contents = [[Chunk(snapshot, snapshot_label)], *([[Chunk(sql, source)]] if cold else [])]
    dump = DumpStep.for_remote(remote, exclude, only=(1,)) if cold else None
    with ScratchSet(
        remote,
        contents,
        query=desired_query(exclude),
        dump=dump,
        detached=True,
        preamble=(FACTS_SQL, PG_DUMP_VERSION),
    ) as scratch:
        outputs = scratch.load()
    facts_json, pg_dump_version = scratch.preamble_outputs
    built = (introspection_document(outputs[1], source), scratch.dumps[1]) if cold else None
    desired = desired_state(
        remote,
        sql,
        source,
        ServerFacts.parse(facts_json, pg_dump_version),
        exclude,
        options.cache_dir,
        materialized=built,
    )
    live = _Side(f"snapshot {snapshot_label}", read_catalog(outputs[0], snapshot_label), lambda: snapshot)
    return _plan_and_verify(remote, live, _Side(source, desired.catalog, lambda: desired.dump), options)


def plan_against_host(remote: Remote, other: Remote, options: PlanOptions | None = None) -> PlanReport:
    """The plan that gives ``remote``'s database the structure of ``other``'s (e.g. prod catching up with staging)."""
    options = options or PlanOptions()
    live, (desired_catalog, desired_dump) = at_once(
        lambda: _live_side(remote, options.exclude_tables),
        lambda: at_once(
            lambda: introspect(other, exclude_tables=options.exclude_tables, dependencies=True),
            lambda: oracle_dump(other, other.host.database, options.exclude_tables),
        ),
    )
    desired = _Side(where(other), desired_catalog, lambda: desired_dump)
    return _plan_and_verify(remote, live, desired, options)


def plan_against_file(
    remote: Remote,
    path: Path,
    options: PlanOptions | None = None,
    *,
    snapshot: Path | None = None,
    what: str = "schema file",
) -> PlanReport:
    """The plan from the live database (or its ``snapshot``) to a SQL file (``sql/schema.sql``, or a snapshot)."""
    source = label(path)
    sql = read_sql(path, what)
    if snapshot is not None:
        text = read_sql(snapshot, "snapshot (run 'inv extract' first)")
        return plan_from_snapshot(remote, text, label(snapshot), sql, source, options)
    return plan_against_sql(remote, sql, source, options)


def write_migrations(report: PlanReport, migrations_dir: Path, description: str) -> list[Path]:
    """The plan as the next migration file(s).

    The main part is one transactional file, atomic with its ledger row.  What cannot
    run inside it gets a no-transaction file of its own, each statement safe to rerun:
    enum values it uses before it, CONCURRENTLY index builds after it.
    """
    plan = report.plan
    notes = [
        f"Generated by 'inv new --from-diff' from {report.live} to {report.desired};",
        f"{report.verification_line()} (rehearsed on a scratch copy).",
    ]
    stages = [
        (
            "before",
            f"{description} enum values",
            [
                "Adds enum values the next migration uses: a value added inside a",
                "transaction cannot be used in it. IF NOT EXISTS makes a rerun harmless.",
            ],
        ),
        ("main", description, [f"warning: {w}" for w in plan.warnings]),
        (
            "after",
            f"{description} concurrent indexes",
            [
                "Builds indexes CONCURRENTLY (no write lock): each statement runs on its own.",
                "A failed build leaves an INVALID index; the DROP ... IF EXISTS before it",
                "makes a rerun safe.",
            ],
        ),
    ]
    paths: list[Path] = []
    for stage, name, extra in stages:
        body = plan.body(stage)
        if body:
            text = HEADER + body if stage == "main" else body
            paths.append(
                new_migration(migrations_dir, name, body=text, notes=[*notes, *extra], no_transaction=stage != "main")
            )
    return paths
