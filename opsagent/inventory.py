"""The YAML inventory: hosts, groups, defaults and project paths.

Every value is validated against a small schema so that a typo is reported as
``inventory.yaml:14 hosts.staging.port: expected an integer, got "22a"`` rather
than surfacing later as a confusing SSH error.  The generated sandbox file
(``.opsagent/sandbox.yaml``) is merged in so ``--host sandbox`` needs no edit.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, UsageError
from .units import parse_duration

DEFAULT_INVENTORY = "inventory.yaml"
SANDBOX_FILE = Path(".opsagent") / "sandbox.yaml"
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclasses.dataclass(frozen=True)
class HostConfig:
    """Everything needed to reach one database server and act on it."""

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    gateway: str | None = None
    database: str = "postgres"
    become: str | None = "postgres"
    pg_host: str | None = None
    pg_port: int | None = None
    pg_bindir: str | None = None  # the server's PostgreSQL binaries, put first on PATH (no Debian pg_wrapper)
    backup_dir: str = "/var/backups/opsagent"
    keep_backups: int = 10
    connect_timeout: float = 10.0
    command_timeout: float = 3600.0
    lock_timeout: str = "5s"  # PostgreSQL lock_timeout of every sync statement; the cap of each lock-retry attempt
    lock_retry_for: str = "2min"  # total lock-retry budget of one migration (0: no retries)
    statement_timeout: str = "0"
    rehearse_lock_timeout: str = "2s"
    rehearse_statement_timeout: str = "30s"
    ledger_schema: str = "public"  # where opsagent's ledger table lives
    ledger_table: str = "schema_migrations"  # its name: another one when a framework owns schema_migrations
    hazards: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    groups: tuple[str, ...] = ()

    def same_server(self, other: HostConfig) -> bool:
        """True when ``other`` is reached through the same SSH login and runs psql as the same user against the same
        PostgreSQL cluster: two databases of one server (``diff --against-host`` staging vs prod on one machine).
        One connection, and one psql session that reconnects, then serve both (no second handshake, no second login
        shell, sudo and psql start on the server)."""
        return all(getattr(self, field) == getattr(other, field) for field in SERVER_FIELDS)


# what :meth:`HostConfig.same_server` compares: the SSH login, the become user, the cluster and its binaries
SERVER_FIELDS = (
    "address",
    "port",
    "user",
    "identity_file",
    "known_hosts",
    "gateway",
    "connect_timeout",
    "become",
    "pg_host",
    "pg_port",
    "pg_bindir",
)


@dataclasses.dataclass(frozen=True)
class ProjectPaths:
    """Where the project keeps its SQL, resolved against the inventory's folder."""

    migrations: Path
    schema: Path
    snapshots: Path
    state: Path  # .opsagent: audit log, sandbox state


@dataclasses.dataclass(frozen=True)
class Inventory:
    """A loaded, validated inventory."""

    source: Path | None
    hosts: Mapping[str, HostConfig]
    groups: Mapping[str, tuple[str, ...]]
    paths: ProjectPaths
    path_origins: Mapping[str, str] = dataclasses.field(
        default_factory=dict
    )  # paths key -> "file:line" where it is set

    def migrations_dir(self) -> Path:
        """``paths.migrations``, refused when the inventory names a folder that does not exist.

        A misspelt path would otherwise read as a project without migrations ("nothing to apply").
        The default ``sql/migrations`` may be missing (a project without migrations yet).
        """
        path = self.paths.migrations
        origin = self.path_origins.get("migrations")
        if origin is not None and not path.is_dir():
            raise ConfigError(
                f"{origin} paths.migrations: {path} is not a directory",
                hint="fix paths.migrations in the inventory (paths are relative to the inventory file)",
            )
        return path

    def host(self, name: str) -> HostConfig:
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise UsageError(f"unknown host {name!r} (inventory hosts: {known})") from None

    def resolve(self, spec: str) -> list[HostConfig]:
        """Turn ``--host`` (a host, a group, a comma list or ``all``) into hosts, in order."""
        names: list[str] = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if part == "all":
                names.extend(self.hosts)
            elif part in self.groups:
                names.extend(self.groups[part])
            else:
                names.append(self.host(part).name)
        if not names:
            raise UsageError("no host given: use --host NAME (a host, a group, a comma list or 'all')")
        return [self.hosts[n] for n in dict.fromkeys(names)]


# ---------------------------------------------------------------- schema

_Checker = Callable[[Any], Any]


