"""The early connection (issue 14): a one-host task's SSH connection opened before the CLI loads, its first command
held at the gate while the client imports (``opsagent/launch.py``, ``opsagent/remote/early.py``).

- What the command line must look like to connect early (pure): anything unusual opens nothing.
- The task takes the early connection as its own, and its first command is the held one (real sshd + PostgreSQL).
- Nobody claims it: the held command never runs, and nothing is left on the server.
- Another host's claim leaves it; the same name with another configuration closes it.
- A host that is down is tried once, and reported exactly as without the early connection.
- A command line that Invoke refuses after the early connection opened: exit 2, nothing ran.
- A remembered route: the next early connection needs neither Fabric nor Invoke; a stale one costs a connection,
  never the task; a host that went down is reported as before; ssh_config's ``Match exec`` still works.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opsagent.inventory import HostConfig, load_inventory
from opsagent.launch import _PLAIN_EXTRACT, _plain, early_hosts, is_our_command_line, start_early
from opsagent.remote import early
from opsagent.remote.transport import Endpoint, Remote, _build, connect_kwargs, open_remote

from .conftest import Project, SandboxHandle, silent_listener, write_inventory
from .test_head_start import _held_processes, _table_exists, _until_no_held_process

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["opsagent", "sync", "--host", "prod", "--yes"], ("sync", ["prod"])),
        (["inv", "status", "--host=prod"], ("status", ["prod"])),
        (["opsagent", "diff", "--host", "a", "--against-host", "b"], ("diff", ["a", "b"])),
        (["opsagent", "diff", "--against-host=b", "--host=a", "--json"], ("diff", ["a", "b"])),
        (["opsagent", "sync", "--host", "a,b"], None),  # a list: the fleet path
        (["opsagent", "sync", "--host", "a", "--host", "b"], None),
        (["opsagent", "sync", "--host"], None),
        (["opsagent", "sync", "--host", "--yes"], None),
        (["opsagent", "sync", "--host", "prod", "--help"], None),
        (["opsagent", "sync", "--host", "prod", "--sql"], None),  # offline: no connection at all
        (["opsagent", "sync", "--host", "prod", "--accept-new-host-key"], None),  # another host key policy
        (["opsagent", "-e", "sync", "--host", "prod"], None),  # a core option first
        (["opsagent", "sandbox.up"], None),
        (["opsagent", "new", "--host", "prod"], None),  # not a task that connects first thing
        (["opsagent"], None),
    ],
)
def test_only_a_plain_one_host_command_line_connects_early(argv: list[str], expected: object) -> None:
    assert early_hosts(argv) == expected


@pytest.mark.parametrize(
    ("argv", "plain"),
    [
        (["opsagent", "extract", "--host", "a"], True),
        (["opsagent", "extract", "--host=a", "--out", "x.sql", "--json"], True),
        (["opsagent", "extract", "--host", "a", "--jsn"], False),  # mistyped: Invoke will refuse it
        (["opsagent", "extract", "--host", "a", "--out"], False),
        (["opsagent", "extract", "--host", "a", "--out", "--json"], False),
        (["opsagent", "extract", "--host", "a", "--json", "--json"], False),
        (["opsagent", "extract", "--host", "a", "--parallel", "2"], False),
    ],
)
def test_only_a_plain_extract_runs_ahead(argv: list[str], plain: bool) -> None:
    assert _plain(argv, _PLAIN_EXTRACT) is plain


def test_only_the_cli_processes_connect_early() -> None:
    assert is_our_command_line(["/usr/local/bin/opsagent", "sync"])
    assert is_our_command_line(["/work/.venv/bin/inv", "sync"])
    assert is_our_command_line(["/work/opsagent/__main__.py", "sync"])
    assert not is_our_command_line(["/usr/bin/pytest", "sync"])
    assert not is_our_command_line([])


def _route(host: HostConfig) -> tuple[Endpoint, dict[str, Any] | None]:
    """Where ``host`` resolves, and what Paramiko is given to connect there (as ``open_remote`` claims with)."""
    conn, endpoint = _build(host, None)
    return endpoint, connect_kwargs(conn)


def test_the_task_takes_the_early_connection_and_its_held_first_command(in_project: Project) -> None:
    from opsagent.migrate.sync import Identity, SyncOptions, sync

    project = in_project
    project.write_migration("001_t.sql", "CREATE TABLE t (id int);\n")
    start_early(["opsagent", "sync", "--host", "sandbox", "--yes"])
    inventory = load_inventory(project.root / "inventory.yaml")
    with open_remote(project.host, inventory) as remote:
        assert remote.command_count == 0  # a command is held, not yet counted
        assert _held_processes(remote) >= 1  # ... and it waits on the server (this check is a command)
        held_argv = remote.psql_argv(extra=["-A", "-t", "-f", "-"], knowing_pg_dump=True)
        assert remote._next is not None and remote._next.argv == tuple(held_argv)
        result = sync(remote, project.migrations, SyncOptions(backup=False), Identity("test", None))
        assert result.outcome == "applied"
        assert remote._next is None  # the sync's session was the held command
        assert result.remote_commands == 1
    assert early._attempts == {}


@pytest.mark.parametrize("against", [False, True], ids=["schema-file", "against-host"])
def test_a_diff_holds_the_probe_it_starts_with(in_project: Project, against: bool) -> None:
    """A diff starts with the probe of each host (server facts, pg_dump's version known from the start, the
    fingerprint): it holds that very command, and claims it.  Against a database of the same server (here the same
    one), that is the probe of both, in one session."""
    from opsagent.schema.fingerprint import pair_probe_argv, probe, probe_pair

    project = in_project
    start_early(["opsagent", "diff", "--host", "sandbox", *(["--against-host", "sandbox"] if against else [])])
    with open_remote(project.host, load_inventory(project.root / "inventory.yaml")) as remote:
        if against:
            held_argv = pair_probe_argv(remote, project.host)
        else:
            held_argv = remote.psql_argv(extra=["-A", "-t"], knowing_pg_dump=True)
        assert remote._next is not None and remote._next.argv == tuple(held_argv)
        if against:
            seen, theirs = probe_pair(remote, remote.beside(project.host))
            assert theirs.fingerprint is not None and theirs.fingerprint == seen.fingerprint
        else:
            seen = probe(remote, project.host.database)
        assert seen.facts.pg_dump_version.startswith("pg_dump (PostgreSQL) ")
        assert remote._next is None and remote.command_count == 1
    assert early._attempts == {}


@pytest.mark.parametrize("flags", [(), ("--out", "snap.sql", "--json")])
def test_a_plain_extract_runs_ahead_while_the_cli_loads(in_project: Project, flags: tuple[str, ...]) -> None:
    from opsagent.schema.exclusions import ledger_exclusions
    from opsagent.schema.extract import extract

    project = in_project
    project.psql("CREATE TABLE early_extract (id int);")
    start_early(["opsagent", "extract", "--host", "sandbox", *flags])
    with open_remote(project.host, load_inventory(project.root / "inventory.yaml")) as remote:
        assert remote.held_tag("extract") is not None and remote.command_count == 1  # started before the CLI loaded
        held = remote._held["extract"]
        assert held.sent is not None  # running, not at a gate
        result = extract(remote, exclude_tables=ledger_exclusions(project.host))
        assert remote.held_tag("extract") is None and remote.command_count == 1  # no command of its own
        assert "CREATE TABLE public.early_extract" in result.dump and result.stats["tables"] >= 1


def test_an_extract_command_line_with_other_flags_only_holds_it(in_project: Project) -> None:
    from opsagent.schema.extract import extract

    project = in_project
    start_early(["opsagent", "extract", "--host", "sandbox", "--parallel", "2"])
    with open_remote(project.host, load_inventory(project.root / "inventory.yaml")) as remote:
        assert remote._held["extract"].sent is None  # at its gate: nothing runs before Invoke has parsed the flags
        project.psql("CREATE TABLE early_gated (id int);")  # after the hold: the extract runs when released
        before = remote.command_count
        result = extract(remote, exclude_tables=("public.other_table",))  # a held command takes any stdin
        assert remote.command_count == before and "CREATE TABLE public.early_gated" in result.dump


def test_a_command_started_ahead_with_another_stdin_is_not_used(remote: Remote) -> None:
    argv = remote.psql_argv(extra=["-A", "-t"])
    remote.start_ahead("k", argv, "SELECT 'ahead';", "tag")
    result = remote.run_held("k", argv, stdin="SELECT 'asked';")
    assert result.text.strip() == "asked"  # a new command: the one started ahead answered another question
    remote.start_ahead("k", argv, "SELECT 'ahead';", "tag")
    time.sleep(0.5)  # it has ended by now: its output waits in the channel
    assert remote.run_held("k", argv, stdin="SELECT 'ahead';").text.strip() == "ahead"


def test_a_command_started_ahead_dies_with_its_connection(sandbox: SandboxHandle, fresh_db: str) -> None:
    # a plain extract runs before anyone asked for its output: a client that goes away must take it along
    script = "DO $$BEGIN PERFORM pg_sleep(60); END$$ /* early-ahead-canary */;\nCREATE TABLE by_ahead ();\n"
    with sandbox.remote(fresh_db) as ahead:
        ahead.start_ahead("k", ahead.psql_argv(extra=["-A", "-t"]), script)
        with sandbox.remote(fresh_db) as watcher:
            assert _until(lambda: _running(watcher, "early-ahead-canary") == 1)
    with sandbox.remote(fresh_db) as watcher:
        assert _until(lambda: _running(watcher, "early-ahead-canary") == 0)
        assert not _table_exists(watcher, "by_ahead")


def _running(remote: Remote, mark: str) -> int:
    sql = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || :'m' || '%' AND pid <> pg_backend_pid();"
    return int(remote.psql(sql, extra=["-A", "-t", "-v", f"m={mark}"]).text.strip())


def _until(check: Callable[[], bool], seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_an_unclaimed_early_command_never_runs(in_project: Project) -> None:
    project = in_project
    canary = project.host.name
    early.begin(canary, lambda remote: remote.hold_next(remote.psql_argv(extra=["-c", "CREATE TABLE early_canary ()"])))
    early.wait_opened()
    with open_remote(dataclasses.replace(project.host, name="elsewhere")) as watcher:
        assert _held_processes(watcher) >= 1
        assert "sandbox" in early._attempts  # another host's claim leaves it for its own host
        early.discard()  # as at exit
        assert early._attempts == {}
        assert _until_no_held_process(watcher) == 0
        assert not _table_exists(watcher, "early_canary")


def test_the_same_name_with_another_configuration_is_not_taken(in_project: Project) -> None:
    project = in_project
    early.begin(project.host.name)
    early.wait_opened()
    moved = dataclasses.replace(project.host, become="nobody")
    assert early.claim(moved, *_route(moved), False) is None
    assert early._attempts == {}
    early.begin(project.host.name)
    assert early.claim(project.host, *_route(project.host), True) is None  # --accept-new-host-key
    assert early._attempts == {}


@pytest.fixture
def counting_silent_port() -> Iterator[tuple[int, list[socket.socket]]]:
    """A port that accepts and hangs up without an SSH banner; the connections it accepted."""
    with silent_listener(hang_up=True) as listener:
        yield listener


def test_a_refused_command_line_after_the_early_connection_leaves_nothing(project: Project) -> None:
    project.write_migration("001_t.sql", "CREATE TABLE t (id int);\n")
    done = project.run("sync", "--host", "sandbox", "--yes", "--no-such-flag")
    assert done.returncode == 2, done.stderr
    assert "--no-such-flag" in done.stderr and "Traceback" not in done.stderr
    with open_remote(project.host) as watcher:
        assert _until_no_held_process(watcher) == 0
        assert not _table_exists(watcher, "t")


def test_a_cli_sync_through_the_early_connection_is_one_command_and_leaves_nothing(project: Project) -> None:
    project.write_migration("001_t.sql", "CREATE TABLE t (id int);\n")
    done = project.run("sync", "--host", "sandbox", "--yes", "--no-backup", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["remote_commands"] == 1
    with open_remote(project.host) as watcher:
        assert _table_exists(watcher, "t")
        assert _until_no_held_process(watcher) == 0


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A port that accepts and then says nothing (no SSH banner): a handshake that waits."""
    with silent_listener(hang_up=False) as (port, _):
        yield port


