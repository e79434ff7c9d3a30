"""Two databases of one server (issue 14: ``diff --against-host`` at 0.5x migra): one SSH connection, and one psql
session that probes both (``HostConfig.same_server``, ``Remote.beside``, ``fingerprint.probe_pair``).

- What counts as one server (pure): the SSH login, the become user, the cluster and its binaries; nothing else.
- The pair's verdicts are the same as two hosts' (drift found either way, none when equal), over one connection,
  with one command for both probes on a remembered verdict.
- The other database's name is never psql or shell text: a hostile name is probed and compared like any other.
- A missing other database is reported as that host's own probe reports it.
- The early connection opens one connection for such a pair, and two for two servers; the CLI gives the same
  verdicts through it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest

from opsagent.errors import CommandFailed
from opsagent.inventory import SERVER_FIELDS, HostConfig, load_inventory
from opsagent.launch import start_early
from opsagent.remote import early
from opsagent.remote.sandbox import pg_bindir
from opsagent.remote.transport import open_pair, program_name
from opsagent.schema.fingerprint import pair_probe_argv, probe, probe_pair
from opsagent.schema.report import drift_between

from .conftest import Project, SandboxHandle, write_inventory

HOSTILE = "We ird'\"x=1 \\ y:z $(touch /tmp/opsagent-pwned) `id`; --"
TABLE = "CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL);\n"


def test_one_server_is_the_same_login_become_user_and_cluster() -> None:
    base = HostConfig(name="prod", address="db1", port=22, user="ops", database="app", pg_port=5432)
    others = dict(name="staging", database="app_staging", backup_dir="/b", lock_timeout="9s", keep_backups=3)
    assert base.same_server(dataclasses.replace(base, **others))  # type: ignore[arg-type]
    changed = {
        "address": "db2",
        "port": 2222,
        "user": "root",
        "identity_file": "/k",
        "known_hosts": "/kh",
        "gateway": "bastion",
        "connect_timeout": 3.0,
        "become": "app",
        "pg_host": "/run/other",
        "pg_port": 5433,
        "pg_bindir": "/usr/lib/postgresql/16/bin",
    }
    assert set(changed) == set(SERVER_FIELDS)
    for field, value in changed.items():
        assert not base.same_server(dataclasses.replace(base, **{field: value})), field


def test_messages_name_the_program_behind_env_assignments() -> None:
    assert program_name(["sh", "-c", "script", "psql", "env", "PGDATABASE=a=b", "psql", "-X"]) == "psql"
    assert program_name(["env", "PGDATABASE=x", "PGPORT=5", "psql"]) == "psql"
    assert program_name(["pg_dump", "-s"]) == "pg_dump"


@pytest.fixture
def pair(sandbox: SandboxHandle, fresh_db: str, project: Project) -> Iterator[tuple[Project, HostConfig]]:
    """The project's host 'sandbox' and a host 'staging': another database, with a hostile name, of the same
    server."""
    sandbox.admin.psql('CREATE DATABASE :"n"', "postgres", extra=["-v", f"n={HOSTILE}"])
    staging = dataclasses.replace(project.host, name="staging", database=HOSTILE)
    write_inventory(project.root, {"sandbox": project.host, "staging": staging})
    try:
        yield project, staging
    finally:
        sandbox.admin.psql('DROP DATABASE IF EXISTS :"n" WITH (FORCE)', "postgres", extra=["-v", f"n={HOSTILE}"])


def test_a_pair_of_one_server_shares_a_connection_and_finds_what_two_hosts_find(
    pair: tuple[Project, HostConfig],
) -> None:
    project, staging = pair
    cache = project.root / ".opsagent" / "cache"
    inventory = load_inventory(project.root / "inventory.yaml")
    with open_pair(project.host, staging, inventory) as (live, other):
        assert live.shares_connection(other) and other.host.database == HOSTILE
        assert not drift_between(live, other, cache_dir=cache).drift  # two empty databases
        live.psql(TABLE)
        ahead = drift_between(live, other, cache_dir=cache)
        assert ahead.drift and ahead.count == 1
        other.psql(TABLE)  # its own channel over the same connection, in the hostile-named database
        assert not drift_between(live, other, cache_dir=cache).drift  # compared in full, and remembered
        before = live.command_count + other.command_count
        recalled = drift_between(live, other, cache_dir=cache)
        assert not recalled.drift
        assert live.command_count + other.command_count - before == 1  # both probes in one command
        other.psql("ALTER TABLE t ADD COLUMN note text;")
        behind = drift_between(live, other, cache_dir=cache)
        assert behind.drift and behind.count == 1


def test_the_pair_probe_reads_what_each_database_s_own_probe_reads(pair: tuple[Project, HostConfig]) -> None:
    project, staging = pair
    with open_pair(project.host, staging) as (live, other):
        argv = pair_probe_argv(live, staging)
        assert f"PGDATABASE={HOSTILE}" in argv  # one word, as it is: never quoted into psql or shell text
        mine, theirs = probe_pair(live, other)
        alone_mine, alone_theirs = probe(live, project.host.database), probe(other, HOSTILE)
        assert mine.fingerprint == alone_mine.fingerprint and mine.facts == alone_mine.facts
        assert theirs.fingerprint is not None and theirs.fingerprint == alone_theirs.fingerprint
        assert theirs.fingerprint.host == "staging" and theirs.fingerprint != mine.fingerprint
        assert theirs.facts == alone_theirs.facts


def test_a_missing_other_database_is_reported_as_its_own_probe_reports_it(project: Project) -> None:
    missing = dataclasses.replace(project.host, name="staging", database="no_such_database")
    with open_pair(project.host, missing) as (live, other):
        with pytest.raises(CommandFailed) as paired:
            probe_pair(live, other)
        with pytest.raises(CommandFailed) as alone:
            probe(other, missing.database)
    assert str(paired.value) == str(alone.value)
    assert "staging" in str(paired.value) and "no_such_database" in str(paired.value)


@pytest.fixture
def in_pair(in_project: Project, pair: tuple[Project, HostConfig]) -> tuple[Project, HostConfig]:
    """The pair, with the early connection's environment of ``in_project`` (the same project)."""
    return pair


