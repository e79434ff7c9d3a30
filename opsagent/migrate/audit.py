"""The local audit log: one JSON line per run in ``<paths.state>/audit.jsonl``.

Append-only and line-oriented so ``tail``/``jq`` work and concurrent runs never
interleave inside a line (one ``write`` of a short line in append mode).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AUDIT_FILE = "audit.jsonl"


def who() -> str:
    """``user@machine`` of the operator running this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def git_commit(directory: Path | None = None) -> str | None:
    """HEAD of the project's git repository, or None when unknown."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) >= 7 else None


def audit_path(state_dir: Path) -> Path:
    return state_dir / AUDIT_FILE


def append_audit(state_dir: Path, record: Mapping[str, Any]) -> Path:
    """Append one record (``time`` and ``who`` are filled in when absent); returns the log's path."""
    path = audit_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "who": who(), **record}
    line = json.dumps(entry, default=str, sort_keys=False) + "\n"
    # 0600 from the start (O_CREAT with the mode, not a chmod afterwards): records name people, hosts and errors
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:  # an older log created with the umask's mode
            os.fchmod(fd, 0o600)
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    return path


def read_audit(state_dir: Path) -> list[dict[str, Any]]:
    """Every record of the log (skipping damaged lines), oldest first."""
    path = audit_path(state_dir)
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records
