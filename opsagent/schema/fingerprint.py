"""Verdicts remembered by fingerprint: "no drift" without reading the whole structure again, when nothing changed.

A full drift check reads the live catalog and the live ``pg_dump -s`` and compares each with
the desired side: two oracles.  On a deploy with nothing to apply, and on every ``inv diff`` of
an untouched host, it finds the same thing again at the price of a schema dump.  What makes
that answer repeatable is cheap to ask the server: which catalog row versions the database has
(``opsagent/sql/fingerprint.sql``; any committed DDL writes new ones, and a row version never
comes back).  So when both oracles found a database identical to its desired side, opsagent
remembers that verdict under a key made of everything the verdict depends on:

- the fingerprint: cluster (system identifier), database oid, the catalog row versions, the
  index state flags;
- the desired side: what the desired-state cache is keyed by (the text of ``schema.sql``, the
  server's version, template0, available extensions and ``pg_dump``), or the other database's
  fingerprint; what is hidden from the oracles;
- opsagent's own reading: the text of the model and oracle modules and the introspection SQL
  (an upgrade that sees more forgets every verdict).

A verdict is stored only when it was a full, clean comparison by both oracles (no finding at
all, not even a cosmetic one) and the fingerprint read before the comparison equals the one
read after it (nothing committed in between).  On the next check an equal key means the same
catalog rows facing the same desired side, judged by the same code: the remembered verdict is
the verdict, and the report says when it was reached.  Anything else (a changed row, a
temporary table, another server) is a miss and the full comparison runs; a wrong hit would need
a cluster to reuse a transaction id at the same tuple position after wraparound.  ``--recheck``
ignores what is remembered.

Files: ``<cache>/verified-<key>.json`` (0600, written to a temporary file then renamed; the
newest ``KEEP`` are kept; an unreadable file is a miss).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import resources
from ..cachefile import prune_cache, write_cache_file
from ..remote.markers import Markers
from .facts import FACTS_SQL, PG_DUMP_VERSION, ServerFacts, schema_digest

if TYPE_CHECKING:
    from ..inventory import HostConfig
    from ..remote.transport import Remote

FINGERPRINT_SQL = resources.sql("fingerprint")
VERDICT_FORMAT = 1
KEEP = 64
KEEP_CATALOGS = 8  # live catalogs kept by fingerprint (a plan's edit-plan-edit loop needs the newest one)


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """Which catalog rows a database has (see ``opsagent/sql/fingerprint.sql``), on which host.

    ``host`` is the inventory host it was read from: two copies of one data directory (a cold copy made into
    staging) share the system identifier, the timeline and the database oid, and after they part, equal transaction
    ids at equal tuple positions can hold different rows.  A verdict is only ever recalled for the host it was
    reached on."""

    host: str
    system: str
    timeline: str
    database: str
    rows: str
    indexes: str

    @classmethod
    def parse(cls, text: str, host: str) -> Fingerprint | None:
        """The query's JSON document; None when it is not one (then nothing is remembered or recalled)."""
        try:
            document = json.loads(text)
            values = [document[k] for k in ("system", "timeline", "database", "rows", "indexes")]
        except (ValueError, KeyError, TypeError):
            return None
        if not host or not all(isinstance(v, str) and v for v in values):
            return None
        return cls(host, *values)


@dataclasses.dataclass(frozen=True)
class Probe:
    """One short psql session: the server facts (the desired-state cache key) and the fingerprint."""

    facts: ServerFacts
    fingerprint: Fingerprint | None
    extra: str = ""  # the output of the probe's ``extra_sql`` (e.g. a plan's table sizes)


def fingerprint_section(mark: Markers) -> str:
    """The fingerprint as one more section of a psql script read with ``mark`` (kind ``fingerprint``); an error in it
    leaves the section empty instead of failing the session (psql goes on: ON_ERROR_STOP is off around it)."""
    return f"{mark.psql('fingerprint')}\n\\set ON_ERROR_STOP 0\n{FINGERPRINT_SQL};\n\\set ON_ERROR_STOP 1"


