"""Every ``--json`` document is the one docs/JSON.md describes (issue 15).

The doc is the contract: one section per task, a key table (``key | type | meaning``;
``a.b`` for a key of an object, ``a[].b`` for a key of each item of an array) and a
real example.  Each task runs once, for real, against one project on the sandbox host
(sshd + PostgreSQL); its output must have exactly the documented keys at every level the
table describes (a new undocumented key fails, so does a documented key that went away),
each with its documented type.  The examples in the doc are checked against the tables too.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from opsagent.cli import ns

from .conftest import Project, SandboxHandle, write_inventory

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "JSON.md"

# ---------------------------------------------------------------- the documented shapes (parsed from docs/JSON.md)

_HEADING = re.compile(r"^## `(?P<name>[a-z.]+)`", re.MULTILINE)
_ROW = re.compile(r"^\|\s*`(?P<path>[^`]+)`\s*\|\s*(?P<type>[^|]+?)\s*\|")
_TYPE = re.compile(r"^(?P<types>[a-z]+(?: or [a-z]+)*)(?P<optional> \(only [^)]*\))?$")
_JSON_BLOCK = re.compile(r"^```json\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
TYPE_NAMES = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}


@dataclasses.dataclass(frozen=True)
class Key:
    path: str  # "versions[].state"
    types: tuple[str, ...]
    optional: bool  # may be absent (documented as "(only with ...)")


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    keys: dict[str, Key]
    examples: tuple[str, ...]


def parse_doc(text: str) -> dict[str, Section]:
    """``{task: Section}`` from docs/JSON.md; a malformed row fails here, naming it."""
    sections: dict[str, Section] = {}
    starts = list(_HEADING.finditer(text))
    for index, heading in enumerate(starts):
        body = text[heading.end() : starts[index + 1].start() if index + 1 < len(starts) else len(text)]
        keys: dict[str, Key] = {}
        for line in body.splitlines():
            row = _ROW.match(line)
            if row is None:
                continue
            kind = _TYPE.match(row.group("type").strip())
            assert kind is not None, f"docs/JSON.md, {heading.group('name')}: bad type in row {line!r}"
            types = tuple(kind.group("types").split(" or "))
            assert set(types) <= set(TYPE_NAMES), f"docs/JSON.md, {heading.group('name')}: unknown type in {line!r}"
            assert row.group("path") not in keys, f"docs/JSON.md, {heading.group('name')}: {row.group('path')} twice"
            keys[row.group("path")] = Key(row.group("path"), types, bool(kind.group("optional")))
        examples = tuple(block.group("body") for block in _JSON_BLOCK.finditer(body))
        sections[heading.group("name")] = Section(heading.group("name"), keys, examples)
    return sections


def _levels(section: Section) -> dict[str, dict[str, Key]]:
    """Documented keys grouped by the object they belong to: ``""`` (top), ``"versions[]"``, ``"dump_oracle"``..."""
    levels: dict[str, dict[str, Key]] = {}
    for key in section.keys.values():
        parent, _, name = key.path.rpartition(".")
        levels.setdefault(parent, {})[name] = key
    return levels


def _objects_at(document: Any, parent: str) -> list[tuple[str, dict[str, Any]]]:
    """Every object found at ``parent`` (``a[].b`` walks each item of ``a``), with its concrete location."""
    found: list[tuple[str, Any]] = [("", document)]
    for part in [p for p in parent.split(".") if p] if parent else []:
        name, each = (part[:-2], True) if part.endswith("[]") else (part, False)
        step: list[tuple[str, Any]] = []
        for where, value in found:
            if not isinstance(value, dict):
                continue
            for key, child in (
                value.items() if name == "*" else [(name, value.get(name))]
            ):  # "*": any key (e.g. by object kind)
                if child is None:
                    continue
                if each:
                    step += (
                        [(f"{where}.{key}[{i}]", item) for i, item in enumerate(child)]
                        if isinstance(child, list)
                        else []
                    )
                else:
                    step.append((f"{where}.{key}", child))
        found = step
    return [(where or "(top)", value) for where, value in found if isinstance(value, dict)]


def shape_errors(section: Section, document: Any) -> list[str]:
    """What in ``document`` differs from the section's key table: missing, undocumented or mistyped keys."""
    errors: list[str] = []
    if not isinstance(document, dict):
        return [f"{section.name}: the document is a {type(document).__name__}, not an object"]
    for parent, documented in sorted(_levels(section).items()):
        for where, value in _objects_at(document, parent):
            for name in sorted(set(value) - set(documented) if "*" not in documented else ()):
                errors.append(f"{section.name}: {where}: key {name!r} is not documented in docs/JSON.md")
            for name, key in [(n, documented["*"]) for n in value] if "*" in documented else documented.items():
                if name not in value:
                    if not key.optional:
                        errors.append(f"{section.name}: {where}: documented key {name!r} is missing")
                    continue
                accepted = tuple(TYPE_NAMES[t] for t in key.types)
                item = value[name]
                if (isinstance(item, bool) and "boolean" not in key.types) or not isinstance(item, accepted):  # type: ignore[arg-type]
                    errors.append(
                        f"{section.name}: {where}.{name}: a {type(item).__name__}, "
                        f"documented as {' or '.join(key.types)}"
                    )
    return errors


