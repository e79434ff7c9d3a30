"""The examples in the docs are what the CLI really prints and does (issue 15, Docs).

- docs/LINT.md: the offline example is reproduced byte for byte in a 100-column terminal;
  the ``--host`` example is reproduced on the sandbox with the same gradings (numbers and
  sizes aside); the head-line and table-row formats the doc shows are the ones printed.
- ``inv new``: the template has the "Why" line the docs promise, and lint/sync take it.
- The cron line of docs/SCHEMA_MANAGEMENT.md runs verbatim (paths aside) under cron's bare
  PATH and sh, from the home folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Project, write_inventory

REPO = Path(__file__).resolve().parents[1]
LINT_DOC = REPO / "docs" / "LINT.md"
SCHEMA_DOC = REPO / "docs" / "SCHEMA_MANAGEMENT.md"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HEAD = re.compile(
    r"^(?P<location>\S+\.sql:\d+)  (?P<severity>error|warning|info)  (?P<rule>[a-z][a-z-]*)"
    r"(?:  (?P<table>\S+) \((?P<size>[^)]+)\))?$"
)
ROW = re.compile(
    r"^│ (?P<location>\S+\.sql:\d+)\s+│ (?P<severity>error|warning|info)\s+│ (?P<rule>[a-z][a-z-]*)\s+│ "
    r"(?P<table>\S*)\s+│ \S"
)
BARE_ENV = {k: v for k, v in os.environ.items() if k not in ("OPSAGENT_INVENTORY", "COLUMNS", "LINES")}


def in_terminal(args: list[str], cwd: Path, columns: int = 100, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdout/stderr (what a user sees), colours stripped, lines right-trimmed."""
    leader, follower = pty.openpty()
    # the docs show the final output: no progress spinner (shown after OPSAGENT_PROGRESS_DELAY seconds of waiting)
    full_env = {**BARE_ENV, "COLUMNS": str(columns), "TERM": "xterm", "OPSAGENT_PROGRESS_DELAY": "3600", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "opsagent", *args],
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    code = process.wait(timeout=120)
    text = ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")
    return code, "\n".join(line.rstrip() for line in text.splitlines())


def fenced_blocks(text: str) -> list[str]:
    """The fenced code blocks of a markdown text, de-indented (LINT.md nests some in a list)."""
    blocks = []
    for match in re.finditer(r"^(?P<indent> *)```[a-z]*\n(?P<body>.*?)^(?P=indent)```", text, re.MULTILINE | re.DOTALL):
        indent = len(match.group("indent"))
        blocks.append("\n".join(line[indent:] for line in match.group("body").splitlines()))
    return blocks


def session(block: str) -> dict[str, str]:
    """A transcript block (``$ command`` lines followed by output) as ``{command: output}``."""
    found: dict[str, str] = {}
    command: str | None = None
    lines: list[str] = []
    for line in [*block.splitlines(), "$ end"]:
        if line.startswith("$ "):
            if command is not None:
                found[command] = "\n".join(lines)
            command, lines = line[2:].split("  #")[0].strip(), []
        else:
            lines.append(line)
    return found


def lint_transcripts() -> list[dict[str, str]]:
    return [session(block) for block in fenced_blocks(LINT_DOC.read_text(encoding="utf-8")) if block.startswith("$ ")]


def _offline_project(root: Path) -> Path:
    (root / "sql" / "migrations").mkdir(parents=True)
    (root / "inventory.yaml").write_text("hosts: {}\n")
    return root


# ---------------------------------------------------------------- docs/LINT.md


