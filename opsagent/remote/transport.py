"""SSH transport: one verified connection per host, binary-safe remote commands.

Fabric builds the connection (``~/.ssh/config``, gateways, keys); commands run on
raw Paramiko channels so that output stays bytes (``pg_dump -Fc``), stdin can be
streamed, output can be consumed while it arrives, and timeouts are ours.  Host
keys are always verified: Fabric's auto-accepting policy is replaced on every hop.

Fabric (and the Invoke it loads) is imported on first use, not with this module: the early connection
(``remote/early.py``) connects to a remembered endpoint with Paramiko alone before the CLI loads them.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import queue
import select
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import paramiko

from .. import resources
from ..errors import CommandFailed, HostKeyError, RemoteError, UsageError
from ..inventory import HostConfig, Inventory
from . import early

if TYPE_CHECKING:
    from fabric import Connection

_CHUNK = 256 * 1024
_WINDOW = 8 * 1024 * 1024
OutputCallback = Callable[[bytes], None]


class Link(Protocol):
    """What :class:`Remote` needs of its connection: Fabric's ``Connection``, or the early connection's own."""

    client: paramiko.SSHClient
    user: str


def _fabric_connection() -> type[Connection]:
    """Fabric's ``Connection``, imported on first use.  Paramiko's ssh_config reader imports Invoke only for
    ``Match exec``; when the early connection imported Paramiko without it (``opsagent/launch.py``), it is handed
    over here, before any ssh_config lookup."""
    import paramiko.config

    with early.IMPORTS:  # never beside the CLI's own import of Invoke (see there)
        from fabric import Connection
    if getattr(paramiko.config, "invoke", None) is None:
        import invoke

        setattr(paramiko.config, "invoke", invoke)  # noqa: B010 - not in paramiko's stubs
    return Connection  # type: ignore[no-any-return]


@dataclasses.dataclass
class CommandResult:
    """What a finished remote command returned."""

    command: str
    exit_status: int
    stdout: bytes
    stderr: str
    duration: float

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


# ---------------------------------------------------------------- host keys


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:…`` fingerprint."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _VerifyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown hosts (or, when asked once, record them)."""

    def __init__(self, known_hosts: Path, accept_new: bool, label: str) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self.label = label

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.accept_new:
            raise HostKeyError(
                f"{self.label}: unknown host key for {hostname} ({key.get_name()} {fingerprint(key)}); "
                "refusing to connect",
                hint="check the fingerprint with the server's admin, then run once with --accept-new-host-key "
                "to record it",
            )
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with self.known_hosts.open("a", encoding="utf-8") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


def _secure(client: paramiko.SSHClient, endpoint: Endpoint, accept_new: bool) -> None:
    """``endpoint``'s known_hosts and the refusing policy on ``client`` (Fabric's auto-accepting one replaced)."""
    known = Path(endpoint.known_hosts)
    if known.exists():
        try:
            client.load_host_keys(str(known))
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyError(f"{endpoint.label}: cannot read known_hosts {known}: {exc}") from None
    client.set_missing_host_key_policy(_VerifyPolicy(known, accept_new, endpoint.label))


# ---------------------------------------------------------------- remote work dies with its channel

# Why: OpenSSH does not signal a command started without a pty when its channel or the
# whole connection goes away; a psql fed a buffered script then runs it to the end
# (COMMIT included) after the client is gone.  Every command therefore runs under a
# small POSIX sh wrapper whose watchdog notices the loss and stops the command.
#
# Layout on the server (sshd puts each session command in its own session and process
# group, led by the wrapper):
#   wrapper (sh, group leader W) ── the command, in the foreground (so SIGINT is not ignored)
#   watchdog (sh, own session via setsid) ── holds a copy of the channel's stderr
# Every 0.2 s the watchdog writes one NUL byte to that stderr (the client strips
# them).  The write fails as soon as sshd closes the channel (client closed it) or
# exits (connection lost, client killed): sshd closes the pipe's read end.  Then
# it sends SIGINT to group W (psql cancels its running statement and stops reading
# its script; sudo relays signals from another session to its child), three times
# (a shell that is just starting a command may defer the first one past its exec),
# then SIGTERM twice, then SIGKILL, 0.6 s apart, until the group is empty.  When the command ends
# normally the wrapper kills the watchdog and exits with the command's status.
# Without setsid on the server the watchdog stays in group W (it ignores INT and TERM
# there); a non-root login user then cannot stop a command that sudo runs as another user.
# The data path is untouched: stdin, stdout and the command's stderr are the channel's.
# Arguments reach the command as argv ("$@"), never through the shell's parser.
# Both programs are opsagent/scripts/transport_watchdog.sh and transport_wrapper.sh.
_WATCHDOG = resources.script("transport_watchdog")
_WRAPPER = resources.script("transport_wrapper")
_HELD = resources.script("transport_held")  # the gate of Remote.hold
_KNOWING_PG_DUMP = resources.script("psql_knowing_pg_dump")  # Remote.psql_argv(knowing_pg_dump=True)

