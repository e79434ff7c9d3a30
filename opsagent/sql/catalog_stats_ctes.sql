-- The CTEs catalog_stats.sql adds to the introspection query's leading ones.

tcon AS (
  SELECT con.contype FROM pg_constraint con JOIN rel r ON r.oid = con.conrelid
  WHERE con.conparentid = 0 AND con.coninhcount = 0 AND con.contype <> 't' AND con.contypid = 0
),
fn AS (
  SELECT p.prokind FROM pg_proc p JOIN nsp n ON n.oid = p.pronamespace
  WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid)
),
ty AS (
  SELECT t.typtype FROM pg_type t JOIN nsp n ON n.oid = t.typnamespace
  WHERE (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
    AND NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_type'::regclass AND e.objid = t.oid)
)
