"""The lighter reloaded target (issue 14: a cold plan's third load of schema.sql, about half of it left out).

A plan's rehearsal starts from the live database's dump, so its findings against schema.sql include dump-and-load
deparse artifacts; they are settled against schema.sql's own dump-and-load form (``desired.reloaded``).  That form is
loaded without the heavy post-data entries (index builds, constraints written apart from their tables, foreign keys,
triggers) unless a finding lies in one of them: then the whole form is loaded, and a real difference there is never
explained away by an entry that was left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opsagent.remote.transport import Remote
from opsagent.schema.catalog import DEFAULT_EXCLUDED_TABLES, Catalog
from opsagent.schema.changes import Change
from opsagent.schema.declarative import PlanOptions, plan_against_sql
from opsagent.schema.desired import materialize
from opsagent.schema.drift import needs_whole_reload
from opsagent.schema.extract import dump_schema, normalize_dump
from opsagent.schema.oracle import DumpDifference, entries, without_heavy_entries

from .conftest import CORPORA, SandboxHandle
from .test_fast_paths import _record

# every heavy kind, and what must stay beside them: a view, an inline CHECK, a default, comments on both sides
HEAVY = """
CREATE TABLE parent (id int PRIMARY KEY, code text UNIQUE);
CREATE TABLE child (
    id int PRIMARY KEY,
    parent_id int REFERENCES parent (id),
    kind varchar(20) NOT NULL DEFAULT 'a' CONSTRAINT kind_ok CHECK (kind IN ('a', 'b'))
);
ALTER TABLE child ADD CONSTRAINT child_pair EXCLUDE USING btree (id WITH =);
CREATE INDEX child_kind ON child (kind);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER child_touch BEFORE UPDATE ON child FOR EACH ROW EXECUTE FUNCTION touch();
CREATE VIEW child_kinds AS SELECT kind FROM child WHERE kind IN ('a', 'b');
COMMENT ON INDEX child_kind IS 'by kind';
COMMENT ON CONSTRAINT child_pair ON child IS 'exclusion';
COMMENT ON TABLE child IS 'kept';
"""
CREATE_DATABASE = "CREATE DATABASE"


def _stored(cache: Path) -> dict[str, Any]:
    [path] = cache.glob("desired-*.json")
    document: dict[str, Any] = json.loads(path.read_text())
    return document


# ---------------------------------------------------------------- pure


def _difference(key: str) -> DumpDifference:
    kind, _, rest = key.partition(" ")
    schema, _, name = rest.partition(".")
    return DumpDifference(key, kind, schema, name, "changed", ())


SKIPPED = frozenset(
    {"INDEX public.child_kind", "CONSTRAINT public.child child_pair", "TRIGGER public.child child_touch"}
)


@pytest.mark.parametrize(
    ("changes", "differences", "whole"),
    [
        # where deparse artifacts live, and nothing left out is about them: the lighter form settles them
        ([Change("view", "public.child_kinds", "changed", [])], ["VIEW public.child_kinds"], False),
        ([Change("constraint", "public.child.kind_ok", "changed", [])], ["TABLE public.child"], False),
        ([Change("column", "public.child.kind", "changed", [])], ["DEFAULT public.child kind"], False),
        ([Change("function", "public.touch()", "changed", [])], [], False),
        # a dump entry, or a model finding, about something the lighter form left out: the whole form
        ([], ["INDEX public.child_kind"], True),
        ([Change("constraint", "public.child.child_pair", "changed", [])], [], True),
        ([Change("index", "public.child_kind", "changed", [])], [], True),
        ([Change("trigger", "public.child.child_touch", "changed", [])], [], True),
        ([Change("table", "public.child", "changed", [])], [], True),  # clustering, replica identity: in indexes
        ([Change("comment", "public.child_kind", "changed", [])], [], True),
        ([Change("rls", "public.child", "changed", [])], [], True),
        ([Change("some kind not known yet", "public.x", "changed", [])], [], True),
    ],
)
def test_the_whole_reloaded_form_is_asked_for_whenever_a_finding_touches_what_was_left_out(
    changes: list[Change], differences: list[str], whole: bool
) -> None:
    assert needs_whole_reload(SKIPPED, changes, [_difference(key) for key in differences]) is whole


def test_a_dump_with_a_rule_entry_is_reloaded_whole() -> None:
    dump = "\n".join(
        [
            "--",
            "-- Name: v _RETURN; Type: RULE; Schema: public; Owner: postgres",
            "--",
            "",
            "CREATE OR REPLACE VIEW public.v AS SELECT 1;",
            "",
            "--",
            "-- Name: t_x; Type: INDEX; Schema: public; Owner: postgres",
            "--",
            "",
            "CREATE INDEX t_x ON public.t USING btree (x);",
            "",
        ]
    )
    assert without_heavy_entries(dump) == (dump, frozenset())


# ---------------------------------------------------------------- real pg_dump, real server


def test_the_lighter_dump_loads_and_keeps_everything_but_the_heavy_entries(remote: Remote) -> None:
    remote.psql(HEAVY)
    dump = normalize_dump(dump_schema(remote))  # as the desired state keeps it
    light, skipped = without_heavy_entries(dump)
    assert skipped == {
        "CONSTRAINT public.parent parent_pkey",
        "CONSTRAINT public.parent parent_code_key",
        "CONSTRAINT public.child child_pkey",
        "CONSTRAINT public.child child_pair",
        "FK CONSTRAINT public.child child_parent_id_fkey",
        "INDEX public.child_kind",
        "TRIGGER public.child child_touch",
        "COMMENT public.INDEX child_kind",
        "COMMENT public.CONSTRAINT child_pair ON child",
    }
    assert set(entries(dump)) - set(entries(light)) == skipped  # nothing else left out
    document, reloaded_dump = materialize(remote, light, "light", DEFAULT_EXCLUDED_TABLES, is_dump=True)
    assert set(entries(reloaded_dump)) == set(entries(dump)) - skipped  # it loads, as it is
    assert "kind_ok" in reloaded_dump and "child_kinds" in reloaded_dump
    catalog = Catalog.from_json(document)
    assert "public.child_kinds" in catalog.views and not catalog.triggers and not catalog.indexes


def test_a_cold_plan_settles_artifacts_in_a_table_and_a_view_with_the_lighter_form(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote.psql(HEAVY)
    desired = HEAVY + "ALTER TABLE child ADD COLUMN note text;\n"
    cache = tmp_path / "cache"
    sent = _record(remote, monkeypatch)
    report = plan_against_sql(remote, desired, "schema.sql", PlanOptions(cache_dir=cache, recheck=True))
    assert report.verified, report.verification_line()
    stored = _stored(cache)
    assert "reloaded_dump" not in stored and "INDEX public.child_kind" in stored["reloaded_partial"]["skipped"]
    light_loads = [s for s in sent if CREATE_DATABASE in s and "CREATE INDEX child_kind" not in s]
    assert light_loads, "no load of the lighter form"
    # warm: the lighter form is read back from the cache, nothing is loaded for it
    sent.clear()
    again = plan_against_sql(remote, desired, "schema.sql", PlanOptions(cache_dir=cache, recheck=True))
    assert again.verified, again.verification_line()
    assert sum(s.count(CREATE_DATABASE) for s in sent) == 1  # the rehearsal only


def test_an_artifact_in_a_left_out_entry_is_settled_by_the_whole_form(remote: Remote, tmp_path: Path) -> None:
    """A partial index's predicate deparses differently after a dump-and-load: the finding is an index, which the
    lighter form left out, so the whole form is loaded (and kept in the cache in its place)."""
    remote.psql(HEAVY)
    desired = HEAVY + "CREATE INDEX child_kind_b ON child (id) WHERE kind IN ('a', 'b');\n"
    cache = tmp_path / "cache"
    report = plan_against_sql(remote, desired, "schema.sql", PlanOptions(cache_dir=cache, recheck=True))
    assert report.verified, report.verification_line()
    stored = _stored(cache)
    assert "reloaded_partial" not in stored and "CREATE INDEX child_kind_b" in stored["reloaded_dump"]


def test_a_real_difference_beside_the_artifacts_is_still_refused(remote: Remote, tmp_path: Path) -> None:
    """Beside the artifacts the lighter form settles, a difference the plan cannot make (column storage: seen by the
    dump only) is still refused."""
    remote.psql(HEAVY)
    blind = HEAVY + "ALTER TABLE child ALTER COLUMN kind SET STORAGE EXTERNAL;\n"
    report = plan_against_sql(remote, blind, "schema.sql", PlanOptions(cache_dir=tmp_path / "cache", recheck=True))
    assert not report.verified and report.undescribed
    assert any("SET STORAGE EXTERNAL" in line for d in report.undescribed for line in d.lines)


# ---------------------------------------------------------------- real schemas


@pytest.mark.timeout(900)
@pytest.mark.parametrize("schema", ["musicbrainz", "danbooru"])
def test_the_lighter_form_of_a_real_schema_loads_as_it_is(sandbox: SandboxHandle, schema: str) -> None:
    """No fallback to the whole form on a real schema: what is left out is never needed by what is kept."""
    path = CORPORA / "schemas" / f"{schema}.sql"
    if not path.exists():
        pytest.skip(f"corpus {path} is absent")
    with sandbox.remote(sandbox.create_database(schema)) as remote:
        _document, dump = materialize(remote, path.read_text(), f"{schema}.sql", DEFAULT_EXCLUDED_TABLES)
        light, skipped = without_heavy_entries(dump)
        assert len(skipped) > 100 and len(light) < len(dump)
        _light_document, reloaded_dump = materialize(remote, light, "light", DEFAULT_EXCLUDED_TABLES, is_dump=True)
    assert set(entries(reloaded_dump)) == set(entries(dump)) - skipped


@pytest.mark.timeout(900)
def test_a_cold_musicbrainz_plan_is_verified_with_the_lighter_form(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """The benchmark's cold plan (one index dropped): its rehearsal's deparse artifacts (two CHECKs, a view) are
    settled by the lighter form alone."""
    path = CORPORA / "schemas" / "musicbrainz.sql"
    if not path.exists():
        pytest.skip(f"corpus {path} is absent")
    sql = path.read_text()
    with sandbox.remote(sandbox.create_database("mb_light")) as remote:
        remote.psql(sql, timeout=600)
        remote.psql("DROP INDEX musicbrainz.artist_idx_name;")
        report = plan_against_sql(remote, sql, "musicbrainz.sql", PlanOptions(cache_dir=tmp_path / "cache"))
    assert report.verified, report.verification_line()
    assert "CREATE INDEX artist_idx_name" in report.plan.script()
    assert "reloaded_dump" not in _stored(tmp_path / "cache") and _stored(tmp_path / "cache")["reloaded_partial"]


def test_a_view_needing_a_primary_key_makes_the_dump_reload_whole(remote: Remote) -> None:
    """pg_dump writes a view whose GROUP BY leans on a primary key as a placeholder plus a post-data RULE entry: the
    lighter form would lack the key the rule needs, so such a dump is reloaded whole (and loads)."""
    remote.psql(
        "CREATE TABLE p (id int PRIMARY KEY, v int);\n"
        "CREATE VIEW per_id AS SELECT id, v FROM p GROUP BY id;\n"
        "CREATE INDEX p_v ON p (v);\n"
    )
    dump = normalize_dump(dump_schema(remote))
    assert "Type: RULE;" in dump
    light, skipped = without_heavy_entries(dump)
    assert (light, skipped) == (dump, frozenset())
    _document, reloaded_dump = materialize(remote, light, "whole", DEFAULT_EXCLUDED_TABLES, is_dump=True)
    assert set(entries(reloaded_dump)) == set(entries(dump))