def probe_script(mark: Markers) -> str:
    """The probe's psql text: sections ``fingerprint``, ``facts`` and ``pg-dump`` (for any session read with
    ``mark``, e.g. the sync's own once it is done: then the closing check costs no command of its own).  The
    fingerprint comes first: a read started once its section is done (the ``facts`` marker) is bracketed by it."""
    parts = [fingerprint_section(mark), mark.psql("facts"), FACTS_SQL, mark.psql("pg-dump"), PG_DUMP_VERSION, ""]
    # the names in the queries are pg_catalog's whatever the session did before (e.g. the sync's migrations)
    return "SET search_path = pg_catalog;\n" + "\n".join(parts)


def probe_from(mark: Markers, output: str, host: str) -> Probe:
    """A probe of ``host`` from the output of ``probe_script(mark)`` (and its ``extra`` section, if any)."""
    sections = mark.by_kind(output)
    facts = ServerFacts.parse(sections.get("facts", ""), sections.get("pg-dump", ""))
    return Probe(facts, Fingerprint.parse(sections.get("fingerprint", ""), host), sections.get("extra", ""))


def probe(remote: Remote, database: str, extra_sql: str | None = None) -> Probe:
    """The facts and the fingerprint of ``database`` (and ``extra_sql``'s output): one remote command, no schema
    dump.  A fingerprint the server cannot give (e.g. ``pg_control_system()`` refused) is None: nothing is
    recalled."""
    mark = Markers()
    script = probe_script(mark)
    if extra_sql is not None:
        script += f"{mark.psql('extra')}\n{extra_sql.rstrip().rstrip(';')};\n"
    text = remote.psql(script, database, extra=["-A", "-t"], knowing_pg_dump=True).text
    return probe_from(mark, text, remote.host.name)


# the second database of a pair probe: psql reconnects with libpq's defaults, which the session's environment sets to
# the other database (and the cluster's socket and port when the inventory names them): no name is ever psql text
_RECONNECT = "\\connect -reuse-previous=off\nSET search_path = pg_catalog;\n"


def pair_probe_argv(remote: Remote, other: HostConfig) -> list[str]:
    """The argv of :func:`probe_pair` on ``remote`` for ``other``'s database (the early connection holds it)."""
    env = {"PGDATABASE": other.database}
    if other.pg_host:
        env["PGHOST"] = other.pg_host
    if other.pg_port:
        env["PGPORT"] = str(other.pg_port)
    return remote.psql_argv(extra=["-A", "-t"], knowing_pg_dump=True, env=env)


def probe_pair(remote: Remote, other: Remote) -> tuple[Probe, Probe]:
    """The probes of two databases of one server (``other`` runs over ``remote``'s connection: see
    ``Remote.beside``) in one psql session that reconnects: one login shell, sudo and psql start on the server
    instead of two (0.1 s on a server whose login shell reads a ``.bashrc``).  The server facts are the server's, read
    once.  When the session fails (the other database is missing, refused), each is probed on its own, so that the
    error is the one that host's own probe gives; so too when the session was not where it should have been (its
    ``current_database()`` is not the other host's database: a fingerprint keys verdicts, never read from elsewhere)."""
    from ..errors import CommandFailed

    mark, theirs = Markers(), Markers()
    where_am_i = f"{theirs.psql('database')}\nSELECT current_database();\n"
    script = f"{probe_script(mark)}\n{mark.psql('end')}\n{_RECONNECT}{where_am_i}{fingerprint_section(theirs)}\n"
    try:
        text = remote.run(pair_probe_argv(remote, other.host), stdin=script).text
    except CommandFailed:
        text = None
    sections = theirs.by_kind(text or "")
    if text is None or sections.get("database") != other.host.database:
        return probe(remote, remote.host.database), probe(other, other.host.database)
    mine = probe_from(mark, text, remote.host.name)
    return mine, Probe(mine.facts, Fingerprint.parse(sections.get("fingerprint", ""), other.host.name))


