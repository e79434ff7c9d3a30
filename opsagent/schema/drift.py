"""Drift: the live database against ``schema.sql``, a snapshot, another host, or the migrations.

The desired side is never parsed by us: it is materialized in a scratch database
on the same server (same PostgreSQL, same extensions) and both sides are read
with the same catalog query, so "equal" means equal to PostgreSQL itself.
What ``schema.sql`` materializes to is cached locally (``opsagent.schema.desired``): with
a warm cache ``inv diff`` (and sync's closing drift check) is ONE remote command
(server facts + live catalog by psql, and the live schema dump by pg_dump running at
the same time, ``liveread.LIVE_READ_SH``) and a local comparison by both oracles, each of
which skips its parsing when its own two inputs are equal (``compare_both``); cold, the file is
materialized once, alongside
the live read when the file is new to the cache.  Scratch databases are
one-session ones whose drop happens in the background (``opsagent.schema.scratch``).
With a cache folder, a clean verdict of both oracles is remembered under the live catalog's
fingerprint and recalled by a short probe while nothing changed (``opsagent.schema.fingerprint``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import OpsagentError, RemoteError, UsageError
from ..migrate.files import NAMING_HINT, Migration, load_migration, parse_filename
from ..remote.markers import Markers
from ..remote.transport import Remote
from ..units import label
from .catalog import DEFAULT_EXCLUDED_TABLES, Catalog, introspection_sql
from .changes import Change, DiffResult
from .compare import compare
from .desired import (
    DesiredState,
    Reloaded,
    desired_query,
    desired_state,
    introspection_document,
    known_schema,
    materialize,
    newest,
    reloaded,
)
from .exclusions import dump_exclude_args, ledger_exclusions, strip_ledger_only_schemas
from .extract import dump_schema, gunzip, normalize_dump, pg_dump_argv, strip_restrict
from .facts import FACTS_SQL, PG_DUMP_VERSION, ServerFacts, schema_digest
from .fingerprint import (
    Fingerprint,
    Probe,
    fingerprint_section,
    hosts_verdict_key,
    load_side,
    probe,
    recall,
    remember,
    schema_verdict_key,
    side_key,
    store_side,
)
from .liveread import live_read_markers, run_live_read, start_live_read
from .oracle import DumpDifference, compare_dumps, split_key, unexplained
from .report import DriftReport, oracle_summary, recalled_report, where
from .scratch import Chunk, DumpStep, ScratchSet, drop_active, dump_chunks

A = TypeVar("A")
B = TypeVar("B")


def read_sql(path: Path, what: str = "schema file") -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{label(path)}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{label(path)}: cannot read {what}: {exc}") from None


# ---------------------------------------------------------------- text diff


def dump_for_diff(remote: Remote, database: str, exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES) -> str:
    """A dump meant for reading side by side: no owners, no grants, no ledger, no guard lines."""
    argv = [*pg_dump_argv(remote, database, no_owner=True), *dump_exclude_args(exclude_tables)]
    result = remote.run(argv, check=False)
    if not result.ok:
        raise remote.failure(["pg_dump"], result)
    raw = strip_ledger_only_schemas(
        gunzip(result.stdout, remote.host.name), exclude_tables
    )  # before the preamble is judged
    return strip_restrict(normalize_dump(raw))


def unified(live: str, desired: str, live_name: str, desired_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            live.splitlines(keepends=True),
            desired.splitlines(keepends=True),
            fromfile=live_name,
            tofile=desired_name,
            n=3,
        )
    )


def at_once(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
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
    except BaseException as exc:
        if not isinstance(exc, Exception):  # Ctrl-C: the other side's scratch session goes to the background drop
            drop_active()
        raise
    finally:  # also on errors: a scratch database must not be created after it was dropped
        try:
            worker.join()
        except BaseException:  # Ctrl-C while waiting for the other side
            drop_active()
            raise
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


# Top-level keys of the introspection document that are facts about the server, not the schema (``Catalog.__eq__``
# leaves them out too); the rest decides the model's verdict.
_SERVER_KEYS = frozenset({"server_version", "depends", "casts", "string_types"})


def same_structure(live: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether two introspection documents describe the same structure, without building the model.

    Equal documents build equal catalogs, and ``compare`` of equal catalogs is empty:
    the model's verdict on a clean database, at the cost of one dict comparison
    (building both catalogs and comparing them costs ~10x more on musicbrainz).  A list
    may come in another order (the query does not sort every kind, e.g. triggers): it
    is compared as a multiset, which builds the same keyed maps as long as the model's
    keys are unique (identities in PostgreSQL; a key collision would lose an object
    from the model's maps in either case).  Anything else unequal proves nothing: the
    full comparison decides.
    """
    for key in (live.keys() | desired.keys()) - _SERVER_KEYS:
        mine, theirs = live.get(key), desired.get(key)
        if mine == theirs:
            continue
        if not isinstance(mine, list) or not isinstance(theirs, list) or len(mine) != len(theirs):
            return False
        if sorted(map(_canonical_json, mine)) != sorted(map(_canonical_json, theirs)):
            return False
    return True


