-- End every session of the closed database (waiting up to 5 s for each to exit);
-- report how many and which applications.
SELECT json_build_object('count', count(*), 'applications', coalesce(json_agg(DISTINCT application_name), '[]'))
  FROM (SELECT application_name, pg_terminate_backend(pid, 5000) FROM pg_stat_activity
         WHERE datname = :'live' AND pid <> pg_backend_pid() AND backend_type = 'client backend') AS ended;
