"""The run's ``Environment`` (issue 17): streams, terminals, width and colour decided once and passed in.

Most tests build an environment over StringIO buffers and call the real task functions with it
(``task_context``): nothing global is patched.  The entry point's own judgement of a terminal
(width, ``NO_COLOR``) is checked in a child process under a pseudo-terminal, the only honest one.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

from opsagent.cli.environment import PIPE_WIDTH, Environment, PipedConsole, TerminalConsole, environment, task_context
from opsagent.cli.progress import waiting
from opsagent.errors import ExitCode

from .conftest import Project, write_inventory

SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
LONG = "backup_" + "x" * 300 + ".dump"


def buffers() -> tuple[io.StringIO, io.StringIO, Environment]:
    out, err = io.StringIO(), io.StringIO()
    return out, err, Environment(stdout=out, stderr=err)


# ---------------------------------------------------------------- not a terminal


def test_not_a_terminal_means_no_colour_no_spinner_and_full_width_lines() -> None:
    out, err, env = buffers()
    assert isinstance(env.out, PipedConsole) and isinstance(env.err, PipedConsole)
    assert env.out.width == PIPE_WIDTH and not env.interactive
    env.out.print(f"[bold red]error:[/] {LONG}")
    with waiting("restoring x.dump", console=env.err, delay=0) as shown:
        time.sleep(0.25)
        shown.warn("the live schema differs")
    assert out.getvalue() == f"error: {LONG}\n"  # one line, never wrapped at 80 (nor at COLUMNS)
    lines = err.getvalue().splitlines()
    assert lines[0] == "restoring x.dump…" and lines[1] == "warning: the live schema differs", lines
    assert lines[2].startswith("restoring x.dump: done in "), lines
    assert not any(frame in err.getvalue() for frame in SPINNER_FRAMES)
    assert "\x1b" not in out.getvalue() + err.getvalue() and "\r" not in err.getvalue()


def test_a_terminal_gets_colours_a_spinner_and_its_width() -> None:
    screen = io.StringIO()
    env = Environment(stdout=screen, stderr=screen, stdout_isatty=True, stderr_isatty=True, width=60)
    assert isinstance(env.out, TerminalConsole) and env.out.width == 60
    env.out.print(f"[red]error:[/] {LONG}")
    with waiting("restoring x.dump", console=env.err, delay=0):
        time.sleep(0.3)
    drawn = screen.getvalue()
    assert "\x1b[31m" in drawn  # red
    assert any(frame in drawn for frame in SPINNER_FRAMES)
    first = drawn.split("\n", 1)[0]
    assert LONG not in first and len(first.replace("\x1b[31m", "").replace("\x1b[0m", "")) <= 60  # wrapped at 60


def test_no_color_keeps_the_styles_but_not_the_colours() -> None:
    screen = io.StringIO()
    env = Environment(stdout=screen, stderr=io.StringIO(), stdout_isatty=True, width=80, no_color=True)
    env.out.print("[bold red]error:[/] boom")
    assert "\x1b[1m" in screen.getvalue() and "\x1b[31m" not in screen.getvalue()
    assert Environment.detect({"NO_COLOR": "1"}).no_color and not Environment.detect({"NO_COLOR": ""}).no_color


def test_detect_judges_a_terminal_as_rich_does() -> None:
    """pytest's capture is not a terminal; ``FORCE_COLOR`` makes it one, ``TTY_COMPATIBLE=0`` unmakes it."""
    assert not Environment.detect({}).stdout_isatty
    forced = Environment.detect({"FORCE_COLOR": "1", "COLUMNS": "73"})
    assert forced.stdout_isatty and forced.width == 73 and forced.out.width == 73
    assert not Environment.detect({"FORCE_COLOR": "1", "TTY_COMPATIBLE": "0"}).stdout_isatty
    piped = Environment.detect({"COLUMNS": "73"})
    assert piped.out.width == PIPE_WIDTH  # COLUMNS is a terminal's width: a pipe is never cut at it
    assert not Environment.detect({"CI": "true"}).interactive


