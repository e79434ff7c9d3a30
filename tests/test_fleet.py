"""Fleet scheduling (pure: the action is a plain function) and fleet doctor over real hosts."""

from __future__ import annotations

import json
import threading
import time

import pytest

from opsagent.errors import MigrationError
from opsagent.inventory import HostConfig
from opsagent.remote.fleet import HostOutcome, fleet_exit_code, run_fleet

from .conftest import Project, SandboxHandle, write_inventory

HOSTS = [HostConfig(name=f"h{i}", address="127.0.0.1") for i in range(6)]


def test_runs_in_parallel_and_keeps_order() -> None:
    active, peak = 0, 0
    lock = threading.Lock()

    def action(host: HostConfig) -> HostOutcome:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)
        with lock:
            active -= 1
        return HostOutcome(host.name, details={"applied": 1})

    started = time.monotonic()
    outcomes = run_fleet(HOSTS, action, parallel=3)
    assert [o.host for o in outcomes] == [h.name for h in HOSTS]
    assert peak == 3
    assert time.monotonic() - started < 0.2 * 6  # not serial
    assert fleet_exit_code(outcomes) == 0


def test_one_failure_does_not_stop_others_and_sets_exit_code() -> None:
    def action(host: HostConfig) -> HostOutcome:
        if host.name == "h2":
            raise MigrationError("boom")
        return HostOutcome(host.name)

    outcomes = run_fleet(HOSTS, action, parallel=2)
    assert [o.status for o in outcomes] == ["ok", "ok", "failed", "ok", "ok", "ok"]
    assert outcomes[2].message == "boom"
    assert fleet_exit_code(outcomes) == 1


def test_fail_fast_skips_unstarted_hosts() -> None:
    def action(host: HostConfig) -> HostOutcome:
        if host.name == "h0":
            raise MigrationError("boom")
        time.sleep(0.1)
        return HostOutcome(host.name)

    outcomes = run_fleet(HOSTS, action, parallel=1, fail_fast=True)
    assert outcomes[0].status == "failed"
    assert {o.status for o in outcomes[1:]} == {"skipped"}


def test_hanging_host_times_out_without_blocking() -> None:
    release = threading.Event()

    def action(host: HostConfig) -> HostOutcome:
        if host.name == "h1":
            release.wait(30)
        return HostOutcome(host.name)

    started = time.monotonic()
    outcomes = run_fleet(HOSTS[:3], action, parallel=1, timeout=0.5)
    release.set()
    assert [o.status for o in outcomes] == ["ok", "timed out", "ok"]
    assert time.monotonic() - started < 5


@pytest.fixture(scope="module")
def second_sandbox(sandbox_factory) -> SandboxHandle:  # type: ignore[no-untyped-def]
    return sandbox_factory("second")  # type: ignore[no-any-return]


@pytest.mark.parametrize("spec", ["db", "a,b", "all"])
def test_doctor_over_a_group_of_real_hosts(
    tmp_path, sandbox: SandboxHandle, second_sandbox: SandboxHandle, spec: str
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "p"
    root.mkdir()
    write_inventory(
        root, {"a": sandbox.host_for("postgres"), "b": second_sandbox.host_for("postgres")}, {"db": ["a", "b"]}
    )
    result = Project(root, sandbox.host).run("doctor", "--host", spec, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert [h["host"] for h in document["hosts"]] == ["a", "b"]
    assert all(h["details"]["ok"] for h in document["hosts"])


def test_fleet_summary_reports_failed_host(tmp_path, sandbox: SandboxHandle, second_sandbox: SandboxHandle) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "p"
    root.mkdir()
    write_inventory(
        root, {"a": sandbox.host_for("postgres"), "b": second_sandbox.host_for("no_such_db")}, {"db": ["a", "b"]}
    )
    result = Project(root, sandbox.host).run("doctor", "--host", "db")
    assert result.returncode == 1
    summary = result.stdout.split("summary")[-1]
    assert "a" in summary and "ok" in summary and "failed" in summary
