-- Tables with their sizes and row counts (inv tables).  reltuples is -1 for a table never vacuumed
-- nor analysed (PostgreSQL 14+): that is not "0 rows".  Such a table is counted when small and
-- readable (count(*) through query_to_xml: one round trip, the name quoted by format's %I);
-- otherwise its row count is unknown (NULL), never a guess.  @@COUNT_LIMIT_BYTES@@: an integer.

SELECT coalesce(json_agg(t ORDER BY t.schema, t.name), '[]')
FROM (
  SELECT n.nspname AS schema, c.relname AS name,
         CASE c.relkind WHEN 'p' THEN 'partitioned' ELSE 'table' END AS kind,
         CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint
              WHEN c.relkind = 'r' AND pg_relation_size(c.oid) <= @@COUNT_LIMIT_BYTES@@ AND has_table_privilege(c.oid, 'SELECT')
              THEN (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname),
                                                        false, true, '')))[1]::text::bigint
         END AS rows_estimate,
         CASE WHEN c.reltuples >= 0 THEN 'statistics'
              WHEN c.relkind = 'r' AND pg_relation_size(c.oid) <= @@COUNT_LIMIT_BYTES@@ AND has_table_privilege(c.oid, 'SELECT')
              THEN 'count' ELSE 'unknown' END AS rows_source,
         pg_total_relation_size(c.oid) AS total_bytes,
         pg_relation_size(c.oid) AS table_bytes
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
    AND n.nspname NOT LIKE 'pg_temp%'
) t

