"""``doctor``: check every link of the chain to a host, in as few round trips as possible.

TCP reach, host key and login need the SSH handshake; everything on the server
(sudo, client and server versions, database, backup folder) is checked by ONE
remote shell script whose sections are delimited by markers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import socket

from ..errors import HostKeyError, OpsagentError, RemoteError
from ..inventory import HostConfig, Inventory
from ..units import human_bytes
from .markers import Markers
from .transport import Endpoint, LoginError, Remote, open_remote, resolve_endpoint


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    hint: str = ""

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class DoctorReport:
    host: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, object]:
        return {"host": self.host, "ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


def run_doctor(
    host: HostConfig, inventory: Inventory | None = None, *, accept_new_host_key: bool = False
) -> DoctorReport:
    """Run all checks; never raises for a failed check, it reports it.

    The endpoint is resolved once (inventory + ~/.ssh/config, as every task does), so an
    alias, a ProxyJump or an inventory gateway is checked where the connection really goes.
    "host key: verified" is only said after a handshake with the host itself.
    """
    try:
        endpoint = resolve_endpoint(host, inventory)
    except OpsagentError as exc:
        return DoctorReport(host.name, [Check("ssh endpoint", False, exc.message, exc.hint or "")])
    checks: list[Check] = [_tcp_check(endpoint)]
    if not checks[0].ok:
        return DoctorReport(host.name, checks)
    verified = f"verified against {endpoint.known_hosts}"
    try:
        with open_remote(host, inventory, accept_new_host_key=accept_new_host_key) as remote:
            checks.append(
                Check("host key", True, verified + (f" ({len(endpoint.chain())} hops)" if endpoint.via else ""))
            )
            checks.append(Check("login", True, endpoint.describe()))
            checks.extend(_server_checks(remote))
    except HostKeyError as exc:
        checks.append(Check("host key", False, exc.message, exc.hint or ""))
    except LoginError as exc:
        checks.append(Check("host key", True, verified))
        checks.append(Check("login", False, exc.message, exc.hint or ""))
    except OpsagentError as exc:
        checks.append(Check("ssh handshake", False, exc.message, exc.hint or "check that an SSH server answers there"))
    return DoctorReport(host.name, checks)


def _tcp_check(endpoint: Endpoint) -> Check:
    first = endpoint.chain()[0]
    if first.proxy_command:
        return Check("tcp reach", True, f"through ProxyCommand {first.proxy_command} (checked by the SSH handshake)")
    where = f"{first.hostname}:{first.port}"
    shown = where if first.alias == first.hostname else f"{where} ({first.alias})"
    if first is not endpoint:
        shown += f", first hop to {endpoint.hostname}:{endpoint.port}"
    try:
        with socket.create_connection((first.hostname, first.port), timeout=first.connect_timeout):
            return Check("tcp reach", True, shown)
    except OSError as exc:
        return Check(
            "tcp reach",
            False,
            f"{shown}: {exc.strerror or exc}",
            "check address, port and firewall (and ~/.ssh/config)",
        )


def _script(remote: Remote, mark: Markers) -> str:
    host = remote.host
    pg = " ".join(shlex.quote(a) for a in remote.pg_args())
    db_literal = "'" + host.database.replace("'", "''") + "'"
    query = shlex.quote(
        "SELECT current_setting('server_version') || '|' || "
        f"(SELECT count(*) FROM pg_database WHERE datname = {db_literal})"
    )
    backup = shlex.quote(host.backup_dir)
    steps = {
        "whoami": "id -un",
        "psql": "psql --version",
        "pg_dump": "pg_dump --version",
        "server": f"psql -X -At {pg} -d postgres -c {query}",
        "backup_dir": (
            f"if [ -d {backup} ]; then if [ -w {backup} ]; then echo writable; df -Pk {backup} | tail -1; "
            f"else echo not-writable; fi; else echo absent; fi"
        ),
    }
    if host.pg_bindir is not None:  # where each tool is found (_bindir_check)
        steps["paths"] = 'for tool in psql pg_dump pg_restore; do command -v "$tool" || echo "$tool: not found"; done'
    parts = [
        f"{mark.sh('step', shlex.quote(name))}; {{ {cmd}; }} 2>&1; {mark.sh('rc', '$?')}" for name, cmd in steps.items()
    ]
    return "\n".join(parts)


def _parse_sections(text: str, mark: Markers) -> dict[str, tuple[int, str]]:
    """Each step's (exit status, output): the lines between its ``step NAME`` and ``rc N`` markers."""
    sections: dict[str, tuple[int, str]] = {}
    name, lines = "", ""
    for section in mark.sections(text)[1]:
        if section.marker.kind == "rc":
            sections[name] = (int(section.marker.text), lines)
        elif section.marker.kind == "step":
            name, lines = section.marker.text, section.text
    return sections


