"""A plan's operations: what one statement does, to which object, with what lock, in which stage.

``opsagent.schema.plan`` decides the operations (pure, from two catalogs); ``opsagent.schema.render`` turns them
into the script's text.  Everything that judges a plan (``--allow-drop``, CONCURRENTLY staging, enum staging,
rollback, ``--json``) reads these fields, never the statement's text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# what an operation does to its object
ACTIONS = (
    "create",  # a new object (CREATE ..., ALTER TABLE ... ADD COLUMN / ADD CONSTRAINT)
    "replace",  # CREATE OR REPLACE of an object that exists
    "alter",  # a property changes in place
    "rename",  # moved out of the way before its replacement is created
    "drop",
    "attach",  # INHERIT, ATTACH PARTITION (a table or an index joins its parent)
    "detach",  # NO INHERIT, DETACH PARTITION
    "copy",  # rows or a sequence position carried from a renamed table to its rebuilt copy
    "grant",
    "revoke",
    "comment",
)

# "before": enum values that the transaction uses (a value added in a transaction cannot be used in it);
# "main": one transaction; "after": CREATE INDEX CONCURRENTLY, which cannot run in a transaction block
STAGES = ("before", "main", "after")

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
EXCLUSIVE = "EXCLUSIVE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
SHARE = "SHARE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"

# The PostgreSQL lock each operation takes on the object it changes (for an index, constraint, trigger, policy or
# statistics object: on its table), by (action, kind, variant).  ``None``: no lock anyone else could wait on (a new
# object nobody can see yet, a GRANT).  The variant sets apart what PostgreSQL locks differently within one kind.
# Every (action, kind, variant) the planner emits is listed: ``PlanStatement.lock`` raises on anything else.
LOCKS: dict[tuple[str, str, str], str | None] = {
    ("create", "schema", ""): None,
    ("drop", "schema", ""): ACCESS_EXCLUSIVE,
    ("create", "extension", ""): None,
    ("alter", "extension", ""): ACCESS_EXCLUSIVE,
    ("drop", "extension", ""): ACCESS_EXCLUSIVE,
    ("create", "collation", ""): None,
    ("drop", "collation", ""): ACCESS_EXCLUSIVE,
    ("create", "text search dictionary", ""): None,
    ("alter", "text search dictionary", ""): ACCESS_EXCLUSIVE,
    ("drop", "text search dictionary", ""): ACCESS_EXCLUSIVE,
    ("create", "text search configuration", ""): None,
    ("alter", "text search configuration", ""): ACCESS_EXCLUSIVE,
    ("drop", "text search configuration", ""): ACCESS_EXCLUSIVE,
    ("create", "type", ""): None,
    ("alter", "type", ""): ACCESS_EXCLUSIVE,
    ("alter", "type", "enum value"): EXCLUSIVE,  # ALTER TYPE ... ADD VALUE (AddEnumLabel)
    ("rename", "type", ""): ACCESS_EXCLUSIVE,
    ("drop", "type", ""): ACCESS_EXCLUSIVE,
    ("create", "sequence", ""): None,
    ("alter", "sequence", ""): SHARE_ROW_EXCLUSIVE,  # ALTER SEQUENCE (AlterSequence)
    ("alter", "sequence", "identity"): ACCESS_EXCLUSIVE,  # ALTER TABLE ... DROP IDENTITY (on the table)
    ("copy", "sequence", ""): ROW_EXCLUSIVE,  # setval, or reading the old position (set_config)
    ("drop", "sequence", ""): ACCESS_EXCLUSIVE,
    ("create", "function", ""): None,
    ("replace", "function", ""): None,  # a row of pg_proc rewritten: callers see the new body at their next call
    ("drop", "function", ""): ACCESS_EXCLUSIVE,
    ("create", "operator", ""): None,
    ("alter", "operator", ""): ACCESS_EXCLUSIVE,
    ("drop", "operator", ""): ACCESS_EXCLUSIVE,
    ("create", "operator family", ""): None,
    ("alter", "operator family", ""): ACCESS_EXCLUSIVE,
    ("drop", "operator family", ""): ACCESS_EXCLUSIVE,
    ("create", "operator class", ""): None,
    ("drop", "operator class", ""): ACCESS_EXCLUSIVE,
    ("create", "table", ""): None,
    ("create", "table", "partition"): ACCESS_EXCLUSIVE,  # CREATE TABLE ... PARTITION OF: on the parent
    ("create", "table", "inherits"): SHARE_UPDATE_EXCLUSIVE,  # CREATE TABLE ... INHERITS: on each parent
    ("alter", "table", ""): ACCESS_EXCLUSIVE,
    ("alter", "table", "cluster"): SHARE_UPDATE_EXCLUSIVE,  # CLUSTER ON, SET WITHOUT CLUSTER
    ("rename", "table", ""): ACCESS_EXCLUSIVE,
    ("attach", "table", ""): ACCESS_EXCLUSIVE,  # on the child (its parent: SHARE UPDATE EXCLUSIVE)
    ("detach", "table", ""): ACCESS_EXCLUSIVE,
    ("copy", "table", ""): ROW_EXCLUSIVE,
    ("drop", "table", ""): ACCESS_EXCLUSIVE,
    ("alter", "rls", ""): ACCESS_EXCLUSIVE,
    ("create", "column", ""): ACCESS_EXCLUSIVE,
    ("alter", "column", ""): ACCESS_EXCLUSIVE,
    ("alter", "column", "statistics"): SHARE_UPDATE_EXCLUSIVE,  # ALTER COLUMN ... SET STATISTICS
    ("drop", "column", ""): ACCESS_EXCLUSIVE,
    ("create", "constraint", ""): ACCESS_EXCLUSIVE,
    ("create", "constraint", "foreign key"): SHARE_ROW_EXCLUSIVE,  # on both tables
    ("drop", "constraint", ""): ACCESS_EXCLUSIVE,
    ("create", "index", ""): SHARE,
    ("create", "index", "concurrently"): SHARE_UPDATE_EXCLUSIVE,
    ("alter", "index", "statistics"): SHARE_UPDATE_EXCLUSIVE,
    ("attach", "index", ""): SHARE_UPDATE_EXCLUSIVE,
    ("drop", "index", ""): ACCESS_EXCLUSIVE,
    ("drop", "index", "concurrently"): SHARE_UPDATE_EXCLUSIVE,
    ("create", "view", ""): None,
    ("drop", "view", ""): ACCESS_EXCLUSIVE,
    ("create", "statistics", ""): SHARE_UPDATE_EXCLUSIVE,
    ("alter", "statistics", ""): SHARE_UPDATE_EXCLUSIVE,
    ("drop", "statistics", ""): ACCESS_EXCLUSIVE,
    ("create", "trigger", ""): SHARE_ROW_EXCLUSIVE,
    ("alter", "trigger", ""): SHARE_ROW_EXCLUSIVE,  # ENABLE / DISABLE TRIGGER
    ("drop", "trigger", ""): ACCESS_EXCLUSIVE,
    ("create", "policy", ""): ACCESS_EXCLUSIVE,
    ("drop", "policy", ""): ACCESS_EXCLUSIVE,
    ("comment", "comment", ""): SHARE_UPDATE_EXCLUSIVE,
    ("grant", "privilege", ""): None,
    ("revoke", "privilege", ""): None,
}


@dataclasses.dataclass(frozen=True)
class PlanStatement:
    """One operation of a plan and its statement; a destructive one runs only when the plan allows drops.

    The first seven fields are the documented ``--json`` keys (docs/JSON.md); ``action``, ``name`` and the
    ``transactional`` and ``lock`` properties are documented there too.  ``variant``, ``unseen``,
    ``adds_enum_value`` and ``rerunnable`` are the planner's own.
    """

    sql: str  # the statement, ending with ";"
    kind: str  # the object kind it changes
    phase: str
    destructive: bool = False
    enabled: bool = True  # False: emitted commented out (destructive without --allow-drop, or ``manual``)
    stage: str = "main"  # "before"/"after": on its own, outside the plan's transaction (see STAGES)
    manual: str | None = None  # what the user must write before this statement can run (always commented out)
    action: str = "alter"  # see ACTIONS
    name: str = ""  # the catalog key of the object it acts on (a column: ``table.column``)
    variant: str = ""  # what sets its lock apart within its kind (see LOCKS): "concurrently", "foreign key"...
    unseen: bool = False  # it acts on a relation this plan creates: nobody else can be waiting on it
    adds_enum_value: str | None = None  # ALTER TYPE ... ADD VALUE: the value's literal (enum staging)
    rerunnable: str | None = None  # the same statement, harmless when run twice: its form outside the transaction

    @property
    def transactional(self) -> bool:
        """Whether it runs inside the plan's transaction (the "before" and "after" stages run on their own)."""
        return self.stage == "main"

    @property
    def lock(self) -> str | None:
        """The PostgreSQL lock it takes on its object (on the table of an index, constraint, trigger...)."""
        level = LOCKS[(self.action, self.kind, self.variant)]
        return None if self.unseen else level

    @property
    def statement(self) -> str:
        """The statement without its final semicolon (as a step of a larger script runs it)."""
        return self.sql.rstrip(";")

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON keys (docs/JSON.md): the original seven first, then what the operation is."""
        return {
            "sql": self.sql,
            "kind": self.kind,
            "phase": self.phase,
            "destructive": self.destructive,
            "enabled": self.enabled,
            "stage": self.stage,
            "manual": self.manual,
            "action": self.action,
            "object": self.name,
            "transactional": self.transactional,
            "lock": self.lock,
        }
