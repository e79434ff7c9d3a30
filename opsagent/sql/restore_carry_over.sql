-- Database-level grants and settings are not in a pg_dump: copy them from :live to :target.
-- Settings that are lists (search_path, ...) are written as they are, the others as literals.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'target') FROM pg_database WHERE datname = :'live' AND datacl IS NOT NULL
\gexec
SELECT format('GRANT %s ON DATABASE %I TO %s%s', a.privilege_type, :'target',
              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
              CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
  FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = :'live' AND a.grantee <> d.datdba
\gexec
SELECT CASE WHEN s.setrole = 0 THEN format('ALTER DATABASE %I', :'target')
            ELSE format('ALTER ROLE %I IN DATABASE %I', pg_get_userbyid(s.setrole), :'target') END
       || format(' SET %s = ', split_part(c.item, '=', 1))
       || CASE WHEN split_part(c.item, '=', 1) IN ('search_path', 'temp_tablespaces', 'session_preload_libraries', 'local_preload_libraries') THEN substr(c.item, strpos(c.item, '=') + 1)
               ELSE quote_literal(substr(c.item, strpos(c.item, '=') + 1)) END
  FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) AS c(item) WHERE d.datname = :'live'
\gexec
