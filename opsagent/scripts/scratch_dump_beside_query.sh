# shellcheck shell=sh
# A scratch database's dump and its catalog query at once, inside its load session: psql runs the query with its
# output piped here (\o |), while pg_dump --schema-only streams to stdout in the background; psql's output is held
# until pg_dump is done, then follows it.  Output: $1, the dump, $2 (only when pg_dump succeeded), $3, the query's
# output.  $1 $2 $3 are marker lines (remote/markers.py: their token is random); then pg_dump's argv, each argument
# its own word (never parsed).  psql waits for this script when it closes the pipe (\o), so the session goes on only
# once both are complete.  psql's \o takes one line: every line here ends its command (; or &), and they are joined.
b=$1; e=$2; o=$3; shift 3;
printf '%s\n' "$b";
"$@" &
pid=$!;
s=$(cat);
if wait "$pid"; then printf '%s\n' "$e"; fi;
printf '%s\n%s\n' "$o" "$s";