@pytest.mark.parametrize("mode", ["1", "0"])
def test_ctrl_c_while_the_early_connection_waits_is_exit_130_in_one_line(
    project: Project, hanging_port: int, mode: str
) -> None:
    slow = dataclasses.replace(project.host, name="slow", port=hanging_port)
    write_inventory(project.root, {"sandbox": project.host, "slow": slow})
    env = {**os.environ, "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml"), "OPSAGENT_EARLY_CONNECT": mode}
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsagent", "status", "--host", "slow"],
        cwd=project.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)  # started, waiting for the banner
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in err + out


# ---------------------------------------------------------------- remembered routes


def _routes(project: Project) -> list[Path]:
    return sorted((project.root / ".opsagent" / "cache" / "routes").glob("*.json"))


def _python(project: Project, code: str, **env: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (nothing imported yet) in the project; its last stdout line, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project.root,
        env={**os.environ, "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml"), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


_EARLY_THEN_CLAIM = """
import json, sys, threading
from opsagent import launch
from opsagent.launch import start_early
read = threading.Event()  # the attempt ends only once "opening" is read (a loaded box may not run this thread sooner)
held = launch.EARLY_TASKS["status"]
launch.EARLY_TASKS["status"] = lambda remote: (read.wait(30), held(remote))[1]
start_early(["opsagent", "status", "--host", "sandbox"])
from opsagent.remote import early
opening = [sys.getswitchinterval(), early._attempts["sandbox"].done.is_set()]
read.set()
early.wait_opened()  # the launcher does not wait (the CLI loads meanwhile): here, what the attempt loaded is read
attempt = early._attempts["sandbox"]
seen = {"fabric": "fabric" in sys.modules, "invoke": "invoke" in sys.modules, "opening": opening,
        "opened": sys.getswitchinterval(),
        "link": type(attempt.connection).__name__, "error": repr(attempt.error) if attempt.error else None}
from opsagent.inventory import current_inventory
from opsagent.remote.transport import open_remote
inventory = current_inventory()
with open_remote(inventory.host("sandbox"), inventory) as remote:
    seen["claimed"] = remote._next is not None  # the held ledger read is this task's
    seen["ran"] = remote.run(["true"], become=False).ok
    seen["taken_over_by"] = type(remote.connection).__module__
print(json.dumps(seen))
"""


def test_a_remembered_route_connects_early_without_fabric_or_invoke(project: Project) -> None:
    assert _routes(project) == []
    first = _python(project, _EARLY_THEN_CLAIM)  # nothing remembered yet: Fabric resolves, as before
    assert first["fabric"] and first["link"] == "Connection" and first["ran"]
    # the handshake's thread is switched to sooner while it opens (the CLI imports meanwhile), then as before
    assert first["opening"] == [early._OPENING_SWITCH_INTERVAL_S, False] and first["opened"] == 0.005
    (route,) = _routes(project)
    assert route.stat().st_mode & 0o777 == 0o600 and route.parent.stat().st_mode & 0o777 == 0o700
    assert "client_key" in route.read_text() and "sandbox" not in route.name  # the host's name is not a path
    second = _python(project, _EARLY_THEN_CLAIM)
    assert second == {
        "fabric": False,
        "invoke": False,
        "link": "DirectLink",
        "error": None,
        "opening": [early._OPENING_SWITCH_INTERVAL_S, False],
        "opened": 0.005,
        "claimed": True,
        "ran": True,
        "taken_over_by": "fabric.connection",
    }


def test_a_stale_route_costs_a_connection_never_the_task(
    project: Project, counting_silent_port: tuple[int, list[socket.socket]]
) -> None:
    assert project.run("status", "--host", "sandbox").returncode == 0
    (route,) = _routes(project)
    good = json.loads(route.read_text())
    port, accepted = counting_silent_port
    stale = {**good, "endpoint": {**good["endpoint"], "port": port}, "connect": {**good["connect"], "port": port}}
    route.write_text(json.dumps(stale))
    done = project.run("status", "--host", "sandbox")
    assert done.returncode == 0, done.stderr
    assert len(accepted) == 1  # the early connection went where the route said ...
    assert json.loads(route.read_text()) == good  # ... the task where the host is, and the route is right again


@pytest.mark.parametrize("remembered", [False, True])
def test_a_host_that_is_down_is_tried_once_and_reported_as_before(
    project: Project, counting_silent_port: tuple[int, list[socket.socket]], remembered: bool
) -> None:
    port, accepted = counting_silent_port
    down = dataclasses.replace(project.host, name="down", port=port)
    write_inventory(project.root, {"sandbox": project.host, "down": down})
    state = load_inventory(project.root / "inventory.yaml").paths.state
    if remembered:  # it was up when last used: the early connection goes there with Paramiko alone
        early.remember_route(state, down, *_route(down))
        assert early._recall_route(state, down) is not None
    outcomes = {}
    for mode in ("1", "0"):
        accepted.clear()
        done = project.run("status", "--host", "down", env={"OPSAGENT_EARLY_CONNECT": mode})
        outcomes[mode] = (done.returncode, done.stderr.strip().splitlines()[0] if done.stderr.strip() else "")
        assert "Traceback" not in done.stderr + done.stdout
        assert len(accepted) == 1, (mode, len(accepted))
    assert outcomes["1"] == outcomes["0"]
    assert outcomes["1"][0] != 0 and "down" in outcomes["1"][1]


_MATCH_EXEC = """
import json
from opsagent.launch import _import_paramiko_alone
_import_paramiko_alone()
import paramiko.config
without = paramiko.config.invoke is None
from opsagent.inventory import HostConfig
from opsagent.remote.early import _settings_signature
from opsagent.remote.transport import resolve_endpoint
endpoint = resolve_endpoint(HostConfig(name="x", address="matched"))
print(json.dumps({"without": without, "hostname": endpoint.hostname, "signature": _settings_signature()}))
"""


def test_match_exec_in_ssh_config_still_works_and_is_never_remembered(project: Project, tmp_path: Path) -> None:
    # Paramiko was imported without Invoke (which runs Match exec): Fabric hands it over before any lookup
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text('Match exec "test -n yes"\n    HostName 127.0.0.9\n')
    seen = _python(project, _MATCH_EXEC, HOME=str(tmp_path))
    assert seen == {"without": True, "hostname": "127.0.0.9", "signature": None}


def test_an_unclaimed_session_held_without_a_gate_runs_nothing_and_goes(in_project: Project) -> None:
    project = in_project
    session = project.host.name
    early.begin(
        session,
        lambda remote: remote.hold_next(remote.psql_argv(extra=["-A", "-t", "-f", "-"]), reads_stdin_first=True),
    )
    early.wait_opened()
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'psql' "
        "AND query = '' AND pid <> pg_backend_pid();"  # connected, and not one statement received
    )
    with open_remote(dataclasses.replace(project.host, name="elsewhere")) as watcher:
        assert _until(lambda: int(watcher.psql(sql, extra=["-A", "-t"]).text) == 1)
        early.discard()  # as at exit: its stdin ends, psql exits having run nothing
        assert _until(lambda: int(watcher.psql(sql, extra=["-A", "-t"]).text) == 0)
        assert _until_no_held_process(watcher) == 0


