"""Benchmark: ``extract`` of musicbrainz against the floor ``ssh host "sudo -n -u postgres pg_dump -s" > file``.

Measured in the same run, interleaved (floor, ours, floor, ours, ...) so machine load hits both alike:

- floor: the real ``ssh`` binary (same key and known_hosts) running ``sudo -n -u postgres pg_dump -s``,
  output to a file;
- library: ``open_remote`` + ``extract`` + ``write_snapshot`` in this process (connect, one remote command,
  normalize, write);
- cli: ``opsagent extract --host sandbox --out FILE`` as a subprocess (adds the interpreter's start-up and imports);
- normalize: ``gunzip`` + ``normalize_dump`` of the dump alone (client CPU per extract).

Prints medians, the ratios to the floor (target <= 1.0) and ``uptime``.
Run: ``python bench/bench_extract.py [--repeat 7]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from opsagent.inventory import HostConfig  # noqa: E402
from opsagent.remote.sandbox import SandboxState, pg_bindir, temporary_sandbox  # noqa: E402
from opsagent.remote.transport import open_remote  # noqa: E402
from opsagent.schema.extract import extract, normalize_dump, write_snapshot  # noqa: E402

MUSICBRAINZ = REPO.parent / "shared" / "corpora" / "schemas" / "musicbrainz.sql"
DATABASE = "musicbrainz"


def host(state: SandboxState) -> HostConfig:
    return HostConfig(name=state.name, **{**state.host_entry(), "database": DATABASE})  # type: ignore[arg-type]


def local_psql(state: SandboxState, *args: str, database: str = "postgres") -> None:
    argv = [
        "runuser",
        "-u",
        "postgres",
        "--",
        str(pg_bindir() / "psql"),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        state.socket_dir,
        "-p",
        str(state.pg_port),
        "-d",
        database,
        *args,
    ]
    subprocess.run(argv, text=True, check=True, capture_output=True)


def floor_argv(state: SandboxState) -> list[str]:
    return [
        "ssh",
        "-i",
        state.identity_file,
        "-o",
        f"UserKnownHostsFile={state.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-p",
        str(state.ssh_port),
        f"{state.user}@127.0.0.1",
        f"cd / && sudo -n -u postgres pg_dump -s -h {state.socket_dir} -p {state.pg_port} -d {DATABASE}",
    ]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def project(state: SandboxState, root: Path) -> Path:
    """A project folder whose inventory has the sandbox host on the musicbrainz database."""
    (root / "sql" / "migrations").mkdir(parents=True, exist_ok=True)
    (root / "inventory.yaml").write_text(
        yaml.safe_dump({"hosts": {"sandbox": {**state.host_entry(), "database": DATABASE}}})
    )
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--no-login-rc",
        action="store_true",
        help="the login shell reads no ~/.bashrc (SSH commands as on a server whose login shell is light)",
    )
    parser.add_argument(
        "--pg-bindir",
        action="store_true",
        help="the host's inventory names pg_bindir: psql and pg_dump start without Debian's pg_wrapper",
    )
    args = parser.parse_args()
    if not MUSICBRAINZ.exists():
        print(f"skipped: {MUSICBRAINZ} not found (the shared corpora are absent)")
        return
    with (
        temporary_sandbox("sandbox", "obx-", login_rc=not args.no_login_rc, with_pg_bindir=args.pg_bindir) as (
            _base,
            state,
        ),
        tempfile.TemporaryDirectory(prefix="obx-out-") as out,
    ):
        local_psql(state, "-c", f"CREATE DATABASE {DATABASE}")
        local_psql(state, "-f", str(MUSICBRAINZ), database=DATABASE)
        outdir = Path(out)
        root = project(state, outdir / "proj")
        cli = [
            str(Path(sys.executable).with_name("opsagent")),
            "extract",
            "--host",
            "sandbox",
            "--out",
            str(outdir / "cli.sql"),
        ]
        env = {**os.environ, "OPSAGENT_INVENTORY": str(root / "inventory.yaml")}

        def floor() -> None:
            with (outdir / "floor.sql").open("wb") as sink:
                subprocess.run(floor_argv(state), check=True, stdout=sink, stderr=subprocess.DEVNULL)

        sizes: list[int] = []

        def library() -> None:
            with open_remote(host(state)) as remote:
                result = extract(remote)
            write_snapshot(result, outdir / "lib.sql")
            sizes.append(result.size)

        def command() -> None:
            subprocess.run(cli, check=True, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        for fn in (floor, library, command):  # warm: page cache, sshd, imports
            fn()
        times: dict[str, list[float]] = {"floor": [], "library": [], "cli": []}
        for _ in range(args.repeat):
            times["floor"].append(timed(floor))
            times["library"].append(timed(library))
            times["cli"].append(timed(command))
        raw = subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(pg_bindir() / "pg_dump"),
                "-s",
                "-Z",
                "1",
                "-h",
                state.socket_dir,
                "-p",
                str(state.pg_port),
                "-d",
                DATABASE,
            ],
            check=True,
            capture_output=True,
        ).stdout
        normalize = statistics.median(
            timed(lambda: normalize_dump(zlib.decompress(raw, 31).decode())) for _ in range(args.repeat)
        )
        medians = {name: statistics.median(values) for name, values in times.items()}
        base = medians["floor"]
        floor_bytes = (outdir / "floor.sql").stat().st_size
        print(
            f"extract {DATABASE}: pg_dump -s {floor_bytes / 1024:.0f} KiB, "
            f"normalized snapshot {sizes[-1] / 1024:.0f} KiB; "
            f"median of {args.repeat}, interleaved"
        )
        floor_label = 'ssh host "sudo -n -u postgres pg_dump -s" > file (floor)'
        print(f"  {floor_label:<58}{base * 1000:8.0f} ms")
        print(
            f"  {'opsagent extract, library (connect + 1 command + write)':<58}{medians['library'] * 1000:8.0f} ms   "
            f"ratio {medians['library'] / base:.2f}x (target <= 1.00)"
        )
        print(
            f"  {'opsagent extract, CLI subprocess (+ start-up, imports)':<58}{medians['cli'] * 1000:8.0f} ms   "
            f"ratio {medians['cli'] / base:.2f}x"
        )
        print(
            f"  {'client CPU: gunzip + normalize_dump':<58}{normalize * 1000:8.0f} ms   "
            f"({normalize / base:.0%} of the floor)"
        )
        print(f"  uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
