"""Cache files: small JSON documents under ``.opsagent/cache``, written so that a reader never sees half of one.

Every cache of opsagent (desired states, remembered verdicts, migration parses, the early connection's routes) is
only a cache: a file that cannot be written or read is a miss, never an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_cache_file(cache_dir: Path, name: str, document: Mapping[str, Any]) -> bool:
    """Write ``document`` as ``cache_dir/name``: 0600 in a 0700 folder, through a temporary file renamed (a reader
    never sees half a file), flushed to disk.  False when it cannot be written: a cache is only a cache."""
    temporary = cache_dir / f".{name}-{secrets.token_hex(6)}.tmp"
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(document))  # one C-encoded string: json.dump writes piece by piece, ~10x slower
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, cache_dir / name)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        return False
    return True


def prune_cache(cache_dir: Path, pattern: str, keep: int) -> None:
    """Keep the ``keep`` most recently used files matching ``pattern`` (readers touch what they use)."""
    with contextlib.suppress(OSError):
        files = sorted(cache_dir.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[keep:]:
            with contextlib.suppress(OSError):
                old.unlink()