def test_a_local_user_without_a_passwd_entry_still_remembers_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    # a container's arbitrary uid: getpass raises; the task must not (Fabric's own default user is None then)
    import getpass

    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found: 12345")

    monkeypatch.setattr(getpass, "getuser", no_user)
    monkeypatch.setattr(early, "_SETTINGS_FILES", ())  # this machine's ssh_config is not what is tested
    assert early._settings_signature() == [None]


_EXIT_PROBE = """
import atexit, sys, threading, time
from opsagent.launch import exit_at_once

class Finalized:
    def __del__(self):
        sys.stdout.write("finalized\\n")  # only when the interpreter tears its objects down

kept = Finalized()
atexit.register(lambda: sys.stdout.write("atexit ran\\n"))
threading.Thread(target=lambda: (time.sleep(0.3), sys.stdout.write("thread done\\n"))).start()
from concurrent.futures import ThreadPoolExecutor
idle = ThreadPoolExecutor(1)  # never shut down: its idle worker must not keep the process alive
idle.submit(int).result()
sys.stdout.write("buffered, no newline")
exit_at_once(eval(sys.argv[1]))
"""


@pytest.mark.parametrize(("code", "status"), [("None", 0), ("3", 3), ("'a message'", 1), ("256 + 7", 7)])
def test_the_console_script_exits_as_python_would_without_the_teardown(code: str, status: int) -> None:
    """``exit_at_once``: the status Python would give, the thread joined, the atexit handlers run and the buffered
    output written; the objects are never torn down (that teardown is what it spares)."""
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_PROBE, code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == status, done.stderr
    assert done.stdout == "buffered, no newlinethread done\natexit ran\n"
    assert done.stderr == ("a message\n" if status == 1 else "")


