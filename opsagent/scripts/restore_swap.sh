# shellcheck shell=sh
# shellcheck disable=SC2154  # a fragment: its variables come from the assignments or an earlier piece (_script)
# shellcheck disable=SC2034  # a fragment: what it sets is read by a later piece or the EXIT trap (prelude: finish)
# In place, after $target holds the backup: copy database grants/settings, close the live
# database (ALLOW_CONNECTIONS false: not even superusers get in), terminate its sessions,
# rename live -> old and target -> live in one transaction with the old connection settings
# on the new live database, reopen the old one under its new name, then back it up: it is
# exactly what the applications last wrote.  Whatever happens after the close, `reopen`
# (EXIT trap) puts the connection settings back on whichever databases carry the two names.
# (SC2034 also covers the counter of reopen's retry loop, `for i in 1 2 3 4 5`, which is never read.)

admin_sql "$carry_over_sql" >/dev/null || fail carry_over
settings=$(admin_sql "$settings_sql" -A -t -F ' ') || fail settings
allowconn=${settings% *}; connlimit=${settings#* }
closed=''
reopen() {
  [ -n "$closed" ] || return 0
  for i in 1 2 3 4 5; do
    admin_sql "$reopen_sql" >/dev/null 2>&1 && { closed=''; say reopened; return 0; }
    sleep 1
  done
  say reopen_failed
}
on_exit="reopen $on_exit"
closed=1
phase "closing the live database"
admin_wait "$close_sql" >/dev/null || fail close
ttmp="$dir/.$name.$$.terminated"
cleanup_terminated() { rm -f -- "$ttmp"; }
on_exit="cleanup_terminated $on_exit"
admin_wait "$terminate_sql" -A -t > "$ttmp" || fail close
say terminated "$(cat -- "$ttmp")"
phase swapping
admin_wait "$swap_sql" >/dev/null || fail swap
target_made=''
say swapped "$old"
admin_sql "$reopen_sql" >/dev/null && { closed=''; say reopened; }
