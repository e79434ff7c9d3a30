"""Real-server fixtures: sshd on 127.0.0.1 + a PostgreSQL cluster, built by opsagent.remote.sandbox.

Nothing on the remote path is mocked.  One sandbox host is shared by the whole
session; each test gets its own fresh database (and backup folder) on it.
Extra hosts (fleet tests) come from ``sandbox_factory``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import yaml

from opsagent.errors import OpsagentError
from opsagent.inventory import HostConfig
from opsagent.remote.sandbox import Sandbox, SandboxState, traversable_temp_dir
from opsagent.remote.transport import Remote, open_remote

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO.parent / "shared" / "corpora"
MEMORY = Path("/dev/shm")
MEMORY_NEEDED = 8 * 1024**3  # the test hosts' clusters, WAL and backups peaked near 2 GB per worker


def host_parent() -> Path:
    """Where the test hosts (sshd + cluster) live: in memory when ``/dev/shm`` has room, else ``/var/tmp``;
    ``OPSAGENT_TEST_HOSTS_DIR`` chooses.  Why: the disk of the CI machines writes about 40 MB/s, and every
    ``CREATE DATABASE`` copies 7.5 MB through the WAL: 100 databases took 35 s on disk and 3.4 s in memory, and
    the suite makes hundreds.  The servers are the same real sshd and PostgreSQL either way; the benchmarks in
    ``bench/`` stay on disk, where a server's data lives."""
    chosen = os.environ.get("OPSAGENT_TEST_HOSTS_DIR")
    if chosen:
        return Path(chosen)
    try:
        usage = os.statvfs(MEMORY)
    except OSError:
        return Path("/var/tmp")
    roomy = usage.f_bavail * usage.f_frsize >= MEMORY_NEEDED
    return MEMORY if roomy and os.access(MEMORY, os.W_OK) else Path("/var/tmp")


@dataclasses.dataclass
class SandboxHandle:
    """A running sandbox host and helpers to reach it."""

    state: SandboxState
    admin: Remote  # open connection, database 'postgres'

    def host_for(self, database: str | None = None, **overrides: object) -> HostConfig:
        entry = {**self.state.host_entry(), **overrides}
        if database:
            entry["database"] = database
        return HostConfig(name=self.state.name, **entry)  # type: ignore[arg-type]

    @property
    def host(self) -> HostConfig:
        return self.host_for()

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.admin.psql(f'CREATE DATABASE "{name}"', database="postgres")
        return name

    def remote(self, database: str | None = None, **overrides: object) -> AbstractContextManager[Remote]:
        return open_remote(self.host_for(database, **overrides))