def _server_checks(remote: Remote) -> list[Check]:
    host = remote.host
    try:
        mark = Markers()
        result = remote.run(["sh", "-c", _script(remote, mark)], timeout=60)
    except RemoteError as exc:
        return [Check(f"sudo -n -u {host.become}", False, exc.message, exc.hint or "")]
    sections = _parse_sections(result.text, mark)
    checks = [
        Check(
            f"sudo -n -u {host.become}" if host.become else "run as login user",
            True,
            sections.get("whoami", (0, ""))[1],
        )
    ]
    for tool in ("psql", "pg_dump"):
        rc, out = sections.get(tool, (1, "no output"))
        checks.append(
            Check(f"{tool} (client)", rc == 0, out, "" if rc == 0 else "apt-get install -y postgresql-client")
        )
    if host.pg_bindir is not None:
        checks.append(_bindir_check(host.pg_bindir, sections.get("paths", (1, ""))[1]))
    checks.extend(_database_checks(host, *sections.get("server", (1, "no output"))))
    checks.append(_backup_check(host, *sections.get("backup_dir", (1, "no output"))))
    return checks


def _bindir_check(bindir: str, paths: str) -> Check:
    """Each of psql, pg_dump and pg_restore is found in ``pg_bindir`` (a missing one would quietly run from the rest
    of PATH, through pg_wrapper, or not at all)."""
    elsewhere = [line for line in paths.splitlines() if not line.startswith(bindir + "/")]
    if not elsewhere:
        return Check("pg_bindir", True, f"psql, pg_dump and pg_restore run from {bindir}")
    return Check(
        "pg_bindir",
        False,
        f"not from {bindir}: " + ", ".join(elsewhere),
        "point pg_bindir at the server's binaries (e.g. /usr/lib/postgresql/15/bin), or remove it",
    )


def _database_checks(host: HostConfig, rc: int, out: str) -> list[Check]:
    if rc != 0 or "|" not in out:
        return [
            Check(
                "server",
                False,
                out.splitlines()[-1] if out else "psql failed",
                "check pg_host/pg_port and that PostgreSQL runs",
            )
        ]
    version, count = out.rsplit("|", 1)
    exists = count.strip() == "1"
    return [
        Check("server", True, f"PostgreSQL {version}"),
        Check(
            "database",
            exists,
            host.database if exists else f"database {host.database!r} does not exist",
            "" if exists else f"createdb {host.database} (as {host.become}) or fix 'database' in the inventory",
        ),
    ]


def _backup_check(host: HostConfig, rc: int, out: str) -> Check:
    lines = out.splitlines()
    state = lines[0] if lines else ""
    if state == "writable":
        free_kb = 0
        with contextlib.suppress(IndexError, ValueError):
            free_kb = int(lines[1].split()[3])
        return Check("backup_dir", True, f"{host.backup_dir} writable, {human_bytes(free_kb * 1024)} free")
    if state == "absent":
        return Check(
            "backup_dir", True, f"{host.backup_dir} absent: created (0700, owner {host.become}) by the first backup"
        )
    return Check(
        "backup_dir",
        False,
        f"{host.backup_dir} is not writable by {host.become}",
        f"chown {host.become} {host.backup_dir} && chmod 700 {host.backup_dir}",
    )