# A session statement for long psql sessions (sync sends it first): on PostgreSQL 14+ the
# backend then checks every second, even during a long statement, that its client is still
# there, so a psql that died without cancelling (SIGKILL) does not leave a backend working.
CLIENT_CHECK_SQL = (
    "DO $opsagent_check$ BEGIN IF current_setting('server_version_num')::int >= 140000 THEN "
    "PERFORM set_config('client_connection_check_interval', '1s', false); "
    "END IF; END $opsagent_check$;"
)


# Debian's and Ubuntu's sudoers ``secure_path`` (what sudo gives the become user): the rest of PATH behind pg_bindir
_SUDO_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def channel_bound_command(argv: Sequence[str], *, cd_root: bool = False) -> str:
    """The remote command line that runs ``argv`` so that it dies with its SSH channel."""
    wrapper = ("cd / || exit 125\n" if cd_root else "") + _WRAPPER
    return "exec " + shlex.join(["sh", "-c", wrapper, "opsagent", _WATCHDOG, *argv])


def _strip_probes(data: bytes) -> bytes:
    """Remove the watchdog's NUL probe bytes from a command's stderr."""
    return data.replace(b"\0", b"")


# ---------------------------------------------------------------- connection


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where one SSH hop really goes, resolved ONCE (inventory + ``~/.ssh/config`` through Fabric's lookup).

    The same record drives the connection, ``doctor``'s reach check, ``hosts`` and the
    interactive ``ssh`` command line, so an alias, a ProxyJump or a gateway means the
    same thing everywhere.
    """

    label: str  # inventory name, or "prod (gateway gw)" for a hop
    alias: str  # as written: inventory address or gateway spec
    hostname: str  # after ssh_config HostName
    port: int
    user: str
    identity_files: tuple[str, ...]
    known_hosts: str
    connect_timeout: float
    via: Endpoint | None = None  # the hop this one is reached through (None: direct)
    proxy_command: str | None = None  # ssh_config ProxyCommand, when that is the way in

    @property
    def target(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    def chain(self) -> list[Endpoint]:
        """Every hop, the first one to connect to first, this endpoint last."""
        hops: list[Endpoint] = []
        hop: Endpoint | None = self
        while hop is not None:
            hops.insert(0, hop)
            hop = hop.via
        return hops

    def describe(self) -> str:
        """``user@host:port`` (``via`` the hops), for people."""
        route = [hop.target for hop in self.chain()[:-1]]
        text = self.target + (f" via {' -> '.join(route)}" if route else "")
        return text + (f" via ProxyCommand {self.chain()[0].proxy_command}" if self.chain()[0].proxy_command else "")

    def to_dict(self) -> dict[str, object]:
        return {
            "alias": self.alias,
            "hostname": self.hostname,
            "port": self.port,
            "user": self.user,
            "identity_files": list(self.identity_files),
            "known_hosts": self.known_hosts,
            "proxy_command": self.proxy_command,
            "via": self.via.to_dict() if self.via else None,
        }


_DEFAULT_KNOWN_HOSTS = HostConfig.__dataclass_fields__["known_hosts"].default


def _known_hosts(host: HostConfig, ssh_config: Any) -> str:
    """The inventory's known_hosts; ssh_config's UserKnownHostsFile when the inventory leaves the default."""
    chosen = host.known_hosts
    if chosen == _DEFAULT_KNOWN_HOSTS and ssh_config.get("userknownhostsfile"):
        chosen = str(ssh_config["userknownhostsfile"]).split()[0]
    return str(Path(chosen).expanduser())


def _endpoint(conn: Connection, host: HostConfig, via: Endpoint | None) -> Endpoint:
    if via is None and isinstance(conn.gateway, _fabric_connection()):  # ProxyJump from ~/.ssh/config
        via = _endpoint(conn.gateway, _hop_config(conn.gateway, host), None)
    keys = conn.connect_kwargs.get("key_filename") or []
    return Endpoint(
        label=host.name,
        alias=str(conn.original_host),
        hostname=str(conn.host),
        port=int(conn.port),
        user=str(conn.user),
        identity_files=tuple(
            dict.fromkeys(str(Path(k).expanduser()) for k in ([keys] if isinstance(keys, str) else keys))
        ),
        known_hosts=_known_hosts(host, conn.ssh_config),
        connect_timeout=host.connect_timeout,
        via=via,
        proxy_command=conn.gateway if isinstance(conn.gateway, str) else None,
    )


def _build(
    host: HostConfig,
    inventory: Inventory | None,
    chain: tuple[str, ...] = (),
    label: str | None = None,
) -> tuple[Connection, Endpoint]:
    """Fabric connection objects (not opened) and the endpoint they resolve to."""
    connection_class = _fabric_connection()
    from fabric import Config

    gateway: Connection | None = None
    via: Endpoint | None = None
    if host.gateway:
        gateway, via = _gateway(host, inventory, chain)
    kwargs: dict[str, Any] = {}
    if host.identity_file:
        kwargs["key_filename"] = [str(Path(host.identity_file).expanduser())]
    conn = connection_class(
        host.address,
        user=host.user,
        port=host.port,
        config=Config(),
        gateway=gateway,
        connect_timeout=max(1, int(host.connect_timeout)),
        connect_kwargs=kwargs,
    )
    return conn, _endpoint(conn, dataclasses.replace(host, name=label) if label else host, via)


def resolve_endpoint(host: HostConfig, inventory: Inventory | None = None) -> Endpoint:
    """Resolve where ``host`` really is (no network): what every task and the interactive ssh use."""
    return _build(host, inventory)[1]


def _connection(host: HostConfig, inventory: Inventory | None, accept_new: bool) -> tuple[Connection, Endpoint]:
    conn, endpoint = _build(host, inventory)
    _secure_hops(conn, endpoint, accept_new)
    return conn, endpoint


def _secure_hops(conn: Connection, endpoint: Endpoint, accept_new: bool) -> None:
    """Every hop's host key policy and known_hosts, before anything connects."""
    hop: Any = conn
    for ep in reversed(endpoint.chain()):
        if not isinstance(hop, _fabric_connection()):
            break
        _secure(hop.client, ep, accept_new)
        hop = hop.gateway


def _hop_config(hop: Connection, host: HostConfig) -> HostConfig:
    return dataclasses.replace(host, name=f"{host.name} (gateway {hop.host})")


def _gateway(host: HostConfig, inventory: Inventory | None, chain: tuple[str, ...]) -> tuple[Connection, Endpoint]:
    assert host.gateway
    if host.name in chain:
        raise UsageError(f"gateway loop: {' -> '.join([*chain, host.name])}")
    if inventory is not None and host.gateway in inventory.hosts:
        return _build(
            inventory.hosts[host.gateway], inventory, (*chain, host.name), f"{host.name} (gateway {host.gateway})"
        )
    user, _, rest = host.gateway.rpartition("@")
    address, _, port = rest.partition(":")
    spec = HostConfig(
        name=f"{host.name} (gateway {host.gateway})",
        address=address,
        user=user or None,
        port=int(port) if port else None,
        known_hosts=host.known_hosts,
        identity_file=host.identity_file,
        connect_timeout=host.connect_timeout,
    )
    return _build(spec, inventory, (*chain, host.name))


class LoginError(RemoteError):
    """The SSH handshake (host key included) succeeded, the login did not."""


def _hops(conn: Connection) -> list[Connection]:
    """The connection's hops, the first one to connect to first."""
    hops: list[Connection] = []
    hop: Any = conn
    while isinstance(hop, _fabric_connection()):
        hops.insert(0, hop)
        hop = hop.gateway
    return hops


def _failed_hop(conn: Connection) -> Connection:
    for hop in _hops(conn):
        transport = hop.client.get_transport()
        if transport is None or not transport.is_authenticated():
            return hop
    return conn


@dataclasses.dataclass(frozen=True)
class _Hop:
    """Where a connection failed: one hop's user, host and port; ``target``: the endpoint itself, not a gateway."""

    user: str
    host: str
    port: int
    target: bool


def _open(conn: Connection, endpoint: Endpoint) -> None:
    def failed() -> _Hop:
        hop = _failed_hop(conn)
        return _Hop(str(hop.user), str(hop.host), int(hop.port), hop is conn)

    with _connect_errors(endpoint, failed):
        conn.open()


@contextlib.contextmanager
def _connect_errors(endpoint: Endpoint, failed_hop: Callable[[], _Hop]) -> Iterator[None]:
    """A failed handshake or login as one of opsagent's own errors (the same from the early connection's direct
    path as from Fabric's)."""
    name = endpoint.label
    try:
        yield
    except HostKeyError:
        raise
    except paramiko.BadHostKeyException as exc:
        raise HostKeyError(
            f"{name}: HOST KEY CHANGED for {exc.hostname}: got {exc.key.get_name()} {fingerprint(exc.key)}, "
            f"expected {fingerprint(exc.expected_key)}; refusing to connect",
            hint=f"if the server was really reinstalled, remove its line from {endpoint.known_hosts} "
            "after checking with its admin",
        ) from None
    except paramiko.AuthenticationException as exc:
        hop = failed_hop()
        error = LoginError if hop.target else RemoteError
        raise error(
            f"{name}: SSH login as {hop.user}@{hop.host}:{hop.port} failed: {exc}",
            hint="check user and identity_file in the inventory (or ~/.ssh/config)",
        ) from None
    except TimeoutError:
        hop = failed_hop()
        raise RemoteError(
            f"{name}: connection to {hop.host}:{hop.port} timed out after {endpoint.connect_timeout:g}s"
        ) from None
    except (OSError, paramiko.SSHException, EOFError) as exc:
        hop = failed_hop()
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise RemoteError(f"{name}: cannot connect to {hop.host}:{hop.port}: {reason}") from None


@dataclasses.dataclass
class DirectLink:
    """A connection opened with Paramiko alone to a remembered direct endpoint (the early connection's)."""

    client: paramiko.SSHClient
    user: str


def connect_kwargs(conn: Connection) -> dict[str, Any] | None:
    """What Fabric's ``Connection.open`` passes to Paramiko's ``connect`` for ``conn``, when it can be replayed
    without Fabric (a direct connection, plain values); None otherwise."""
    if conn.gateway or conn.authentication.strategy_class is not None:
        return None
    kwargs = dict(conn.connect_kwargs, username=conn.user, hostname=conn.host, port=conn.port)
    if conn.connect_timeout:
        kwargs["timeout"] = conn.connect_timeout
    if "key_filename" in kwargs and not kwargs["key_filename"]:
        del kwargs["key_filename"]
    try:
        replayable: dict[str, Any] = json.loads(json.dumps(kwargs))
    except (TypeError, ValueError):  # a key object, a socket: only Fabric can pass them
        return None
    return replayable if replayable == kwargs else None


def open_direct(endpoint: Endpoint, kwargs: dict[str, Any]) -> DirectLink:
    """Connect to a direct ``endpoint`` with Paramiko alone, with the very ``kwargs`` Fabric would pass
    (:func:`connect_kwargs`): the same host key check, the same login, the same errors."""
    client = paramiko.SSHClient()
    try:
        _secure(client, endpoint, False)
        with _connect_errors(endpoint, lambda: _Hop(endpoint.user, endpoint.hostname, endpoint.port, True)):
            client.connect(**kwargs)
    except BaseException:
        client.close()
        raise
    return DirectLink(client, endpoint.user)


def close_link(link: Link) -> None:
    """Close a connection: every hop of a Fabric one, the client of a direct one."""
    if isinstance(link, DirectLink):
        link.client.close()
        return
    for hop in reversed(_hops(link)):
        hop.close()


@contextlib.contextmanager
def open_remote(
    host: HostConfig, inventory: Inventory | None = None, *, accept_new_host_key: bool = False
) -> Iterator[Remote]:
    """One verified SSH connection for the whole run; closed on exit."""
    conn, endpoint = _build(host, inventory)
    kwargs = connect_kwargs(conn)
    # opened (and verified) before the CLI loaded
    early_remote = early.claim(host, endpoint, kwargs, accept_new_host_key)
    remembered = early_remote is not None and isinstance(early_remote.connection, DirectLink)
    if early_remote is not None:
        if isinstance(early_remote.connection, DirectLink):  # Fabric's connection takes over its client
            conn.client = early_remote.connection.client
            conn.transport = conn.client.get_transport()
            early_remote.connection = conn
        conn = early_remote.connection
    try:
        if early_remote is None:
            _secure_hops(conn, endpoint, accept_new_host_key)
            _open(conn, endpoint)
        if inventory is not None and not remembered:  # a route recalled and matched is the one on file already
            early.remember_route(inventory.paths.state, host, endpoint, kwargs)
        yield early_remote or Remote(host, conn, endpoint)
    finally:
        close_link(conn)


@contextlib.contextmanager
def open_pair(
    first: HostConfig, second: HostConfig, inventory: Inventory | None = None, *, accept_new_host_key: bool = False
) -> Iterator[tuple[Remote, Remote]]:
    """Two hosts' connections (e.g. ``diff --against-host``), their handshakes at the same time; both closed on exit,
    and the one that opened is closed when the other fails.  Two databases of the same server
    (:meth:`HostConfig.same_server`) share one connection (:meth:`Remote.beside`)."""
    from concurrent.futures import ThreadPoolExecutor

    if first.same_server(second):
        with open_remote(first, inventory, accept_new_host_key=accept_new_host_key) as mine:
            yield mine, mine.beside(second)
        return
    with contextlib.ExitStack() as stack:
        other = open_remote(second, inventory, accept_new_host_key=accept_new_host_key)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(other.__enter__)
            try:
                mine = stack.enter_context(open_remote(first, inventory, accept_new_host_key=accept_new_host_key))
            finally:
                theirs = pending.result()  # its failure is raised here (the first connection is closed by the stack)
                stack.push(other)
        yield mine, theirs


# ---------------------------------------------------------------- the interactive ssh command line


def _pct(value: str) -> str:
    """ssh expands %-tokens in IdentityFile, UserKnownHostsFile and ProxyCommand: keep a literal % literal."""
    return value.replace("%", "%%")


def _ssh_options(endpoint: Endpoint) -> list[str]:
    argv = [
        "-F",
        "none",
        "-p",
        str(endpoint.port),
        "-l",
        endpoint.user,
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={_pct(endpoint.known_hosts)}",
        "-o",
        f"ConnectTimeout={max(1, int(endpoint.connect_timeout))}",
    ]
    for key in endpoint.identity_files:
        argv += ["-i", _pct(key)]
    if endpoint.identity_files:
        argv += ["-o", "IdentitiesOnly=yes"]
    if endpoint.via is not None:
        argv += ["-o", "ProxyCommand=" + _proxy_command(endpoint.via)]
    elif endpoint.proxy_command:
        argv += ["-o", "ProxyCommand=" + endpoint.proxy_command]
    return argv


def _proxy_command(hop: Endpoint) -> str:
    """``ssh ... -W %h:%p hop``: a jump (like -J) that keeps this hop's own known_hosts and keys.

    The ssh that runs this ProxyCommand expands %-tokens in it: ``%h:%p`` is meant for
    it; everything else (meant for the hop's own ssh, itself nested for longer chains)
    is escaped once more.
    """
    return _pct(shlex.join(["ssh", *_ssh_options(hop)])) + " -W %h:%p " + _pct(shlex.quote(hop.hostname))


def ssh_argv(endpoint: Endpoint, remote_command: str, *, tty: bool = True) -> list[str]:
    """The OpenSSH client command line for ``endpoint``: same host, port, user, keys, known_hosts and jumps
    as opsagent's own connection (``-F none``: the resolution already applied ~/.ssh/config)."""
    return ["ssh", *(["-t"] if tty else ["-T"]), *_ssh_options(endpoint), endpoint.hostname, remote_command]


# ---------------------------------------------------------------- commands


@dataclasses.dataclass(frozen=True)
class _Held:
    """A command started by :meth:`Remote.hold`, waiting at its gate, or by :meth:`Remote.start_ahead`, running."""

    channel: paramiko.Channel
    command: str
    argv: tuple[str, ...]
    tag: str
    sent: bytes | None = None  # started ahead with this stdin (no gate): its output waits in the channel
    gated: bool = True  # False: started itself, waiting on its stdin (Remote.hold_next's reads_stdin_first)


def _usable(held: _Held, argv: Sequence[str], stdin: bytes) -> bool:
    """A held command serves ``argv`` with ``stdin``: the same argv, and either still at its gate or started ahead
    with this very stdin (its output, maybe complete, waits in the channel)."""
    if held.argv != tuple(argv):
        return False
    if held.sent is not None:
        return held.sent == stdin
    return not (held.channel.closed or held.channel.exit_status_ready())


class Remote:
    """Runs commands on one host over its single SSH connection."""

    def __init__(self, host: HostConfig, connection: Link, endpoint: Endpoint | None = None) -> None:
        self.host = host
        self.connection = connection
        self.endpoint = endpoint
        self.command_count = 0
        self._held: dict[str, _Held] = {}
        self._next: _Held | None = None  # held for whoever starts its argv first (hold_next)

    def beside(self, host: HostConfig) -> Remote:
        """A Remote for another database of this same server (:meth:`HostConfig.same_server`) over this very
        connection: its commands are channels of the same SSH session (nothing held is shared)."""
        endpoint = dataclasses.replace(self.endpoint, label=host.name) if self.endpoint else None
        return Remote(host, self.connection, endpoint)

    def shares_connection(self, other: Remote) -> bool:
        """True when ``other`` runs over this very SSH connection (:meth:`beside`): one server, one login."""
        return self.connection is other.connection

    # -- argv builders

    def become_prefix(self) -> list[str]:
        """``sudo -n -u <become>`` (never waits for a password), then, when the host names its ``pg_bindir``,
        ``env PATH=<pg_bindir>:<sudo's default PATH>``: psql, pg_dump and pg_restore then start as themselves, not
        through Debian's Perl ``pg_wrapper`` (35-80 ms before each one starts, measured on this project's hosts).
        A directory without one of them leaves that one to the rest of PATH, as before."""
        sudo = ["sudo", "-n", "-u", self.host.become] if self.host.become else []
        if self.host.pg_bindir is None:
            return sudo
        return [*sudo, "env", f"PATH={self.host.pg_bindir}:{_SUDO_DEFAULT_PATH}"]

    def pg_args(self) -> list[str]:
        args: list[str] = []
        if self.host.pg_host:
            args += ["-h", self.host.pg_host]
        if self.host.pg_port:
            args += ["-p", str(self.host.pg_port)]
        return args

    def db_args(self, database: str | None = None) -> list[str]:
        """``-d dbname='…'``: a database name is always a conninfo value, never a connection string.

        psql, pg_dump and pg_restore read a ``-d`` value containing ``=`` as a whole
        connection string (``host=evil dbname=x``); quoting it as ``dbname`` keeps it a name.
        """
        return ["-d", conninfo_dbname(database or self.host.database)]

    def psql_argv(
        self,
        database: str | None = None,
        extra: Sequence[str] = (),
        *,
        knowing_pg_dump: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """psql's argv.  ``knowing_pg_dump``: ``pg_dump --version`` runs beside psql's start into a pipe the
        session reads (``scripts/psql_knowing_pg_dump.sh``), for a session whose script asks for the server facts
        (``facts.PG_DUMP_VERSION``): that binary's 50-80 ms (Debian's Perl wrapper) are paid while psql connects,
        not between its statements.  ``env``: libpq's variables for the session's ``\\connect`` (``env NAME=value``
        before psql: a value is one argv word, never psql or shell text)."""
        assignments = ["env", *(f"{name}={value}" for name, value in env.items())] if env else []
        argv = [*assignments, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *self.pg_args(), *self.db_args(database)]
        argv += extra
        return ["sh", "-c", _KNOWING_PG_DUMP, "psql", *argv] if knowing_pg_dump else argv

    # -- running

    def _exec(self, argv: Sequence[str], become: bool) -> tuple[paramiko.Channel, str]:
        waiting = self._claim_next(argv) if become else None
        if waiting is not None:
            return waiting
        return self._open_channel(argv, become)

    def _open_channel(self, argv: Sequence[str], become: bool) -> tuple[paramiko.Channel, str]:
        """A new channel running ``argv`` (as the become user when ``become``), counted."""
        full = [*(self.become_prefix() if become else []), *argv]
        # cd /: the become user usually cannot enter the login user's home (psql warns about it)
        command = channel_bound_command(full, cd_root=bool(become and self.host.become))
        transport = self.connection.client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError(f"{self.host.name}: SSH connection is closed")
        try:
            channel = transport.open_session(window_size=_WINDOW, max_packet_size=32768)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise RemoteError(f"{self.host.name}: cannot start remote command: {exc}") from None
        self.command_count += 1
        return channel, command

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | str | Iterable[bytes] | None = None,
        become: bool = True,
        timeout: float | None = None,
        check: bool = True,
        on_stdout: OutputCallback | None = None,
        capture: bool = True,
    ) -> CommandResult:
        """Run one command; stdin is streamed, stdout kept as bytes (or passed to ``on_stdout``).  ``stdin`` may be
        an iterable of pieces, written as they come: a piece that is not ready yet holds the command's stdin open
        (a rehearsal loads the live structure while its plan is still being made)."""
        channel, command = self._exec(argv, become)
        started = time.monotonic()
        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        out, err, status = _pump(
            channel, data, on_stdout, capture, timeout or self.host.command_timeout, self.host.name, argv
        )
        result = CommandResult(command, status, out, err, time.monotonic() - started)
        if check and status != 0:
            raise self.failure(argv, result)
        return result

    def hold(self, key: str, argv: Sequence[str], tag: str = "") -> None:
        """Start ``argv`` (as the become user) now, held at a gate until :meth:`run_held` releases it with its stdin.

        What the command costs before it does anything (the exec, the login user's shell start-up, sudo) is then
        paid while the client works on, not when the result is wanted: the closing drift check of a sync is held
        while the migrations run.  ``tag``: what the caller needs to build the same argv again (a marker token).
        An unused held command exits having run nothing when its channel closes (:meth:`release`, or the end of
        the connection)."""
        self.release(key)
        self._held[key] = self._gate(argv, tag)

    def _gate(self, argv: Sequence[str], tag: str) -> _Held:
        """``argv`` started behind the gate (``sh -c GATE opsagent-held argv…`` as the become user)."""
        channel, command = self._exec(["sh", "-c", _HELD, "opsagent-held", *argv], True)
        return _Held(channel, command, tuple(argv), tag)

    def hold_next(self, argv: Sequence[str], *, reads_stdin_first: bool = False) -> None:
        """Start ``argv`` (as the become user) now, held at its gate for the first :meth:`run` or :meth:`start` of
        this very argv, whoever calls it: the CLI holds the command a task starts first while its own modules are
        still loading (``opsagent/launch.py``).  Unclaimed, it exits having run nothing when the connection ends.

        ``reads_stdin_first``: ``argv`` does nothing before it reads its stdin (a psql that reads its statements from
        stdin, never one with ``-c``), so it is started itself, without the gate: its own start-up (psql's
        connection to the server) is then paid while the client loads too.  Unclaimed, it reads EOF and exits having
        run nothing, as a gated one does.  Its connection idles until the claim (a fraction of a second): a server
        whose ``idle_session_timeout`` is shorter ends it, and the task then fails before its first statement ran."""
        if reads_stdin_first:
            channel, command = self._open_channel(argv, True)
            self._next = _Held(channel, command, tuple(argv), "", gated=False)
        else:
            self._next = self._gate(argv, "")
        self.command_count -= 1  # counted when claimed: an unclaimed one ran nothing

    def _claim_next(self, argv: Sequence[str]) -> tuple[paramiko.Channel, str] | None:
        """The command held by :meth:`hold_next` for ``argv``, released from its gate; None when none waits (it
        stays held for a later command when it is another argv, and is dropped when its channel has died)."""
        held = self._next
        if held is None or held.argv != tuple(argv):
            return None
        self._next = None
        if not _usable(held, argv, b""):  # its gate is gone (a gated command takes any stdin)
            held.channel.close()
            return None
        try:
            if held.gated:
                held.channel.sendall(b"go\n")
        except (OSError, paramiko.SSHException, EOFError):
            held.channel.close()
            return None
        self.command_count += 1
        return held.channel, held.command

    def start_ahead(self, key: str, argv: Sequence[str], stdin: bytes | str, tag: str = "") -> None:
        """Run ``argv`` (as the become user) now, with its whole ``stdin``, for :meth:`run_held` to read later: only
        for a read-only command whose result is all but certainly wanted (a plain ``extract`` command line).  Its
        output waits in the channel (the SSH window stops the server when it is full); unused, it is killed with its
        channel."""
        self.release(key)
        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        channel, command = self._exec(argv, True)
        try:
            channel.sendall(data)
            channel.shutdown_write()
        except (OSError, paramiko.SSHException, EOFError):
            channel.close()
            return
        self._held[key] = _Held(channel, command, tuple(argv), tag, data)

    def start_held(self, key: str, argv: Sequence[str], stdin: bytes | str) -> bool:
        """Release the command held under ``key`` at its gate now, with its whole ``stdin``, for :meth:`run_held` to
        read later with this very argv and stdin: a read-only command whose input became known before its result is
        asked for (a sync's closing live read, the moment the migrations are done).  False when none waits there
        with this argv; unused, it is killed with its channel."""
        held = self._held.get(key)
        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        if held is None or held.sent is not None or not held.gated or not _usable(held, argv, data):
            return False
        try:
            held.channel.sendall(b"go\n" + data)
            held.channel.shutdown_write()
        except (OSError, paramiko.SSHException, EOFError):
            self.release(key)
            return False
        self._held[key] = dataclasses.replace(held, sent=data)
        return True

    def held_tag(self, key: str) -> str | None:
        """The ``tag`` of the command held under ``key``; None when none is."""
        held = self._held.get(key)
        return held.tag if held is not None else None

    def release(self, key: str) -> None:
        """Close the command held under ``key``, unused (its gate reads EOF: nothing runs)."""
        held = self._held.pop(key, None)
        if held is not None:
            held.channel.close()

    def run_held(
        self, key: str, argv: Sequence[str], *, stdin: bytes | str, timeout: float | None = None, check: bool = True
    ) -> CommandResult:
        """:meth:`run` ``argv``, through the command held under ``key`` when that is this very argv and still waits at
        its gate, or was started ahead with this very stdin (no new command); otherwise as a new command, the held one
        released."""
        held = self._held.pop(key, None)
        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        if held is None or not _usable(held, argv, data):
            if held is not None:
                held.channel.close()
            return self.run(argv, stdin=data, timeout=timeout, check=check)
        started = time.monotonic()
        feed = None if held.sent is not None else b"go\n" + data
        out, err, status = _pump(
            held.channel, feed, None, True, timeout or self.host.command_timeout, self.host.name, argv
        )
        result = CommandResult(held.command, status, out, err, time.monotonic() - started)
        if check and status != 0:
            raise self.failure(argv, result)
        return result

    def start(self, argv: Sequence[str], *, become: bool = True) -> RemoteProcess:
        """Start an interactive command (e.g. a psql session fed step by step)."""
        channel, command = self._exec(argv, become)
        return RemoteProcess(channel, command, self.host.name)

    def failure(self, argv: Sequence[str], result: CommandResult) -> CommandFailed:
        """A one-line, actionable error for a failed command."""
        stderr = result.stderr.strip()
        program = program_name(argv)
        if "sudo:" in stderr and "password is required" in stderr:
            return CommandFailed(
                f"{self.host.name}: 'sudo -n -u {self.host.become}' needs a password for {self.connection.user}",
                exit_status=result.exit_status,
                stderr=stderr,
                hint=f"add a sudoers rule: {self.connection.user} ALL=({self.host.become}) NOPASSWD: ALL",
            )
        if "sudo:" in stderr and "unknown user" in stderr:
            return CommandFailed(
                f"{self.host.name}: become user {self.host.become!r} does not exist on the server",
                exit_status=result.exit_status,
                stderr=stderr,
            )
        if result.exit_status == 127 or "command not found" in stderr:
            return CommandFailed(
                f"{self.host.name}: {program} is not installed on the server ({_first_line(stderr)})",
                exit_status=result.exit_status,
                stderr=stderr,
            )
        detail = _first_line(stderr) or f"exit status {result.exit_status}"
        return CommandFailed(
            f"{self.host.name}: {program} failed: {detail}", exit_status=result.exit_status, stderr=stderr
        )

    # -- psql helpers

    def psql(
        self,
        sql: str,
        database: str | None = None,
        *,
        extra: Sequence[str] = (),
        timeout: float | None = None,
        check: bool = True,
        on_stdout: OutputCallback | None = None,
        knowing_pg_dump: bool = False,
    ) -> CommandResult:
        """Run a SQL script through psql over stdin (never via a remote file)."""
        argv = self.psql_argv(database, extra, knowing_pg_dump=knowing_pg_dump)
        return self.run(argv, stdin=sql, timeout=timeout, check=check, on_stdout=on_stdout)

    def query_json(
        self, sql: str, database: str | None = None, *, timeout: float | None = None, extra: Sequence[str] = ()
    ) -> Any:
        """Run a query that returns one JSON value (one row, one column) and decode it (``extra``: more psql
        arguments, e.g. ``-v name=value`` for the query's ``:'name'``)."""
        result = self.psql(sql, database, extra=["-A", "-t", *extra], timeout=timeout)
        text = result.text.strip()
        if not text:
            raise RemoteError(f"{self.host.name}: query returned no result")
        return json.loads(text)


def program_name(argv: Sequence[str]) -> str:
    """The program an argv runs, for messages: the one after a fixed ``sh -c SCRIPT NAME`` wrapper and after
    ``env NAME=value...``."""
    if len(argv) > 4 and argv[0] == "sh" and argv[1] == "-c":
        argv = argv[4:]
    if argv and argv[0] == "env":
        argv = [word for word in argv[1:] if "=" not in word] or ["env"]
    return argv[0]


def conninfo_dbname(database: str) -> str:
    """``dbname='name'`` with libpq's conninfo quoting (backslash before ``'`` and ``\\``)."""
    return "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _feed(channel: paramiko.Channel, data: bytes | Iterable[bytes] | None) -> threading.Thread | None:
    if not data:
        channel.shutdown_write()
        return None
    pieces: Iterable[bytes] = (data,) if isinstance(data, bytes) else data

    def writer() -> None:
        try:
            for piece in pieces:
                view = memoryview(piece)
                for offset in range(0, len(view), _CHUNK):
                    channel.sendall(bytes(view[offset : offset + _CHUNK]))
            channel.shutdown_write()
        except (OSError, paramiko.SSHException, EOFError):
            pass  # the reader reports the failure

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    return thread


def _pump(
    channel: paramiko.Channel,
    data: bytes | Iterable[bytes] | None,
    on_stdout: OutputCallback | None,
    capture: bool,
    timeout: float,
    host: str,
    argv: Sequence[str],
) -> tuple[bytes, str, int]:
    out: list[bytes] = []
    err: list[bytes] = []
    writer = _feed(channel, data)
    deadline = time.monotonic() + timeout
    try:
        while True:
            select.select([channel], [], [], 0.02)
            while channel.recv_ready():
                chunk = channel.recv(_CHUNK)
                if on_stdout is not None:
                    on_stdout(chunk)
                if capture:
                    out.append(chunk)
            while channel.recv_stderr_ready():
                err.append(channel.recv_stderr(_CHUNK))
            # sshd may send exit-status before all output (flow control): wait for EOF
            if (
                (channel.eof_received or channel.closed)
                and not channel.recv_ready()
                and not channel.recv_stderr_ready()
            ):
                break
            if not channel.get_transport().is_active():
                raise RemoteError(f"{host}: SSH connection lost while running {program_name(argv)}")
            if time.monotonic() > deadline:
                raise RemoteError(f"{host}: {program_name(argv)} timed out after {timeout:g}s")
        if not channel.status_event.wait(min(30.0, max(1.0, deadline - time.monotonic()))):
            raise RemoteError(f"{host}: SSH connection lost before {program_name(argv)} reported its exit status")
        status = channel.recv_exit_status()
    finally:
        channel.close()
        if writer is not None:
            writer.join(timeout=1)
    return b"".join(out), _strip_probes(b"".join(err)).decode("utf-8", errors="replace"), status


_WAIT_SLICE_S = 0.25  # the longest a reader waits without returning to Python (RemoteProcess.read_line)


class RemoteProcess:
    """An interactive remote command: write to stdin, read stdout lines as they come."""

    def __init__(self, channel: paramiko.Channel, command: str, host: str) -> None:
        self.channel = channel
        self.command = command
        self.host = host
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        pending = b""
        try:
            while True:
                select.select([self.channel], [], [], 0.2)
                while self.channel.recv_stderr_ready():
                    self._stderr.append(self.channel.recv_stderr(_CHUNK))
                if self.channel.recv_ready():
                    chunk = self.channel.recv(_CHUNK)
                    if not chunk:
                        break
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        self._lines.put(line)
                elif (self.channel.eof_received or self.channel.closed) and not self.channel.recv_stderr_ready():
                    break
        except (OSError, paramiko.SSHException, EOFError):
            pass
        finally:
            while self.channel.recv_stderr_ready():
                self._stderr.append(self.channel.recv_stderr(_CHUNK))
            if pending:
                self._lines.put(pending)
            self._lines.put(None)

    def write(self, data: str | bytes) -> None:
        payload = data.encode("utf-8") if isinstance(data, str) else data
        view = memoryview(payload)
        try:
            # in chunks: paramiko's sendall copies the unsent rest after every packet (quadratic on a 50 MB script)
            for offset in range(0, len(view), _CHUNK):
                self.channel.sendall(bytes(view[offset : offset + _CHUNK]))
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise RemoteError(f"{self.host}: SSH connection lost while writing: {exc}") from None

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
            self.channel.shutdown_write()

    def read_line(self, timeout: float | None = None) -> str | None:
        """Next stdout line, or None at end of output. Raises RemoteError on timeout.

        It waits in slices of ``_WAIT_SLICE_S``: a fleet run's Ctrl-C reaches a worker thread as an asynchronous
        KeyboardInterrupt (``remote.fleet``), which Python raises only between instructions, never inside one
        long wait (a statement may run for minutes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _WAIT_SLICE_S if deadline is None else max(0.0, min(_WAIT_SLICE_S, deadline - time.monotonic()))
            try:
                line = self._lines.get(timeout=left)
                break
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise RemoteError(f"{self.host}: no answer from the server within {timeout:g}s") from None
        return None if line is None else line.decode("utf-8", errors="replace")

    def wait(self, timeout: float | None = None) -> int:
        """Exit status (-1 if the connection dropped)."""
        self._reader.join(timeout)
        if not self.channel.exit_status_ready():
            return -1
        return self.channel.recv_exit_status()

    @property
    def stderr(self) -> str:
        return _strip_probes(b"".join(self._stderr)).decode("utf-8", errors="replace")

    def close(self) -> None:
        self.channel.close()