# the longest files, longest first (a clean-clone run, 2 workers): with ``--dist loadfile`` a file goes whole to one
# worker in collection order, and the sqldef corpus (215 s), collected late, ran alone at the end of the run
LONGEST_FILES = (
    "test_oracle_corpus.py",
    "test_rollback.py",
    "test_restore_safety.py",
    "test_object_kinds.py",
    "test_transport_lifetime.py",
    "test_lock_retries.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files are handed out first (the same order on every worker: a stable sort of the same list)."""
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def sandbox_factory() -> Iterator[object]:
    """Build extra sandbox hosts (each a real sshd + cluster pair); all torn down at the end."""
    base = traversable_temp_dir("oat-", host_parent())
    made: list[tuple[Sandbox, Remote, AbstractContextManager[Remote]]] = []

    def make(name: str = "sandbox") -> SandboxHandle:
        sandbox = Sandbox(base / f"{name}-{len(made)}", name, login_rc=False)  # see Sandbox: no ~/.bashrc per command
        state = sandbox.up()
        manager = open_remote(HostConfig(name=name, **{**state.host_entry(), "database": "postgres"}))  # type: ignore[arg-type]
        admin = manager.__enter__()
        made.append((sandbox, admin, manager))
        return SandboxHandle(state, admin)

    yield make
    for sandbox, _admin, manager in made:
        manager.__exit__(None, None, None)
        sandbox.down()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox(sandbox_factory: object) -> SandboxHandle:
    """The shared sandbox host of this test session."""
    return sandbox_factory()  # type: ignore[operator, no-any-return]


@pytest.fixture
def fresh_db(sandbox: SandboxHandle) -> Iterator[str]:
    """A new empty database on the sandbox host, dropped afterwards.

    Why dropped: hundreds of never-dropped databases made the session's teardown (removing the
    cluster's files) cost minutes; a drop on a cluster with fsync off costs milliseconds.
    """
    name = sandbox.create_database()
    yield name
    with contextlib.suppress(OpsagentError):  # a test that broke the admin connection still reports its own result
        sandbox.admin.psql(
            'DROP DATABASE IF EXISTS :"n" WITH (FORCE)', "postgres", extra=["-v", f"n={name}"], check=False
        )


@pytest.fixture
def remote(sandbox: SandboxHandle, fresh_db: str) -> Iterator[Remote]:
    """An open Remote to the sandbox host whose database is a fresh one."""
    with sandbox.remote(fresh_db) as r:
        yield r


@dataclasses.dataclass
class Project:
    """A throwaway project folder (inventory.yaml, sql/) whose host 'sandbox' has a fresh database."""

    root: Path
    host: HostConfig

    @property
    def migrations(self) -> Path:
        return self.root / "sql" / "migrations"

    def write_migration(self, name: str, sql: str) -> Path:
        path = self.migrations / name
        path.write_text(sql)
        return path

    def run(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI (``python -m opsagent``) in this project, without a terminal."""
        full_env = {
            **os.environ,
            "OPSAGENT_INVENTORY": str(self.root / "inventory.yaml"),
            "COLUMNS": "200",
            **(env or {}),
        }
        return subprocess.run(
            [sys.executable, "-m", "opsagent", *args],
            cwd=self.root,
            input=input or "",
            text=True,
            capture_output=True,
            env=full_env,
            timeout=timeout,
            check=False,
        )

    def psql(self, sql: str) -> str:
        with open_remote(self.host) as r:
            return r.psql(sql, extra=["-A", "-t"]).text


def write_inventory(root: Path, hosts: dict[str, HostConfig], groups: dict[str, list[str]] | None = None) -> Path:
    document: dict[str, object] = {"hosts": {}}
    for name, host in hosts.items():
        entry = {
            k: getattr(host, k)
            for k in (
                "address",
                "port",
                "user",
                "identity_file",
                "known_hosts",
                "become",
                "pg_host",
                "pg_port",
                "pg_bindir",
                "database",
                "backup_dir",
                "keep_backups",
            )
        }
        document["hosts"][name] = entry  # type: ignore[index]
    if groups:
        document["groups"] = groups
    path = root / "inventory.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path: Path, sandbox: SandboxHandle, fresh_db: str) -> Project:
    root = tmp_path / "proj"
    (root / "sql" / "migrations").mkdir(parents=True)
    backup_dir = Path(sandbox.state.root) / "backups" / fresh_db
    host = sandbox.host_for(fresh_db, backup_dir=str(backup_dir))
    write_inventory(root, {"sandbox": host})
    return Project(root, host)


@pytest.fixture
def in_project(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """The project's inventory is the current one and the early connection is on; any connection opened early and
    left unclaimed is closed after the test."""
    from opsagent.remote import early

    monkeypatch.setenv("OPSAGENT_INVENTORY", str(project.root / "inventory.yaml"))
    monkeypatch.delenv("OPSAGENT_EARLY_CONNECT", raising=False)
    yield project
    early.discard()


def _hang_up_after_the_banner(conn: socket.socket) -> None:
    """Close only once the client's banner line is read: a close with unread bytes in the socket is a reset, not an
    end of stream, and whether the client's banner had arrived yet was a race, so the client's error text changed
    from run to run ("Error reading SSH protocol banner" or "...Connection reset by peer")."""
    conn.settimeout(2)
    received = b""
    try:
        while b"\n" not in received:
            chunk = conn.recv(4096)
            if not chunk:
                break
            received += chunk
    except OSError:
        pass
    conn.close()


@contextlib.contextmanager
def silent_listener(*, hang_up: bool) -> Iterator[tuple[int, list[socket.socket]]]:
    """A local port that accepts and never sends an SSH banner: it hangs up once it has read the client's banner
    (``hang_up``: a host whose sshd is down behind a proxy) or keeps the connection open (a handshake that waits).
    Yields the port and the connections it accepted (closed ones too: their number is how often a client tried)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)
            if hang_up:
                _hang_up_after_the_banner(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        server.close()
