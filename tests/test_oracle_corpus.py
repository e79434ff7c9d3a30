"""The migra and sqldef corpora planned once, each plan applied and judged by both oracles.

Every plan must leave no difference by the catalog model AND by the dump oracle (one pass serves
both: the corpora used to be planned and applied twice, once per oracle).

Each side and each applied plan is loaded and introspected as in ``tests/test_plan.py``, and
dumped (``pg_dump --schema-only``) in the same psql session.  A plan counts as verified by
the dump oracle when the normalized dumps of (a + plan) and b match; what differs is then
put through one dump-and-load on both sides (as ``opsagent.schema.drift.confirm`` does) to
cancel deparse artifacts.  If the oracle refuses a plan the model verifies, either the
model has a blind spot (the oracle's job) or the normalizer is too strict (to fix there).
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Sequence

import pytest

from opsagent.remote.sandbox import pg_bindir
from opsagent.remote.transport import Remote
from opsagent.schema.catalog import Catalog
from opsagent.schema.compare import compare
from opsagent.schema.extract import normalize_dump, strip_restrict
from opsagent.schema.oracle import DumpDifference, compare_dumps
from opsagent.schema.plan import generate_plan
from opsagent.schema.scratch import SESSION_SETUP, DumpStep

from .catalog_helpers import (
    END,
    MARK,
    Loaded,
    LoadItem,
    classify,
    declarative_block,
    ensure_roles,
    load_items,
    load_script,
    role_names,
)
from .conftest import CORPORA, SandboxHandle

pytestmark = pytest.mark.slow
LEDGER = ("schema_migrations",)


def load_with_dumps(remote: Remote, database: str, items: Sequence[LoadItem]) -> dict[str, tuple[Loaded, str]]:
    """``catalog_helpers.load_many`` plus each item's normalized schema dump, taken in the same psql session."""
    if not items:
        return {}
    step = DumpStep.for_remote(remote, LEDGER)
    script = "".join(
        load_script([item], dependencies=True) + step.step(database, index) + "\n" for index, item in enumerate(items)
    )
    result = remote.psql(script, database, extra=["-A", "-t", "-v", "ON_ERROR_STOP=0"], check=False, timeout=1800)
    rest, dumps = step.split(result.text, len(items))
    loaded: dict[str, Loaded] = {}
    key: str | None = None
    error: str | None = None
    body: list[str] = []
    for line in [*rest.splitlines(), END]:
        if line.startswith(MARK):
            key, _, state = line[len(MARK) :].partition(" ")
            code, _, message = state.partition(" ")
            error, body = (None if code == "00000" else f"{code} {message}".strip()), []
        elif line == END and key is not None:
            catalog = None
            if error is None:
                try:
                    catalog = Catalog.from_json(json.loads("\n".join(body)))
                except ValueError as exc:
                    error = f"introspection unreadable: {exc}"
            loaded[key] = Loaded(key, error, catalog)
            key = None
        elif key is not None:
            body.append(line)
    return {
        item.key: (loaded.get(item.key, Loaded(item.key, "no output", None)), normalize_dump(dump))
        for item, dump in zip(items, dumps, strict=True)
    }


def _in_two(sandbox: SandboxHandle, items: list[LoadItem]) -> dict[str, tuple[Loaded, str]]:
    """Two batches side by side (the sandbox has 2 cores), each one psql session in its own database."""
    half = len(items) // 2

    def run(chunk: list[LoadItem]) -> dict[str, tuple[Loaded, str]]:
        database = sandbox.create_database("oracle")
        # each item's pg_dump starts without Debian's Perl wrapper (35 ms each, ~1,500 dumps); the wrapper path has
        # the rest of the suite
        with sandbox.remote(database, pg_bindir=str(pg_bindir())) as remote:
            return load_with_dumps(remote, database, chunk)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(run, [items[:half], items[half:]])
    return {**first, **second}


