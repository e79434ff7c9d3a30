# Sourced by the seed-compatible scripts: find the opsagent command.
# Order: $OPSAGENT, the repo's .venv, an installed `opsagent`, then `python3 -m opsagent`.
_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ -n "${OPSAGENT:-}" ]; then
  read -r -a OPSAGENT_CMD <<< "$OPSAGENT"
elif [ -x "$_repo/.venv/bin/opsagent" ]; then
  OPSAGENT_CMD=("$_repo/.venv/bin/opsagent")
elif command -v opsagent >/dev/null 2>&1; then
  OPSAGENT_CMD=(opsagent)
else
  OPSAGENT_CMD=(python3 -m opsagent)
fi
export OPSAGENT_INVENTORY="${OPSAGENT_INVENTORY:-$_repo/inventory.yaml}"
