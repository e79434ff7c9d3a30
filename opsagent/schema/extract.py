"""``inv extract``: a normalized ``pg_dump --schema-only`` snapshot plus catalog statistics.

One remote command does both: a fixed ``sh`` script starts pg_dump (streaming to
the channel) and, alongside it, psql computes the statistics (object counts, the
same filters as the catalog model, nothing deparsed); after pg_dump ends, a marker
carrying a random token and the statistics follow the dump.  So an extract costs
one SSH command and about one ``pg_dump -s``.

The dump travels gzip-compressed (pg_dump's own ``-Z``: the same gzip stream as
piping through ``gzip``, without needing ``pipefail`` on the server) and is
normalized so that two extracts of an unchanged database are byte-identical:
the version header, the session ``SET`` preamble and the random ``\\restrict``
key change on every run and carry no schema information.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import RemoteError, UsageError
from ..remote.markers import Markers, new_token
from ..remote.transport import Remote
from .exclusions import DEFAULT_EXCLUDED_TABLES

_PREAMBLE_NOISE = re.compile(
    r"^(SET [a-z_]+ = .*;"
    r"|SELECT pg_catalog\.set_config\('search_path', '', false\);"
    r"|-- (Dumped from database version|Dumped by pg_dump version|Started on|Completed on) .*)$"
)
_RESTRICT = re.compile(r"^\\(un)?restrict [A-Za-z0-9]+$")


@dataclasses.dataclass(frozen=True)
class ExtractResult:
    """A normalized schema dump and what the catalog says it contains."""

    host: str
    database: str
    dump: str
    stats: dict[str, int]  # ``Catalog.stats()`` of the database (the ledger left out), counted by the server

    @property
    def size(self) -> int:
        return len(self.dump.encode("utf-8"))

    def to_dict(self, path: Path | None = None) -> dict[str, Any]:
        return {
            "host": self.host,
            "database": self.database,
            "path": str(path) if path else None,
            "bytes": self.size,
            "lines": self.dump.count("\n"),
            "stats": dict(self.stats),
        }


# ---------------------------------------------------------------- normalization (pure)


def _is_preamble(line: str) -> bool:
    return not line.strip() or line.startswith("--") or bool(_PREAMBLE_NOISE.match(line)) or bool(_RESTRICT.match(line))


def normalize_dump(text: str) -> str:
    """Drop what changes between two dumps of the same schema; keep everything else verbatim.

    Only the preamble (comments, blank lines, session SETs before the first
    statement) is rewritten; object definitions are never touched, since a
    function body may contain lines that look like noise.  pg_dump's
    ``\\restrict`` guard is kept, keyed by a hash of the content so it is stable
    and still unguessable for whoever named the objects.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    had_restrict = any(_RESTRICT.match(line) for line in lines)
    index = 0
    preamble: list[str] = []
    while index < len(lines) and _is_preamble(lines[index]):
        line = lines[index]
        noise = bool(_PREAMBLE_NOISE.match(line) or _RESTRICT.match(line))
        repeated_blank = not line.strip() and (not preamble or not preamble[-1])
        if not noise and not repeated_blank:
            preamble.append(line.rstrip())
        index += 1
    body = [line for line in lines[index:] if not _RESTRICT.match(line)]
    while body and not body[-1].strip():
        body.pop()
    while preamble and not preamble[-1].strip():
        preamble.pop()
    if not body:  # an empty database: only comments
        content = "\n".join(preamble) + "\n"
        return _with_restrict(content, had_restrict)
    content = "\n".join([*preamble, "", *body]) + "\n"
    return _with_restrict(content, had_restrict)


def _with_restrict(content: str, had_restrict: bool) -> str:
    if not had_restrict:
        return content
    key = hashlib.sha256(content.encode("utf-8")).hexdigest()
    return f"\\restrict {key}\n\n{content}\n\\unrestrict {key}\n"


def strip_restrict(text: str) -> str:
    """The dump without its ``\\restrict`` guard lines (for text diffs)."""
    return "\n".join(line for line in text.split("\n") if not _RESTRICT.match(line))


# ---------------------------------------------------------------- remote


def pg_dump_argv(remote: Remote, database: str, *, compress: bool = True, no_owner: bool = False) -> list[str]:
    """``pg_dump --schema-only`` of one database, gzip-compressed on the server."""
    argv = ["pg_dump", "--schema-only", *remote.pg_args(), *remote.db_args(database)]
    if no_owner:
        argv += ["--no-owner", "--no-privileges"]
    if compress:
        argv += ["-Z", "1"]
    return argv


