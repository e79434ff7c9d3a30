"""The dump oracle: a second check, independent of the catalog model, behind every "verified" and "no drift".

Pure tests of the normalization rules, then pairs that differ ONLY in what the
catalog model does not describe (column storage,
publications, event triggers, default privileges): the model alone would say
"verified" / "no drift"; with the oracle, plan and diff refuse (exit 3) and show
the dump lines.
"""

from __future__ import annotations

import json

import pytest

from opsagent.remote.markers import Markers
from opsagent.remote.transport import Remote
from opsagent.schema.declarative import plan_against_sql
from opsagent.schema.drift import diff_against_sql
from opsagent.schema.oracle import MAX_LINES, compare_dumps, entries, render_lines, unexplained
from opsagent.schema.scratch import DumpStep, leftovers

from .conftest import Project

# ---------------------------------------------------------------- pure: normalization rules

HEAD = """\\restrict abc

--
-- PostgreSQL database dump
--

-- Dumped from database version 15.18
SET statement_timeout = 0;

"""


def _entry(name: str, type_: str, schema: str, body: str, owner: str = "postgres") -> str:
    return f"--\n-- Name: {name}; Type: {type_}; Schema: {schema}; Owner: {owner}\n--\n\n{body}\n\n"


def _dump(*parts: str) -> str:
    return HEAD + "".join(parts) + "--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n"


TABLE_AB = _entry(
    "t",
    "TABLE",
    "public",
    "CREATE TABLE public.t (\n    a integer,\n    b text\n);\n\n\nALTER TABLE public.t OWNER TO app;",
)
TABLE_BA = _entry(
    "t",
    "TABLE",
    "public",
    "CREATE TABLE public.t (\n    b text,\n    a integer\n);\n\n\nALTER TABLE public.t OWNER TO postgres;",
    owner="postgres",
)
PK = _entry("t t_pkey", "CONSTRAINT", "public", "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a);")
VIEW = _entry("v", "VIEW", "public", "CREATE VIEW public.v AS\n SELECT t.a\n   FROM public.t;")


def test_column_order_owners_dump_order_and_header_do_not_count() -> None:
    live = _dump(TABLE_AB, PK, VIEW)
    desired = _dump(VIEW, TABLE_BA, PK).replace("15.18", "15.19").replace("abc", "xyz")
    assert compare_dumps(live, desired) == []


def test_a_storage_parameter_is_a_difference_with_its_dump_lines() -> None:
    live = _dump(TABLE_AB)
    desired = _dump(TABLE_AB.replace(");\n", ")\nWITH (fillfactor='70');\n", 1))
    [difference] = compare_dumps(live, desired)
    assert (difference.key, difference.status) == ("TABLE public.t", "changed")
    assert "-);" in difference.lines and "+WITH (fillfactor='70');" in difference.lines


def test_objects_on_one_side_only_and_the_session_state_they_were_created_in() -> None:
    publication = _entry(
        "p", "PUBLICATION", "-", "CREATE PUBLICATION p WITH (publish = 'insert, update, delete, truncate');"
    )
    [difference] = compare_dumps(_dump(TABLE_AB), _dump(TABLE_AB, publication))
    assert (difference.key, difference.status) == ("PUBLICATION p", "missing")
    assert difference.lines[-1].startswith("+CREATE PUBLICATION p")
    # a table created under another access method differs although its CREATE TABLE reads the same
    other_am = "SET default_table_access_method = columnar;\n\n" + TABLE_AB
    assert [d.key for d in compare_dumps(_dump(TABLE_AB), _dump(other_am))] == ["TABLE public.t"]
    assert entries(_dump(other_am))["TABLE public.t"][0].lines[0] == "SET default_table_access_method = columnar;"


