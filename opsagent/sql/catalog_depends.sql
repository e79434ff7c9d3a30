-- pg_depend's edges between modelled objects (Catalog.depends): only plans need them.
(SELECT coalesce(json_agg(json_build_array(
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
   WHERE d.deptype IN ('n', 'a') AND (a.id::text <> b.id::text OR d.objsubid <> d.refobjsubid))
