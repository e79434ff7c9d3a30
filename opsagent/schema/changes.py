"""What a comparison found: typed changes, light to import (the CLI renders a remembered verdict without the catalog
model; ``schema.compare`` makes them)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

Status = Literal["extra", "missing", "changed"]
Severity = Literal["low", "normal"]

# report order of kinds (grouping in the CLI follows it)
KIND_ORDER = (
    "extension",
    "schema",
    "collation",
    "text search dictionary",
    "text search configuration",
    "type",
    "sequence",
    "table",
    "column",
    "constraint",
    "index",
    "statistics",
    "view",
    "materialized view",
    "function",
    "procedure",
    "operator",
    "operator family",
    "operator class",
    "trigger",
    "policy",
    "rls",
    "privilege",
    "owner",
    "comment",
)


@dataclasses.dataclass(frozen=True)
class Change:
    """One difference: ``extra`` exists only in live, ``missing`` only in desired."""

    kind: str
    name: str
    status: Status
    details: list[str] = dataclasses.field(default_factory=list)
    severity: Severity = "normal"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "details": list(self.details),
            "severity": self.severity,
        }


@dataclasses.dataclass(frozen=True)
class DiffResult:
    """All changes between live and desired, sorted by kind then name."""

    changes: list[Change]

    @property
    def is_empty(self) -> bool:
        return not self.changes

    @property
    def significant(self) -> list[Change]:
        """Changes above low severity (column order alone is not drift worth failing on)."""
        return [c for c in self.changes if c.severity != "low"]

    def by_kind(self) -> dict[str, list[Change]]:
        groups: dict[str, list[Change]] = {}
        for change in self.changes:
            groups.setdefault(change.kind, []).append(change)
        return groups

    def counts(self) -> dict[str, int]:
        return {
            status: sum(1 for c in self.changes if c.status == status) for status in ("extra", "missing", "changed")
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "empty": self.is_empty,
            "counts": self.counts(),
            "changes": {kind: [c.to_dict() for c in items] for kind, items in self.by_kind().items()},
        }
