"""The diff engine against real material: migra's cases, psqldef's cases, danbooru and musicbrainz.

Everything is loaded into the sandbox cluster in batches (one psql session per
batch, see ``catalog_helpers``) so hundreds of schemas cost a few round trips.
"""

from __future__ import annotations

import collections
import concurrent.futures
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsagent.schema.catalog import Catalog, introspect_many
from opsagent.schema.compare import compare

from .catalog_helpers import (
    END,
    MARK,
    LoadItem,
    SqldefCase,
    classify,
    ensure_roles,
    load_items,
    load_many,
    role_names,
)
from .conftest import CORPORA, SandboxHandle

pytestmark = pytest.mark.slow


def corpus(*parts: str) -> Path:
    path = CORPORA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"corpus {path} is absent (../shared/corpora is only present in CI)")
    return path


def _parallel(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run independent remote batches side by side (the sandbox has 2 cores)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return [f.result() for f in [pool.submit(job) for job in jobs]]


# ---------------------------------------------------------------- migra


def test_migra_cases_self_diff_empty_and_a_vs_b_differs(sandbox: SandboxHandle) -> None:
    root = corpus("migra")
    cases = sorted(p for p in root.iterdir() if (p / "a.sql").exists())
    assert len(cases) == 26
    items: list[LoadItem] = []
    roles: set[str] = set()
    for case in cases:
        for side in ("a", "b"):
            sql = (case / f"{side}.sql").read_text()
            roles |= role_names(sql)
            items += [
                LoadItem(f"{case.name}/{side}", sql),
                LoadItem(f"{case.name}/{side}2", sql),
            ]  # loaded twice: new OIDs
    ensure_roles(sandbox.admin, roles)
    database = sandbox.create_database("migra")
    with sandbox.remote(database) as remote:
        loaded = load_many(remote, database, items)
    failures = []
    for case in cases:
        got = {side: loaded[f"{case.name}/{side}"] for side in ("a", "a2", "b", "b2")}
        errors = {side: item.error for side, item in got.items() if item.error}
        assert not errors, f"{case.name} failed to load: {errors}"
        cat = {side: item.catalog for side, item in got.items()}
        assert all(c is not None for c in cat.values())
        aa = compare(cat["a"], cat["a2"])  # type: ignore[arg-type]
        bb = compare(cat["b"], cat["b2"])  # type: ignore[arg-type]
        ab = compare(cat["a"], cat["b"])  # type: ignore[arg-type]
        if not aa.is_empty or not bb.is_empty or ab.is_empty:
            failures.append((case.name, aa.changes, bb.changes, ab.is_empty))
    assert failures == []


# ---------------------------------------------------------------- psqldef


# cases whose expectation this engine does not meet, with the reason (none at present)
KNOWN_FAILURES: dict[str, str] = {}
# cases that cannot be loaded on this server at all
KNOWN_LOAD_FAILURES = {
    "tests_datatypes/ColumnWithCollation": "needs the OS locale en_US (collation \"en_US\"), not installed",
    "tests_domains/CreateDomainWithCollation": "needs the OS locale en_US, not installed",
    "tests_fk_deps/ForeignKeyDependenciesCircular": (
        "two CREATE TABLEs reference each other inline: no statement order loads it (psqldef splits the FKs out)"
    ),
}


def sqldef_cases() -> list[SqldefCase]:
    cases = []
    for path in sorted(corpus("sqldef").glob("*.yml")):
        for name, case in yaml.safe_load(path.read_text()).items():
            cases.append(classify(f"{path.stem}/{name}", case))
    return cases


def _roles_for(path_cases: list[SqldefCase]) -> set[str]:
    roles: set[str] = set()
    for path in sorted(corpus("sqldef").glob("*.yml")):
        for case in yaml.safe_load(path.read_text()).values():
            roles |= set(case.get("managed_roles") or [])
    for case in path_cases:
        roles |= role_names(case.current) | role_names(case.desired)
    return roles


def test_sqldef_cases_differ_exactly_when_up_is_non_empty(sandbox: SandboxHandle) -> None:
    cases = sqldef_cases()
    assert len(cases) > 800
    applicable = [c for c in cases if c.skip is None]
    skipped = collections.Counter(c.skip for c in cases if c.skip)
    ensure_roles(sandbox.admin, _roles_for(applicable))
    items = [item for case in applicable for item in load_items(case)]
    half = len(items) // 2 // 2 * 2  # keep a case's two sides in one batch

    def batch(chunk: list[LoadItem]) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            database = sandbox.create_database("sqldef")
            with sandbox.remote(database) as remote:
                return load_many(remote, database, chunk)

        return run

    started = time.monotonic()
    first, second = _parallel([batch(items[:half]), batch(items[half:])])
    loaded = {**first, **second}
    passed, failed, load_failed = [], {}, {}
    for case in applicable:
        current, desired = loaded[case.name + "#current"], loaded[case.name + "#desired"]
        if current.error or desired.error:
            load_failed[case.name] = current.error or desired.error
            continue
        result = compare(current.catalog, desired.catalog, owners=True)  # both sides loaded by the same role
        if (not result.is_empty) == case.expect_difference:
            passed.append(case.name)
        else:
            failed[case.name] = [f"{c.kind} {c.status} {c.name}: {c.details}" for c in result.changes]
    ran = len(passed) + len(failed)
    print(
        f"\nsqldef: {len(cases)} cases, {len(applicable)} applicable, {len(load_failed)} not loadable, "
        f"{len(passed)}/{ran} pass ({100 * len(passed) / ran:.1f} %) in {time.monotonic() - started:.1f}s"
    )
    for reason, count in sorted(skipped.items()):
        print(f"  skipped {count:3d}: {reason}")
    for name, error in sorted(load_failed.items()):
        print(f"  not loadable: {name}: {error}")
    for name, changes in sorted(failed.items()):
        print(f"  FAIL {name}: {KNOWN_FAILURES.get(name, 'unexpected')}: {changes or 'no difference'}")
    assert set(load_failed) == set(KNOWN_LOAD_FAILURES), load_failed
    assert set(failed) == set(KNOWN_FAILURES), {k: v for k, v in failed.items() if k not in KNOWN_FAILURES}
    assert len(passed) >= 750  # guards against a silently shrinking corpus


# ---------------------------------------------------------------- real schemas: self-diff and single mutations

REAL = {
    "danbooru": {
        "file": "danbooru.sql",
        "mutations": {
            "drop an index": (
                "DROP INDEX public.index_posts_on_approver_id",
                "index",
                "extra",
                "public.index_posts_on_approver_id",
            ),
            "change a column type": (
                "ALTER TABLE public.posts ALTER COLUMN fav_count TYPE bigint",
                "column",
                "changed",
                "public.posts.fav_count",
            ),
            "add a check constraint": (
                "ALTER TABLE public.posts ADD CONSTRAINT posts_score_sane CHECK (score > -100000)",
                "constraint",
                "missing",
                "public.posts.posts_score_sane",
            ),
            "alter a view": (
                "DO $$ BEGIN EXECUTE 'CREATE OR REPLACE VIEW public.post_events AS '"
                " || rtrim(pg_get_viewdef('public.post_events'::regclass), '; ') || ' LIMIT 1000'; END $$",
                "view",
                "changed",
                "public.post_events",
            ),
            "alter a function body": (
                "CREATE OR REPLACE FUNCTION public.array_initials(text[]) RETURNS text LANGUAGE sql "
                "IMMUTABLE PARALLEL SAFE AS $f$ SELECT string_agg(left(string, 2), '' ORDER BY ordinality) "
                "FROM unnest($1) WITH ORDINALITY AS string; $f$",
                "function",
                "changed",
                "public.array_initials(text[])",
            ),
            "add a trigger": (
                "CREATE TRIGGER posts_noop BEFORE UPDATE ON public.posts FOR EACH ROW "
                "EXECUTE FUNCTION suppress_redundant_updates_trigger()",
                "trigger",
                "missing",
                "public.posts.posts_noop",
            ),
            "drop a foreign key": (
                "ALTER TABLE public.bans DROP CONSTRAINT fk_rails_070022cd76",
                "constraint",
                "extra",
                "public.bans.fk_rails_070022cd76",
            ),
        },
    },
    "musicbrainz": {
        "file": "musicbrainz.sql",
        "mutations": {
            "drop an index": (
                "DROP INDEX musicbrainz.artist_idx_name",
                "index",
                "extra",
                "musicbrainz.artist_idx_name",
            ),
            "change a column type": (
                "ALTER TABLE musicbrainz.artist ALTER COLUMN edits_pending TYPE bigint",
                "column",
                "changed",
                "musicbrainz.artist.edits_pending",
            ),
            "add a check constraint": (
                "ALTER TABLE musicbrainz.artist ADD CONSTRAINT artist_name_short CHECK (length(name) < 10000)",
                "constraint",
                "missing",
                "musicbrainz.artist.artist_name_short",
            ),
            "alter a view": (
                "DO $$ BEGIN EXECUTE 'CREATE OR REPLACE VIEW musicbrainz.release_event AS '"
                " || rtrim(pg_get_viewdef('musicbrainz.release_event'::regclass), '; ') || ' LIMIT 1000'; END $$",
                "view",
                "changed",
                "musicbrainz.release_event",
            ),
            "alter a function body": (
                "DO $$ BEGIN EXECUTE replace(pg_get_functiondef('musicbrainz.a_ins_event()'::regprocedure),"
                " 'BEGIN', 'BEGIN' || chr(10) || '    PERFORM 1;'); END $$",
                "function",
                "changed",
                "musicbrainz.a_ins_event()",
            ),
            "add a trigger": (
                "CREATE TRIGGER artist_noop BEFORE UPDATE ON musicbrainz.artist FOR EACH ROW "
                "EXECUTE FUNCTION suppress_redundant_updates_trigger()",
                "trigger",
                "missing",
                "musicbrainz.artist.artist_noop",
            ),
            "drop a foreign key": (
                "ALTER TABLE musicbrainz.artist DROP CONSTRAINT artist_fk_area",
                "constraint",
                "extra",
                "musicbrainz.artist.artist_fk_area",
            ),
        },
    },
}


def mutation_script(database_mutations: dict[str, str], *, dependencies: bool = False) -> str:
    """Each mutation in its own transaction: apply, introspect, roll back (no database copies needed)."""
    from opsagent.schema.catalog import introspection_sql

    query = introspection_sql(dependencies=dependencies)
    parts = []
    for key, sql in database_mutations.items():
        parts.append(
            f"BEGIN;\n\\set LAST_ERROR_SQLSTATE 00000\n\\set LAST_ERROR_MESSAGE ''\n{sql};\n"
            f"\\echo {MARK}{key.replace(' ', '_')} :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE\n"
            f"{query}\\echo {END}\nROLLBACK;\n"
        )
    return "".join(parts)


def parse_marked(text: str) -> Iterator[tuple[str, str, str]]:
    key, state, body = None, "", []
    for line in text.splitlines():
        if line.startswith(MARK):
            key, _, state = line[len(MARK) :].partition(" ")
            body = []
        elif line == END and key is not None:
            yield key, state, "\n".join(body)
            key = None
        elif key is not None:
            body.append(line)


@pytest.fixture(scope="module")
def real_schemas(sandbox: SandboxHandle) -> dict[str, tuple[str, str]]:
    """Each real schema loaded into two databases (independent loads: different OIDs), in parallel."""
    ensure_roles(sandbox.admin, [])
    names = {name: (sandbox.create_database(name), sandbox.create_database(name)) for name in REAL}

    def load(database: str, sql: str) -> Callable[[], None]:
        def run() -> None:
            with sandbox.remote(database) as remote:
                remote.psql(sql, timeout=300)

        return run

    jobs = []
    for name, spec in REAL.items():
        sql = corpus("schemas", str(spec["file"])).read_text()
        jobs += [load(names[name][0], sql), load(names[name][1], sql)]
    for start in range(0, len(jobs), 2):
        _parallel(jobs[start : start + 2])
    return names


@pytest.mark.parametrize("name", list(REAL))
def test_real_schema_self_diff_is_empty_and_each_mutation_is_one_change(
    name: str, real_schemas: dict[str, tuple[str, str]], sandbox: SandboxHandle
) -> None:
    import json

    first, second = real_schemas[name]
    mutations: dict[str, tuple[str, str, str, str]] = REAL[name]["mutations"]  # type: ignore[assignment]
    with sandbox.remote(first) as remote:
        before = remote.command_count
        catalogs = introspect_many(remote, [first, second])
        out = remote.psql(
            mutation_script({k: v[0] for k, v in mutations.items()}),
            extra=["-A", "-t", "-v", "ON_ERROR_STOP=0"],
            check=False,
            timeout=300,
        )
        assert remote.command_count - before == 2
    base = catalogs[first]
    assert base.stats()["tables"] > 50
    self_diff = compare(base, catalogs[second])
    assert self_diff.is_empty, self_diff.changes[:5]
    seen = set()
    for key, state, body in parse_marked(out.text):
        assert state.startswith("00000"), f"{key}: mutation failed: {state}"
        _sql, kind, status, object_name = mutations[key.replace("_", " ")]
        result = compare(base, Catalog.from_json(json.loads(body)))
        summary = [(c.kind, c.status, c.name) for c in result.changes]
        assert summary == [(kind, status, object_name)], f"{name}: {key}: {summary}"
        seen.add(key.replace("_", " "))
    assert seen == set(mutations)


# ---------------------------------------------------------------- scaling


def generated_schema(tables: int) -> str:
    """~8 columns, 2 indexes and 1 foreign key per table, one view per 10 tables."""
    out = []
    for i in range(tables):
        ref = f"  parent_id bigint REFERENCES t{i - 1} (id),\n" if i else "  parent_id bigint,\n"
        out.append(
            f"CREATE TABLE t{i} (\n  id bigserial PRIMARY KEY,\n{ref}  name text NOT NULL,\n  price numeric(12,2),\n"
            "  qty integer DEFAULT 0,\n  created_at timestamptz DEFAULT now(),\n  flags jsonb,\n"
            "  note varchar(200)\n);\n"
            f"CREATE INDEX t{i}_name_idx ON t{i} (name);\n"
            f"CREATE INDEX t{i}_created_idx ON t{i} (created_at) WHERE qty > 0;\n"
        )
        if i % 10 == 9:
            out.append(f"CREATE VIEW v{i} AS SELECT id, name, price FROM t{i} WHERE qty > 0;\n")
    return "".join(out)


def _timed_diff(sandbox: SandboxHandle, pair: tuple[str, str]) -> tuple[float, Catalog]:
    """One timing: introspect both databases (one round trip) and compare them."""
    with sandbox.remote(pair[0]) as remote:
        started = time.perf_counter()
        catalogs = introspect_many(remote, list(pair))
        result = compare(catalogs[pair[0]], catalogs[pair[1]])
        elapsed = time.perf_counter() - started
    assert result.is_empty
    return elapsed, catalogs[pair[0]]


def test_diff_time_per_table_does_not_grow_with_size(sandbox: SandboxHandle) -> None:
    sizes = (200, 1000)  # the benchmark goes to 2,000; 5x is enough to expose anything quadratic
    pairs = {size: (sandbox.create_database(f"scale{size}"), "") for size in sizes}

    def load(size: int) -> Callable[[], None]:
        def run() -> None:
            with sandbox.remote(pairs[size][0]) as remote:
                remote.psql(generated_schema(size), timeout=300)

        return run

    _parallel([load(size) for size in sizes])
    copies = {size: f"{pairs[size][0]}_copy" for size in pairs}
    sandbox.admin.psql("".join(f'CREATE DATABASE "{copies[s]}" TEMPLATE "{pairs[s][0]}";\n' for s in pairs), "postgres")
    pairs = {size: (pairs[size][0], copies[size]) for size in pairs}
    # the sizes are timed in turn, three rounds: a burst of load on a shared machine then hits
    # every size alike instead of the one being timed (a lone 0-table run of 400 ms once hid the 200 tables)
    timings: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(3):
        for size in sizes:
            elapsed, catalog = _timed_diff(sandbox, pairs[size])
            timings[size].append(elapsed)
            stats = catalog.stats()
            assert stats["tables"] == size and stats["foreign_keys"] == max(size - 1, 0)
            assert stats["indexes"] == 2 * size and stats["views"] == size // 10
    # the median of the three rounds: a best-of lets one quiet moment make one size look cheap (a suite at load 2:
    # best-of 200 tables +0.20 s, 1,000 tables +2.67 s). The whole times are compared, not what each size adds to an
    # empty database's: that subtraction took the noise of two small figures (CI: the empty database's three rounds
    # 165-293 ms made 200 tables look like +137 ms against +1,485 ms for 1,000, 10.8x, where a quiet machine measures
    # +200 ms and +950 ms, 4.8x).
    typical = {size: statistics.median(times) for size, times in timings.items()}
    ratio = typical[1000] / typical[200]
    small, large = (round(typical[size] * 1000) for size in sizes)
    print(f"\ndiff time: 200 tables {small} ms, 1000 tables {large} ms ({ratio:.1f}x)")
    # linear with a fixed cost stays under 5x (quiet machine 3.2x, the failed CI run 4.4x); quadratic is 25x on the
    # per-table part, which at 200 tables is over half the time here: 13x or more
    assert ratio <= 8, {"timings": timings}
