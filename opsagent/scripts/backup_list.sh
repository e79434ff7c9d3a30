# shellcheck shell=sh
# shellcheck disable=SC2154  # a fragment: its variables come from the assignments or an earlier piece (_script)
# shellcheck disable=SC2010  # ls | grep -E "$pattern": it admits only [A-Za-z0-9._-] names (backup.py: _grep_pattern)
# List the backups of one database in $dir (names matching $pattern) with their .meta.

[ -e "$dir" ] || { say ok; exit 0; }
cd -- "$dir" || fail access
for f in $(ls -1 | grep -E "$pattern" | sort -r); do
  meta=$(tr '\n' ' ' < "$f.meta" 2>/dev/null)
  printf '%s\t%s\t%s\n' "$f" "$(stat -c %s -- "$f")" "$meta"
done
say ok
