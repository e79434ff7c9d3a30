# shellcheck shell=sh
# shellcheck disable=SC2034  # a fragment: what it sets is read by a later piece or the EXIT trap (prelude: finish)
# shellcheck disable=SC2086  # kill -TERM $jobs_: a list of pids, split on purpose
# Every backup/restore script starts with this (backup.py: _script).  Long steps run in the
# background and are waited for: a signal interrupts `wait` at once (a foreground child would
# delay the trap until it ends) and `finish` then stops them.  SIGPIPE is ignored so that a
# closed channel makes writes fail instead of killing the shell before its EXIT trap could clean up.
# @@MARK@@: the first words of every marker line, with this run's token (backup.py: _script).

set -u
umask 077
LC_ALL=C; export LC_ALL
mark() { printf '%s %s\n' @@MARK@@ "$*"; }  # a marker line (remote/markers.py), on stdout
say() { mark "$@" >&2; }  # what the client reads when the script has ended
phase() { mark phase "$@"; }  # stdout, read live: only where stdout carries no data
failkey=error
fail() { say "$failkey" "$@"; exit 3; }
jobs_=''
watch=''
on_exit=''
started() { jobs_="$jobs_ $1"; }
stop_jobs() {
  [ -n "$jobs_" ] || return 0
  kill -TERM $jobs_ 2>/dev/null
  for p in $jobs_; do wait "$p" 2>/dev/null; done
  jobs_=''
}
finish() {
  trap '' INT TERM HUP
  [ -z "$watch" ] || kill -TERM "$watch" 2>/dev/null
  stop_jobs
  for step in $on_exit; do "$step"; done
}
trap '' PIPE
trap finish EXIT
trap 'exit 130' INT TERM HUP