def _canonical_json(item: Any) -> str:
    return json.dumps(item, sort_keys=True, separators=(",", ":"))


@dataclasses.dataclass
class LiveState:
    """The live side as one remote command reads it: catalog, dump oracle's dump, server facts, an extra query's
    output."""

    document: dict[str, Any]  # the introspection document; ``catalog`` builds the model from it on first use
    dump: str | None  # normalized, ``exclude_tables`` left out; None: not taken (--fast)
    facts: ServerFacts
    extra: str = ""
    what: str = "live"
    fingerprint: Fingerprint | None = None  # read after the catalog, when asked (``read_live(fingerprint=True)``)
    _catalog: Catalog | None = dataclasses.field(default=None, repr=False)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            try:
                self._catalog = Catalog.from_json(self.document)
            except (ValueError, TypeError, AttributeError) as exc:
                raise RemoteError(f"introspection of {self.what} returned no usable result ({exc})") from None
        return self._catalog


def _run_live_read(
    remote: Remote, database: str, script: str, exclude_tables: Sequence[str], mark: Markers
) -> tuple[str, str]:
    """(psql's output, the raw schema dump as the load sessions' ``DumpStep`` would have printed it)."""
    result = run_live_read(remote, database, script, exclude_tables, mark)
    if not result.ok:
        raise remote.failure(["psql" if result.exit_status == 4 else "pg_dump"], result)
    split = mark.split_tail(result.stdout, "live")
    if split is None:
        raise RemoteError(f"{where(remote, database)}: the live read ended without its catalog (output cut short)")
    compressed, tail = split
    raw = gunzip(compressed, remote.host.name)
    return tail.decode("utf-8"), "\n".join(
        raw.splitlines()
    ) + "\n"  # the line handling of DumpStep.split: the cached side's


def live_read_script(
    mark: Markers,
    exclude_tables: Sequence[str],
    *,
    dependencies: bool = False,
    extra_sql: str | None = None,
    fingerprint: bool = False,
) -> str:
    """The psql script of :func:`read_live`: the facts, pg_dump's version, the catalog (``extra_sql``'s output, the
    fingerprint read last)."""
    parts = [
        mark.psql("facts"),
        FACTS_SQL,
        mark.psql("pg-dump"),
        PG_DUMP_VERSION,
        mark.psql("catalog"),
        introspection_sql(exclude_tables, dependencies=dependencies),
    ]
    if extra_sql is not None:
        parts += [mark.psql("extra"), extra_sql.rstrip().rstrip(";") + ";"]
    if fingerprint:
        parts.append(fingerprint_section(mark))
    return "\n".join(parts) + "\n"


