"""Plans as typed operations (pure, no server): what each operation says about itself (action, object, lock,
stage), and the one module that writes them as text (``opsagent.schema.render``)."""

from __future__ import annotations

import pytest

from opsagent.schema.catalog import Catalog, Column, Constraint, Index, Table, Trigger, Type
from opsagent.schema.operations import ACTIONS, LOCKS, STAGES, PlanStatement
from opsagent.schema.plan import PHASES, generate_plan
from opsagent.schema.render import HEADER, body, render, script

ORDERS = Table("public", "orders", columns=(Column("id", "integer", not_null=True), Column("customer", "integer")))
REFS = Table("public", "refs", columns=(Column("order_id", "integer"),))
BY_CUSTOMER = Index(
    "public.orders", "orders_customer", "CREATE INDEX orders_customer ON public.orders USING btree (customer)"
)
ORDERS_ID = Index("public.orders", "orders_id", "CREATE UNIQUE INDEX orders_id ON public.orders USING btree (id)")
FK = Constraint("public.refs", "refs_order", "f", "FOREIGN KEY (order_id) REFERENCES public.orders(id)")


def _catalog(
    *tables: Table, indexes: tuple[Index, ...] = (), constraints: tuple[Constraint, ...] = (), **more: object
) -> Catalog:
    return Catalog(
        tables={t.key: t for t in tables},
        indexes={i.key: i for i in indexes},
        constraints={c.key: c for c in constraints},
        **more,  # type: ignore[arg-type]
    )


def _ops(plan_statements: list[PlanStatement]) -> list[tuple[str, str, str, str | None]]:
    return [(s.action, s.kind, s.name, s.lock) for s in plan_statements]


# ---------------------------------------------------------------- what each operation is, and its lock


def test_a_new_table_with_its_index_takes_no_lock_anyone_waits_on() -> None:
    notes = Table("public", "notes", columns=(Column("id", "integer"),))
    by_id = Index("public.notes", "notes_id", "CREATE INDEX notes_id ON public.notes USING btree (id)")
    plan = generate_plan(_catalog(ORDERS), _catalog(ORDERS, notes, indexes=(by_id,)))
    assert _ops(plan.statements) == [
        ("create", "table", "public.notes", None),
        ("create", "index", "public.notes_id", None),  # SHARE on a table nobody else can see yet
    ]


def test_changes_to_existing_tables_name_the_lock_postgresql_takes() -> None:
    wider = Table(
        "public",
        "orders",
        columns=(Column("id", "integer", not_null=True), Column("customer", "bigint"), Column("note", "text")),
    )
    plan = generate_plan(
        _catalog(ORDERS, REFS), _catalog(wider, REFS, indexes=(BY_CUSTOMER, ORDERS_ID), constraints=(FK,))
    )
    assert _ops(plan.statements) == [
        ("alter", "column", "public.orders.customer", "ACCESS EXCLUSIVE"),
        ("create", "column", "public.orders.note", "ACCESS EXCLUSIVE"),
        ("create", "index", "public.orders_customer", "SHARE"),
        ("create", "index", "public.orders_id", "SHARE"),
        ("create", "constraint", "public.refs.refs_order", "SHARE ROW EXCLUSIVE"),  # a foreign key
    ]
    assert all(s.transactional and not s.destructive for s in plan.statements)


def test_concurrent_builds_run_outside_the_transaction_with_a_weaker_lock() -> None:
    plan = generate_plan(
        _catalog(ORDERS), _catalog(ORDERS, indexes=(BY_CUSTOMER,)), concurrent_tables={"public.orders"}
    )
    assert [(s.action, s.variant, s.stage, s.transactional, s.lock) for s in plan.statements] == [
        ("drop", "concurrently", "after", False, "SHARE UPDATE EXCLUSIVE"),
        ("create", "concurrently", "after", False, "SHARE UPDATE EXCLUSIVE"),
    ]


def test_a_unique_index_a_new_foreign_key_needs_is_found_by_the_operations_fields() -> None:
    plan = generate_plan(
        _catalog(ORDERS, REFS),
        _catalog(ORDERS, REFS, indexes=(ORDERS_ID,), constraints=(FK,)),
        concurrent_tables={"public.orders"},
    )
    assert [(s.kind, s.stage, s.lock) for s in plan.statements] == [
        ("index", "main", "SHARE"),
        ("constraint", "main", "SHARE ROW EXCLUSIVE"),
    ]


def test_drops_are_destructive_operations_enabled_only_with_allow_drop() -> None:
    gone = Table("public", "gone", columns=(Column("x", "integer"),))
    for allow_drop in (False, True):
        plan = generate_plan(_catalog(ORDERS, gone), _catalog(ORDERS), allow_drop=allow_drop)
        (drop,) = plan.statements
        assert (drop.action, drop.name, drop.destructive, drop.enabled) == ("drop", "public.gone", True, allow_drop)
        assert drop.lock == "ACCESS EXCLUSIVE"


def test_triggers_grants_and_enum_values_have_their_own_locks() -> None:
    trigger = Trigger(
        "public.orders", "audit", "CREATE TRIGGER audit AFTER INSERT ON public.orders EXECUTE FUNCTION f()"
    )
    granted = Table("public", "orders", columns=ORDERS.columns, privileges=(("reader", "SELECT", False),))
    mood = Type("public", "mood", "enum", labels=("sad",))
    more = Type("public", "mood", "enum", labels=("sad", "ok"))
    plan = generate_plan(
        _catalog(ORDERS, types={mood.key: mood}),
        _catalog(granted, triggers={trigger.key: trigger}, types={more.key: more}),
    )
    assert _ops(plan.statements) == [
        ("alter", "type", "public.mood", "EXCLUSIVE"),
        ("create", "trigger", "public.orders.audit", "SHARE ROW EXCLUSIVE"),
        ("grant", "privilege", "public.orders", None),
    ]


