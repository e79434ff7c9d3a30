# shellcheck shell=sh
# The in-place restore runs in a session of its own: the transport's watchdog ends with SIGKILL to
# the command's process group ~3 s after the channel is lost; an in-place restore whose EXIT trap is
# still reopening the database (a lock on pg_database may make it wait) must not be killed there.
# In its own session it is out of that group's reach; its own heartbeat (backup_watchdog.sh) still
# ends it, after its trap, when the client is gone.  "$1" is the script (argv, never parsed here).
if command -v setsid >/dev/null 2>&1; then exec setsid -w sh -c "$1"; fi; exec sh -c "$1"
