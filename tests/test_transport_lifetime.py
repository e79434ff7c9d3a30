"""Remote work dies with the client: kill the client, close its connection or its channel, and nothing runs on.

The sandbox server is this machine, so the tests look at its process table (``/proc``)
and at ``pg_stat_activity`` from a new connection to see what is left on the "server".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opsagent.errors import RemoteError
from opsagent.inventory import HostConfig
from opsagent.remote.transport import CLIENT_CHECK_SQL, Remote, channel_bound_command

from .conftest import REPO, SandboxHandle

GONE_WITHIN = 6.0  # seconds; measured under 1 s (the watchdog ticks every 0.2 s); margin for a loaded machine
SLEEP = 10  # seconds of server-side work, longer than GONE_WITHIN: without the watchdog it would end on its own


# ---------------------------------------------------------------- what is left on the server


def _cmdlines() -> Iterator[tuple[int, str]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        yield int(entry.name), raw.replace(b"\0", b" ").decode("utf-8", "replace")


def processes_with(token: str) -> list[int]:
    """Server processes whose command line holds ``token`` (the test's own process excluded)."""
    return [pid for pid, line in _cmdlines() if token in line and pid != os.getpid()]


_BACKENDS: dict[str, list[int]] = {}


def backend_pids(sandbox: SandboxHandle, token: str) -> list[int]:
    sql = f"SELECT pid FROM pg_stat_activity WHERE query LIKE '%{token}%' AND pid <> pg_backend_pid()"
    return [int(line) for line in sandbox.admin.psql(sql, database="postgres", extra=["-A", "-t"]).text.split()]


def backends_with(sandbox: SandboxHandle, token: str) -> int:
    """How many of the token's backends (seen by wait_for_backend) still run; read from /proc:
    no SSH round trip in the timing."""
    return sum(Path(f"/proc/{pid}").exists() for pid in _BACKENDS.get(token, []))


def table_exists(sandbox: SandboxHandle, database: str, table: str) -> bool:
    out = sandbox.admin.psql(
        f"SELECT to_regclass('public.{table}') IS NOT NULL", database=database, extra=["-A", "-t"]
    ).text
    return out.strip() == "t"


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> float | None:
    """Seconds until ``predicate`` held, or None if it did not within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    return None


def wait_for_backend(sandbox: SandboxHandle, token: str) -> float:
    """Wait until the marked statement runs on the server; returns when it was seen (monotonic)."""

    def seen() -> bool:
        _BACKENDS[token] = backend_pids(sandbox, token)
        return bool(_BACKENDS[token])

    assert wait_until(seen, 60, 0.1) is not None, "the remote statement never started"
    return time.monotonic()


def silent_transaction(table: str, mark: str) -> str:
    """A migration-like script that prints nothing (so psql never meets a closed stdout) and commits at the end."""
    return (
        f"BEGIN;\nCREATE TABLE {table} (id int);\nDO $$BEGIN PERFORM pg_sleep({SLEEP}); END$$ /* {mark} */;\nCOMMIT;\n"
    )


def past_the_sleep(started: float) -> None:
    """Sleep until the server-side work would have ended (and committed) had nothing stopped it."""
    time.sleep(max(0.0, started + SLEEP + 1.5 - time.monotonic()))


# ---------------------------------------------------------------- a client in its own process (to SIGKILL it)

CLIENT = textwrap.dedent("""\
    import json, sys, time
    from opsagent.inventory import HostConfig
    from opsagent.remote.transport import open_remote
    spec = json.loads(sys.stdin.readline())  # not argv: the client's own command line must not hold the token
    host = HostConfig(**spec["host"])
    with open_remote(host) as remote:
        if spec["mode"] == "start":
            proc = remote.start(remote.psql_argv(extra=["-v", "mark=" + spec["token"]]))
            proc.write(spec["script"])
            print("sent", flush=True)
            time.sleep(600)
        else:
            print("sent", flush=True)
            remote.run(spec["argv"], become=spec["become"], stdin=spec.get("script"))
""")


def client_process(host: HostConfig, **spec: object) -> subprocess.Popen[str]:
    fields = {
        k: getattr(host, k)
        for k in (
            "name",
            "address",
            "port",
            "user",
            "identity_file",
            "known_hosts",
            "become",
            "pg_host",
            "pg_port",
            "database",
        )
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"host": fields, **spec}) + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "sent", proc.stderr.read() if proc.stderr else ""
    return proc


def kill_client(proc: subprocess.Popen[str]) -> float:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return time.monotonic()


def token() -> str:
    return f"oatok{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- Remote.start (psql fed a script)


def test_killed_client_psql_session_stops_and_never_commits(sandbox: SandboxHandle, fresh_db: str) -> None:
    mark = token()
    table = f"lost_{mark}"
    client = client_process(
        sandbox.host_for(fresh_db), mode="start", token=mark, script=silent_transaction(table, mark)
    )
    started = wait_for_backend(sandbox, mark)
    assert processes_with(mark), "the remote psql should be running"
    killed = kill_client(client)
    psql_gone = wait_until(lambda: not processes_with(mark), GONE_WITHIN)
    backend_gone = wait_until(lambda: backends_with(sandbox, mark) == 0, GONE_WITHIN)
    print(f"\nstart/SIGKILL: psql gone after {psql_gone}s, backend gone after {backend_gone}s (kill at {killed:.1f})")
    assert psql_gone is not None, f"remote psql still running {GONE_WITHIN}s after the client was killed"
    assert backend_gone is not None, "its backend is still running"
    past_the_sleep(started)  # the COMMIT that was already buffered must never run
    assert not table_exists(sandbox, fresh_db, table)


def test_long_statement_is_cancelled_when_the_connection_drops(sandbox: SandboxHandle, fresh_db: str) -> None:
    """In-process: the transport is closed under a running psql; its 30 s statement stops at once."""
    mark = token()
    table = f"lost_{mark}"
    script = f"DO $$BEGIN PERFORM pg_sleep(30); END$$ /* {mark} */;\nCREATE TABLE {table} (id int);\n"
    with sandbox.remote(fresh_db) as remote:
        proc = remote.start(remote.psql_argv(extra=["-v", f"mark={mark}"]))
        proc.write(script)
        wait_for_backend(sandbox, mark)
        transport = remote.connection.client.get_transport()
        assert transport is not None
        transport.sock.close()  # as abrupt as a vanished network: no SSH goodbye
        psql_gone = wait_until(lambda: not processes_with(mark), GONE_WITHIN)
        backend_gone = wait_until(lambda: backends_with(sandbox, mark) == 0, GONE_WITHIN)
    print(f"\nstart/socket closed: psql gone after {psql_gone}s, backend gone after {backend_gone}s")
    assert psql_gone is not None and backend_gone is not None
    assert not table_exists(sandbox, fresh_db, table)


def test_closing_the_channel_alone_stops_the_command(sandbox: SandboxHandle, fresh_db: str) -> None:
    """The connection stays up (sync may reconnect or read the ledger on it): the abandoned psql must still stop."""
    mark = token()
    table = f"lost_{mark}"
    with sandbox.remote(fresh_db) as remote:
        proc = remote.start(remote.psql_argv(extra=["-v", f"mark={mark}"]))
        proc.write(silent_transaction(table, mark))
        started = wait_for_backend(sandbox, mark)
        proc.close()
        psql_gone = wait_until(lambda: not processes_with(mark), GONE_WITHIN)
        backend_gone = wait_until(lambda: backends_with(sandbox, mark) == 0, GONE_WITHIN)
        print(f"\nstart/channel closed: psql gone after {psql_gone}s, backend gone {backend_gone}s later")
        assert psql_gone is not None and backend_gone is not None
        assert remote.run(["true"], become=False).ok  # the connection itself is still usable
    past_the_sleep(started)
    assert not table_exists(sandbox, fresh_db, table)


# ---------------------------------------------------------------- Remote.run (a long command)


@pytest.mark.parametrize("become", [False, True], ids=["login-user", "become-postgres"])
def test_killed_client_long_run_command_stops(sandbox: SandboxHandle, fresh_db: str, become: bool) -> None:
    mark = token()
    canary = Path("/tmp") / f"{mark}.canary"
    argv = ["sh", "-c", f'sleep {SLEEP}; touch "$1"', mark, str(canary)]
    client = client_process(sandbox.host_for(fresh_db), mode="run", argv=argv, become=become, token=mark)
    assert wait_until(lambda: bool(processes_with(mark)), 30) is not None
    started = time.monotonic()
    kill_client(client)
    gone = wait_until(lambda: not processes_with(mark), GONE_WITHIN)
    print(f"\nrun/SIGKILL ({'become' if become else 'login user'}): command gone after {gone}s")
    assert gone is not None, "the remote command outlived its client"
    past_the_sleep(started)
    assert not canary.exists()


def test_timed_out_run_leaves_nothing_running(sandbox: SandboxHandle) -> None:
    mark = token()
    canary = Path("/tmp") / f"{mark}.canary"
    with sandbox.remote("postgres") as remote:
        with pytest.raises(RemoteError, match="timed out"):
            remote.run(["sh", "-c", f'sleep {SLEEP}; touch "$1"', mark, str(canary)], become=False, timeout=1)
        started = time.monotonic()
        assert wait_until(lambda: not processes_with(mark), GONE_WITHIN) is not None
    past_the_sleep(started)
    assert not canary.exists()


def test_psql_script_over_run_is_cancelled_when_client_dies(sandbox: SandboxHandle, fresh_db: str) -> None:
    """``Remote.psql`` (run + stdin): the whole script is already on the server when the client dies."""
    mark = token()
    table = f"lost_{mark}"
    script = silent_transaction(table, mark)
    host = sandbox.host_for(fresh_db)
    probe = Remote(host, None)  # type: ignore[arg-type]  # only to build the argv
    client = client_process(
        host, mode="run", argv=probe.psql_argv(extra=["-v", f"mark={mark}"]), become=True, script=script
    )
    started = wait_for_backend(sandbox, mark)
    kill_client(client)
    gone = wait_until(lambda: not processes_with(mark) and backends_with(sandbox, mark) == 0, GONE_WITHIN)
    print(f"\nrun psql/SIGKILL: psql and backend gone after {gone}s")
    assert gone is not None
    past_the_sleep(started)
    assert not table_exists(sandbox, fresh_db, table)


# ---------------------------------------------------------------- a login user that is not root


@pytest.fixture
def unprivileged_host(sandbox: SandboxHandle, fresh_db: str) -> Iterator[HostConfig]:
    """A login user who may only ``sudo -n -u postgres``: it cannot signal postgres's processes itself."""
    user = "oa_guard"
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", user], capture_output=True, check=False)
    subprocess.run(["usermod", "-p", "*", user], capture_output=True, check=True)
    rule = Path("/etc/sudoers.d") / f"opsagent-test-{uuid.uuid4().hex[:8]}"
    rule.write_text(f"{user} ALL=(postgres) NOPASSWD: ALL\n")
    rule.chmod(0o440)
    keyfile = Path(sandbox.state.ssh_dir) / f"authorized_keys_{user}"
    keyfile.write_text((Path(sandbox.state.ssh_dir) / "client_key.pub").read_text())
    keyfile.chmod(0o644)
    try:
        yield sandbox.host_for(fresh_db, user=user)
    finally:
        keyfile.unlink()
        rule.unlink()


def test_unprivileged_login_user_psql_still_stops(
    sandbox: SandboxHandle, fresh_db: str, unprivileged_host: HostConfig
) -> None:
    mark = token()
    table = f"lost_{mark}"
    client = client_process(unprivileged_host, mode="start", token=mark, script=silent_transaction(table, mark))
    started = wait_for_backend(sandbox, mark)
    kill_client(client)
    gone = wait_until(lambda: not processes_with(mark) and backends_with(sandbox, mark) == 0, GONE_WITHIN)
    print(f"\nstart/SIGKILL as an unprivileged login user: psql and backend gone after {gone}s")
    assert gone is not None
    past_the_sleep(started)
    assert not table_exists(sandbox, fresh_db, table)


# ---------------------------------------------------------------- the wrapper changes nothing else


def test_wrapper_keeps_status_streams_and_leaves_no_watchdog(sandbox: SandboxHandle) -> None:
    with sandbox.remote("postgres") as remote:
        failed = remote.run(["sh", "-c", "echo out; echo err >&2; exit 7"], become=False, check=False)
        assert (failed.exit_status, failed.stdout, failed.stderr) == (7, b"out\n", "err\n")
        binary = bytes(range(256)) * 64
        echoed = remote.run(["cat"], stdin=binary)
        assert echoed.stdout == binary and echoed.stderr == ""
        wrapper_pid = remote.run(["sh", "-c", "echo $PPID"], become=False).text.strip()
        argv_with_quotes = ["printf", "%s|", "a b", "'q'", '"d"', "$(touch /tmp/oa_never)", "`x`", ";", "\n"]
        assert remote.run(argv_with_quotes, become=False).text == "a b|'q'|\"d\"|$(touch /tmp/oa_never)|`x`|;|\n|"
        assert not Path("/tmp/oa_never").exists()
        lingering = wait_until(
            lambda: not [p for p, line in _cmdlines() if f"opsagent-watchdog {wrapper_pid}" in line], 2
        )
        assert lingering is not None, "the watchdog outlived its command"


def test_client_check_sql_arms_client_connection_check(sandbox: SandboxHandle) -> None:
    out = sandbox.admin.psql(
        CLIENT_CHECK_SQL + "\nSHOW client_connection_check_interval;", database="postgres", extra=["-A", "-t"]
    ).text
    assert out.strip() == "1s"


# ---------------------------------------------------------------- the wrapper alone (no ssh): with and without setsid


@pytest.mark.parametrize("with_setsid", [True, False], ids=["setsid", "no-setsid"])
def test_wrapper_stops_its_command_when_its_stderr_reader_goes(tmp_path: Path, with_setsid: bool) -> None:
    """sshd closing the channel = the reader of the command's stderr going away; the session leader is the wrapper."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sleep", "touch", *(["setsid"] if with_setsid else [])):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    mark = token()
    canary = tmp_path / "canary"
    command = channel_bound_command(["sh", "-c", f'sleep {SLEEP}; touch "$1"', mark, str(canary)])
    proc = subprocess.Popen(
        ["sh", "-c", command],
        env={"PATH": str(bin_dir)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert wait_until(lambda: bool(processes_with(mark)), 10) is not None
    started = time.monotonic()
    assert proc.stderr is not None and proc.stdout is not None
    proc.stderr.close()  # what sshd does when the channel closes or the client vanishes
    proc.stdout.close()
    gone = wait_until(lambda: not processes_with(mark), GONE_WITHIN)
    proc.wait(10)
    print(f"\nwrapper alone ({'setsid' if with_setsid else 'no setsid'}): command gone after {gone}s")
    assert gone is not None
    past_the_sleep(started)
    assert not canary.exists()


def test_client_check_sql_ends_the_backend_of_a_psql_killed_without_cancelling(
    sandbox: SandboxHandle, fresh_db: str
) -> None:
    """SIGKILL on psql itself sends no cancel: only client_connection_check_interval makes its backend stop at once."""
    for armed in (True, False):
        mark = token()
        with sandbox.remote(fresh_db) as remote:
            proc = remote.start(remote.psql_argv(extra=["-v", f"mark={mark}"]))
            proc.write(
                (CLIENT_CHECK_SQL + "\n" if armed else "")
                + f"DO $$BEGIN PERFORM pg_sleep({SLEEP}); END$$ /* {mark} */;\n"
            )
            wait_for_backend(sandbox, mark)
            psql = [pid for pid in processes_with(mark) if Path(f"/proc/{pid}/comm").read_text().strip() == "psql"]
            assert len(psql) == 1
            os.kill(psql[0], signal.SIGKILL)
            gone = wait_until(lambda: backends_with(sandbox, mark) == 0, 3)  # noqa: B023
            proc.close()
        print(f"\npsql SIGKILLed, client check {'armed' if armed else 'not armed'}: backend gone after {gone}s")
        assert (gone is not None) == armed