def confirm_by_reload(sandbox: SandboxHandle, pairs: dict[str, tuple[str, str]]) -> dict[str, list[DumpDifference]]:
    """Each (rehearsed dump, desired dump) pair loaded again and dumped again: what still differs."""
    items = [
        LoadItem(f"{name}#{side}", SESSION_SETUP + strip_restrict(dump))
        for name, pair in pairs.items()
        for side, dump in zip(("rehearsed", "desired"), pair, strict=True)
    ]
    again = _in_two(sandbox, items)
    return {name: compare_dumps(again[f"{name}#rehearsed"][1], again[f"{name}#desired"][1], LEDGER) for name in pairs}


def judge(
    sandbox: SandboxHandle, applied: dict[str, tuple[Loaded, str]], desired: dict[str, tuple[Loaded, str]]
) -> tuple[dict[str, str], dict[str, str], int]:
    """(model failures, dump-oracle failures, artifacts cancelled by a reload) per plan name."""
    model: dict[str, str] = {}
    doubtful: dict[str, tuple[str, str]] = {}
    for name, (result, rehearsed) in applied.items():
        target, target_dump = desired[name]
        if result.error or result.catalog is None or target.catalog is None:
            model[name] = f"apply failed: {result.error}"
            continue
        remaining = compare(result.catalog, target.catalog).significant
        if remaining:
            model[name] = "; ".join(f"{c.kind} {c.status} {c.name}" for c in remaining)[:200]
        if compare_dumps(rehearsed, target_dump, LEDGER):
            doubtful[name] = (rehearsed, target_dump)
    confirmed = confirm_by_reload(sandbox, doubtful) if doubtful else {}
    oracle = {
        name: "; ".join(f"{d.key} ({d.status}): {' | '.join(d.lines[:6])}" for d in found)[:400]
        for name, found in confirmed.items()
        if found
    }
    return model, oracle, len(doubtful) - len(oracle)


@pytest.mark.timeout(1200)
def test_migra_plans_are_verified_by_the_dump_oracle_too(sandbox: SandboxHandle) -> None:
    root = CORPORA / "migra"
    if not root.exists():
        pytest.skip(f"corpus {root} is absent")
    cases = sorted(p for p in root.iterdir() if (p / "a.sql").exists())
    sql = {(c.name, side): (c / f"{side}.sql").read_text() for c in cases for side in ("a", "b")}
    steps = {c.name: c.name for c in cases} | {
        f"{c.name}+additions": c.name
        for c in cases
        if (c / "additions.sql").exists() and (c / "additions.sql").read_text().strip()
    }
    for step, case in steps.items():
        if step != case:
            sql[(step, "a")] = sql[(case, "a")] + "\n" + (root / case / "additions.sql").read_text()
    ensure_roles(sandbox.admin, set().union(*(role_names(text) for text in sql.values())))
    started = time.monotonic()
    loaded = _in_two(sandbox, [LoadItem(f"{name}/{side}", text) for (name, side), text in sql.items()])
    plans = {}
    for step, case in steps.items():
        a, b = loaded[f"{step}/a"][0].catalog, loaded[f"{case}/b"][0].catalog
        assert a is not None and b is not None, step
        plans[step] = generate_plan(a, b, allow_drop=True)
    before = sum(
        bool(compare_dumps(loaded[f"{step}/a"][1], loaded[f"{case}/b"][1], LEDGER)) for step, case in steps.items()
    )
    assert before >= 25, before  # the oracle can fail: before the plans, the dumps differ
    applied = _in_two(
        sandbox, [LoadItem(name, sql[(name, "a")] + "\n" + plan.script()) for name, plan in plans.items()]
    )
    model, oracle, artifacts = judge(sandbox, applied, {name: loaded[f"{steps[name]}/b"] for name in plans})
    both = len(plans) - len(set(model) | set(oracle))
    print(
        f"\nmigra: {both}/{len(plans)} verified by both oracles (model fails {len(model)}, "
        f"dump oracle fails {len(oracle)}; {artifacts} dump difference(s) were deparse artifacts gone after "
        f"one reload) in {time.monotonic() - started:.1f}s"
    )
    for name in sorted(set(model) | set(oracle)):
        print(f"  FAIL {name}: model: {model.get(name, 'ok')}; dump: {oracle.get(name, 'ok')}")
    assert model == {} and oracle == {}
    assert len(plans) == 26 + 3


