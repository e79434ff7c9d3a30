# shellcheck shell=sh
# shellcheck disable=SC2154  # a fragment: its variables come from the assignments or an earlier piece (_script)
# shellcheck disable=SC2034  # a fragment: what it sets is read by a later piece or the EXIT trap (prelude: finish)
# SQL is fixed text fed on stdin; every name travels as a psql variable (-v), quoted by psql.
# Sessions run with the host's lock_timeout from their first statement and an application
# name unique to this script (@@RUN@@: its markers' random token), so that its trap can end a session it orphaned
# and the client can tell this script's sessions from another restore's (backup.restore_appname).
# admin_wait runs one in the background: a signal interrupts the wait and the trap stops it.
# @@ADMIN_PSQL@@: shlex-joined psql argv for the maintenance database (backup.py: _psql).

appname="opsagent-restore-@@RUN@@"
admin_sql() {
  sql=$1; shift
  printf '%s\n' "$sql" | PGAPPNAME="$appname" PGOPTIONS="-c lock_timeout=$lock_timeout" @@ADMIN_PSQL@@ -v ON_ERROR_STOP=1 \
    -v live="$live" -v target="$target" -v old="$old" -v allowconn="$allowconn" -v connlimit="$connlimit" -v appname="$appname" "$@"
}
admin_wait() {  # the same, in the background ($! is psql itself, not a subshell around it)
  sql=$1; shift
  printf '%s\n' "$sql" | PGAPPNAME="$appname" PGOPTIONS="-c lock_timeout=$lock_timeout" @@ADMIN_PSQL@@ -v ON_ERROR_STOP=1 \
    -v live="$live" -v target="$target" -v old="$old" -v allowconn="$allowconn" -v connlimit="$connlimit" -v appname="$appname" "$@" &
  started $!; wait $!; rc=$?; jobs_=''
  return $rc
}
