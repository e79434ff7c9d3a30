# shellcheck shell=sh
# shellcheck disable=SC2154  # a fragment: its variables come from the assignments or an earlier piece (_script)
# Stream one backup down: a header line "<size> <sha256>", then the file's bytes.

file="$dir/$name"
[ -f "$file" ] && [ -r "$file" ] || fail missing
size=$(stat -c %s -- "$file") || fail stat
sum=$(sha256sum -- "$file" | cut -c1-64)
printf '%s %s\n' "$size" "$sum"
exec cat -- "$file"
