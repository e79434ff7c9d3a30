"""A local sandbox host: a real sshd on 127.0.0.1 plus a dedicated PostgreSQL cluster.

This is both the product's embedded default (``inv sandbox.up`` lets a new user run
the real workflow with no server) and the test harness (pytest fixtures build
sandboxes with the same code).  Nothing is mocked: opsagent reaches the sandbox
over SSH with a verified host key and runs psql as ``postgres`` through sudo.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from ..errors import SandboxError

DEFAULT_NAME = "sandbox"
DEFAULT_DATABASE = "trad"
SANDBOX_ROOT = Path("/var/lib/opsagent-sandbox")


@dataclasses.dataclass
class SandboxState:
    """What a running sandbox is made of; saved as ``state.json`` in its folder."""

    name: str
    root: str
    ssh_port: int
    pg_port: int
    database: str
    user: str = "root"
    pg_bindir: str | None = None  # given to the inventory entry when set (benchmarks: ``--pg-bindir``)

    @property
    def ssh_dir(self) -> Path:
        return Path(self.root) / "ssh"

    @property
    def pg_dir(self) -> Path:
        return Path(self.root) / "pg"

    @property
    def socket_dir(self) -> str:
        return str(self.pg_dir / "run")

    @property
    def identity_file(self) -> str:
        return str(self.ssh_dir / "client_key")

    @property
    def known_hosts(self) -> str:
        return str(self.ssh_dir / "known_hosts")

    @property
    def backup_dir(self) -> str:
        return str(Path(self.root) / "backups")

    def host_entry(self) -> dict[str, object]:
        """The inventory entry (contract keys only) that reaches this sandbox."""
        return {
            "address": "127.0.0.1",
            "port": self.ssh_port,
            "user": self.user,
            "identity_file": self.identity_file,
            "known_hosts": self.known_hosts,
            "become": "postgres",
            "pg_host": self.socket_dir,
            "pg_port": self.pg_port,
            "database": self.database,
            "backup_dir": self.backup_dir,
            "keep_backups": 10,
            **({"pg_bindir": self.pg_bindir} if self.pg_bindir else {}),
        }


@dataclasses.dataclass
class SandboxStatus:
    name: str
    exists: bool
    sshd_running: bool
    postgres_running: bool
    state: SandboxState | None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_bindir() -> Path:
    """The newest installed PostgreSQL server binaries (Debian layout)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise SandboxError("PostgreSQL server binaries not found (apt-get install -y postgresql)")
    return Path(candidates[-1]).parent


def sandbox_root_for(project_state: Path, name: str) -> Path:
    """Sandbox folder outside the project (postgres must traverse it; /root is 0700)."""
    key = hashlib.sha256(str(project_state.resolve()).encode()).hexdigest()[:8]
    return SANDBOX_ROOT / f"{key}-{name}"