def covered_levels(section: Section, document: Any) -> set[str]:
    """The documented levels that ``document`` actually exercises (an empty list checks nothing below it)."""
    return {parent for parent in _levels(section) if _objects_at(document, parent)}


@pytest.fixture(scope="module")
def sections() -> dict[str, Section]:
    return parse_doc(DOC.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the doc itself


def _json_tasks() -> set[str]:
    """Every task of the collection that takes ``--json`` (``backups`` for the collection's default task)."""
    names: set[str] = set()
    for context in ns.to_contexts():
        if "json" in context.flags or "--json" in context.flags:
            names.add(context.name)
    return {"backups" if name == "backups.list" else name for name in names}


def test_every_json_task_has_a_section_with_keys_and_an_example(sections: dict[str, Section]) -> None:
    tasks = _json_tasks()
    assert len(tasks) >= 18, tasks
    assert tasks - set(sections) == set(), "tasks with --json that docs/JSON.md does not describe"
    assert set(sections) - tasks - {"fleet"} == set(), "sections of docs/JSON.md for tasks without --json"
    for section in sections.values():
        assert section.keys, f"{section.name}: no key table"
        assert section.examples, f"{section.name}: no ```json example"


def test_the_examples_match_their_own_key_tables(sections: dict[str, Section]) -> None:
    for section in sections.values():
        for example in section.examples:
            document = json.loads(example)
            assert shape_errors(section, document) == [], example[:200]


def test_the_checker_catches_an_undocumented_a_missing_and_a_mistyped_key() -> None:
    section = parse_doc(
        "## `demo`\n\n| key | type | meaning |\n|---|---|---|\n| `a` | string | x |\n| `b` | integer or null | y |\n"
        "| `c` | array | z |\n| `c[].d` | boolean | w |\n| `t` | string (only with --text) | v |\n"
    )["demo"]
    assert shape_errors(section, {"a": "x", "b": None, "c": [{"d": True}]}) == []
    assert shape_errors(section, {"a": "x", "b": 1, "c": [], "t": "diff"}) == []
    assert len(shape_errors(section, {"a": "x", "b": 1, "c": [], "new": 1})) == 1  # undocumented
    assert len(shape_errors(section, {"a": "x", "c": []})) == 1  # missing
    assert (
        len(shape_errors(section, {"a": 1, "b": True, "c": [{"d": 1, "e": 2}]})) == 4
    )  # mistyped x3, undocumented item key


def test_the_link_from_the_readme() -> None:
    assert "docs/JSON.md" in (REPO / "README.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------- every task, for real

SCHEMA = """\
CREATE TABLE public.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    symbol text NOT NULL,
    qty numeric(18,8) NOT NULL,
    stop_loss numeric(18,8)
);
CREATE INDEX orders_symbol_idx ON public.orders (symbol);
"""


@dataclasses.dataclass
class Run:
    args: tuple[str, ...]
    code: int
    document: Any
    stderr: str


def _run(project: Project, *args: str) -> Run:
    done: subprocess.CompletedProcess[str] = project.run(*args, "--json")
    try:
        document = json.loads(done.stdout)
    except ValueError:
        pytest.fail(
            f"{' '.join(args)} --json: stdout is not one JSON document (exit {done.returncode}): "
            f"{done.stdout[:300]!r} {done.stderr[-500:]!r}"
        )
    return Run(args, done.returncode, document, done.stderr)


@pytest.fixture(scope="module")
def outputs(sandbox: SandboxHandle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Run]]:
    """Each task with --json, run once (twice where the shape has two faces), in one project on one fresh database."""
    root = tmp_path_factory.mktemp("json-shapes") / "proj"
    (root / "sql" / "migrations").mkdir(parents=True)
    database = sandbox.create_database("json")
    host = sandbox.host_for(database, backup_dir=str(Path(sandbox.state.root) / "backups" / database))
    write_inventory(root, {"sandbox": host})
    project = Project(root, host)
    (root / "sql" / "schema.sql").write_text(SCHEMA)
    project.write_migration(
        "001_orders.sql",
        "CREATE TABLE public.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "symbol text NOT NULL, qty numeric(18,8) NOT NULL);\n",
    )
    project.write_migration("002_index_symbol.sql", "CREATE INDEX orders_symbol_idx ON public.orders (symbol);\n")
    runs: dict[str, list[Run]] = {}

    def run(name: str, *args: str, expect: int = 0) -> Run:
        result = _run(project, *args)
        assert result.code == expect, (args, result.code, result.stderr[-800:])
        runs.setdefault(name, []).append(result)
        return result

    run("hosts", "hosts")
    run("doctor", "doctor", "--host", "sandbox")
    run("sandbox.status", "sandbox.status")
    run("lint", "lint", expect=4)  # 002 indexes a table from 001: graded as on a large table offline
    run("status", "status", "--host", "sandbox")
    run("sync", "sync", "--host", "sandbox", "--dry-run")
    run("sync", "sync", "--host", "sandbox", "--yes")
    run("status", "status", "--host", "sandbox")
    project.psql("INSERT INTO orders (symbol, qty) VALUES ('BTC', 1), ('ETH', 2); ANALYZE orders")
    run("tables", "tables", "--host", "sandbox")
    run("extract", "extract", "--host", "sandbox")
    run("diff", "diff", "--host", "sandbox", expect=3)  # schema.sql has stop_loss, the migrations not yet
    run("diff", "diff", "--host", "sandbox", "--text", expect=3)
    run("plan", "plan", "--host", "sandbox")
    assert "recalled" in run("plan", "plan", "--host", "sandbox").document  # the same plan on the same catalog
    run("check", "check", "--host", "sandbox", expect=3)
    made = run("new", "new", "add stop loss to orders").document["files"][0]
    assert "-- Why: " in Path(made).read_text()
    Path(made).unlink()
    run("new", "new", "--from-diff", "--host", "sandbox", "add stop loss to orders")
    run("check", "check", "--host", "sandbox")
    run("sync", "sync", "--host", "sandbox", "--yes")
    run("diff", "diff", "--host", "sandbox")  # no drift by both oracles: remembered
    assert "recalled" in run("diff", "diff", "--host", "sandbox").document  # and recalled
    project.psql("UPDATE orders SET stop_loss = qty / 2")
    noted = Path(run("new", "new", "note for the dba").document["files"][0])
    noted.write_text(noted.read_text() + "SELECT 1;\n")
    run("baseline", "baseline", "--host", "sandbox", "--version", "004")
    noted.write_text(noted.read_text() + "-- reviewed\n")
    run("repair", "repair", "--host", "sandbox", "--yes")
    run("backup", "backup", "--host", "sandbox", "--label", "shapes", "--download")
    name = run("backups", "backups", "--host", "sandbox").document["backups"][0]["name"]
    run("restore", "restore", "--host", "sandbox", "--backup", name, "--into", f"{database}_copy")
    run(
        "rollback", "rollback", "--host", "sandbox", "--to", "002", "--dry-run", expect=1
    )  # refused: drops stop_loss and its values
    project.psql(
        "ALTER TABLE orders ADD COLUMN note text"
    )  # behind the tool's back: the plan drops it only with --allow-drop
    run("plan", "plan", "--host", "sandbox", expect=3)
    down = dataclasses.replace(host, name="down", port=9)  # nothing listens: refused at once
    write_inventory(root, {"sandbox": host, "down": down})
    run("fleet", "status", "--host", "all", expect=1)
    run("fleet", "diff", "--host", "sandbox,down", expect=1)
    return runs


def test_every_documented_task_was_run(outputs: dict[str, list[Run]], sections: dict[str, Section]) -> None:
    assert set(sections) - set(outputs) == set()


@pytest.mark.parametrize("name", sorted(_json_tasks() | {"fleet"}))
def test_the_output_has_exactly_the_documented_keys(
    name: str, outputs: dict[str, list[Run]], sections: dict[str, Section]
) -> None:
    section = sections[name]
    covered: set[str] = set()
    for run in outputs[name]:
        assert shape_errors(section, run.document) == [], " ".join(run.args)
        covered |= covered_levels(section, run.document)
    documented = set(_levels(section))
    # a level no run reaches would go unchecked: only the sandbox list (no sandbox in a test project) may be empty
    allowed = {"sandboxes[]"} if name == "sandbox.status" else set()
    assert documented - covered <= allowed, (
        f"{name}: documented levels no run exercised: {sorted(documented - covered - allowed)}"
    )
