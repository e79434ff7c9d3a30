-- Take the sync lock (the ledger's advisory lock), trying for up to @@WAIT_SECONDS@@ seconds (a float),
-- then say whether it was taken after the "lock" marker (@@LOCK_MARKER@@: its \echo line, remote/markers.py).
-- @@LOCK_CLASS@@, @@LOCK_OBJECT@@: integers (Ledger.lock_key).
DO $opsagent$
DECLARE deadline timestamptz := clock_timestamp() + make_interval(secs => @@WAIT_SECONDS@@);
BEGIN
  LOOP
    IF pg_try_advisory_lock(@@LOCK_CLASS@@, @@LOCK_OBJECT@@) THEN PERFORM set_config('opsagent.locked', 'on', false); RETURN; END IF;
    IF clock_timestamp() >= deadline THEN PERFORM set_config('opsagent.locked', 'off', false); RETURN; END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
END $opsagent$;
@@LOCK_MARKER@@
SELECT current_setting('opsagent.locked');