def _run(argv: list[str], *, as_postgres: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = ["runuser", "-u", "postgres", "--", *argv] if as_postgres else argv
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        raise SandboxError(
            f"{full[0]} not found: run the README setup command (apt-get install openssh-server sudo postgresql)"
        ) from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise SandboxError(f"{' '.join(argv[:2])} failed: {detail[-1] if detail else proc.returncode}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise SandboxError(f"sshd did not start listening on 127.0.0.1:{port}")


class Sandbox:
    """Create, start, stop and remove one sandbox host under ``root``."""

    def __init__(
        self, root: Path, name: str = DEFAULT_NAME, database: str = DEFAULT_DATABASE, *, login_rc: bool = True
    ) -> None:
        """``login_rc=False``: the login shell of every SSH command reads no ``~/.bashrc`` (the test suite's hosts).
        bash reads it for a command sent over SSH only as a top-level shell; sshd then sets ``SHLVL=1``, so it is
        not one.  A developer's ``.bashrc`` (``pyenv init`` on this project's machines) cost 0.15-0.2 s per remote
        command, in thousands of commands, and is nothing the tests are about.  A new user's sandbox and the
        benchmarks keep it: there it is what an SSH command costs on that machine, floor and opsagent alike."""
        self.root = root
        self.name = name
        self.database = database
        self.login_rc = login_rc

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def load_state(self) -> SandboxState | None:
        try:
            return SandboxState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    # -- lifecycle

    def up(self) -> SandboxState:
        """Bring the sandbox up (idempotent: a running sandbox is left alone)."""
        if os.geteuid() != 0:
            raise SandboxError("the sandbox runs a real sshd and PostgreSQL cluster: run it as root")
        for tool in ("/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/bin/sudo"):
            if not Path(tool).exists():
                raise SandboxError(f"{tool} is missing: apt-get install -y openssh-server sudo postgresql")
        state = self.load_state()
        if state is None:
            state = self._create()
        self._start_postgres(state)
        self._start_sshd(state)
        return state

    def status(self) -> SandboxStatus:
        state = self.load_state()
        if state is None:
            return SandboxStatus(self.name, False, False, False, None)
        return SandboxStatus(self.name, True, self._sshd_running(state), self._postgres_running(state), state)

    def down(self) -> bool:
        """Stop both servers and delete everything; False if there was nothing."""
        state = self.load_state()
        if state is None and not self.root.exists():
            return False
        if state is not None:
            pid = _read_pid(state.ssh_dir / "sshd.pid")
            if pid and _pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
            if self._postgres_running(state):
                _run(
                    [str(pg_bindir() / "pg_ctl"), "-D", str(state.pg_dir / "data"), "-m", "immediate", "-w", "stop"],
                    as_postgres=True,
                    check=False,
                )
        shutil.rmtree(self.root, ignore_errors=True)
        return True

    # -- creation

    def _create(self) -> SandboxState:
        self.root.mkdir(parents=True, exist_ok=True)
        for parent in [self.root, *self.root.parents]:
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)  # postgres must traverse to its data
        state = SandboxState(self.name, str(self.root), free_port(), free_port(), self.database)
        self._create_ssh(state)
        self._create_postgres(state)
        backups = Path(state.backup_dir)
        backups.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(backups, "postgres", "postgres")
        self.state_file.write_text(json.dumps(dataclasses.asdict(state), indent=2))
        return state

    def _create_ssh(self, state: SandboxState) -> None:
        ssh = state.ssh_dir
        ssh.mkdir(exist_ok=True)
        ssh.chmod(0o711)  # sshd reads authorized_keys_<user> as that user; private keys stay 0600
        for key in ("host_key", "client_key"):
            if not (ssh / key).exists():
                _run(
                    [
                        "ssh-keygen",
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        f"opsagent-{state.name}-{key}",
                        "-f",
                        str(ssh / key),
                    ]
                )
        authorized = ssh / f"authorized_keys_{state.user}"
        authorized.write_text((ssh / "client_key.pub").read_text())
        authorized.chmod(0o644)
        host_pub = (ssh / "host_key.pub").read_text().split()
        (ssh / "known_hosts").write_text(f"[127.0.0.1]:{state.ssh_port} {host_pub[0]} {host_pub[1]}\n")
        (ssh / "sshd_config").write_text(
            "\n".join(
                [
                    f"Port {state.ssh_port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {ssh / 'host_key'}",
                    f"PidFile {ssh / 'sshd.pid'}",
                    f"AuthorizedKeysFile {ssh}/authorized_keys_%u",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "UsePAM no",
                    "StrictModes no",
                    "MaxSessions 200",
                    "MaxStartups 200:30:400",
                    "LogLevel ERROR",
                    "Subsystem sftp internal-sftp",
                    *([] if self.login_rc else ["SetEnv SHLVL=1"]),
                    "",
                ]
            )
        )

    def _create_postgres(self, state: SandboxState) -> None:
        pg = state.pg_dir
        pg.mkdir(mode=0o700, exist_ok=True)
        (pg / "run").mkdir(exist_ok=True)
        shutil.chown(pg, "postgres", "postgres")
        shutil.chown(pg / "run", "postgres", "postgres")
        _run(
            [
                str(pg_bindir() / "initdb"),
                "-D",
                str(pg / "data"),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--auth-local=peer",
                "--auth-host=reject",
                "--no-sync",
            ],
            as_postgres=True,
        )
        settings = [
            "listen_addresses = ''  # the DB port is never opened: peer auth over the socket",
            f"port = {state.pg_port}",
            f"unix_socket_directories = '{pg / 'run'}'",
            "fsync = off  # disposable sandbox: durability traded for speed",
            "synchronous_commit = off",
            "full_page_writes = off",
            "max_connections = 200",
            "shared_buffers = 128MB",
        ]
        with (pg / "data" / "postgresql.auto.conf").open("a") as handle:
            handle.write("\n".join(settings) + "\n")

    # -- processes

    def _postgres_running(self, state: SandboxState) -> bool:
        pid = _read_pid(state.pg_dir / "data" / "postmaster.pid")
        return bool(pid and _pid_alive(pid))

    def _sshd_running(self, state: SandboxState) -> bool:
        pid = _read_pid(state.ssh_dir / "sshd.pid")
        return bool(pid and _pid_alive(pid))

    def _start_postgres(self, state: SandboxState) -> None:
        if not self._postgres_running(state):
            _run(
                [
                    str(pg_bindir() / "pg_ctl"),
                    "-D",
                    str(state.pg_dir / "data"),
                    "-l",
                    str(state.pg_dir / "postgres.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                as_postgres=True,
            )
        exists = _run(
            [
                str(pg_bindir() / "psql"),
                "-X",
                "-At",
                "-h",
                state.socket_dir,
                "-p",
                str(state.pg_port),
                "-d",
                "postgres",
                "-c",
                f"SELECT 1 FROM pg_database WHERE datname = '{state.database}'",
            ],
            as_postgres=True,
        )
        if exists.stdout.strip() != "1":
            _run(
                [str(pg_bindir() / "createdb"), "-h", state.socket_dir, "-p", str(state.pg_port), state.database],
                as_postgres=True,
            )

    def _start_sshd(self, state: SandboxState) -> None:
        if self._sshd_running(state):
            return
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        _run(["/usr/sbin/sshd", "-f", str(state.ssh_dir / "sshd_config"), "-E", str(state.ssh_dir / "sshd.log")])
        _wait_port(state.ssh_port)


def traversable_temp_dir(prefix: str = "opsagent-", parent: Path = Path("/var/tmp")) -> Path:
    """A new folder under ``parent`` that the postgres user can traverse (pytest's tmp dirs are 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    base.chmod(0o711)
    return base


@contextlib.contextmanager
def temporary_sandbox(
    name: str = DEFAULT_NAME, prefix: str = "opsagent-", *, login_rc: bool = True, with_pg_bindir: bool = False
) -> Iterator[tuple[Path, SandboxState]]:
    """A sandbox host in its own temporary folder, always stopped and deleted on exit (benchmarks; ``login_rc``:
    see :class:`Sandbox`; ``with_pg_bindir``: its inventory entry names the binaries its cluster runs).  A plain
    ``kill`` (SIGTERM) of the process is an exit too: it left a benchmark's cluster and sshd running."""
    base = traversable_temp_dir(prefix)
    sandbox = Sandbox(base / "sandbox", name, login_rc=login_rc)
    with _terminate_as_exit():
        try:
            state = sandbox.up()
            yield base, dataclasses.replace(state, pg_bindir=str(pg_bindir())) if with_pg_bindir else state
        finally:
            sandbox.down()
            shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit (exit status 143) while inside, when its handler was the default one and this is the
    main thread (only there can Python install one); the handler before is put back on the way out."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminated(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def write_inventory_fragment(path: Path, states: list[SandboxState]) -> None:
    """Write the generated ``.opsagent/sandbox.yaml`` so ``--host sandbox`` just works."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"hosts": {s.name: s.host_entry() for s in states}}
    header = "# Generated by `inv sandbox.up`; removed by `inv sandbox.down`. Do not edit.\n"
    path.write_text(header + yaml.safe_dump(document, sort_keys=False))
