"""The desired state: ``schema.sql`` as materialized on a server, kept in a local cache.

Comparing a live database with ``schema.sql`` needs the file's catalog and its
schema dump *as PostgreSQL builds them* (we never parse the file ourselves).
Materializing costs a scratch database, a load and a dump: seconds on a real
schema, on every ``inv diff``, every plan and every sync's closing drift check.
Yet the result depends only on:

- the text of ``schema.sql`` (sha256),
- the server: ``server_version_num``, the ``pg_dump`` that dumps (its version
  line), template0's encoding and locale (a scratch database is a copy of it),
  and the extensions the server can install (every available version and the
  default one ``CREATE EXTENSION`` picks),
- what is hidden from both oracles (``exclude_tables``, e.g. the ledger table),
- opsagent's own reading: the text of the introspection query and ``CACHE_FORMAT``
  (bumped when the dump normalization changes).

All of it goes into the cache key, so a hit is the same answer the server would
give today.  Not in the key: roles (a grant to a role the server lacks fails the
materialization; on a hit it shows as drift instead) and the extensions already
installed in the live database (they do not change what ``schema.sql`` builds
in a fresh database).  The server facts are read in the same remote command as
the live side, so a warm drift check is ONE remote command and a local
comparison (plus the fingerprint probe of ``schema.fingerprint``, which can spare
it).  Both oracles still run on every verdict: the cached dump is compared with a
fresh dump of the live database.

Files: ``<paths.state>/cache/desired-<schema digest>-<key>.json`` (mode 0600,
written to a temporary file then renamed, so a reader never sees half a file;
an unreadable, corrupt or mismatching file is a cache miss, never an error; the
newest ``KEEP`` files are kept).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..cachefile import prune_cache, write_cache_file
from ..errors import RemoteError
from ..remote.transport import Remote
from .catalog import Catalog, introspection_sql
from .facts import ServerFacts, schema_digest
from .oracle import Entry, entries, without_heavy_entries
from .scratch import DumpStep, LoadError, ScratchSet, dump_chunks, sql_chunks

CACHE_FORMAT = 1
KEEP = 24  # cache files kept (the newest); one per schema.sql version and server kind


def desired_query(exclude_tables: Sequence[str]) -> str:
    """The introspection query of the desired side: with dependencies,
    so one cached catalog serves diff, check and plan."""
    return introspection_sql(exclude_tables, dependencies=True)


def cache_key(digest: str, facts: ServerFacts, exclude_tables: Sequence[str]) -> str:
    material = {
        "format": CACHE_FORMAT,
        "schema": digest,
        "server": facts.document,
        "pg_dump": facts.pg_dump_version,
        "exclude_tables": sorted(exclude_tables),
        "query": hashlib.sha256(desired_query(exclude_tables).encode("utf-8")).hexdigest(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


@dataclasses.dataclass
class DesiredState:
    """The catalog document and the normalized schema dump of ``schema.sql`` materialized on a server."""

    source: str
    catalog_document: Mapping[str, Any]
    dump: str
    key: str = ""
    from_cache: bool = False
    _catalog: Catalog | None = dataclasses.field(default=None, repr=False)
    # the same structure after one dump-and-load (see ``reloaded``); None: not made yet
    reloaded_document: Mapping[str, Any] | None = None
    reloaded_dump: str | None = None
    # the dump entries left out of it (``oracle.without_heavy_entries``); empty: it is the whole structure
    reloaded_skipped: frozenset[str] = frozenset()

    _entries: dict[str, tuple[Entry, ...]] | None = dataclasses.field(default=None, repr=False)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.from_json(self.catalog_document)
        return self._catalog

    @property
    def entries(self) -> dict[str, tuple[Entry, ...]]:
        """The dump oracle's parse of ``dump`` (kept: it is the same on every comparison)."""
        if self._entries is None:
            self._entries = entries(self.dump)
        return self._entries

    def prepare(self, *, dependencies: bool) -> DesiredState:
        """Parse what a comparison needs now (e.g. in a thread, while the live side is being read);
        ``dependencies=False`` leaves pg_depend's edges out (only plans use them; they double the parse)."""
        if self._catalog is None:
            document = (
                self.catalog_document
                if dependencies
                else {k: v for k, v in self.catalog_document.items() if k != "depends"}
            )
            self._catalog = Catalog.from_json(document)
        self.entries  # noqa: B018
        return self


def _path(cache_dir: Path, digest: str, key: str) -> Path:
    return cache_dir / f"desired-{digest[:16]}-{key[:32]}.json"


def known_schema(cache_dir: Path | None, digest: str) -> bool:
    """Whether any cache file exists for this ``schema.sql`` text (for another server maybe):
    if not, it is surely cold."""
    if cache_dir is None:
        return False
    with contextlib.suppress(OSError):
        return any(cache_dir.glob(f"desired-{digest[:16]}-*.json"))
    return False


