#!/usr/bin/env bash
# Seed-compatible shim: snapshot the production schema with object statistics.
#   ./ops/scripts/extract_schema.sh                 # -> sql/schema_production_dump.sql
#   ./ops/scripts/extract_schema.sh --host staging  # another inventory host (default: prod)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/_opsagent.sh"
host="${OPSAGENT_HOST:-prod}"
out="$_repo/sql/schema_production_dump.sql"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --host) host="$2"; shift ;;
    --host=*) host="${1#--host=}" ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done
exec "${OPSAGENT_CMD[@]}" extract --host "$host" --out "$out" "${args[@]}"
