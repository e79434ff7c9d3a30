"""What this machine last saw of a host's ledger: a hint for start-up work, never a decision.

A sync that ends with every local migration applied leaves a small file (in the project's cache folder) holding a
digest of those migrations' versions for that host and database.  The next sync compares it with the folder it
finds: when they differ, something is likely pending, so the parser and the hazard lint are loaded while the
session starts on the server, instead of after the ledger is read.  The ledger alone decides what is pending; a
wrong or missing hint only moves that loading earlier or later.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from ..cachefile import prune_cache, write_cache_file

_PREFIX = "applied-"
KEEP = 256  # hosts and databases remembered


def versions_digest(version_keys: Iterable[int | None]) -> str:
    """A digest of a migration set's version keys (order and duplicates do not matter)."""
    keys = sorted({key for key in version_keys if key is not None})
    return hashlib.sha256(",".join(map(str, keys)).encode("ascii")).hexdigest()


def _path(cache_dir: Path, host: str, database: str) -> Path:
    name = hashlib.sha256(f"{host}\0{database}".encode()).hexdigest()[:24]
    return cache_dir / f"{_PREFIX}{name}.json"


def likely_pending(cache_dir: Path | None, host: str, database: str, digest: str) -> bool:
    """True unless the last sync from here left this very migration set applied on ``host``/``database``."""
    if cache_dir is None:
        return True
    try:
        document = json.loads(_path(cache_dir, host, database).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not isinstance(document, dict) or document.get("versions") != digest


def remember_applied(cache_dir: Path | None, host: str, database: str, digest: str) -> None:
    """Note that every migration of the set ``digest`` is applied on ``host``/``database`` (written only when it
    changed: a no-op sync writes nothing)."""
    if cache_dir is None or not likely_pending(cache_dir, host, database, digest):
        return
    path = _path(cache_dir, host, database)
    if write_cache_file(path.parent, path.name, {"versions": digest}):
        prune_cache(cache_dir, f"{_PREFIX}*.json", KEEP)
