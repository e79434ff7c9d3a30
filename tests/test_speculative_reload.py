"""The reloaded target built ahead, and stopped when nobody needs it (issue 14: a cold plan of 5,000 tables).

A plan builds schema.sql's dump-and-load form (``desired.reloaded``) beside its rehearsal, on the chance that the
rehearsal's findings include deparse artifacts.  It starts only once the rehearsal's copy of the live structure is
loaded (the two loads would share the server), it is stopped instead of awaited when the rehearsal matched without
it (its scratch database goes to the background drop), and a plan that matched without it leaves a hint so the next
plan builds it only when a finding asks for it.  The hint can cost a load, never a verdict.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from opsagent.remote.transport import Remote
from opsagent.schema.ahead import Ahead
from opsagent.schema.declarative import PlanOptions, plan_against_sql
from opsagent.schema.scratch import Chunk, ScratchSet, leftovers

from .test_fast_paths import _record
from .test_light_reload import HEAVY

PLAIN = "CREATE TABLE account (id int PRIMARY KEY, name text NOT NULL);\nCREATE INDEX account_name ON account (name);\n"
CREATE_DATABASE = "CREATE DATABASE"


def _cache_file(cache: Path) -> Path:
    [path] = cache.glob("desired-*.json")
    return path


def _forget_reloaded(cache: Path) -> None:
    """The desired state as a plan stores it before any reloaded form is made."""
    path = _cache_file(cache)
    document: dict[str, Any] = json.loads(path.read_text())
    for key in ("reloaded_catalog", "reloaded_dump", "reloaded_partial"):
        document.pop(key, None)
    path.write_text(json.dumps(document))


def _exists(remote: Remote, name: str) -> bool:
    return bool(
        remote.query_json(f"SELECT to_json(EXISTS (SELECT FROM pg_database WHERE datname = '{name}'))", "postgres")
    )


# ---------------------------------------------------------------- the computation ahead


def test_a_target_still_waiting_for_the_copy_never_starts_once_abandoned() -> None:
    calls: list[int] = []
    ahead = Ahead(lambda: calls.append(1))
    ahead.start(after=threading.Event())  # the copy never reports loaded
    started = time.monotonic()
    ahead.abandon()
    assert time.monotonic() - started < 2 and calls == []


def test_a_result_asked_for_is_computed_at_once_even_before_the_copy_is_in() -> None:
    ahead = Ahead(lambda: "made")
    ahead.start(after=threading.Event())
    assert ahead() == "made" and ahead.asked
    ahead.abandon()  # the waiting thread ends without computing it again


def test_a_deferred_set_says_its_head_is_loaded_while_its_session_waits_for_the_rest(remote: Remote) -> None:
    """The rehearsal's copy waits for its plan with the session open: its marker tells the speculative target that
    the copy is in (before its session ends)."""
    scratch = ScratchSet(remote, [[Chunk(PLAIN)]], query="SELECT 1;", detached=True, deferred=True)
    load = Ahead(scratch.load)
    load.start()
    assert scratch.head_loaded.wait(60)
    assert _exists(remote, scratch.names[0])
    time.sleep(0.2)
    assert load._thread is not None and load._thread.is_alive(), "the session ended: the marker was not seen"
    scratch.resume(None)
    load.settle()
    assert leftovers(remote) == []


def _wait_for(remote: Remote, name: str) -> None:
    deadline = time.monotonic() + 60
    while not _exists(remote, name):
        assert time.monotonic() < deadline, f"{name} never created"
        time.sleep(0.1)


def test_abandoning_a_load_in_progress_drops_its_database_and_leaves_the_others(remote: Remote) -> None:
    """Two scratch loads in progress on two threads (each in a long statement): abandoning one ends its session
    and drops its database at once; the other goes on untouched until it is abandoned in turn."""
    long_load = [Chunk(PLAIN + "SELECT pg_sleep(300);\n")]
    sets = [ScratchSet(remote, [long_load], query="SELECT 1;", detached=True) for _ in range(2)]
    loads = [Ahead(scratch.load) for scratch in sets]
    for load, scratch in zip(loads, sets, strict=True):
        load.start()
        _wait_for(remote, scratch.names[0])
    started = time.monotonic()
    loads[0].abandon()
    assert time.monotonic() - started < 30  # not the end of its statement (300 s)
    assert loads[1]._thread is not None and loads[1]._thread.is_alive()
    assert _exists(remote, sets[1].names[0])
    loads[1].abandon()
    assert time.monotonic() - started < 60
    assert leftovers(remote) == []


# ---------------------------------------------------------------- plans


def test_a_plan_that_matched_without_the_target_leaves_nothing_and_a_hint(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote.psql(PLAIN)
    desired = PLAIN + "ALTER TABLE account ADD COLUMN note text;\n"
    cache = tmp_path / "cache"
    report = plan_against_sql(remote, desired, "schema.sql", PlanOptions(cache_dir=cache, recheck=True))
    assert report.verified, report.verification_line()
    assert list(cache.glob("reload-unneeded-*.json")), "no hint left for the next plan"
    assert leftovers(remote) == []
    # the next plan, the reloaded form not made yet: the hint keeps it from being loaded beside the rehearsal
    _forget_reloaded(cache)
    sent = _record(remote, monkeypatch)
    again = plan_against_sql(remote, desired, "schema.sql", PlanOptions(cache_dir=cache, recheck=True))
    assert again.verified, again.verification_line()
    assert sum(str(s).count(CREATE_DATABASE) for s in sent) == 1  # the rehearsal only
    assert leftovers(remote) == []


def test_a_wrong_hint_costs_a_load_never_a_verdict(remote: Remote, tmp_path: Path) -> None:
    """A hint that the target is not needed, for a schema whose rehearsal does carry artifacts (an IN list on a
    varchar column, in a CHECK and a view): the plan builds the target when its findings ask for it, and settles
    them as before."""
    remote.psql(HEAVY)
    desired = HEAVY + "ALTER TABLE child ADD COLUMN note text;\n"
    cache = tmp_path / "cache"
    first = plan_against_sql(remote, desired, "schema.sql", PlanOptions(cache_dir=cache, recheck=True))
    assert first.verified, first.verification_line()
    assert not list(cache.glob("reload-unneeded-*.json")), "the artifacts needed the target: no hint"
    _forget_reloaded(cache)
    stem = _cache_file(cache).name.removeprefix("desired-")
    (cache / f"reload-unneeded-{stem}").write_text('{"format": 1}')
    again = plan_against_sql(remote, desired, "schema.sql", PlanOptions(cache_dir=cache, recheck=True))
    assert again.verified, again.verification_line()
    assert "reloaded_partial" in json.loads(_cache_file(cache).read_text())  # made when asked for, and kept
    assert leftovers(remote) == []
