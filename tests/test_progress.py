"""Feedback during long waits (issue 15): spinner/bar on a terminal, start/done lines when piped, warnings never glued.

Unit tests render on the consoles of an ``Environment`` built over StringIO buffers (a terminal is
one buffer shared by "stdout" and "stderr" marked as terminals, as both share one screen); the CLI
tests run the real CLI against the sandbox, piped and under a pseudo-terminal.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from opsagent.backup import create_backup, restore_backup
from opsagent.cli.environment import Environment
from opsagent.cli.progress import tracking, waiting
from opsagent.remote.transport import Remote
from opsagent.units import human_bytes, human_duration

from .conftest import Project, SandboxHandle

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def screen_segments(raw: str) -> list[str]:
    """What a terminal shows line by line, roughly: ANSI codes dropped, split at carriage returns and newlines."""
    return [segment for segment in re.split(r"[\r\n]+", ANSI.sub("", raw)) if segment.strip()]


def glued(raw: str, word: str) -> list[str]:
    """Segments where ``word`` does not start the line (e.g. ``⠦ rehearsed 011…warning:``)."""
    return [s for s in screen_segments(raw) if word in s and not s.lstrip().startswith(word)]


def terminal_pair() -> tuple[io.StringIO, Console, Console]:
    """stdout and stderr of an environment on one terminal screen, 100 columns wide: its two consoles."""
    screen = io.StringIO()
    env = Environment(
        stdout=screen, stderr=screen, stdout_isatty=True, stderr_isatty=True, width=100, color_system="standard"
    )
    return screen, env.out, env.err


def piped() -> tuple[io.StringIO, Console]:
    """The stderr console of an environment whose streams are not terminals, and what it wrote."""
    stream = io.StringIO()
    return stream, Environment(stdout=io.StringIO(), stderr=stream).err


# ---------------------------------------------------------------- module, piped


def test_piped_wait_prints_a_start_and_a_done_line_and_no_control_codes() -> None:
    stream, out = piped()
    with waiting("backup of trad on prod", console=out, delay=0) as shown:
        time.sleep(0.05)
        shown.warn("disk almost full")
        shown.phase("verifying")
    text = stream.getvalue()
    lines = text.splitlines()
    assert lines[0] == "backup of trad on prod…"
    assert lines[1] == "warning: disk almost full"
    assert lines[2] == "backup of trad on prod: verifying…"
    assert re.fullmatch(r"backup of trad on prod: done in 0\.\d s", lines[3]), lines
    assert "\x1b" not in text and "\r" not in text


def test_piped_tracking_reports_bytes_and_counts_in_one_unit_system() -> None:
    stream, out = piped()
    with tracking("download of x.dump", unit="bytes", console=out, delay=0) as shown:
        shown.update(303_300_000, 303_300_000)
    with tracking("checking databases", unit="count", total=3, console=out, delay=0) as counted:
        for n in range(1, 4):
            counted(n, 3)
    lines = stream.getvalue().splitlines()
    assert lines[1].endswith(f"({human_bytes(303_300_000)})") and "289.2 MB" in lines[1], lines
    assert lines[3].endswith("(3/3)"), lines


def test_piped_failure_and_interruption_are_said() -> None:
    stream, out = piped()
    with pytest.raises(RuntimeError), waiting("restore", console=out, delay=0):
        raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt), waiting("check", console=out, delay=0):
        raise KeyboardInterrupt
    lines = stream.getvalue().splitlines()
    assert lines[1].startswith("restore: failed after ") and lines[3].startswith("check: interrupted after "), lines


def test_control_characters_in_a_label_never_reach_the_output() -> None:
    stream, out = piped()
    with waiting("describing evil\x1b[2J\nname\r on prod", console=out, delay=0) as shown:
        shown.phase("step\x1b]0;title\x07")
    text = stream.getvalue()
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text and len(text.splitlines()) == 3, text
    assert text.splitlines()[0] == "describing evil?[2J?name? on prod…"


def test_a_short_wait_or_an_instant_failure_prints_nothing_when_piped() -> None:
    """``inv tables`` in cron, or a usage error raised before connecting: no start/done lines around one error line."""
    stream, out = piped()
    with waiting("reading tables", console=out, delay=0.5):
        pass
    with pytest.raises(ValueError), waiting("reading tables", console=out, delay=0.5):
        raise ValueError("--host is required")
    assert stream.getvalue() == ""
    with waiting("restoring", console=out, delay=0.2):
        deadline = time.monotonic() + 10  # its start line comes from a timer thread: waited for, not assumed
        while "restoring…" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "restoring…" and re.fullmatch(r"restoring: done in \d+\.\d s", lines[-1]), lines


def test_a_fleet_worker_thread_prints_nothing() -> None:
    stream, out = piped()

    def worker() -> None:
        with waiting("extracting host1", console=out, delay=0):
            pass

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert stream.getvalue() == ""


def test_durations_read_the_same_on_the_bar_and_in_the_done_line() -> None:
    assert (
        human_duration(0.44) == "0.4 s" and human_duration(75) == "1 min 15 s" and human_duration(7300) == "2 h 01 min"
    )


# ---------------------------------------------------------------- module, terminal


def test_terminal_spinner_shows_the_elapsed_time_and_a_warning_above_it() -> None:
    screen, _, err = terminal_pair()
    with waiting("restoring x.dump", console=err, delay=0) as shown:
        time.sleep(0.35)
        shown.warn("the live schema differs")
        time.sleep(0.25)
    raw = screen.getvalue()
    segments = screen_segments(raw)
    spinning = [s for s in segments if "restoring x.dump" in s]
    assert spinning and spinning[0][0] in SPINNER_FRAMES, segments
    assert any(re.search(r"restoring x\.dump 0\.\d s$", s) for s in spinning), spinning
    assert "warning: the live schema differs" in segments and not glued(raw, "warning:"), segments
    assert "\x1b[2K" in raw[-30:]  # transient: the spinner erases its line when the wait ends


def test_a_warning_on_the_other_stream_is_not_glued_to_a_running_spinner() -> None:
    """The reported ``⠦ rehearsed 011…warning:``: a spinner on stdout, a warning printed on stderr."""
    screen, out, err = terminal_pair()
    status = out.status("rehearsed 011…")
    status.start()
    time.sleep(0.3)
    err.print("[yellow]warning:[/] the live schema differs from schema.sql in 35 object(s)")
    time.sleep(0.3)
    status.stop()
    raw = screen.getvalue()
    assert "warning: the live schema differs from schema.sql in 35 object(s)" in screen_segments(raw)
    assert not glued(raw, "warning:"), screen_segments(raw)
    assert any(s.startswith(tuple(SPINNER_FRAMES)) and "rehearsed 011" in s for s in screen_segments(raw))


def test_the_same_with_rich_s_plain_console_is_glued() -> None:
    """What the test above guards against: Rich alone prints a sibling console's line into the spinner's."""
    screen = io.StringIO()
    out = Console(file=screen, force_terminal=True, width=100, color_system="standard")
    err = Console(file=screen, force_terminal=True, width=100, color_system="standard")
    status = out.status("rehearsed 011…")
    status.start()
    status.update("rehearsed 011…")  # drawn now (start alone leaves the first frame to the refresh thread)
    time.sleep(0.3)
    err.print("warning: drift")
    status.stop()
    assert glued(screen.getvalue(), "warning:")


def test_a_wait_shorter_than_the_delay_shows_nothing_on_a_terminal() -> None:
    screen, _, err = terminal_pair()
    with waiting("reading tables", console=err, delay=2.0):
        time.sleep(0.1)
    assert screen.getvalue() == ""


def test_a_nested_wait_and_a_paused_wait_leave_one_display_at_a_time() -> None:
    screen, out, err = terminal_pair()
    with waiting("outer", console=err, delay=0) as outer:
        time.sleep(0.25)
        with tracking("inner", unit="bytes", console=err, delay=0) as inner:
            inner(1024, 2048)
            time.sleep(0.25)
        with outer.paused():
            before = len(screen.getvalue())
            time.sleep(0.35)  # no refresh while paused (a question is being asked)
            assert len(screen.getvalue()) == before
            out.print("Type the database name:")
        time.sleep(0.2)
    segments = screen_segments(screen.getvalue())
    assert any("inner" in s and "1.0 kB/2.0 kB" in s for s in segments), segments
    assert not any("inner" in s and "outer" in s for s in segments), segments
    assert "Type the database name:" in segments


# ---------------------------------------------------------------- CLI, piped and in a terminal


def run_in_terminal(
    project: Project,
    *args: str,
    timeout: float = 180,
    interrupt_when: Callable[[str], bool] | None = None,
    exit_codes: list[int] | None = None,
) -> str:
    """The real CLI with stdin, stdout and stderr on a pseudo-terminal; everything it drew, decoded.

    ``interrupt_when``: send it SIGINT (Ctrl-C) once what it drew so far satisfies this.
    """
    env = {
        **os.environ,
        "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml"),
        "OPSAGENT_PROGRESS_DELAY": "0",
        "TERM": "xterm-256color",
        "COLUMNS": "160",
        "LINES": "40",
    }
    env.pop("NO_COLOR", None)
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "opsagent", *args],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        cwd=project.root,
        env=env,
        close_fds=True,
    )
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
            if interrupt_when is not None and interrupt_when(b"".join(chunks).decode("utf-8", "replace")):
                process.send_signal(signal.SIGINT)
                interrupt_when = None
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
        process.wait()
        if exit_codes is not None:
            exit_codes.append(process.returncode)
    return b"".join(chunks).decode("utf-8", "replace")


def test_backup_piped_prints_start_and_done_lines(project: Project) -> None:
    project.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 2000) g;")
    fast = {"OPSAGENT_PROGRESS_DELAY": "0"}
    done = project.run("backup", "--host", "sandbox", "--download", env=fast)
    assert done.returncode == 0, done.stderr
    db = project.host.database
    lines = done.stderr.splitlines()
    assert f"backup of {db} on sandbox…" in lines, lines
    finished = [line for line in lines if line.startswith(f"backup of {db} on sandbox: done in ")]
    assert len(finished) == 1 and re.search(r"done in \d+\.\d s \(\d+\.\d kB\)$", finished[0]), lines
    assert "\x1b" not in done.stderr + done.stdout and "\r" not in done.stderr + done.stdout
    name = json.loads(project.run("backups", "--host", "sandbox", "--json").stdout)["backups"][0]["name"]

    restored = project.run("restore", "--host", "sandbox", "--backup", name, "--into", f"{db}_copy", env=fast)
    assert restored.returncode == 0, restored.stderr
    assert restored.stderr.splitlines()[:4] == [
        f"restoring {name} into {db}_copy on sandbox{step}…"
        for step in ("", ": verifying", ": restoring", ": counting")
    ], restored.stderr
    assert any(
        line.startswith(f"restoring {name} into {db}_copy on sandbox: done in ")
        for line in restored.stderr.splitlines()
    )
    project.psql(f'DROP DATABASE "{db}_copy"')

    swapped = project.run("restore", "--host", "sandbox", "--latest", "--in-place", "--yes", env=fast)
    assert swapped.returncode == 0, swapped.stderr
    label = f"restoring {name} in place of {db} on sandbox"
    phases = [line.removeprefix(label) for line in swapped.stderr.splitlines() if line.startswith(label)]
    assert phases[:7] == [
        "…",
        ": verifying…",
        ": restoring…",
        ": counting…",
        ": closing the live database…",
        ": swapping…",
        ": backing up the replaced database…",
    ], swapped.stderr
    assert phases[-1].startswith(": done in "), swapped.stderr


def test_backup_in_a_terminal_shows_a_spinner(project: Project) -> None:
    drawn = run_in_terminal(project, "backup", "--host", "sandbox")
    segments = screen_segments(drawn)
    assert any(s[0] in SPINNER_FRAMES and f"backup of {project.host.database} on sandbox" in s for s in segments), (
        segments
    )
    assert any("verified" in s and s.startswith("✔") for s in segments), segments


def test_ctrl_c_in_a_terminal_clears_the_spinner_and_says_interrupted(project: Project, sandbox: SandboxHandle) -> None:
    """pg_dump waits behind an exclusive lock (the spinner turns), then Ctrl-C: one clean line, exit 130."""
    from .test_restore_safety import end, local_psql

    project.psql("CREATE TABLE locked (id int)")
    holder = subprocess.Popen(
        local_psql(sandbox, project.host.database), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("BEGIN; LOCK locked; SELECT 'locked';\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "locked"
    codes: list[int] = []
    try:
        drawn = run_in_terminal(
            project,
            "backup",
            "--host",
            "sandbox",
            exit_codes=codes,
            interrupt_when=lambda text: (
                re.search(r"backup of \S+ on sandbox .*\d\.\d s", ANSI.sub("", text)) is not None
            ),
        )
    finally:
        end(holder)
    segments = screen_segments(drawn)
    shown = "\n".join(segments)  # whole (a list's repr is cut short in pytest's report: CI showed only its start)
    assert codes == [130] and "interrupted" in segments and not glued(drawn, "interrupted"), f"{codes}\n{shown}"
    assert "Traceback" not in drawn


def test_closing_drift_warning_in_a_terminal_is_not_glued_to_the_spinner(project: Project) -> None:
    """The reported case (``⠦ rehearsed 011…warning:``): sync spins through its migrations, then the closing drift
    check warns.  (A dry run says nothing there since issue 15: its database is still at the old version.)"""
    (project.root / "sql" / "schema.sql").write_text(
        "CREATE TABLE trades (id bigint PRIMARY KEY, price numeric(18,8));\n"
    )
    project.write_migration("001_trades.sql", "CREATE TABLE trades (id bigint PRIMARY KEY, price numeric(12,2));\n")
    project.psql("CREATE TABLE other (id int);")  # live differs from schema.sql whatever the sync applies
    drawn = run_in_terminal(project, "sync", "--host", "sandbox", "--yes")
    segments = screen_segments(drawn)
    warnings = [s for s in segments if "warning:" in s]
    assert warnings, segments
    assert not glued(drawn, "warning:"), segments
    assert any(s[0] in SPINNER_FRAMES for s in segments), segments  # the waits were shown


def test_tables_says_unknown_or_counts_a_never_analysed_table(project: Project) -> None:
    project.psql(
        "CREATE TABLE fresh (id int); INSERT INTO fresh SELECT generate_series(1, 42);"
        "CREATE TABLE parted (id int, at date) PARTITION BY RANGE (at);"
        "CREATE TABLE parted_2026 PARTITION OF parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
        "CREATE TABLE known (id int); INSERT INTO known SELECT generate_series(1, 7); ANALYZE known;"
    )
    reltuples = project.psql(
        "SELECT relname || '=' || reltuples FROM pg_class WHERE relname IN ('fresh', 'parted') ORDER BY 1"
    )
    assert reltuples.split() == ["fresh=-1", "parted=-1"]  # really never analysed (PostgreSQL 14+)
    listed = project.run("tables", "--host", "sandbox", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)["tables"]}
    assert (rows["fresh"]["rows_estimate"], rows["fresh"]["rows_source"]) == (42, "count")
    assert (rows["parted"]["rows_estimate"], rows["parted"]["rows_source"]) == (None, "unknown")
    assert (rows["known"]["rows_estimate"], rows["known"]["rows_source"]) == (7, "statistics")
    shown = project.run("tables", "--host", "sandbox")
    assert shown.returncode == 0, shown.stderr
    cells = {
        row[1].strip(): row[2].strip()
        for row in (line.split("│") for line in shown.stdout.splitlines())
        if len(row) > 3
    }
    assert cells["public.parted"] == "unknown" and cells["public.fresh"] == "42" and cells["public.known"] == "7", (
        shown.stdout
    )
    assert not [line for line in shown.stdout.splitlines() if line != line.rstrip()]  # piped: no trailing blanks


def test_piped_output_never_wraps_long_names(project: Project, tmp_path: Path) -> None:
    label = "a-very-long-label-" + "x" * 90
    taken = project.run("backup", "--host", "sandbox", "--label", label)
    assert taken.returncode == 0, taken.stderr
    listed = project.run("backups", "--host", "sandbox", env={"COLUMNS": "80"})
    assert listed.returncode == 0, listed.stderr
    name = json.loads(project.run("backups", "--host", "sandbox", "--json").stdout)["backups"][0]["name"]
    assert len(name) > 80 and any(name in line for line in listed.stdout.splitlines()), listed.stdout
    assert not [line for line in listed.stdout.splitlines() if line != line.rstrip()]
    project.psql(
        'CREATE TABLE "a_table_with_a_rather_long_name_for_describe_output_checks" '
        "(a_column_with_a_long_name_too bigint, "
        "another_long_column_name_with_a_default text DEFAULT 'some long default value')"
    )
    described = project.run(
        "describe",
        "a_table_with_a_rather_long_name_for_describe_output_checks",
        "--host",
        "sandbox",
        env={"COLUMNS": "80"},
    )
    assert described.returncode == 0, described.stderr
    assert (
        "another_long_column_name_with_a_default" in described.stdout
        and "'some long default value'::text" in described.stdout
    )
    assert not [line for line in described.stdout.splitlines() if line != line.rstrip()]

    table = "orders_with_a_rather_long_table_name_for_lint_lines"
    project.write_migration(
        "001_index.sql", f"CREATE INDEX idx_{table}_customer ON {table} (customer_identifier_column);\n"
    )
    linted = project.run("lint", env={"COLUMNS": "80"})
    assert linted.returncode == 4, linted.stdout + linted.stderr
    assert any(
        f"CREATE INDEX on {table} blocks writes to it while the index builds" in line
        for line in linted.stdout.splitlines()
    )
    assert not [line for line in linted.stdout.splitlines() if line != line.rstrip()], linted.stdout
    status = project.run("status", "--host", "sandbox", env={"COLUMNS": "80"})
    assert status.returncode == 0, status.stderr
    assert any("001" in line and "index" in line for line in status.stdout.splitlines()), status.stdout
    assert not [line for line in status.stdout.splitlines() if line != line.rstrip()], status.stdout


# ---------------------------------------------------------------- library callbacks (real server)


def test_a_dump_reports_its_growing_size_and_a_restore_its_phases(sandbox: SandboxHandle, fresh_db: str) -> None:
    backup_dir = Path(sandbox.state.root) / "backups" / fresh_db
    with sandbox.remote(fresh_db, backup_dir=str(backup_dir)) as remote:
        remote.psql(
            "CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload "
            "FROM generate_series(1, 300000) g;"
        )
        sizes: list[tuple[int, int | None]] = []
        taken = create_backup(
            remote, "progress", progress=lambda done, total: sizes.append((done, total)), size_every=0.02
        )
        assert sizes, "no size was reported while the dump was written"
        assert [d for d, _ in sizes] == sorted(d for d, _ in sizes)
        assert (
            sizes[-1] == (taken.size_bytes, taken.size_bytes) and len(sizes) > 1
        )  # samples while it grew, then the stored size
        assert all(total is None for _, total in sizes[:-1]) and 0 < sizes[-2][0] <= taken.size_bytes
        phases: list[str] = []
        restored = restore_backup(remote, taken.name, into=f"{fresh_db}_phases", on_phase=phases.append)
        assert phases == ["verifying", "restoring", "counting"], phases
        assert restored.restored_counts["tables"] == 1
        remote.psql(f'DROP DATABASE "{fresh_db}_phases"', database="postgres")


def test_check_counts_its_scratch_databases_cold_then_warm(remote: Remote, tmp_path: Path) -> None:
    """issue 15: a bar of databases for check (the replayed migrations, and schema.sql when the cache does not
    know it)."""
    from opsagent.schema.drift import check_project

    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "001_t.sql").write_text("CREATE TABLE t (id int PRIMARY KEY);\n")
    (tmp_path / "schema.sql").write_text("CREATE TABLE t (id int PRIMARY KEY);\n")
    for expected in ([(0, 2), (1, 2), (2, 2)], [(0, 1), (1, 1)]):  # cold: both databases built; warm: the replay only
        seen: list[tuple[int, int]] = []
        report = check_project(
            remote,
            tmp_path / "migrations",
            tmp_path / "schema.sql",
            cache_dir=tmp_path / "cache",
            progress=lambda done, total, seen=seen: seen.append((done, total)),
        )  # type: ignore[misc]
        assert report.ok and seen == expected, seen


def test_check_piped_says_how_many_databases_it_built(project: Project) -> None:
    (project.root / "sql" / "schema.sql").write_text("CREATE TABLE t (id int PRIMARY KEY);\n")
    project.write_migration("001_t.sql", "CREATE TABLE t (id int PRIMARY KEY);\n")
    done = project.run("check", "--host", "sandbox", env={"OPSAGENT_PROGRESS_DELAY": "0"})
    assert done.returncode == 0, done.stderr
    label = "checking migrations against schema.sql on sandbox: databases"
    assert f"{label}…" in done.stderr.splitlines(), done.stderr
    assert re.search(rf"^{re.escape(label)}: done in \d+\.\d s \(2/2\)$", done.stderr, re.M), done.stderr