def start_closing_read(remote: Remote, exclude_tables: Sequence[str]) -> bool:
    """Start the closing drift check's live read (held by the sync before its migrations) now, with the script the
    check will ask for (:func:`diff_against_sql` with a cache and the sync's probe): it then runs while the sync's
    own session is probed.  A check that asks for another script (the probe gave no fingerprint) or for none (its
    verdict recalled) starts its own or none: this one is killed with its channel, having only read."""
    database = remote.host.database
    mark = live_read_markers(remote, database)
    script = live_read_script(mark, exclude_tables, fingerprint=True)
    return start_live_read(remote, database, script, exclude_tables, mark)


def read_live(
    remote: Remote,
    database: str,
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
    *,
    dump: bool = True,
    dependencies: bool = False,
    extra_sql: str | None = None,
    fingerprint: bool = False,
) -> LiveState:
    """Server facts (the desired-state cache's key), the catalog, ``extra_sql``'s output and the schema dump of a live
    database: ONE remote command, in which psql and (for the dump oracle) pg_dump run at the same time.
    ``fingerprint``: the catalog's fingerprint too, read last (after the catalog query; pg_dump started first)."""
    mark = live_read_markers(remote, database) if dump else Markers()
    script = live_read_script(
        mark, exclude_tables, dependencies=dependencies, extra_sql=extra_sql, fingerprint=fingerprint
    )
    raw: str | None = None
    if dump:
        text, raw = _run_live_read(remote, database, script, exclude_tables, mark)
    else:
        text = remote.psql(script, database, extra=["-A", "-t"]).text
    body = mark.by_kind(text)
    if "catalog" not in body:
        raise RemoteError(f"introspection of {where(remote, database)} returned no usable result")
    facts = ServerFacts.parse(body.get("facts", ""), body.get("pg-dump", ""))
    what = where(remote, database)
    return LiveState(
        introspection_document(body["catalog"], what),
        normalize_dump(raw) if raw is not None else None,
        facts,
        body.get("extra", ""),
        what,
        Fingerprint.parse(body["fingerprint"], remote.host.name) if "fingerprint" in body else None,
    )


def kept_live(
    remote: Remote,
    seen: Probe | None,
    exclude_tables: Sequence[str],
    cache_dir: Path | None,
    *,
    fast: bool = False,
    recheck: bool = False,
) -> tuple[LiveState | None, str | None]:
    """(the live side of ``remote``'s database kept for the catalog rows ``seen`` names, or None; its key, for
    :func:`keep_live`).  A database that has not changed since its last diff (drift and all) is then compared
    without reading it again; ``recheck`` reads it again."""
    if cache_dir is None or seen is None:
        return None, None
    key = side_key(seen, exclude_tables, introspection_sql(exclude_tables, dependencies=False))
    kept = None if recheck else load_side(cache_dir, key)
    if kept is None:
        return None, key
    document, dump = kept
    what = where(remote, remote.host.database)
    return LiveState(document, None if fast else dump, seen.facts, "", what, seen.fingerprint), key


def keep_live(cache_dir: Path | None, key: str | None, live: LiveState, before: Fingerprint | None) -> None:
    """Keep a live side just read (both oracles' inputs) under ``key``, when its fingerprint, read after it, is the
    one the key was made from: nothing was committed between the probe and the read.  The callers keep a side only
    when the comparison found something: a clean one is remembered as a verdict instead, which a sync's closing
    check (clean, most of the time) then writes alone, not a copy of the whole structure as well."""
    if live.dump is not None and before is not None and live.fingerprint == before:
        store_side(cache_dir, key, live.document, live.dump)


_OWNER_LINE = re.compile(r"^ALTER [A-Z][A-Z ]* .* OWNER TO .*;$", re.MULTILINE)
_OWNER_HEADER = re.compile(r"^(-- Name: .*; Owner: )[^;\n]*", re.MULTILINE)


def readable(dump: str, exclude_tables: Sequence[str] = ()) -> str:
    """A dump oracle's dump as ``dump_for_diff`` would print it (no owners, no guard lines, no ledger-only schema),
    without another pg_dump."""
    if exclude_tables:
        dump = strip_ledger_only_schemas(dump, exclude_tables)
    return strip_restrict(_OWNER_HEADER.sub(r"\g<1>-", _OWNER_LINE.sub("", dump))).replace("\n\n\n", "\n\n")


