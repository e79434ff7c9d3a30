"""The early connection: a task's SSH connection opened before the CLI loads, its first command held.

A one-host command spends about 0.3 s importing Invoke, Rich and its own modules, and then waits for the handshake
and for its first command's start (the login user's shell start-up and sudo).  ``opsagent/launch.py`` reads
``--host`` from the command line and, once the transport is imported, opens that host's connection here (one thread
per host, so ``--against-host`` opens both at once) and holds the command the task will start first
(:meth:`Remote.hold_next`): the server starts it while the CLI goes on loading.

The task never knows: :func:`opsagent.remote.transport.open_remote` asks :func:`claim` for a connection to its host,
and takes this one only when the host (by name) and the endpoint it resolves to are exactly the ones connected here,
with the same host key policy; anything else closes it.  A failed attempt is the task's failure (the same error the
task's own attempt raises; an unreachable host is not waited for twice).  A connection nobody claims is closed at
exit: a held command never ran (its gate reads EOF); a read-only one started ahead (a plain ``extract``) is killed
with its channel.  ``OPSAGENT_EARLY_CONNECT=0`` turns it off.
"""

from __future__ import annotations

import atexit
import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fabric import Connection

    from ..inventory import HostConfig
    from .transport import Endpoint, Remote

Prepare = Callable[["Remote"], None]  # holds the command the task will start first


@dataclasses.dataclass
class _Attempt:
    """One early connection: being opened (``done`` not set), opened (``remote``), failed (``error``) or not tried
    (the host spec names no single host: ``host`` None)."""

    spec: str
    host: HostConfig | None = None
    endpoint: Endpoint | None = None
    connection: Connection | None = None
    remote: Remote | None = None
    error: BaseException | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    abandoned: bool = False  # nobody will claim it: closed as soon as it is open


_lock = threading.Lock()
_attempts: dict[str, _Attempt] = {}  # by the host name given on the command line


def begin(host_spec: str, prepare: Prepare | None = None) -> None:
    """Open the connection of the one host ``host_spec`` names in the current inventory on a thread (and let
    ``prepare`` hold the task's first command on it), for :func:`claim`.  A spec that names no single host, or an
    inventory that does not load, opens nothing: the task reports that itself."""
    attempt = _Attempt(host_spec)
    with _lock:
        if host_spec in _attempts:
            return
        _attempts[host_spec] = attempt
    threading.Thread(target=_connect, args=(attempt, host_spec, prepare), daemon=True, name="early-ssh").start()


def _connect(attempt: _Attempt, host_spec: str, prepare: Prepare | None) -> None:
    from ..inventory import current_inventory
    from . import transport

    try:
        inventory = current_inventory()
        hosts = inventory.resolve(host_spec)
        if len(hosts) == 1 and hosts[0].name == host_spec:  # a host, not a group of one (claimed by its name)
            attempt.host = hosts[0]
            attempt.connection, attempt.endpoint = transport._connection(attempt.host, inventory, False)
            transport._open(attempt.connection, attempt.endpoint)
            remote = transport.Remote(attempt.host, attempt.connection, attempt.endpoint)
            if prepare is not None:
                prepare(remote)
            attempt.remote = remote
    except Exception as exc:
        attempt.error = exc
    finally:
        with _lock:
            attempt.done.set()
            abandoned = attempt.abandoned
        if abandoned:
            _close(attempt)


def wait_opened() -> None:
    """Wait until every early connection is open and its first command held (or it has failed).

    The CLI's imports then run while the server starts the held command (the login shell, sudo), not while the
    handshake runs: both are CPU work in this process, so overlapping them gained about half as much (measured).
    A host that is down is waited for here instead of in the task (its ``connect_timeout``, once)."""
    with _lock:
        attempts = list(_attempts.values())
    for attempt in attempts:
        attempt.done.wait()


def claim(host: HostConfig, endpoint: Endpoint, accept_new_host_key: bool) -> Remote | None:
    """The early connection when it is this host's (by the name given to ``--host``), to this endpoint, opened with
    this host key policy (waiting for its handshake to end); its error when that failed; None otherwise.  Another
    host's connection leaves it for that host's claim (``diff --against-host`` opens both at once)."""
    with _lock:
        attempt = _attempts.pop(host.name, None)
    if attempt is None:
        return None
    if accept_new_host_key:
        _abandon(attempt)
        return None
    attempt.done.wait()
    if attempt.host != host or attempt.endpoint != endpoint:
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
    from .transport import _hops

    for hop in reversed(_hops(attempt.connection)):
        hop.close()
