"""``pg_bindir``: the host's PostgreSQL binaries put first on the become user's PATH, so psql, pg_dump and pg_restore
start as themselves instead of through Debian's Perl ``pg_wrapper``.  Real sshd and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from opsagent.inventory import load_inventory
from opsagent.remote.sandbox import pg_bindir
from opsagent.remote.transport import open_remote

from .conftest import Project, write_inventory


def _with_bindir(project: Project, bindir: str) -> Project:
    path = write_inventory(project.root, {"sandbox": dataclasses.replace(project.host, pg_bindir=bindir)})
    return Project(project.root, load_inventory(path).host("sandbox"))  # as the inventory gives it


def _doctor_checks(project: Project) -> dict[str, dict[str, object]]:
    done = project.run("doctor", "--host", "sandbox", "--json")
    return {check["name"]: check for check in json.loads(done.stdout)["hosts"][0]["checks"]}


def test_the_tools_run_from_pg_bindir_and_a_deploy_works_through_them(project: Project) -> None:
    bindir = str(pg_bindir())
    project = _with_bindir(project, bindir + "/")  # a trailing slash is the same directory
    with open_remote(project.host) as remote:
        found = remote.run(["sh", "-c", "for t in psql pg_dump pg_restore; do command -v $t; done"]).text.split()
    assert found == [f"{bindir}/psql", f"{bindir}/pg_dump", f"{bindir}/pg_restore"]
    project.write_migration("001_t.sql", "CREATE TABLE t (id int PRIMARY KEY);\n")
    (project.root / "sql" / "schema.sql").write_text("CREATE TABLE t (id int PRIMARY KEY);\n")
    synced = project.run("sync", "--host", "sandbox", "--yes", "--json")  # backup (pg_dump, pg_restore), drift check
    assert synced.returncode == 0, synced.stderr
    document = json.loads(synced.stdout)
    assert document["applied"] == ["001"] and document["backup"]["verified"] is True
    assert document["warnings"] == []  # the closing drift check (pg_dump from pg_bindir too) found nothing
    extracted = project.run("extract", "--host", "sandbox", "--out", str(project.root / "snap.sql"))
    assert extracted.returncode == 0, extracted.stderr
    assert "CREATE TABLE public.t" in (project.root / "snap.sql").read_text()
    checks = _doctor_checks(project)
    assert checks["pg_bindir"]["ok"] is True and bindir in str(checks["pg_bindir"]["detail"])


def test_a_pg_bindir_without_the_tools_is_reported_and_the_rest_of_path_still_serves(project: Project) -> None:
    project = _with_bindir(project, "/nonexistent/pg/bin")
    checks = _doctor_checks(project)
    assert checks["pg_bindir"]["ok"] is False
    assert "psql" in str(checks["pg_bindir"]["detail"]) and "pg_bindir" in str(checks["pg_bindir"]["hint"])
    assert checks["psql (client)"]["ok"] is True  # the wrapper on the rest of PATH
    project.write_migration("001_t.sql", "CREATE TABLE t (id int);\n")
    synced = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert synced.returncode == 0, synced.stderr


def test_a_hostile_pg_bindir_is_a_path_never_shell(project: Project, tmp_path: Path) -> None:
    witness = tmp_path / "ran"
    project = _with_bindir(project, f"/nonexistent/$(touch {witness})/`touch {witness}`;touch {witness}")
    checks = _doctor_checks(project)
    project.write_migration("001_t.sql", "CREATE TABLE t (id int);\n")
    synced = project.run("sync", "--host", "sandbox", "--yes", "--no-backup")
    assert synced.returncode == 0, synced.stderr
    assert checks["pg_bindir"]["ok"] is False and not witness.exists()
