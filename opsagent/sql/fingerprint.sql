-- The live structure's fingerprint (schema/fingerprint.py): which catalog row versions this database has now.
-- Every visible row of every catalog table of this database (pg_catalog, not shared) and of the shared catalogs a
-- schema dump names (roles, tablespaces) counts by its (xmin, ctid): committed DDL writes new row versions and a
-- version never comes back, so in the same cluster (system identifier), timeline (a point-in-time recovery starts a
-- new one: transaction ids are handed out again from the recovery point) and database (oid) an equal fingerprint
-- means the very catalog rows seen then (copies of one data directory share all three: the reader adds the host).
-- Statistics (ANALYZE) and large object data are left out; VACUUM's in-place updates
-- (relpages, reltuples, frozen xids) move no row.  The index state flags are read as values, since CREATE INDEX
-- CONCURRENTLY may set them in place.  Temporary tables, TRUNCATE, REINDEX and CLUSTER do change it: a miss (the full
-- comparison runs), never a wrong hit.
SELECT json_build_object(
  'system', (SELECT system_identifier::text FROM pg_catalog.pg_control_system()),
  'timeline', (SELECT timeline_id::text FROM pg_catalog.pg_control_checkpoint()),
  'database', (SELECT oid::text FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()),
  'rows', (SELECT pg_catalog.md5(pg_catalog.string_agg(c.relname || '=' || x::text, ',' ORDER BY c.relname))
             FROM pg_catalog.pg_class c
             CROSS JOIN LATERAL pg_catalog.query_to_xml(pg_catalog.format(
               'SELECT count(*) AS n, coalesce(sum(pg_catalog.hashtextextended(xmin::text || ctid::text, 0)), 0) AS h '
               'FROM pg_catalog.%I', c.relname), false, true, '') AS x
            WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r'
              AND (NOT c.relisshared OR c.relname IN ('pg_authid', 'pg_tablespace'))
              AND c.relname NOT IN ('pg_statistic', 'pg_statistic_ext_data', 'pg_largeobject')),
  'indexes', (SELECT pg_catalog.md5(coalesce(pg_catalog.string_agg(
                indexrelid::text || indisvalid::text || indisready::text || indislive::text, ','
                ORDER BY indexrelid), ''))
                FROM pg_catalog.pg_index))
