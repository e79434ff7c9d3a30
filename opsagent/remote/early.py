"""The early connection: a task's SSH connection opened before the CLI loads, its first command held.

A one-host command spends about 0.3 s importing Invoke, Rich and its own modules, and then waits for the handshake
and for its first command's start (the login user's shell start-up and sudo).  ``opsagent/launch.py`` reads
``--host`` from the command line and, once the transport is imported, opens that host's connection here (one thread
per host, so ``--against-host`` opens both at once) and holds the command the task will start first
(:meth:`Remote.hold_next`): the server starts it while the CLI goes on loading.

The task never knows: :func:`opsagent.remote.transport.open_remote` asks :func:`claim` for a connection to its host,
and takes this one only when the host (by name), the endpoint it resolves to and what Paramiko is given to connect
are exactly the ones connected here, with the same host key policy; anything else closes it.

Where a host goes is resolved by Fabric (``~/.ssh/config``, gateways), and Fabric loads Invoke: about 0.1 s before
the handshake could start.  So each task remembers the route it resolved for a direct host (``remember_route``:
the endpoint and Paramiko's connect arguments, ``<state>/cache/routes``), keyed by the inventory entry and by what
else the resolution reads (the ssh_config and Fabric config files, the local user).  The early connection connects
to a remembered route with Paramiko alone, verifying the host key the same way; Fabric takes the connection over at
the claim, which compares the route with the one resolved then.  A route that may change while no file does (an
ssh_config with ``Match exec``, a gateway, a ProxyCommand) is never remembered: that host's early connection
resolves through Fabric, as on a first run.  A failed attempt is the task's failure (the same error the
task's own attempt raises; an unreachable host is not waited for twice).  A connection nobody claims is closed at
exit: a held command never ran (its gate reads EOF); a read-only one started ahead (a plain ``extract``) is killed
with its channel.  ``OPSAGENT_EARLY_CONNECT=0`` turns it off.
"""

from __future__ import annotations

import atexit
import dataclasses
import getpass
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..inventory import HostConfig, Inventory
    from .transport import Endpoint, Link, Remote

Prepare = Callable[["Remote"], None]  # holds the command the task will start first
SharedPrepare = Callable[["Remote", "HostConfig"], None]  # ... the first command for two databases of one server


@dataclasses.dataclass
class _Attempt:
    """One early connection: being opened (``done`` not set), opened (``remote``), failed (``error``) or not tried
    (the host spec names no single host: ``host`` None)."""

    spec: str
    host: HostConfig | None = None
    endpoint: Endpoint | None = None
    connect: dict[str, Any] | None = None  # Paramiko's connect arguments
    connection: Link | None = None
    remote: Remote | None = None
    error: BaseException | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    abandoned: bool = False  # nobody will claim it: closed as soon as it is open


_lock = threading.Lock()
_attempts: dict[str, _Attempt] = {}  # by the host name given on the command line

# The CLI loads while a connection opens, and both may import Invoke: the CLI by its program module, a first
# connection through Fabric by the package.  A package imported at once by two threads by two ways in can deadlock
# inside Python's import machinery, which then hands one of them a partly initialized module (an ImportError, seen
# in a suite run): the CLI's import and Fabric's take turns under this lock.
IMPORTS = threading.Lock()

# While a connection opens, the CLI's imports hold the GIL on the main thread: with Python's default switch interval
# (5 ms) the handshake's thread waits up to that long for it after each packet it receives.  Shorter while any
# attempt is opening (A/B of a no-op sync, 20 runs each: median 0.569 s with 5 ms, 0.541 s with 0.5 ms).
_OPENING_SWITCH_INTERVAL_S = 0.0005
_opening = 0  # attempts not done yet (under _lock)
_switch_interval_before: float | None = None


def begin(host_spec: str, prepare: Prepare | None = None) -> None:
    """Open the connection of the one host ``host_spec`` names in the current inventory on a thread (and let
    ``prepare`` hold the task's first command on it), for :func:`claim`.  A spec that names no single host, or an
    inventory that does not load, opens nothing: the task reports that itself."""
    attempt = _register(host_spec)
    if attempt is not None:
        threading.Thread(target=_connect, args=(attempt, host_spec, prepare), daemon=True, name="early-ssh").start()


def begin_pair(host_spec: str, other_spec: str, prepare: Prepare | None, shared: SharedPrepare | None) -> None:
    """``--host`` and ``--against-host``: when both name databases of one server (``HostConfig.same_server``), one
    connection, to ``host_spec``'s host, on which ``shared`` holds the first command for both (the task's
    ``open_pair`` then runs both over it, and never claims ``other_spec``); otherwise each its own, as :func:`begin`
    with ``prepare``.  Which it is, is known once the inventory is read: on the connection's thread."""
    attempt = _register(host_spec)
    if attempt is not None:
        args = (attempt, host_spec, other_spec, prepare, shared)
        threading.Thread(target=_connect_pair, args=args, daemon=True, name="early-ssh").start()