@functools.cache
def model_digest() -> str:
    """The code a verdict was reached with: every module of the schema package (model, oracles, plans, this one)
    and every SQL file opsagent sends (introspection, fingerprint).  Any change forgets every verdict."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    sql_dir = here.parent / resources.SQL
    for path in [*sorted(here.glob("*.py")), *sorted(sql_dir.glob("*.sql"))]:
        with contextlib.suppress(OSError):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def verdict_key(desired: str, fingerprints: Sequence[Fingerprint], exclude_tables: Sequence[str] = ()) -> str:
    """The key of a remembered verdict: the desired side (a cache key, or another fingerprint), the live
    fingerprint(s), what is hidden and the code that judged."""
    material: Mapping[str, Any] = {
        "format": VERDICT_FORMAT,
        "desired": desired,
        "fingerprints": [dataclasses.asdict(f) for f in fingerprints],
        "exclude_tables": sorted(exclude_tables),
        "model": model_digest(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def schema_verdict_key(sql: str, facts: ServerFacts, fingerprint: Fingerprint, exclude_tables: Sequence[str]) -> str:
    """The key of "this live catalog equals what ``sql`` builds on this server": the file's text and the server
    facts (what the desired-state cache is keyed by), the fingerprint, what is hidden, the code that judged."""
    desired = json.dumps(
        {"schema": schema_digest(sql), "server": facts.document, "pg_dump": facts.pg_dump_version}, sort_keys=True
    )
    return verdict_key(desired, [fingerprint], exclude_tables)


def recall_schema(cache_dir: Path | None, schema: Path, seen: Probe, exclude_tables: Sequence[str]) -> str | None:
    """When both oracles found the probed catalog equal to the ``schema`` file (None: not remembered, or the file
    cannot be read: the full comparison then says why)."""
    try:
        sql = schema.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if seen.fingerprint is None:
        return None
    return recall(cache_dir, schema_verdict_key(sql, seen.facts, seen.fingerprint, exclude_tables))


def hosts_verdict_key(
    live: Fingerprint, other: Fingerprint, live_hidden: Sequence[str], other_hidden: Sequence[str]
) -> str:
    """The key of "these two live catalogs are identical": both fingerprints, what each side hides, the code."""
    sides = json.dumps([list(live_hidden), list(other_hidden)])
    return verdict_key(f"hosts {sides}", [live, other], [*live_hidden, *other_hidden])


def recall_hosts(
    cache_dir: Path | None,
    seen: tuple[Fingerprint | None, Fingerprint | None],
    live_hidden: Sequence[str],
    other_hidden: Sequence[str],
) -> str | None:
    """When both oracles found the two catalogs identical (None: not remembered)."""
    live, other = seen
    if live is None or other is None:
        return None
    return recall(cache_dir, hosts_verdict_key(live, other, live_hidden, other_hidden))


def plan_verdict_key(
    sql: str, facts: ServerFacts, fingerprint: Fingerprint, exclude: Sequence[str], script: str
) -> str:
    """The key of "this plan script, rehearsed on a copy of this live catalog, leaves no difference from ``sql``"."""
    script_digest = hashlib.sha256(script.encode("utf-8")).hexdigest()
    return verdict_key(f"plan {script_digest} {schema_verdict_key(sql, facts, fingerprint, exclude)}", [fingerprint])


# ---------------------------------------------------------------- the live catalog, kept by fingerprint


def _catalog_key(fingerprint: Fingerprint, exclude_tables: Sequence[str], query: str) -> str:
    return verdict_key(f"live catalog {hashlib.sha256(query.encode()).hexdigest()}", [fingerprint], exclude_tables)


def load_catalog(
    cache_dir: Path | None, fingerprint: Fingerprint, exclude_tables: Sequence[str], query: str
) -> dict[str, Any] | None:
    """The introspection document read from the very catalog rows ``fingerprint`` names (with ``query``), or None.
    The same rows read by the same query give the same document: a plan made again against an unchanged live
    database reads it from here instead of over the connection."""
    if cache_dir is None:
        return None
    document = _load_keyed(cache_dir, "live", _catalog_key(fingerprint, exclude_tables, query))
    catalog = document.get("catalog") if document is not None else None
    return catalog if isinstance(catalog, dict) else None


def store_catalog(
    cache_dir: Path | None,
    fingerprint: Fingerprint,
    exclude_tables: Sequence[str],
    query: str,
    catalog: Mapping[str, Any],
) -> None:
    """Keep an introspection document under its fingerprint (0600, atomically; the newest ``KEEP_CATALOGS``)."""
    if cache_dir is not None:
        key = _catalog_key(fingerprint, exclude_tables, query)
        _store_keyed(cache_dir, "live", key, {"catalog": catalog}, KEEP_CATALOGS)


# ---------------------------------------------------------------- the live side (catalog and dump), kept by fingerprint

KEEP_SIDES = 4  # a diff of two hosts reads two; an edit-diff-edit loop needs the newest


def side_key(seen: Probe, exclude_tables: Sequence[str], query: str) -> str | None:
    """The key of a live side read with ``query``: the catalog rows (the fingerprint), what is hidden, the server
    and the dumping binary (a minor upgrade moves no catalog row but may print a definition differently), the code
    that read and normalized it.  None: the probe gave no fingerprint."""
    if seen.fingerprint is None:
        return None
    server = json.dumps({"server": seen.facts.document, "pg_dump": seen.facts.pg_dump_version}, sort_keys=True)
    digest = hashlib.sha256(query.encode("utf-8")).hexdigest()
    return verdict_key(f"live side {digest} {server}", [seen.fingerprint], exclude_tables)


def load_side(cache_dir: Path | None, key: str | None) -> tuple[dict[str, Any], str] | None:
    """The introspection document and the normalized dump read from the very catalog rows ``key`` names, or None.
    Both oracles read those rows again would find the same: a diff of an unchanged database (drift and all) reads
    them from here instead of over the connection; ``--recheck`` reads them again."""
    document = _load_keyed(cache_dir, "side", key)
    if document is None:
        return None
    catalog, dump = document.get("catalog"), document.get("dump")
    return (catalog, dump) if isinstance(catalog, dict) and isinstance(dump, str) else None


def store_side(cache_dir: Path | None, key: str | None, catalog: Mapping[str, Any], dump: str) -> None:
    """Keep a live side under ``key`` (0600, atomically; the newest ``KEEP_SIDES``): only a side whose fingerprint
    read after it equals the one its key was made from (nothing committed in between), the caller's part."""
    _store_keyed(cache_dir, "side", key, {"catalog": catalog, "dump": dump}, KEEP_SIDES)


