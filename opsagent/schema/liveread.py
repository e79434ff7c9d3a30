"""The live read's one remote command: psql (facts, catalog, fingerprint) and pg_dump at once (``live_read.sh``).

Kept apart from ``drift`` (which loads the catalog model and both oracles) so that a sync can start the command of
its closing drift check early, held at a gate (``Remote.hold``), without loading any of that: the exec, the login
shell and sudo are then paid while the migrations run, and the check's read starts the moment they are done.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import resources
from ..remote.markers import Markers
from ..remote.transport import CommandResult, Remote
from .exclusions import dump_exclude_args

# The live read's one remote command when the dump oracle is wanted (issue 14): pg_dump and the psql session run
# AT ONCE on the server instead of one after the other (psql's ``\\!`` would wait for pg_dump).  Fixed text: everything
# variable arrives as positional parameters ($1 the marker line, from remote/markers.py, $2 the conninfo-quoted
# database, $3/$4 pg_host and pg_port (may be empty), then pg_dump's own arguments: the ledger's --exclude-table), never
# inside the script.
# pg_dump streams its gzip-compressed dump to the channel in the background; psql (stdin: the facts, the catalog
# query, the extra query) runs in the foreground into a variable; the marker and psql's output follow the dump only
# when both succeeded.  Exit 3: pg_dump failed; 4: psql failed.
LIVE_READ_SH = resources.script("live_read")  # psql and pg_dump at once, one command


def live_read_argv(remote: Remote, database: str, token: str, exclude_tables: Sequence[str]) -> list[str]:
    """``sh -c LIVE_READ_SH``: the live catalog session and the dump oracle's pg_dump in one command, in parallel."""
    host, port = remote.host.pg_host or "", str(remote.host.pg_port or "")
    return [
        "sh",
        "-c",
        LIVE_READ_SH,
        "opsagent-live",
        Markers(token).line("live"),
        remote.db_args(database)[1],
        host,
        port,
        *dump_exclude_args(exclude_tables),
    ]


def _held_key(database: str) -> str:
    return f"live-read {database}"


def hold_live_read(remote: Remote, database: str, exclude_tables: Sequence[str]) -> None:
    """Start the live read of ``database`` now, held until :func:`run_live_read` asks for it with the same
    exclusions (sync: before the migrations, for the closing drift check).  Unused, it exits having run nothing."""
    mark = Markers()
    remote.hold(_held_key(database), live_read_argv(remote, database, mark.token, exclude_tables), mark.token)


def live_read_markers(remote: Remote, database: str) -> Markers:
    """The markers to build the live read's script with: those of the held command when one waits, else new."""
    token = remote.held_tag(_held_key(database))
    return Markers(token) if token else Markers()


def run_live_read(
    remote: Remote, database: str, script: str, exclude_tables: Sequence[str], mark: Markers
) -> CommandResult:
    """The live read (``script`` on psql's stdin): through the held command when it waits with this very argv,
    else as a new command."""
    argv = live_read_argv(remote, database, mark.token, exclude_tables)
    return remote.run_held(_held_key(database), argv, stdin=script, check=False)


def start_live_read(remote: Remote, database: str, script: str, exclude_tables: Sequence[str], mark: Markers) -> bool:
    """Release the held live read now with ``script``, for :func:`run_live_read` to read later with the same script
    (a sync's closing check: the read runs while the sync's session is still probing).  False when none waits."""
    argv = live_read_argv(remote, database, mark.token, exclude_tables)
    return remote.start_held(_held_key(database), argv, script)
