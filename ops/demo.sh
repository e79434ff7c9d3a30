#!/usr/bin/env bash
# The opsagent story on a local sandbox host (real sshd + PostgreSQL on this machine).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
step() { printf '\n\033[1;36m$ %s\033[0m\n' "$*"; "$@"; }
step inv sandbox.up
step inv hosts
step inv doctor --host sandbox
