# shellcheck shell=sh
# The live read of diff/plan/drift in ONE command: pg_dump --schema-only (gzip level 1, to stdout) runs in the
# background while psql runs the catalog query read from stdin; then a marker line and psql's output.
# $1 the marker line (remote/markers.py: its token is random), $2 conninfo, $3 pg_host, $4 pg_port (empty: psql's
# default), then pg_dump's --exclude-table arguments.  Exit 4: psql failed (pg_dump stopped); exit 3: pg_dump failed.
m=$1; d=$2; h=$3; p=$4; shift 4
pg_dump --schema-only -Z 1 ${h:+-h "$h"} ${p:+-p "$p"} "$@" -d "$d" &
pid=$!
s=$(psql -X -q -A -t -v ON_ERROR_STOP=1 ${h:+-h "$h"} ${p:+-p "$p"} -d "$d") || { kill "$pid" 2>/dev/null; wait "$pid"; exit 4; }
wait "$pid" || exit 3
printf '\n%s\n%s\n' "$m" "$s"