def test_unlogged_and_a_check_constraint_are_seen_but_check_order_is_not() -> None:
    checks = (
        "CREATE TABLE public.t (\n    a integer,\n    CONSTRAINT one CHECK ((a > 0)),\n"
        "    CONSTRAINT two CHECK ((a < 9))\n);"
    )
    swapped = (
        "CREATE TABLE public.t (\n    a integer,\n    CONSTRAINT two CHECK ((a < 9)),\n"
        "    CONSTRAINT one CHECK ((a > 0))\n);"
    )
    assert (
        compare_dumps(_dump(_entry("t", "TABLE", "public", checks)), _dump(_entry("t", "TABLE", "public", swapped)))
        == []
    )
    unlogged = _entry("t", "TABLE", "public", checks.replace("CREATE TABLE", "CREATE UNLOGGED TABLE"))
    assert [d.key for d in compare_dumps(_dump(_entry("t", "TABLE", "public", checks)), _dump(unlogged))] == [
        "TABLE public.t"
    ]


def test_a_function_body_is_compared_verbatim() -> None:
    body = (
        "CREATE FUNCTION public.f() RETURNS integer\n    LANGUAGE sql\n    AS $$\nSELECT 1\n"
        "-- ALTER TABLE x OWNER TO y;\n$$;"
    )
    changed = body.replace("SELECT 1", "SELECT 2")
    assert (
        compare_dumps(
            _dump(_entry("f()", "FUNCTION", "public", body)), _dump(_entry("f()", "FUNCTION", "public", body))
        )
        == []
    )
    assert (
        len(
            compare_dumps(
                _dump(_entry("f()", "FUNCTION", "public", body)), _dump(_entry("f()", "FUNCTION", "public", changed))
            )
        )
        == 1
    )


def test_the_ledger_is_left_out_like_the_model_leaves_it_out() -> None:
    ledger = _entry(
        "schema_migrations", "TABLE", "public", "CREATE TABLE public.schema_migrations (\n    version text\n);"
    )
    ledger_pk = _entry(
        "schema_migrations schema_migrations_pkey",
        "CONSTRAINT",
        "public",
        "ALTER TABLE ONLY public.schema_migrations ADD ...;",
    )
    assert compare_dumps(_dump(TABLE_AB, ledger, ledger_pk), _dump(TABLE_AB), ["schema_migrations"]) == []
    assert len(compare_dumps(_dump(TABLE_AB, ledger, ledger_pk), _dump(TABLE_AB))) == 2


def test_what_the_model_reported_is_not_listed_again_and_the_listing_is_bounded() -> None:
    differences = compare_dumps(_dump(TABLE_AB, PK), _dump(TABLE_AB.replace("b text", "b bigint")))
    assert sorted(d.key for d in differences) == ["CONSTRAINT public.t t_pkey", "TABLE public.t"]
    assert (
        unexplained(differences, ["public.t.b"]) == []
    )  # the model saw the column: its table and the table's constraint are covered
    assert [d.key for d in unexplained(differences, ["public.other"])] == [
        "CONSTRAINT public.t t_pkey",
        "TABLE public.t",
    ]
    many = compare_dumps(
        _dump(), _dump(*(_entry(f"p{i}", "PUBLICATION", "-", f"CREATE PUBLICATION p{i};") for i in range(100)))
    )
    lines = render_lines(many)
    assert len(lines) == MAX_LINES + 1 and lines[-1].startswith("... ") and "more dump line(s)" in lines[-1]


def test_a_forged_end_marker_inside_a_dump_cannot_cut_it_short() -> None:
    step = DumpStep(("pg_dump",))
    forged = Markers("0" * 32).line("dump-end", "0")  # the end marker of another token
    text = f"before\n{step.begin(0)}\nline one\n{forged}\nline two\n{step.end(0)}\nafter"
    rest, dumps = step.split(text, 1)
    assert rest == "before\nafter" and dumps == [f"line one\n{forged}\nline two\n"]
    with pytest.raises(Exception, match="did not complete"):
        step.split(f"{step.begin(0)}\npartial", 1)


# ---------------------------------------------------------------- real PostgreSQL: what only the dump oracle sees