def live_and_desired(
    remote: Remote,
    sql: str,
    source: str,
    exclude_tables: Sequence[str],
    cache_dir: Path | None,
    *,
    dump: bool = True,
    dependencies: bool = False,
    extra_sql: str | None = None,
    fingerprint: bool = False,
    on_live: Callable[[LiveState], None] | None = None,
    known_live: LiveState | None = None,
) -> tuple[LiveState, DesiredState]:
    """The live side (one command) and schema.sql's materialized state: from the cache when warm (no other command);
    when the file is new to the cache it is materialized alongside the live read; else after it, on a miss.
    ``on_live``: called with the live side as soon as it is read, while the file is still being materialized (a cold
    plan starts its rehearsal's copy of the live structure there); not called on the warm path.  ``known_live``: the
    live side kept for its fingerprint (:func:`kept_live`), not read again."""
    database = remote.host.database

    def live() -> LiveState:
        if known_live is not None:
            return known_live
        return read_live(
            remote,
            database,
            exclude_tables,
            dump=dump,
            dependencies=dependencies,
            extra_sql=extra_sql,
            fingerprint=fingerprint,
        )

    def live_then(hook: Callable[[LiveState], None]) -> LiveState:
        state = live()
        hook(state)
        return state

    digest = schema_digest(sql)
    if known_schema(cache_dir, digest):  # warm, most likely: read and parse the cached side while the server works
        state, guess = at_once(live, lambda: newest(cache_dir, digest, source, dependencies=dependencies))
        return state, desired_state(remote, sql, source, state.facts, exclude_tables, cache_dir, prefetched=guess)
    first = live if on_live is None else (lambda: live_then(on_live))
    state, built = at_once(first, lambda: materialize(remote, sql, source, exclude_tables))
    return state, desired_state(remote, sql, source, state.facts, exclude_tables, cache_dir, materialized=built)


def diff_against_sql(
    remote: Remote,
    sql: str,
    source: str,
    *,
    desired_label: str | None = None,
    text: bool = False,
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
    fast: bool = False,
    cache_dir: Path | None = None,
    recheck: bool = False,
    probed: Probe | None = None,
) -> DriftReport:
    """Live database vs ``sql`` materialized on the same server (or its cached materialization), by the model and
    (unless ``fast``) by the dump oracle.

    With a ``cache_dir``, a verdict of both oracles remembered for this very catalog (``schema.fingerprint``) is the
    answer: one short remote command, no dump (``recheck``: compare again all the same).  Otherwise, warm cache: the
    probe and one remote command.  Cold: the live read and the materialization (one psql session, its drop in the
    background) on two channels at once.
    """
    live_db = remote.host.database
    label_ = desired_label or source
    before, key, seen = None, "", None
    if cache_dir is not None:
        seen = probed or probe(remote, live_db)  # ``probed``: read by the caller, e.g. on the sync's own session
        before = seen.fingerprint
        if before is not None:
            key = schema_verdict_key(sql, seen.facts, before, exclude_tables)
            at = None if recheck else recall(cache_dir, key)
            if at is not None:
                return recalled_report(where(remote), label_, at, text=text)
    kept, side = kept_live(remote, seen, exclude_tables, cache_dir, fast=fast, recheck=recheck)
    live, desired = live_and_desired(
        remote, sql, source, exclude_tables, cache_dir, dump=not fast, fingerprint=before is not None, known_live=kept
    )
    result, differences = compare_both(live, desired, exclude_tables)
    if (
        _doubtful(result, differences) and live.dump is not None and cache_dir is not None
    ):  # e.g. a database restored from a dump
        changes, settled = against_reloaded(
            result.changes,
            differences or [],
            live.catalog,
            live.dump,
            lambda whole: reloaded(remote, desired, sql, exclude_tables, cache_dir, whole=whole),
            exclude_tables,
        )
        result, differences = DiffResult(changes), settled
    result, differences = confirm(
        remote,
        result,
        lambda: live.dump or dump_schema(remote, live_db),
        lambda: desired.dump,
        exclude_tables,
        differences,
    )
    diff_text: str | None = None
    if text:
        live_text = (
            readable(live.dump, exclude_tables)
            if live.dump is not None
            else dump_for_diff(remote, live_db, exclude_tables)
        )
        diff_text = unified(live_text, readable(desired.dump), where(remote), label_)
    cache = None if cache_dir is None else ("hit" if desired.from_cache else "miss")
    clean = differences == [] and not result.changes
    if key and clean and live.fingerprint == before:  # clean, nothing committed
        remember(cache_dir, key, where(remote), label_)
    elif not clean and kept is None:
        keep_live(cache_dir, side, live, before)
    return DriftReport(where(remote), label_, result, diff_text, differences, cache)