def test_every_lock_entry_is_an_action_and_a_kind_the_planner_knows() -> None:
    kinds = {kind for _, kind, _ in LOCKS}
    assert {action for action, _, _ in LOCKS} <= set(ACTIONS)
    assert "constraint" in kinds and "index" in kinds
    with pytest.raises(KeyError):  # an operation the table does not list is a planner bug, not a guess
        _ = PlanStatement("TRUNCATE t;", "table", "tables", action="truncate").lock


# ---------------------------------------------------------------- the JSON keys


def test_json_keeps_the_documented_keys_first_then_adds_the_operation() -> None:
    statement = PlanStatement(
        "DROP TABLE public.t;", "table", "drop tables", True, False, action="drop", name="public.t"
    )
    assert list(statement.to_dict()) == [
        "sql",
        "kind",
        "phase",
        "destructive",
        "enabled",
        "stage",
        "manual",
        "action",
        "object",
        "transactional",
        "lock",
    ]
    assert statement.to_dict()["lock"] == "ACCESS EXCLUSIVE" and statement.to_dict()["object"] == "public.t"


# ---------------------------------------------------------------- render


def _statement(sql: str, stage: str = "main", **fields: object) -> PlanStatement:
    return PlanStatement(sql, "table", PHASES[0], stage=stage, **fields)  # type: ignore[arg-type]


def test_render_writes_enabled_destructive_and_manual_statements_differently() -> None:
    statements = [
        _statement("ALTER TABLE t ADD COLUMN a integer;"),
        _statement("DROP TABLE u;", destructive=True, enabled=False),
        _statement("ALTER TABLE t ALTER COLUMN b TYPE timestamp\nUSING b;", enabled=False, manual="write the USING"),
    ]
    assert render(statements) == (
        "ALTER TABLE t ADD COLUMN a integer;\n"
        "-- destructive, needs --allow-drop:\n-- DROP TABLE u;\n"
        "-- write the USING:\n-- ALTER TABLE t ALTER COLUMN b TYPE timestamp\n-- USING b;\n"
    )
    assert render([]) == ""


def test_script_puts_each_stage_in_its_place() -> None:
    statements = [
        _statement("CREATE INDEX CONCURRENTLY i ON t (a);", "after"),
        _statement("ALTER TABLE t ADD COLUMN a integer;"),
        _statement("ALTER TYPE m ADD VALUE IF NOT EXISTS 'x';", "before"),
    ]
    text = script(statements)
    assert text == (
        "-- outside a transaction: enum values the transaction below uses must be committed first\n"
        "ALTER TYPE m ADD VALUE IF NOT EXISTS 'x';\n"
        f"BEGIN;\n{HEADER}ALTER TABLE t ADD COLUMN a integer;\nCOMMIT;\n"
        "-- outside a transaction: CONCURRENTLY builds cannot run inside one\n"
        "CREATE INDEX CONCURRENTLY i ON t (a);\n"
    )
    assert [body(statements, stage) for stage in STAGES] == [
        "ALTER TYPE m ADD VALUE IF NOT EXISTS 'x';\n",
        "ALTER TABLE t ADD COLUMN a integer;\n",
        "CREATE INDEX CONCURRENTLY i ON t (a);\n",
    ]
    assert (
        script([]) == ""
        and script(statements[1:2]) == f"BEGIN;\n{HEADER}ALTER TABLE t ADD COLUMN a integer;\nCOMMIT;\n"
    )


def test_enum_staging_moves_the_values_with_their_rerunnable_form_and_keeps_what_they_are() -> None:
    old = Type("public", "mood", "enum", labels=("sad",))
    new = Type("public", "mood", "enum", labels=("sad", "ok"))
    table = Table("public", "people", columns=(Column("mood", "public.mood"),))
    with_default = Table("public", "people", columns=(Column("mood", "public.mood", default="'ok'::public.mood"),))
    plan = generate_plan(_catalog(table, types={old.key: old}), _catalog(with_default, types={new.key: new}))
    added, default = plan.statements
    assert (added.stage, added.transactional, added.action, added.adds_enum_value) == ("before", False, "alter", "'ok'")
    assert added.sql == added.rerunnable == "ALTER TYPE public.mood ADD VALUE IF NOT EXISTS 'ok' AFTER 'sad';"
    assert (default.stage, default.transactional) == ("main", True)
    assert plan.body("before") == added.sql + "\n"


def test_a_new_partition_locks_its_existing_parent_and_a_new_parent_nothing() -> None:
    parent = Table("public", "events", columns=(Column("at", "date"),), partition_key="RANGE (at)")
    june = Table(
        "public",
        "events_june",
        columns=(Column("at", "date"),),
        partition_of="public.events",
        partition_bound="FOR VALUES FROM ('2026-06-01') TO ('2026-07-01')",
    )
    onto_live = generate_plan(_catalog(parent), _catalog(parent, june))
    assert _ops(onto_live.statements) == [("create", "table", "public.events_june", "ACCESS EXCLUSIVE")]
    both_new = generate_plan(_catalog(), _catalog(parent, june))
    assert _ops(both_new.statements) == [
        ("create", "table", "public.events", None),
        ("create", "table", "public.events_june", None),  # its parent is new too: nobody can be waiting on it
    ]
