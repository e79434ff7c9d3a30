"""What a server contributes to the cache keys, and where the caches live: light, so the closing drift check of a
sync can recall a remembered verdict (``schema.fingerprint``) without loading the catalog model.

See ``schema.desired`` for why each fact is part of the desired-state cache's key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
# psql meta-commands: the dumping binary's version, on the facts' session: the line a session started with
# Remote.psql_argv(knowing_pg_dump=True) has waiting on its fd 3 (read by shell builtins: no program), else pg_dump's
PG_DUMP_VERSION = (
    "\\if :{?opsagent_pg_dump_on_fd3}\n\\! IFS= read -r v <&3 && printf '%s\\n' \"$v\"\n"
    "\\else\n\\! pg_dump --version || true\n\\endif"
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
