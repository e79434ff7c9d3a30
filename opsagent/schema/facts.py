"""What a server contributes to the cache keys, and where the caches live: light, so the closing drift check of a
sync can recall a remembered verdict (``schema.fingerprint``) without loading the catalog model.

See ``schema.desired`` for why each fact is part of the desired-state cache's key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import RemoteError

CACHE_SUBDIR = "cache"

# Everything on the server that changes what a fresh database built from schema.sql looks like (besides the file).
FACTS_SQL = """\
SELECT json_build_object(
  'server_version_num', current_setting('server_version_num'),
  'template0', (SELECT json_build_array(pg_encoding_to_char(encoding), datcollate, datctype)
                  FROM pg_database WHERE datname = 'template0'),
  'extension_versions', (SELECT coalesce(json_agg(json_build_array(name, version) ORDER BY name, version), '[]')
                           FROM pg_available_extension_versions),
  'extension_defaults', (SELECT coalesce(json_agg(json_build_array(name, default_version) ORDER BY name), '[]')
                           FROM pg_available_extensions));
"""
PG_DUMP_VERSION = (
    "\\! pg_dump --version || true"  # psql meta-command: the dumping binary's version, on the facts' session
)


def schema_digest(sql: str) -> str:
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class ServerFacts:
    """What a server contributes to the cache key (see the module docstring)."""

    document: Mapping[str, Any]
    pg_dump_version: str

    @classmethod
    def parse(cls, facts_json: str, pg_dump_version: str) -> ServerFacts:
        try:
            document = json.loads(facts_json)
        except ValueError as exc:
            raise RemoteError(f"the server facts query returned no usable result ({exc})") from None
        if not isinstance(document, dict):
            raise RemoteError("the server facts query returned no usable result")
        return cls(document, pg_dump_version.strip())


def default_cache_dir(state_dir: Path) -> Path:
    return state_dir / CACHE_SUBDIR


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
