"""A plan's operations as SQL text: the one place that writes scripts, stage bodies and commented-out statements.

``inv plan`` prints ``script``; ``inv new --from-diff`` writes one migration file per stage from ``body``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .operations import STAGES, PlanStatement

HEADER = "SET LOCAL check_function_bodies = false;  -- function bodies may name objects created later\n"
_BEFORE = "-- outside a transaction: enum values the transaction below uses must be committed first\n"
_AFTER = "-- outside a transaction: CONCURRENTLY builds cannot run inside one\n"
_NEEDS_ALLOW_DROP = "destructive, needs --allow-drop"


def statement_text(statement: PlanStatement) -> str:
    """The statement as the script shows it: itself, or commented out with why (what to write, or --allow-drop)."""
    if statement.enabled:
        return statement.sql
    why = statement.manual or _NEEDS_ALLOW_DROP
    return f"-- {why}:\n" + "\n".join("-- " + line for line in statement.sql.splitlines())


def render(statements: Iterable[PlanStatement]) -> str:
    """Statements one after another, each ending its line."""
    lines = [statement_text(statement) for statement in statements]
    return "\n".join(lines) + "\n" if lines else ""


def body(statements: Sequence[PlanStatement], stage: str = "main") -> str:
    """One stage's statements, commented-out ones included as comments."""
    return render(s for s in statements if s.stage == stage)


def script(statements: Sequence[PlanStatement]) -> str:
    """The SQL to run, as the migration files run it: enum values first, one transaction, then concurrent builds."""
    before, main, after = (body(statements, stage) for stage in STAGES)
    parts = []
    if before:
        parts.append(_BEFORE + before)
    if main:
        parts.append(f"BEGIN;\n{HEADER}{main}COMMIT;\n")
    if after:
        parts.append(_AFTER + after)
    return "".join(parts)
