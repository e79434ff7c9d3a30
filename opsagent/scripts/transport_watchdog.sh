# shellcheck shell=sh
# The watchdog of every remote command (remote/transport.py: channel_bound_command explains the layout).
# $1: the wrapper's pid (= its process group); fd 9: a copy of the channel's stderr.
trap '' PIPE HUP TERM
group=$1
nap() { sleep 0.2 9>&- 2>/dev/null || sleep 1 9>&-; }
while kill -s 0 "$group" 2>/dev/null && printf '\0' >&9; do nap; done
exec 9>&-
for sig in INT INT INT TERM TERM KILL; do
  kill -s "$sig" -- "-$group" 2>/dev/null || exit 0
  n=0
  while [ "$n" -lt 3 ] && kill -s 0 -- "-$group" 2>/dev/null; do nap; n=$((n + 1)); done
done
