#!/usr/bin/env bash
# Set up opsagent on a fresh Debian 12 machine (as root) and run the demo or the tests.
#   bash bootstrap.sh demo   # sandbox host up, then the main workflow against it
#   bash bootstrap.sh test   # lint, type-check and the full test suite (real sshd + PostgreSQL)
# Installs only what is missing: Debian packages (openssh-server, sudo, postgresql,
# rsync, python3-venv) and the package with its test extras into ./.venv.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
mode="${1:-test}"

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v sudo >/dev/null || missing+=(sudo)
command -v rsync >/dev/null || missing+=(rsync)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
compgen -G "/usr/share/postgresql/*/extension/cube.control" >/dev/null || missing+=(postgresql-contrib)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import opsagent, pytest, mypy, xdist' 2>/dev/null || [ pyproject.toml -nt .venv/.installed ]; then
  echo "== pip install -e .[test]"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch .venv/.installed
fi
# an editable install is not byte-compiled, and PYTHONDONTWRITEBYTECODE (set on some machines) stops Python
# from caching it: compiling once saves every later command about 0.3 s of start-up
.venv/bin/python -m compileall -q opsagent >/dev/null
export PATH="$PWD/.venv/bin:$PATH"

case "$mode" in
  test)
    echo "== ruff";   ruff check opsagent tests tasks.py bench
    echo "== mypy";   mypy
    # two workers (each with its own sandbox host), whole files per worker: the tests mostly wait on
    # servers, so two cores run two files at once; OPSAGENT_TEST_WORKERS=0 runs them in this process
    echo "== pytest"; exec python -m pytest -q -p no:cacheprovider -n "${OPSAGENT_TEST_WORKERS:-2}" --dist loadfile "${@:2}"
    ;;
  demo)
    exec bash ops/demo.sh
    ;;
  *)
    echo "usage: bash bootstrap.sh demo|test" >&2
    exit 2
    ;;
esac
