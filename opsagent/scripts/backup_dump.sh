# shellcheck shell=sh
# shellcheck disable=SC2154  # a fragment: its variables come from the assignments or an earlier piece (_script)
# shellcheck disable=SC2034  # a fragment: what it sets is read by a later piece or the EXIT trap (prelude: finish)
# shellcheck disable=SC2217  # sleep </dev/null >/dev/null: on purpose, so that it holds no channel open
# shellcheck disable=SC2010  # ls | grep -E "$pattern": it admits only [A-Za-z0-9._-] names (backup.py: _grep_pattern)
# Dump into $dir/$name: pg_dump -> fifo -> tee -> .partial (+ stdout when streaming) and
# a second fifo hashed on the fly.  Temporary names carry the unique backup name AND this
# shell's pid; the final names are claimed with ln (never overwrites), so two runs never
# touch each other's files.  @@PSQL@@, @@PG_DUMP@@: shlex-joined argv (backup.py: _backup_part).

[ -w "$dir" ] && [ -x "$dir" ] || fail notwritable
need=$(@@PSQL@@ -A -t -c 'SELECT pg_database_size(current_database())') || fail dbsize
avail=$(df -Pk -- "$dir" | awk 'NR==2 {print $4}')
[ -n "$avail" ] || fail df
avail=$((avail * 1024))
[ "$avail" -ge "$need" ] || fail nospace "$need" "$avail"
final="$dir/$name"
[ -e "$final" ] && fail exists
tmp="$dir/.$name.$$"
claimed=''
cleanup_backup() {
  rm -f -- "$tmp.partial" "$tmp.meta" "$tmp.dump.fifo" "$tmp.sum.fifo" "$tmp.sum"
  [ "$claimed" != meta ] || rm -f -- "$final.meta"
}
on_exit="cleanup_backup $on_exit"
mkfifo -m 600 -- "$tmp.dump.fifo" "$tmp.sum.fifo" || fail write
sha256sum < "$tmp.sum.fifo" > "$tmp.sum" &
sumjob=$!; started $sumjob
if [ "$stream" = 1 ]; then
  tee -- "$tmp.partial" "$tmp.sum.fifo" < "$tmp.dump.fifo" &
else
  tee -- "$tmp.partial" < "$tmp.dump.fifo" > "$tmp.sum.fifo" &
fi
teejob=$!; started $teejob
@@PG_DUMP@@ > "$tmp.dump.fifo" &
dumpjob=$!; started $dumpjob
sizejob=''
if [ "$stream" = 0 ] && [ "$size_every" != 0 ]; then  # the dump's size as it grows, on stdout (free: not streaming)
  ( while sleep "$size_every" </dev/null >/dev/null 2>&1; do  # sleep holds no channel open once this loop is stopped
      mark size "$(stat -c %s -- "$tmp.partial" 2>/dev/null || echo 0)" || exit 0
    done ) &
  sizejob=$!; started $sizejob
fi
wait $dumpjob; dumprc=$?
[ -z "$sizejob" ] || { kill -TERM "$sizejob" 2>/dev/null; wait "$sizejob" 2>/dev/null; }
wait $teejob; teerc=$?
wait $sumjob; sumrc=$?
jobs_=''
[ "$dumprc" = 0 ] || fail pg_dump
[ "$teerc" = 0 ] || fail write
[ "$sumrc" = 0 ] || fail checksum
pg_restore --list -- "$tmp.partial" >/dev/null || fail verify
size=$(stat -c %s -- "$tmp.partial") || fail stat
sum=$(cut -c1-64 < "$tmp.sum")
[ -n "$sum" ] || fail checksum
printf 'sha256=%s\nsize=%s\n' "$sum" "$size" > "$tmp.meta" || fail write
ln -- "$tmp.meta" "$final.meta" || fail exists
claimed=meta
ln -- "$tmp.partial" "$final" || fail exists
claimed=dump
rm -f -- "$tmp.partial" "$tmp.meta"
kept=1
if [ "$keep" -gt 0 ]; then
  for f in $(ls -1 -- "$dir" | grep -E "$pattern" | sort -r); do
    [ "$f" = "$name" ] || [ "$f" = "$protect" ] && continue
    if [ "$kept" -lt "$keep" ]; then kept=$((kept + 1)); continue; fi
    rm -f -- "$dir/$f" "$dir/$f.meta" && say deleted "$f"
  done
fi
say backup "$size" "$sum" "$need"
