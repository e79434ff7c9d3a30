# shellcheck shell=sh
# Runs "$@" (argv, never parsed) in the foreground, with the watchdog ($1: transport_watchdog.sh)
# started beside it in a session of its own (setsid, when the server has it); exits with the command's status.
w=$1; shift
if command -v setsid >/dev/null 2>&1; then
  setsid sh -c "$w" opsagent-watchdog "$$" 9>&2 </dev/null >/dev/null 2>&1 &
else
  sh -c "$w" opsagent-watchdog "$$" 9>&2 </dev/null >/dev/null 2>&1 &
fi
wd=$!
"$@"
rc=$?
kill -s KILL "$wd" 2>/dev/null
exit "$rc"
