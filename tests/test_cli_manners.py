"""What a new user meets at the command line (issue 15): parse errors, tracebacks, the project root, piped output,
byte units and fleet summaries.  Both front doors run for real: ``inv`` from the repository root and
``python -m opsagent``; hosts are the real sshd + PostgreSQL sandbox."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.panel import Panel
from rich.progress import Progress

from opsagent.cli import base
from opsagent.cli.environment import Environment, PipedConsole, task_context
from opsagent.cli.fleet import check_fleet_flags, summary_table, sync_columns
from opsagent.errors import ExitCode, UsageError
from opsagent.inventory import find_project_root
from opsagent.migrate.sync import Identity, SyncOptions
from opsagent.migrate.sync import sync as run_sync
from opsagent.remote.fleet import sync_outcome, version_span
from opsagent.units import byte_progress_columns, human_bytes, human_rate, transferred

from .conftest import Project, SandboxHandle, silent_listener, write_inventory

REPO = Path(__file__).resolve().parents[1]
INV = Path(sys.executable).parent / "inv"
BARE_ENV = {k: v for k, v in os.environ.items() if k not in ("OPSAGENT_INVENTORY", "COLUMNS", "LINES")}


def run_front_door(
    door: str, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``inv ARGS`` (Invoke's own program loading tasks.py) or ``python -m opsagent ARGS``, piped, no terminal."""
    argv = [str(INV), *args] if door == "inv" else [sys.executable, "-m", "opsagent", *args]
    return subprocess.run(
        argv,
        cwd=cwd,
        env={**BARE_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input="",
    )


def bare_run(
    project: Project, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in ``project`` as a user runs it: no OPSAGENT_INVENTORY, no COLUMNS, output to a pipe."""
    return run_front_door("opsagent", *args, cwd=cwd or project.root, env=env, timeout=300)


# ---------------------------------------------------------------- parse errors: exit 2, did you mean, usage line


PARSE_CASES = [
    (("statsu",), ["unknown task 'statsu'", "did you mean 'status'?", "usage: {p} <task>"]),
    (
        ("sync", "--dryrun"),
        ["unknown flag '--dryrun' for 'sync'", "did you mean '--dry-run'?", "usage: {p} sync [--options]"],
    ),
    (
        ("backup", "--host", "prod", "--lable", "x"),
        ["unknown flag '--lable'", "did you mean '--label'?", "usage: {p} backup"],
    ),
    (("new",), ["'new' is missing <description>", "usage: {p} new [--options] <description>"]),
    (("sync", "--host"), ["--host needs a value", "usage: {p} sync"]),
    (
        ("status", "--host", "prod", "--parallel", "x"),
        ["--parallel takes a whole number, got 'x'", "usage: {p} status"],
    ),
    (("--help", "statsu"), ["unknown task 'statsu'", "did you mean 'status'?"]),
    (("hosts", "--json=3"), ["unexpected '3' after 'hosts'", "usage: {p} hosts"]),
]


@pytest.mark.parametrize(("args", "expected"), PARSE_CASES, ids=[" ".join(a) for a, _ in PARSE_CASES])
def test_parse_errors_are_one_usage_error_under_both_front_doors(args: tuple[str, ...], expected: list[str]) -> None:
    answers = {}
    for door, program in (("inv", "inv"), ("opsagent", "opsagent")):
        done = run_front_door(door, *args)
        assert done.returncode == 2, (door, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr and done.stdout == "", (door, done.stderr, done.stdout)
        lines = done.stderr.splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: "), (door, done.stderr)
        for text in expected:
            assert text.format(p=program) in done.stderr, (door, text, done.stderr)
        answers[door] = done.stderr.replace(program, "PROGRAM")
    assert answers["inv"] == answers["opsagent"]


def test_no_did_you_mean_when_nothing_is_close() -> None:
    done = run_front_door("inv", "zzzzqqq")
    assert done.returncode == 2 and "unknown task 'zzzzqqq'" in done.stderr and "did you mean" not in done.stderr


def test_tasks_still_run_under_inv_after_adoption(tmp_path: Path) -> None:
    """The adopted Program still runs tasks: ``inv hosts --json`` from the repo root reads the repo's inventory."""
    done = run_front_door("inv", "hosts", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inventory"] == str(REPO / "inventory.yaml")


# ---------------------------------------------------------------- numeric flags


@pytest.mark.parametrize(
    ("parallel", "timeout", "message"),
    [
        (-1, 0, "--parallel takes a whole number"),
        (0, -5, "--timeout takes seconds"),
        (0, float("nan"), "--timeout takes seconds"),
        (0, float("inf"), "--timeout takes seconds"),
    ],
)
def test_fleet_flags_refuse_negative_and_non_finite(parallel: int, timeout: float, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        check_fleet_flags(parallel, timeout)
    assert caught.value.exit_code == ExitCode.USAGE
    check_fleet_flags(3, 2.5)  # the valid ones pass


def test_negative_parallel_over_several_hosts_is_exit_2_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(
        "hosts:\n  a: {address: 127.0.0.1, port: 9}\n  b: {address: 127.0.0.1, port: 9}\n"
    )
    for door in ("inv", "opsagent"):
        # inv loads tasks.py from the repository; the inventory is the temporary one
        done = run_front_door(
            door,
            "status",
            "--host",
            "all",
            "--parallel=-2",
            cwd=REPO if door == "inv" else tmp_path,
            env={"OPSAGENT_INVENTORY": str(tmp_path / "inventory.yaml")},
        )
        assert done.returncode == 2, (door, done.stderr)
        assert "--parallel takes a whole number" in done.stderr and "cannot connect" not in done.stderr


def test_float_flags_take_fractions_and_say_so_in_help(tmp_path: Path) -> None:
    """``timeout: float = 0`` used to make an int flag: ``--timeout 2.5`` was refused."""
    (tmp_path / "inventory.yaml").write_text(
        "hosts:\n  a: {address: 127.0.0.1, port: 9}\n  b: {address: 127.0.0.1, port: 9}\n"
    )
    env = {"OPSAGENT_INVENTORY": str(tmp_path / "inventory.yaml")}
    done = run_front_door("opsagent", "status", "--host", "all", "--timeout", "2.5", "--json", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr  # parsed; both hosts then fail to connect (nothing listens on port 9)
    assert {h["status"] for h in json.loads(done.stdout)["hosts"]} == {"failed"}
    for door, args in (("inv", ("--help", "status")), ("opsagent", ("status", "--help"))):
        helped = run_front_door(door, *args)
        assert helped.returncode == 0 and "--timeout=NUMBER" in helped.stdout and "--parallel=INT" in helped.stdout


@pytest.mark.parametrize("door", ["inv", "opsagent"])
@pytest.mark.parametrize("args", [("--list",), ("status", "--help")])
def test_a_reader_that_goes_away_is_not_a_traceback(door: str, args: tuple[str, ...]) -> None:
    """``inv --list | head -1``: the pipe has no reader any more when we write."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # before the program starts: its first write meets a closed pipe, every time
    try:
        argv = [str(INV), *args] if door == "inv" else [sys.executable, "-m", "opsagent", *args]
        done = subprocess.run(
            argv, cwd=REPO, env=BARE_ENV, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, check=False
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 1


_CTRL_C_IN_INVOKE = """
import importlib, sys
door, where = sys.argv[1], sys.argv[2]
module, owner, method = where.rsplit(".", 2)
def interrupted(*args, **kwargs):  # Ctrl-C landing while Invoke itself works, outside any task's own guard
    raise KeyboardInterrupt
setattr(getattr(importlib.import_module(module), owner), method, interrupted)
sys.argv = [door, "hosts", "--json"]
if door == "inv":
    from invoke.main import program
    program.run()
else:
    from opsagent.launch import main
    main()
"""


@pytest.mark.parametrize("door", ["inv", "opsagent"])
@pytest.mark.parametrize("where", ["invoke.program.Program.parse_tasks", "invoke.executor.Executor.execute"])
def test_ctrl_c_while_invoke_parses_or_dispatches_is_exit_130_in_one_line(door: str, where: str) -> None:
    """Invoke's own ``Program.run`` turns a Ctrl-C into a silent exit 1; the CLI's program says it and exits 130."""
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_IN_INVOKE, door, where],
        cwd=REPO,
        env={**BARE_ENV, "OPSAGENT_EARLY_CONNECT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (130, "interrupted\n")


# ---------------------------------------------------------------- paramiko's tracebacks


@pytest.fixture
def silent_ssh_port() -> Iterator[int]:
    """A TCP port that accepts and hangs up without an SSH banner (a host whose sshd is down behind a proxy)."""
    with silent_listener(hang_up=True) as (port, _):
        yield port


@pytest.mark.parametrize("door", ["inv", "opsagent"])
def test_host_down_in_a_fleet_is_one_line_not_paramiko_tracebacks(
    project: Project, silent_ssh_port: int, door: str
) -> None:
    down = dataclasses.replace(project.host, name="down", port=silent_ssh_port)
    write_inventory(project.root, {"sandbox": project.host, "down": down})
    env = {"OPSAGENT_INVENTORY": str(project.root / "inventory.yaml")}
    done = run_front_door(
        door, "status", "--host", "all", cwd=REPO if door == "inv" else project.root, env=env, timeout=300
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "Exception (client)" not in done.stderr
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") > 3}
    assert "ok" in rows["sandbox"]
    assert "failed" in rows["down"] and "Error reading SSH protocol banner" in rows["down"]


def test_paramiko_messages_are_kept_not_printed(capfd: pytest.CaptureFixture[str]) -> None:
    import logging

    from opsagent.remote import liblog

    liblog.quiet_library_loggers()
    logging.getLogger("paramiko.transport").error("Exception (client): Error reading SSH protocol banner")
    logging.getLogger("paramiko.transport").error("Traceback (most recent call last):")
    assert capfd.readouterr().err == ""
    assert liblog.library_messages()[-1] == "Exception (client): Error reading SSH protocol banner"


# ---------------------------------------------------------------- project root


def test_project_root_is_found_upwards_and_env_still_wins(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    deep = root / "sql" / "migrations"
    deep.mkdir(parents=True)
    (root / "inventory.yaml").write_text("hosts:\n  sandbox: {address: 127.0.0.1}\n")
    assert find_project_root(deep) == root.resolve()
    assert find_project_root(tmp_path) is None
    done = run_front_door("opsagent", "hosts", "--json", cwd=deep)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["inventory"] == str((root / "inventory.yaml").resolve())
    assert [h["name"] for h in document["hosts"]] == ["sandbox"]
    nested = deep / "other"
    nested.mkdir()
    (nested / "inventory.yaml").write_text("hosts:\n  inner: {address: 127.0.0.1}\n")
    assert [
        h["name"] for h in json.loads(run_front_door("opsagent", "hosts", "--json", cwd=nested).stdout)["hosts"]
    ] == ["inner"]
    chosen = run_front_door(
        "opsagent", "hosts", "--json", cwd=nested, env={"OPSAGENT_INVENTORY": str(root / "inventory.yaml")}
    )
    assert [h["name"] for h in json.loads(chosen.stdout)["hosts"]] == ["sandbox"]


def test_status_from_a_subdirectory_reaches_the_projects_host(project: Project) -> None:
    project.write_migration("001_a.sql", "CREATE TABLE a (id int);\n")
    done = bare_run(project, "status", "--host", "sandbox", "--json", cwd=project.migrations)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"pending": 1}


def test_outside_any_project_a_host_task_is_refused_with_a_hint(tmp_path: Path) -> None:
    done = run_front_door("opsagent", "describe", "orders", "--host", "sandbox", cwd=tmp_path)
    assert done.returncode == 2
    assert (
        "not inside an opsagent project" in done.stderr
        and "hint:" in done.stderr
        and "OPSAGENT_INVENTORY" in done.stderr
    )
    assert "Traceback" not in done.stderr and list(tmp_path.iterdir()) == []


def test_project_inventory_refuses_outside_and_accepts_inside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPSAGENT_INVENTORY", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="not inside an opsagent project") as caught:
        base.project_inventory()
    assert caught.value.exit_code == ExitCode.USAGE
    (tmp_path / "inventory.yaml").write_text("hosts: {}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    inv = base.project_inventory()
    assert inv.source is not None and inv.source.resolve() == (tmp_path / "inventory.yaml").resolve()
    assert inv.paths.migrations == (tmp_path / "sql" / "migrations").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml", "sub"]


def test_a_task_that_needs_a_project_is_refused_outside_before_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from invoke.context import Context
    from invoke.exceptions import Exit

    ran: list[Path] = []

    def write_here(c: Context) -> None:
        """A task that writes into the project (as 'new' does)."""
        ran.append(Path.cwd())

    task = base.command(needs_project=True)(write_here)
    monkeypatch.delenv("OPSAGENT_INVENTORY", raising=False)
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(Exit) as caught:
        task(task_context(Environment(stdout=out, stderr=err)))
    assert caught.value.code == ExitCode.USAGE and ran == []
    assert "not inside an opsagent project" in err.getvalue() and out.getvalue() == ""
    (tmp_path / "inventory.yaml").write_text("hosts: {}\n")
    (tmp_path / "sql").mkdir()
    monkeypatch.chdir(tmp_path / "sql")
    task(Context())  # a context made elsewhere: the process's own streams
    assert [p.resolve() for p in ran] == [(tmp_path / "sql").resolve()]


def test_inv_from_a_subdirectory_of_the_repository_uses_its_inventory() -> None:
    done = run_front_door("inv", "hosts", "--json", cwd=REPO / "sql" / "migrations")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inventory"] == str(REPO / "inventory.yaml")


# ---------------------------------------------------------------- piped output


def _no_trailing_blanks(text: str) -> None:
    bad = [line for line in text.splitlines() if line != line.rstrip()]
    assert not bad, bad[:3]


def test_piped_console_never_wraps_crops_or_pads() -> None:
    stdout = io.StringIO()
    console = Environment(stdout=stdout, stderr=io.StringIO()).out  # not terminals
    assert isinstance(console, PipedConsole)
    long_line = "backup_" + "x" * 300 + ".dump"
    console.print(long_line)
    console.print(Panel("short"))
    console.print(Panel(long_line))
    out = stdout.getvalue()
    lines = out.splitlines()
    assert lines[0] == long_line
    assert max(len(line) for line in lines[1:4]) < 20  # the short panel is drawn at its natural width, not 100k wide
    assert any(long_line in line for line in lines[4:])
    _no_trailing_blanks(out)


def test_backup_names_and_wide_describe_survive_a_pipe(project: Project) -> None:
    label = "before-the-very-long-quarterly-migration"  # 40 characters: the longest label a name can carry
    column = "a_column_name_long_enough_to_push_a_table_past_eighty_columns"
    default = "'" + "d" * 90 + "'::text"
    project.psql(f"CREATE TABLE orders (id bigint PRIMARY KEY, {column} text NOT NULL DEFAULT {default})")
    assert bare_run(project, "backup", "--host", "sandbox", "--label", label).returncode == 0
    listed = bare_run(project, "backups", "--host", "sandbox", env={"COLUMNS": "80"})  # a pipe ignores COLUMNS
    assert listed.returncode == 0, listed.stderr
    name = json.loads(bare_run(project, "backups", "--host", "sandbox", "--json").stdout)["backups"][0]["name"]
    assert len(name) > 80 - 20 and label in name
    assert any(name in line for line in listed.stdout.splitlines()), listed.stdout
    _no_trailing_blanks(listed.stdout)
    described = bare_run(project, "describe", "orders", "--host", "sandbox")
    assert described.returncode == 0, described.stderr
    row = next(line for line in described.stdout.splitlines() if column in line)
    assert default.split("::")[0] in row and max(len(line) for line in described.stdout.splitlines()) > 150
    _no_trailing_blanks(described.stdout)


def test_lint_lines_piped_have_no_trailing_blanks_and_are_whole(project: Project) -> None:
    project.write_migration(
        "001_drop.sql", "ALTER TABLE legacy_orders DROP COLUMN note;\nDROP TABLE legacy_accounts;\n"
    )
    done = bare_run(project, "lint", env={"COLUMNS": "60"})  # was: wrapped at 60 and padded with blanks to 60
    assert done.returncode == 4, done.stderr
    _no_trailing_blanks(done.stdout)
    lines = done.stdout.splitlines()
    assert any("DROP TABLE legacy_accounts: deletes the table and its data" in line for line in lines), done.stdout
    assert any("rename it first and drop it in a later release" in line for line in lines), done.stdout


# ---------------------------------------------------------------- one unit system


def test_human_bytes_is_binary_with_postgres_labels() -> None:
    assert human_bytes(10) == "10 B"
    assert human_bytes(2048) == "2.0 kB"
    assert human_bytes(303_300_000) == "289.2 MB"  # the download from the issue: one figure, not 303.3 and 289.2
    assert human_bytes(3 * 1024**4) == "3.0 TB"
    assert human_rate(1024 * 1024) == "1.0 MB/s" and human_rate(None) == "?"
    assert transferred(1024, 2048) == "1.0 kB/2.0 kB" and transferred(1024, None) == "1.0 kB"


def test_progress_columns_show_the_summarys_figure() -> None:
    bytes_column, rate_column = byte_progress_columns()
    progress = Progress(bytes_column, rate_column, console=Console(file=io.StringIO()))
    task_id = progress.add_task("download", total=303_300_000)
    progress.update(task_id, completed=303_300_000)
    task = progress.tasks[0]
    assert str(bytes_column(task)) == f"{human_bytes(303_300_000)}/{human_bytes(303_300_000)}" == "289.2 MB/289.2 MB"
    assert str(rate_column(task)) == "?"  # no speed sample yet: said, not invented
    unknown_total = progress.add_task("dump", total=None, completed=303_300_000)
    assert str(bytes_column(progress.tasks[unknown_total])) == "289.2 MB"


ROGUE_SIZE_FORMATTING = re.compile(r"DownloadColumn|TransferSpeedColumn|filesize\.|/ ?1024\b|GiB|MiB")


def test_sizes_are_formatted_only_by_units() -> None:
    offenders = set()
    for path in sorted((REPO / "opsagent").rglob("*.py")):
        relative = str(path.relative_to(REPO))
        if relative == "opsagent/units.py":
            continue
        if ROGUE_SIZE_FORMATTING.search(path.read_text()):
            offenders.add(relative)
    assert offenders == set(), "format sizes with opsagent.units"


# ---------------------------------------------------------------- fleet sync summary


def test_version_span() -> None:
    assert version_span([]) == "" and version_span(["001"]) == "001" and version_span(["001", "002"]) == "001, 002"
    assert version_span([f"{i:03d}" for i in range(1, 116)]) == "001 … 115"


def _render(outcome: Any, dry_run: bool) -> str:
    out = io.StringIO()
    Console(file=out, width=400, color_system=None).print(summary_table([outcome], "sync", sync_columns(dry_run)))
    return out.getvalue()


def test_fleet_sync_rows_count_what_would_apply_and_what_applied(
    sandbox: SandboxHandle, fresh_db: str, tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for i in range(1, 116):
        (migrations / f"{i:03d}_t{i}.sql").write_text(f"CREATE TABLE t{i} (id int);\n")
    identity = Identity("tester", None)
    with sandbox.remote(fresh_db) as remote:
        dry = run_sync(remote, migrations, SyncOptions(dry_run=True, backup=False), identity)
        real = run_sync(remote, migrations, SyncOptions(backup=False), identity)
    dry_row = sync_outcome("one", dry.as_dict())
    assert dry_row.ok and dry_row.message == "would apply 115 (001 … 115)"
    assert len(dry_row.details["would_apply"]) == 115 and dry_row.details["applied"] == []
    shown = _render(dry_row, dry_run=True)
    assert "would apply" in shown and re.search(r"│\s*115\s*│", shown), shown
    real_row = sync_outcome("one", real.as_dict())
    assert real_row.ok and real_row.message == "applied 115 (001 … 115)"
    shown = _render(real_row, dry_run=False)
    assert re.search(r"│\s*115\s*│", shown) and "002" not in shown, shown


def test_fleet_sync_row_of_a_failure_keeps_the_error_and_what_was_applied() -> None:
    steps = [
        {"version": "001", "status": "applied"},
        {"version": "002", "status": "applied"},
        {"version": "003", "status": "failed"},
    ]
    row = sync_outcome(
        "one",
        {
            "action": "sync",
            "ok": False,
            "outcome": "failed",
            "error": "003_x.sql:1: boom",
            "steps": steps,
            "applied": ["001", "002"],
        },
    )
    assert not row.ok and row.exit_code == ExitCode.FAILURE
    assert row.message == "applied 2 (001, 002); 003_x.sql:1: boom"
    nothing = sync_outcome(
        "two", {"action": "sync", "ok": True, "outcome": "nothing_to_do", "error": None, "steps": [], "applied": []}
    )
    assert nothing.message == "nothing to do"


# ---------------------------------------------------------------- every project task refuses outside a project

PROJECT_TASKS = [
    ("new", "add x"),
    ("new", "--from-diff", "--host", "sandbox", "add x"),
    ("plan", "--host", "sandbox"),
    ("check",),
    ("diff", "--host", "sandbox"),
    ("extract", "--host", "sandbox"),
    ("sync", "--host", "sandbox", "--yes"),
    ("status", "--host", "sandbox"),
    ("history", "--host", "sandbox"),
    ("baseline", "--host", "sandbox", "--version", "001"),
    ("repair", "--host", "sandbox", "--yes"),
    ("backup", "--host", "sandbox", "--download"),
    ("backups.get", "--host", "sandbox", "backup.dump"),
    ("lint",),
    ("lint", "--file", "001_x.sql"),
    ("rollback", "--host", "sandbox", "--to", "001", "--yes"),
]


def _inv_outside(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``inv`` run from a folder outside any project: ``--search-root`` finds opsagent's tasks.py, the working
    folder stays."""
    return run_front_door("inv", "--search-root", str(REPO), *args, cwd=cwd)


@pytest.mark.parametrize("args", PROJECT_TASKS, ids=[" ".join(a) for a in PROJECT_TASKS])
def test_every_project_task_is_refused_outside_a_project_and_creates_nothing(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    assert find_project_root(empty) is None
    for door in ("inv", "opsagent"):
        done = _inv_outside(*args, cwd=empty) if door == "inv" else run_front_door("opsagent", *args, cwd=empty)
        assert done.returncode == 2, (door, done.returncode, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 2, (door, done.stderr)
        assert lines[0].startswith("error: not inside an opsagent project") and lines[1].startswith("hint: "), (
            door,
            done.stderr,
        )
        assert done.stdout == "" and "Traceback" not in done.stderr
        assert list(empty.iterdir()) == [], (door, list(empty.iterdir()))


def test_backup_without_download_still_runs_without_a_project_folder(tmp_path: Path) -> None:
    """Only ``--download`` writes into the project: a plain backup is not refused for want of one
    (here: no such host)."""
    done = run_front_door("opsagent", "backup", "--host", "sandbox", cwd=tmp_path)
    assert done.returncode == 2 and "unknown host 'sandbox'" in done.stderr, done.stderr  # no hosts at all here
    (tmp_path / ".opsagent").mkdir()
    (tmp_path / ".opsagent" / "sandbox.yaml").write_text(
        "hosts:\n  sandbox: {address: 127.0.0.1, port: 9, connect_timeout: 2}\n"
    )
    done = run_front_door("opsagent", "backup", "--host", "sandbox", cwd=tmp_path)
    assert done.returncode == 1 and "not inside an opsagent project" not in done.stderr, (
        done.stderr
    )  # it tried to connect
    downloaded = run_front_door("opsagent", "backup", "--host", "sandbox", "--download", cwd=tmp_path)
    assert downloaded.returncode == 2 and "not inside an opsagent project" in downloaded.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".opsagent"]


def test_host_lookups_of_project_tasks_refuse_a_folder_with_only_sandbox_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder where 'inv sandbox.up' ran has hosts but no project: the tasks' own host lookups refuse it too."""
    from opsagent.cli import plan as plan_cli

    monkeypatch.delenv("OPSAGENT_INVENTORY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".opsagent").mkdir()
    (tmp_path / ".opsagent" / "sandbox.yaml").write_text("hosts:\n  sandbox: {address: 127.0.0.1, port: 9}\n")
    assert base.single_host("sandbox")[0].name == "sandbox"  # the host itself is known
    with pytest.raises(UsageError, match="not inside an opsagent project"):
        base.hosts_named("sandbox", project=True)  # sync, status, extract and diff look their hosts up this way
    with pytest.raises(UsageError, match="not inside an opsagent project"):
        plan_cli._make_report("sandbox", "snapshot", "", "", False, "", False, err=Console(file=io.StringIO()))
    (tmp_path / "inventory.yaml").write_text("hosts:\n  prod: {address: 127.0.0.1, port: 9}\n")
    hosts, inv = base.hosts_named("prod", project=True)
    assert [h.name for h in hosts] == ["prod"] and inv.source is not None
