-- The introspection query (schema/catalog.py: introspection_sql): one JSON document with everything
-- structural about the current database, deparsed with search_path = pg_catalog.
-- @@BARE@@, @@QUALIFIED@@, @@HIDDEN_SCHEMAS@@: quoted ARRAY[...]::text[] literals of the excluded
-- tables and schemas; @@DEPENDS@@, @@CASTS@@, @@MEMBERS@@: the fixed subqueries of catalog_*.sql (or NULL).
-- The leading CTEs up to "acl AS (" are shared with catalog_stats.sql (schema/catalog.py: stats_sql).

WITH
ext_objs AS (
  SELECT classid, objid FROM pg_depend WHERE deptype = 'e'
),
nsp AS (
  SELECT n.oid, n.nspname FROM pg_namespace n
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_'
    AND NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_namespace'::regclass AND e.objid = n.oid)
),
rel AS (
  SELECT c.oid, c.relname, c.relkind, c.relowner, n.nspname,
         quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS qname
  FROM pg_class c JOIN nsp n ON n.oid = c.relnamespace
  WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid)
    AND NOT (c.relkind IN ('r', 'p') AND (c.relname = ANY(@@BARE@@)
             OR '"' || replace(n.nspname, '"', '""') || '"."' || replace(c.relname, '"', '""') || '"' = ANY(@@QUALIFIED@@)))
),
excluded AS (
  SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND (c.relname = ANY(@@BARE@@)
         OR '"' || replace(n.nspname, '"', '""') || '"."' || replace(c.relname, '"', '""') || '"' = ANY(@@QUALIFIED@@))
),
ledger_only AS (
  -- a schema named by an exclusion (the ledger's own, e.g. ledger_schema: ops) that holds nothing but excluded tables:
  -- every object in a schema depends on it (indexes, constraints and row types hang on their table instead);
  -- a sequence the excluded table owns (serial) goes with it
  SELECT n.oid FROM pg_namespace n
  WHERE '"' || replace(n.nspname, '"', '""') || '"' = ANY(@@HIDDEN_SCHEMAS@@)
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = n.oid
                    AND NOT (d.classid = 'pg_class'::regclass
                             AND (d.objid IN (SELECT oid FROM excluded)
                                  OR EXISTS (SELECT 1 FROM pg_depend o WHERE o.classid = 'pg_class'::regclass AND o.objid = d.objid
                                             AND o.deptype = 'a' AND o.refobjid IN (SELECT oid FROM excluded)))))
),
acl AS (
  -- privileges beyond the owner's defaults, and defaults taken away ("no X"): equal grants compare equal
  -- whether or not the ACL was ever touched
  SELECT r.oid,
         json_agg(json_build_array(
           CASE WHEN x.grantee = 0 THEN 'PUBLIC' WHEN x.grantee = r.relowner THEN '<owner>' ELSE pg_get_userbyid(x.grantee) END,
           x.privilege_type, x.is_grantable)) AS privs
  FROM rel r JOIN pg_class c ON c.oid = r.oid,
       LATERAL (SELECT acldefault(CASE WHEN r.relkind = 'S' THEN 's' ELSE 'r' END::"char", r.relowner) AS dflt) d,
       LATERAL ((SELECT a.grantee, a.privilege_type, a.is_grantable FROM aclexplode(c.relacl) a
                 EXCEPT SELECT b.grantee, b.privilege_type, b.is_grantable FROM aclexplode(d.dflt) b)
                UNION ALL
                (SELECT b.grantee, 'no ' || b.privilege_type, b.is_grantable FROM aclexplode(d.dflt) b
                 EXCEPT SELECT a.grantee, 'no ' || a.privilege_type, a.is_grantable FROM aclexplode(c.relacl) a)) x
  WHERE r.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND c.relacl IS NOT NULL
  GROUP BY r.oid
),
cols AS (
  SELECT a.attrelid,
         json_agg(json_build_object(
           'name', a.attname, 'position', a.attnum,
           'type', format_type(a.atttypid, a.atttypmod),
           'not_null', a.attnotnull,
           'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
           'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
           'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
           -- the identity's own sequence: (start, increment, min, max, cache, cycle)
           'identity_sequence', CASE WHEN a.attidentity <> '' THEN
             (SELECT json_build_array(s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
              FROM pg_depend sd JOIN pg_sequence s ON s.seqrelid = sd.objid
              WHERE sd.classid = 'pg_class'::regclass AND sd.refclassid = 'pg_class'::regclass AND sd.deptype = 'i'
                AND sd.refobjid = a.attrelid AND sd.refobjsubid = a.attnum LIMIT 1) END,
           'collation', CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
                             THEN (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                                   FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                                   WHERE co.oid = a.attcollation) END,
           'comment', ds.description,
           'inherited', a.attinhcount > 0,
           'statistics', nullif(a.attstattarget, -1),  -- ALTER COLUMN ... SET STATISTICS
           'privileges', (SELECT json_agg(json_build_array(
                            CASE WHEN x.grantee = 0 THEN 'PUBLIC' WHEN x.grantee = r.relowner THEN '<owner>'
                                 ELSE pg_get_userbyid(x.grantee) END, x.privilege_type, x.is_grantable))
                          FROM aclexplode(a.attacl) x)
         ) ORDER BY a.attnum) AS columns
  FROM pg_attribute a
  JOIN rel r ON r.oid = a.attrelid
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_description ds ON ds.objoid = a.attrelid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = a.attnum
  WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind IN ('r', 'p', 'f', 'v', 'm')
  GROUP BY a.attrelid
),
dep_objs AS (
  -- every object pg_depend may name, as the catalog identifies it; a view's rewrite rule stands for the view,
  -- a column default for its table, a relation's row type for the relation
  SELECT 'pg_class'::regclass AS classid, r.oid AS objid,
         json_build_array(CASE WHEN r.relkind IN ('r', 'p', 'f') THEN 'tables' WHEN r.relkind IN ('v', 'm') THEN 'views'
                               WHEN r.relkind = 'S' THEN 'sequences' ELSE 'indexes' END, r.nspname, r.relname) AS id
  FROM rel r WHERE r.relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'i', 'I')
  UNION ALL
  SELECT 'pg_type'::regclass, t.oid,
         CASE WHEN r.oid IS NULL THEN json_build_array('types', n.nspname, t.typname)
              ELSE json_build_array(CASE WHEN r.relkind IN ('v', 'm') THEN 'views' ELSE 'tables' END, r.nspname, r.relname) END
  FROM pg_type t JOIN nsp n ON n.oid = t.typnamespace LEFT JOIN rel r ON r.oid = t.typrelid AND r.relkind <> 'c'
  WHERE t.typtype IN ('e', 'd', 'r', 'c')
  UNION ALL
  SELECT 'pg_proc'::regclass, p.oid, json_build_array('functions', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
  FROM pg_proc p JOIN nsp n ON n.oid = p.pronamespace
  UNION ALL
  SELECT 'pg_rewrite'::regclass, rw.oid,
         json_build_array(CASE WHEN r.relkind IN ('v', 'm') THEN 'views' ELSE 'tables' END, r.nspname, r.relname)
  FROM pg_rewrite rw JOIN rel r ON r.oid = rw.ev_class
  UNION ALL
  SELECT 'pg_attrdef'::regclass, ad.oid, json_build_array('tables', r.nspname, r.relname)
  FROM pg_attrdef ad JOIN rel r ON r.oid = ad.adrelid
  UNION ALL
  SELECT 'pg_trigger'::regclass, tg.oid, json_build_array('triggers', r.qname, tg.tgname)
  FROM pg_trigger tg JOIN rel r ON r.oid = tg.tgrelid WHERE NOT tg.tgisinternal
  UNION ALL
  SELECT 'pg_operator'::regclass, o.oid, json_build_array('operators', n.nspname, o.oprname,
         CASE WHEN o.oprleft = 0 THEN 'NONE' ELSE format_type(o.oprleft, NULL) END || ', ' || format_type(o.oprright, NULL))
  FROM pg_operator o JOIN nsp n ON n.oid = o.oprnamespace
  UNION ALL
  SELECT 'pg_statistic_ext'::regclass, st.oid, json_build_array('statistics', n.nspname, st.stxname)
  FROM pg_statistic_ext st JOIN nsp n ON n.oid = st.stxnamespace
  UNION ALL
  SELECT 'pg_policy'::regclass, pol.oid, json_build_array('policies', r.qname, pol.polname)
  FROM pg_policy pol JOIN rel r ON r.oid = pol.polrelid
  UNION ALL
  SELECT 'pg_constraint'::regclass, con.oid,
         json_build_array('constraints', coalesce(r.qname, quote_ident(tn.nspname) || '.' || quote_ident(ty.typname)), con.conname)
  FROM pg_constraint con LEFT JOIN rel r ON r.oid = con.conrelid
  LEFT JOIN pg_type ty ON ty.oid = con.contypid LEFT JOIN nsp tn ON tn.oid = ty.typnamespace
  WHERE r.oid IS NOT NULL OR tn.oid IS NOT NULL
)
SELECT json_strip_nulls(json_build_object(
 'server_version', current_setting('server_version_num')::int,
 'schemas', (SELECT coalesce(json_agg(json_build_object(
     'name', n.nspname, 'comment', obj_description(n.oid, 'pg_namespace'),
     'owner', pg_get_userbyid(ns.nspowner),
     'privileges', (SELECT json_agg(json_build_array(CASE WHEN x.grantee = 0 THEN 'PUBLIC' WHEN x.grantee = ns.nspowner THEN '<owner>'
                                              ELSE pg_get_userbyid(x.grantee) END, x.privilege_type, x.is_grantable))
                   FROM ((SELECT a.grantee, a.privilege_type, a.is_grantable FROM aclexplode(ns.nspacl) a
                          EXCEPT SELECT d.grantee, d.privilege_type, d.is_grantable FROM aclexplode(acldefault('n', ns.nspowner)) d)
                         UNION ALL
                         (SELECT d.grantee, 'no ' || d.privilege_type, d.is_grantable FROM aclexplode(acldefault('n', ns.nspowner)) d
                          EXCEPT SELECT a.grantee, 'no ' || a.privilege_type, a.is_grantable FROM aclexplode(ns.nspacl) a)) x
                  WHERE ns.nspacl IS NOT NULL)) ORDER BY n.nspname), '[]')
   FROM nsp n JOIN pg_namespace ns ON ns.oid = n.oid WHERE n.oid NOT IN (SELECT oid FROM ledger_only)),
 'extensions', (SELECT coalesce(json_agg(json_build_object(
     'name', e.extname, 'version', e.extversion, 'schema', n.nspname) ORDER BY e.extname), '[]')
   FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'),
 'tables', (SELECT coalesce(json_agg(json_build_object(
     'schema', r.nspname, 'name', r.relname, 'kind', c.relkind, 'owner', pg_get_userbyid(r.relowner),
     'persistence', c.relpersistence,
     'partition_key', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
     'partition_of', (SELECT i.inhparent::regclass::text FROM pg_inherits i
                      WHERE i.inhrelid = c.oid AND c.relispartition),
     'partition_bound', CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
     'inherits', (SELECT json_agg(i.inhparent::regclass::text ORDER BY i.inhseqno) FROM pg_inherits i
                  WHERE i.inhrelid = c.oid AND NOT c.relispartition),
     'options', c.reloptions,
     'rls_enabled', c.relrowsecurity, 'rls_forced', c.relforcerowsecurity,
     'clustered_on', (SELECT quote_ident(ic.relname) FROM pg_index ci JOIN pg_class ic ON ic.oid = ci.indexrelid
                      WHERE ci.indrelid = c.oid AND ci.indisclustered),
     'replica_identity', CASE c.relreplident WHEN 'f' THEN 'full' WHEN 'n' THEN 'nothing'
                         WHEN 'i' THEN 'index ' || coalesce((SELECT quote_ident(ic.relname) FROM pg_index ri
                                                             JOIN pg_class ic ON ic.oid = ri.indexrelid
                                                             WHERE ri.indrelid = c.oid AND ri.indisreplident), '(none)') END,
     'comment', obj_description(c.oid, 'pg_class'),
     'privileges', acl.privs,
     'columns', coalesce(cols.columns, '[]')
   ) ORDER BY r.qname), '[]')
   FROM rel r JOIN pg_class c ON c.oid = r.oid LEFT JOIN acl ON acl.oid = r.oid LEFT JOIN cols ON cols.attrelid = r.oid
   WHERE r.relkind IN ('r', 'p', 'f')),
 'views', (SELECT coalesce(json_agg(json_build_object(
     'schema', r.nspname, 'name', r.relname, 'materialized', r.relkind = 'm', 'owner', pg_get_userbyid(r.relowner),
     'definition', pg_get_viewdef(r.oid), 'options', c.reloptions,
     'comment', obj_description(r.oid, 'pg_class'),
     'privileges', acl.privs,
     'columns', coalesce(cols.columns, '[]')
   ) ORDER BY r.qname), '[]')
   FROM rel r JOIN pg_class c ON c.oid = r.oid LEFT JOIN acl ON acl.oid = r.oid LEFT JOIN cols ON cols.attrelid = r.oid
   WHERE r.relkind IN ('v', 'm')),
 'constraints', (SELECT coalesce(json_agg(json_build_object(
     'table', coalesce(r.qname, quote_ident(tn.nspname) || '.' || quote_ident(ty.typname)),
     'on_domain', con.contypid <> 0,
     'name', con.conname, 'type', con.contype,
     'definition', pg_get_constraintdef(con.oid),
     'deferrable', con.condeferrable, 'deferred', con.condeferred, 'validated', con.convalidated,
     'comment', obj_description(con.oid, 'pg_constraint')
   ) ORDER BY coalesce(r.qname, quote_ident(tn.nspname) || '.' || quote_ident(ty.typname)), con.conname,
              con.contypid), '[]')
   FROM pg_constraint con
   LEFT JOIN rel r ON r.oid = con.conrelid
   LEFT JOIN pg_type ty ON ty.oid = con.contypid
   LEFT JOIN nsp tn ON tn.oid = ty.typnamespace
   WHERE con.conparentid = 0
     AND con.coninhcount = 0  -- a CHECK a partition or child inherits is its parent's (even when it had its own copy when attached)
     AND con.contype <> 't'  -- a constraint trigger is its trigger (CREATE CONSTRAINT TRIGGER), listed under triggers
     AND ((con.conrelid <> 0 AND r.oid IS NOT NULL) OR (con.contypid <> 0 AND tn.oid IS NOT NULL
          -- an extension's domain (earthdistance's earth) brings its constraints along
          AND NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_type'::regclass AND e.objid = con.contypid)))),
 'indexes', (SELECT coalesce(json_agg(json_build_object(
     'table', t.qname, 'name', i.relname,
     'definition', pg_get_indexdef(i.oid),
     -- a partitioned index is valid once every partition has its index attached; a failed CONCURRENTLY build leaves one invalid
     'valid', x.indisvalid,
     -- ALTER INDEX ... ALTER COLUMN n SET STATISTICS (expression columns): (column number, target)
     'statistics', (SELECT json_agg(json_build_array(ia.attnum, ia.attstattarget) ORDER BY ia.attnum) FROM pg_attribute ia
                    WHERE ia.attrelid = i.oid AND ia.attstattarget > 0),
     'comment', obj_description(i.oid, 'pg_class')
   ) ORDER BY t.qname, i.relname), '[]')
   FROM pg_index x JOIN rel i ON i.oid = x.indexrelid JOIN rel t ON t.oid = x.indrelid
   WHERE NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = x.indexrelid AND con.contype IN ('p', 'u', 'x'))
     AND NOT EXISTS (SELECT 1 FROM pg_inherits ih WHERE ih.inhrelid = x.indexrelid)),
 'sequences', (SELECT coalesce(json_agg(json_build_object(
     'schema', r.nspname, 'name', r.relname, 'owner', pg_get_userbyid(r.relowner),
     'type', format_type(s.seqtypid, NULL), 'start', s.seqstart, 'increment', s.seqincrement,
     'min', s.seqmin, 'max', s.seqmax, 'cache', s.seqcache, 'cycle', s.seqcycle,
     'owned_by', (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname)
                  FROM pg_depend d
                  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid AND d.deptype = 'a'
                    AND d.refclassid = 'pg_class'::regclass LIMIT 1),
     'comment', obj_description(r.oid, 'pg_class'),
     'privileges', acl.privs
   ) ORDER BY r.qname), '[]')
   FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid LEFT JOIN acl ON acl.oid = r.oid
   WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                     AND ((d.deptype = 'i') OR (d.deptype = 'a' AND d.refobjid IN (SELECT oid FROM excluded))))),
 'functions', (SELECT coalesce(json_agg(json_build_object(
     'schema', n.nspname, 'name', p.proname, 'kind', p.prokind, 'owner', pg_get_userbyid(p.proowner),
     'privileges', (SELECT json_agg(json_build_array(CASE WHEN x.grantee = 0 THEN 'PUBLIC' WHEN x.grantee = p.proowner THEN '<owner>'
                                              ELSE pg_get_userbyid(x.grantee) END, x.privilege_type, x.is_grantable))
                   FROM ((SELECT a.grantee, a.privilege_type, a.is_grantable FROM aclexplode(p.proacl) a
                          EXCEPT SELECT d.grantee, d.privilege_type, d.is_grantable FROM aclexplode(acldefault('f', p.proowner)) d)
                         UNION ALL
                         (SELECT d.grantee, 'no ' || d.privilege_type, d.is_grantable FROM aclexplode(acldefault('f', p.proowner)) d
                          EXCEPT SELECT a.grantee, 'no ' || a.privilege_type, a.is_grantable FROM aclexplode(p.proacl) a)) x
                  WHERE p.proacl IS NOT NULL),
     'arguments', pg_get_function_identity_arguments(p.oid),
     'result', pg_get_function_result(p.oid),
     'definition', CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid)
                        ELSE (SELECT json_build_object('transition', ag.aggtransfn::text, 'final', ag.aggfinalfn::text,
                                                       'state', format_type(ag.aggtranstype, NULL),
                                                       'initial', ag.agginitval, 'combine', ag.aggcombinefn::text)::text
                              FROM pg_aggregate ag WHERE ag.aggfnoid = p.oid) END,
     'comment', obj_description(p.oid, 'pg_proc')
   ) ORDER BY n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), '[]')
   FROM pg_proc p JOIN nsp n ON n.oid = p.pronamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid)),
 'triggers', (SELECT coalesce(json_agg(json_build_object(
     'table', r.qname, 'name', tg.tgname,
     'definition', pg_get_triggerdef(tg.oid), 'enabled', tg.tgenabled,
     'comment', obj_description(tg.oid, 'pg_trigger')
   ) ORDER BY r.qname, tg.tgname), '[]')
   FROM pg_trigger tg JOIN rel r ON r.oid = tg.tgrelid
   WHERE NOT tg.tgisinternal AND tg.tgparentid = 0),
 'types', (SELECT coalesce(json_agg(json_build_object(
     'schema', n.nspname, 'name', t.typname, 'owner', pg_get_userbyid(t.typowner),
     'kind', CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' WHEN 'r' THEN 'range' ELSE 'composite' END,
     'labels', CASE WHEN t.typtype = 'e' THEN (SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder)
                                               FROM pg_enum e WHERE e.enumtypid = t.oid) END,
     'attributes', CASE WHEN t.typtype = 'c' THEN (SELECT json_agg(json_build_array(a.attname,
                                                      format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
                                                   FROM pg_attribute a
                                                   WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END,
     'base_type', CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
                       WHEN t.typtype = 'r' THEN (SELECT format_type(rg.rngsubtype, NULL) FROM pg_range rg
                                                  WHERE rg.rngtypid = t.oid) END,
     'not_null', t.typnotnull,
     'default', t.typdefault,
     'collation', CASE WHEN t.typtype = 'd' AND t.typcollation <> 0 AND t.typcollation <> bt.typcollation
                       THEN (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                             FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                             WHERE co.oid = t.typcollation) END,
     'comment', obj_description(t.oid, 'pg_type')
   ) ORDER BY n.nspname, t.typname), '[]')
   FROM pg_type t JOIN nsp n ON n.oid = t.typnamespace
   LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
   WHERE (t.typtype IN ('e', 'd', 'r')
          OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
     AND NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_type'::regclass AND e.objid = t.oid)),
 'policies', (SELECT coalesce(json_agg(json_build_object(
     'table', r.qname, 'name', pol.polname,
     'command', pol.polcmd, 'permissive', pol.polpermissive,
     'roles', (SELECT json_agg(pr.name ORDER BY pr.name)
               FROM (SELECT CASE WHEN ro = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(ro) END AS name
                     FROM unnest(pol.polroles) ro) pr),
     'using', pg_get_expr(pol.polqual, pol.polrelid),
     'with_check', pg_get_expr(pol.polwithcheck, pol.polrelid),
     'comment', obj_description(pol.oid, 'pg_policy')
   ) ORDER BY r.qname, pol.polname), '[]')
   FROM pg_policy pol JOIN rel r ON r.oid = pol.polrelid),
 'operators', (SELECT coalesce(json_agg(json_build_object(
     'schema', n.nspname, 'name', o.oprname, 'owner', pg_get_userbyid(o.oprowner),
     'left', CASE WHEN o.oprleft <> 0 THEN format_type(o.oprleft, NULL) END,
     'right', format_type(o.oprright, NULL), 'result', format_type(o.oprresult, NULL),
     'function', o.oprcode::regproc::text,
     'commutator', CASE WHEN o.oprcom <> 0 THEN o.oprcom::regoper::text END,
     'negator', CASE WHEN o.oprnegate <> 0 THEN o.oprnegate::regoper::text END,
     'restrict', CASE WHEN o.oprrest <> 0 THEN o.oprrest::regproc::text END,
     'join', CASE WHEN o.oprjoin <> 0 THEN o.oprjoin::regproc::text END,
     'hashes', o.oprcanhash, 'merges', o.oprcanmerge,
     'comment', obj_description(o.oid, 'pg_operator')
   ) ORDER BY n.nspname, o.oprname, o.oprleft::regtype::text, o.oprright::regtype::text), '[]')
   FROM pg_operator o JOIN nsp n ON n.oid = o.oprnamespace
   WHERE o.oprcode <> 0  -- a shell (named as another's commutator, never defined) comes back with that reference
     AND NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_operator'::regclass AND e.objid = o.oid)),
 'operator_families', (SELECT coalesce(json_agg(json_build_object(
     'schema', n.nspname, 'name', f.opfname, 'method', am.amname, 'owner', pg_get_userbyid(f.opfowner),
     'members', (SELECT json_agg(m.member ORDER BY m.member) FROM (@@MEMBERS@@) m
                 WHERE m.family = f.oid AND m.refclassid = 'pg_opfamily'::regclass),
     'comment', obj_description(f.oid, 'pg_opfamily')
   ) ORDER BY n.nspname, f.opfname, am.amname), '[]')
   FROM pg_opfamily f JOIN nsp n ON n.oid = f.opfnamespace JOIN pg_am am ON am.oid = f.opfmethod
   WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_opfamily'::regclass AND e.objid = f.oid)),
 'operator_classes', (SELECT coalesce(json_agg(json_build_object(
     'schema', n.nspname, 'name', c.opcname, 'method', am.amname, 'owner', pg_get_userbyid(c.opcowner),
     'type', format_type(c.opcintype, NULL), 'default', c.opcdefault,
     'family', (SELECT quote_ident(fn.nspname) || '.' || quote_ident(f.opfname) FROM pg_opfamily f
                JOIN pg_namespace fn ON fn.oid = f.opfnamespace WHERE f.oid = c.opcfamily),
     'storage', CASE WHEN c.opckeytype <> 0 THEN format_type(c.opckeytype, NULL) END,
     'members', (SELECT json_agg(m.member ORDER BY m.member) FROM (@@MEMBERS@@) m
                 WHERE m.refclassid = 'pg_opclass'::regclass AND m.refobjid = c.oid),
     'comment', obj_description(c.oid, 'pg_opclass')
   ) ORDER BY n.nspname, c.opcname, am.amname), '[]')
   FROM pg_opclass c JOIN nsp n ON n.oid = c.opcnamespace JOIN pg_am am ON am.oid = c.opcmethod
   WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_opclass'::regclass AND e.objid = c.oid)),
 'statistics', (SELECT coalesce(json_agg(json_build_object(
     'schema', n.nspname, 'name', st.stxname, 'table', r.qname,
     'definition', pg_get_statisticsobjdef(st.oid),
     'target', nullif(st.stxstattarget, -1),
     'comment', obj_description(st.oid, 'pg_statistic_ext')
   ) ORDER BY n.nspname, st.stxname), '[]')
   FROM pg_statistic_ext st JOIN nsp n ON n.oid = st.stxnamespace JOIN rel r ON r.oid = st.stxrelid),
 'depends', @@DEPENDS@@,
 'casts', @@CASTS@@,
 'collations', (SELECT coalesce(json_agg(json_build_object(
     'schema', n.nspname, 'name', co.collname, 'owner', pg_get_userbyid(co.collowner),
     'provider', CASE co.collprovider WHEN 'i' THEN 'icu' WHEN 'c' THEN 'libc' WHEN 'b' THEN 'builtin' ELSE co.collprovider::text END,
     -- the ICU/builtin locale column is colliculocale before 17, colllocale from 17 on
     'locale', coalesce(to_jsonb(co) ->> 'colllocale', to_jsonb(co) ->> 'colliculocale'),
     'lc_collate', co.collcollate, 'lc_ctype', co.collctype,
     'deterministic', co.collisdeterministic, 'rules', to_jsonb(co) ->> 'collicurules',
     'comment', obj_description(co.oid, 'pg_collation')
   ) ORDER BY n.nspname, co.collname), '[]')
   FROM pg_collation co JOIN nsp n ON n.oid = co.collnamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_collation'::regclass AND e.objid = co.oid)),
 'text_search_dicts', (SELECT coalesce(json_agg(json_build_object(
     'schema', n.nspname, 'name', d.dictname, 'owner', pg_get_userbyid(d.dictowner),
     'template', (SELECT quote_ident(tn.nspname) || '.' || quote_ident(t.tmplname) FROM pg_ts_template t
                  JOIN pg_namespace tn ON tn.oid = t.tmplnamespace WHERE t.oid = d.dicttemplate),
     'options', d.dictinitoption,
     'comment', obj_description(d.oid, 'pg_ts_dict')
   ) ORDER BY n.nspname, d.dictname), '[]')
   FROM pg_ts_dict d JOIN nsp n ON n.oid = d.dictnamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_ts_dict'::regclass AND e.objid = d.oid)),
 'text_search_configs', (SELECT coalesce(json_agg(json_build_object(
     'schema', n.nspname, 'name', c.cfgname, 'owner', pg_get_userbyid(c.cfgowner),
     'parser', (SELECT quote_ident(pn.nspname) || '.' || quote_ident(p.prsname) FROM pg_ts_parser p
                JOIN pg_namespace pn ON pn.oid = p.prsnamespace WHERE p.oid = c.cfgparser),
     -- token type -> its dictionaries in order, fully qualified
     'mappings', (SELECT json_agg(json_build_array(tt.alias, tt.dicts) ORDER BY tt.alias)
                  FROM (SELECT t.alias, string_agg(quote_ident(dn.nspname) || '.' || quote_ident(dd.dictname), ', '
                                                   ORDER BY m.mapseqno) AS dicts
                        FROM pg_ts_config_map m
                        JOIN ts_token_type(c.cfgparser) t ON t.tokid = m.maptokentype
                        JOIN pg_ts_dict dd ON dd.oid = m.mapdict
                        JOIN pg_namespace dn ON dn.oid = dd.dictnamespace
                        WHERE m.mapcfg = c.oid GROUP BY t.alias) tt),
     'comment', obj_description(c.oid, 'pg_ts_config')
   ) ORDER BY n.nspname, c.cfgname), '[]')
   FROM pg_ts_config c JOIN nsp n ON n.oid = c.cfgnamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_ts_config'::regclass AND e.objid = c.oid))
))