def _expect_str(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError("expected a string")
    return str(value)


def _expect_optional_str(value: Any) -> str | None:
    return None if value is None else _expect_str(value)


def _expect_bindir(value: Any) -> str | None:
    """An absolute directory for the front of PATH: no ``:`` (PATH's separator), no control characters."""
    if value is None:
        return None
    text = _expect_str(value)
    if not text.startswith("/"):
        raise TypeError("expected an absolute path (e.g. /usr/lib/postgresql/15/bin)")
    if ":" in text or any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise TypeError("expected a directory without ':' or control characters (it goes on PATH)")
    return text.rstrip("/") or "/"


def _expect_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise TypeError("expected an integer")


def _expect_count(value: Any) -> int:
    number = _expect_int(value)
    if number < 0:
        raise TypeError("expected a number of 0 or more")
    return number


def _expect_port(value: Any) -> int | None:
    if value is None:
        return None
    number = _expect_int(value)
    if not 1 <= number <= 65535:
        raise TypeError("expected a TCP port between 1 and 65535")
    return number


def _expect_seconds(value: Any) -> float:
    number = _expect_number(value)
    if not number > 0:
        raise TypeError("expected a number of seconds greater than 0")
    return number


def _expect_number(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError("expected a number") from None


def _expect_timeout(value: Any) -> str:
    """PostgreSQL interval-ish setting: ``10s``, ``500ms``, ``0``."""
    text = _expect_str(value).strip()
    if parse_duration(text, bare_unit="ms", whole=True) is None:
        raise TypeError("expected a duration such as 10s, 500ms or 0")
    return text


def _expect_budget(value: Any) -> str:
    """A duration with its unit (``2min``, ``90s``, ``500ms``) or ``0``: a bare number would be ambiguous."""
    text = _expect_str(value).strip()
    if parse_duration(text, bare_unit=None) is None:
        raise TypeError("expected a duration with a unit such as 2min, 90s or 0")
    return text


_NAMEDATALEN = 63  # PostgreSQL truncates longer identifiers: two long names could silently become one table


def _expect_identifier(value: Any) -> str:
    """A PostgreSQL name (any characters: it is always quoted), non-empty, at most 63 bytes, no control characters."""
    text = _expect_str(value)
    if not text:
        raise TypeError("expected a table or schema name, not an empty string")
    if len(text.encode("utf-8")) > _NAMEDATALEN:
        raise TypeError(f"expected a name of at most {_NAMEDATALEN} bytes (PostgreSQL would truncate it)")
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise TypeError("expected a name without control characters or line breaks")
    return text


def _expect_schema_name(value: Any) -> str:
    text = _expect_identifier(value)
    if text.startswith("pg_"):
        raise TypeError("schema names beginning with pg_ are reserved by PostgreSQL")
    return text


def _expect_mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("expected a mapping")
    return value


HOST_KEYS: dict[str, _Checker] = {
    "address": _expect_str,
    "port": _expect_port,
    "user": _expect_optional_str,
    "identity_file": _expect_optional_str,
    "known_hosts": _expect_str,
    "gateway": _expect_optional_str,
    "database": _expect_str,
    "become": _expect_optional_str,
    "pg_host": _expect_optional_str,
    "pg_port": _expect_port,
    "pg_bindir": _expect_bindir,
    "backup_dir": _expect_str,
    "keep_backups": _expect_count,
    "connect_timeout": _expect_seconds,
    "command_timeout": _expect_seconds,
    "lock_timeout": _expect_timeout,
    "lock_retry_for": _expect_budget,
    "statement_timeout": _expect_timeout,
    "rehearse_lock_timeout": _expect_timeout,
    "rehearse_statement_timeout": _expect_timeout,
    "ledger_schema": _expect_schema_name,
    "ledger_table": _expect_identifier,
    "hazards": _expect_mapping,
    "description": _expect_optional_str,
}
PATH_KEYS = ("migrations", "schema", "snapshots", "state")
TOP_KEYS = ("defaults", "hosts", "groups", "paths")


# ---------------------------------------------------------------- YAML with lines


class _Located:
    """Maps key paths (``hosts.prod.port``) to 1-based source lines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {}

    def error(self, path: str, message: str) -> ConfigError:
        line = self.lines.get(path)
        where = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{where} {path}: {message}" if path else f"{where}: {message}")


def _to_python(node: yaml.Node, path: str, located: _Located) -> Any:
    located.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            located.lines[child] = key_node.start_mark.line + 1
            if key in result:
                raise located.error(child, "duplicate key")
            result[key] = _to_python(value_node, child, located)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, f"{path}[{i}]", located) for i, item in enumerate(node.value)]
    value = yaml.SafeLoader(  # construct the scalar with YAML's own typing rules
        ""
    ).construct_object(node, deep=True)
    if isinstance(value, str):
        value = _expand_env(value, path, located)
    return value


def _expand_env(text: str, path: str, located: _Located) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise located.error(path, f"environment variable {name} is not set (use ${{{name}:-default}})")

    return _ENV_RE.sub(replace, text)


def _read_yaml(path: Path, located: _Located) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read inventory: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{located.source}{line}: invalid YAML: {problem}") from None
    if node is None:
        return {}
    data = _to_python(node, "", located)
    if not isinstance(data, dict):
        raise located.error("", "the inventory must be a mapping with hosts:, groups:, defaults:")
    return data


# ---------------------------------------------------------------- loading


def inventory_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--inventory``, else ``$OPSAGENT_INVENTORY``, else ``./inventory.yaml``."""
    chosen = explicit or os.environ.get("OPSAGENT_INVENTORY") or DEFAULT_INVENTORY
    return Path(chosen).expanduser()


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest folder, from ``start`` (the working directory) upwards, holding ``inventory.yaml``, as git
    finds ``.git``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / DEFAULT_INVENTORY).is_file():
            return folder
    return None


def current_inventory() -> Inventory:
    """``$OPSAGENT_INVENTORY`` if set, else the project's ``inventory.yaml`` found upwards from here
    (none: no hosts): the inventory every task of the CLI reads."""
    if os.environ.get("OPSAGENT_INVENTORY"):
        return load_inventory()
    root = find_project_root()
    return load_inventory(root / DEFAULT_INVENTORY if root else None)


def load_inventory(path: str | os.PathLike[str] | None = None) -> Inventory:
    """Load and validate the inventory plus the generated sandbox hosts."""
    main = inventory_path(path)
    base = main.resolve().parent
    documents: list[tuple[Path, dict[str, Any], _Located]] = []
    if main.exists():
        located = _Located(str(main))
        documents.append((main, _read_yaml(main, located), located))
    elif path or os.environ.get("OPSAGENT_INVENTORY"):
        raise ConfigError(f"{main}: inventory file not found")
    sandbox = base / SANDBOX_FILE
    if sandbox.exists():
        located = _Located(str(sandbox))
        documents.append((sandbox, _read_yaml(sandbox, located), located))
    return _build(main if main.exists() else None, base, documents)


def _build(source: Path | None, base: Path, documents: list[tuple[Path, dict[str, Any], _Located]]) -> Inventory:
    raw_hosts: dict[str, tuple[dict[str, Any], dict[str, Any], _Located, Path]] = {}
    groups: dict[str, tuple[str, ...]] = {}
    paths_raw: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for doc_path, data, located in documents:
        for key in data:
            if key not in TOP_KEYS:
                raise located.error(key, f"unknown key (expected one of: {', '.join(TOP_KEYS)})")
        defaults = _section(data, "defaults", located)
        _check_host_keys(defaults, "defaults", located)
        for name, host in _section(data, "hosts", located).items():
            if host is None:
                host = {}
            if not isinstance(host, dict):
                raise located.error(f"hosts.{name}", "expected a mapping")
            raw_hosts[name] = (defaults, host, located, doc_path.resolve().parent)
        for name, members in _section(data, "groups", located).items():
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                raise located.error(f"groups.{name}", "expected a list of host names")
            groups[name] = tuple(members)
        if doc_path.name != SANDBOX_FILE.name:
            paths_raw = _section(data, "paths", located)
            for key in paths_raw:
                if key not in PATH_KEYS:
                    raise located.error(f"paths.{key}", f"unknown key (expected one of: {', '.join(PATH_KEYS)})")
                line = located.lines.get(f"paths.{key}")
                origins[key] = f"{located.source}:{line}" if line else located.source
    hosts = {name: _host(name, *parts) for name, parts in raw_hosts.items()}
    for group, members in groups.items():
        if group in hosts:
            raise _locator(documents, f"groups.{group}").error(
                f"groups.{group}", "a group cannot share its name with a host"
            )
        for member in members:
            if member not in hosts:
                raise _locator(documents, f"groups.{group}").error(f"groups.{group}", f"unknown host {member!r}")
    hosts = {
        name: dataclasses.replace(h, groups=tuple(g for g, m in groups.items() if name in m))
        for name, h in hosts.items()
    }
    _check_gateways(hosts, documents)
    return Inventory(source=source, hosts=hosts, groups=groups, paths=_paths(paths_raw, base), path_origins=origins)


def _locator(documents: list[tuple[Path, dict[str, Any], _Located]], path: str) -> _Located:
    for _, _, located in documents:
        if path in located.lines:
            return located
    return documents[0][2]


def _section(data: dict[str, Any], key: str, located: _Located) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise located.error(key, "expected a mapping")
    return value


def _check_host_keys(values: dict[str, Any], prefix: str, located: _Located) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{prefix}.{key}"
        checker = HOST_KEYS.get(key)
        if checker is None:
            raise located.error(where, f"unknown key (expected one of: {', '.join(HOST_KEYS)})")
        try:
            checked[key] = checker(value)
        except TypeError as exc:
            shown = f'"{value}"' if isinstance(value, str) else repr(value)
            raise located.error(where, f"{exc}, got {shown}") from None
    return checked


def _host(name: str, defaults: dict[str, Any], host: dict[str, Any], located: _Located, base: Path) -> HostConfig:
    merged = {**_check_host_keys(defaults, "defaults", located), **_check_host_keys(host, f"hosts.{name}", located)}
    merged.pop("description", None)
    if "address" not in merged:
        merged["address"] = name  # like ssh: the name may be an ~/.ssh/config alias
    for key in ("identity_file", "known_hosts"):
        if merged.get(key):
            merged[key] = _resolve_local(merged[key], base)
    return HostConfig(name=name, **merged)


def _resolve_local(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


_IPV4_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def gateway_problem(gateway: str, hosts: Mapping[str, HostConfig]) -> str | None:
    """Why a ``gateway`` value looks wrong (None when it is fine).

    A gateway is an inventory host, or ``[user@]host[:port]`` naming a real machine: a dotted name, an
    IP address, ``localhost`` or an ``~/.ssh/config`` alias.  A bare word that is none of these is
    almost always a misspelt inventory host, which would otherwise be looked up in DNS.
    """
    if gateway in hosts:
        return None
    _, _, rest = gateway.rpartition("@")
    if rest.startswith("["):  # [v6 address]:port
        address, _, tail = rest[1:].partition("]")
        colon, port = (":", tail[1:]) if tail.startswith(":") else ("", "")
    else:
        address, colon, port = rest.partition(":")
    if colon and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"port {port!r} of gateway {gateway!r} is not a TCP port (1-65535)"
    if not address:
        return f"gateway {gateway!r} names no host"
    if (
        "." in address
        or ":" in address
        or _IPV4_RE.match(address)
        or address == "localhost"
        or _ssh_config_knows(address)
    ):
        return None
    known = ", ".join(sorted(hosts)) or "none"
    return (
        f"gateway {gateway!r} is not an inventory host (hosts: {known}), "
        "not in ~/.ssh/config and not a full host name; "
        "write an inventory host name or user@host.example.com[:port]"
    )


def _ssh_config_knows(name: str) -> bool:
    """Whether ~/.ssh/config (or the system's ssh_config) defines ``name`` as a host alias."""
    import paramiko  # only for suspicious gateway names: keeps start-up light

    for path in (Path("~/.ssh/config").expanduser(), Path("/etc/ssh/ssh_config")):
        try:
            if not path.is_file():
                continue
            config = paramiko.SSHConfig.from_path(str(path))
        except (OSError, ValueError, paramiko.SSHException):
            continue
        if name in config.get_hostnames():
            return True
        found = config.lookup(name)
        if found.get("hostname", name) != name or "proxyjump" in found or "proxycommand" in found:
            return True
    return False


def _check_gateways(hosts: Mapping[str, HostConfig], documents: list[tuple[Path, dict[str, Any], _Located]]) -> None:
    for name, host in hosts.items():
        if host.gateway:
            problem = gateway_problem(host.gateway, hosts)
            if problem is not None:
                where = f"hosts.{name}.gateway"
                if not any(where in located.lines for _, _, located in documents):
                    where = "defaults.gateway"
                raise _locator(documents, where).error(where, problem)
    for name in hosts:
        seen = [name]
        current = hosts[name].gateway
        while current and current in hosts:
            if current in seen:
                chain = " -> ".join([*seen, current])
                where = f"hosts.{name}.gateway"
                raise _locator(documents, where).error(where, f"gateway loop: {chain}")
            seen.append(current)
            current = hosts[current].gateway


def _paths(raw: dict[str, Any], base: Path) -> ProjectPaths:
    defaults = {
        "migrations": "sql/migrations",
        "schema": "sql/schema.sql",
        "snapshots": "sql/snapshots",
        "state": ".opsagent",
    }
    merged = {**defaults, **{k: str(v) for k, v in raw.items()}}
    return ProjectPaths(**{k: Path(_resolve_local(v, base)) for k, v in merged.items()})
