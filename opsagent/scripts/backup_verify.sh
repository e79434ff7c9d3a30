# shellcheck shell=sh
# shellcheck disable=SC2154  # a fragment: its variables come from the assignments or an earlier piece (_script)
# shellcheck disable=SC2034  # a fragment: what it sets is read by a later piece or the EXIT trap (prelude: finish)
# shellcheck disable=SC2015  # A && B || fail: fail runs when either check is false, as meant
# Verify one named backup: size and sha256 against the .meta written at backup time, then
# pg_restore --list.  Without a .meta, --list would only read the table of contents (a
# truncated file passes it): then every byte is read and decoded by a full pg_restore pass.

file="$dir/$name"
[ -f "$file" ] || fail missing
phase verifying
size=$(stat -c %s -- "$file") || fail stat
vtmp="$dir/.$name.$$.verify"
cleanup_verify() { rm -f -- "$vtmp"; }
on_exit="cleanup_verify $on_exit"
sha256sum -- "$file" > "$vtmp" &
started $!; wait $!; rc=$?; jobs_=''
[ "$rc" = 0 ] || fail stat
sum=$(cut -c1-64 < "$vtmp")
recorded=$(sed -n 's/^sha256=//p' "$file.meta" 2>/dev/null)
recorded_size=$(sed -n 's/^size=//p' "$file.meta" 2>/dev/null)
if [ -n "$recorded" ]; then
  [ "$recorded" = "$sum" ] && { [ -z "$recorded_size" ] || [ "$recorded_size" = "$size" ]; } || fail checksum "$sum" "$recorded"
  pg_restore --list -- "$file" >/dev/null || fail verify
else
  pg_restore -f /dev/null -- "$file" &
  started $!; wait $!; rc=$?; jobs_=''
  [ "$rc" = 0 ] || fail unreadable
fi
say verified "$size" "$sum" "${recorded:--}"