def compare_both(
    live: LiveState, desired: DesiredState, exclude_tables: Sequence[str]
) -> tuple[DiffResult, list[DumpDifference] | None]:
    """The model's and the dump oracle's findings, each verdict by its own oracle; each skips its parsing when its
    two inputs are equal as they stand (the usual no-drift case): equal documents, byte-equal normalized dumps."""
    result = (
        DiffResult([])
        if same_structure(live.document, desired.catalog_document)
        else compare(live.catalog, desired.catalog)
    )
    if live.dump is None:
        return result, None
    if live.dump == desired.dump:
        return result, []
    return result, compare_dumps(live.dump, desired.dump, exclude_tables, desired_entries=desired.entries)


def against_reloaded(
    changes: list[Change],
    differences: list[DumpDifference],
    side: Catalog,
    side_dump: str,
    reloaded: Callable[[bool], Reloaded],
    exclude_tables: Sequence[str],
) -> tuple[list[Change], list[DumpDifference]]:
    """Drop the findings that are dump-and-load deparse artifacts by comparing ``side`` (a plan's rehearsal, which
    starts from the live database's dump, or a live database restored from a dump) with the target after one
    dump-and-load (``desired.reloaded``, cached).  The rule of ``confirm``: a "changed" finding of the model, or a
    dump entry, that is gone there was never a change; extra and missing objects always stay.  Costs no remote
    command once the reloaded target is cached; what is left still goes through ``confirm``; a failure to make the
    reloaded target keeps every finding.  ``reloaded(whole)``: the lighter target first (heavy post-data entries
    left out), the whole one when a finding touches what it left out (:func:`needs_whole_reload`)."""
    try:
        target = reloaded(False)
        if target.skipped and needs_whole_reload(target.skipped, changes, differences):
            target = reloaded(True)
    except OpsagentError:
        return changes, differences
    still = {(c.kind, c.name) for c in compare(side, target.catalog).changes}
    left = {d.key for d in compare_dumps(side_dump, target.dump, exclude_tables)} if differences else set()
    return (
        [c for c in changes if c.status != "changed" or (c.kind, c.name) in still],
        [d for d in differences if d.key in left],
    )


# kinds of the model's findings whose objects a dump builds without any heavy post-data entry (indexes, constraints
# written apart from their table, foreign keys, triggers, comments on those); "constraint" is checked by name.  Listed,
# not derived from ``changes.KIND_ORDER``: a kind added there later is reloaded whole until it is known here.
_BUILT_WITHOUT_HEAVY = frozenset(
    {
        "schema",
        "extension",
        "type",
        "collation",
        "text search dictionary",
        "text search configuration",
        "sequence",
        "column",
        "view",
        "materialized view",
        "function",
        "procedure",
        "operator",
        "operator family",
        "operator class",
        "policy",
        "statistics",
        "privilege",
    }
)


