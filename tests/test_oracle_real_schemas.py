"""musicbrainz and danbooru built from an empty database by their plan, then diffed: 0 differences by the catalog
model and by the dump oracle.  Apart from tests/test_oracle_corpus.py so that the two long files run on the two
test workers side by side (the suite distributes whole files)."""

from __future__ import annotations

import time

import pytest

from .conftest import CORPORA, SandboxHandle

pytestmark = pytest.mark.slow


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("schema", ["musicbrainz", "danbooru"])
def test_real_schemas_from_empty_by_both_oracles(sandbox: SandboxHandle, schema: str) -> None:
    """Plan from an empty database, applied; then diff: 0 differences by the model and by the dumps, or exactly the
    objects the model cannot describe yet, each shown with its dump lines."""
    from opsagent.schema.declarative import plan_against_sql
    from opsagent.schema.drift import diff_against_sql

    path = CORPORA / "schemas" / f"{schema}.sql"
    if not path.exists():
        pytest.skip(f"corpus {path} is absent")
    sql = path.read_text()
    with sandbox.remote(sandbox.create_database(schema)) as remote:
        started = time.monotonic()
        report = plan_against_sql(remote, sql, f"{schema}.sql")
        planned = time.monotonic() - started
        assert report.error is None and report.remaining == [], (report.error, report.remaining)
        blind = {d.key for d in report.undescribed}
        remote.psql(report.plan.script(), timeout=900)
        timings = {}
        for fast in (True, False):
            started = time.monotonic()
            drift = diff_against_sql(remote, sql, f"{schema}.sql", fast=fast)
            timings.setdefault("fast" if fast else "with dump oracle", []).append(round(time.monotonic() - started, 2))
        assert drift.result.significant == [], drift.result.significant
        seen = {d.key for d in drift.undescribed}
    print(
        f"\n{schema}: plan from empty ({len(report.plan.statements)} statements) in {planned:.1f}s: "
        f"{report.verification_line()}; after applying it, diff: model {len(drift.result.significant)}, "
        f"dump oracle {sorted(seen)}; diff seconds {timings}"
    )
    # both real schemas: verified by the model and the dumps alike
    # (danbooru's operator and statistics targets are modelled)
    assert report.verified and blind == set() and seen == set()
