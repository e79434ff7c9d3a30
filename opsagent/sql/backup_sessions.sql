-- The client sessions connected to the current database (what an in-place restore terminates), as JSON.
SELECT coalesce(json_agg(json_build_object('pid', pid, 'user', coalesce(usename, ''), 'application', application_name,
         'state', coalesce(state, ''), 'client', coalesce(host(client_addr), 'local')) ORDER BY pid), '[]')
  FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
