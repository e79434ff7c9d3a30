-- After a lost connection: stop our old backend if it still runs and wait until it is gone (then the ledger
-- says what really committed).  @@PID@@ and @@STARTED@@ are quoted literals (its pid and backend_start),
-- passed as data through set_config, never pasted into the DO body.
SELECT set_config('opsagent.pid', @@PID@@, false), set_config('opsagent.started', @@STARTED@@, false) \gset
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS opsagent_stopped FROM pg_stat_activity WHERE pid = current_setting('opsagent.pid')::int AND backend_start = current_setting('opsagent.started')::timestamptz \gset
DO $opsagent$
BEGIN
  FOR i IN 1..500 LOOP
    EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = current_setting('opsagent.pid')::int AND backend_start = current_setting('opsagent.started')::timestamptz);
    PERFORM pg_sleep(0.02);
    PERFORM pg_stat_clear_snapshot();  -- pg_stat_activity is otherwise frozen for the transaction
  END LOOP;
END $opsagent$;

