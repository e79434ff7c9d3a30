-- Catalog.stats() computed by the server: the same relations, filters and exclusions as the introspection
-- query (its leading CTEs are reused verbatim, then catalog_stats_ctes.sql), counted instead of deparsed.

SELECT json_build_object(
 'schemas', (SELECT count(*) FROM nsp n WHERE n.oid NOT IN (SELECT oid FROM ledger_only)),
 'tables', (SELECT count(*) FROM rel r WHERE r.relkind IN ('r', 'p', 'f')),
 'columns', (SELECT count(*) FROM pg_attribute a JOIN rel r ON r.oid = a.attrelid
             WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind IN ('r', 'p', 'f')),
 'indexes', (SELECT count(*) FROM pg_index x JOIN rel i ON i.oid = x.indexrelid JOIN rel t ON t.oid = x.indrelid
             WHERE NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = x.indexrelid AND con.contype IN ('p', 'u', 'x'))
               AND NOT EXISTS (SELECT 1 FROM pg_inherits ih WHERE ih.inhrelid = x.indexrelid)),
 'primary_keys', (SELECT count(*) FILTER (WHERE contype = 'p') FROM tcon),
 'foreign_keys', (SELECT count(*) FILTER (WHERE contype = 'f') FROM tcon),
 'unique_constraints', (SELECT count(*) FILTER (WHERE contype = 'u') FROM tcon),
 'check_constraints', (SELECT count(*) FILTER (WHERE contype = 'c') FROM tcon),
 'exclude_constraints', (SELECT count(*) FILTER (WHERE contype = 'x') FROM tcon),
 'views', (SELECT count(*) FROM rel r WHERE r.relkind = 'v'),
 'materialized_views', (SELECT count(*) FROM rel r WHERE r.relkind = 'm'),
 'sequences', (SELECT count(*) FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid
               WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                                 AND ((d.deptype = 'i') OR (d.deptype = 'a' AND d.refobjid IN (SELECT oid FROM excluded))))),
 'functions', (SELECT count(*) FILTER (WHERE prokind <> 'p') FROM fn),
 'procedures', (SELECT count(*) FILTER (WHERE prokind = 'p') FROM fn),
 'triggers', (SELECT count(*) FROM pg_trigger tg JOIN rel r ON r.oid = tg.tgrelid WHERE NOT tg.tgisinternal AND tg.tgparentid = 0),
 'enum_types', (SELECT count(*) FILTER (WHERE typtype = 'e') FROM ty),
 'composite_types', (SELECT count(*) FILTER (WHERE typtype = 'c') FROM ty),
 'domain_types', (SELECT count(*) FILTER (WHERE typtype = 'd') FROM ty),
 'extensions', (SELECT count(*) FROM pg_extension e WHERE e.extname <> 'plpgsql'),
 'policies', (SELECT count(*) FROM pg_policy pol JOIN rel r ON r.oid = pol.polrelid),
 'collations', (SELECT count(*) FROM pg_collation co JOIN nsp n ON n.oid = co.collnamespace
                WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_collation'::regclass AND e.objid = co.oid)),
 'text_search_configurations', (SELECT count(*) FROM pg_ts_config c JOIN nsp n ON n.oid = c.cfgnamespace
                WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_ts_config'::regclass AND e.objid = c.oid)),
 'text_search_dictionaries', (SELECT count(*) FROM pg_ts_dict d JOIN nsp n ON n.oid = d.dictnamespace
                WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_ts_dict'::regclass AND e.objid = d.oid))
)