def _register(host_spec: str) -> _Attempt | None:
    """A new attempt for ``host_spec`` (None when one was begun already), counted as opening."""
    global _opening, _switch_interval_before
    attempt = _Attempt(host_spec)
    with _lock:
        if host_spec in _attempts:
            return None
        _attempts[host_spec] = attempt
        if _opening == 0:
            _switch_interval_before = sys.getswitchinterval()
            sys.setswitchinterval(_OPENING_SWITCH_INTERVAL_S)
        _opening += 1
    return attempt


def _connect_pair(
    attempt: _Attempt, host_spec: str, other_spec: str, prepare: Prepare | None, shared: SharedPrepare | None
) -> None:
    from ..inventory import current_inventory

    inventory: Inventory | None = None
    other: HostConfig | None = None
    try:
        inventory = current_inventory()
        host, other = _single_host(inventory, host_spec), _single_host(inventory, other_spec)
        if host is None or other is None or not host.same_server(other):
            other = None
    except Exception:  # _connect meets the same error, and keeps it for the task's claim
        pass
    if other is None:
        begin(other_spec, prepare)
        _connect(attempt, host_spec, prepare, inventory)
        return
    held = other
    _connect(attempt, host_spec, None if shared is None else lambda remote: shared(remote, held), inventory)


def _single_host(inventory: Inventory, host_spec: str) -> HostConfig | None:
    """The host ``host_spec`` names, when it names one host (not a group of one: a connection is claimed by its
    host's name); else None."""
    hosts = inventory.resolve(host_spec)
    return hosts[0] if len(hosts) == 1 and hosts[0].name == host_spec else None


def _connect(attempt: _Attempt, host_spec: str, prepare: Prepare | None, inventory: Inventory | None = None) -> None:
    """Open ``attempt``'s connection (``inventory``: the current one, when the caller has read it already)."""
    from ..inventory import current_inventory
    from . import transport

    try:
        inventory = inventory or current_inventory()
        attempt.host = _single_host(inventory, host_spec)
        if attempt.host is not None:
            route = _recall_route(inventory.paths.state, attempt.host)
            if route is not None:  # Paramiko alone: Fabric and Invoke load with the CLI, after the handshake
                attempt.endpoint, attempt.connect = route
                attempt.connection = transport.open_direct(attempt.endpoint, attempt.connect)
            else:
                connection, attempt.endpoint = transport._connection(attempt.host, inventory, False)
                attempt.connection, attempt.connect = connection, transport.connect_kwargs(connection)
                transport._open(connection, attempt.endpoint)
            remote = transport.Remote(attempt.host, attempt.connection, attempt.endpoint)
            if prepare is not None:
                prepare(remote)
            attempt.remote = remote
    except Exception as exc:
        attempt.error = exc
    finally:
        global _opening
        with _lock:
            attempt.done.set()
            abandoned = attempt.abandoned
            _opening -= 1
            if _opening == 0 and _switch_interval_before is not None:
                sys.setswitchinterval(_switch_interval_before)
        if abandoned:
            _close(attempt)


def wait_opened() -> None:
    """Wait until every early connection is open and its first command held (or it has failed).  The launcher does
    not wait: the CLI loads while the handshake runs (see :data:`_OPENING_SWITCH_INTERVAL_S`), and the task's
    :func:`claim` waits for its own host (a host that is down: its ``connect_timeout``, once)."""
    waited: set[int] = set()
    while True:  # again for an attempt begun meanwhile (the other host of a pair: see begin_pair)
        with _lock:
            attempts = [attempt for attempt in _attempts.values() if id(attempt) not in waited]
        if not attempts:
            return
        for attempt in attempts:
            attempt.done.wait()
            waited.add(id(attempt))


def claim(
    host: HostConfig, endpoint: Endpoint, connect: dict[str, Any] | None, accept_new_host_key: bool
) -> Remote | None:
    """The early connection when it is this host's (by the name given to ``--host``), to this endpoint, opened with
    these connect arguments and this host key policy (waiting for its handshake to end); its error when that failed;
    None otherwise.  Another host's connection leaves it for that host's claim (``diff --against-host`` opens both
    at once)."""
    with _lock:
        attempt = _attempts.pop(host.name, None)
    if attempt is None:
        return None
    if accept_new_host_key:
        _abandon(attempt)
        return None
    attempt.done.wait()
    if attempt.host != host or attempt.endpoint != endpoint or attempt.connect != connect:
        _close(attempt)
        return None
    if attempt.error is not None:
        _close(attempt)
        raise attempt.error
    return attempt.remote