def test_lint_doc_offline_example_is_the_real_output(tmp_path: Path) -> None:
    transcript = next(t for t in lint_transcripts() if "inv lint" in t)
    project = _offline_project(tmp_path / "proj")
    (project / "sql" / "migrations" / "001_orders.sql").write_text(
        transcript["cat sql/migrations/001_orders.sql"] + "\n"
    )
    made = subprocess.run(
        [sys.executable, "-m", "opsagent", "new", "add stop loss"],
        cwd=project,
        env=BARE_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0 and made.stdout.strip() == transcript['inv new "add stop loss"'].strip(), made.stderr
    echo = next(command for command in transcript if command.startswith("echo "))
    subprocess.run(echo, shell=True, cwd=project, check=True)  # the doc's own line appends the index
    code, shown = in_terminal(["lint"], project)
    assert shown == transcript["inv lint"], "docs/LINT.md's offline example differs from the output:\n" + shown
    assert str(code) == transcript["echo $?"].strip()
    heads = [line for line in shown.splitlines() if line.startswith("sql/")]
    assert heads and all(HEAD.match(line) for line in heads)


def test_lint_doc_shows_the_real_line_formats() -> None:
    """Every finding line the doc shows, in blocks or in a table, has the format the CLI prints (HEAD, ROW)."""
    text = "\n".join(fenced_blocks(LINT_DOC.read_text(encoding="utf-8")))
    heads = [line for line in text.splitlines() if re.match(r"^\S+\.sql:\d+ ", line)]
    rows = [line for line in text.splitlines() if re.match(r"^│ \S+\.sql:\d+ ", line)]
    assert len(heads) >= 9 and len(rows) >= 2
    assert [line for line in heads if not HEAD.match(line)] == []
    assert [line for line in rows if not ROW.match(line)] == []
    assert "->" not in text.replace("-->", "")  # the old "warning -> error" lines that no version ever printed


def _normalized(text: str) -> str:
    """Numbers and sizes out: the doc's example ran on 2,000,000 rows, the test's on a few thousand."""
    text = re.sub(r"\d[\d,.]* (?:B|kB|MB|GB|TB)\b", "SIZE", text)
    return re.sub(r"~?\d[\d,.]*", "N", text)


def test_lint_doc_host_example_grades_and_prints_alike(project: Project) -> None:
    """The ``--host`` example: the same migration on tables made large and small by the host's thresholds."""
    transcript = {
        command: output for block in lint_transcripts() for command, output in block.items() if command != "inv lint"
    }
    sql = next(
        block
        for block in fenced_blocks(LINT_DOC.read_text(encoding="utf-8"))
        if block.startswith("CREATE INDEX users_email_idx")
    )
    staging = dataclasses.replace(project.host, name="staging")
    write_inventory(project.root, {"staging": staging})
    with (project.root / "inventory.yaml").open("a") as handle:  # write_inventory leaves hazards out
        handle.write("defaults:\n  hazards: {large_table_rows: 1000, small_table_rows: 100}\n")
    project.psql(
        "CREATE TABLE users (id bigint PRIMARY KEY, email text); INSERT INTO users SELECT g, "
        "'u' || g FROM generate_series(1, 3000) g;"
        "CREATE TABLE countries (code text, name text); INSERT INTO countries SELECT 'c' || g, "
        "'n' || g FROM generate_series(1, 20) g;"
        "ANALYZE users; ANALYZE countries"
    )
    project.write_migration("0007_indexes.sql", sql + "\n")
    code, shown = in_terminal(["lint", "--host", "staging", "--verbose"], project.root)
    assert _normalized(shown) == _normalized(transcript["inv lint --host staging --verbose"]), shown
    assert str(code) == transcript["echo $?"].strip()
    piped = subprocess.run(
        [sys.executable, "-m", "opsagent", "lint", "--host", "staging"],
        cwd=project.root,
        env=BARE_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    documented = [ROW.match(line) for line in transcript["inv lint --host staging | cat"].splitlines()]
    printed = [ROW.match(line) for line in piped.stdout.splitlines()]
    assert [(m["location"], m["severity"], m["rule"], m["table"]) for m in documented if m] == [
        (m["location"], m["severity"], m["rule"], m["table"]) for m in printed if m
    ], piped.stdout
    document = json.loads(
        subprocess.run(
            [sys.executable, "-m", "opsagent", "lint", "--host", "staging", "--json"],
            cwd=project.root,
            env=BARE_ENV,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )
    first = document["findings"][0]
    assert (first["line"], first["rule"], first["severity"], first["table"]) == (
        1,
        "create-index-not-concurrently",
        "error",
        "users",
    )


# ---------------------------------------------------------------- the "Why" line of inv new


def test_new_writes_the_why_line_and_lint_and_sync_take_the_file(project: Project) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "opsagent", "new", "add stop loss to orders"],
        cwd=project.root,
        env=BARE_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    path = project.root / made.stdout.strip()
    lines = path.read_text().splitlines()
    assert lines[0] == "-- 001: add stop loss to orders" and lines[2].startswith("-- Why: ")
    assert "DO document WHY" in SCHEMA_DOC.read_text() and "-- Why:" in (REPO / "sql" / "README.md").read_text()
    linted = project.run("lint", "--json")
    assert linted.returncode == 0 and json.loads(linted.stdout)["findings"] == [], linted.stdout
    path.write_text(path.read_text() + "CREATE TABLE orders (id bigint PRIMARY KEY, stop_loss numeric);\n")
    assert project.run("lint").returncode == 0
    synced = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert synced.returncode == 0, synced.stderr
    status = json.loads(project.run("status", "--host", "sandbox", "--json").stdout)
    assert status["counts"] == {"applied": 1}
    assert project.psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders'").strip() == "2"


# ---------------------------------------------------------------- the cron line


def test_the_cron_line_runs_verbatim_under_crons_path_and_sh(project: Project, tmp_path: Path) -> None:
    line = next(line for line in SCHEMA_DOC.read_text().splitlines() if re.match(r"^[0-9*]+ [0-9*]+ ", line))
    command = line.split(None, 5)[5]
    assert re.match(r"^cd (\S+) && \1/\.venv/bin/opsagent diff --host prod --json ", command), command
    (project.root / "sql" / "schema.sql").write_text("CREATE TABLE orders (id bigint PRIMARY KEY);\n")
    project.psql("CREATE TABLE orders (id bigint PRIMARY KEY)")
    write_inventory(project.root, {"prod": dataclasses.replace(project.host, name="prod")})
    (project.root / ".venv").symlink_to(
        Path(sys.executable).parent.parent
    )  # the project's own venv, as bootstrap.sh makes it
    logs, mailbox = tmp_path / "log", tmp_path / "mail"
    logs.mkdir()
    fake_bin = tmp_path / "bin"  # 'mail' records what it would send
    fake_bin.mkdir()
    (fake_bin / "mail").write_text(
        f"#!/bin/sh\necho \"$@\" > {shlex.quote(str(mailbox))}.args\ncat > {shlex.quote(str(mailbox))}\n"
    )
    (fake_bin / "mail").chmod(0o755)
    project_dir = re.match(r"^cd (\S+) ", command)[1]  # type: ignore[index]
    runnable = command.replace(project_dir, str(project.root)).replace("/var/log", str(logs))
    cron_env = {"PATH": f"/usr/bin:/bin:{fake_bin}", "HOME": str(tmp_path), "SHELL": "/bin/sh", "LOGNAME": "root"}
    clean = subprocess.run(
        ["/bin/sh", "-c", runnable],
        cwd=tmp_path,
        env=cron_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert clean.returncode == 0 and not mailbox.exists(), clean.stderr
    assert json.loads((logs / "opsagent-drift.json").read_text())["drift"] is False
    project.psql("ALTER TABLE orders ADD COLUMN note text")
    drift = subprocess.run(
        ["/bin/sh", "-c", runnable],
        cwd=tmp_path,
        env=cron_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert drift.returncode == 0 and mailbox.exists(), drift.stderr  # the mail went out
    assert json.loads((logs / "opsagent-drift.json").read_text())["drift"] is True
    assert "schema drift on prod" in Path(f"{mailbox}.args").read_text() and '"drift": true' in mailbox.read_text()


@pytest.mark.parametrize("doc", ["README.md", "docs/SCHEMA_MANAGEMENT.md"])
def test_no_doc_runs_a_bare_opsagent_from_cron(doc: str) -> None:
    text = (REPO / doc).read_text()
    assert not re.search(r"^[0-9*]+ [0-9*]+ .*&& opsagent ", text, re.MULTILINE)
