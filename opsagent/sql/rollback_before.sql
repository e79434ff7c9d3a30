-- Rehearsal of a way back: snapshot every table and column (but the ledger, @@LEDGER@@: a quoted
-- literal) before the way back runs, and a bounded row counter.
CREATE TEMP TABLE opsagent_rollback_before ON COMMIT DROP AS
SELECT c.oid AS relid, format('%I.%I', n.nspname, c.relname) AS tbl, coalesce(a.attnum, 0) AS attnum, a.attname::text AS col,
       format_type(a.atttypid, a.atttypmod) AS coltype, coalesce(a.attnotnull, false) AS notnull,
       coalesce(a.atthasdef, false) AS hasdef
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN LATERAL (SELECT NULL::int2 AS attnum, NULL::name AS attname, NULL::oid AS atttypid, NULL::int4 AS atttypmod,
                            NULL::bool AS attnotnull, NULL::bool AS atthasdef
                     UNION ALL
                     SELECT x.attnum, x.attname, x.atttypid, x.atttypmod, x.attnotnull, x.atthasdef FROM pg_catalog.pg_attribute x
                      WHERE x.attrelid = c.oid AND x.attnum > 0 AND NOT x.attisdropped AND x.attgenerated = '') a ON true
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
   AND c.oid IS DISTINCT FROM to_regclass(@@LEDGER@@);
CREATE FUNCTION pg_temp.opsagent_rows(rel oid, col text, cap bigint) RETURNS bigint LANGUAGE plpgsql AS $opsagent$
DECLARE n bigint;
BEGIN
  IF col IS NULL THEN
    EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %s LIMIT %s) s', rel::regclass, cap) INTO n;
  ELSE
    EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %s WHERE %I IS NOT NULL LIMIT %s) s', rel::regclass, col, cap) INTO n;
  END IF;
  RETURN n;
END $opsagent$;