def needs_whole_reload(
    skipped: frozenset[str], changes: Sequence[Change], differences: Sequence[DumpDifference]
) -> bool:
    """Whether a lighter reloaded target (``skipped``: the keys of the entries it left out) can settle these
    findings: not when a dump difference is one of those entries, or a model finding is about an object they make
    or change (a table: its clustering index, replica identity; a constraint written apart from its table).  Erring
    towards True only costs a load; towards False it would let a real difference pass for an artifact."""
    if any(d.key in skipped for d in differences):
        return True
    for change in changes:
        if change.kind in _BUILT_WITHOUT_HEAVY:
            continue
        if change.kind != "constraint":
            return True
        parts = split_key(change.name)
        if len(parts) != 3 or any(
            f"{kind} {parts[0]}.{parts[1]} {parts[2]}" in skipped for kind in ("CONSTRAINT", "FK CONSTRAINT")
        ):
            return True
    return False


def _doubtful(result: DiffResult, differences: list[DumpDifference] | None) -> bool:
    """Findings a dump-and-load might explain away: the model's "changed" ones, dump entries the model did not name."""
    return any(c.status == "changed" for c in result.changes) or bool(
        unexplained(differences or [], [c.name for c in result.changes])
    )


def confirm_changes(
    remote: Remote,
    result: DiffResult,
    live_dump: Callable[[], str],
    desired_dump: Callable[[], str],
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
) -> DiffResult:
    """``confirm`` for the model's findings alone."""
    return confirm(remote, result, live_dump, desired_dump, exclude_tables)[0]


def confirm(
    remote: Remote,
    result: DiffResult,
    live_dump: Callable[[], str],
    desired_dump: Callable[[], str],
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
    differences: list[DumpDifference] | None = None,
) -> tuple[DiffResult, list[DumpDifference] | None]:
    """Drop findings that are only dump/restore deparse artifacts: the model's "changed" ones and the dump oracle's.

    A database restored from a dump deparses some expressions differently from one
    built from the original SQL (``ARRAY['a'::varchar]::text[]`` vs
    ``ARRAY[('a'::varchar)::text]``).  Putting both sides through one dump-and-load
    makes them comparable: a change that disappears there was never a change.
    Both dumps are loaded on ``remote``'s server (in one session that reads both
    catalogs and, for the dump oracle, dumps both again).  Costs round trips only
    when something changed; any failure keeps the findings.
    """
    if not _doubtful(result, differences):
        return result, differences
    try:
        dumps = at_once(live_dump, desired_dump)
        contents = [dump_chunks(dumps[0], "live (dump)"), dump_chunks(dumps[1], "desired (dump)")]
        step = DumpStep.for_remote(remote, exclude_tables) if differences else None
        with ScratchSet(remote, contents, query=introspection_sql(exclude_tables), dump=step, detached=True) as scratch:
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


def diff_against_file(
    remote: Remote,
    path: Path,
    *,
    text: bool = False,
    what: str = "schema file",
    desired_label: str | None = None,
    fast: bool = False,
    cache_dir: Path | None = None,
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
    recheck: bool = False,
    probed: Probe | None = None,
) -> DriftReport:
    """Live database vs a SQL file (``schema.sql`` or an extracted snapshot); ``cache_dir``: the desired-state cache
    and the remembered verdicts (``recheck``: ignore those; ``probed``: the probe, already read)."""
    source = label(path)
    return diff_against_sql(
        remote,
        read_sql(path, what),
        source,
        desired_label=desired_label or source,
        text=text,
        fast=fast,
        cache_dir=cache_dir,
        exclude_tables=exclude_tables,
        recheck=recheck,
        probed=probed,
    )


def diff_against_snapshot(
    remote: Remote,
    path: Path,
    *,
    text: bool = False,
    fast: bool = False,
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
) -> DriftReport:
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
    with ScratchSet(
        remote, [[Chunk(live_dump, live_label)], [Chunk(snapshot, source)]], query=query, dump=step
    ) as scratch:
        live_out, snapshot_out = scratch.load()
    result = compare(read_catalog(live_out, live_label), read_catalog(snapshot_out, source))
    differences = compare_dumps(scratch.dumps[0], scratch.dumps[1], exclude_tables) if scratch.dumps else None
    diff_text = unified(strip_restrict(live_dump), strip_restrict(snapshot), where(remote), source) if text else None
    return DriftReport(where(remote), f"snapshot {source}", result, diff_text, differences)