def _under_a_terminal(code: str, env: dict[str, str], columns: int = 91) -> str:
    """A child Python with stdin, stdout and stderr on a pseudo-terminal ``columns`` wide; what it drew."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=secondary, stdout=secondary, stderr=secondary, env=env, close_fds=True
    )
    os.close(secondary)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_the_entry_point_judges_a_real_terminal_its_width_and_no_color() -> None:
    code = (
        "from opsagent.cli.environment import Environment\n"
        "env = Environment.detect()\n"
        "print(env.stdout_isatty, env.stderr_isatty, env.stdin_isatty, env.width, env.out.width, env.interactive)\n"
        "env.out.print('[red]red[/]')\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR", "CI")}
    base["TERM"] = "xterm-256color"
    drawn = _under_a_terminal(code, base)
    assert drawn.splitlines()[0].strip() == "True True True None 91 True", drawn  # the terminal's own width
    assert "\x1b[31m" in drawn or "\x1b[38;5;1m" in drawn or "\x1b[91m" in drawn, drawn
    plain = _under_a_terminal(code, {**base, "NO_COLOR": "1"})
    assert "red" in plain and "\x1b[31m" not in plain and "\x1b[38;5" not in plain, plain


# ---------------------------------------------------------------- passed in, not global


def test_the_entry_point_gives_every_task_one_environment(capsys: pytest.CaptureFixture[str]) -> None:
    from invoke.collection import Collection
    from invoke.tasks import task

    from opsagent.cli import OpsagentProgram

    seen: list[Environment] = []

    @task
    def first(c: Context) -> None:
        seen.append(environment(c))

    @task
    def second(c: Context) -> None:
        seen.append(environment(c))
        environment(c).print_json({"ok": True})

    program = OpsagentProgram(namespace=Collection(first, second), name="opsagent", binary="opsagent")
    program.run(["opsagent", "first", "second"], exit=False)
    assert len(seen) == 2 and seen[0] is seen[1]  # decided once for the run
    assert seen[0].stdout is sys.stdout  # pytest's capture, as the process had it when the run started
    assert json.loads(capsys.readouterr().out) == {"ok": True}


def test_a_context_made_elsewhere_gets_the_process_streams_once() -> None:
    context = Context()
    assert environment(context) is environment(context)


def test_an_error_goes_to_the_environment_s_stderr_and_nothing_to_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsagent.cli.sync import status

    (tmp_path / "sql" / "migrations").mkdir(parents=True)
    write_inventory(tmp_path, {})
    monkeypatch.setenv("OPSAGENT_INVENTORY", str(tmp_path / "inventory.yaml"))
    monkeypatch.chdir(tmp_path)
    out, err, env = buffers()
    with pytest.raises(Exit) as caught:
        status(task_context(env), host="nowhere", json_=True)
    assert caught.value.code == ExitCode.USAGE
    assert out.getvalue() == "" and err.getvalue().startswith("error: unknown host 'nowhere'"), err.getvalue()


def test_json_stays_one_document_on_stdout_with_the_messages_on_stderr(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real sync, in this process, on an environment over buffers: what people read goes to stderr."""
    from opsagent.cli.sync import sync

    project.write_migration("001_t.sql", "CREATE TABLE t (id int);\n")
    monkeypatch.setenv("OPSAGENT_INVENTORY", str(project.root / "inventory.yaml"))
    monkeypatch.setenv("OPSAGENT_PROGRESS_DELAY", "0")
    monkeypatch.chdir(project.root)
    out, err, env = buffers()
    sync(task_context(env), host="sandbox", yes=True, no_backup=True, json_=True)
    document = json.loads(out.getvalue())  # the whole of stdout is one JSON document
    assert document["outcome"] == "applied" and [s["version"] for s in document["steps"]] == ["001"]
    messages = err.getvalue()
    assert "pending migrations (1)" in messages and "applied 1 migration(s)" in messages, messages
    assert "WARNING: --no-backup" in messages and "\x1b" not in messages