BASE = "CREATE TABLE t (id int PRIMARY KEY, note text);\n"
# on both sides: the model sees functions
ON_DDL = "CREATE FUNCTION on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;\n"
BLIND_SPOTS = {
    "publication": BASE + "CREATE PUBLICATION pub FOR TABLE t;\n",
    "column storage": BASE + "ALTER TABLE t ALTER COLUMN note SET STORAGE EXTERNAL;\n",
    "event trigger": BASE + ON_DDL + "CREATE EVENT TRIGGER watch ON ddl_command_end EXECUTE FUNCTION on_ddl();\n",
    "default privileges": BASE + "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC;\n",
}
# (column statistics targets were a blind spot until the catalog modelled them:
# the list holds what it still cannot describe)
EXPECTED_LINE = {
    "publication": "PUBLICATION",
    "column storage": "SET STORAGE EXTERNAL",
    "event trigger": "EVENT TRIGGER",
    "default privileges": "DEFAULT PRIVILEGES",
}


@pytest.mark.parametrize("kind", sorted(BLIND_SPOTS))
def test_plan_and_diff_refuse_what_only_the_dumps_show(remote: Remote, kind: str) -> None:
    remote.psql(BASE + (ON_DDL if kind == "event trigger" else ""))
    desired = BLIND_SPOTS[kind]
    report = plan_against_sql(remote, desired, "schema.sql")
    assert not report.verified and report.remaining == [], (report.remaining, report.plan.script())
    assert report.verification_line().startswith("not verified: the schema dumps still differ")
    assert any(EXPECTED_LINE[kind] in line for d in report.undescribed for line in d.lines), report.undescribed
    drift = diff_against_sql(remote, desired, "schema.sql")
    assert drift.drift and drift.result.significant == [] and drift.count >= 1
    assert any(EXPECTED_LINE[kind] in line for d in drift.undescribed for line in d.lines)
    fast = diff_against_sql(remote, desired, "schema.sql", fast=True)
    assert (
        not fast.drift and fast.dump_differences is None
    )  # the model alone is blind to it: that is what the oracle is for
    assert leftovers(remote) == []


def test_a_plan_that_reaches_the_target_is_still_verified_by_both(remote: Remote) -> None:
    """Columns added by ALTER land at the end, the owner differs, the ledger exists only live: none of it counts
    (and a storage parameter, which the model describes, is planned and then matches in the dumps too)."""
    remote.psql(
        "CREATE ROLE oracle_app; CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO oracle_app;"
        " CREATE TABLE schema_migrations (version text PRIMARY KEY); ALTER TABLE t SET (fillfactor = 70);"
    )
    try:
        desired = (
            "CREATE TABLE t (id int PRIMARY KEY, note text CHECK (note <> ''), at date) WITH (fillfactor = 70);"
            " CREATE VIEW v AS SELECT id, note FROM t;"
        )
        report = plan_against_sql(remote, desired, "schema.sql")
        assert report.verified, (report.remaining, report.dump_differences, report.plan.script())
        remote.psql(report.plan.script())
        drift = diff_against_sql(remote, desired, "schema.sql")
        assert not drift.drift and drift.dump_differences == [], drift.dump_differences
    finally:
        remote.psql("DROP TABLE IF EXISTS t CASCADE; DROP OWNED BY oracle_app; DROP ROLE oracle_app;")


