# shellcheck shell=sh
# Outer part, run as the login user: only creates backup_dir when the become user cannot.
# @@DIR@@, @@SUDO@@, @@OWNER@@, @@INNER@@, @@MARK@@: shlex-quoted words built by backup.py (_as_become).

cd / || exit 1
dir=@@DIR@@
if ! @@SUDO@@ test -d "$dir"; then
  @@SUDO@@ mkdir -p -m 700 -- "$dir" 2>/dev/null \
  || install -d -m 700 @@OWNER@@ -- "$dir" 2>/dev/null \
  || sudo -n install -d -m 700 @@OWNER@@ -- "$dir" 2>/dev/null \
  || { printf '%s error mkdir\n' @@MARK@@ >&2; exit 3; }
fi
exec @@INNER@@
