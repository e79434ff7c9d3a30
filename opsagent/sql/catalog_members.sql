-- An operator family's operators and support functions as CREATE OPERATOR CLASS / ALTER OPERATOR FAMILY
-- write them, with what they belong to (pg_depend: the class, or the family when added loose).
SELECT ao.amopfamily AS family, d.refclassid, d.refobjid,
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
   AND d.refclassid IN ('pg_opclass'::regclass, 'pg_opfamily'::regclass)