def diff_hosts(
    live: Remote,
    other: Remote,
    *,
    text: bool = False,
    fast: bool = False,
    cache_dir: Path | None = None,
    recheck: bool = False,
    probed: tuple[Probe, Probe] | None = None,
) -> DriftReport:
    """Two live databases (e.g. prod vs staging); ``other`` plays the desired side.

    Each side hides its own host's ledger; the steps that see both dumps at once hide both ledgers.  With a
    ``cache_dir``, a clean verdict of both oracles on these very two catalogs is remembered and recalled, and each
    side read is kept for its fingerprint (``schema.fingerprint``; ``recheck`` ignores both; ``probed``: both
    probes, already read).
    """
    hidden = ledger_exclusions(live.host), ledger_exclusions(other.host)
    both_ledgers = tuple(dict.fromkeys([*hidden[0], *hidden[1]]))
    seen: tuple[Probe | None, Probe | None] = (None, None)
    before: tuple[Fingerprint | None, Fingerprint | None] = (None, None)
    key = ""
    if cache_dir is not None:
        probes = probed or at_once(lambda: probe(live, live.host.database), lambda: probe(other, other.host.database))
        seen, before = probes, (probes[0].fingerprint, probes[1].fingerprint)
        if before[0] is not None and before[1] is not None:
            key = hosts_verdict_key(before[0], before[1], *hidden)
            at = None if recheck else recall(cache_dir, key)
            if at is not None:
                return recalled_report(where(live), where(other), at, text=text)

    read: list[tuple[str | None, LiveState, Fingerprint | None]] = []  # the sides read, to keep if not clean

    def side(remote: Remote, index: int) -> LiveState:  # one command per host: psql and pg_dump at once
        exclusions = ledger_exclusions(remote.host)
        kept, side_key_ = kept_live(remote, seen[index], exclusions, cache_dir, fast=fast, recheck=recheck)
        if kept is not None:
            return kept
        state = read_live(remote, remote.host.database, exclusions, dump=not fast, fingerprint=bool(key))
        read.append((side_key_, state, before[index]))
        return state

    mine, theirs = at_once(lambda: side(live, 0), lambda: side(other, 1))
    result = DiffResult([]) if same_structure(mine.document, theirs.document) else compare(mine.catalog, theirs.catalog)
    differences: list[DumpDifference] | None = None
    if mine.dump is not None and theirs.dump is not None:
        differences = [] if mine.dump == theirs.dump else compare_dumps(mine.dump, theirs.dump, both_ledgers)
    result, differences = confirm(
        live,
        result,
        lambda: mine.dump or dump_schema(live),
        lambda: theirs.dump or dump_schema(other),
        both_ledgers,
        differences,
    )
    diff_text: str | None = None
    if text:
        a, b = at_once(
            lambda: dump_for_diff(live, live.host.database, ledger_exclusions(live.host)),
            lambda: dump_for_diff(other, other.host.database, ledger_exclusions(other.host)),
        )
        diff_text = unified(a, b, where(live), where(other))
    clean = differences == [] and not result.changes
    if key and clean and (mine.fingerprint, theirs.fingerprint) == before:
        remember(cache_dir, key, where(live), where(other))
    elif not clean:
        for side_key_, state, fingerprint in read:
            keep_live(cache_dir, side_key_, state, fingerprint)
    return DriftReport(where(live), where(other), result, diff_text, differences)


