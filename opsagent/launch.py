"""The ``opsagent`` console script (and ``python -m opsagent``): the early connection, then the CLI.

A one-host task loads the CLI (Invoke, Rich, its modules: about 0.15 s after the transport), then connects, then
waits for its first command to start on the server (the login user's shell start-up and sudo: 0.1-0.3 s on this
project's machines).  Neither wait depends on the CLI, so this light module reads the task and its ``--host`` (and
``--against-host``) from the command line, starts opening those connections (:mod:`opsagent.remote.early`, one
thread each), which then hold the command the task starts first, and loads the CLI meanwhile: the handshake and the
server's start of that command run while the client imports (a no-op sync, A/B of 12 runs each: median 0.667 s when
the CLI loaded only after the handshake, 0.546 s overlapped).  Not for a plain ``extract``, whose one command is
started at once instead of held: its dump is the longest path, so its handshake gets the process to itself (sharing
it with the CLI's imports delayed the dump's start by about 0.1 s).  The task later takes the connection through
``open_remote`` as if it had opened it.  ``tasks.py`` does the same for ``inv``, once Invoke has loaded it.

The command line is only read here, never judged: anything unusual (a core option before the task, ``--help``,
an offline ``--sql``, a group or a list of hosts, ``--accept-new-host-key``) opens nothing early, and Invoke still
parses and refuses it as before (an early connection left unclaimed is closed at exit; its held command never
runs).
``OPSAGENT_EARLY_CONNECT=0`` turns it off.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from .interrupts import keep_interrupts

if TYPE_CHECKING:
    from .inventory import HostConfig
    from .remote.transport import Remote


def _session(remote: Remote) -> None:
    argv = remote.psql_argv(extra=["-A", "-t", "-f", "-"], knowing_pg_dump=True)  # the sync's session
    remote.hold_next(argv, reads_stdin_first=True)


def _query(remote: Remote) -> None:
    # Remote.query_json/psql -A -t: a ledger read
    remote.hold_next(remote.psql_argv(extra=["-A", "-t"]), reads_stdin_first=True)


def _probe(remote: Remote) -> None:
    # schema.fingerprint.probe: the server facts and the fingerprint
    remote.hold_next(remote.psql_argv(extra=["-A", "-t"], knowing_pg_dump=True), reads_stdin_first=True)


def _probe_pair(remote: Remote, other: HostConfig) -> None:
    # schema.fingerprint.probe_pair: diff --against-host between two databases of one server
    from .schema.fingerprint import pair_probe_argv

    remote.hold_next(pair_probe_argv(remote, other), reads_stdin_first=True)


def _extract(remote: Remote, ahead: bool = False) -> None:
    from .schema.exclusions import ledger_exclusions
    from .schema.extract import hold_extract

    hold_extract(remote, ledger_exclusions(remote.host), ahead=ahead)  # the statistics hide this host's ledger


def _extract_ahead(remote: Remote) -> None:
    _extract(remote, ahead=True)


# the tasks that connect first thing, and what each holds on its host for the command it starts first (None: not
# known in advance): the sync's session; the ledger read of status; the fingerprint probe that diff and plan start
# with; extract's one command
EARLY_TASKS: dict[str, Callable[[Remote], None] | None] = {
    "sync": _session,
    "status": _query,
    "history": _query,
    "diff": _probe,
    "plan": _probe,
    "extract": _extract,
    "lint": None,
    "tables": None,
    "describe": None,
}
# ... and for --host and --against-host naming two databases of one server, on their one connection (plan's first
# command against a host is not a probe: nothing is held)
EARLY_PAIRS: dict[str, Callable[[Remote, HostConfig], None]] = {"diff": _probe_pair}
_HOST_FLAGS = ("--host", "--against-host")  # each names one host to connect to
_NOT_EARLY = ("--help", "-h", "--sql", "--from-version", "--accept-new-host-key", "--list", "-l")


def early_hosts(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """``(task, host specs)`` when the command line is one task of :data:`EARLY_TASKS` with one ``--host`` (and at
    most one ``--against-host``), each naming one host; else None."""
    words = list(argv[1:])
    if not words or words[0] not in EARLY_TASKS:
        return None
    specs: dict[str, list[str]] = {flag: [] for flag in _HOST_FLAGS}
    for index, word in enumerate(words[1:], start=1):
        name, equals, value = word.partition("=")
        if name in _NOT_EARLY:
            return None
        if name in specs:
            if not equals:
                value = words[index + 1] if index + 1 < len(words) else ""
            specs[name].append(value)
    named = [value for values in specs.values() for value in values]
    if len(specs["--host"]) != 1 or len(specs["--against-host"]) > 1:
        return None
    if any(not value or value.startswith("-") or "," in value for value in named):
        return None
    return words[0], named  # --host first


# a plain extract command line: its one read-only command (pg_dump -s and the statistics) is started at once instead
# of held, so the dump runs while the CLI loads; any other flag (even a mistyped one) only holds it at the gate
_PLAIN_EXTRACT = {"--host": True, "--out": True, "--json": False}  # flag: takes a value


def _plain(argv: Sequence[str], flags: dict[str, bool]) -> bool:
    """Every word after the task is one of ``flags`` (with its value), each at most once."""
    words, seen = list(argv[2:]), set()
    while words:
        name, equals, _ = words.pop(0).partition("=")
        if name not in flags or name in seen:
            return False
        seen.add(name)
        if flags[name] and not equals and (not words or words.pop(0).startswith("-")):
            return False
    return True


def is_our_command_line(argv: Sequence[str]) -> bool:
    """True when this process is ``inv``/``opsagent``/``python -m opsagent`` (not a test, not an import)."""
    if not argv:
        return False
    first = argv[0].replace("\\", "/")
    return first.rsplit("/", 1)[-1] in ("inv", "invoke", "opsagent") or first.endswith("opsagent/__main__.py")


def _import_paramiko_alone() -> None:
    """Import Paramiko without Invoke: its ssh_config reader imports Invoke (about 0.08 s, most of it Invoke's own
    imports) only to run ``Match exec`` commands, and a remembered route needs no ssh_config.  Invoke is handed over
    to it when Fabric loads (``transport._fabric_connection``), before any ssh_config is read.  Under ``inv``,
    Invoke is loaded already and Paramiko imports it as usual."""
    if "paramiko" in sys.modules:
        return
    if "invoke" in sys.modules:
        _import_paramiko_with_its_version_read_directly()
        return
    sys.modules["invoke"] = None  # type: ignore[assignment]  # ``import invoke`` raises ImportError meanwhile
    try:
        _import_paramiko_with_its_version_read_directly()
    finally:
        del sys.modules["invoke"]


def _import_paramiko_with_its_version_read_directly() -> None:
    """Import Paramiko, its ``__version__`` read from its ``METADATA`` file instead of ``importlib.metadata``: Paramiko
    asks ``importlib.metadata.version("paramiko")`` at import, and that module's own imports (email, zipfile, csv) and
    its scan of every path entry took 35-55 ms of each command's start (measured with ``-X importtime``), for a
    version string nothing else here reads.  The stand-in is there only during the import; anything else asked of it,
    or a Paramiko whose ``METADATA`` is not where pip puts it, goes to the real module."""
    if "importlib.metadata" in sys.modules:  # loaded already: nothing to save
        import paramiko

        return
    sys.modules["importlib.metadata"] = _VersionReader()
    try:
        import paramiko  # noqa: F401
    finally:
        del sys.modules["importlib.metadata"]


class _VersionReader(types.ModuleType):
    """``importlib.metadata`` as far as ``version(name)`` of an installed distribution goes (see above)."""

    def __init__(self) -> None:
        super().__init__("importlib.metadata")

    @staticmethod
    def version(name: str) -> str:
        found = _installed_version(name)
        if found is not None:
            return found
        from importlib import metadata

        return metadata.version(name)

    def __getattr__(self, name: str) -> object:
        from importlib import metadata

        return getattr(metadata, name)


def _installed_version(name: str) -> str | None:
    """The ``Version:`` of ``name``'s ``<name>-<version>.dist-info/METADATA`` in the first ``site-packages`` (or
    ``dist-packages``) path entry holding one, or None (another layout: the caller asks importlib.metadata).  Other
    path entries, the working directory among them, are never listed: one may hold any number of files."""
    prefix = name.lower().replace("-", "_") + "-"
    for entry in sys.path:
        if os.path.basename(entry.rstrip("/")) not in ("site-packages", "dist-packages"):
            continue
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        for item in names:
            if item.endswith(".dist-info") and item.lower().startswith(prefix):
                try:
                    with open(os.path.join(entry, item, "METADATA"), encoding="utf-8") as handle:
                        for line in handle:
                            if line.startswith("Version:"):
                                return line.partition(":")[2].strip()
                            if not line.strip():  # the end of the headers
                                break
                except OSError:
                    pass
                return None
    return None


def start_early(argv: Sequence[str]) -> None:
    """Open the task's connection early when the command line is one host's task (see the module docstring)."""
    if os.environ.get("OPSAGENT_EARLY_CONNECT", "1") == "0" or not is_our_command_line(argv):
        return
    found = early_hosts(argv)
    if found is None:
        return
    task, specs = found
    _import_paramiko_alone()
    from .remote import early, transport  # noqa: F401 - here, not on the thread: the two never import at once
    from .remote.liblog import quiet_library_loggers

    quiet_library_loggers()
    prepare = _extract_ahead if task == "extract" and _plain(argv, _PLAIN_EXTRACT) else EARLY_TASKS[task]
    # not waited for: the CLI loads during the handshakes, its task's claim waits for its host
    if len(specs) == 2:
        early.begin_pair(specs[0], specs[1], prepare, EARLY_PAIRS.get(task))
    else:
        early.begin(specs[0], prepare)
    if prepare is _extract_ahead:  # its dump, not the CLI, is the longest path: started before the CLI competes
        try:
            early.wait_opened()  # with the handshake for the GIL (0.1 s later when it did: see the module docstring)
        except KeyboardInterrupt:  # before the CLI has loaded: its own one line and exit code, not a traceback
            _interrupted_before_the_cli()


def main() -> None:
    """Entry point of the ``opsagent`` console script."""
    keep_interrupts()  # a Ctrl-C that lands in a finalizer is delivered again, not swallowed (see its module)
    try:
        start_early(sys.argv)
        early = sys.modules.get("opsagent.remote.early")  # loaded: a connection may be opening (see its IMPORTS)
        with early.IMPORTS if early is not None else contextlib.nullcontext():
            from .cli import main as cli_main
    except KeyboardInterrupt:  # while the CLI's modules load (a slow disk, bytecode being compiled)
        _interrupted_before_the_cli()
    try:
        cli_main()
    except SystemExit as done:
        exit_at_once(done.code)
    except KeyboardInterrupt:  # outside a task's own handler: while Invoke parses, or the task's modules load
        exit_at_once(_interrupted())
    exit_at_once(0)


def _interrupted() -> int:
    """The CLI's one line for Ctrl-C (no traceback); its exit code."""
    from .errors import ExitCode

    sys.stderr.write("interrupted\n")
    return int(ExitCode.INTERRUPTED)


def _interrupted_before_the_cli() -> NoReturn:
    """Ctrl-C before the CLI (and its handlers) loaded: the CLI's one line and exit code, not a traceback."""
    raise SystemExit(_interrupted()) from None


def exit_at_once(code: object) -> NoReturn:
    """Exit with ``code`` as the interpreter would, without its finalization: tearing down the modules of Invoke,
    Rich, Paramiko and pglast and collecting their objects took 50-110 ms after every command (measured on a no-op
    sync: 6 ms without), paid by each deploy.  What an exit does before that still happens, in the same order:
    ``threading._shutdown`` (executors told to stop, threads that are not daemons joined; an interpreter without it
    exits the usual way), the atexit handlers (logging's flush, closing an unclaimed early connection), the standard
    streams flushed (a failed flush is exit status 120, as Python's own)."""
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls first: executors told to stop,
    if not callable(shutdown):  # then every thread that is not a daemon joined; without it, the usual exit
        raise SystemExit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # SystemExit("text"): printed, status 1
        sys.stderr.write(f"{code}\n")
        status = 1
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 120
    os._exit(status & 0xFF)