@pytest.mark.timeout(3600)  # ~1,500 loads, each dumped: minutes on a shared 2-core machine
def test_sqldef_plans_are_verified_by_the_dump_oracle_too(sandbox: SandboxHandle) -> None:
    import yaml

    root = CORPORA / "sqldef"
    if not root.exists():
        pytest.skip(f"corpus {root} is absent")
    cases = [
        classify(f"{path.stem}/{name}", case)
        for path in sorted(root.glob("*.yml"))
        for name, case in yaml.safe_load(path.read_text()).items()
    ]
    cases = [c for c in cases if c.skip is None]
    ensure_roles(sandbox.admin, set().union(*(role_names(c.current) | role_names(c.desired) for c in cases)))
    started = time.monotonic()
    sides = {case.name: load_items(case) for case in cases}
    loaded = _in_two(sandbox, [item for pair in sides.values() for item in pair])
    items, empty_ok, empty_bad = [], 0, {}
    noisy: dict[str, list[str]] = {}  # statements although nothing differs, owners included
    for case in cases:
        (current, current_dump), (desired, desired_dump) = (
            loaded[case.name + "#current"],
            loaded[case.name + "#desired"],
        )
        if current.catalog is None or desired.catalog is None:
            continue
        plan = generate_plan(current.catalog, desired.catalog, allow_drop=True)
        if compare(current.catalog, desired.catalog, owners=True).is_empty and not plan.is_empty:
            noisy[case.name] = [s.sql for s in plan.statements][:3]
        if plan.is_empty:  # nothing to apply: both oracles must see the two sides as equal
            differences = compare_dumps(current_dump, desired_dump, LEDGER)
            if compare(current.catalog, desired.catalog).significant or differences:
                empty_bad[case.name] = "; ".join(f"{d.key} {d.lines[:4]}" for d in differences)[:300] or "model"
            else:
                empty_ok += 1
            continue
        current_item = sides[case.name][0]
        body = declarative_block(current_item.sql) if "$opsagent_" not in current_item.sql else current_item.sql
        items.append(LoadItem(case.name, body + plan.script(), current_item.schemas))
    applied = _in_two(sandbox, items)
    model, oracle, artifacts = judge(sandbox, applied, {item.key: loaded[item.key + "#desired"] for item in items})
    total = len(items) + empty_ok + len(empty_bad)
    both = total - len(set(model) | set(oracle) | set(empty_bad))
    print(
        f"\nsqldef: {both}/{total} verified by both oracles ({empty_ok + len(empty_bad)} needed no statement; "
        f"model fails {len(model)}, "
        f"dump oracle fails {len(oracle)}, empty plans the dumps contradict {len(empty_bad)}; {artifacts} artifact(s) "
        f"cancelled by a reload) in {time.monotonic() - started:.1f}s"
    )
    for name in sorted(set(model) | set(oracle) | set(empty_bad)):
        print(f"  FAIL {name}: model: {model.get(name, 'ok')}; dump: {oracle.get(name) or empty_bad.get(name, 'ok')}")
    print(f"  {len(noisy)} plans for equal sides: {noisy}")
    assert model == {}
    assert set(oracle) | set(empty_bad) <= KNOWN_SQLDEF_BLIND_SPOTS, (oracle, empty_bad)
    assert noisy == {}
    assert both >= 760 and len(items) >= 600  # guards against a silently shrinking corpus


# plans the model calls verified but that are wrong: identity columns' sequence options
# (START, INCREMENT, MINVALUE, ...)
# are not in the model, so the plan creates them with the defaults; only the dump oracle sees it (issue 13 §2)
KNOWN_SQLDEF_BLIND_SPOTS = {
    "tests_identity/AddIdentityWithSequenceToExistingColumn",
    "tests_identity/AddNewIdentityColumnWithSequence",
    "tests_identity/CreateIdentityColumnWithNegativeValue",
    "tests_identity/IdentityWithSequenceOptions",
}
