#!/usr/bin/env bash
# Code deploy in the seed's style, schema first:
#   SERVER=138.68.245.159 SSH_USER=root DEST=/srv/trad ./ops/scripts/deploy_to_server.sh
# 1. applies pending schema migrations (ops/scripts/sync_schema.sh --force --host $SCHEMA_HOST)
#    and STOPS the deploy if that fails: code never ships ahead of its schema;
# 2. rsyncs the application ($SRC, default: the repository) to $SSH_USER@$SERVER:$DEST
#    (SERVER=local copies to the local path $DEST, e.g. for a rehearsal);
# 3. runs $RESTART_CMD on the server if set (e.g. "systemctl restart trad").
set -euo pipefail
here="$(dirname "$(readlink -f "$0")")"
: "${SERVER:?set SERVER (host address, or 'local')}"
: "${DEST:?set DEST (destination directory)}"
SSH_USER="${SSH_USER:-root}"
SRC="${SRC:-$(cd "$here/../.." && pwd)/}"
SCHEMA_HOST="${SCHEMA_HOST:-prod}"

echo "==> schema sync (host $SCHEMA_HOST)"
if ! "$here/sync_schema.sh" --force --host "$SCHEMA_HOST"; then
  echo "==> schema sync FAILED: deploy stopped, code not shipped" >&2
  exit 1
fi

excludes=(--exclude .git --exclude .venv --exclude .opsagent --exclude backups --exclude __pycache__ --exclude sql/snapshots)
echo "==> rsync $SRC -> ${SERVER}:${DEST}"
if [ "$SERVER" = "local" ]; then
  mkdir -p "$DEST"
  rsync -a --delete "${excludes[@]}" "$SRC" "$DEST/"
else
  rsync -az --delete "${excludes[@]}" -e "ssh -o StrictHostKeyChecking=yes" "$SRC" "$SSH_USER@$SERVER:$DEST/"
  if [ -n "${RESTART_CMD:-}" ]; then
    echo "==> restart: $RESTART_CMD"
    ssh -o StrictHostKeyChecking=yes "$SSH_USER@$SERVER" "$RESTART_CMD"
  fi
fi
echo "==> deploy done"
