#!/usr/bin/env bash
# The opsagent story on a local sandbox host (a real sshd + PostgreSQL on this machine):
# sandbox up -> doctor -> lint -> sync (dry run, then for real) -> status -> extract
# -> a manual ALTER TABLE behind the tool's back -> diff reports exactly that drift -> plan writes the fix.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
export COLUMNS="${COLUMNS:-120}"
step() { printf '\n\033[1;36m$ %s\033[0m\n' "$*"; "$@"; }
expect() {  # expect CODE cmd...: run, and accept exactly that exit code
  local want="$1"; shift
  printf '\n\033[1;36m$ %s\033[0m  \033[2m(expect exit %s)\033[0m\n' "$*" "$want"
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
printf '\n\033[1;32mdemo complete.\033[0m The sandbox keeps running: inv sandbox.down removes it.\n'
