# shellcheck shell=sh
# psql ("$@", never parsed) with the psql variable opsagent_pg_dump set to the line `pg_dump --version` prints (empty
# when there is no pg_dump): the session's facts then name the dumping binary without running it from inside the
# session (schema/facts.py PG_DUMP_VERSION), so a session held ahead (launch.py) has it before its first statement.
v=$(pg_dump --version 2>/dev/null) || v=
exec "$@" -v "opsagent_pg_dump=$v"
