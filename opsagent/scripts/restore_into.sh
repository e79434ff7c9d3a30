# shellcheck shell=sh
# shellcheck disable=SC2154  # a fragment: its variables come from the assignments or an earlier piece (_script)
# shellcheck disable=SC2034  # a fragment: what it sets is read by a later piece or the EXIT trap (prelude: finish)
# Restore $file into a new database $target (created like the live one), then count its objects.
# Until it is handed over ($target_made cleared), an interrupted or failed restore drops $target.
# @@PGARGS@@, @@PSQL_TARGET@@: shlex-joined argv (backup.py: _restore_part).

target_made=''
cleanup_restore() { [ -z "$target_made" ] || admin_sql "$drop_target_sql" >/dev/null 2>&1; }
on_exit="cleanup_restore $on_exit"
phase restoring
admin_sql "$create_sql" >/dev/null || fail createdb
target_made=1
pg_restore --exit-on-error --single-transaction @@PGARGS@@ -d "$target_dsn" -- "$file" &
started $!; wait $!; rc=$?; jobs_=''
[ "$rc" = 0 ] || fail restore
phase counting
say counts_restored "$(@@PSQL_TARGET@@ -A -t -c "$counts_sql")"