def load_cached(
    cache_dir: Path | None, digest: str, key: str, source: str, *, document: Any = None, touch: bool = True
) -> DesiredState | None:
    """The cached desired state, or None (absent, unreadable, corrupt or made for another key:
    a miss, never an error)."""
    if cache_dir is None:
        return None
    path = _path(cache_dir, digest, key)
    try:
        if document is None:
            with path.open("rb") as handle:
                document = json.load(handle)
        catalog, dump = document["catalog"], document["dump"]
        if (
            document.get("key") != key
            or document.get("format") != CACHE_FORMAT
            or not isinstance(catalog, dict)
            or not isinstance(dump, str)
        ):
            return None
        # a document the catalog cannot read is a miss too; the model built to find out is kept (not parsed twice)
        state = DesiredState(source, catalog, dump, key, True, Catalog.from_json(catalog))
        _read_reloaded(state, document)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if touch:
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: kept by the pruning
    return state


def _read_reloaded(state: DesiredState, document: Mapping[str, Any]) -> None:
    """The reloaded target kept beside the state: the whole one (``reloaded_*``, what every version wrote) or, when
    only that was made, the lighter one (``reloaded_partial``, which earlier versions do not read)."""
    whole, whole_dump = document.get("reloaded_catalog"), document.get("reloaded_dump")
    if isinstance(whole, dict) and isinstance(whole_dump, str):
        state.reloaded_document, state.reloaded_dump = whole, whole_dump
        return
    partial = document.get("reloaded_partial")
    if isinstance(partial, dict):
        catalog, dump, skipped = partial.get("catalog"), partial.get("dump"), partial.get("skipped")
        if isinstance(catalog, dict) and isinstance(dump, str) and isinstance(skipped, list) and skipped:
            state.reloaded_document, state.reloaded_dump = catalog, dump
            state.reloaded_skipped = frozenset(str(key) for key in skipped)


def _reloaded_fields(state: DesiredState) -> dict[str, Any]:
    if state.reloaded_dump is None:
        return {}
    if state.reloaded_skipped:
        return {
            "reloaded_partial": {
                "catalog": state.reloaded_document,
                "dump": state.reloaded_dump,
                "skipped": sorted(state.reloaded_skipped),
            }
        }
    return {"reloaded_catalog": state.reloaded_document, "reloaded_dump": state.reloaded_dump}