# ---------------------------------------------------------------- the files, one per key


def _keyed_path(cache_dir: Path, kind: str, key: str) -> Path:
    return cache_dir / f"{kind}-{key[:40]}.json"


def _load_keyed(cache_dir: Path | None, kind: str, key: str | None) -> dict[str, Any] | None:
    """The document of ``<kind>-<key>.json`` when it is this very key's, in this format; a missing, cut or foreign
    file is a miss, never an error."""
    if cache_dir is None or key is None:
        return None
    try:
        with _keyed_path(cache_dir, kind, key).open("rb") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("key") != key or document.get("format") != VERDICT_FORMAT:
        return None
    return document


def _store_keyed(cache_dir: Path | None, kind: str, key: str | None, fields: Mapping[str, Any], keep: int) -> bool:
    """Write ``<kind>-<key>.json`` (0600, atomically) and keep the newest ``keep`` of its kind; False when it could
    not be written (the next run reads the server again)."""
    if cache_dir is None or key is None:
        return False
    document = {"format": VERDICT_FORMAT, "key": key, **fields}
    if not write_cache_file(cache_dir, _keyed_path(cache_dir, kind, key).name, document):
        return False
    prune_cache(cache_dir, f"{kind}-*.json", keep)
    return True


def recall(cache_dir: Path | None, key: str) -> str | None:
    """When both oracles found this key's sides identical (an ISO time, UTC), or None."""
    document = _load_keyed(cache_dir, "verified", key)
    at = document.get("verified_at") if document is not None else None
    if cache_dir is None or not isinstance(at, str):
        return None
    with contextlib.suppress(OSError):
        os.utime(_keyed_path(cache_dir, "verified", key))  # recently used: kept by the pruning
    return at


def remember(cache_dir: Path | None, key: str, live: str, desired: str) -> str | None:
    """Store a clean verdict of both oracles (0600, atomically); returns its time.  A cache that cannot be
    written is skipped: the next check is a full one."""
    at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    fields = {"verified_at": at, "live": live, "desired": desired}
    return at if _store_keyed(cache_dir, "verified", key, fields, KEEP) else None
