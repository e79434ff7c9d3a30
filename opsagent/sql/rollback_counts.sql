-- Rows in each lost object, counted up to @@ROW_CAP@@ (an integer).
SELECT coalesce(json_agg(json_build_object('oid', (l->>'oid')::oid, 'column', l->>'column', 'kind', l->>'kind',
         'rows', pg_temp.opsagent_rows((l->>'oid')::oid, CASE WHEN l->>'kind' IN ('column', 'type') THEN l->>'column' END, @@ROW_CAP@@))),
       '[]')
  FROM jsonb_array_elements(:'opsagent_losses'::jsonb) l;