def newest(cache_dir: Path | None, digest: str, source: str, *, dependencies: bool) -> DesiredState | None:
    """The most recently used cache file for this ``schema.sql`` text, parsed and prepared (None: none usable).

    Read before the server facts are known (in a thread, while the live side is read): whether its key is the
    right one is decided afterwards (``desired_state(prefetched=...)``); usually there is one file per text."""
    if cache_dir is None:
        return None
    with contextlib.suppress(OSError):
        files = sorted(cache_dir.glob(f"desired-{digest[:16]}-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in files[:1]:
            key = path.stem.rsplit("-", 1)[-1]
            try:
                with path.open("rb") as handle:
                    document = json.load(handle)
                full_key = document.get("key")
                if not isinstance(full_key, str) or not full_key.startswith(key):
                    return None
                state = load_cached(cache_dir, digest, full_key, source, document=document, touch=False)
                return state.prepare(dependencies=dependencies) if state is not None else None
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return None
    return None


def store(cache_dir: Path | None, digest: str, state: DesiredState) -> Path | None:
    """Write the state atomically (0600); a cache that cannot be written is skipped silently (it is only a cache)."""
    if cache_dir is None:
        return None
    path = _path(cache_dir, digest, state.key)
    document = {
        "format": CACHE_FORMAT,
        "key": state.key,
        "source": state.source,
        "catalog": state.catalog_document,
        "dump": state.dump,
        **_reloaded_fields(state),
    }
    if not write_cache_file(cache_dir, path.name, document):
        return None
    prune_cache(cache_dir, "desired-*.json", KEEP)
    return path


def materialize(
    remote: Remote, sql: str, source: str, exclude_tables: Sequence[str], *, is_dump: bool = False
) -> tuple[dict[str, Any], str]:
    """Build ``sql`` in a one-session scratch database (catalog query and dump in the same session; the drop is
    left to the background): (catalog document, normalized dump).  ``is_dump``: ``sql`` is pg_dump's output (loaded
    in batched transactions, ``scratch.dump_chunks``)."""
    step = DumpStep.for_remote(remote, exclude_tables)
    chunks = dump_chunks(sql, source) if is_dump else sql_chunks(sql, source)
    with ScratchSet(remote, [chunks], query=desired_query(exclude_tables), dump=step, detached=True) as scratch:
        output = scratch.load()[0]
    return introspection_document(output, source), scratch.dumps[0]


def introspection_document(output: str, what: str) -> dict[str, Any]:
    """The introspection query's JSON document from psql's output; anything else is a RemoteError naming ``what``."""
    try:
        document = json.loads(output)
    except ValueError as exc:
        raise RemoteError(f"introspection of {what} returned no usable result ({exc})") from None
    if not isinstance(document, dict):
        raise RemoteError(f"introspection of {what} returned no usable result")
    return document


def desired_state(
    remote: Remote,
    sql: str,
    source: str,
    facts: ServerFacts,
    exclude_tables: Sequence[str],
    cache_dir: Path | None,
    *,
    materialized: tuple[dict[str, Any], str] | None = None,
    prefetched: DesiredState | None = None,
) -> DesiredState:
    """The desired state for ``facts``' server: from the cache (no remote command), else materialized once and stored.

    ``materialized``: the caller already built it (e.g. alongside reading the live side,
    when the cache was surely cold).
    ``prefetched``: ``newest()``'s guess, used when its key is the right one.
    """
    digest = schema_digest(sql)
    key = cache_key(digest, facts, exclude_tables)
    if prefetched is not None and prefetched.key == key and cache_dir is not None:
        with contextlib.suppress(OSError):
            os.utime(_path(cache_dir, digest, key))  # recently used: kept by the pruning
        return prefetched
    cached = load_cached(cache_dir, digest, key, source)
    if cached is not None:
        return cached
    document, dump = materialized or materialize(remote, sql, source, exclude_tables)
    state = DesiredState(source, document, dump, key)
    store(cache_dir, digest, state)
    return state


@dataclasses.dataclass(frozen=True)
class Reloaded:
    """The desired structure after one dump-and-load: its catalog, its normalized dump, and the keys of the dump
    entries left out of the load (empty: the whole structure)."""

    catalog: Catalog
    dump: str
    skipped: frozenset[str] = frozenset()


def _unneeded_path(cache_dir: Path, digest: str, key: str) -> Path:
    return cache_dir / f"reload-unneeded-{digest[:16]}-{key[:32]}.json"


def reload_unneeded(cache_dir: Path | None, digest: str, state: DesiredState) -> bool:
    """Whether a plan against this desired state found its rehearsal identical to it without the reloaded target
    (:func:`remember_reload_unneeded`): a hint that the next plan need not build that target before it knows it
    needs it.  Only a hint: a plan that does need it builds it then (``declarative.plan_against_sql``)."""
    if cache_dir is None or not state.key:
        return False
    with contextlib.suppress(OSError):
        return _unneeded_path(cache_dir, digest, state.key).exists()
    return False


def remember_reload_unneeded(cache_dir: Path | None, digest: str, state: DesiredState) -> None:
    """A plan's rehearsal matched this desired state by both oracles with no reloaded target: no expression of the
    objects it kept from the live side deparsed differently after a dump-and-load.  The next plan then builds the
    target only when a finding asks for it, instead of loading it beside the rehearsal on the chance (a 5,000-table
    schema: most of the schema loaded for nothing, on a server busy loading the rehearsal's copy)."""
    if cache_dir is None or not state.key:
        return
    if write_cache_file(cache_dir, _unneeded_path(cache_dir, digest, state.key).name, {"format": CACHE_FORMAT}):
        prune_cache(cache_dir, "reload-unneeded-*.json", KEEP)


def reloaded(
    remote: Remote,
    state: DesiredState,
    sql: str,
    exclude_tables: Sequence[str],
    cache_dir: Path | None,
    *,
    whole: bool = False,
    abandoned: threading.Event | None = None,
) -> Reloaded:
    """The desired structure after one dump-and-load (made once per cache key, kept in the cache file beside the
    state).

    A database restored from a dump deparses some expressions differently from one
    built from the original SQL (``ARRAY['a'::varchar]::text[]`` becomes
    ``ARRAY[('a'::varchar)::text]``).  A plan's rehearsal starts from the live
    database's *dump*, so it carries that deparse; comparing it with this form of
    the target tells the artifacts from real differences without loading both
    dumps again on every plan (what ``drift.confirm`` does).

    Unless ``whole`` is asked for, the load leaves out the heavy post-data entries (index builds, foreign keys,
    triggers: ``oracle.without_heavy_entries``), about half of a large schema's load; the caller asks again with
    ``whole`` when a finding to settle is in what was left out.  A lighter load that fails is made whole, unless
    ``abandoned`` is set: then nobody waits for it any more, and its load was stopped (``scratch.drop_active``).
    """
    if state.reloaded_document is None or state.reloaded_dump is None or (whole and state.reloaded_skipped):
        light, skipped = (state.dump, frozenset[str]()) if whole else without_heavy_entries(state.dump)
        if abandoned is not None and abandoned.is_set():
            raise RemoteError(f"the reloaded form of {state.source} was not needed: not made")
        try:
            document, dump = materialize(remote, light, f"{state.source} (dump)", exclude_tables, is_dump=True)
        except LoadError:
            if not skipped or (abandoned is not None and abandoned.is_set()):
                raise
            document, dump = materialize(remote, state.dump, f"{state.source} (dump)", exclude_tables, is_dump=True)
            skipped = frozenset()
        state.reloaded_document, state.reloaded_dump, state.reloaded_skipped = document, dump, skipped
        if state.key:
            store(cache_dir, schema_digest(sql), state)
    try:
        return Reloaded(Catalog.from_json(state.reloaded_document), state.reloaded_dump, state.reloaded_skipped)
    except (ValueError, TypeError, AttributeError) as exc:
        raise RemoteError(f"introspection of {state.source} (dump) returned no usable result ({exc})") from None
