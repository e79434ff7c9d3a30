"""A typed, comparable model of a database's structure, read in one round trip.

One query (``INTROSPECTION_SQL``) asks ``pg_catalog`` for everything and returns a
single JSON document; ``Catalog.from_json`` turns it into frozen dataclasses keyed
by stable identities (schema-qualified names, functions by identity arguments,
table-bound objects by table + name).  OIDs and creation order never reach the
model, and deparsed definitions are produced with ``search_path = pg_catalog`` so
they are fully qualified and identical across databases.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from .errors import RemoteError
from .exclusions import DEFAULT_EXCLUDED_TABLES, always_quoted, canonical, hidden_schema_candidates, split_exclusion

__all__ = ["DEFAULT_EXCLUDED_TABLES"]  # the ledger's default location, re-exported for the callers that import it from here
_SEPARATOR = "==opsagent-catalog=="


class QueryRunner(Protocol):
    """The part of ``Remote`` introspection needs (kept narrow so tests can read it)."""

    def query_json(self, sql: str, database: str | None = None, *, timeout: float | None = None) -> Any: ...

    def psql(self, sql: str, database: str | None = None, *, extra: Sequence[str] = (), timeout: float | None = None,
             check: bool = True) -> Any: ...


# ---------------------------------------------------------------- the query

_QUERY = r"""
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
    AND NOT (c.relkind IN ('r', 'p') AND (c.relname = ANY(%(bare)s)
             OR '"' || replace(n.nspname, '"', '""') || '"."' || replace(c.relname, '"', '""') || '"' = ANY(%(qualified)s)))
),
excluded AS (
  SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND (c.relname = ANY(%(bare)s)
         OR '"' || replace(n.nspname, '"', '""') || '"."' || replace(c.relname, '"', '""') || '"' = ANY(%(qualified)s))
),
ledger_only AS (
  -- a schema named by an exclusion (the ledger's own, e.g. ledger_schema: ops) that holds nothing but excluded tables:
  -- every object in a schema depends on it (indexes, constraints and row types hang on their table instead);
  -- a sequence the excluded table owns (serial) goes with it
  SELECT n.oid FROM pg_namespace n
  WHERE '"' || replace(n.nspname, '"', '""') || '"' = ANY(%(hidden_schemas)s)
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
   ) ORDER BY 1), '[]')
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
   ) ORDER BY 1), '[]')
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
   ) ORDER BY n.nspname, p.proname, 4), '[]')
   FROM pg_proc p JOIN nsp n ON n.oid = p.pronamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext_objs e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid)),
 'triggers', (SELECT coalesce(json_agg(json_build_object(
     'table', r.qname, 'name', tg.tgname,
     'definition', pg_get_triggerdef(tg.oid), 'enabled', tg.tgenabled,
     'comment', obj_description(tg.oid, 'pg_trigger')
   ) ORDER BY 1), '[]')
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
     'roles', (SELECT json_agg(CASE WHEN ro = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(ro) END ORDER BY 1)
               FROM unnest(pol.polroles) ro),
     'using', pg_get_expr(pol.polqual, pol.polrelid),
     'with_check', pg_get_expr(pol.polwithcheck, pol.polrelid),
     'comment', obj_description(pol.oid, 'pg_policy')
   ) ORDER BY 1), '[]')
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
     'members', (SELECT json_agg(m.member ORDER BY m.member) FROM (%(members)s) m
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
     'members', (SELECT json_agg(m.member ORDER BY m.member) FROM (%(members)s) m
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
 'depends', %(depends)s,
 'casts', %(casts)s,
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
"""


def _sql_text_array(values: Iterable[str]) -> str:
    """A safely quoted ``ARRAY[...]::text[]`` literal (names come from configuration)."""
    quoted = ", ".join("'" + value.replace("'", "''") + "'" for value in values)
    return f"ARRAY[{quoted}]::text[]"


_DEPENDS = r"""(SELECT coalesce(json_agg(json_build_array(
       CASE WHEN d.classid = 'pg_class'::regclass AND d.objsubid > 0
            THEN json_build_array('columns', a.id->>1, a.id->>2, (SELECT attname FROM pg_attribute
                                                                  WHERE attrelid = d.objid AND attnum = d.objsubid))
            WHEN d.classid = 'pg_attrdef'::regclass
            THEN (SELECT json_build_array('columns', a.id->>1, a.id->>2, at.attname) FROM pg_attrdef ad
                  JOIN pg_attribute at ON at.attrelid = ad.adrelid AND at.attnum = ad.adnum WHERE ad.oid = d.objid)
            ELSE a.id END,
       -- a column as such: dropping or retyping it touches only what uses that column
       CASE WHEN d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
            THEN json_build_array('columns', b.id->>1, b.id->>2, (SELECT attname FROM pg_attribute
                                                                  WHERE attrelid = d.refobjid AND attnum = d.refobjsubid), b.id->>0)
            ELSE b.id END)), '[]')
   FROM pg_depend d
   JOIN dep_objs a ON a.classid = d.classid AND a.objid = d.objid
   JOIN dep_objs b ON b.classid = d.refclassid AND b.objid = d.refobjid
   WHERE d.deptype IN ('n', 'a') AND (a.id::text <> b.id::text OR d.objsubid <> d.refobjsubid))"""


# an operator family's operators and support functions as CREATE OPERATOR CLASS / ALTER OPERATOR FAMILY write them, with what
# they belong to (pg_depend: the class, or the family when added loose)
_MEMBERS = r"""SELECT ao.amopfamily AS family, d.refclassid, d.refobjid,
         'OPERATOR ' || ao.amopstrategy || ' ' || ao.amopopr::regoper::text || '(' || format_type(ao.amoplefttype, NULL) || ', '
         || format_type(ao.amoprighttype, NULL) || ')'
         || CASE WHEN ao.amoppurpose = 'o' THEN ' FOR ORDER BY ' || (SELECT quote_ident(sn.nspname) || '.' || quote_ident(sf.opfname)
                                                                  FROM pg_opfamily sf JOIN pg_namespace sn ON sn.oid = sf.opfnamespace
                                                                  WHERE sf.oid = ao.amopsortfamily) ELSE '' END AS member
  FROM pg_amop ao JOIN pg_depend d ON d.classid = 'pg_amop'::regclass AND d.objid = ao.oid
   AND d.refclassid IN ('pg_opclass'::regclass, 'pg_opfamily'::regclass)
  UNION ALL
  SELECT ap.amprocfamily, d.refclassid, d.refobjid,
         'FUNCTION ' || ap.amprocnum || ' (' || format_type(ap.amproclefttype, NULL) || ', ' || format_type(ap.amprocrighttype, NULL)
         || ') ' || ap.amproc::regprocedure::text
  FROM pg_amproc ap JOIN pg_depend d ON d.classid = 'pg_amproc'::regclass AND d.objid = ap.oid
   AND d.refclassid IN ('pg_opclass'::regclass, 'pg_opfamily'::regclass)"""

# what ``expr::type`` can do (pg_cast, plus I/O conversion to and from string types): whether a plan's type change can run
_CASTS = r"""json_build_object(
   'pairs', (SELECT json_agg(json_build_array(format_type(c.castsource, NULL), format_type(c.casttarget, NULL))) FROM pg_cast c),
   'strings', (SELECT json_agg(format_type(t.oid, NULL)) FROM pg_type t WHERE t.typcategory = 'S' AND t.typtype = 'b'))"""


def introspection_sql(exclude_tables: Iterable[str] = DEFAULT_EXCLUDED_TABLES, *, dependencies: bool = False) -> str:
    """The introspection script: a fixed search_path, then one query returning one JSON document.

    ``exclude_tables`` entries (see ``opsagent.exclusions``) are ``"schema"."table"``
    (exactly that table: the ledger) or bare names (that name in any schema).  A
    non-public schema of an entry that holds nothing but excluded tables (the
    ledger's own ``ledger_schema``) is left out of the schema list too.
    ``dependencies`` adds pg_depend's edges (``Catalog.depends``), which only plans
    need: they double the document's size.
    """
    names = list(exclude_tables)
    split = [split_exclusion(name) for name in names]  # refuses NUL bytes
    bare = [table for schema, table in split if schema is None]
    qualified = [canonical(name) for name, (schema, _) in zip(names, split, strict=True) if schema is not None]
    hidden = [always_quoted(schema) for schema in hidden_schema_candidates(names)]
    query = _QUERY % {"bare": _sql_text_array(bare), "qualified": _sql_text_array(qualified), "hidden_schemas": _sql_text_array(hidden),
                      "depends": _DEPENDS if dependencies else "NULL", "casts": _CASTS if dependencies else "NULL",
                      "members": _MEMBERS}
    # a separate SET (not set_config inside the query) so it is in force before any deparsing starts
    return "SET search_path = pg_catalog;\n" + query.strip() + ";\n"


INTROSPECTION_SQL = introspection_sql()

# ``Catalog.stats()`` computed by the server: the same relations, filters and exclusions as the introspection
# query (its leading CTEs are reused verbatim), counted instead of deparsed.  ``inv extract`` needs only the
# counts; deparsing every definition would cost as much as the pg_dump it accompanies.
# (tests pin it to ``introspect(...).stats()`` on real schemas)
_STATS = r"""
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
)"""
_STATS_CTES = r"""
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
)"""


def stats_sql(exclude_tables: Iterable[str] = DEFAULT_EXCLUDED_TABLES) -> str:
    """One query returning ``Catalog.stats()`` as a JSON object, without deparsing anything (``inv extract``)."""
    full = introspection_sql(exclude_tables)
    body = full[:full.index("\nacl AS (")].rstrip().rstrip(",")  # SET search_path + WITH ext_objs, nsp, rel, excluded, ledger_only
    return f"{body},{_STATS_CTES}{_STATS};\n"


# ---------------------------------------------------------------- model


def qualify(schema: str, name: str) -> str:
    """Schema-qualified display name, quoted like PostgreSQL does when needed."""
    return f"{quote_ident(schema)}.{quote_ident(name)}"


_SAFE = set("abcdefghijklmnopqrstuvwxyz0123456789_$")
_KEYWORDS: frozenset[str] | None = None  # pglast's keyword lists, loaded on first use: extract and sync never need pglast


def _keywords() -> frozenset[str]:
    global _KEYWORDS
    if _KEYWORDS is None:
        from pglast import keywords

        _KEYWORDS = frozenset(keywords.RESERVED_KEYWORDS) | frozenset(keywords.COL_NAME_KEYWORDS) | frozenset(keywords.TYPE_FUNC_NAME_KEYWORDS)
    return _KEYWORDS


def quote_ident(name: str) -> str:
    """PostgreSQL's quote_ident, so keys built here match names deparsed by the server."""
    if name and name[0] in "abcdefghijklmnopqrstuvwxyz_" and set(name) <= _SAFE and name not in (_KEYWORDS or _keywords()):
        return name
    return '"' + name.replace('"', '""') + '"'


Privilege = tuple[str, str, bool]


class _InSchema:
    """What an object named ``schema.name`` shares: the key every comparison and statement uses."""

    schema: str
    name: str

    @property
    def key(self) -> str:
        return qualify(self.schema, self.name)


@dataclasses.dataclass(frozen=True)
class Schema:
    name: str
    comment: str | None = None
    privileges: tuple[Privilege, ...] = ()  # differences from the defaults (owner only)
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    @property
    def key(self) -> str:
        return quote_ident(self.name)


@dataclasses.dataclass(frozen=True)
class Extension:
    name: str
    version: str
    schema: str

    @property
    def key(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool = False
    default: str | None = None
    generated: str | None = None
    identity: str | None = None
    identity_sequence: tuple[int, int, int, int, int, bool] | None = None  # start, increment, min, max, cache, cycle
    collation: str | None = None
    comment: str | None = None
    inherited: bool = False  # comes from a parent table (partition or inheritance child)
    statistics: int | None = None  # SET STATISTICS target, when not the default
    privileges: tuple[Privilege, ...] = ()  # column-level grants only


@dataclasses.dataclass(frozen=True)
class Table(_InSchema):
    """A table (ordinary, partitioned or foreign); its columns keep their physical order."""

    schema: str
    name: str
    kind: str = "r"
    persistence: str = "p"
    partition_key: str | None = None
    partition_of: str | None = None
    partition_bound: str | None = None
    inherits: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    rls_enabled: bool = False
    rls_forced: bool = False
    replica_identity: str = "default"  # "full", "nothing" or "index <name>" (what logical replication logs of a changed row)
    clustered_on: str | None = None  # the index CLUSTER uses by default (ALTER TABLE ... CLUSTER ON), quoted
    comment: str | None = None
    privileges: tuple[Privilege, ...] = ()
    columns: tuple[Column, ...] = ()
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    def column_map(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}


@dataclasses.dataclass(frozen=True)
class View(_InSchema):
    schema: str
    name: str
    materialized: bool
    definition: str
    options: tuple[str, ...] = ()
    comment: str | None = None
    privileges: tuple[Privilege, ...] = ()
    columns: tuple[Column, ...] = ()
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    def column_map(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A table or domain constraint; ``type`` is PostgreSQL's contype letter."""

    table: str
    name: str
    type: str
    definition: str
    on_domain: bool = False
    deferrable: bool = False
    deferred: bool = False
    validated: bool = True
    comment: str | None = None

    @property
    def key(self) -> str:
        return f"{self.table}.{quote_ident(self.name)}"


@dataclasses.dataclass(frozen=True)
class Index:
    table: str
    name: str
    definition: str
    valid: bool = True
    statistics: tuple[tuple[int, int], ...] = ()  # (column number, SET STATISTICS target) of expression columns
    comment: str | None = None

    @property
    def key(self) -> str:
        schema = self.table.rsplit(".", 1)[0]
        return f"{schema}.{quote_ident(self.name)}"


@dataclasses.dataclass(frozen=True)
class Operator:
    """A user-defined operator, identified by schema, name and argument types (``left`` is None for a prefix operator).

    Support functions and companion operators are as ``regproc``/``regoper`` print them (qualified outside pg_catalog).
    """

    schema: str
    name: str
    right: str
    result: str
    function: str
    left: str | None = None
    commutator: str | None = None
    negator: str | None = None
    restrict: str | None = None
    join: str | None = None
    hashes: bool = False
    merges: bool = False
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    @property
    def arguments(self) -> str:
        return f"{self.left or 'NONE'}, {self.right}"

    @property
    def key(self) -> str:
        return f"{quote_ident(self.schema)}.{self.name}({self.arguments})"


@dataclasses.dataclass(frozen=True)
class OperatorFamily:
    """An operator family of an index method; ``members`` are only those added loose (ALTER OPERATOR FAMILY ... ADD)."""

    schema: str
    name: str
    method: str
    members: tuple[str, ...] = ()
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    @property
    def key(self) -> str:
        return f"{qualify(self.schema, self.name)} USING {self.method}"


@dataclasses.dataclass(frozen=True)
class OperatorClass:
    """An operator class: the operators and support functions an index method uses for one type."""

    schema: str
    name: str
    method: str
    type: str
    family: str
    default: bool = False
    storage: str | None = None
    members: tuple[str, ...] = ()
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    @property
    def key(self) -> str:
        return f"{qualify(self.schema, self.name)} USING {self.method}"


@dataclasses.dataclass(frozen=True)
class Statistics(_InSchema):
    """An extended statistics object (CREATE STATISTICS) on one table; ``target`` is its SET STATISTICS, when set."""

    schema: str
    name: str
    table: str
    definition: str
    target: int | None = None
    comment: str | None = None


@dataclasses.dataclass(frozen=True)
class Sequence_(_InSchema):
    schema: str
    name: str
    type: str
    start: int
    increment: int
    min: int
    max: int
    cache: int
    cycle: bool
    owned_by: str | None = None
    comment: str | None = None
    privileges: tuple[Privilege, ...] = ()
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ


@dataclasses.dataclass(frozen=True)
class Function:
    """A function, procedure or aggregate; identified by name and identity arguments."""

    schema: str
    name: str
    kind: str
    arguments: str
    result: str | None = None
    definition: str | None = None
    comment: str | None = None
    privileges: tuple[Privilege, ...] = ()  # differences from the defaults (EXECUTE to PUBLIC)
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    @property
    def key(self) -> str:
        return f"{qualify(self.schema, self.name)}({self.arguments})"


@dataclasses.dataclass(frozen=True)
class Trigger:
    table: str
    name: str
    definition: str
    enabled: str = "O"
    comment: str | None = None

    @property
    def key(self) -> str:
        return f"{self.table}.{quote_ident(self.name)}"


@dataclasses.dataclass(frozen=True)
class Type(_InSchema):
    """An enum, composite, domain or range type."""

    schema: str
    name: str
    kind: str
    labels: tuple[str, ...] | None = None
    attributes: tuple[tuple[str, str], ...] | None = None
    base_type: str | None = None
    not_null: bool = False
    default: str | None = None
    collation: str | None = None
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ


@dataclasses.dataclass(frozen=True)
class Policy:
    table: str
    name: str
    command: str
    permissive: bool
    roles: tuple[str, ...]
    using: str | None = None
    with_check: str | None = None
    comment: str | None = None

    @property
    def key(self) -> str:
        return f"{self.table}.{quote_ident(self.name)}"


@dataclasses.dataclass(frozen=True)
class Collation(_InSchema):
    """A collation; ``locale`` is the ICU (or builtin) locale, ``lc_*`` the libc ones.  The version is the library's, not compared."""

    schema: str
    name: str
    provider: str = "libc"
    locale: str | None = None
    lc_collate: str | None = None
    lc_ctype: str | None = None
    deterministic: bool = True
    rules: str | None = None
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ


@dataclasses.dataclass(frozen=True)
class TextSearchDictionary(_InSchema):
    """A text search dictionary: a template (qualified) and its options as PostgreSQL prints them."""

    schema: str
    name: str
    template: str
    options: str | None = None
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ


@dataclasses.dataclass(frozen=True)
class TextSearchConfig(_InSchema):
    """A text search configuration: its parser and, per token type, the dictionaries tried in order."""

    schema: str
    name: str
    parser: str
    mappings: tuple[tuple[str, str], ...] = ()  # (token type, "dict, dict"), sorted by token type
    comment: str | None = None
    owner: str | None = dataclasses.field(default=None, compare=False)  # compared only on request: environments differ

    def mapping_map(self) -> dict[str, str]:
        return dict(self.mappings)


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(tuple(v) if isinstance(v, list) else v for v in value or ())


_SET_FIELDS = ("privileges", "roles")  # sets in meaning: order must not matter


_FIELD_NAMES: dict[type[Any], frozenset[str]] = {}


def _field_names(cls: type[Any]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


_TYPMOD_TEXT = re.compile(r"\(\d+(?:,\d+)?\)")


def castable(catalog: Catalog, source: str, target: str) -> bool:
    """Whether ``value::target`` works for a ``source`` value (as ALTER COLUMN ... USING col::target needs).

    From the server's pg_cast and string types, read with the catalog; a catalog read without them
    (hand-built, or introspected without dependencies) says yes: the rehearsal will tell.
    """
    if not catalog.casts:
        return True
    a, b = _TYPMOD_TEXT.sub("", source), _TYPMOD_TEXT.sub("", target)
    if a == b or a in catalog.string_types or b in catalog.string_types:
        return True
    if a.endswith("[]") and b.endswith("[]"):
        return castable(catalog, a[:-2], b[:-2])
    return (a, b) in catalog.casts


def _build(cls: type[Any], data: Mapping[str, Any], **overrides: Any) -> Any:
    """One model object from its JSON entry: lists become tuples, absent/null keys take defaults."""
    names = _field_names(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if value is None or key not in names:
            continue  # null means "the default" (the query strips nulls anyway)
        if isinstance(value, list):
            value = tuple(sorted(_tuple(value))) if key in _SET_FIELDS else _tuple(value)
        kwargs[key] = value
    kwargs.update(overrides)
    return cls(**kwargs)


def _columns(items: Sequence[Mapping[str, Any]]) -> tuple[Column, ...]:
    ordered = sorted(items, key=lambda c: c.get("position", 0))
    return tuple(_build(Column, c) for c in ordered)


def _keyed(items: Iterable[Any]) -> dict[str, Any]:
    return {item.key: item for item in items}


def dependency_id(descriptor: Sequence[str]) -> str:
    """``[attr, schema-or-table, name(, arguments)]`` from the introspection query as ``"<attr>:<key>"``."""
    attr, owner, name, *rest = descriptor
    if attr in ("triggers", "constraints", "policies"):
        return f"{attr}:{owner}.{quote_ident(name)}"
    if attr == "columns":
        return f"columns:{qualify(owner, name)}.{quote_ident(rest[0])}"
    if attr == "operators":
        return f"operators:{quote_ident(owner)}.{name}({rest[0]})"
    key = qualify(owner, name)
    return f"{attr}:{key}({rest[0]})" if attr == "functions" else f"{attr}:{key}"


def _dependencies(pairs: Iterable[Sequence[Sequence[str]]]) -> dict[str, frozenset[str]]:
    graph: dict[str, set[str]] = {}
    for dependent, referenced in pairs:
        source = dependency_id(dependent)
        targets = {dependency_id(referenced)}
        if referenced[0] == "columns" and len(referenced) > 4:  # a column's relation too: dropping it touches all users
            targets.add(f"{referenced[4]}:{qualify(referenced[1], referenced[2])}")
        graph.setdefault(source, set()).update(targets - {source})
    return {key: frozenset(refs) for key, refs in graph.items()}


_NOT_COMPARED = frozenset({"server_version", "depends", "casts", "string_types"})  # facts about the server, not the schema


@dataclasses.dataclass(frozen=True)
class Catalog:
    """Everything structural about one database, keyed by stable identity."""

    schemas: dict[str, Schema] = dataclasses.field(default_factory=dict)
    extensions: dict[str, Extension] = dataclasses.field(default_factory=dict)
    tables: dict[str, Table] = dataclasses.field(default_factory=dict)
    views: dict[str, View] = dataclasses.field(default_factory=dict)
    constraints: dict[str, Constraint] = dataclasses.field(default_factory=dict)
    indexes: dict[str, Index] = dataclasses.field(default_factory=dict)
    sequences: dict[str, Sequence_] = dataclasses.field(default_factory=dict)
    functions: dict[str, Function] = dataclasses.field(default_factory=dict)
    triggers: dict[str, Trigger] = dataclasses.field(default_factory=dict)
    types: dict[str, Type] = dataclasses.field(default_factory=dict)
    policies: dict[str, Policy] = dataclasses.field(default_factory=dict)
    collations: dict[str, Collation] = dataclasses.field(default_factory=dict)
    text_search_dicts: dict[str, TextSearchDictionary] = dataclasses.field(default_factory=dict)
    text_search_configs: dict[str, TextSearchConfig] = dataclasses.field(default_factory=dict)
    statistics: dict[str, Statistics] = dataclasses.field(default_factory=dict)
    operators: dict[str, Operator] = dataclasses.field(default_factory=dict)
    operator_families: dict[str, OperatorFamily] = dataclasses.field(default_factory=dict)
    operator_classes: dict[str, OperatorClass] = dataclasses.field(default_factory=dict)
    server_version: int | None = None
    # "<attr>:<key>" -> what it depends on (pg_depend), e.g. "views:public.v" -> {"tables:public.t", ...}; not compared
    depends: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    # explicit casts the server knows, (source, target) without typmods; with ``strings``, which need none; not compared
    casts: frozenset[tuple[str, str]] = frozenset()
    string_types: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Catalog:
        """Build the model from the introspection document (pure: tests feed it JSON)."""
        return cls(
            schemas=_keyed(_build(Schema, s) for s in doc.get("schemas", [])),
            extensions=_keyed(_build(Extension, e) for e in doc.get("extensions", [])),
            tables=_keyed(_build(Table, t, columns=_columns(t.get("columns", []))) for t in doc.get("tables", [])),
            views=_keyed(_build(View, v, columns=_columns(v.get("columns", []))) for v in doc.get("views", [])),
            constraints=_keyed(_build(Constraint, c) for c in doc.get("constraints", [])),
            indexes=_keyed(_build(Index, i) for i in doc.get("indexes", [])),
            sequences=_keyed(_build(Sequence_, s) for s in doc.get("sequences", [])),
            functions=_keyed(_build(Function, f) for f in doc.get("functions", [])),
            triggers=_keyed(_build(Trigger, t) for t in doc.get("triggers", [])),
            types=_keyed(_build(Type, t) for t in doc.get("types", [])),
            policies=_keyed(_build(Policy, p) for p in doc.get("policies", [])),
            collations=_keyed(_build(Collation, c) for c in doc.get("collations", [])),
            text_search_dicts=_keyed(_build(TextSearchDictionary, d) for d in doc.get("text_search_dicts", [])),
            text_search_configs=_keyed(_build(TextSearchConfig, c) for c in doc.get("text_search_configs", [])),
            statistics=_keyed(_build(Statistics, st) for st in doc.get("statistics", [])),
            operators=_keyed(_build(Operator, o) for o in doc.get("operators", [])),
            operator_families=_keyed(_build(OperatorFamily, f) for f in doc.get("operator_families", [])),
            operator_classes=_keyed(_build(OperatorClass, c) for c in doc.get("operator_classes", [])),
            server_version=doc.get("server_version"),
            depends=_dependencies(doc.get("depends", [])),
            casts=frozenset((source, target) for source, target in (doc.get("casts") or {}).get("pairs") or ()),
            string_types=frozenset((doc.get("casts") or {}).get("strings") or ()),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Catalog):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(self) if f.name not in _NOT_COMPARED)

    __hash__ = None  # type: ignore[assignment]

    def stats(self) -> dict[str, int]:
        """Object counts for ``inv extract`` (from the catalog, never from grepping a dump)."""
        table_constraints = [c for c in self.constraints.values() if not c.on_domain]
        by_type = {letter: sum(1 for c in table_constraints if c.type == letter) for letter in "pfucx"}
        type_kinds = [t.kind for t in self.types.values()]
        return {
            "schemas": len(self.schemas),
            "tables": len(self.tables),
            "columns": sum(len(t.columns) for t in self.tables.values()),
            "indexes": len(self.indexes),
            "primary_keys": by_type["p"],
            "foreign_keys": by_type["f"],
            "unique_constraints": by_type["u"],
            "check_constraints": by_type["c"],
            "exclude_constraints": by_type["x"],
            "views": sum(1 for v in self.views.values() if not v.materialized),
            "materialized_views": sum(1 for v in self.views.values() if v.materialized),
            "sequences": len(self.sequences),
            "functions": sum(1 for f in self.functions.values() if f.kind != "p"),
            "procedures": sum(1 for f in self.functions.values() if f.kind == "p"),
            "triggers": len(self.triggers),
            "enum_types": type_kinds.count("enum"),
            "composite_types": type_kinds.count("composite"),
            "domain_types": type_kinds.count("domain"),
            "extensions": len(self.extensions),
            "policies": len(self.policies),
            "collations": len(self.collations),
            "text_search_configurations": len(self.text_search_configs),
            "text_search_dictionaries": len(self.text_search_dicts),
        }


# ---------------------------------------------------------------- reading it


def introspect(remote: QueryRunner, database: str | None = None, *,
               exclude_tables: Iterable[str] = DEFAULT_EXCLUDED_TABLES, dependencies: bool = False) -> Catalog:
    """Read one database's catalog in a single round trip."""
    doc = remote.query_json(introspection_sql(exclude_tables, dependencies=dependencies), database)
    if not isinstance(doc, dict):
        raise RemoteError("introspection returned an unexpected document")
    return Catalog.from_json(doc)


def _conninfo(database: str) -> str:
    """``dbname='…'``: a bare \\connect argument containing ``=`` would be read as a connection string."""
    return "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _psql_quote(value: str) -> str:
    """A psql meta-command argument: backslashes are escapes there, quotes are doubled."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def introspect_many(remote: QueryRunner, databases: Sequence[str], *,
                    exclude_tables: Iterable[str] = DEFAULT_EXCLUDED_TABLES, dependencies: bool = False) -> dict[str, Catalog]:
    """Read several databases' catalogs in one psql session (one round trip)."""
    if not databases:
        return {}
    sql = introspection_sql(exclude_tables, dependencies=dependencies)
    parts = []
    for index, name in enumerate(databases):
        parts.append(f"\\connect -reuse-previous=on {_psql_quote(_conninfo(name))}\n\\echo {_SEPARATOR}{index}\n{sql}")
    result = remote.psql("".join(parts), databases[0], extra=["-A", "-t"])
    return _split_many(result.stdout.decode("utf-8"), databases)


def _split_many(text: str, databases: Sequence[str]) -> dict[str, Catalog]:
    import json

    chunks: dict[int, list[str]] = {}
    current: int | None = None
    for line in text.splitlines():
        if line.startswith(_SEPARATOR):
            current = int(line[len(_SEPARATOR):])
            chunks[current] = []
        elif current is not None:
            chunks[current].append(line)
    catalogs: dict[str, Catalog] = {}
    for index, name in enumerate(databases):
        body = "\n".join(chunks.get(index, [])).strip()
        if not body:
            raise RemoteError(f"introspection of {name} returned no result")
        catalogs[name] = Catalog.from_json(json.loads(body))
    return catalogs
