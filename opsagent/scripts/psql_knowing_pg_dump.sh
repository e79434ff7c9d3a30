# shellcheck shell=sh
# psql ("$@", never parsed) started at once, with `pg_dump --version` running beside it into a pipe on psql's fd 3
# (and the psql variable opsagent_pg_dump_on_fd3 set): the session's facts read that line from the pipe
# (schema/facts.py PG_DUMP_VERSION) instead of starting the binary (50-80 ms: Debian's Perl wrapper) between their
# statements.  psql is the last command of the pipeline: its exit status is this script's; its stdin is ours (fd 4).
exec 4<&0
pg_dump --version 2>/dev/null </dev/null | { exec "$@" -v opsagent_pg_dump_on_fd3=1 3<&0 0<&4 4<&-; }