def gunzip(data: bytes, host: str) -> str:
    """Decompress pg_dump's gzip stream; a truncated stream is an error, not a short schema."""
    try:
        inflater = zlib.decompressobj(wbits=31)
        raw = inflater.decompress(data) + inflater.flush()
    except zlib.error as exc:
        raise RemoteError(f"{host}: schema dump arrived corrupted ({exc})") from None
    if data and not inflater.eof:
        raise RemoteError(f"{host}: schema dump arrived truncated")
    return raw.decode("utf-8")


def dump_schema(remote: Remote, database: str | None = None, *, no_owner: bool = False) -> str:
    """The normalized schema-only dump of ``database`` (one remote command)."""
    db = database or remote.host.database
    result = remote.run(pg_dump_argv(remote, db, no_owner=no_owner), check=False)
    if not result.ok:
        raise remote.failure(["pg_dump"], result)
    return normalize_dump(gunzip(result.stdout, remote.host.name))


# The one remote command of an extract.  Fixed text: everything variable arrives as positional parameters
# ($1 the marker line, from remote/markers.py, $2 the conninfo-quoted database, then pg_host/pg_port arguments), never
# inside the script.
# pg_dump streams to the channel in the background while psql (stdin: the statistics query) runs in the foreground;
# the marker and the statistics are printed only when both succeeded.  Exit 3: pg_dump failed; 4: psql failed.
_EXTRACT_SH = """m=$1; d=$2; shift 2
pg_dump --schema-only -Z 1 "$@" -d "$d" &
p=$!
s=$(psql -X -q -A -t -v ON_ERROR_STOP=1 "$@" -d "$d") || { kill "$p" 2>/dev/null; wait "$p"; exit 4; }
wait "$p" || exit 3
printf '\\n%s\\n%s\\n' "$m" "$s"
"""


def extract_argv(remote: Remote, database: str, token: str) -> list[str]:
    """``sh -c SCRIPT``: pg_dump and the statistics query in one server-side invocation (see ``_EXTRACT_SH``)."""
    marker = Markers(token).line("extract")
    return ["sh", "-c", _EXTRACT_SH, "opsagent-extract", marker, remote.db_args(database)[1], *remote.pg_args()]


_HELD_KEY = "extract"


def hold_extract(remote: Remote, exclude_tables: Sequence[str], *, ahead: bool = False) -> None:
    """Start the extract of the host's database now, for :func:`extract` with these ``exclude_tables`` (the early
    connection, while the CLI loads): held at its gate (unused, it exits having run nothing), or ``ahead``: already
    running (read-only; for a plain ``extract --host H`` command line), its output waiting in the channel."""
    from .introspection import stats_sql

    token = new_token()
    argv = extract_argv(remote, remote.host.database, token)
    if ahead:
        remote.start_ahead(_HELD_KEY, argv, stats_sql(exclude_tables), token)
    else:
        remote.hold(_HELD_KEY, argv, token)


def split_extract_output(data: bytes, token: str, host: str) -> tuple[bytes, dict[str, int]]:
    """(the gzip-compressed dump, the statistics) from the command's stdout; the marker must be there."""
    split = Markers(token).split_tail(data, "extract")
    if split is None:
        raise RemoteError(f"{host}: the extract ended without its statistics (output cut short)")
    dump, tail = split
    try:
        stats = json.loads(tail.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RemoteError(f"{host}: unreadable statistics from the extract ({exc})") from None
    if not isinstance(stats, dict) or not all(isinstance(v, int) for v in stats.values()):
        raise RemoteError(f"{host}: unexpected statistics from the extract")
    return dump, {str(k): int(v) for k, v in stats.items()}


def extract(
    remote: Remote, database: str | None = None, exclude_tables: Sequence[str] = DEFAULT_EXCLUDED_TABLES
) -> ExtractResult:
    """Dump the host's database and count its objects in ONE remote command (``exclude_tables``: the ledger,
    left out of the statistics; the snapshot itself is pg_dump's, complete)."""
    from .introspection import stats_sql

    db = database or remote.host.database
    token = remote.held_tag(_HELD_KEY) or new_token()
    result = remote.run_held(_HELD_KEY, extract_argv(remote, db, token), stdin=stats_sql(exclude_tables), check=False)
    if not result.ok:
        raise remote.failure(["psql" if result.exit_status == 4 else "pg_dump"], result)
    compressed, stats = split_extract_output(result.stdout, token, remote.host.name)
    return ExtractResult(remote.host.name, db, normalize_dump(gunzip(compressed, remote.host.name)), stats)


def default_snapshot_path(snapshots: Path, host: str) -> Path:
    """``sql/snapshots/<host>/schema.sql``."""
    return snapshots / host / "schema.sql"


def write_snapshot(result: ExtractResult, path: Path) -> Path:
    """Write the dump atomically (a reader never sees half a snapshot)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(result.dump, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write snapshot: {exc.strerror or exc}") from None
    return path
