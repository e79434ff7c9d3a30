-- End this script's own sessions left behind by an interrupted step (they could hold or wait for a lock),
-- then put the recorded connection settings back on whatever databases now carry the live and old names.
SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = :'appname' AND pid <> pg_backend_pid()
\g /dev/null
SELECT format('ALTER DATABASE %I ALLOW_CONNECTIONS %s CONNECTION LIMIT %s', datname,
              CASE WHEN :'allowconn' = 'false' THEN 'false' ELSE 'true' END, (:'connlimit')::int)
  FROM pg_database WHERE datname IN (:'live', :'old')
\gexec
