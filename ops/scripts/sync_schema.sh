#!/usr/bin/env bash
# Seed-compatible shim: apply pending migrations to the production database.
#   ./ops/scripts/sync_schema.sh --dry-run      # preview: plan + rehearsal on the real target, changes nothing
#   ./ops/scripts/sync_schema.sh                # apply with confirmation (verified backup first)
#   ./ops/scripts/sync_schema.sh --force        # apply without prompts
#   ./ops/scripts/sync_schema.sh --host staging # another inventory host (default: prod)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/_opsagent.sh"
host="${OPSAGENT_HOST:-prod}"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) args+=(--dry-run) ;;
    --force|--yes|-y) args+=(--yes) ;;
    --host) host="$2"; shift ;;
    --host=*) host="${1#--host=}" ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done
exec "${OPSAGENT_CMD[@]}" sync --host "$host" "${args[@]}"
