# shellcheck shell=sh
# shellcheck disable=SC2154  # a fragment: its variables come from the assignments or an earlier piece (_script)
# shellcheck disable=SC2034  # a fragment: what it sets is read by a later piece or the EXIT trap (prelude: finish)
# After a restore into a new database: count the untouched live database's objects too.
# @@PSQL@@: shlex-joined psql argv.

target_made=''
say counts_live "$(@@PSQL@@ -A -t -c "$counts_sql" 2>/dev/null || echo null)"
say ok