def test_the_console_script_exits_at_once_after_a_task(project: Project) -> None:
    """The real CLI goes through ``exit_at_once``: its atexit handlers ran (the unclaimed early connection of a
    refused command line was closed by one: nothing waits on the server), its output is whole, its status kept."""
    done = project.run("status", "--host", "sandbox", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["host"] == "sandbox"
    refused = project.run("status", "--host", "sandbox", "--no-such-flag")
    assert refused.returncode == 2 and "--no-such-flag" in refused.stderr
    with open_remote(project.host) as watcher:
        assert _until_no_held_process(watcher) == 0


_CTRL_C_IN_IMPORT = """
import sys
MODULE = sys.argv[1]
class Interrupting:  # Ctrl-C while the CLI's modules load: simulated at the import of one module
    def find_spec(self, name, path=None, target=None):
        if name == MODULE:
            raise KeyboardInterrupt
        return None
sys.meta_path.insert(0, Interrupting())
sys.argv = ["opsagent", "status", "--host", "nowhere"]
from opsagent.launch import main
main()
"""


# the CLI's package (before Invoke runs), and the task's module that the collection loads once Invoke runs (a loaded
# machine took over 2 s to get there: Ctrl-C landed in it, and Python printed a traceback)
@pytest.mark.parametrize("module", ["opsagent.cli", "opsagent.cli.sync"])
def test_ctrl_c_while_the_cli_loads_is_exit_130_in_one_line(module: str) -> None:
    env = {**os.environ, "OPSAGENT_EARLY_CONNECT": "0"}
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_IN_IMPORT, module], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 130 and done.stderr == "interrupted\n", (done.returncode, done.stderr)