def discard() -> None:
    """Close the early connections nobody claimed (their held commands never ran)."""
    with _lock:
        attempts = list(_attempts.values())
        _attempts.clear()
    for attempt in attempts:
        _abandon(attempt)


atexit.register(discard)  # nothing to do unless an early connection was left unclaimed


def _abandon(attempt: _Attempt) -> None:
    """Close the attempt now if it has ended, else when it does (its thread closes it)."""
    with _lock:
        attempt.abandoned = True
        ended = attempt.done.is_set()
    if ended:
        _close(attempt)


def _close(attempt: _Attempt) -> None:
    if attempt.connection is None:
        return
    from .transport import close_link

    close_link(attempt.connection)


# ---------------------------------------------------------------- remembered routes

ROUTE_FORMAT = 1
_ROUTE_FIELDS = ("name", "address", "port", "user", "identity_file", "known_hosts", "gateway", "connect_timeout")
# what Fabric's resolution reads besides the inventory: OpenSSH's client configuration, Fabric's own config files
_SETTINGS_FILES = (
    "/etc/ssh/ssh_config",
    "~/.ssh/config",
    *(f"{prefix}.{suffix}" for prefix in ("/etc/fabric", "~/.fabric") for suffix in ("yaml", "yml", "json", "py")),
)
# Paramiko's reader ignores Include; of Match's criteria only ``exec`` depends on more than these files
_DYNAMIC_SSH_CONFIG = re.compile(r"^\s*match\b.*\bexec\b", re.IGNORECASE | re.MULTILINE)


def _route_file(state: Path, host_name: str) -> Path:
    return state / "cache" / "routes" / f"{hashlib.sha256(host_name.encode()).hexdigest()[:32]}.json"


def _settings_signature() -> list[Any] | None:
    """Every file the resolution reads (its size and modification time) and the local user; None when an
    ssh_config runs a command to decide (``Match exec``): then a route may change while none of these does."""
    try:
        user: str | None = getpass.getuser()  # Fabric's default login user
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid): Fabric's default is None then too
        user = None
    signature: list[Any] = [user]
    for name in _SETTINGS_FILES:
        path = os.path.expanduser(name)
        try:
            stat = os.stat(path)
            if "ssh" in name:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    if _DYNAMIC_SSH_CONFIG.search(handle.read()):
                        return None
        except FileNotFoundError:
            signature.append([path, None])
            continue
        except OSError:
            return None
        signature.append([path, stat.st_size, stat.st_mtime_ns, stat.st_ino])
    return signature


def _route_document(host: HostConfig, endpoint: Endpoint, connect: dict[str, Any]) -> dict[str, Any] | None:
    signature = _settings_signature()
    if signature is None:
        return None
    key = {field: getattr(host, field) for field in _ROUTE_FIELDS}
    document = {"format": ROUTE_FORMAT, "host": key, "settings": signature}
    document |= {"endpoint": dataclasses.asdict(endpoint), "connect": connect}
    parsed: dict[str, Any] = json.loads(json.dumps(document))
    return parsed


def remember_route(state: Path, host: HostConfig, endpoint: Endpoint, connect: dict[str, Any] | None) -> None:
    """Remember where ``host`` went (a direct endpoint and Paramiko's connect arguments, as resolved by Fabric) for
    the next early connection; nothing for a gateway, a ProxyCommand, or what only Fabric can pass."""
    if connect is None or endpoint.via is not None or endpoint.proxy_command is not None:
        return
    document = _route_document(host, endpoint, connect)
    path = _route_file(state, host.name)
    if document is None or _read_route(path) == document:
        return
    from ..cachefile import write_cache_file

    write_cache_file(path.parent, path.name, document)


def _read_route(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _recall_route(state: Path, host: HostConfig) -> tuple[Endpoint, dict[str, Any]] | None:
    """The remembered route of ``host`` when everything it was resolved from is unchanged; else None."""
    stored = _read_route(_route_file(state, host.name))
    if stored is None:
        return None
    from .transport import Endpoint

    try:
        fields = dict(stored["endpoint"], identity_files=tuple(stored["endpoint"]["identity_files"]))
        endpoint = Endpoint(**fields)
        connect = stored["connect"]
    except (KeyError, TypeError):
        return None
    if not isinstance(connect, dict) or _route_document(host, endpoint, connect) != stored:
        return None
    return endpoint, connect
