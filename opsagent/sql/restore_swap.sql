-- Both renames and the connection settings in one transaction; sessions that got in anyway are ended
-- and the renames retried.  The names are read from settings (data), never written into the body.
SELECT set_config('opsagent.live', :'live', false), set_config('opsagent.target', :'target', false),
       set_config('opsagent.old', :'old', false), set_config('opsagent.allowconn', :'allowconn', false),
       set_config('opsagent.connlimit', :'connlimit', false) \g /dev/null
DO $opsagent_swap$
DECLARE
  live text := current_setting('opsagent.live');
  target text := current_setting('opsagent.target');
  old text := current_setting('opsagent.old');
  tries int := 0;
BEGIN
  LOOP
    PERFORM pg_terminate_backend(pid, 1000) FROM pg_stat_activity WHERE datname IN (live, target) AND pid <> pg_backend_pid();
    BEGIN
      EXECUTE format('ALTER DATABASE %I RENAME TO %I', live, old);
      EXECUTE format('ALTER DATABASE %I RENAME TO %I', target, live);
      EXECUTE format('ALTER DATABASE %I ALLOW_CONNECTIONS %s CONNECTION LIMIT %s', live,
                     CASE WHEN current_setting('opsagent.allowconn') = 'false' THEN 'false' ELSE 'true' END,
                     current_setting('opsagent.connlimit')::int);
      EXIT;
    EXCEPTION WHEN object_in_use THEN
      tries := tries + 1;
      IF tries >= 50 THEN RAISE; END IF;
      PERFORM pg_sleep(0.1);
    END;
  END LOOP;
END
$opsagent_swap$;
