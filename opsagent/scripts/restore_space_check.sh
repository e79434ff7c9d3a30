# shellcheck shell=sh
# shellcheck disable=SC2154  # a fragment: its variables come from the assignments or an earlier piece (_script)
# Before anything changes: room for the backup of the database about to be replaced (taken after the swap).
# @@PSQL@@: shlex-joined psql argv.

[ -w "$dir" ] && [ -x "$dir" ] || fail notwritable
need=$(@@PSQL@@ -A -t -c 'SELECT pg_database_size(current_database())') || fail dbsize
avail=$(df -Pk -- "$dir" | awk 'NR==2 {print $4}')
[ -n "$avail" ] || fail df
[ "$((avail * 1024))" -ge "$need" ] || fail nospace "$need" "$((avail * 1024))"
