-- What the way back lost (tables, columns, type changes, defaults), as JSON in :opsagent_losses.
SELECT coalesce(json_agg(json_build_object('kind', kind, 'oid', relid, 'table', tbl, 'column', col, 'old_type', coltype,
                                           'new_type', new_type) ORDER BY tbl, col), '[]') AS opsagent_losses
  FROM (SELECT 'table' AS kind, b.relid, b.tbl, NULL::text AS col, NULL::text AS coltype, NULL::text AS new_type
          FROM pg_temp.opsagent_rollback_before b
         WHERE b.attnum = 0 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = b.relid)
        UNION ALL
        SELECT 'column', b.relid, b.tbl, b.col, b.coltype, NULL FROM pg_temp.opsagent_rollback_before b
         WHERE b.attnum > 0 AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = b.relid)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = b.relid AND a.attnum = b.attnum
                                                                     AND NOT a.attisdropped)
        UNION ALL
        SELECT CASE WHEN format_type(a.atttypid, a.atttypmod) <> b.coltype THEN 'type' ELSE 'default' END, b.relid, b.tbl, b.col,
               b.coltype, format_type(a.atttypid, a.atttypmod)
          FROM pg_temp.opsagent_rollback_before b
          JOIN pg_catalog.pg_attribute a ON a.attrelid = b.relid AND a.attnum = b.attnum AND NOT a.attisdropped
         WHERE b.attnum > 0 AND (format_type(a.atttypid, a.atttypmod) <> b.coltype
                                 OR (b.hasdef AND b.notnull AND NOT a.atthasdef AND a.attnotnull))) l