def drift_count(
    remote: Remote,
    schema_path: Path,
    *,
    cache_dir: Path | None = None,
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
    probed: Probe | None = None,
) -> int:
    """Differences between the live database and ``schema.sql`` by both oracles (for ``inv sync``'s closing warning);
    with a warm ``cache_dir`` one remote command, none when ``probed`` finds the verdict remembered."""
    return diff_against_file(
        remote, schema_path, cache_dir=cache_dir, exclude_tables=exclude_tables, probed=probed
    ).count


# ---------------------------------------------------------------- check (migrations vs schema.sql)


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """Replayed migrations against schema.sql (by the model and the dump oracle), plus problems found in the
    migration files."""

    host: str
    migrations: int
    problems: list[str]  # invalid names, duplicate versions, unparsable or mis-transactional files
    warnings: list[str]
    result: DiffResult | None  # None when the files were not replayed (validation failed)
    dump_differences: list[DumpDifference] | None = None  # replayed vs schema.sql by the normalized schema dumps

    @property
    def undescribed(self) -> list[DumpDifference]:
        """What only the dump comparison sees (the model did not report it)."""
        return unexplained(self.dump_differences or [], [c.name for c in self.result.changes] if self.result else [])

    @property
    def drift(self) -> bool:
        return bool(self.result and self.result.significant) or bool(self.undescribed)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.drift

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ok": self.ok,
            "migrations": self.migrations,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "drift": self.drift,
            "diff": self.result.to_dict() if self.result else None,
            "dump_oracle": oracle_summary(self.dump_differences, self.undescribed),
        }


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
                f"{label(path)}: not a migration file name, sync would ignore it ({NAMING_HINT})"
            )
            continue
        by_version.setdefault(parsed[1], []).append(path)
    migrations: list[Migration] = []
    for key in sorted(by_version):
        paths = by_version[key]
        if len(paths) > 1:
            problems.append(
                f"duplicate migration version {key}: {', '.join(p.name for p in paths)}; renumber all but one"
            )
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
    """The migrations as one psql script: each transactional file in its own BEGIN/COMMIT, statements mapped to
    file:line."""
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


def check_project(
    remote: Remote,
    migrations_dir: Path,
    schema_path: Path,
    *,
    cache_dir: Path | None = None,
    exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Replay all migrations into a scratch database and compare it with schema.sql's materialized state (from the
    desired-state cache, or built in the same session when the file is new to it), by the model and the dump oracle.

    One remote command (one psql session: server facts, replay, its catalog and dump; schema.sql too when cold),
    the drops in the background; a cache miss the facts reveal costs one more.  ``progress(done, total)``: scratch
    databases built so far, as the session runs.
    """
    migrations, problems, warnings = validate_migrations(migrations_dir)
    if problems:
        return CheckReport(remote.host.name, len(migrations), problems, warnings, None)
    schema_sql = read_sql(schema_path)
    source = label(schema_path)
    cold = not known_schema(cache_dir, schema_digest(schema_sql))
    contents = [replay_chunks(migrations), *([[Chunk(schema_sql, source)]] if cold else [])]
    step = DumpStep.for_remote(remote, exclude_tables)
    counted = (lambda done: progress(done, len(contents))) if progress is not None else None
    if progress is not None:
        progress(0, len(contents))
    with ScratchSet(
        remote,
        contents,
        query=desired_query(exclude_tables),
        dump=step,
        detached=True,
        preamble=(FACTS_SQL, PG_DUMP_VERSION),
        on_database=counted,
    ) as scratch:
        outputs = scratch.load()
    facts_json, pg_dump_version = scratch.preamble_outputs
    facts = ServerFacts.parse(facts_json, pg_dump_version)
    built = (introspection_document(outputs[1], source), scratch.dumps[1]) if cold else None
    desired = desired_state(remote, schema_sql, source, facts, exclude_tables, cache_dir, materialized=built)
    result = compare(read_catalog(outputs[0], "the replayed migrations"), desired.catalog)
    differences = compare_dumps(scratch.dumps[0], desired.dump, exclude_tables)
    return CheckReport(remote.host.name, len(migrations), problems, warnings, result, differences)