_PARAMIKO_VERSION = """
import json, sys
from opsagent.launch import _VersionReader, _import_paramiko_alone, _installed_version
_import_paramiko_alone()
import paramiko
seen = {"metadata_loaded": "importlib.metadata" in sys.modules, "version": paramiko.__version__,
        "unknown": _installed_version("no-such-distribution-here")}
from importlib import metadata
seen["real"] = metadata.version("paramiko")
seen["real_module"] = type(sys.modules["importlib.metadata"]).__name__
seen["delegated"] = _VersionReader().version("PyYAML") == metadata.version("PyYAML")
seen["other_names"] = _VersionReader().distribution("paramiko").metadata["Name"]
print(json.dumps(seen))
"""


def test_paramiko_loads_without_importlib_metadata_and_knows_its_version() -> None:
    """The launcher reads Paramiko's version from its METADATA file (importlib.metadata costs 35-55 ms of each start):
    the same version as importlib.metadata's, the real module still loads afterwards, and the stand-in hands
    everything else (a name it cannot find, other functions) to it."""
    done = subprocess.run(
        [sys.executable, "-c", _PARAMIKO_VERSION], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(done.stdout)
    assert seen["metadata_loaded"] is False
    assert seen["version"] == seen["real"] and seen["version"][0].isdigit()
    assert seen["unknown"] is None
    assert seen["real_module"] == "module" and seen["delegated"] is True
    assert seen["other_names"].lower() == "paramiko"


_INVOKE_IMPORTS_SEEN = """
import json, sys, threading, time
seen = []  # (thread, module, time) of every Invoke and Fabric module imported
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("invoke", "fabric"):
            seen.append((threading.current_thread().name, name, time.monotonic()))
            if name == "invoke.parser" and threading.current_thread().name == "MainThread":
                time.sleep(0.5)  # the CLI's Invoke import is slow: the first connection reaches Fabric meanwhile
        return None
sys.meta_path.insert(0, Watch())
sys.argv = ["opsagent", "status", "--host", "sandbox", "--json"]
import atexit
atexit.register(lambda: sys.stderr.write("SEEN " + json.dumps(seen) + "\\n"))
from opsagent.launch import main
main()
"""


def test_the_cli_and_a_first_connection_take_turns_importing_invoke(project: Project) -> None:
    """No route remembered yet: the early thread resolves the host through Fabric, which imports Invoke, while the
    main thread loads the CLI, which imports Invoke's program module.  A package imported at once by two threads by
    two ways in can deadlock in Python's import machinery, which then hands one a partly initialized module (an
    ImportError, seen in a suite run): the two imports take turns, even when the CLI's is slow."""
    assert _routes(project) == []
    done = subprocess.run(
        [sys.executable, "-c", _INVOKE_IMPORTS_SEEN],
        cwd=project.root,
        env={**os.environ, "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert json.loads(done.stdout)["host"] == "sandbox" and len(_routes(project)) == 1
    seen = json.loads(next(line for line in done.stderr.splitlines() if line.startswith("SEEN "))[5:])
    cli = [at for thread, _, at in seen if thread == "MainThread"]
    connection = [at for thread, _, at in seen if thread == "early-ssh"]
    # one after the other.  Usually the CLI goes first (its Invoke import is held 0.5 s at invoke.parser, and without
    # the lock the first connection's Fabric import then lands inside it); on a loaded machine the first connection
    # may get there first and import all of Invoke the CLI needs, leaving the CLI nothing to import
    assert cli or connection, seen
    assert not (cli and connection) or max(cli) < min(connection) or max(connection) < min(cli), seen
