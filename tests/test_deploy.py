"""ops/scripts/deploy_to_server.sh end to end: schema sync first (real sandbox host), then rsync;
a failed sync stops it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, SandboxHandle, write_inventory

pytestmark = pytest.mark.skipif(
    shutil.which("rsync") is None, reason="rsync is not installed (bootstrap.sh installs it)"
)


def _deploy(project: Path, app: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OPSAGENT": f"{sys.executable} -m opsagent",
        "OPSAGENT_INVENTORY": str(project / "inventory.yaml"),
        "SERVER": "local",
        "DEST": str(dest),
        "SRC": f"{app}/",
        "COLUMNS": "200",
    }
    env.pop("SCHEMA_HOST", None)  # the script's default host: prod
    return subprocess.run(
        ["bash", str(project / "ops" / "scripts" / "deploy_to_server.sh")],
        cwd=project,
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_deploy_syncs_schema_then_ships_code_and_stops_when_sync_fails(
    tmp_path: Path, sandbox: SandboxHandle, fresh_db: str
) -> None:
    project = tmp_path / "proj"
    shutil.copytree(REPO / "ops", project / "ops")
    shutil.copytree(REPO / "sql", project / "sql", ignore=shutil.ignore_patterns("snapshots"))
    backup_dir = Path(sandbox.state.root) / "backups" / fresh_db
    write_inventory(project, {"prod": sandbox.host_for(fresh_db, backup_dir=str(backup_dir))})
    app, dest = tmp_path / "app", tmp_path / "srv" / "trad"
    (app / "pkg").mkdir(parents=True)
    (app / "main.py").write_text("print('v1')\n")
    (app / "pkg" / "util.py").write_text("X = 1\n")
    expected = len(list((project / "sql" / "migrations").glob("*.sql")))

    done = _deploy(project, app, dest)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deploy done" in done.stdout
    assert (dest / "main.py").read_text() == "print('v1')\n"
    assert (dest / "pkg" / "util.py").read_text() == "X = 1\n"
    with sandbox.remote(fresh_db) as remote:
        applied = remote.psql("SELECT count(*) FROM public.schema_migrations", extra=["-A", "-t"]).text.strip()
    assert int(applied) == expected

    (project / "sql" / "migrations" / "900_broken.sql").write_text("ALTER TABLE no_such_table ADD COLUMN x int;\n")
    (app / "new_feature.py").write_text("print('v2')\n")
    (app / "main.py").write_text("print('v2')\n")
    done = _deploy(project, app, dest)
    assert done.returncode != 0
    assert "deploy stopped" in done.stderr
    assert not (dest / "new_feature.py").exists()
    assert (dest / "main.py").read_text() == "print('v1')\n"
    with sandbox.remote(fresh_db) as remote:
        after = remote.psql("SELECT count(*) FROM public.schema_migrations", extra=["-A", "-t"]).text.strip()
    assert int(after) == expected  # the broken migration left no ledger row
