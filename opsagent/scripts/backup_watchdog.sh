# shellcheck shell=sh
# shellcheck disable=SC2034  # a fragment: what it sets is read by a later piece or the EXIT trap (prelude: finish)
# The client is gone when writing to the channel fails: then stop the script (its traps clean up).
# A heartbeat on stderr is the only way to find out without a byte to read; the client ignores it.

( exec >/dev/null; while kill -0 $$ 2>/dev/null; do
    say alive || { kill -TERM $$ 2>/dev/null; exit 0; }
    sleep 0.5 2>/dev/null
  done ) &
watch=$!
