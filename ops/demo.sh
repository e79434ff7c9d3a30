#!/usr/bin/env bash
# The opsagent story on a local sandbox host (a real sshd + PostgreSQL on this machine):
# sandbox up -> doctor -> lint -> sync (dry run, then for real) -> status -> extract
# -> a manual ALTER TABLE behind the tool's back -> diff reports exactly that drift -> plan writes the fix.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
export COLUMNS="${COLUMNS:-120}"
# colours only on a terminal: a piped or logged demo reads as plain text (like opsagent's own output)
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then B=$'\033[1;36m' G=$'\033[1;32m' D=$'\033[2m' R=$'\033[0m'; else B='' G='' D='' R=''; fi
step() { printf '\n%s$ %s%s\n' "$B" "$*" "$R"; "$@"; }
expect() {  # expect CODE cmd...: run, and accept exactly that exit code
  local want="$1"; shift
  printf '\n%s$ %s%s  %s(expect exit %s)%s\n' "$B" "$*" "$R" "$D" "$want" "$R"
  set +e; "$@"; local got=$?; set -e
  if [ "$got" != "$want" ]; then echo "demo: '$*' exited $got, expected $want" >&2; exit 1; fi
}

step inv sandbox.up
step inv hosts
step inv doctor --host sandbox
expect 4 inv lint  # offline: the example migrations index and retype tables made by earlier files, of unknown size here
step inv sync --host sandbox --dry-run
step inv sync --host sandbox --yes
step inv status --host sandbox
step inv extract --host sandbox
step inv tables --host sandbox
step inv psql --host sandbox -c "ALTER TABLE trades ADD COLUMN IF NOT EXISTS manual_note text"
expect 3 inv diff --host sandbox
step inv plan --host sandbox --allow-drop
step inv psql --host sandbox -c "ALTER TABLE trades DROP COLUMN IF EXISTS manual_note"
step inv diff --host sandbox
step inv backups --host sandbox
printf '\n%sdemo complete.%s The sandbox keeps running: inv sandbox.down removes it.\n' "$G" "$R"