def test_the_early_connection_opens_one_connection_for_one_server_and_two_for_two(
    in_pair: tuple[Project, HostConfig],
) -> None:
    project, staging = in_pair
    start_early(["opsagent", "diff", "--host", "sandbox", "--against-host", "staging"])
    early.wait_opened()
    assert set(early._attempts) == {"sandbox"}  # staging rides on it
    inventory = load_inventory(project.root / "inventory.yaml")
    with open_pair(project.host, staging, inventory) as (live, other):
        assert live._next is not None and live._next.argv == tuple(pair_probe_argv(live, staging))
        assert not drift_between(live, other, cache_dir=project.root / "cache").drift
        assert live._next is None and live.command_count >= 1  # the held pair probe was the first command
    assert early._attempts == {}
    # another server as far as the inventory can tell (here: the same binaries named by their folder)
    elsewhere = dataclasses.replace(staging, pg_bindir=str(pg_bindir()))
    write_inventory(project.root, {"sandbox": project.host, "staging": elsewhere})
    start_early(["opsagent", "diff", "--host", "sandbox", "--against-host", "staging"])
    early.wait_opened()
    assert set(early._attempts) == {"sandbox", "staging"}
    with open_pair(project.host, elsewhere, load_inventory(project.root / "inventory.yaml")) as (live, other):
        assert not live.shares_connection(other)
        assert not drift_between(live, other, cache_dir=project.root / "cache").drift
    assert early._attempts == {}


def test_the_cli_compares_two_databases_of_one_server(pair: tuple[Project, HostConfig]) -> None:
    project, _ = pair
    same = project.run("diff", "--host", "sandbox", "--against-host", "staging")
    assert same.returncode == 0 and "no drift" in same.stdout, same.stderr
    project.psql(TABLE)
    drifted = project.run("diff", "--host", "sandbox", "--against-host", "staging", "--json")
    assert drifted.returncode == 3, drifted.stderr
    document = json.loads(drifted.stdout)
    assert document["desired"] == f"staging:{HOSTILE}" and list(document["changes"]) == ["table"], document
    recalled = project.run("diff", "--host", "staging", "--against-host", "staging")  # a database against itself
    assert recalled.returncode == 0 and "no drift" in recalled.stdout, recalled.stderr


def test_a_pair_session_that_reconnected_elsewhere_is_not_believed(
    pair: tuple[Project, HostConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fingerprint keys remembered verdicts: a session that reconnected to another database than the other
    host's (here its environment names the first database again) is checked by name, and each is probed alone."""
    import opsagent.schema.fingerprint as fingerprint

    project, staging = pair
    real = fingerprint.pair_probe_argv
    monkeypatch.setattr(fingerprint, "pair_probe_argv", lambda remote, other: real(remote, project.host))
    with open_pair(project.host, staging) as (live, other):
        before = live.command_count + other.command_count
        mine, theirs = probe_pair(live, other)
        assert live.command_count + other.command_count - before == 3  # the pair's session, then one probe each
        assert theirs.fingerprint is not None and theirs.fingerprint == probe(other, HOSTILE).fingerprint
        assert theirs.fingerprint != mine.fingerprint
