"""A drift check's report, light to import: a remembered verdict (``schema.fingerprint``) is rendered without loading
the catalog model or the comparison modules."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .changes import DiffResult
from .oracle import DumpDifference, unexplained

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from ..remote.transport import Remote


def where(remote: Remote, database: str | None = None) -> str:
    return f"{remote.host.name}:{database or remote.host.database}"


@dataclasses.dataclass(frozen=True)
class DriftReport:
    """Live against desired: the structured difference and, on request, a text diff of the dumps."""

    live: str  # e.g. "prod:trad"
    desired: str  # e.g. "sql/schema.sql", "prod:trad (snapshot sql/snapshots/prod/schema.sql)"
    result: DiffResult
    text: str | None = None
    dump_differences: list[DumpDifference] | None = None  # the dump oracle's findings; None: not run (--fast)
    desired_cache: str | None = (
        None  # "hit" / "miss": where schema.sql's materialized state came from; None: no cache involved
    )
    recalled: str | None = None  # both oracles' clean verdict on this very catalog, remembered from then (UTC, ISO)

    @property
    def undescribed(self) -> list[DumpDifference]:
        """Dump differences no model finding accounts for: "differences opsagent cannot yet describe"."""
        return unexplained(self.dump_differences or [], [c.name for c in self.result.changes])

    @property
    def drift(self) -> bool:
        """Drift worth alerting on (column order alone is reported but is not drift), by either oracle."""
        return bool(self.result.significant) or bool(self.undescribed)

    @property
    def count(self) -> int:
        """Differences: the model's significant findings plus the objects only the dump comparison sees."""
        return len(self.result.significant) + len(self.undescribed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "desired": self.desired,
            "drift": self.drift,
            "significant": len(self.result.significant),
            **self.result.to_dict(),
            "dump_oracle": oracle_summary(self.dump_differences, self.undescribed),
            **({"desired_cache": self.desired_cache} if self.desired_cache else {}),
            **({"recalled": {"verified_at": self.recalled}} if self.recalled else {}),
            **({"text": self.text} if self.text is not None else {}),
        }


def oracle_summary(differences: list[DumpDifference] | None, undescribed: list[DumpDifference]) -> dict[str, Any]:
    """The ``dump_oracle`` object of diff's and check's JSON: whether it ran, and what only it saw."""
    if differences is None:
        return {"checked": False}
    return {
        "checked": True,
        "differences": len(differences),
        "cannot_describe": [d.to_dict() for d in undescribed],
    }


def recalled_report(live: str, desired: str, at: str, *, text: bool = False) -> DriftReport:
    """No drift, as both oracles found at ``at`` on the very catalog(s) still there (nothing to show in a text diff)."""
    return DriftReport(live, desired, DiffResult([]), "" if text else None, [], None, at)


def drift_from_file(
    remote: Remote,
    path: Path,
    exclude_tables: Sequence[str],
    *,
    cache_dir: Path,
    text: bool = False,
    fast: bool = False,
    recheck: bool = False,
) -> DriftReport:
    """Live vs a schema file (``inv diff``): a remembered verdict is recalled before the comparison modules are even
    loaded; otherwise ``drift.diff_against_file``, with the probe already read."""
    from ..units import label
    from .fingerprint import probe, recall_schema

    seen = probe(remote, remote.host.database)
    at = None if recheck else recall_schema(cache_dir, path, seen, exclude_tables)
    if at is not None:
        return recalled_report(where(remote), label(path), at, text=text)
    from .drift import diff_against_file

    return diff_against_file(
        remote,
        path,
        text=text,
        fast=fast,
        exclude_tables=exclude_tables,
        cache_dir=cache_dir,
        recheck=recheck,
        probed=seen,
    )


def drift_between(
    live: Remote, other: Remote, *, cache_dir: Path, text: bool = False, fast: bool = False, recheck: bool = False
) -> DriftReport:
    """Two live databases (``inv diff --against-host``; each side hides its own host's ledger): both probed at once
    (the fingerprint, and the server facts that key a side kept; two databases of one server in one session), a
    remembered verdict recalled first; otherwise ``drift.diff_hosts``."""
    from concurrent.futures import ThreadPoolExecutor

    from .exclusions import ledger_exclusions
    from .fingerprint import probe, probe_pair, recall_hosts

    if live.shares_connection(other):
        seen = probe_pair(live, other)
    else:
        with ThreadPoolExecutor(1) as pool:  # the two probes at once, one channel each
            theirs = pool.submit(probe, other, other.host.database)
            seen = probe(live, live.host.database), theirs.result()
    fingerprints = seen[0].fingerprint, seen[1].fingerprint
    hidden = ledger_exclusions(live.host), ledger_exclusions(other.host)
    at = None if recheck else recall_hosts(cache_dir, fingerprints, *hidden)
    if at is not None:
        return recalled_report(where(live), where(other), at, text=text)
    from .drift import diff_hosts

    return diff_hosts(live, other, text=text, fast=fast, cache_dir=cache_dir, recheck=recheck, probed=seen)