def test_inv_plan_new_and_diff_with_a_difference_only_the_dump_shows(project: Project) -> None:
    (project.root / "sql" / "schema.sql").write_text(
        BLIND_SPOTS["column storage"] + "CREATE PUBLICATION pub FOR TABLE t;\n"
    )
    project.psql(BASE)
    planned = project.run("plan", "--host", "sandbox")
    assert planned.returncode == 3, planned.stdout + planned.stderr
    assert "not verified: the schema dumps still differ in 3 object(s) opsagent cannot yet describe" in planned.stderr
    assert "differences opsagent cannot yet describe" in planned.stderr
    assert "+ALTER TABLE ONLY public.t ALTER COLUMN note SET STORAGE EXTERNAL;" in planned.stderr
    assert "+CREATE PUBLICATION pub" in planned.stderr
    assert "nothing to do" not in planned.stderr
    doc = json.loads(project.run("plan", "--host", "sandbox", "--json").stdout)
    assert doc["verified"] is False and {d["type"] for d in doc["cannot_describe"]} == {
        "TABLE",
        "PUBLICATION",
        "PUBLICATION TABLE",
    }
    written = project.run("new", "tune statistics", "--from-diff", "--host", "sandbox")
    assert written.returncode == 3, written.stdout + written.stderr
    assert list(project.migrations.iterdir()) == []
    forced = project.run("new", "tune statistics", "--from-diff", "--host", "sandbox", "--force")
    assert forced.returncode == 3 and list(project.migrations.iterdir()) == []  # an empty plan has nothing to write
    diffed = project.run("diff", "--host", "sandbox")
    assert diffed.returncode == 3, diffed.stdout + diffed.stderr
    assert "differences opsagent cannot yet describe" in diffed.stdout and "SET STORAGE EXTERNAL" in diffed.stdout
    assert "no drift" not in diffed.stdout
    as_json = json.loads(project.run("diff", "--host", "sandbox", "--json").stdout)
    assert (
        as_json["drift"] is True and as_json["significant"] == 0 and len(as_json["dump_oracle"]["cannot_describe"]) == 3
    )
    fast = project.run("diff", "--host", "sandbox", "--fast")
    assert fast.returncode == 0 and "--fast: the schema dumps were not compared" in fast.stdout, fast.stdout
    assert "--fast" in project.run("diff", "--help").stdout


def test_grant_order_and_spelling_of_one_call_do_not_count_but_a_different_expression_does() -> None:
    acl = "GRANT SELECT ON TABLE public.t TO reader;\nGRANT UPDATE ON TABLE public.t TO writer;"
    swapped = "GRANT UPDATE ON TABLE public.t TO writer;\nGRANT SELECT ON TABLE public.t TO reader;"
    assert (
        compare_dumps(
            _dump(_entry("TABLE t", "ACL", "public", acl)), _dump(_entry("TABLE t", "ACL", "public", swapped))
        )
        == []
    )
    call = "CREATE INDEX i ON public.t USING btree (timezone('utc'::text, at));"
    syntax = "CREATE INDEX i ON public.t USING btree ((at AT TIME ZONE 'utc'::text));"
    other = "CREATE INDEX i ON public.t USING btree ((at AT TIME ZONE 'UTC'::text));"
    assert (
        compare_dumps(_dump(_entry("i", "INDEX", "public", call)), _dump(_entry("i", "INDEX", "public", syntax))) == []
    )
    assert (
        len(compare_dumps(_dump(_entry("i", "INDEX", "public", call)), _dump(_entry("i", "INDEX", "public", other))))
        == 1
    )
    # a CREATE TABLE whose columns were sorted is still SQL, so the same rule applies inside tables
    table = "CREATE TABLE public.t (\n    b text,\n    a timestamp DEFAULT timezone('utc'::text, now())\n);"
    spelled = "CREATE TABLE public.t (\n    a timestamp DEFAULT (now() AT TIME ZONE 'utc'::text),\n    b text\n);"
    assert (
        compare_dumps(_dump(_entry("t", "TABLE", "public", table)), _dump(_entry("t", "TABLE", "public", spelled)))
        == []
    )


def test_a_dump_that_fails_inside_the_session_is_an_error_not_an_empty_schema(remote: Remote) -> None:
    from opsagent.errors import RemoteError
    from opsagent.schema.scratch import Chunk, ScratchSet

    broken = DumpStep(("pg_dump", "--no-such-option", *remote.pg_args()))
    with (
        pytest.raises(RemoteError, match="did not complete"),
        ScratchSet(remote, [[Chunk("CREATE TABLE t (id int);", "x.sql")]], dump=broken) as scratch,
    ):
        scratch.load()
    assert leftovers(remote) == []
    working = DumpStep.for_remote(remote)
    with ScratchSet(
        remote,
        [[Chunk("CREATE TABLE t (id int);", "x.sql")], [Chunk("CREATE TABLE u (id int);", "y.sql")]],
        dump=working,
    ) as scratch:
        scratch.load()
    assert [sorted(entries(d)) for d in scratch.dumps] == [["TABLE public.t"], ["TABLE public.u"]]
